/* Stored format 2 (stripe.h): part arithmetic, the header's exact bytes,
 * where parts sit in the stored string, and telling verbatim, encoded and
 * broken strings apart. */
#include <stdlib.h>

#include "stripe.h"
#include "test.h"

/* Slices of a value of L bytes in C stripes tile [0, L): each starts where
 * the previous ended, the longer ones come first, lengths differ by <= 1. */
static int check_tiling(uint64_t L, uint32_t C) {
  uint64_t end = 0, min = UINT64_MAX, max = 0;
  for (uint32_t i = 0; i < C; i++) {
    uint64_t off = lmr_stripe_offset(L, C, i), len = lmr_stripe_len(L, C, i);
    if (off != end) fprintf(stderr, "  L=%" PRIu64 " C=%u i=%u\n", L, C, i);
    ASSERT_EQ(off, end);
    if (i > 0) ASSERT(len <= lmr_stripe_len(L, C, i - 1));
    end = off + len;
    if (len < min) min = len;
    if (len > max) max = len;
  }
  ASSERT_EQ(end, L);
  ASSERT(max - min <= 1);
  ASSERT_EQ(max, L / C + (L % C != 0));  /* ceil(L / C) without overflow */
  return 0;
}

TEST(tiling) {
  static const uint32_t counts[] = {1, 2, 3, 7, 8, 16, 255, 256, 65537};
  for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
    uint64_t C = counts[c];
    const uint64_t lens[] = {0, 1, 2, C - 1, C, C + 1, 3 * C - 1, 3 * C, 3 * C + 1,
                             80ull << 20, (80ull << 20) - 1, (80ull << 20) + 1,
                             (1ull << 40) + 3, UINT64_MAX};
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
      ASSERT_EQ(check_tiling(lens[l], (uint32_t)C), 0);
  }
  return 0;
}

/* A worked example: 10 bytes in 4 stripes are 3, 3, 2, 2 at 0, 3, 6, 8. */
TEST(worked_example) {
  static const uint64_t off[] = {0, 3, 6, 8}, len[] = {3, 3, 2, 2};
  for (uint32_t i = 0; i < 4; i++) {
    ASSERT_EQ(lmr_stripe_offset(10, 4, i), off[i]);
    ASSERT_EQ(lmr_stripe_len(10, 4, i), len[i]);
  }
  /* Fewer bytes than stripes: the last stripes are empty. */
  ASSERT_EQ(lmr_stripe_len(2, 8, 1), 1);
  ASSERT_EQ(lmr_stripe_len(2, 8, 2), 0);
  ASSERT_EQ(lmr_stripe_offset(2, 8, 7), 2);
  return 0;
}

static const unsigned char expected_hdr[LMR_STRIPE_HDR_SIZE] = {
    0x89, 'L', 'M', 'R',                              /* magic */
    0x02, 0x00,                                       /* version 2 */
    0x20, 0x00,                                       /* header size 32 */
    0x03, 0x00, 0x00, 0x00,                           /* index 3 */
    0x08, 0x00, 0x00, 0x00,                           /* count 8 */
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,   /* total length */
    0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,   /* set id */
};

TEST(header_round_trip) {
  lmr_stripe_hdr h = {.index = 3, .count = 8, .total_len = 0x0102030405060708ull,
                      .set_id = 0x1122334455667788ull};
  unsigned char buf[LMR_STRIPE_HDR_SIZE];
  lmr_stripe_hdr_encode(&h, buf);
  ASSERT_MEM_EQ(buf, expected_hdr, sizeof buf);
  lmr_stripe_hdr d;
  ASSERT_EQ(lmr_stripe_hdr_decode(buf, 8, &d), 0);
  ASSERT_EQ(d.index, 3);
  ASSERT_EQ(d.count, 8);
  ASSERT_EQ(d.total_len, h.total_len);
  ASSERT_EQ(d.set_id, h.set_id);

  /* Extremes survive too: the last index of the largest count. */
  h = (lmr_stripe_hdr){.index = 255, .count = 256, .total_len = UINT64_MAX, .set_id = 0};
  lmr_stripe_hdr_encode(&h, buf);
  ASSERT_EQ(lmr_stripe_hdr_decode(buf, 256, &d), 0);
  ASSERT_EQ(d.index, 255);
  ASSERT_EQ(d.count, 256);
  ASSERT_EQ(d.total_len, UINT64_MAX);
  ASSERT_EQ(d.set_id, 0);
  return 0;
}

