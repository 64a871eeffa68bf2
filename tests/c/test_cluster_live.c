/* The cluster client (cfg.cluster = 1) over real sockets, against a real
 * Redis Cluster of three masters this test starts itself (live_cluster.h),
 * through the public C API only; the nodes themselves are driven over
 * admin connections (CLUSTER SETSLOT, MIGRATE, INFO, DBSIZE). Run under
 * ASan+UBSan and TSan by tools/run-sanitizers: the new concurrency of
 * cluster routing (a pool per master, the refresher, MOVED/ASK rounds)
 * with real sockets, real redirections and real interleavings.
 *
 *   round_trips   striped (64 KiB parts of 1 MiB) and small values, single
 *                 calls and batches; a value's parts land on every master;
 *                 a delete takes its part keys too.
 *   concurrent    four threads of set/get/exists/delete on shared keys and
 *                 one submitting batches and draining them by the event fd.
 *   migration     a slot moved by hand (IMPORTING, MIGRATING, MIGRATE key
 *                 by key, SETSLOT NODE), there and back, while threads read
 *                 and write keys in it: the client meets ASK and MOVED.
 *   close         lmr_client_close while another thread submits batches:
 *                 each submitted batch gets exactly one completion.
 *   cancel        lmr_batch_cancel of a batch in flight.
 *
 * Every value is self-verifying (live_fill), so wrong data cannot pass for
 * a hit; no call may fail (the design allows none here: no node fails, and
 * every redirection is followed), and each failure is printed in full. */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lmcache_redis.h"
#include "live_cluster.h"
#include "slot.h"
#include "test.h"

#define NODES LIVE_CLUSTER_NODES
#define STRIPE (64u * 1024u)
#define BIG (1u << 20)
/* Value sizes: small (one string), one part, a few parts, many parts. A
 * get asks with one of them as its buffer too: an exact fit takes the
 * guessed read, a larger buffer the HEAD-first one, a smaller ETOOBIG. */
static const size_t sizes[] = {8, 100, 5000, 70000, 200000, BIG};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static live_cluster lc;
static live_node_conn admin[NODES];

/* ---- failures, printed as they happen ---- */

static atomic_int failures;
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

static void report(const char *what, const char *key, int rc, const lmr_error *err) {
  int n = atomic_fetch_add(&failures, 1);
  if (n >= 20) return;  /* the first ones say it */
  pthread_mutex_lock(&report_mu);
  fprintf(stderr, "  FAILURE %s %s: %s (%d): %s\n", what, key != NULL ? key : "-",
          lmr_code_name(rc), rc, err != NULL ? err->msg : "");
  pthread_mutex_unlock(&report_mu);
}

