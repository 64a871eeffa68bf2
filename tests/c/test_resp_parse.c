/* The RESP reply parser (resp.h): every reply type, every way of splitting
 * the bytes, malformed input, and the bulk payload hand-off. */
#include <stdlib.h>

#include "resp.h"
#include "test.h"

/* ---- driver ---- */

/* How the driver moves bulk payloads into the destination. */
enum {
  TAKE,    /* lmr_resp_take_payload from the fed chunk (read-ahead path) */
  TAKE_1,  /* the same, asking for one byte at a time */
  DIRECT,  /* memcpy by the caller + lmr_resp_payload_done (socket path) */
};

#define GUARD 64
#define GUARD_BYTE 0xA5
#define DST_MAX 256
#define LOG_MAX 4096

/* Where payloads land: all of them back to back, between guard bytes. */
typedef struct {
  unsigned char area[GUARD + DST_MAX + GUARD];
  size_t cap;   /* destination capacity, <= DST_MAX */
  size_t used;  /* payload bytes delivered */
  char log[LOG_MAX];  /* events as text, e.g. "bulk 3;end;int 1;" */
  size_t log_len;
} sink;

static unsigned char *dst(sink *s) { return s->area + GUARD; }

static void sink_init(sink *s, size_t cap) {
  memset(s->area, GUARD_BYTE, sizeof s->area);
  s->cap = cap;
  s->used = 0;
  s->log[0] = '\0';
  s->log_len = 0;
}

/* The guard bytes on both sides of the destination are intact. */
static int guards_ok(const sink *s) {
  for (size_t i = 0; i < GUARD; i++)
    if (s->area[i] != GUARD_BYTE || s->area[GUARD + s->cap + i] != GUARD_BYTE) return 0;
  return 1;
}

static void log_event(sink *s, const lmr_reply *r) {
  char *out = s->log + s->log_len;
  size_t room = LOG_MAX - s->log_len;
  int n = 0;
  switch (r->type) {
    case LMR_REPLY_STATUS: n = snprintf(out, room, "status %.*s;", (int)r->len, r->str); break;
    case LMR_REPLY_ERROR: n = snprintf(out, room, "error %.*s;", (int)r->len, r->str); break;
    case LMR_REPLY_INTEGER: n = snprintf(out, room, "int %" PRId64 ";", r->integer); break;
    case LMR_REPLY_NIL: n = snprintf(out, room, "nil;"); break;
    case LMR_REPLY_BULK: n = snprintf(out, room, "bulk %" PRId64 ";", r->integer); break;
    case LMR_REPLY_ARRAY: n = snprintf(out, room, "array %" PRId64 ";", r->integer); break;
    case LMR_REPLY_BULK_END: n = snprintf(out, room, "end;"); break;
    default: n = snprintf(out, room, "?%d;", (int)r->type); break;
  }
  if (n > 0) s->log_len += (size_t)n < room ? (size_t)n : room - 1;
}

/* Feeds one chunk through the parser the way a connection does: payload
 * bytes go to the destination, everything else to lmr_resp_feed. Returns 0,
 * -1 when the parser rejected the input, -2 when the parser misbehaved. */