/* Decodes expected_hdr with byte `at` set to `value`. */
static int decode_patched(size_t at, unsigned char value, uint32_t max_count) {
  unsigned char buf[LMR_STRIPE_HDR_SIZE];
  memcpy(buf, expected_hdr, sizeof buf);
  buf[at] = value;
  lmr_stripe_hdr d;
  return lmr_stripe_hdr_decode(buf, max_count, &d);
}

TEST(header_rejects) {
  ASSERT_EQ(decode_patched(0, 'X', 8), -1);     /* magic */
  ASSERT_EQ(decode_patched(3, 'S', 8), -1);
  ASSERT_EQ(decode_patched(4, 1, 8), -1);       /* version 1 */
  ASSERT_EQ(decode_patched(5, 1, 8), -1);       /* version 257 */
  ASSERT_EQ(decode_patched(6, 33, 8), -1);      /* header size */
  ASSERT_EQ(decode_patched(7, 1, 8), -1);
  ASSERT_EQ(decode_patched(12, 0, 8), -1);      /* count 0 */
  ASSERT_EQ(decode_patched(12, 9, 8), -1);      /* count > max */
  ASSERT_EQ(decode_patched(15, 1, 256), -1);    /* count 2^24 + 8 */
  ASSERT_EQ(decode_patched(8, 8, 8), -1);       /* index == count */
  ASSERT_EQ(decode_patched(8, 200, 256), -1);   /* index > count */
  ASSERT_EQ(decode_patched(11, 1, 256), -1);
  /* Limits are inclusive: count == max and index == count - 1 pass. */
  ASSERT_EQ(decode_patched(12, 8, 8), 0);
  ASSERT_EQ(decode_patched(8, 7, 8), 0);
  /* Length and set id are opaque to the decoder. */
  ASSERT_EQ(decode_patched(16, 0, 8), 0);
  ASSERT_EQ(decode_patched(31, 0xff, 8), 0);
  return 0;
}

/* Encodes value[0..L) in C parts as a writer stores it. */
static unsigned char *encode_value(const unsigned char *value, uint64_t L, uint32_t C,
                                   uint64_t id) {
  unsigned char *out = malloc(lmr_stripe_stored_len(L, C));
  for (uint32_t i = 0; i < C; i++) {
    lmr_stripe_hdr h = {.index = i, .count = C, .total_len = L, .set_id = id};
    unsigned char *at = out + lmr_stripe_stored_offset(L, C, i);
    lmr_stripe_hdr_encode(&h, at);
    memcpy(at + LMR_STRIPE_HDR_SIZE, value + lmr_stripe_offset(L, C, i),
           lmr_stripe_len(L, C, i));
  }
  return out;
}

TEST(stored_layout) {
  /* 10 bytes in 4 parts: 3 3 2 2, each after its header. */
  ASSERT_EQ(lmr_stripe_stored_len(10, 4), 10 + 4 * 32);
  ASSERT_EQ(lmr_stripe_stored_offset(10, 4, 0), 0);
  ASSERT_EQ(lmr_stripe_stored_offset(10, 4, 1), 32 + 3);
  ASSERT_EQ(lmr_stripe_stored_offset(10, 4, 2), 64 + 6);
  ASSERT_EQ(lmr_stripe_stored_offset(10, 4, 3), 96 + 8);
  return 0;
}

