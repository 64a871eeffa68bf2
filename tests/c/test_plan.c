/* Call plans (plan.h) without a server: each round's jobs are answered by
 * a fake store (one Redis string, or none, or another type) that fills in
 * the job results the way jobs.c would from real replies. The plans'
 * commands and verdicts are checked, including a value replaced between
 * two rounds of a read. */
#include <stdlib.h>

#include "internal.h"
#include "plan.h"
#include "test.h"

/* The fake server's one key. */
typedef struct {
  int exists, wrongtype;
  unsigned char *bytes;
  size_t len;
  int commands;            /* commands the plan sent */
  int rounds;
  /* Before answering round `swap_at`, the value becomes `next`. */
  int swap_at;
  unsigned char *next;
  size_t next_len;
} fake_store;

static void store_put(fake_store *s, const unsigned char *v, size_t n) {
  free(s->bytes);
  s->bytes = malloc(n + 1);
  memcpy(s->bytes, v, n);
  s->len = n;
  s->exists = 1;
  s->wrongtype = 0;
}

/* The string a writer stores for value v (plan_set's own SET job). */
static void store_set(fake_store *s, const unsigned char *v, size_t n, uint32_t count,
                      uint64_t id) {
  lmr_op op;
  lmr__op_init(&op, "k", 1, 10.0, 1 << 30, 1);
  op.src = v;
  op.len = n;
  lmr_plan p;
  lmr_error err;
  if (lmr__plan_start(&p, LMR_PLAN_SET, &op, count, id, &err) != LMR_OK) abort();
  size_t stored = op.count == 0 ? n : lmr_stripe_stored_len(n, op.count);
  unsigned char *out = malloc(stored + 1);
  if (op.count == 0) {
    memcpy(out, v, n);
  } else {
    for (uint32_t i = 0; i < op.count; i++) {
      unsigned char *at = out + lmr_stripe_stored_offset(n, op.count, i);
      memcpy(at, op.hdrs + (size_t)i * LMR_STRIPE_HDR_SIZE, LMR_STRIPE_HDR_SIZE);
      memcpy(at + LMR_STRIPE_HDR_SIZE, v + lmr_stripe_offset(n, op.count, i),
             lmr_stripe_len(n, op.count, i));
    }
  }
  lmr__plan_destroy(&p);
  store_put(s, out, stored);
  free(out);
}

/* GETRANGE's arithmetic for [from, to] on the stored string. */
static size_t range(const fake_store *s, uint64_t from, uint64_t to, const unsigned char **p) {
  *p = s->bytes;
  if (!s->exists || from >= s->len) return 0;
  if (to >= s->len) to = s->len - 1;
  *p = s->bytes + from;
  return (size_t)(to - from + 1);
}

/* Answers one job as jobs.c does from the replies a Redis server sends. */
static void answer(fake_store *s, lmr_key_job *j) {
  lmr_op *op = j->op;
  j->base.status = LMR_OK;
  const unsigned char *p;
  size_t n;
  switch (j->kind) {
    case LMR_JOB_HEAD: {  /* STRLEN key; GETRANGE key 0 head_len */
      s->commands += 2;
      if (s->exists && s->wrongtype) {
        j->wrongtype = 1;
        return;
      }
      n = range(s, 0, op->head_len, &p);
      j->head_n = n;
      j->head_in_dst = op->head_len <= op->cap && !op->layout_guessed;
      size_t placed = j->head_in_dst ? (n < op->cap ? n : op->cap) : 0;
      if (placed > 0) memcpy(op->dst, p, placed);
      if (n > 0) memcpy(j->head, p, n < 32 ? n : 32);
      j->stored_len = (int64_t)(s->exists ? s->len : 0);
      return;
    }
    case LMR_JOB_PART: {
      s->commands++;
      if (s->exists && s->wrongtype) {
        j->wrongtype = j->torn = 1;
        return;
      }
      const lmr_stripe_hdr *h = &op->layout;
      uint64_t from = lmr_stripe_stored_offset(h->total_len, h->count, j->part);
      uint64_t len = lmr_stripe_len(h->total_len, h->count, j->part);
      n = range(s, from, from + LMR_STRIPE_HDR_SIZE + len - 1, &p);
      lmr_stripe_hdr g;
      if (n != LMR_STRIPE_HDR_SIZE + len || lmr_stripe_hdr_decode(p, h->count, &g) != 0 ||
          !lmr__part_matches(op, j->part, &g)) {
        j->torn = 1;
        return;
      }
      j->seen_id = g.set_id;
      if (len > 0)
        memcpy(op->dst + lmr_stripe_offset(h->total_len, h->count, j->part),
               p + LMR_STRIPE_HDR_SIZE, len);
      return;
    }
    case LMR_JOB_GET:
      s->commands++;
      if (!s->exists) return;
      if (s->wrongtype) {
        j->wrongtype = j->torn = 1;
        return;
      }
      j->stored_len = (int64_t)s->len;
      j->placed = s->len <= op->cap;
      if (j->placed) memcpy(op->dst, s->bytes, s->len);
      return;
    case LMR_JOB_DEL:
      s->commands++;
      j->integer = s->exists;
      s->exists = 0;
      return;
    default:
      abort();
  }
}