static int feed_chunk(lmr_resp_parser *p, sink *s, const char *in, size_t n, int mode) {
  size_t pos = 0;
  lmr_reply r;
  if (n == 0) {  /* an empty feed is harmless and completes nothing */
    if (lmr_resp_payload_pending(p) > 0) return 0;
    long k = lmr_resp_feed(p, in, 0, &r);
    return k < 0 ? -1 : (k == 0 && r.type == LMR_REPLY_NONE) ? 0 : -2;
  }
  while (pos < n) {
    int64_t pending = lmr_resp_payload_pending(p);
    if (pending > 0) {
      size_t room = s->cap - s->used;
      if ((uint64_t)pending > room) return -2;  /* would overrun the destination */
      size_t k;
      if (mode == DIRECT) {
        k = n - pos < (size_t)pending ? n - pos : (size_t)pending;
        memcpy(dst(s) + s->used, in + pos, k);
        lmr_resp_payload_done(p, k);
      } else {
        size_t want = mode == TAKE_1 ? 1 : room;
        k = lmr_resp_take_payload(p, in + pos, n - pos, dst(s) + s->used, want);
        if (k == 0 || k > want) return -2;
      }
      s->used += k;
      pos += k;
      continue;
    }
    long k = lmr_resp_feed(p, in + pos, n - pos, &r);
    if (k < 0) return -1;
    if (k == 0 || (size_t)k > n - pos) return -2;
    /* A feed stops at the end of a reply, or consumes everything. */
    if (r.type == LMR_REPLY_NONE && (size_t)k != n - pos) return -2;
    pos += (size_t)k;
    if (r.type != LMR_REPLY_NONE) log_event(s, &r);
  }
  return 0;
}

/* Feeds in[0..n) cut at cuts[0] <= cuts[1] <= ... (empty chunks included). */
static int run(sink *s, const char *in, size_t n, const size_t *cuts, int ncuts, int mode) {
  lmr_resp_parser p;
  lmr_resp_parser_init(&p);
  size_t start = 0;
  for (int i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : n;
    int rc = feed_chunk(&p, s, in + start, end - start, mode);
    if (rc != 0) {
      if (rc == -1) {
        /* Broken for good: valid input is refused too. */
        lmr_reply r;
        if (lmr_resp_feed(&p, "+OK\r\n", 5, &r) != -1) return -2;
      }
      return rc;
    }
    start = end;
  }
  return 0;
}

/* ---- valid replies ---- */

typedef struct {
  const char *in;
  size_t n;
  const char *events;
  const char *payload;
  size_t payload_len;
} valid_case;

#define BYTES(lit) lit, sizeof(lit) - 1

static const valid_case valid[] = {
    {BYTES("+OK\r\n"), "status OK;", BYTES("")},
    {BYTES("+\r\n"), "status ;", BYTES("")},
    {BYTES("-ERR unknown command 'FOO'\r\n"), "error ERR unknown command 'FOO';", BYTES("")},
    {BYTES(":0\r\n"), "int 0;", BYTES("")},
    {BYTES(":-5\r\n"), "int -5;", BYTES("")},
    {BYTES(":9223372036854775807\r\n"), "int 9223372036854775807;", BYTES("")},
    {BYTES(":-9223372036854775808\r\n"), "int -9223372036854775808;", BYTES("")},
    {BYTES("$-1\r\n"), "nil;", BYTES("")},
    {BYTES("$0\r\n\r\n"), "bulk 0;end;", BYTES("")},
    {BYTES("$5\r\na\r\n\0b\r\n"), "bulk 5;end;", BYTES("a\r\n\0b")},
    {BYTES("*-1\r\n"), "nil;", BYTES("")},
    {BYTES("*0\r\n"), "array 0;", BYTES("")},
    {BYTES("*3\r\n:1\r\n$3\r\nfoo\r\n+bar\r\n"), "array 3;int 1;bulk 3;end;status bar;",
     BYTES("foo")},
    {BYTES("*2\r\n*1\r\n$-1\r\n$2\r\n\r\n\r\n"), "array 2;array 1;nil;bulk 2;end;",
     BYTES("\r\n")},
    {BYTES("+OK\r\n$2\r\nhi\r\n:7\r\n$-1\r\n-E\r\n$3\r\n$3\r\r\n"),
     "status OK;bulk 2;end;int 7;nil;error E;bulk 3;end;", BYTES("hi$3\r")},
};

