/*
 * Stripe layout: how one logical value is stored as several Redis values.
 *
 * A value of L bytes under key K written with C > 1 stripes is stored as the
 * C sub-keys K ":stripe:" i (i in decimal, 0 <= i < C). Sub-key i holds a
 * 32-byte header followed by the slice [off(i), off(i) + len(i)) of the value:
 * base = L / C, rem = L % C, len(i) = base + (i < rem),
 * off(i) = i * base + min(i, rem).
 *
 * Header, all integers little-endian:
 *   0  4  magic "LMRS"
 *   4  2  format version (1)
 *   6  2  header size in bytes (32)
 *   8  4  stripe index i
 *  12  4  stripe count C
 *  16  8  total length L
 *  24  8  set id: random, shared by the stripes of one write
 *
 * With C == 1 the value is stored verbatim under K, with no header.
 */
#ifndef LMR_STRIPE_H
#define LMR_STRIPE_H

#include <stddef.h>
#include <stdint.h>

#define LMR_STRIPE_MAGIC "LMRS"
#define LMR_STRIPE_VERSION 1
#define LMR_STRIPE_HDR_SIZE 32
#define LMR_STRIPE_SUFFIX ":stripe:"
/* Longest suffix: ":stripe:" plus up to 10 digits. */
#define LMR_STRIPE_SUFFIX_MAX 24

typedef struct {
  uint32_t index;
  uint32_t count;
  uint64_t total_len;
  uint64_t set_id;
} lmr_stripe_hdr;

/* Bytes Redis may add to a string of n bytes in its one allocation: the
 * sds header, the CRLF it read the value with and a terminator take 12 in
 * Redis 7; the rest is a margin. */
#define LMR_SERVER_STRING_SLACK 64

/* How many stripes to store a value of len bytes in, when the count follows
 * the size: each stripe's allocation in the server (header and
 * LMR_SERVER_STRING_SLACK included) at most budget bytes. Among the counts
 * from the fewest up to about twice that, the one whose allocations,
 * rounded up to jemalloc's size classes (Redis's allocator), waste least;
 * above `group` stripes (the connection count) only multiples of group, so
 * that every connection carries the same share. 1 (the value verbatim)
 * when it fits the budget whole; at most max_count. */
uint32_t lmr_stripe_count(uint64_t len, uint64_t budget, uint32_t group, uint32_t max_count);

/* Byte offset and length of stripe i of a value of total_len bytes. */
uint64_t lmr_stripe_offset(uint64_t total_len, uint32_t count, uint32_t i);
uint64_t lmr_stripe_len(uint64_t total_len, uint32_t count, uint32_t i);

void lmr_stripe_hdr_encode(const lmr_stripe_hdr *h,
                           unsigned char out[LMR_STRIPE_HDR_SIZE]);
/* 0 when the bytes are a well-formed header of this format (magic, version,
 * size, 0 <= index < count <= max_count); -1 otherwise. */
int lmr_stripe_hdr_decode(const unsigned char in[LMR_STRIPE_HDR_SIZE],
                          uint32_t max_count, lmr_stripe_hdr *h);

/* Writes ":stripe:<i>" into out and returns its length. */
size_t lmr_stripe_suffix(uint32_t i, char out[LMR_STRIPE_SUFFIX_MAX]);

#endif
