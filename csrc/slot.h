/* Redis Cluster key slots, and the part keys of the cluster's "split"
 * stored format (see the design notes, issue #12).
 *
 * Slots are Redis Cluster's own rule: CRC16 (XMODEM: poly 0x1021, init 0,
 * no reflection) of the key, or of its hash tag, modulo 16384. A hash tag
 * is the bytes between the first '{' and the first '}' after it, when
 * there is at least one byte between them; otherwise the whole key is
 * hashed ("foo{}{bar}" whole, "foo{{bar}}zap" -> "{bar",
 * "foo{bar}{zap}" -> "bar").
 *
 * Slot tags (PART OF THE STORED FORMAT: changing the rule orphans every
 * stored value's parts). lmr__slot_tag(s) is the first string T, in this
 * enumeration, with crc16(T) & 16383 == s:
 *   - characters from the alphabet "0-9A-Za-z" (62 characters, in the
 *     order 0..9, A..Z, a..z);
 *   - all strings of length 1, then of length 2, then of length 3, each
 *     length in lexicographic order of that alphabet order ("0", "1", ...,
 *     "z", "00", "01", ..., "zz", "000", ...).
 * Length 3 covers all 16384 slots (tests/c/test_slot.c checks every one):
 * 62 tags have 1 character, 3448 have 2 and 12874 have 3. So "{T}" hashes to slot s.
 *
 * Part keys: part i (0 <= i < count) of the write with id W of a value
 * stored under key K is
 *   K "#lmr:" W "{" T "}"   with T = lmr__slot_tag((slot(K) + i * 16384 / count) % 16384)
 * and W the write id in 16 lowercase hex digits (K itself holds the
 * write's commit record, stripe.h). A write's parts are its own: racing
 * writers never overwrite each other's parts. For a K without '{' the part key's slot is that
 * target, so the parts of one value spread evenly over the slot space. A K
 * with its own hash tag pins every part key to K's slot. A K with a '{'
 * but no tag of its own ("a{b", "a{}b") makes part keys whose slots are
 * neither: routing must therefore always hash the name actually sent
 * (lmr__key_slot of the part key), never assume the target slot.
 */
#ifndef LMR_SLOT_H
#define LMR_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define LMR__SLOTS 16384
/* Longest slot tag, in characters (the NUL not counted). The table needs
 * only 3; the format reserves one more. */
#define LMR__SLOT_TAG_MAX 4
/* Most bytes lmr__part_key adds to a key: "#lmr:" id "{" tag "}". */
#define LMR__PART_KEY_EXTRA (5 + 16 + 1 + LMR__SLOT_TAG_MAX + 1)
/* Most parts of one value (and so the largest count of lmr__part_key). */
#define LMR__PART_COUNT_MAX 256

/* CRC16-CCITT (XMODEM), as Redis Cluster uses it: crc16("123456789") is
 * 0x31C3. */
uint16_t lmr__crc16(const void *p, size_t n);

/* The slot (0..16383) of a key, hash tags included. */
uint16_t lmr__key_slot(const void *key, size_t n);

/* The slot tag of slot (0..16383; higher bits are ignored): a NUL-
 * terminated string of 1 to 3 characters, static, valid for the process's
 * life. The table is built on the first call (thread-safe). */
const char *lmr__slot_tag(uint16_t slot);

/* Writes the part key of part `part` of the write `set_id` of key to out
 * (room for key_len + LMR__PART_KEY_EXTRA bytes; no NUL is written) and
 * returns its length. Requires part < count <= LMR__PART_COUNT_MAX. */
size_t lmr__part_key(const void *key, size_t key_len, uint32_t part, uint32_t count,
                     uint64_t set_id, char *out);

#endif