/* One run: the events and payload bytes match, and the guards are intact. */
static int check_run(const valid_case *c, const size_t *cuts, int ncuts, int mode) {
  sink s;
  sink_init(&s, c->payload_len);
  int rc = run(&s, c->in, c->n, cuts, ncuts, mode);
  if (rc != 0 || strcmp(s.log, c->events) != 0 || s.used != c->payload_len ||
      memcmp(dst(&s), c->payload, c->payload_len) != 0 || !guards_ok(&s)) {
    fprintf(stderr, "  input \"%.*s\" mode %d cuts", (int)c->n, c->in, mode);
    for (int i = 0; i < ncuts; i++) fprintf(stderr, " %zu", cuts[i]);
    fprintf(stderr, ": rc %d, events \"%s\"\n", rc, s.log);
    ASSERT_EQ(rc, 0);
    ASSERT(strcmp(s.log, c->events) == 0);
    ASSERT_EQ(s.used, c->payload_len);
    ASSERT_MEM_EQ(dst(&s), c->payload, c->payload_len);
    ASSERT(guards_ok(&s));
  }
  return 0;
}

/* Every split of the input gives the same result: whole, every 1 and 2 cut
 * points (empty chunks included), and one byte at a time. */
static int check_all_splits(const valid_case *c) {
  static size_t ones[LOG_MAX];
  ASSERT(c->n <= LOG_MAX);
  for (size_t i = 0; i + 1 < c->n; i++) ones[i] = i + 1;
  for (int mode = TAKE; mode <= DIRECT; mode++) {
    ASSERT_EQ(check_run(c, NULL, 0, mode), 0);
    ASSERT_EQ(check_run(c, ones, c->n > 0 ? (int)c->n - 1 : 0, mode), 0);
    for (size_t i = 0; i <= c->n; i++) {
      ASSERT_EQ(check_run(c, (size_t[]){i}, 1, mode), 0);
      if (c->n > 64) continue;  /* pairs of cuts grow as n^2: short inputs only */
      for (size_t j = i; j <= c->n; j++)
        ASSERT_EQ(check_run(c, (size_t[]){i, j}, 2, mode), 0);
    }
  }
  return 0;
}

TEST(valid_replies_every_split) {
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
    ASSERT_EQ(check_all_splits(&valid[i]), 0);
  return 0;
}

/* A status or error line longer than the parser keeps is consumed whole,
 * its text truncated, and the next reply parses. The parser keeps
 * LMR_RESP_LINE_MAX - 1 bytes (room for a NUL): 255 stays whole, 256 and
 * 1000 are cut. */
TEST(long_line_truncated) {
  static const size_t lens[] = {LMR_RESP_LINE_MAX - 1, LMR_RESP_LINE_MAX, 1000};
  for (int t = 0; t < 2; t++) {
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
      static char in[1200], events[600];
      size_t n = 0;
      in[n++] = t == 0 ? '+' : '-';
      for (size_t i = 0; i < lens[k]; i++) in[n++] = (char)('a' + i % 26);
      n += (size_t)sprintf(in + n, "\r\n:1\r\n");
      int kept = LMR_RESP_LINE_MAX - 1;
      snprintf(events, sizeof events, "%s %.*s;int 1;", t == 0 ? "status" : "error", kept,
               in + 1);
      valid_case c = {in, n, events, "", 0};
      ASSERT_EQ(check_all_splits(&c), 0);
    }
  }
  return 0;
}

/* ---- malformed input ---- */

typedef struct {
  const char *in;
  size_t n;
} bad_case;