static uint64_t rnd(uint64_t *s) {  /* xorshift64 */
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static int open_client(lmr_client **c, int seed_node) {
  lmr_config cfg;
  lmr_config_init(&cfg);
  cfg.cluster = 1;
  cfg.stripe_size = STRIPE;
  cfg.connections = 2;  /* per master: six workers, enough to race */
  cfg.timeout = 20;
  return live_open(c, &cfg, "127.0.0.1", lc.ports[seed_node]);
}

static int64_t total_keys(void) {
  int64_t sum = 0;
  for (int i = 0; i < NODES; i++) {
    int64_t n = -1;
    if (live_command_int(&admin[i], &n, 1, (const char *[]){"DBSIZE"}) != 0) return -1;
    sum += n;
  }
  return sum;
}

/* A hit of n bytes must be a whole value some writer wrote. */
static int verified(const unsigned char *buf, size_t n, unsigned char *scratch) {
  return n >= 8 && live_tag_of(buf, n, scratch) != 0;
}

/* ---- 1. round trips ---- */

/* Sets key to a value of n bytes of tag, and reads it back in every way. */
static int round_trip(lmr_client *c, const char *key, size_t n, uint64_t tag, unsigned char *v,
                      unsigned char *buf) {
  size_t klen = strlen(key);
  lmr_error err;
  live_fill(v, n, tag);
  ASSERT_EQ(lmr_set(c, key, klen, v, n, 0, &err), LMR_OK);
  int found = 0;
  size_t len = 0;
  /* exact fit (a guessed read), and a larger buffer (HEAD first) */
  for (size_t extra = 0; extra <= 100; extra += 100) {
    memset(buf, 0xee, n + extra);
    ASSERT_EQ(lmr_get(c, key, klen, buf, n + extra, &found, &len, &err), LMR_OK);
    ASSERT_EQ(found, 1);
    ASSERT_EQ(len, n);
    ASSERT_MEM_EQ(buf, v, n);
  }
  if (n > 0) {
    ASSERT_EQ(lmr_get(c, key, klen, buf, n - 1, &found, &len, &err), LMR_ETOOBIG);
    ASSERT_EQ(err.needed, n);
  }
  ASSERT_EQ(lmr_exists(c, key, klen, &found, &err), LMR_OK);
  ASSERT_EQ(found, 1);
  return 0;
}

TEST(round_trips) {
  lmr_client *c;
  ASSERT_EQ(open_client(&c, 1), LMR_OK);  /* any node is a seed */
  for (int i = 0; i < NODES; i++)
    ASSERT_EQ(live_command_ok(&admin[i], 1, (const char *[]){"FLUSHALL"}), 0);
  unsigned char *v = malloc(BIG + 8), *buf = malloc(BIG + 200);
  ASSERT(v != NULL && buf != NULL);
  /* One value of 16+ parts: every master holds some of them. */
  ASSERT_EQ(round_trip(c, "rt:spread", BIG, 11, v, buf), 0);
  int64_t parts = 0;
  for (int i = 0; i < NODES; i++) {
    int64_t n = 0;
    ASSERT_EQ(live_command_int(&admin[i], &n, 1, (const char *[]){"DBSIZE"}), 0);
    if (n == 0) TEST_FAIL_("master %d (port %d) holds none of the parts", i, lc.ports[i]);
    parts += n;
  }
  ASSERT(parts >= 16);
  static const size_t more[] = {0, 1, 7, 8, 100, 4096, STRIPE - 100, STRIPE + 1, 300000, BIG + 3};
  char key[32];
  for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
    snprintf(key, sizeof key, "rt:%zu", more[i]);
    ASSERT_EQ(round_trip(c, key, more[i], 2 * i + 1, v, buf), 0);
  }
  /* A hash-tagged key: every part in its one slot. */
  ASSERT_EQ(round_trip(c, "{rt}:tagged", BIG, 99, v, buf), 0);
  int64_t in_slot = 0;
  char slot[16];
  snprintf(slot, sizeof slot, "%u", lmr__key_slot("rt", 2));
  int owner = live_cluster_node_of(lmr__key_slot("rt", 2));
  ASSERT_EQ(live_command_int(&admin[owner], &in_slot, 3,
                             (const char *[]){"CLUSTER", "COUNTKEYSINSLOT", slot}), 0);
  ASSERT(in_slot >= 16);

  /* Batches of mixed sizes, run and waited for. */
  enum { N = 8 };
  lmr_item items[N];
  char keys[N][16];
  unsigned char *vals = malloc(N * 200000), *out = malloc(N * 200000);
  ASSERT(vals != NULL && out != NULL);
  lmr_error err;
  memset(items, 0, sizeof items);
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "rtb:%d", i);
    size_t n = sizes[i % (NSIZES - 1)];  /* up to 200000 */
    live_fill(vals + i * 200000, n, 1000 + (uint64_t)i);
    items[i] = (lmr_item){.key = keys[i], .key_len = strlen(keys[i]), .buf = vals + i * 200000,
                          .len = n};
  }
  ASSERT_EQ(lmr_batch_run(c, LMR_BATCH_SET, items, N, 0, &err), LMR_OK);
  for (int i = 0; i < N; i++) {
    items[i].buf = out + i * 200000;
    items[i].len = 200000;
  }
  ASSERT_EQ(lmr_batch_run(c, LMR_BATCH_GET, items, N, 0, &err), LMR_OK);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(items[i].status, LMR_OK);
    ASSERT_EQ(items[i].found, 1);
    ASSERT_EQ(items[i].value_len, sizes[i % (NSIZES - 1)]);
    ASSERT_MEM_EQ(out + i * 200000, vals + i * 200000, items[i].value_len);
  }
  ASSERT_EQ(lmr_batch_run(c, LMR_BATCH_EXISTS, items, N, 0, &err), LMR_OK);
  for (int i = 0; i < N; i++) ASSERT_EQ(items[i].found, 1);
  ASSERT_EQ(lmr_batch_run(c, LMR_BATCH_DELETE, items, N, 0, &err), LMR_OK);
  for (int i = 0; i < N; i++) ASSERT_EQ(items[i].found, 1);
  ASSERT_EQ(lmr_batch_run(c, LMR_BATCH_EXISTS, items, N, 0, &err), LMR_OK);
  for (int i = 0; i < N; i++) ASSERT_EQ(items[i].found, 0);

  /* Deleting every value leaves no part key behind. */
  const char *all[] = {"rt:spread", "{rt}:tagged"};
  for (size_t i = 0; i < 2 + sizeof more / sizeof more[0]; i++) {
    if (i >= 2) snprintf(key, sizeof key, "rt:%zu", more[i - 2]);
    const char *k = i < 2 ? all[i] : key;
    int found = 0;
    size_t len = 0;
    ASSERT_EQ(lmr_delete(c, k, strlen(k), &found, &err), LMR_OK);
    ASSERT_EQ(found, 1);
    ASSERT_EQ(lmr_delete(c, k, strlen(k), &found, &err), LMR_OK);
    ASSERT_EQ(found, 0);
    ASSERT_EQ(lmr_get(c, k, strlen(k), buf, BIG + 200, &found, &len, &err), LMR_OK);
    ASSERT_EQ(found, 0);
    ASSERT_EQ(lmr_exists(c, k, strlen(k), &found, &err), LMR_OK);
    ASSERT_EQ(found, 0);
  }
  ASSERT_EQ(total_keys(), 0);
  free(vals);
  free(out);
  free(v);
  free(buf);
  lmr_client_close(c);
  lmr_client_free(c);
  return 0;
}

