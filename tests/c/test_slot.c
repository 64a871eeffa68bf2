/* Key slots, slot tags and part keys (csrc/slot.h). The slot numbers were
 * checked against Redis 7.0.15 (CLUSTER KEYSLOT), the tag table against a
 * separate Python implementation of the rule in slot.h and, tag by tag,
 * against CLUSTER KEYSLOT "{T}" of a real cluster. */
#include <stdlib.h>

#include "slot.h"
#include "test.h"

static uint16_t slot_of(const char *s) { return lmr__key_slot(s, strlen(s)); }

/* The CRC register shifted bit by bit: the table's independent reference. */
static uint16_t crc16_bitwise(const void *p, size_t n) {
  const unsigned char *b = p;
  uint16_t crc = 0;
  for (size_t i = 0; i < n; i++) {
    crc ^= (uint16_t)(b[i] << 8);
    for (int k = 0; k < 8; k++)
      crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
  }
  return crc;
}

TEST(crc16) {
  ASSERT_EQ(lmr__crc16("123456789", 9), 0x31C3);
  ASSERT_EQ(lmr__crc16("", 0), 0);
  /* Every table entry, and a run of all byte values. */
  for (int v = 0; v < 256; v++) {
    unsigned char b = (unsigned char)v;
    ASSERT_EQ(lmr__crc16(&b, 1), crc16_bitwise(&b, 1));
  }
  unsigned char all[512];
  for (size_t i = 0; i < sizeof all; i++) all[i] = (unsigned char)(i * 7 + 3);
  ASSERT_EQ(lmr__crc16(all, sizeof all), crc16_bitwise(all, sizeof all));
  return 0;
}

/* From redis-cli CLUSTER KEYSLOT against Redis 7.0.15. */
TEST(key_slot_vectors) {
  ASSERT_EQ(slot_of("foo"), 12182);
  ASSERT_EQ(slot_of("bar"), 5061);
  ASSERT_EQ(slot_of("123456789"), 12739);
  ASSERT_EQ(slot_of(""), 0);
  ASSERT_EQ(slot_of("{user1000}.following"), 3443);
  ASSERT_EQ(slot_of("{user1000}.followers"), 3443);
  ASSERT_EQ(slot_of("foo{}{bar}"), 8363);     /* empty tag: whole key */
  ASSERT_EQ(slot_of("foo{{bar}}zap"), 4015);  /* hashes "{bar" */
  ASSERT_EQ(slot_of("{bar"), 4015);
  ASSERT_EQ(slot_of("foo{bar}{zap}"), 5061);  /* hashes "bar" */
  ASSERT_EQ(slot_of("a{x}b"), 16287);
  ASSERT_EQ(slot_of("x"), 16287);
  ASSERT_EQ(slot_of("{}"), 15257);
  ASSERT_EQ(slot_of("{"), 4092);
  ASSERT_EQ(slot_of("}"), 12090);
  /* The key's length counts, not a NUL. */
  ASSERT_EQ(lmr__key_slot("foo\0{x}", 7), slot_of("x"));
  ASSERT_EQ(lmr__key_slot("foo\0", 4), lmr__crc16("foo\0", 4) & 16383);
  return 0;
}

TEST(slot_tags_cover_every_slot) {
  size_t by_len[LMR__SLOT_TAG_MAX + 1] = {0};
  for (int s = 0; s < LMR__SLOTS; s++) {
    const char *t = lmr__slot_tag((uint16_t)s);
    size_t n = strlen(t);
    ASSERT(n >= 1 && n <= 3);
    by_len[n]++;
    char k[8];
    int kn = snprintf(k, sizeof k, "{%s}", t);
    ASSERT_EQ(lmr__key_slot(k, (size_t)kn), s);
    ASSERT_EQ(lmr__crc16(t, n) & 16383, s);
    for (size_t i = 0; i < n; i++)
      ASSERT((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'A' && t[i] <= 'Z') ||
             (t[i] >= 'a' && t[i] <= 'z'));
  }
  ASSERT_EQ(by_len[1], 62);
  ASSERT_EQ(by_len[2], 3448);
  ASSERT_EQ(by_len[3], 12874);
  return 0;
}

/* The table is part of the stored format: pinned entry by entry (FNV-1a 64
 * of every tag and a newline, slot order), from the Python reference. */
TEST(slot_tags_pinned) {
  ASSERT(strcmp(lmr__slot_tag(0), "06S") == 0);
  ASSERT(strcmp(lmr__slot_tag(1), "Qi") == 0);
  ASSERT(strcmp(lmr__slot_tag(2), "5L5") == 0);
  ASSERT(strcmp(lmr__slot_tag(16287), "x") == 0);  /* slot("x") */
  ASSERT(strcmp(lmr__slot_tag(8363), "oZ") == 0);
  ASSERT(strcmp(lmr__slot_tag(12182), "9Le") == 0);
  ASSERT(strcmp(lmr__slot_tag(16383), "6ZJ") == 0);
  ASSERT(strcmp(lmr__slot_tag(16384 + 1), "Qi") == 0);  /* high bits ignored */
  uint64_t h = 0xcbf29ce484222325u;
  for (int s = 0; s < LMR__SLOTS; s++) {
    for (const char *t = lmr__slot_tag((uint16_t)s);; t++) {
      h = (h ^ (unsigned char)(*t != '\0' ? *t : '\n')) * 0x100000001b3u;
      if (*t == '\0') break;
    }
  }
  ASSERT_EQ(h, 0x9132cd2b71328ca5u);
  return 0;
}