static const bad_case malformed[] = {
    /* bad lengths and numbers */
    {BYTES("$abc\r\n")}, {BYTES("$\r\n")}, {BYTES("$+5\r\n")}, {BYTES("$ 5\r\n")},
    {BYTES("$5 \r\n")}, {BYTES("$-\r\n")}, {BYTES("$1-\r\n")}, {BYTES("*x\r\n")},
    {BYTES(":\r\n")}, {BYTES(":1.5\r\n")}, {BYTES(":-\r\n")}, {BYTES(":--1\r\n")},
    {BYTES("$123456789012345678901234567890\r\n")},
    {BYTES("$99999999999999999999\r\n")},   /* 20 digits: overflows */
    {BYTES(":9223372036854775808\r\n")},    /* INT64_MAX + 1 */
    {BYTES(":-9223372036854775809\r\n")},   /* INT64_MIN - 1 */
    /* negative other than -1 */
    {BYTES("$-2\r\n")}, {BYTES("*-2\r\n")}, {BYTES("$-9223372036854775808\r\n")},
    /* too big (one past each limit: see the limits test) */
    {BYTES("$9223372036854775807\r\n")}, {BYTES("*9223372036854775807\r\n")},
    /* line endings */
    {BYTES("$5\n")}, {BYTES("$5\rx")}, {BYTES("+OK\n")}, {BYTES("+OK\rx\n")},
    {BYTES("-ERR\n")}, {BYTES(":1\r\r\n")},
    /* missing CRLF after the payload */
    {BYTES("$3\r\nfooX\r\n")}, {BYTES("$3\r\nfoo\rX")}, {BYTES("$3\r\nfoo\n")},
    {BYTES("$0\r\n\n")}, {BYTES("$1\r\nab\r\n")},
    /* unknown type bytes, RESP3 ones included */
    {BYTES("!")}, {BYTES("%")}, {BYTES("x")}, {BYTES("\0")}, {BYTES("_\r\n")},
    {BYTES("#t\r\n")}, {BYTES("\r\n")}, {BYTES("+OK\r\n\n")},
    /* number lines too long, even if the value would fit */
    {BYTES(":000000000000000000001\r\n")}, {BYTES("$0000000000000000000000000\r\n")},
    {BYTES("*000000000000000000000\r\n")},
};

/* Every split is rejected with -1, leaves the parser broken (run() checks)
 * and never writes outside the destination. */
static int check_rejected(const bad_case *c) {
  static size_t ones[256];
  for (size_t i = 0; i + 1 < c->n; i++) ones[i] = i + 1;
  for (int mode = TAKE; mode <= DIRECT; mode++) {
    for (size_t i = 0; i <= c->n + 1; i++) {
      sink s;
      sink_init(&s, 16);
      int rc = i <= c->n ? run(&s, c->in, c->n, (size_t[]){i}, 1, mode)
                         : run(&s, c->in, c->n, ones, c->n > 0 ? (int)c->n - 1 : 0, mode);
      if (rc != -1) fprintf(stderr, "  input \"%.*s\" cut %zu mode %d\n", (int)c->n, c->in, i, mode);
      ASSERT_EQ(rc, -1);
      ASSERT(guards_ok(&s));
    }
  }
  return 0;
}

TEST(malformed_rejected) {
  for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
    ASSERT_EQ(check_rejected(&malformed[i]), 0);
  return 0;
}

/* ---- single calls ---- */