/* ---- load: threads of single calls and a thread of batches ---- */

typedef struct {
  lmr_client *c;
  const char *const *keys;
  int nkeys;
  int rounds;              /* per thread; 0: until stop */
  atomic_int stop;
  atomic_uint_fast64_t next_tag;
  atomic_int ops, hits, toobig;
} load;

typedef struct {
  load *l;
  uint64_t seed;
} load_arg;

/* One random call on a random key, its outcome checked. */
static void one_call(load *l, uint64_t *rng, unsigned char *v, unsigned char *buf,
                     unsigned char *scratch) {
  const char *key = l->keys[rnd(rng) % (uint64_t)l->nkeys];
  size_t klen = strlen(key);
  uint64_t r = rnd(rng);
  lmr_error err;
  int found = 0, rc;
  size_t len = 0;
  switch (r % 10) {
    case 0: case 1: case 2: case 3: {  /* set */
      /* 1 MiB values, the slowest to fill and check, in one call of 16 */
      size_t n = sizes[(r >> 8) % 16 == 0 ? NSIZES - 1 : (r >> 8) % (NSIZES - 1)];
      uint64_t tag = atomic_fetch_add(&l->next_tag, 1) * 2 + 1;
      live_fill(v, n, tag);
      if ((rc = lmr_set(l->c, key, klen, v, n, 0, &err)) != LMR_OK) report("set", key, rc, &err);
      break;
    }
    case 4: case 5: case 6: {  /* get, into a buffer of one of the sizes */
      size_t cap = sizes[(r >> 8) % NSIZES];
      rc = lmr_get(l->c, key, klen, buf, cap, &found, &len, &err);
      if (rc == LMR_ETOOBIG) {
        int known = 0;
        for (size_t i = 0; i < NSIZES; i++) known |= err.needed == sizes[i] && sizes[i] > cap;
        if (!known) report("get (wrong ETOOBIG)", key, rc, &err);
        atomic_fetch_add(&l->toobig, 1);
      } else if (rc != LMR_OK) {
        report("get", key, rc, &err);
      } else if (found && !verified(buf, len, scratch)) {
        err.msg[0] = '\0';
        report("get: WRONG DATA", key, rc, &err);
      } else if (found) {
        atomic_fetch_add(&l->hits, 1);
      }
      break;
    }
    case 7: case 8:
      if ((rc = lmr_exists(l->c, key, klen, &found, &err)) != LMR_OK) report("exists", key, rc, &err);
      break;
    default:
      if ((rc = lmr_delete(l->c, key, klen, &found, &err)) != LMR_OK) report("delete", key, rc, &err);
      break;
  }
  atomic_fetch_add(&l->ops, 1);
}

static void *caller(void *arg) {
  load_arg *a = arg;
  load *l = a->l;
  uint64_t rng = a->seed;
  unsigned char *v = malloc(BIG), *buf = malloc(BIG), *scratch = malloc(BIG);
  for (int i = 0; l->rounds == 0 ? !atomic_load(&l->stop) : i < l->rounds; i++)
    one_call(l, &rng, v, buf, scratch);
  free(v);
  free(buf);
  free(scratch);
  return NULL;
}

/* A batch in flight: its items and their buffers, kept until drained. */
#define BATCH_KEYS 4
typedef struct {
  uint64_t id;
  lmr_batch_op op;
  lmr_item items[BATCH_KEYS];
  unsigned char *bufs[BATCH_KEYS];  /* each BIG */
} batch;

static void batch_prepare(load *l, batch *b, lmr_batch_op op, uint64_t *rng) {
  b->op = op;
  for (int i = 0; i < BATCH_KEYS; i++) {
    const char *key = l->keys[rnd(rng) % (uint64_t)l->nkeys];
    lmr_item *it = &b->items[i];
    memset(it, 0, sizeof *it);
    it->key = key;
    it->key_len = strlen(key);
    if (op == LMR_BATCH_SET) {
      size_t n = sizes[rnd(rng) % (NSIZES - 1)];
      live_fill(b->bufs[i], n, atomic_fetch_add(&l->next_tag, 1) * 2 + 1);
      it->buf = b->bufs[i];
      it->len = n;
    } else if (op == LMR_BATCH_GET) {
      it->buf = b->bufs[i];
      it->len = BIG;
    }
  }
}

/* Checks a drained completion against its batch. */
static void batch_check(load *l, const batch *b, const lmr_completion *done,
                        unsigned char *scratch) {
  if (done->items != b->items || done->n != BATCH_KEYS) {
    report("drain: a completion of other items", NULL, LMR_EINVAL, NULL);
    return;
  }
  for (int i = 0; i < BATCH_KEYS; i++) {
    const lmr_item *it = &b->items[i];
    if (it->status != LMR_OK) {
      report("batch item", it->key, it->status, &it->err);
    } else if (b->op == LMR_BATCH_GET && it->found) {
      if (!verified(it->buf, (size_t)it->value_len, scratch))
        report("batch get: WRONG DATA", it->key, LMR_OK, NULL);
      else atomic_fetch_add(&l->hits, 1);
    }
  }
}