/* The first string of the enumeration wins: no earlier string hits the
 * same slot (checked for single characters and a sample of pairs). */
TEST(slot_tags_first_in_order) {
  static const char a[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  for (size_t i = 0; i < 62; i++) {
    uint16_t s = lmr__crc16(&a[i], 1) & 16383;
    ASSERT_EQ(strlen(lmr__slot_tag(s)), 1);
    ASSERT_EQ(lmr__slot_tag(s)[0], a[i]);
  }
  /* "00", the first pair, cannot be taken by a single character unless one
   * shares its slot. */
  uint16_t s00 = lmr__crc16("00", 2) & 16383;
  const char *t = lmr__slot_tag(s00);
  ASSERT(strcmp(t, "00") == 0 || strlen(t) == 1);
  return 0;
}

TEST(part_keys_spread) {
  static const char key[] = "lmcache@model@0@abcdef0123";
  size_t kn = sizeof key - 1;
  uint16_t base = lmr__key_slot(key, kn);
  char out[sizeof key + LMR__PART_KEY_EXTRA];
  int seen[LMR__SLOTS] = {0};
  seen[base] = 1;
  for (uint32_t i = 1; i < 16; i++) {
    size_t n = lmr__part_key(key, kn, i, 16, UINT64_C(0x0123456789abcdef), out);
    ASSERT(n <= kn + LMR__PART_KEY_EXTRA);
    ASSERT_MEM_EQ(out, key, kn);
    ASSERT_MEM_EQ(out + kn, "#lmr:0123456789abcdef{", 22);
    ASSERT_EQ(out[n - 1], '}');
    uint16_t s = lmr__key_slot(out, n);
    ASSERT_EQ(s, (base + i * 1024) % 16384);
    ASSERT_EQ(seen[s], 0);
    seen[s] = 1;
    /* The text is exactly key "#lmr:" id "{" tag "}". */
    const char *tag = lmr__slot_tag(s);
    ASSERT_EQ(n, kn + 22 + strlen(tag) + 1);
    ASSERT_MEM_EQ(out + kn + 22, tag, strlen(tag));
  }
  /* Every count, every part: the target slot, computed as slot.h says. */
  for (uint32_t c = 2; c <= LMR__PART_COUNT_MAX; c++)
    for (uint32_t i = 1; i < c; i++) {
      size_t n = lmr__part_key(key, kn, i, c, c * 1000 + i, out);
      ASSERT_EQ(lmr__key_slot(out, n), (base + (uint64_t)i * 16384 / c) % 16384);
    }
  return 0;
}

TEST(part_keys_known) {
  char out[64];
  /* slot("foo") = 12182; part 1 of 2 targets (12182 + 8192) % 16384 = 3990. */
  size_t n = lmr__part_key("foo", 3, 1, 2, 42, out);
  char want[64];
  int wn = snprintf(want, sizeof want, "foo#lmr:000000000000002a{%s}", lmr__slot_tag(3990));
  ASSERT_EQ(n, wn);
  ASSERT_MEM_EQ(out, want, n);
  ASSERT_EQ(lmr__key_slot(out, n), 3990);
  /* The empty key (slot 0). */
  n = lmr__part_key("", 0, 3, 4, UINT64_MAX, out);
  ASSERT_EQ(lmr__key_slot(out, n), 12288);
  return 0;
}

TEST(part_keys_of_a_tagged_key) {
  char out[64];
  for (uint32_t i = 1; i < 16; i++) {
    size_t n = lmr__part_key("a{x}b", 5, i, 16, i, out);
    ASSERT_EQ(lmr__key_slot(out, n), slot_of("x"));
  }
  return 0;
}

/* A '{' without a tag of its own: the part keys' slots are not the targets
 * (slot.h: route by the name sent). Pinned so that a change shows. */
TEST(part_keys_of_an_unclosed_brace) {
  char out[64];
  size_t n = lmr__part_key("a{b", 3, 1, 2, 7, out);
  ASSERT_EQ(lmr__key_slot(out, n), lmr__crc16(out + 2, n - 3) & 16383);
  n = lmr__part_key("a{}b", 4, 1, 2, 7, out);
  ASSERT_EQ(lmr__key_slot(out, n), lmr__crc16(out, n) & 16383);
  return 0;
}

TEST_MAIN(TEST_ENTRY(crc16), TEST_ENTRY(key_slot_vectors), TEST_ENTRY(slot_tags_cover_every_slot),
          TEST_ENTRY(slot_tags_pinned), TEST_ENTRY(slot_tags_first_in_order),
          TEST_ENTRY(part_keys_spread), TEST_ENTRY(part_keys_known),
          TEST_ENTRY(part_keys_of_a_tagged_key), TEST_ENTRY(part_keys_of_an_unclosed_brace))