/* Runs a plan against the store (a get with part count `guess`, or none:
 * 0); returns the call's code. */
static int drive_guess(fake_store *s, lmr_plan *p, lmr_plan_kind kind, lmr_op *op,
                       uint32_t guess, lmr_error *err) {
  s->commands = 0;
  s->rounds = 0;
  int rc = lmr__plan_start(p, kind, op, guess, 0, err);
  while (rc == LMR_OK && p->njobs > 0) {
    if (s->next != NULL && s->rounds == s->swap_at) {
      store_put(s, s->next, s->next_len);
      free(s->next);
      s->next = NULL;
    }
    s->rounds++;
    for (int i = 0; i < p->njobs; i++) answer(s, &p->jobs[i]);
    rc = lmr__plan_next(p, err);
  }
  lmr__plan_destroy(p);
  return rc;
}

static int drive(fake_store *s, lmr_plan *p, lmr_plan_kind kind, lmr_op *op, lmr_error *err) {
  return drive_guess(s, p, kind, op, 0, err);
}

static int do_get(fake_store *s, unsigned char *buf, size_t cap, int *found, uint64_t *len) {
  lmr_op op;
  lmr__op_init(&op, "k", 1, 10.0, 1 << 30, 1);
  op.dst = buf;
  op.cap = cap;
  lmr_plan p;
  lmr_error err;
  int rc = drive(s, &p, LMR_PLAN_GET, &op, &err);
  *found = p.found;
  *len = rc == LMR_ETOOBIG ? err.needed : p.len;
  return rc;
}

static unsigned char *pattern(size_t n, unsigned seed) {
  unsigned char *v = malloc(n + 1);
  for (size_t i = 0; i < n; i++) v[i] = (unsigned char)(i * 31 + seed);
  return v;
}

/* A value written in `count` parts reads back whole into buffers of
 * several sizes, in the number of rounds and commands the format says. */
static int check_round_trip(size_t n, uint32_t count) {
  fake_store s = {0};
  unsigned char *v = pattern(n, 7);
  store_set(&s, v, n, count, 99);
  int encoded = s.len != n || (n >= 4 && memcmp(v, "\x89LMR", 4) == 0);
  size_t caps[] = {n, n + 1, n + (1u << 20)};
  for (int k = 0; k < 3; k++) {
    unsigned char *buf = calloc(caps[k] + 1, 1);
    int found;
    uint64_t len;
    ASSERT_EQ(do_get(&s, buf, caps[k], &found, &len), LMR_OK);
    ASSERT_EQ(found, 1);
    ASSERT_EQ(len, n);
    ASSERT_MEM_EQ(buf, v, n);
    size_t head = caps[k] < LMR_HEAD_MAX ? (caps[k] > 32 ? caps[k] : 32) : LMR_HEAD_MAX;
    if (s.len <= head && (s.len <= caps[k] || !encoded)) {
      ASSERT_EQ(s.rounds, 1);            /* the whole string came with HEAD */
      ASSERT_EQ(s.commands, 2);
    } else if (encoded) {
      ASSERT_EQ(s.rounds, 2);            /* HEAD, then every part at once */
      ASSERT_EQ(s.commands, 2 + (int)count);
    } else {
      ASSERT_EQ(s.rounds, 2);            /* HEAD, then one GET */
      ASSERT_EQ(s.commands, 3);
    }
    free(buf);
  }
  free(v);
  free(s.bytes);
  return 0;
}