/* Waits (poll on the event fd, at most 20 s) for the completion of each
 * of the n batches, checking each. */
static void collect(load *l, batch *bs, int n, unsigned char *scratch) {
  int left = n;
  int64_t until = lmr__now_ns() + (int64_t)20 * 1000000000;
  while (left > 0 && lmr__now_ns() < until) {
    struct pollfd p = {.fd = lmr_event_fd(l->c), .events = POLLIN};
    if (poll(&p, 1, 1000) <= 0) continue;
    lmr_completion done[4];
    size_t got = lmr_drain(l->c, done, 4);
    for (size_t k = 0; k < got; k++) {
      int which = -1;
      for (int j = 0; j < n; j++)
        if (bs[j].id == done[k].id) which = j;
      if (which < 0) {
        report("drain: an unknown or repeated batch id", NULL, LMR_EINVAL, NULL);
        continue;
      }
      batch_check(l, &bs[which], &done[k], scratch);
      bs[which].id = 0;  /* a second completion for it is unknown */
      left--;
    }
  }
  if (left > 0) report("drain: completions never came", NULL, LMR_ETIMEDOUT, NULL);
}

static void *batcher(void *arg) {
  load_arg *a = arg;
  load *l = a->l;
  uint64_t rng = a->seed;
  batch bs[2];
  for (int j = 0; j < 2; j++)
    for (int i = 0; i < BATCH_KEYS; i++) bs[j].bufs[i] = malloc(BIG);
  unsigned char *scratch = malloc(BIG);
  static const lmr_batch_op ops[] = {LMR_BATCH_SET, LMR_BATCH_GET, LMR_BATCH_GET,
                                     LMR_BATCH_EXISTS, LMR_BATCH_DELETE};
  for (int i = 0; l->rounds == 0 ? !atomic_load(&l->stop) : i < l->rounds / 2; i++) {
    int n = 0;
    for (int j = 0; j < 2; j++) {  /* two in flight at once */
      batch_prepare(l, &bs[j], ops[rnd(&rng) % 5], &rng);
      lmr_error err;
      int rc = lmr_batch_submit(l->c, bs[j].op, bs[j].items, BATCH_KEYS, 0, &bs[j].id, &err);
      if (rc != LMR_OK) report("submit", NULL, rc, &err);
      else n++;
    }
    if (n == 2) collect(l, bs, 2, scratch);
    atomic_fetch_add(&l->ops, 2);
  }
  for (int j = 0; j < 2; j++)
    for (int i = 0; i < BATCH_KEYS; i++) free(bs[j].bufs[i]);
  free(scratch);
  return NULL;
}

#define CALLERS 4

