/* Stored format 2 (stripe.h): part arithmetic, the header's bytes, and
 * telling verbatim, encoded and broken strings apart. */
#include <string.h>

#include "stripe.h"

uint64_t lmr_stripe_offset(uint64_t total_len, uint32_t count, uint32_t i) {
  uint64_t base = total_len / count, rem = total_len % count;
  return (uint64_t)i * base + (i < rem ? i : rem);
}

uint64_t lmr_stripe_len(uint64_t total_len, uint32_t count, uint32_t i) {
  return total_len / count + (i < total_len % count ? 1 : 0);
}

uint64_t lmr_stripe_stored_offset(uint64_t total_len, uint32_t count, uint32_t i) {
  return lmr_stripe_offset(total_len, count, i) + (uint64_t)i * LMR_STRIPE_HDR_SIZE;
}

uint64_t lmr_stripe_stored_len(uint64_t total_len, uint32_t count) {
  return total_len + (uint64_t)count * LMR_STRIPE_HDR_SIZE;
}

/* jemalloc's size class for n bytes: above 4 KiB, four classes per
 * doubling (n rounded up to a quarter of the power of two below it). */
static uint64_t alloc_class(uint64_t n) {
  if (n <= 4096) return n;
  int lg = 0;
  while (lg < 62 && ((n - 1) >> (lg + 1)) != 0) lg++; /* 2^lg <= n - 1 < 2^(lg + 1) */
  uint64_t step = (uint64_t)1 << (lg - 2);
  return (n + step - 1) & ~(step - 1);
}

/* The server memory a value of len bytes takes in n stripes. */
static uint64_t footprint(uint64_t len, uint32_t n) {
  if (n == 1) return alloc_class(len + LMR_SERVER_STRING_SLACK);
  uint64_t slice = len / n + (len % n != 0);
  return (uint64_t)n * alloc_class(slice + LMR_STRIPE_HDR_SIZE + LMR_SERVER_STRING_SLACK);
}

uint32_t lmr_stripe_count(uint64_t len, uint64_t budget, uint32_t group, uint32_t max_count) {
  if (len <= budget - LMR_SERVER_STRING_SLACK) return 1; /* budget >= 4 KiB: no wrap */
  uint64_t room = budget - LMR_STRIPE_HDR_SIZE - LMR_SERVER_STRING_SLACK;
  uint64_t fewest = len / room + (len % room != 0);
  if (fewest >= max_count) return max_count;
  if (group < 1) group = 1;
  uint64_t first = fewest, step = 1, last = group;
  if (fewest > group) {
    first = (fewest + group - 1) / group * group;
    step = group;
    last = 2 * fewest + group;
  }
  uint32_t best = (uint32_t)fewest;
  uint64_t best_bytes = UINT64_MAX;
  for (uint64_t n = first; n <= last && n <= max_count; n += step) {
    uint64_t bytes = footprint(len, (uint32_t)n);
    if (bytes < best_bytes) {
      best_bytes = bytes;
      best = (uint32_t)n;
    }
  }
  return best;
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
  for (int k = 0; k < bytes; k++) p[k] = (unsigned char)(v >> (8 * k));
}

static uint64_t get_le(const unsigned char *p, int bytes) {
  uint64_t v = 0;
  for (int k = 0; k < bytes; k++) v |= (uint64_t)p[k] << (8 * k);
  return v;
}

void lmr_stripe_hdr_encode(const lmr_stripe_hdr *h,
                           unsigned char out[LMR_STRIPE_HDR_SIZE]) {
  memcpy(out, LMR_STRIPE_MAGIC, 4);
  put_le(out + 4, LMR_STRIPE_VERSION, 2);
  put_le(out + 6, LMR_STRIPE_HDR_SIZE, 2);
  put_le(out + 8, h->index, 4);
  put_le(out + 12, h->count, 4);
  put_le(out + 16, h->total_len, 8);
  put_le(out + 24, h->set_id, 8);
}

int lmr_stripe_hdr_decode(const unsigned char in[LMR_STRIPE_HDR_SIZE],
                          uint32_t max_count, lmr_stripe_hdr *h) {
  if (memcmp(in, LMR_STRIPE_MAGIC, 4) != 0) return -1;
  if (get_le(in + 4, 2) != LMR_STRIPE_VERSION) return -1;
  if (get_le(in + 6, 2) != LMR_STRIPE_HDR_SIZE) return -1;
  h->index = (uint32_t)get_le(in + 8, 4);
  h->count = (uint32_t)get_le(in + 12, 4);
  h->total_len = get_le(in + 16, 8);
  h->set_id = get_le(in + 24, 8);
  if (h->count == 0 || h->count > max_count || h->index >= h->count) return -1;
  return 0;
}

int lmr_stripe_has_magic(const void *p, size_t n) {
  return n >= LMR_STRIPE_MAGIC_LEN && memcmp(p, LMR_STRIPE_MAGIC, LMR_STRIPE_MAGIC_LEN) == 0;
}

lmr_stored_kind lmr_stripe_classify(const unsigned char *head, size_t n, uint64_t stored_len,
                                    uint32_t max_count, int split, lmr_stripe_hdr *h) {
  if (!lmr_stripe_has_magic(head, n)) return LMR_STORED_VERBATIM;
  if (n < LMR_STRIPE_HDR_SIZE || lmr_stripe_hdr_decode(head, max_count, h) != 0 ||
      h->index != 0 || h->total_len > UINT64_MAX - (uint64_t)h->count * LMR_STRIPE_HDR_SIZE)
    return LMR_STORED_BROKEN;
  uint64_t want = split && h->count >= 2 ? LMR_STRIPE_HDR_SIZE  /* the header alone */
                                         : lmr_stripe_stored_len(h->total_len, h->count);
  return want == stored_len ? LMR_STORED_ENCODED : LMR_STORED_BROKEN;
}

int lmr_stripe_decode_in_place(unsigned char *buf, const lmr_stripe_hdr *h) {
  /* Parts move left, in order: part i's new place ends before hdr(i + 1),
   * so no header is overwritten before it is checked. */
  for (uint32_t i = 0; i < h->count; i++) {
    const unsigned char *hp = buf + lmr_stripe_stored_offset(h->total_len, h->count, i);
    lmr_stripe_hdr g;
    if (lmr_stripe_hdr_decode(hp, h->count, &g) != 0 || g.index != i || g.count != h->count ||
        g.total_len != h->total_len || g.set_id != h->set_id)
      return -1;
    memmove(buf + lmr_stripe_offset(h->total_len, h->count, i), hp + LMR_STRIPE_HDR_SIZE,
            lmr_stripe_len(h->total_len, h->count, i));
  }
  return 0;
}