TEST(round_trips) {
  ASSERT_EQ(check_round_trip(0, 1), 0);
  ASSERT_EQ(check_round_trip(20, 1), 0);
  ASSERT_EQ(check_round_trip(100000, 1), 0);      /* verbatim, past HEAD's bytes */
  ASSERT_EQ(check_round_trip(1000, 4), 0);        /* encoded, whole in HEAD */
  ASSERT_EQ(check_round_trip(3u << 20, 20), 0);   /* encoded, read by parts */
  ASSERT_EQ(check_round_trip(5, 256), 0);         /* empty parts */
  return 0;
}

TEST(magic_value_is_encoded) {
  fake_store s = {0};
  unsigned char v[] = "\x89LMR and more";
  store_set(&s, v, sizeof v, 1, 5);
  ASSERT_EQ(s.len, sizeof v + LMR_STRIPE_HDR_SIZE);  /* one part, with its header */
  unsigned char buf[64];
  int found;
  uint64_t len;
  ASSERT_EQ(do_get(&s, buf, sizeof buf, &found, &len), LMR_OK);
  ASSERT_EQ(found, 1);
  ASSERT_EQ(len, sizeof v);
  ASSERT_MEM_EQ(buf, v, sizeof v);
  free(s.bytes);
  return 0;
}

TEST(miss_and_other_types) {
  fake_store s = {0};
  unsigned char buf[64];
  int found;
  uint64_t len;
  ASSERT_EQ(do_get(&s, buf, sizeof buf, &found, &len), LMR_OK);  /* absent */
  ASSERT_EQ(found, 0);
  ASSERT_EQ(s.commands, 2);                                     /* one round trip */
  ASSERT_EQ(s.rounds, 1);
  store_put(&s, (const unsigned char *)"x", 1);
  s.wrongtype = 1;                                              /* a list, say */
  ASSERT_EQ(do_get(&s, buf, sizeof buf, &found, &len), LMR_OK);
  ASSERT_EQ(found, 0);
  /* The empty value is stored encoded, so it is a value, not a miss... */
  store_set(&s, (const unsigned char *)"", 0, 1, 3);
  ASSERT_EQ(s.len, LMR_STRIPE_HDR_SIZE);
  ASSERT_EQ(do_get(&s, buf, sizeof buf, &found, &len), LMR_OK);
  ASSERT_EQ(found, 1);
  ASSERT_EQ(len, 0);
  /* ...while an empty string another client wrote reads as none. */
  store_put(&s, (const unsigned char *)"", 0);
  ASSERT_EQ(do_get(&s, buf, sizeof buf, &found, &len), LMR_OK);
  ASSERT_EQ(found, 0);
  free(s.bytes);
  return 0;
}

TEST(broken_is_a_miss) {
  fake_store s = {0};
  unsigned char *v = pattern(300000, 1);
  store_set(&s, v, 300000, 4, 9);
  s.len -= 1;                      /* cut short by another client */
  unsigned char *buf = malloc(400000);
  int found;
  uint64_t len;
  ASSERT_EQ(do_get(&s, buf, 400000, &found, &len), LMR_OK);
  ASSERT_EQ(found, 0);
  ASSERT_EQ(s.rounds, 1);
  /* A broken string HEAD sees whole is a miss at once. */
  store_set(&s, v, 1000, 4, 9);
  s.len -= 1;
  ASSERT_EQ(do_get(&s, buf, 400000, &found, &len), LMR_OK);
  ASSERT_EQ(found, 0);
  ASSERT_EQ(s.rounds, 1);
  free(buf);
  free(v);
  free(s.bytes);
  return 0;
}

TEST(too_small_buffer) {
  fake_store s = {0};
  unsigned char *v = pattern(300000, 1);
  unsigned char buf[100];
  int found;
  uint64_t len;
  store_set(&s, v, 300000, 4, 9);  /* encoded: the header says how long */
  ASSERT_EQ(do_get(&s, buf, sizeof buf, &found, &len), LMR_ETOOBIG);
  ASSERT_EQ(len, 300000);
  ASSERT_EQ(s.rounds, 1);
  store_set(&s, v, 300000, 1, 9);  /* verbatim: STRLEN says */
  ASSERT_EQ(do_get(&s, buf, sizeof buf, &found, &len), LMR_ETOOBIG);
  ASSERT_EQ(len, 300000);
  ASSERT_EQ(do_get(&s, buf, 10, &found, &len), LMR_ETOOBIG);  /* under 32 bytes */
  free(v);
  free(s.bytes);
  return 0;
}

