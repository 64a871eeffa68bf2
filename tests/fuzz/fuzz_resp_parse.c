/* libFuzzer target for the RESP2 reply parser (resp.h).
 *
 * The input is a byte stream as a server might send it. It is run through
 * the parser four times, cut into reads in different ways: all at once, one
 * byte per read, and twice in reads of pseudo-random sizes (the generator is
 * seeded from a hash of the input, so a crash reproduces from the input
 * alone). Bulk payloads are delivered into a destination of exactly the size
 * that can still arrive, both with lmr_resp_take_payload (into it, or
 * discarded with dst NULL) and by copying them ourselves and calling
 * lmr_resp_payload_done, as the client does when it reads from the socket
 * straight into the caller's buffer.
 *
 * Checked on every call: a feed consumes at most what it was given, and all
 * of it unless it completed a reply; no byte is written past the destination
 * (ASan's redzone catches it; the bytes after those taken are checked
 * untouched too); a take moves at most min(input, want, pending) bytes and
 * pending drops by exactly that; replies are well formed (lengths, ranges,
 * BULK_END exactly once after each bulk); a broken parser stays broken; a
 * feed while payload is pending fails. Across the four runs: the same
 * replies, the same payload bytes and the same final state, since where the
 * reads happen to be cut must not change what is parsed.
 *
 * Build: cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DLMR_FUZZ=ON
 *        cmake --build build/fuzz --target fuzz_resp_parse
 * Run:   build/fuzz/fuzz_resp_parse -max_total_time=60 CORPUS_DIR tests/fuzz/corpus
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* Bytes after the `want` window that must stay untouched by a take. */
#define GUARD 64
#define FILL 0xA5

/* ---- small deterministic helpers ---- */

