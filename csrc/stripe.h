/*
 * Stored format 2: how one value is laid out in one Redis string.
 *
 * A value of L bytes in C parts (C >= 1) is the single string
 *   hdr(0) part(0) hdr(1) part(1) ... hdr(C-1) part(C-1)
 * of L + 32 C bytes. Part i is the slice [off(i), off(i) + len(i)) of the
 * value: base = L / C, rem = L % C, len(i) = base + (i < rem),
 * off(i) = i * base + min(i, rem); hdr(i) starts at off(i) + 32 i.
 *
 * Header, all integers little-endian:
 *   0  4  magic "\x89LMR"
 *   4  2  format version (2)
 *   6  2  header size in bytes (32)
 *   8  4  part index i
 *  12  4  part count C
 *  16  8  value length L
 *  24  8  write id: random, shared by the headers of one write
 *
 * A value not encoded is stored verbatim (no header); a verbatim value never
 * begins with the magic (the writer encodes such a value with C = 1), so
 * the first bytes tell the two apart. The parts exist for readers: each is
 * one GETRANGE, so a value's parts are read over all connections at once,
 * while the value stays one key that Redis evicts, expires and replaces whole.
 *
 * In a cluster ("split"): one key is one slot, served by one master, so a
 * value of C >= 2 parts is C + 1 keys, to be read from every master at
 * once. Part i is the string hdr(i) part(i) under its part key (slot.h,
 * lmr__part_key: the key, then "#lmr:", the write id, then "{tag}", the
 * tag placing it at a slot i/C of the way round the slot space from the
 * key's own, so the parts spread over masters that serve ranges of slots;
 * a key with its own hash tag keeps every part in its slot). The key
 * itself holds hdr(0) alone (32 bytes): the commit record, written last,
 * with SET ... GET, which hands the writer the record it replaced, whose
 * parts that writer then deletes. So of racing writers the last to commit
 * wins whole (the others' parts are each deleted by the writer that
 * replaced them), and a reader takes only the parts the record names, each
 * checked against its header: a part missing (evicted, expired, on a
 * failed master) reads as a miss, never wrong data. What no longer holds
 * is "evicted whole": an eviction may take one part (the value then reads
 * as a miss) or the record (its parts then stay until evicted).
 */
#ifndef LMR_STRIPE_H
#define LMR_STRIPE_H

#include <stddef.h>
#include <stdint.h>

#define LMR_STRIPE_MAGIC "\x89LMR"
#define LMR_STRIPE_MAGIC_LEN 4
#define LMR_STRIPE_VERSION 2
#define LMR_STRIPE_HDR_SIZE 32

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

/* How many parts to encode a value of len bytes in, when the count follows
 * the size: each part (header and LMR_SERVER_STRING_SLACK included) at most
 * budget bytes, so that the server's reply buffer for one part's GETRANGE
 * stays small. Among the counts from the fewest up to about twice that, the
 * one whose buffers, rounded up to jemalloc's size classes (Redis's
 * allocator), waste least; above `group` parts (the connection count) only
 * multiples of group, so that every connection reads the same share. 1
 * (the value verbatim) when it fits the budget whole; at most max_count. */
uint32_t lmr_stripe_count(uint64_t len, uint64_t budget, uint32_t group, uint32_t max_count);

/* Byte offset and length of part i of a value of total_len bytes. */
uint64_t lmr_stripe_offset(uint64_t total_len, uint32_t count, uint32_t i);
uint64_t lmr_stripe_len(uint64_t total_len, uint32_t count, uint32_t i);
/* Where hdr(i) starts in the stored string, and the string's length. */
uint64_t lmr_stripe_stored_offset(uint64_t total_len, uint32_t count, uint32_t i);
uint64_t lmr_stripe_stored_len(uint64_t total_len, uint32_t count);

void lmr_stripe_hdr_encode(const lmr_stripe_hdr *h,
                           unsigned char out[LMR_STRIPE_HDR_SIZE]);
/* 0 when the bytes are a well-formed header of this format (magic, version,
 * size, 0 <= index < count <= max_count); -1 otherwise. */
int lmr_stripe_hdr_decode(const unsigned char in[LMR_STRIPE_HDR_SIZE],
                          uint32_t max_count, lmr_stripe_hdr *h);

/* 1 when n bytes at p begin with the magic (n < 4: a prefix of it never
 * counts). A writer encodes such a value even when it is small. */
int lmr_stripe_has_magic(const void *p, size_t n);

/* What the first bytes of a stored string (head, n = min(its length, 32))
 * and its length say it holds. split: the key is a cluster's (its string
 * is hdr(0) part(0) alone when the value has more parts). */
typedef enum {
  LMR_STORED_VERBATIM,  /* no magic: the value is the string itself */
  LMR_STORED_ENCODED,   /* hdr(0) decoded into *h and the length matches */
  LMR_STORED_BROKEN,    /* begins with the magic but is no whole encoding */
} lmr_stored_kind;
lmr_stored_kind lmr_stripe_classify(const unsigned char *head, size_t n, uint64_t stored_len,
                                    uint32_t max_count, int split, lmr_stripe_hdr *h);

/* Decodes an encoded string held whole in buf (stored_len bytes, h its
 * hdr(0)) into the value, in place: buf[0..h->total_len). 0 when every
 * header matches hdr(0) (index aside); -1 otherwise (buf then unspecified). */
int lmr_stripe_decode_in_place(unsigned char *buf, const lmr_stripe_hdr *h);

#endif