/* The value is replaced after HEAD: the parts of the old layout no longer
 * match, and the read starts again and returns the new value whole. */
static int check_replaced(size_t n1, uint32_t c1, size_t n2, uint32_t c2) {
  fake_store s = {0}, other = {0};
  unsigned char *v1 = pattern(n1, 1), *v2 = pattern(n2, 2);
  store_set(&s, v1, n1, c1, 1);
  store_set(&other, v2, n2, c2, 2);
  s.next = other.bytes;
  s.next_len = other.len;
  s.swap_at = 1;
  size_t cap = (n1 > n2 ? n1 : n2) + 10;
  unsigned char *buf = malloc(cap);
  int found;
  uint64_t len;
  ASSERT_EQ(do_get(&s, buf, cap, &found, &len), LMR_OK);
  ASSERT_EQ(found, 1);
  ASSERT_EQ(len, n2);
  ASSERT_MEM_EQ(buf, v2, n2);
  ASSERT_EQ(s.rounds, 4);          /* HEAD, stale round, HEAD, good round */
  free(buf);
  free(v1);
  free(v2);
  free(s.bytes);
  return 0;
}

TEST(replaced_between_rounds) {
  ASSERT_EQ(check_replaced(3u << 20, 8, 3u << 20, 8), 0);    /* same layout, new write */
  ASSERT_EQ(check_replaced(3u << 20, 8, 5u << 20, 12), 0);   /* wider */
  ASSERT_EQ(check_replaced(3u << 20, 8, 200000, 1), 0);      /* verbatim now */
  ASSERT_EQ(check_replaced(200000, 1, 3u << 20, 8), 0);      /* encoded now */
  return 0;
}

/* A value replaced before every round: the reader gives up with a miss
 * after LMR_PLAN_READ_ATTEMPTS reads rather than looping. */
TEST(gives_up) {
  fake_store s = {0};
  unsigned char *v = pattern(3u << 20, 1);
  store_set(&s, v, 3u << 20, 8, 1);
  lmr_op op;
  lmr__op_init(&op, "k", 1, 10.0, 1 << 30, 1);
  unsigned char *buf = malloc(4u << 20);
  op.dst = buf;
  op.cap = 4u << 20;
  lmr_plan p;
  lmr_error err;
  int rc = lmr__plan_start(&p, LMR_PLAN_GET, &op, 0, 0, &err);
  int rounds = 0;
  uint64_t id = 100;
  while (rc == LMR_OK && p.njobs > 0) {
    if (p.jobs[0].kind == LMR_JOB_PART) store_set(&s, v, 3u << 20, 8, id++);
    for (int i = 0; i < p.njobs; i++) answer(&s, &p.jobs[i]);
    rc = lmr__plan_next(&p, &err);
    rounds++;
  }
  lmr__plan_destroy(&p);
  ASSERT_EQ(rc, LMR_OK);
  ASSERT_EQ(p.found, 0);
  ASSERT_EQ(rounds, 2 * LMR_PLAN_READ_ATTEMPTS);
  free(buf);
  free(v);
  free(s.bytes);
  return 0;
}

/* GETRANGE saw a string longer than the bytes it looks at, but STRLEN,
 * just before, a shorter one: another client wrote in between (or a stray
 * reply came), and the read starts again instead of trusting either; the
 * same when a whole string's length is not STRLEN's. */