static int check_classify_and_decode(uint64_t L, uint32_t C) {
  unsigned char *value = malloc(L + 1);
  for (uint64_t k = 0; k < L; k++) value[k] = (unsigned char)(k * 7 + 1);
  unsigned char *enc = encode_value(value, L, C, 42);
  uint64_t S = lmr_stripe_stored_len(L, C);
  lmr_stripe_hdr h;
  ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, S, 256, 0, &h), LMR_STORED_ENCODED);
  ASSERT_EQ(h.count, C);
  ASSERT_EQ(h.total_len, L);
  ASSERT_EQ(h.set_id, 42);
  /* Cut short or appended to by another client: broken, not data. */
  ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, S - 1, 256, 0, &h), LMR_STORED_BROKEN);
  ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, S + 1, 256, 0, &h), LMR_STORED_BROKEN);
  ASSERT_EQ(lmr_stripe_decode_in_place(enc, &h), 0);
  ASSERT_MEM_EQ(enc, value, L);
  free(enc);
  /* A part of another write in the middle: the decode refuses. */
  if (C > 1) {
    enc = encode_value(value, L, C, 42);
    enc[lmr_stripe_stored_offset(L, C, C - 1) + 24] ^= 1;  /* its write id */
    ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, S, 256, 0, &h), LMR_STORED_ENCODED);
    ASSERT_EQ(lmr_stripe_decode_in_place(enc, &h), -1);
    free(enc);
  }
  free(value);
  return 0;
}

/* A cluster's key holds hdr(0) alone (the commit record) for a value of 2+
 * parts: that length is whole there, and only there; a value of one part
 * is whole as on one server. */
TEST(classify_split) {
  uint64_t L = 10;
  uint32_t C = 4;
  unsigned char value[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  unsigned char *enc = encode_value(value, L, C, 7);
  uint64_t first = LMR_STRIPE_HDR_SIZE;
  lmr_stripe_hdr h;
  ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, first, 256, 1, &h), LMR_STORED_ENCODED);
  ASSERT_EQ(h.count, C);
  ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, first, 256, 0, &h), LMR_STORED_BROKEN);
  /* The whole one-key encoding, met on a cluster: not a commit record. */
  ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, lmr_stripe_stored_len(L, C), 256, 1, &h),
            LMR_STORED_BROKEN);
  ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, first + 1, 256, 1, &h),
            LMR_STORED_BROKEN);
  free(enc);
  enc = encode_value(value, L, 1, 7);
  ASSERT_EQ(lmr_stripe_classify(enc, LMR_STRIPE_HDR_SIZE, L + 32, 256, 1, &h), LMR_STORED_ENCODED);
  free(enc);
  return 0;
}

TEST(classify) {
  ASSERT_EQ(check_classify_and_decode(0, 1), 0);
  ASSERT_EQ(check_classify_and_decode(5, 1), 0);
  ASSERT_EQ(check_classify_and_decode(10, 4), 0);
  ASSERT_EQ(check_classify_and_decode(1000, 7), 0);
  ASSERT_EQ(check_classify_and_decode(3, 8), 0);  /* empty parts */
  lmr_stripe_hdr h;
  /* No magic: verbatim, whatever follows; a prefix of the magic too. */
  ASSERT_EQ(lmr_stripe_classify((const unsigned char *)"hello", 5, 5, 256, 0, &h),
            LMR_STORED_VERBATIM);
  ASSERT_EQ(lmr_stripe_classify(expected_hdr, 3, 3, 256, 0, &h), LMR_STORED_VERBATIM);
  ASSERT_EQ(lmr_stripe_classify(expected_hdr, 0, 0, 256, 0, &h), LMR_STORED_VERBATIM);
  /* The magic and less than a header, or a header not of part 0: broken. */
  ASSERT_EQ(lmr_stripe_classify(expected_hdr, 4, 4, 256, 0, &h), LMR_STORED_BROKEN);
  ASSERT_EQ(lmr_stripe_classify(expected_hdr, 32, 8 + 32 * 8, 256, 0, &h), LMR_STORED_BROKEN);
  /* A format 1 header is no magic of format 2: verbatim bytes. */
  ASSERT_EQ(lmr_stripe_classify((const unsigned char *)"LMRS\x01", 5, 5, 256, 0, &h),
            LMR_STORED_VERBATIM);
  ASSERT_EQ(lmr_stripe_has_magic("\x89LMR", 4), 1);
  ASSERT_EQ(lmr_stripe_has_magic("\x89LM", 3), 0);
  return 0;
}

/* jemalloc's class for n bytes, spelled out differently from stripe.c: the
 * smallest m * 2^(k-2) >= n with 4 <= m <= 8 (four classes per doubling). */
static uint64_t model_class(uint64_t n) {
  if (n <= 4096) return n;
  uint64_t q = 1024; /* a quarter of 4 KiB: classes 5, 6, 7, 8 KiB follow */
  while (8 * q < n) q *= 2;
  return (n + q - 1) / q * q;
}