/* Starts CALLERS callers and a batcher on l. */
static int load_start(load *l, pthread_t *threads, load_arg *args) {
  for (int i = 0; i <= CALLERS; i++) {
    args[i] = (load_arg){.l = l, .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
    ASSERT_EQ(pthread_create(&threads[i], NULL, i < CALLERS ? caller : batcher, &args[i]), 0);
  }
  return 0;
}

static void load_join(pthread_t *threads) {
  for (int i = 0; i <= CALLERS; i++) pthread_join(threads[i], NULL);
}

/* Every key reads as a miss or a whole value; then takes a new one. */
static int settle(lmr_client *c, const char *const *keys, int nkeys) {
  unsigned char *v = malloc(BIG), *buf = malloc(BIG), *scratch = malloc(BIG);
  ASSERT(v != NULL && buf != NULL && scratch != NULL);
  for (int k = 0; k < nkeys; k++) {
    size_t klen = strlen(keys[k]), len = 0;
    int found = 0;
    lmr_error err;
    ASSERT_EQ(lmr_get(c, keys[k], klen, buf, BIG, &found, &len, &err), LMR_OK);
    if (found) ASSERT(verified(buf, len, scratch));
    size_t n = sizes[(size_t)k % NSIZES];
    live_fill(v, n, 777 + 2 * (uint64_t)k);
    ASSERT_EQ(lmr_set(c, keys[k], klen, v, n, 0, &err), LMR_OK);
    ASSERT_EQ(lmr_get(c, keys[k], klen, buf, BIG, &found, &len, &err), LMR_OK);
    ASSERT_EQ(found, 1);
    ASSERT_EQ(len, n);
    ASSERT_MEM_EQ(buf, v, n);
  }
  free(v);
  free(buf);
  free(scratch);
  return 0;
}

/* ---- 2. concurrent callers and batches ---- */

static const char *const shared_keys[] = {"cc:0", "cc:1", "cc:2", "cc:3", "cc:4", "cc:5"};

TEST(concurrent) {
  lmr_client *c;
  ASSERT_EQ(open_client(&c, 0), LMR_OK);
  load l = {.c = c, .keys = shared_keys, .nkeys = 6, .rounds = 100};
  pthread_t threads[CALLERS + 1];
  load_arg args[CALLERS + 1];
  ASSERT_EQ(load_start(&l, threads, args), 0);
  load_join(threads);
  printf("  concurrent: %d calls, %d hits verified, %d ETOOBIG\n", atomic_load(&l.ops),
         atomic_load(&l.hits), atomic_load(&l.toobig));
  ASSERT_EQ(atomic_load(&failures), 0);
  ASSERT(atomic_load(&l.hits) > 0);
  ASSERT_EQ(settle(c, shared_keys, 6), 0);
  lmr_client_close(c);
  lmr_client_free(c);
  return 0;
}

/* ---- 3. a slot migrated under load ---- */

static const char *const mig_keys[] = {"{mig}:0", "{mig}:1", "{mig}:2",
                                       "{mig}:3", "{mig}:4", "{mig}:5"};

/* Moves `slot` from node `from` to node `to` as redis-cli --cluster
 * reshard does, key by key, pausing between keys so that the callers meet
 * the slot half moved (ASK). Returns the keys moved in *moved. */
static int migrate_slot(int slot, int from, int to, int *moved) {
  char s[16], from_id[41], to_id[41], to_port[16];
  snprintf(s, sizeof s, "%d", slot);
  snprintf(to_port, sizeof to_port, "%d", lc.ports[to]);
  ASSERT_EQ(live_node_id(&admin[from], from_id), 0);
  ASSERT_EQ(live_node_id(&admin[to], to_id), 0);
  ASSERT_EQ(live_command_ok(&admin[to], 5,
                            (const char *[]){"CLUSTER", "SETSLOT", s, "IMPORTING", from_id}), 0);
  ASSERT_EQ(live_command_ok(&admin[from], 5,
                            (const char *[]){"CLUSTER", "SETSLOT", s, "MIGRATING", to_id}), 0);
  *moved = 0;
  for (int rounds = 0;; rounds++) {
    ASSERT(rounds < 1000);
    lmr__value *keys;
    ASSERT_EQ(live_command(&admin[from], &keys, 4,
                           (const char *[]){"CLUSTER", "GETKEYSINSLOT", s, "10"}), LMR_OK);
    ASSERT_EQ(keys->type, LMR__VALUE_ARRAY);
    size_t n = keys->n;
    for (size_t i = 0; i < n; i++) {
      lmr__value *r;
      ASSERT_EQ(live_command(&admin[from], &r, 8,
                             (const char *[]){"MIGRATE", "127.0.0.1", to_port, "", "0", "5000",
                                              "KEYS", keys->elems[i].str}),
                LMR_OK);
      /* NOKEY: a caller deleted it meanwhile. */
      int ok = lmr__value_is(r, "OK") || lmr__value_is(r, "NOKEY");
      if (!ok) fprintf(stderr, "  MIGRATE %s: %s\n", keys->elems[i].str, r->str);
      lmr__value_free(r);
      if (!ok) lmr__value_free(keys);
      ASSERT(ok);
      (*moved)++;
      usleep(5 * 1000);
    }
    lmr__value_free(keys);
    if (n == 0) break;
  }
  /* The new owner first, then the old one, then the rest (as redis-cli
   * does): the old owner's MOVED must name a node that already serves. */
  int order[NODES] = {to, from, 3 - to - from};
  for (int i = 0; i < NODES; i++)
    ASSERT_EQ(live_command_ok(&admin[order[i]], 5,
                              (const char *[]){"CLUSTER", "SETSLOT", s, "NODE", to_id}), 0);
  return 0;
}

/* Redirections counted by the nodes: ASK and MOVED replies (INFO
 * errorstats) and ASKING commands (INFO commandstats), summed. */
static int redirections(int64_t *ask, int64_t *moved, int64_t *asking) {
  *ask = *moved = *asking = 0;
  for (int i = 0; i < NODES; i++) {
    int64_t n;
    ASSERT_EQ(live_info_count(&admin[i], "errorstats", "errorstat_ASK", &n), 0);
    *ask += n;
    ASSERT_EQ(live_info_count(&admin[i], "errorstats", "errorstat_MOVED", &n), 0);
    *moved += n;
    ASSERT_EQ(live_info_count(&admin[i], "commandstats", "cmdstat_asking", &n), 0);
    *asking += n;
  }
  return 0;
}

TEST(migration) {
  lmr_client *c;
  ASSERT_EQ(open_client(&c, 2), LMR_OK);
  int slot = lmr__key_slot("mig", 3);
  int home = live_cluster_node_of(slot), away = (home + 1) % NODES;
  ASSERT_EQ(settle(c, mig_keys, 6), 0);  /* every key holds a value, parts and all */
  int64_t ask0, moved0, asking0;
  ASSERT_EQ(redirections(&ask0, &moved0, &asking0), 0);
  load l = {.c = c, .keys = mig_keys, .nkeys = 6};
  pthread_t threads[CALLERS + 1];
  load_arg args[CALLERS + 1];
  ASSERT_EQ(load_start(&l, threads, args), 0);
  usleep(100 * 1000);
  int there = 0, back = 0;
  int rc = migrate_slot(slot, home, away, &there);
  usleep(100 * 1000);  /* the callers meet MOVED */
  if (rc == 0) rc = migrate_slot(slot, away, home, &back);
  usleep(100 * 1000);
  atomic_store(&l.stop, 1);
  load_join(threads);
  ASSERT_EQ(rc, 0);
  int64_t ask, moved, asking;
  ASSERT_EQ(redirections(&ask, &moved, &asking), 0);
  printf("  migration: slot %d moved %d -> %d (%d keys) and back (%d keys) under %d calls, "
         "%d hits verified; nodes answered ASK %lld, MOVED %lld times, ASKING %lld times\n",
         slot, home, away, there, back, atomic_load(&l.ops), atomic_load(&l.hits),
         (long long)(ask - ask0), (long long)(moved - moved0), (long long)(asking - asking0));
  ASSERT_EQ(atomic_load(&failures), 0);
  ASSERT(there > 0 && back > 0);
  /* The client met both kinds, and followed the ASKs. */
  ASSERT(asking > asking0);
  ASSERT(ask > ask0);
  ASSERT(moved > moved0);
  ASSERT_EQ(settle(c, mig_keys, 6), 0);
  char s[16];
  snprintf(s, sizeof s, "%d", slot);
  int64_t at_home = 0, at_away = 0;
  ASSERT_EQ(live_command_int(&admin[home], &at_home, 3,
                             (const char *[]){"CLUSTER", "COUNTKEYSINSLOT", s}), 0);
  ASSERT_EQ(live_command_int(&admin[away], &at_away, 3,
                             (const char *[]){"CLUSTER", "COUNTKEYSINSLOT", s}), 0);
  ASSERT(at_home >= 6);
  ASSERT_EQ(at_away, 0);
  lmr_client_close(c);
  lmr_client_free(c);
  return 0;
}

/* ---- 4. close with batches in flight ---- */

#define CLOSE_BATCHES 32
#define CLOSE_VALUE (3 * STRIPE + 1000)  /* four parts */

typedef struct {
  lmr_client *c;
  batch bs[CLOSE_BATCHES];
  atomic_int submitted;    /* batches with an id */
  atomic_int refused;      /* submits refused (the client closed) */
  atomic_int drained;      /* completions the drainer took */
  atomic_int closed_items; /* items cut short by the close */
  atomic_int stop_drain;
  int seen[CLOSE_BATCHES]; /* the drainer's: completions per batch */
  const unsigned char *value;
} close_state;

static const char *const close_keys[] = {"cl:0", "cl:1", "cl:2", "cl:3"};

static void *close_submitter(void *arg) {
  close_state *s = arg;
  for (int b = 0; b < CLOSE_BATCHES; b++) {
    batch *bt = &s->bs[b];
    bt->op = b % 2 ? LMR_BATCH_SET : LMR_BATCH_GET;
    for (int i = 0; i < BATCH_KEYS; i++) {
      bt->items[i] = (lmr_item){.key = close_keys[i], .key_len = strlen(close_keys[i]),
                                .buf = bt->op == LMR_BATCH_SET ? (void *)s->value : bt->bufs[i],
                                .len = CLOSE_VALUE};
    }
    lmr_error err;
    /* The id goes straight to bt->id: submit writes it before anything
     * is queued, so the drainer may compare it once the completion came. */
    int rc = lmr_batch_submit(s->c, bt->op, bt->items, BATCH_KEYS, 0, &bt->id, &err);
    if (rc == LMR_ECLOSED) {
      atomic_fetch_add(&s->refused, 1);
      continue;
    }
    if (rc != LMR_OK) {
      report("submit", NULL, rc, &err);
      continue;
    }
    atomic_fetch_add(&s->submitted, 1);
    usleep(1000);  /* paced: the close comes while some are in flight, some still to submit */
  }
  return NULL;
}

static void *close_drainer(void *arg) {
  close_state *s = arg;
  unsigned char *scratch = malloc(CLOSE_VALUE);
  while (!atomic_load(&s->stop_drain)) {
    struct pollfd p = {.fd = lmr_event_fd(s->c), .events = POLLIN};
    if (poll(&p, 1, 20) <= 0) continue;
    lmr_completion done[8];
    size_t got = lmr_drain(s->c, done, 8);
    for (size_t k = 0; k < got; k++) {
      /* Found by its items, not its id: the submitter may be writing the
       * ids of later batches meanwhile. */
      int which = -1;
      for (int b = 0; b < CLOSE_BATCHES; b++)
        if (done[k].items == s->bs[b].items) which = b;
      if (which < 0 || done[k].n != BATCH_KEYS || done[k].id != s->bs[which].id) {
        report("close: a completion of no batch submitted", NULL, LMR_EINVAL, NULL);
        continue;
      }
      if (s->seen[which]++ > 0) report("close: a second completion", NULL, LMR_EINVAL, NULL);
      atomic_fetch_add(&s->drained, 1);
      const batch *bt = &s->bs[which];
      for (int i = 0; i < BATCH_KEYS; i++) {
        const lmr_item *it = &bt->items[i];
        /* Cut short by the close: LMR_ECLOSED, the only error allowed. */
        if (it->status == LMR_ECLOSED) atomic_fetch_add(&s->closed_items, 1);
        else if (it->status != LMR_OK) report("close: batch item", it->key, it->status, &it->err);
        if (it->status == LMR_OK && bt->op == LMR_BATCH_GET && it->found &&
            !verified(it->buf, (size_t)it->value_len, scratch))
          report("close: batch get: WRONG DATA", it->key, LMR_OK, NULL);
      }
    }
  }
  free(scratch);
  return NULL;
}

TEST(close_in_flight) {
  lmr_client *c;
  ASSERT_EQ(open_client(&c, 0), LMR_OK);
  close_state *s = calloc(1, sizeof *s);
  unsigned char *value = malloc(CLOSE_VALUE);
  ASSERT(s != NULL && value != NULL);
  live_fill(value, CLOSE_VALUE, 4242);
  lmr_error err;
  for (int i = 0; i < BATCH_KEYS; i++)
    ASSERT_EQ(lmr_set(c, close_keys[i], strlen(close_keys[i]), value, CLOSE_VALUE, 0, &err),
              LMR_OK);
  s->c = c;
  s->value = value;
  for (int b = 0; b < CLOSE_BATCHES; b++)
    for (int i = 0; i < BATCH_KEYS; i++) s->bs[b].bufs[i] = malloc(CLOSE_VALUE);
  pthread_t sub, drain;
  ASSERT_EQ(pthread_create(&drain, NULL, close_drainer, s), 0);
  ASSERT_EQ(pthread_create(&sub, NULL, close_submitter, s), 0);
  while (atomic_load(&s->submitted) < 6) usleep(200);
  lmr_client_close(c);  /* the submitter is still at it */
  pthread_join(sub, NULL);
  /* Every submitted batch completes: wait for the drainer to take them
   * all, then a moment more, for a second completion to show. */
  int64_t until = lmr__now_ns() + (int64_t)20 * 1000000000;
  while (atomic_load(&s->drained) < atomic_load(&s->submitted) && lmr__now_ns() < until)
    usleep(10 * 1000);
  usleep(100 * 1000);
  atomic_store(&s->stop_drain, 1);
  pthread_join(drain, NULL);
  int submitted = atomic_load(&s->submitted), refused = atomic_load(&s->refused), once = 0;
  for (int b = 0; b < CLOSE_BATCHES; b++) {
    if (s->bs[b].id != 0 && s->seen[b] != 1)
      fprintf(stderr, "  batch %llu: %d completions\n", (unsigned long long)s->bs[b].id,
              s->seen[b]);
    once += s->bs[b].id != 0 && s->seen[b] == 1;
  }
  printf("  close: %d batches submitted, %d refused after the close, %d completed once, "
         "%d items cut short (ECLOSED)\n",
         submitted, refused, once, atomic_load(&s->closed_items));
  ASSERT_EQ(submitted + refused, CLOSE_BATCHES);
  ASSERT_EQ(once, submitted);
  ASSERT_EQ(atomic_load(&failures), 0);
  lmr_completion none[1];
  ASSERT_EQ(lmr_drain(c, none, 1), 0);
  ASSERT_EQ(lmr_set(c, "cl:x", 4, value, 8, 0, &err), LMR_ECLOSED);
  lmr_client_free(c);
  for (int b = 0; b < CLOSE_BATCHES; b++)
    for (int i = 0; i < BATCH_KEYS; i++) free(s->bs[b].bufs[i]);
  free(s);
  free(value);
  return 0;
}

/* ---- 5. cancel a batch in flight ---- */

#define CANCEL_KEYS 8

TEST(cancel_in_flight) {
  lmr_client *c;
  ASSERT_EQ(open_client(&c, 1), LMR_OK);
  static const char *const keys[CANCEL_KEYS] = {"cx:0", "cx:1", "cx:2", "cx:3",
                                                "cx:4", "cx:5", "cx:6", "cx:7"};
  unsigned char *value = malloc(BIG), *scratch = malloc(BIG);
  unsigned char *bufs = malloc((size_t)CANCEL_KEYS * BIG);
  ASSERT(value != NULL && scratch != NULL && bufs != NULL);
  live_fill(value, BIG, 31337);
  lmr_error err;
  for (int i = 0; i < CANCEL_KEYS; i++)
    ASSERT_EQ(lmr_set(c, keys[i], strlen(keys[i]), value, BIG, 0, &err), LMR_OK);
  int cut = 0, cancelled_items = 0;
  for (int round = 0; round < 6; round++) {
    /* A: big reads (or writes) to cancel; B: small reads alongside, which
     * the cancel must leave whole. */
    lmr_batch_op op = round % 2 ? LMR_BATCH_SET : LMR_BATCH_GET;
    lmr_item a[CANCEL_KEYS], b[CANCEL_KEYS];
    for (int i = 0; i < CANCEL_KEYS; i++) {
      a[i] = (lmr_item){.key = keys[i], .key_len = strlen(keys[i]),
                        .buf = op == LMR_BATCH_SET ? value : bufs + (size_t)i * BIG, .len = BIG};
      b[i] = (lmr_item){.key = keys[i], .key_len = strlen(keys[i])};
    }
    uint64_t ida, idb;
    ASSERT_EQ(lmr_batch_submit(c, op, a, CANCEL_KEYS, 0, &ida, &err), LMR_OK);
    ASSERT_EQ(lmr_batch_submit(c, LMR_BATCH_EXISTS, b, CANCEL_KEYS, 0, &idb, &err), LMR_OK);
    int r = lmr_batch_cancel(c, ida);
    cut += r;
    /* Cancelled or not, once it returns both complete, once each. */
    int got_a = 0, got_b = 0;
    int64_t until = lmr__now_ns() + (int64_t)20 * 1000000000;
    while (got_a + got_b < 2 && lmr__now_ns() < until) {
      struct pollfd p = {.fd = lmr_event_fd(c), .events = POLLIN};
      if (poll(&p, 1, 1000) <= 0) continue;
      lmr_completion done[4];
      size_t n = lmr_drain(c, done, 4);
      for (size_t k = 0; k < n; k++) {
        if (done[k].id == ida) got_a++;
        else if (done[k].id == idb) got_b++;
        else TEST_FAIL_("completion of unknown batch %llu", (unsigned long long)done[k].id);
      }
    }
    ASSERT_EQ(got_a, 1);
    ASSERT_EQ(got_b, 1);
    ASSERT_EQ(lmr_batch_cancel(c, ida), 0);  /* completed: nothing to cancel */
    for (int i = 0; i < CANCEL_KEYS; i++) {
      if (a[i].status == LMR_ECANCELED) {
        cancelled_items++;
        continue;
      }
      if (a[i].status != LMR_OK) report("cancel: item", keys[i], a[i].status, &a[i].err);
      else if (op == LMR_BATCH_GET && (!a[i].found || a[i].value_len != BIG ||
                                       memcmp(bufs + (size_t)i * BIG, value, BIG) != 0))
        report("cancel: get: WRONG DATA or a miss", keys[i], LMR_OK, NULL);
      if (b[i].status != LMR_OK) report("cancel: other batch's item", keys[i], b[i].status, &b[i].err);
    }
    /* After a cancelled set, a key reads as the value (every one written
     * is the same) or as a miss (a split value's parts from two writes:
     * their write ids differ), never as anything else. */
    for (int i = 0; i < CANCEL_KEYS; i++) {
      int found = 0;
      size_t len = 0;
      ASSERT_EQ(lmr_get(c, keys[i], strlen(keys[i]), bufs, BIG, &found, &len, &err), LMR_OK);
      if (found) ASSERT_MEM_EQ(bufs, value, BIG);
      if (!found) ASSERT_EQ(lmr_set(c, keys[i], strlen(keys[i]), value, BIG, 0, &err), LMR_OK);
    }
  }
  printf("  cancel: %d of 6 batches cancelled in flight, %d items cut short\n", cut,
         cancelled_items);
  ASSERT_EQ(atomic_load(&failures), 0);
  ASSERT(cut > 0);
  ASSERT(cancelled_items > 0);
  free(value);
  free(scratch);
  free(bufs);
  lmr_client_close(c);
  lmr_client_free(c);
  return 0;
}

/* ---- the cluster around them ---- */

static int with_cluster(int (*test)(void)) {
  int rc = live_cluster_start(&lc);
  int opened = 0;
  for (; rc == 0 && opened < NODES; opened++) rc = live_node_open(&admin[opened], lc.ports[opened]);
  if (rc != 0 && opened > 0) opened--;
  if (rc == 0) rc = test();
  for (int i = 0; i < opened; i++) live_node_close(&admin[i]);
  live_cluster_stop(&lc);
  return rc;
}

static int all(void) {
  struct {
    const char *name;
    int (*fn)(void);
  } parts[] = {{"round_trips", test_round_trips},
               {"concurrent", test_concurrent},
               {"migration", test_migration},
               {"close_in_flight", test_close_in_flight},
               {"cancel_in_flight", test_cancel_in_flight}};
  int failed = 0;
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = parts[i].fn();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%s %s (%.2f s)\n", rc == 0 ? "ok  " : "FAIL", parts[i].name,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    fflush(stdout);
    failed |= rc;
  }
  return failed;
}

/* One cluster for every part (starting one takes seconds): the parts run
 * in order on it, each with its own keys and client. */
TEST(cluster_live) { return with_cluster(all); }

TEST_MAIN(TEST_ENTRY(cluster_live))