TEST(head_disagreement_reads_again) {
  unsigned char buf[100];
  lmr_op op;
  lmr__op_init(&op, "k", 1, 10.0, 1 << 30, 1);
  op.dst = buf;
  op.cap = sizeof buf;
  lmr_plan p;
  lmr_error err;
  ASSERT_EQ(lmr__plan_start(&p, LMR_PLAN_GET, &op, 0, 0, &err), LMR_OK);
  ASSERT_EQ(op.head_len, sizeof buf);
  p.jobs[0].base.status = LMR_OK;
  p.jobs[0].head_n = op.head_len + 1;
  memset(buf, 'x', sizeof buf);
  memset(p.jobs[0].head, 'x', 32);
  p.jobs[0].stored_len = 50;                       /* STRLEN: shorter now */
  ASSERT_EQ(lmr__plan_next(&p, &err), LMR_OK);
  ASSERT_EQ(p.njobs, 1);
  ASSERT_EQ(p.jobs[0].kind, LMR_JOB_HEAD);         /* read again */
  p.jobs[0].base.status = LMR_OK;
  p.jobs[0].head_n = 50;                           /* whole, but STRLEN said 7 */
  p.jobs[0].stored_len = 7;
  p.jobs[0].head_in_dst = 1;
  memset(buf, 'y', 50);
  memset(p.jobs[0].head, 'y', 32);
  ASSERT_EQ(lmr__plan_next(&p, &err), LMR_OK);
  ASSERT_EQ(p.njobs, 1);                           /* read again */
  p.jobs[0].base.status = LMR_OK;
  p.jobs[0].head_n = 50;                           /* the two agree */
  p.jobs[0].stored_len = 50;
  p.jobs[0].head_in_dst = 1;
  memset(p.jobs[0].head, 'y', 32);
  ASSERT_EQ(lmr__plan_next(&p, &err), LMR_OK);
  ASSERT_EQ(p.njobs, 0);
  ASSERT_EQ(p.found, 1);
  ASSERT_EQ(p.len, 50);
  lmr__plan_destroy(&p);
  return 0;
}

TEST(exists_and_delete) {
  fake_store s = {0};
  lmr_op op;
  lmr_plan p;
  lmr_error err;
  unsigned char *v = pattern(300000, 1);
  store_set(&s, v, 300000, 4, 9);
  lmr__op_init(&op, "k", 1, 10.0, 1 << 30, 1);
  ASSERT_EQ(drive(&s, &p, LMR_PLAN_EXISTS, &op, &err), LMR_OK);
  ASSERT_EQ(p.found, 1);
  ASSERT_EQ(s.commands, 2);
  s.len -= 1;  /* broken: get misses, so exists says no */
  ASSERT_EQ(drive(&s, &p, LMR_PLAN_EXISTS, &op, &err), LMR_OK);
  ASSERT_EQ(p.found, 0);
  ASSERT_EQ(drive(&s, &p, LMR_PLAN_DELETE, &op, &err), LMR_OK);
  ASSERT_EQ(p.found, 1);
  ASSERT_EQ(s.commands, 1);
  ASSERT_EQ(drive(&s, &p, LMR_PLAN_DELETE, &op, &err), LMR_OK);
  ASSERT_EQ(p.found, 0);
  ASSERT_EQ(drive(&s, &p, LMR_PLAN_EXISTS, &op, &err), LMR_OK);
  ASSERT_EQ(p.found, 0);
  free(v);
  free(s.bytes);
  return 0;
}

TEST(set_limits) {
  unsigned char v[100] = {0};
  lmr_op op;
  lmr_plan p;
  lmr_error err;
  /* 100 bytes verbatim fit a 100-byte limit; in 2 parts they do not. */
  lmr__op_init(&op, "k", 1, 10.0, 100, 1);
  op.src = v;
  op.len = sizeof v;
  ASSERT_EQ(lmr__plan_start(&p, LMR_PLAN_SET, &op, 1, 1, &err), LMR_OK);
  ASSERT_EQ(op.count, 0);
  lmr__plan_destroy(&p);
  ASSERT_EQ(lmr__plan_start(&p, LMR_PLAN_SET, &op, 2, 1, &err), LMR_EINVAL);
  ASSERT(strstr(err.msg, "proto-max-bulk-len") != NULL);
  lmr__plan_destroy(&p);
  return 0;
}

/* A read with no buffer at all (NULL, 0), as Python's get(key) starts:
 * an empty value is a hit, any other says how long it is. */
TEST(no_buffer) {
  fake_store s = {0};
  int found;
  uint64_t len;
  store_set(&s, (const unsigned char *)"", 0, 1, 3);  /* the empty value, encoded */
  ASSERT_EQ(do_get(&s, NULL, 0, &found, &len), LMR_OK);
  ASSERT_EQ(found, 1);
  ASSERT_EQ(len, 0);
  store_put(&s, (const unsigned char *)"hello", 5);
  ASSERT_EQ(do_get(&s, NULL, 0, &found, &len), LMR_ETOOBIG);
  ASSERT_EQ(len, 5);
  free(s.bytes);
  return 0;
}