/* A feed stops at the end of each reply and reports what it consumed. */
TEST(feed_stops_after_reply) {
  lmr_resp_parser p;
  lmr_reply r;
  lmr_resp_parser_init(&p);
  const char *in = "+OK\r\n:42\r\n$3\r\nabc\r\n";
  ASSERT_EQ(lmr_resp_feed(&p, in, strlen(in), &r), 5);
  ASSERT_EQ(r.type, LMR_REPLY_STATUS);
  ASSERT_EQ(r.len, 2);
  ASSERT_MEM_EQ(r.str, "OK", 2);
  ASSERT_EQ(lmr_resp_feed(&p, in + 5, strlen(in + 5), &r), 5);
  ASSERT_EQ(r.type, LMR_REPLY_INTEGER);
  ASSERT_EQ(r.integer, 42);
  ASSERT_EQ(lmr_resp_feed(&p, in + 10, strlen(in + 10), &r), 4);
  ASSERT_EQ(r.type, LMR_REPLY_BULK);
  ASSERT_EQ(r.integer, 3);
  ASSERT_EQ(lmr_resp_payload_pending(&p), 3);
  /* want < available: only `want` bytes move; dst NULL discards them. */
  char out[3] = {0};
  ASSERT_EQ(lmr_resp_take_payload(&p, in + 14, 7, out, 2), 2);
  ASSERT_MEM_EQ(out, "ab", 2);
  ASSERT_EQ(lmr_resp_take_payload(&p, in + 16, 5, NULL, 100), 1);
  ASSERT_EQ(lmr_resp_payload_pending(&p), 0);
  ASSERT_EQ(lmr_resp_take_payload(&p, in + 17, 4, out, 100), 0);  /* none pending */
  ASSERT_EQ(lmr_resp_feed(&p, in + 17, 2, &r), 2);
  ASSERT_EQ(r.type, LMR_REPLY_BULK_END);
  ASSERT_EQ(lmr_resp_feed(&p, "", 0, &r), 0);
  ASSERT_EQ(r.type, LMR_REPLY_NONE);
  return 0;
}

/* Bulk and array headers exactly at the limits pass; one more fails. */
TEST(limits) {
  lmr_resp_parser p;
  lmr_reply r;
  char in[64];
  lmr_resp_parser_init(&p);
  int n = snprintf(in, sizeof in, "$%lld\r\n", LMR_RESP_MAX_BULK);
  ASSERT_EQ(lmr_resp_feed(&p, in, (size_t)n, &r), n);
  ASSERT_EQ(r.type, LMR_REPLY_BULK);
  ASSERT_EQ(r.integer, LMR_RESP_MAX_BULK);
  ASSERT_EQ(lmr_resp_payload_pending(&p), LMR_RESP_MAX_BULK);
  lmr_resp_payload_done(&p, (size_t)LMR_RESP_MAX_BULK);  /* as if recv'd in place */
  ASSERT_EQ(lmr_resp_payload_pending(&p), 0);
  n = snprintf(in, sizeof in, "\r\n*%lld\r\n", LMR_RESP_MAX_ARRAY);
  ASSERT_EQ(lmr_resp_feed(&p, in, (size_t)n, &r), 2);
  ASSERT_EQ(r.type, LMR_REPLY_BULK_END);
  ASSERT_EQ(lmr_resp_feed(&p, in + 2, (size_t)n - 2, &r), n - 2);
  ASSERT_EQ(r.type, LMR_REPLY_ARRAY);
  ASSERT_EQ(r.integer, LMR_RESP_MAX_ARRAY);

  char bad[2][32];
  snprintf(bad[0], sizeof bad[0], "$%lld\r\n", LMR_RESP_MAX_BULK + 1);
  snprintf(bad[1], sizeof bad[1], "*%lld\r\n", LMR_RESP_MAX_ARRAY + 1);
  for (int i = 0; i < 2; i++) {
    bad_case c = {bad[i], strlen(bad[i])};
    ASSERT_EQ(check_rejected(&c), 0);
  }
  return 0;
}

/* Feeding while payload is pending breaks the contract, and the parser. */
TEST(feed_during_payload_fails) {
  lmr_resp_parser p;
  lmr_reply r;
  lmr_resp_parser_init(&p);
  ASSERT_EQ(lmr_resp_feed(&p, "$2\r\nab\r\n", 8, &r), 4);
  ASSERT_EQ(lmr_resp_feed(&p, "ab\r\n", 4, &r), -1);
  ASSERT_EQ(lmr_resp_feed(&p, "+OK\r\n", 5, &r), -1);
  return 0;
}

TEST_MAIN(TEST_ENTRY(valid_replies_every_split), TEST_ENTRY(long_line_truncated),
          TEST_ENTRY(malformed_rejected), TEST_ENTRY(feed_stops_after_reply),
          TEST_ENTRY(limits), TEST_ENTRY(feed_during_payload_fails))