typedef struct {
  uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r) { /* splitmix64 */
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* 1..max, biased towards small values: most cuts land inside a header. */
static size_t rng_size(rng_t *r, size_t max) {
  if (max <= 1) return 1;
  uint64_t x = rng_next(r);
  size_t cap;
  switch (x & 3) {
    case 0: cap = 1; break;
    case 1: cap = 8; break;
    case 2: cap = 64; break;
    default: cap = max; break;
  }
  if (cap > max) cap = max;
  return 1 + (size_t)((x >> 2) % cap);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
  return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v) { return fnv(h, &v, sizeof v); }

/* ---- one run ---- */

enum { CUT_WHOLE, CUT_BYTES, CUT_RANDOM };

typedef struct {
  uint64_t hash;     /* replies and payload bytes, in order */
  size_t replies;
  int broken;
  size_t consumed;   /* when not broken: bytes the parser took (all of them) */
  int64_t pending;   /* final state, when not broken */
  int state;
  size_t line_len;
} outcome;

/* A parser that failed must keep failing, whatever it is fed. */
static void check_stays_broken(lmr_resp_parser *p) {
  lmr_reply out;
  CHECK(p->broken);
  CHECK(lmr_resp_feed(p, "+OK\r\n", 5, &out) == -1);
  CHECK(out.type == LMR_REPLY_NONE);
  CHECK(lmr_resp_feed(p, "", 0, &out) == -1);
  CHECK(p->broken);
}

/* Delivers pending payload from in[0..avail); returns bytes consumed. dst is
 * the bulk's destination (dst_size bytes, *dst_off filled so far). */
static size_t deliver(lmr_resp_parser *p, const uint8_t *in, size_t avail, unsigned char *dst,
                      size_t dst_size, size_t *dst_off, int cut, rng_t *rng, uint64_t *hash) {
  int64_t pending = lmr_resp_payload_pending(p);
  CHECK(pending > 0);
  size_t room = dst_size - *dst_off;
  /* The destination holds everything that can still arrive. */
  CHECK((uint64_t)room >= (avail < (uint64_t)pending ? avail : (uint64_t)pending));
  size_t want, got;
  int mode = cut == CUT_WHOLE ? 0 : cut == CUT_BYTES ? 2 : (int)(rng_next(rng) % 3);
  want = cut == CUT_WHOLE ? room : rng_size(rng, room ? room : 1);
  if (want > room) want = room;
  unsigned char *at = dst + *dst_off;

  if (mode == 0 || mode == 1) {
    lmr_resp_parser before = *p;
    got = lmr_resp_take_payload(p, (const char *)in, avail, mode == 0 ? at : NULL, want);
    CHECK(got <= avail && got <= want && (int64_t)got <= pending);
    /* It takes all it may: the smallest of input, want and pending. */
    size_t expect = avail < want ? avail : want;
    if ((int64_t)expect > pending) expect = (size_t)pending;
    CHECK(got == expect);
    CHECK(lmr_resp_payload_pending(p) == pending - (int64_t)got);
    CHECK(p->broken == before.broken);
    if (mode == 0) {
      CHECK(memcmp(at, in, got) == 0);
    } else {
      memcpy(at, in, got); /* keep dst complete for the final comparison */
    }
    /* Nothing written beyond what was taken (dst was filled with FILL). */
    for (size_t i = got; i < room && i < want + GUARD; i++) CHECK(at[i] == FILL);
  } else {
    /* The client's zero-copy path: it reads payload itself, then reports. */
    got = avail < want ? avail : want;
    if ((int64_t)got > pending) got = (size_t)pending;
    memcpy(at, in, got);
    lmr_resp_payload_done(p, got);
    CHECK(lmr_resp_payload_pending(p) == pending - (int64_t)got);
  }
  *dst_off += got;
  *hash = fnv(*hash, in, got);
  return got;
}

static void run(const uint8_t *data, size_t size, int cut, uint64_t seed, outcome *o) {
  lmr_resp_parser p;
  lmr_resp_parser_init(&p);
  rng_t rng = {seed};
  memset(o, 0, sizeof *o);
  o->hash = 0xCBF29CE484222325ull;

  size_t pos = 0;        /* bytes consumed (by feed or payload delivery) */
  size_t received = 0;   /* bytes "read from the socket" so far */
  unsigned char *dst = NULL;
  size_t dst_size = 0, dst_off = 0;
  int64_t bulk_len = -1; /* the current bulk's length; -1 when none */

  while (pos < size) {
    if (pos == received) {
      size_t n = cut == CUT_WHOLE ? size - received : cut == CUT_BYTES ? 1 : rng_size(&rng, size - received);
      received += n;
      CHECK(received <= size);
    }
    const uint8_t *in = data + pos;
    size_t avail = received - pos;

    if (lmr_resp_payload_pending(&p) > 0) {
      CHECK(bulk_len > 0);
      if (cut == CUT_RANDOM && (rng_next(&rng) & 15) == 0) {
        /* Feeding while payload is pending is a caller error: it fails. */
        lmr_resp_parser copy = p;
        lmr_reply out;
        CHECK(lmr_resp_feed(&copy, (const char *)in, avail, &out) == -1);
        check_stays_broken(&copy);
      }
      size_t got = deliver(&p, in, avail, dst, dst_size, &dst_off, cut, &rng, &o->hash);
      CHECK(got > 0); /* avail > 0 and pending > 0: progress */
      pos += got;
      if (lmr_resp_payload_pending(&p) == 0) CHECK(dst_off == (size_t)bulk_len);
      continue;
    }

    if (cut == CUT_RANDOM && (rng_next(&rng) & 15) == 0) {
      /* With nothing pending, the payload calls do nothing at all. */
      lmr_resp_parser before = p;
      unsigned char canary[4] = {FILL, FILL, FILL, FILL};
      CHECK(lmr_resp_take_payload(&p, (const char *)in, avail, canary, sizeof canary) == 0);
      lmr_resp_payload_done(&p, 1);
      CHECK(memcmp(&before, &p, sizeof p) == 0);
      CHECK(canary[0] == FILL && canary[3] == FILL);
    }

    lmr_reply out;
    memset(&out, 0x5A, sizeof out);
    long r = lmr_resp_feed(&p, (const char *)in, avail, &out);
    if (r < 0) {
      CHECK(r == -1);
      o->broken = 1;
      check_stays_broken(&p);
      break;
    }
    CHECK(!p.broken);
    CHECK((size_t)r <= avail);
    CHECK(r > 0); /* avail > 0: a feed that is not failing makes progress */
    if (out.type == LMR_REPLY_NONE) CHECK((size_t)r == avail);
    pos += (size_t)r;
    if (out.type == LMR_REPLY_NONE) continue;

    o->replies++;
    o->hash = fnv_u64(o->hash, (uint64_t)out.type);
    /* BULK_END comes exactly once after each bulk, and nothing else then. */
    CHECK((bulk_len >= 0) == (out.type == LMR_REPLY_BULK_END));
    CHECK(lmr_resp_payload_pending(&p) == 0 || out.type == LMR_REPLY_BULK);
    switch (out.type) {
      case LMR_REPLY_STATUS:
      case LMR_REPLY_ERROR:
        CHECK(out.str != NULL);
        CHECK(out.len < LMR_RESP_LINE_MAX);
        CHECK(out.str[out.len] == '\0');
        CHECK(memchr(out.str, '\r', out.len) == NULL && memchr(out.str, '\n', out.len) == NULL);
        o->hash = fnv(fnv_u64(o->hash, out.len), out.str, out.len);
        break;
      case LMR_REPLY_INTEGER:
        o->hash = fnv_u64(o->hash, (uint64_t)out.integer);
        break;
      case LMR_REPLY_NIL:
        break;
      case LMR_REPLY_ARRAY:
        CHECK(out.integer >= 0 && out.integer <= LMR_RESP_MAX_ARRAY);
        o->hash = fnv_u64(o->hash, (uint64_t)out.integer);
        break;
      case LMR_REPLY_BULK: {
        CHECK(out.integer >= 0 && out.integer <= LMR_RESP_MAX_BULK);
        CHECK(lmr_resp_payload_pending(&p) == out.integer);
        o->hash = fnv_u64(o->hash, (uint64_t)out.integer);
        bulk_len = out.integer;
        /* Exactly as big as what can still arrive: ASan guards its end. */
        size_t left = size - pos;
        dst_size = (uint64_t)out.integer < left ? (size_t)out.integer : left;
        dst_off = 0;
        free(dst);
        dst = malloc(dst_size ? dst_size : 1);
        CHECK(dst != NULL);
        memset(dst, FILL, dst_size);
        break;
      }
      case LMR_REPLY_BULK_END:
        CHECK(dst_off == (size_t)bulk_len);
        bulk_len = -1;
        free(dst);
        dst = NULL;
        break;
      default:
        CHECK(!"unknown reply type");
    }
  }
  free(dst);
  CHECK(pos <= size);
  if (!o->broken) {
    CHECK(pos == size);
    o->consumed = pos;
    o->pending = lmr_resp_payload_pending(&p);
    o->state = p.state;
    o->line_len = p.line_len;
  }
}

static int same(const outcome *a, const outcome *b) {
  return a->hash == b->hash && a->replies == b->replies && a->broken == b->broken &&
         a->consumed == b->consumed && a->pending == b->pending && a->state == b->state &&
         a->line_len == b->line_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t seed = fnv(0xCBF29CE484222325ull, data, size);
  outcome whole, bytes, r1, r2;
  run(data, size, CUT_WHOLE, 0, &whole);
  run(data, size, CUT_BYTES, 0, &bytes);
  run(data, size, CUT_RANDOM, seed, &r1);
  run(data, size, CUT_RANDOM, seed ^ 0x5555555555555555ull, &r2);
  CHECK(same(&whole, &bytes));
  CHECK(same(&whole, &r1));
  CHECK(same(&whole, &r2));
  return 0;
}