/* PING: one job, no key; the verdict is the server's answer. */
TEST(ping) {
  lmr_op op;
  lmr_plan p;
  lmr_error err;
  lmr__op_init(&op, NULL, 0, 10.0, 1 << 30, 1);
  ASSERT_EQ(lmr__plan_start(&p, LMR_PLAN_PING, &op, 0, 0, &err), LMR_OK);
  ASSERT_EQ(p.njobs, 1);
  ASSERT_EQ(p.jobs[0].kind, LMR_JOB_PING);
  p.jobs[0].base.status = LMR_OK;
  ASSERT_EQ(lmr__plan_next(&p, &err), LMR_OK);
  ASSERT_EQ(p.njobs, 0);
  ASSERT_EQ(p.found, 1);
  lmr__plan_destroy(&p);
  /* A failed job is the call's error. */
  ASSERT_EQ(lmr__plan_start(&p, LMR_PLAN_PING, &op, 0, 0, &err), LMR_OK);
  p.jobs[0].base.status = lmr__err(&p.jobs[0].base.err, LMR_ECONN, "recv: reset");
  ASSERT_EQ(lmr__plan_next(&p, &err), LMR_ECONN);
  ASSERT(strstr(err.msg, "reset") != NULL);
  ASSERT_EQ(p.found, 0);
  lmr__plan_destroy(&p);
  return 0;
}


/* A guessed read (plan.h): into a buffer of n bytes, guessing `guess`
 * parts, of what the store holds. Returns the plan (destroyed) and code. */
static int guessed_get(fake_store *s, unsigned char *buf, size_t n, uint32_t guess,
                       lmr_plan *p) {
  lmr_op op;
  lmr__op_init(&op, "k", 1, 10.0, 1 << 30, 1);
  op.dst = buf;
  op.cap = n;
  lmr_error err;
  return drive_guess(s, p, LMR_PLAN_GET, &op, guess, &err);
}

/* The guess is right: one round (HEAD of the header, and the parts), a
 * hit, nothing learned. */
TEST(guess_right_is_one_round) {
  size_t n = 3u << 20;
  fake_store s = {0};
  unsigned char *v = pattern(n, 3), *buf = calloc(n, 1);
  store_set(&s, v, n, 8, 42);
  lmr_plan p;
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 1);
  ASSERT_EQ(p.len, n);
  ASSERT_MEM_EQ(buf, v, n);
  ASSERT_EQ(s.rounds, 1);
  ASSERT_EQ(s.commands, 2 + 8);
  ASSERT_EQ(p.learned, LMR_PLAN_LEARNED_NONE);
  free(v);
  free(buf);
  free(s.bytes);
  return 0;
}

/* The guess is wrong, or the key holds something else: what the round's
 * HEAD saw decides, as without a guess (no more rounds than that), and it
 * is learned for values as long as the buffer. */
TEST(guess_wrong_reads_from_head) {
  size_t n = 3u << 20;
  unsigned char *v = pattern(n, 4), *buf = calloc(n + 1, 1);
  lmr_plan p;
  /* another part count: found, and the count learned */
  fake_store s = {0};
  store_set(&s, v, n, 5, 7);
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 1);
  ASSERT_MEM_EQ(buf, v, n);
  ASSERT_EQ(s.rounds, 2);                  /* HEAD and the guess, then the parts */
  ASSERT_EQ(s.commands, 2 + 8 + 5);
  ASSERT_EQ(p.learned, 5);
  /* shorter (a partial chunk): found with its length; guessing is off */
  store_set(&s, v, n - 100, 8, 8);
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 1);
  ASSERT_EQ(p.len, n - 100);
  ASSERT_MEM_EQ(buf, v, n - 100);
  ASSERT_EQ(p.learned, 0);
  /* verbatim, as long as the buffer (another client's plain SET) */
  store_put(&s, v, n);
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 1);
  ASSERT_EQ(p.len, n);
  ASSERT_MEM_EQ(buf, v, n);
  ASSERT_EQ(s.rounds, 2);                  /* HEAD and the guess, then one GET */
  ASSERT_EQ(p.learned, 0);
  /* a small value (the guess's HEAD reads only a header): one GET more */
  store_put(&s, v, 100);
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 1);
  ASSERT_EQ(p.len, 100);
  ASSERT_MEM_EQ(buf, v, 100);
  /* a miss and another type: misses in one round, learning nothing */
  s.exists = 0;
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 0);
  ASSERT_EQ(s.rounds, 1);
  ASSERT_EQ(p.learned, LMR_PLAN_LEARNED_NONE);
  s.exists = s.wrongtype = 1;
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 0);
  ASSERT_EQ(p.learned, LMR_PLAN_LEARNED_NONE);
  /* grown by another client (SETRANGE past its end): every part is in its
   * place, but the string is no whole value: a miss, as without a guess */
  store_set(&s, v, n, 8, 10);
  s.bytes = realloc(s.bytes, s.len + 4);
  memcpy(s.bytes + s.len, "tail", 4);
  s.len += 4;
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 0);
  /* longer than the buffer: too big, as without a guess */
  store_set(&s, v, n, 8, 9);
  ASSERT_EQ(guessed_get(&s, buf, n - 1, 8, &p), LMR_ETOOBIG);
  free(v);
  free(buf);
  free(s.bytes);
  return 0;
}