static uint64_t model_footprint(uint64_t L, uint32_t C) {
  if (C == 1) return model_class(L + LMR_SERVER_STRING_SLACK);
  return C * model_class(L / C + (L % C != 0) + LMR_STRIPE_HDR_SIZE + LMR_SERVER_STRING_SLACK);
}

/* Verbatim iff it fits; else every stripe fits the budget, the count is a
 * multiple of the group once it exceeds it, and no count in the rule's
 * range (the fewest that fit, up to the group or to twice the fewest plus
 * the group) wastes less. */
static int check_count(uint64_t L, uint64_t budget, uint32_t group) {
  uint32_t C = lmr_stripe_count(L, budget, group, 256);
  uint64_t slack = LMR_STRIPE_HDR_SIZE + LMR_SERVER_STRING_SLACK;
  ASSERT(C >= 1 && C <= 256);
  ASSERT_EQ(C == 1, L + LMR_SERVER_STRING_SLACK <= budget);
  if (C > 1 && C < 256) ASSERT(L / C + (L % C != 0) + slack <= budget);
  if (C > group && C < 256) ASSERT_EQ(C % group, 0u);
  if (C == 1 || C == 256) return 0;
  uint64_t mine = model_footprint(L, C);
  uint64_t fewest = L / (budget - slack) + (L % (budget - slack) != 0);
  uint64_t last = fewest <= group ? group : 2 * fewest + group;
  for (uint32_t other = (uint32_t)fewest; other <= last && other <= 256; other++) {
    if (other > group && other % group != 0) continue;
    if (model_footprint(L, other) < mine)
      fprintf(stderr, "  L=%" PRIu64 " group=%u: %u stripes beat %u\n", L, group, other, C);
    ASSERT(model_footprint(L, other) >= mine);
  }
  return 0;
}

TEST(count_by_size) {
  const uint64_t MiB = 1u << 20;
  /* The defaults (2 MiB, 4 connections) on the sizes LMCache uses. */
  ASSERT_EQ(lmr_stripe_count(32 * MiB, 2 * MiB, 4, 256), 20u);  /* 35 MiB, not 40 */
  ASSERT_EQ(lmr_stripe_count(80 * MiB, 2 * MiB, 4, 256), 48u);  /* 84 MiB, not 100 */
  ASSERT_EQ(lmr_stripe_count(4 * MiB, 2 * MiB, 4, 256), 3u);
  ASSERT_EQ(lmr_stripe_count(1 * MiB, 2 * MiB, 4, 256), 1u);
  ASSERT_EQ(lmr_stripe_count(0, 2 * MiB, 4, 256), 1u);
  ASSERT_EQ(lmr_stripe_count(2 * MiB - 64, 2 * MiB, 4, 256), 1u);
  ASSERT(lmr_stripe_count(2 * MiB - 63, 2 * MiB, 4, 256) > 1);
  /* More than the cap allows: the cap. */
  ASSERT_EQ(lmr_stripe_count(UINT64_MAX / 2, 2 * MiB, 4, 256), 256u);
  ASSERT_EQ(lmr_stripe_count(UINT64_MAX, 2 * MiB, 4, 256), 256u);
  ASSERT_EQ(lmr_stripe_count(1024 * MiB, 2 * MiB, 4, 256), 256u);
  static const uint32_t groups[] = {1, 2, 3, 4, 8, 64};
  for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
    for (uint64_t L = 0; L < 120 * MiB; L += 3 * MiB / 7 + 4099)
      ASSERT_EQ(check_count(L, 2 * MiB, groups[g]), 0);
    for (uint64_t L = 0; L < 2 * MiB; L += 777)
      ASSERT_EQ(check_count(L, 4096, groups[g]), 0);
  }
  return 0;
}

TEST_MAIN(TEST_ENTRY(tiling), TEST_ENTRY(worked_example), TEST_ENTRY(header_round_trip),
          TEST_ENTRY(header_rejects), TEST_ENTRY(stored_layout), TEST_ENTRY(classify), TEST_ENTRY(classify_split),
          TEST_ENTRY(count_by_size))
