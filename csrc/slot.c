/* Key slots and part keys (slot.h). */
#include "slot.h"

#include <assert.h>
#include <pthread.h>
#include <string.h>

/* crc16 of each single byte value, byte-wise table for the XMODEM CRC
 * (poly 0x1021, MSB first): entry b is the register after shifting b in
 * from a zero register. Generated for this file; tests/c/test_slot.c
 * recomputes every entry bit by bit. */
static const uint16_t crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

uint16_t lmr__crc16(const void *p, size_t n) {
  const unsigned char *b = p;
  uint16_t crc = 0;
  for (size_t i = 0; i < n; i++)
    crc = (uint16_t)((crc << 8) ^ crc16_table[((crc >> 8) ^ b[i]) & 0xff]);
  return crc;
}

uint16_t lmr__key_slot(const void *key, size_t n) {
  if (n == 0) return 0;  /* the empty key; and memchr wants a real pointer */
  const char *k = key;
  /* Only the first '{' counts, and only the first '}' after it. */
  const char *open = memchr(k, '{', n);
  if (open != NULL) {
    const char *tag = open + 1;
    const char *close = memchr(tag, '}', n - (size_t)(tag - k));
    if (close != NULL && close > tag) return lmr__crc16(tag, (size_t)(close - tag)) & (LMR__SLOTS - 1);
  }
  return lmr__crc16(k, n) & (LMR__SLOTS - 1);
}

/* ---- slot tags: the enumeration rule is in slot.h ---- */

static const char tag_alphabet[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
#define TAG_ALPHABET_LEN (sizeof tag_alphabet - 1)
/* The table needs no more (slot.h); LMR__SLOT_TAG_MAX leaves room for one. */
#define TAG_LEN_USED 3

static char slot_tags[LMR__SLOTS][LMR__SLOT_TAG_MAX + 1];
static pthread_once_t slot_tags_once = PTHREAD_ONCE_INIT;

static void build_slot_tags(void) {
  size_t filled = 0;
  for (size_t len = 1; len <= TAG_LEN_USED && filled < LMR__SLOTS; len++) {
    /* digits[] counts in base 62, most significant first: lexicographic
     * order of the alphabet order. */
    size_t digits[TAG_LEN_USED] = {0};
    for (;;) {
      char t[TAG_LEN_USED];
      for (size_t i = 0; i < len; i++) t[i] = tag_alphabet[digits[i]];
      uint16_t s = lmr__crc16(t, len) & (LMR__SLOTS - 1);
      if (slot_tags[s][0] == '\0') {  /* the first string to reach s wins */
        memcpy(slot_tags[s], t, len);
        slot_tags[s][len] = '\0';
        filled++;
      }
      size_t i = len;
      while (i > 0 && ++digits[i - 1] == TAG_ALPHABET_LEN) digits[--i] = 0;
      if (i == 0) break;  /* every string of this length was seen */
    }
  }
}

const char *lmr__slot_tag(uint16_t slot) {
  pthread_once(&slot_tags_once, build_slot_tags);
  return slot_tags[slot & (LMR__SLOTS - 1)];
}

size_t lmr__part_key(const void *key, size_t key_len, uint32_t part, uint32_t count,
                     uint64_t set_id, char *out) {
  assert(part < count && count <= LMR__PART_COUNT_MAX);
  /* 64-bit product: part * 16384 overflows nothing, and the integer
   * division rounds down alike in every client that reads the format. */
  uint32_t target =
      (uint32_t)((lmr__key_slot(key, key_len) + (uint64_t)part * LMR__SLOTS / count) % LMR__SLOTS);
  const char *tag = lmr__slot_tag((uint16_t)target);
  size_t tag_len = strlen(tag);
  if (key_len > 0) memcpy(out, key, key_len);
  size_t n = key_len;
  memcpy(out + n, "#lmr:", 5);
  n += 5;
  static const char hex[] = "0123456789abcdef";
  for (int shift = 60; shift >= 0; shift -= 4) out[n++] = hex[(set_id >> shift) & 0xf];
  out[n++] = '{';
  memcpy(out + n, tag, tag_len);
  n += tag_len;
  out[n++] = '}';
  return n;
}