/* Parts of two writes, each well formed and in its place (a writer came
 * between the parts' GETRANGEs): never a hit. Here the store stays mixed,
 * so the reader gives up after LMR_PLAN_READ_ATTEMPTS reads, the guessed
 * one included. */
TEST(guess_of_two_writes_is_no_hit) {
  size_t n = 3u << 20;
  unsigned char *v = pattern(n, 5), *w = pattern(n, 6), *buf = calloc(n, 1);
  fake_store s = {0}, other = {0};
  store_set(&s, v, n, 8, 1);
  store_set(&other, w, n, 8, 2);
  uint64_t at = lmr_stripe_stored_offset(n, 8, 5);
  uint64_t len = LMR_STRIPE_HDR_SIZE + lmr_stripe_len(n, 8, 5);
  memcpy(s.bytes + at, other.bytes + at, len);  /* part 5 of the second write */
  lmr_plan p;
  ASSERT_EQ(guessed_get(&s, buf, n, 8, &p), LMR_OK);
  ASSERT_EQ(p.found, 0);
  ASSERT_EQ(s.rounds, 2 * LMR_PLAN_READ_ATTEMPTS);
  free(v);
  free(w);
  free(buf);
  free(s.bytes);
  free(other.bytes);
  return 0;
}


/* A cluster's split write whose parts timed out (the call's deadline is
 * past): the DELs of its own parts still get time to be sent, or every
 * timed-out write would leave all its part keys behind. The same for the
 * DELs of the parts of a value it replaced. */
TEST(split_cleanup_outlives_the_deadline) {
  unsigned char *v = pattern(300000, 3);
  lmr_op op;
  lmr_plan p;
  lmr_error err;
  lmr__op_init(&op, "k", 1, 0.0, 1 << 30, 1);  /* deadline: now */
  op.split = 1;
  op.src = v;
  op.len = 300000;
  ASSERT_EQ(lmr__plan_start(&p, LMR_PLAN_SET, &op, 4, 77, &err), LMR_OK);
  ASSERT_EQ(p.njobs, 4);
  for (int i = 0; i < p.njobs; i++)
    p.jobs[i].base.status = lmr__err(&p.jobs[i].base.err, LMR_ETIMEDOUT, "timed out");
  ASSERT_EQ(lmr__plan_next(&p, &err), LMR_OK);
  ASSERT_EQ(p.njobs, 4);  /* the undo: a DEL per part */
  ASSERT_EQ(p.jobs[0].kind, LMR_JOB_DEL);
  ASSERT(op.deadline > lmr__now_ns() + LMR_PLAN_CLEANUP_NS / 2);
  lmr__plan_destroy(&p);
  free(v);
  return 0;
}

TEST_MAIN(TEST_ENTRY(round_trips), TEST_ENTRY(magic_value_is_encoded),
          TEST_ENTRY(miss_and_other_types), TEST_ENTRY(broken_is_a_miss),
          TEST_ENTRY(too_small_buffer), TEST_ENTRY(replaced_between_rounds),
          TEST_ENTRY(gives_up), TEST_ENTRY(head_disagreement_reads_again), TEST_ENTRY(exists_and_delete), TEST_ENTRY(set_limits),
          TEST_ENTRY(no_buffer), TEST_ENTRY(ping), TEST_ENTRY(guess_right_is_one_round),
          TEST_ENTRY(guess_wrong_reads_from_head), TEST_ENTRY(guess_of_two_writes_is_no_hit),
          TEST_ENTRY(split_cleanup_outlives_the_deadline))
