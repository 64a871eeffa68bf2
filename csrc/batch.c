/* Batches (lmcache_redis.h): many keys of one operation. Each key runs its
 * plan (plan.h) round by round on the pool, every key's rounds in flight
 * together, so a batch costs as many round trips as its deepest plan, not
 * one per key; its first rounds are queued together, so that small jobs are
 * pipelined (pool.h). One completion per batch: to the thread that waits
 * for it (lmr_batch_run, and the single-key calls, each a batch of one) or
 * to the client's completion queue, whose event fd wakes a poller
 * (lmr_batch_submit, lmr_drain).
 *
 * Ownership: a batch (lmr__sub) and its per-key state are allocated at
 * submission. A key's next round is queued by the thread that finished its
 * last job (a worker), or its verdict recorded; the last key to finish
 * completes the batch, and from then on it belongs to whoever takes the
 * completion (the waiting thread, or lmr_drain), which frees it. `left`
 * counts the keys still running plus one that the submitting thread holds
 * while it queues the first rounds, so that the batch cannot complete (and
 * be freed) under it.
 *
 * Cancellation: `cancelled` and the queuing of a round are serialised by
 * the batch's `mu`, so a round is either queued before the cancel (and then
 * lmr_pool_cancel, by the batch's id as tag, finds its jobs) or not at all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "plan.h"

/* First rounds queued per lmr_pool_submit call. */
#define QUEUE_CHUNK 256

typedef struct {
  lmr__sub *sub;
  lmr_item *item;
  lmr_op op;
  lmr_plan plan;
  lmr_group group;  /* the current round's jobs */
} key_run;

struct lmr__sub {
  lmr_client *c;
  uint64_t id;
  lmr_plan_kind kind;
  lmr_item *items;
  size_t n;
  atomic_size_t left;
  int status;            /* on completion: the first failed item's code */
  pthread_mutex_t mu;
  int cancelled;
  int waited;            /* a thread waits on cv for `done` (else: the queue) */
  pthread_cond_t cv;
  int done;
  lmr__sub *prev, *next; /* in c->running, then c->done_head's list */
  key_run keys[];        /* n of them: one allocation per batch */
};

/* ---- completion ---- */

static void wake(int fd) {
  uint64_t one = 1;
  /* Fails only if the counter would overflow: it is readable anyway. */
  ssize_t k = write(fd, &one, sizeof one);
  (void)k;
}

static void sub_free(lmr__sub *s) {
  pthread_mutex_destroy(&s->mu);
  if (s->waited) pthread_cond_destroy(&s->cv);
  free(s);
}

static void sub_complete(lmr__sub *s) {
  s->status = LMR_OK;
  for (size_t i = 0; i < s->n && s->status == LMR_OK; i++) s->status = s->items[i].status;
  if (s->waited) {
    pthread_mutex_lock(&s->mu);
    s->done = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);  /* the waiter frees s once this returns */
    return;
  }
  lmr_client *c = s->c;
  pthread_mutex_lock(&c->cq_mu);
  if (s->prev != NULL) s->prev->next = s->next; else c->running = s->next;
  if (s->next != NULL) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  if (c->done_tail != NULL) c->done_tail->next = s; else c->done_head = s;
  c->done_tail = s;
  wake(c->event_fd);  /* under the lock: the fd says exactly "done is not empty" */
  pthread_cond_broadcast(&c->cq_cv);
  pthread_mutex_unlock(&c->cq_mu);  /* a drainer may free s from here on */
}

static void release(lmr__sub *s) {
  if (atomic_fetch_sub_explicit(&s->left, 1, memory_order_acq_rel) == 1) sub_complete(s);
}

/* Records the key's verdict (rc, and on success the plan's) in its item. */
static void key_finished(key_run *k, int rc) {
  lmr_item *it = k->item;
  it->status = rc;
  if (rc == LMR_OK) {
    it->found = k->sub->kind == LMR_PLAN_SET ? 1 : k->plan.found;
    it->value_len = k->sub->kind == LMR_PLAN_GET && k->plan.found ? k->plan.len : 0;
  } else if (rc == LMR_ETOOBIG) {
    it->value_len = it->err.needed;
  }
  if (k->plan.guess != 0 && k->plan.learned != LMR_PLAN_LEARNED_NONE)
    lmr__client_read_learned(k->sub->c, it->len, k->plan.learned);
  lmr__plan_destroy(&k->plan);
  release(k->sub);
}

/* ---- rounds ---- */

static void round_done(lmr_group *g);

/* Adds the key's current round to its group and to ptrs; returns how many. */
/* The tag lmr_pool_cancel finds a key's round by: none for a cleanup
 * round, which runs even when its call is cancelled (jobs.h). */
static uint64_t round_tag(const key_run *k) {
  return k->plan.njobs > 0 && k->plan.jobs[0].cleanup ? 0 : k->sub->id;
}

static int prepare_round(key_run *k, lmr_job **ptrs) {
  lmr_group_init(&k->group, round_tag(k), round_done);
  for (int i = 0; i < k->plan.njobs; i++) {
    lmr_group_add(&k->group, &k->plan.jobs[i].base);
    ptrs[i] = &k->plan.jobs[i].base;
  }
  return k->plan.njobs;
}

/* Most jobs queued by one call: a chunk of first rounds (start_keys). */
#define QUEUE_MAX (QUEUE_CHUNK + LMR_MAX_STRIPES)

/* Queues ptrs[0..n), each to its node's pool (route.h), all of one pool in
 * one submission. A job that cannot be queued (the batch was cancelled,
 * the client is closing, no node serves its slot) finishes at once with
 * why, and its round ends as if it had run. The batch is held meanwhile:
 * once queued, the jobs may run and finish the whole batch (and a drainer
 * free it) before the unlock below. */
static void queue_jobs(lmr__sub *s, lmr_job **ptrs, int n) {
  lmr_pool *pools[QUEUE_MAX];
  lmr_job *mine[QUEUE_MAX], *unqueued[QUEUE_MAX];
  int nunqueued = 0;
  atomic_fetch_add_explicit(&s->left, 1, memory_order_relaxed);
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < n; i++) {
    lmr_job *job = ptrs[i];
    pools[i] = NULL;
    if (s->cancelled && !((lmr_key_job *)job)->cleanup)
      job->status = lmr__err(&job->err, LMR_ECANCELED, "call was cancelled");
    else if ((pools[i] = lmr__route_job(s->c, (lmr_key_job *)job, &job->err)) == NULL)
      job->status = job->err.code;
    if (pools[i] == NULL) unqueued[nunqueued++] = job;
  }
  for (int i = 0; i < n; i++) {
    lmr_pool *pool = pools[i];
    if (pool == NULL) continue;
    int m = 0;
    for (int j = i; j < n; j++)
      if (pools[j] == pool) {
        mine[m++] = ptrs[j];
        pools[j] = NULL;
      }
    if (lmr_pool_submit(pool, mine, m) == LMR_OK) continue;
    for (int j = 0; j < m; j++) {
      mine[j]->status = lmr__err(&mine[j]->err, LMR_ECLOSED, "client is closed");
      unqueued[nunqueued++] = mine[j];
    }
  }
  pthread_mutex_unlock(&s->mu);
  /* After the unlock: finishing a round may queue the key's next one. */
  for (int i = 0; i < nunqueued; i++) lmr_job_complete(unqueued[i]);
  release(s);
}

static void queue_round(key_run *k) {
  lmr_job *ptrs[LMR_MAX_STRIPES + 1];
  int n = prepare_round(k, ptrs);
  queue_jobs(k->sub, ptrs, n);
}

/* How long a job waits before it goes again: 10 ms, doubling up to 160
 * ms, when it was asked to come back later (TRYAGAIN, CLUSTERDOWN) or was
 * sent elsewhere again and again (two nodes that disagree about a slot for
 * a moment, in a failover); a first MOVED or ASK is followed at once. */
static int64_t redirect_pause_ns(const lmr_key_job *job) {
  if (job->redirect != LMR_REDIRECT_RETRY && job->redirects < 3) return 0;
  return (int64_t)10000000 << (job->redirects < 4 ? job->redirects : 4);
}

/* A round's jobs to queue again after a pause (route.h's lmr__later). */
typedef struct {
  lmr__later later;
  lmr__sub *sub;
  int n;
  lmr_job *jobs[];
} paused_jobs;

static void queue_paused(lmr__later *l) {
  paused_jobs *p = (paused_jobs *)l;
  queue_jobs(p->sub, p->jobs, p->n);
  free(p);
}

/* Queues jobs[0..n) after `pause` ns, on the refresher's thread; without
 * the memory for that, at once (the next answer pauses again). */
static void queue_after(lmr__sub *s, lmr_job **jobs, int n, int64_t pause) {
  paused_jobs *p = pause > 0 ? malloc(sizeof *p + (size_t)n * sizeof *jobs) : NULL;
  if (p == NULL) {
    queue_jobs(s, jobs, n);
    return;
  }
  p->later = (lmr__later){.due = lmr__now_ns() + pause, .tag = s->id, .fire = queue_paused};
  p->sub = s;
  p->n = n;
  memcpy(p->jobs, jobs, (size_t)n * sizeof *jobs);
  lmr__route_later(s->c, &p->later);
}

/* Ends a redirected job's story: its error stands, saying why. */
static void gave_up(lmr_key_job *job, const char *why) {
  size_t n = strlen(job->base.err.msg);
  snprintf(job->base.err.msg + n, sizeof job->base.err.msg - n, " (%s)", why);
  job->redirect = LMR_REDIRECT_NONE;  /* not met again by a later pass */
}

/* In a cluster, the jobs of a round that a node sent elsewhere (MOVED,
 * ASK) or asked to send again (TRYAGAIN, CLUSTERDOWN) go again, before
 * the plan sees the round: no command of theirs ran, so writes go again
 * too. At most LMR__MAX_REDIRECTS times each, and never past the call's
 * deadline (a job past it fails as timed out where it is sent). A
 * connection that failed asks for a fresh slot map: a master may have
 * died and its replica taken over. Returns 1 when jobs went again (the
 * round then ends when they are done). */
static int redirect_round(key_run *k) {
  lmr_client *c = k->sub->c;
  lmr_job *ptrs[LMR_MAX_STRIPES + 1];
  int m = 0;
  int64_t pause = 0;
  for (int i = 0; i < k->plan.njobs; i++) {
    lmr_key_job *job = &k->plan.jobs[i];
    int st = job->base.status;
    if (st == LMR_ECONN || st == LMR_ETIMEDOUT || st == LMR_EPROTO) lmr__route_refresh_soon(c);
    if (st == LMR_OK || job->redirect == LMR_REDIRECT_NONE) continue;
    if (job->redirects >= LMR__MAX_REDIRECTS) {
      gave_up(job, "too many redirections");
      continue;
    }
    /* The server's answer is a better error than "timed out" later. */
    int64_t wait = redirect_pause_ns(job);
    if (job->op->deadline - lmr__now_ns() <= wait) {
      gave_up(job, "the call's timeout ran out");
      continue;
    }
    if (wait > pause) pause = wait;
    lmr__route_redirected(c, job);
    LMR__COUNT(&c->stats, redirections, 1);
    job->redirects++;
    lmr__key_job_reset(job);
    ptrs[m++] = &job->base;
  }
  if (m == 0) return 0;
  lmr_group_init(&k->group, round_tag(k), round_done);
  for (int i = 0; i < m; i++) lmr_group_add(&k->group, ptrs[i]);
  queue_after(k->sub, ptrs, m, pause);
  return 1;
}

/* A round's last job finished: the plan decides what comes next. */
static void round_done(lmr_group *g) {
  key_run *k = (key_run *)((char *)g - offsetof(key_run, group));
  if (k->sub->c->cfg.cluster && redirect_round(k)) return;
  int rc = lmr__plan_next(&k->plan, &k->item->err);
  if (rc == LMR_OK && k->plan.njobs > 0) queue_round(k);
  else key_finished(k, rc);
}

/* ---- starting a batch ---- */

static int check_item(lmr_plan_kind kind, const lmr_item *it, lmr_error *err) {
  if (kind == LMR_PLAN_PING) return LMR_OK;
  if (it->key == NULL || it->key_len == 0)
    return lmr__err(err, LMR_EINVAL, "key must not be empty");
  if (it->key_len > LMR_MAX_KEY_LEN)
    return lmr__err(err, LMR_EINVAL, "key is %zu bytes; the limit is %u", it->key_len,
                    LMR_MAX_KEY_LEN);
  if ((kind == LMR_PLAN_GET || kind == LMR_PLAN_SET) && it->buf == NULL && it->len > 0)
    return lmr__err(err, LMR_EINVAL, "buffer is NULL");
  return LMR_OK;
}

/* Starts key k's plan: LMR_OK with its first round to queue, or its error. */
static int start_key(lmr__sub *s, key_run *k, int64_t ttl_ms) {
  lmr_client *c = s->c;
  lmr_item *it = k->item;
  lmr__err_clear(&it->err);
  it->status = LMR_OK;
  it->found = 0;
  it->value_len = 0;
  int rc = check_item(s->kind, it, &it->err);
  if (rc != LMR_OK) return rc;
  lmr__op_init(&k->op, it->key, it->key_len, c->cfg.timeout, c->max_bulk, c->max_bulk_read);
  k->op.split = c->cfg.cluster;
  uint32_t count = 0;
  uint64_t set_id = 0;
  if (s->kind == LMR_PLAN_SET) {
    k->op.src = it->buf;
    k->op.len = it->len;
    k->op.ttl_ms = ttl_ms;
    count = lmr__client_stripes_for(c, it->len);
    set_id = lmr__client_set_id(c);
  } else if (s->kind == LMR_PLAN_GET) {
    k->op.dst = it->buf;
    k->op.cap = it->len;
    /* A cluster's parts are named by their write's id, which only HEAD
     * tells: no guessing them. */
    count = c->cfg.cluster ? 0 : lmr__client_read_guess(c, it->len);
  }
  return lmr__plan_start(&k->plan, s->kind, &k->op, count, set_id, &it->err);
}

/* Queues every key's first round, about QUEUE_CHUNK jobs per submission;
 * keys that cannot start finish at once. */
static void start_keys(lmr__sub *s, int64_t ttl_ms) {
  /* A first round is one job (HEAD, SET, DEL, PING) or a guessed read's
   * HEAD and parts (at most 1 + LMR_MAX_STRIPES; a cluster's split SET:
   * LMR_MAX_STRIPES). A key is added while fewer than QUEUE_CHUNK wait,
   * so at most QUEUE_CHUNK - 1 + 1 + LMR_MAX_STRIPES are ever held. */
  lmr_job *ptrs[QUEUE_MAX];
  int nptrs = 0, nkeys = 0;
  for (size_t i = 0; i <= s->n; i++) {
    if (i < s->n) {
      key_run *k = &s->keys[i];
      k->sub = s;
      k->item = &s->items[i];
      int rc = start_key(s, k, ttl_ms);
      if (rc != LMR_OK) {
        key_finished(k, rc);
        continue;
      }
      nptrs += prepare_round(k, ptrs + nptrs);
      nkeys++;
      if (nkeys < QUEUE_CHUNK && nptrs < QUEUE_CHUNK && i + 1 < s->n) continue;
    }
    if (nkeys == 0) continue;
    queue_jobs(s, ptrs, nptrs);
    nptrs = nkeys = 0;
  }
}

static lmr_plan_kind plan_kind(lmr_batch_op op) {
  switch (op) {
    case LMR_BATCH_GET: return LMR_PLAN_GET;
    case LMR_BATCH_SET: return LMR_PLAN_SET;
    case LMR_BATCH_EXISTS: return LMR_PLAN_EXISTS;
    case LMR_BATCH_DELETE: return LMR_PLAN_DELETE;
  }
  return LMR_PLAN_PING;
}

static int check_batch(lmr_client *c, int op, lmr_item *items, size_t n, int64_t ttl_ms,
                       lmr_error *err) {
  int rc = lmr__client_check_open(c, err);
  if (rc != LMR_OK) return rc;
  if (op < LMR_BATCH_GET || op > LMR_BATCH_DELETE)
    return lmr__err(err, LMR_EINVAL, "unknown batch operation %d", op);
  if (items == NULL && n > 0) return lmr__err(err, LMR_EINVAL, "items is NULL");
  if (n > LMR_MAX_BATCH)
    return lmr__err(err, LMR_EINVAL, "a batch holds at most %u keys, got %zu: split it",
                    LMR_MAX_BATCH, n);
  if (ttl_ms < 0) return lmr__err(err, LMR_EINVAL, "ttl must be >= 0 ms (0: no expiry)");
  return LMR_OK;
}

static lmr__sub *sub_new(lmr_client *c, lmr_plan_kind kind, lmr_item *items, size_t n,
                         int waited, lmr_error *err) {
  /* n <= LMR_MAX_BATCH: the size cannot overflow. */
  lmr__sub *s = calloc(1, sizeof *s + n * sizeof(key_run));
  if (s == NULL) {
    lmr__err(err, LMR_ENOMEM, "out of memory for a batch of %zu keys", n);
    return NULL;
  }
  s->c = c;
  s->id = atomic_fetch_add_explicit(&c->batch_next, 1, memory_order_relaxed) + 1;
  s->kind = kind;
  s->items = items;
  s->n = n;
  atomic_init(&s->left, n + 1);  /* + the submitter's hold */
  pthread_mutex_init(&s->mu, NULL);
  s->waited = waited;
  if (waited) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &attr);
    pthread_condattr_destroy(&attr);
  }
  return s;
}

static void fail_items(lmr_item *items, size_t n, const lmr_error *err) {
  for (size_t i = 0; i < n; i++) {
    items[i].status = lmr__err_copy(&items[i].err, err);
    items[i].found = 0;
    items[i].value_len = 0;
  }
}

static void cancel_sub(lmr__sub *s) {
  pthread_mutex_lock(&s->mu);
  s->cancelled = 1;
  pthread_mutex_unlock(&s->mu);
  lmr__route_cancel(s->c, s->id);
}

/* ---- waiting: the synchronous API ---- */

/* This thread's cancel check (lmr_thread_set_cancel_check). */
static _Thread_local lmr_cancel_check cancel_check;
static _Thread_local void *cancel_ctx;

void lmr_thread_set_cancel_check(lmr_cancel_check check, void *ctx) {
  cancel_check = check;
  cancel_ctx = ctx;
}

/* Waits for s; with a cancel check on this thread, in slices with the
 * check between them. Returns 1 if the check cancelled the batch. */
static int wait_done(lmr__sub *s) {
  lmr_cancel_check check = cancel_check;
  void *ctx = cancel_ctx;
  int cancelled = 0;
  pthread_mutex_lock(&s->mu);
  while (!s->done) {
    if (check == NULL || cancelled) {
      pthread_cond_wait(&s->cv, &s->mu);
      continue;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += LMR_CANCEL_POLL_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT || s->done) continue;
    pthread_mutex_unlock(&s->mu);
    if (check(ctx)) {
      cancel_sub(s);
      cancelled = 1;
    }
    pthread_mutex_lock(&s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  return cancelled;
}

/* Runs a batch of `kind` and waits for it (the synchronous calls). */
static int run_batch(lmr_client *c, lmr_plan_kind kind, lmr_item *items, size_t n,
                     int64_t ttl_ms, lmr_error *err) {
  lmr__sub *s = sub_new(c, kind, items, n, 1, err);
  if (s == NULL) {
    fail_items(items, n, err);
    return err->code;
  }
  start_keys(s, ttl_ms);
  release(s);
  int cancelled = wait_done(s);
  int rc = cancelled ? LMR_ECANCELED : s->status;
  if (cancelled) lmr__err(err, LMR_ECANCELED, "call was cancelled");
  for (size_t i = 0; !cancelled && rc != LMR_OK && i < n; i++)
    if (items[i].status == rc) {
      lmr__err_copy(err, &items[i].err);
      break;
    }
  sub_free(s);
  return rc;
}

int lmr_batch_run(lmr_client *c, lmr_batch_op op, lmr_item *items, size_t n, int64_t ttl_ms,
                  lmr_error *err) {
  lmr_error mine;
  if (err == NULL) err = &mine;  /* the caller may not want the message */
  lmr__err_clear(err);
  int rc = check_batch(c, (int)op, items, n, ttl_ms, err);
  if (rc != LMR_OK) {
    if (items != NULL && n <= LMR_MAX_BATCH) fail_items(items, n, err);
    return rc;
  }
  return run_batch(c, plan_kind(op), items, n, ttl_ms, err);
}

/* ---- the completion queue ---- */

int lmr_event_fd(lmr_client *c) { return c->event_fd; }

int lmr_batch_submit(lmr_client *c, lmr_batch_op op, lmr_item *items, size_t n, int64_t ttl_ms,
                     uint64_t *id, lmr_error *err) {
  lmr_error mine;
  if (err == NULL) err = &mine;
  lmr__err_clear(err);
  if (id == NULL) return lmr__err(err, LMR_EINVAL, "id is NULL: the batch's id goes there");
  *id = 0;
  int rc = check_batch(c, (int)op, items, n, ttl_ms, err);
  if (rc != LMR_OK) return rc;
  lmr__sub *s = sub_new(c, plan_kind(op), items, n, 0, err);
  if (s == NULL) return err->code;
  *id = s->id;
  /* Listed before anything is queued: lmr_batch_cancel may look for it. */
  pthread_mutex_lock(&c->cq_mu);
  s->next = c->running;
  if (c->running != NULL) c->running->prev = s;
  c->running = s;
  pthread_mutex_unlock(&c->cq_mu);
  start_keys(s, ttl_ms);
  release(s);  /* s may be complete, even drained and freed, from here on */
  return LMR_OK;
}

size_t lmr_drain(lmr_client *c, lmr_completion *out, size_t max) {
  /* A forked child shares the parent's event fd: reading it there would
   * swallow the parent's wake-up. It has no batches of its own. */
  if (!lmr__client_in_opening_process(c)) return 0;
  pthread_mutex_lock(&c->cq_mu);
  size_t taken = 0;
  lmr__sub *list = c->done_head, *last = NULL;
  while (taken < max && c->done_head != NULL) {
    last = c->done_head;
    c->done_head = last->next;
    taken++;
  }
  if (c->done_head == NULL) {
    /* Cleared under the lock that queues completions (and writes the fd):
     * readable exactly while some wait, never quiet with one queued. */
    uint64_t count;
    ssize_t k = read(c->event_fd, &count, sizeof count);
    (void)k;
    c->done_tail = NULL;
  }
  pthread_mutex_unlock(&c->cq_mu);
  if (last != NULL) last->next = NULL;
  for (size_t i = 0; i < taken; i++) {
    lmr__sub *s = list;
    list = s->next;
    out[i] = (lmr_completion){.id = s->id, .status = s->status, .items = s->items, .n = s->n};
    sub_free(s);
  }
  return taken;
}

static int is_running(lmr_client *c, uint64_t id, lmr__sub **found) {
  for (lmr__sub *s = c->running; s != NULL; s = s->next)
    if (s->id == id) {
      if (found != NULL) *found = s;
      return 1;
    }
  return 0;
}

int lmr_batch_cancel(lmr_client *c, uint64_t id) {
  /* In a forked child no worker would ever finish it (and cutting the
   * sockets would cut the parent's): nothing of the parent's to cancel. */
  if (!lmr__client_in_opening_process(c)) return 0;
  lmr__sub *s = NULL;
  pthread_mutex_lock(&c->cq_mu);
  if (!is_running(c, id, &s)) {
    pthread_mutex_unlock(&c->cq_mu);
    return 0;
  }
  /* s cannot complete while cq_mu is held: set the flag under it. */
  pthread_mutex_lock(&s->mu);
  s->cancelled = 1;
  pthread_mutex_unlock(&s->mu);
  pthread_mutex_unlock(&c->cq_mu);
  lmr__route_cancel(c, id);  /* by tag: s itself may be gone already */
  pthread_mutex_lock(&c->cq_mu);
  while (is_running(c, id, NULL)) pthread_cond_wait(&c->cq_cv, &c->cq_mu);
  pthread_mutex_unlock(&c->cq_mu);
  return 1;
}

void lmr__batch_free_done(lmr_client *c) {
  while (c->done_head != NULL) {
    lmr__sub *s = c->done_head;
    c->done_head = s->next;
    sub_free(s);
  }
  c->done_tail = NULL;
}

/* ---- the single-key calls: batches of one ---- */

int lmr_set(lmr_client *c, const void *key, size_t key_len, const void *buf, size_t len,
            int64_t ttl_ms, lmr_error *err) {
  lmr_item it = {.key = key, .key_len = key_len, .buf = (void *)buf, .len = len};
  return lmr_batch_run(c, LMR_BATCH_SET, &it, 1, ttl_ms, err);
}

int lmr_get(lmr_client *c, const void *key, size_t key_len, void *buf, size_t cap,
            int *found, size_t *len, lmr_error *err) {
  lmr_item it = {.key = key, .key_len = key_len, .buf = buf, .len = cap};
  int rc = lmr_batch_run(c, LMR_BATCH_GET, &it, 1, 0, err);
  *found = rc == LMR_OK && it.found;
  *len = *found ? (size_t)it.value_len : 0;
  return rc;
}

static int run_flag(lmr_client *c, lmr_batch_op op, const void *key, size_t key_len,
                    int *found, lmr_error *err) {
  lmr_item it = {.key = key, .key_len = key_len};
  int rc = lmr_batch_run(c, op, &it, 1, 0, err);
  *found = rc == LMR_OK && it.found;
  return rc;
}

int lmr_exists(lmr_client *c, const void *key, size_t key_len, int *found, lmr_error *err) {
  return run_flag(c, LMR_BATCH_EXISTS, key, key_len, found, err);
}

int lmr_delete(lmr_client *c, const void *key, size_t key_len, int *found, lmr_error *err) {
  return run_flag(c, LMR_BATCH_DELETE, key, key_len, found, err);
}

int lmr_ping(lmr_client *c, lmr_error *err) {
  lmr_error mine;
  if (err == NULL) err = &mine;
  lmr__err_clear(err);
  int rc = lmr__client_check_open(c, err);
  if (rc != LMR_OK) return rc;
  lmr_item it = {0};
  return run_batch(c, LMR_PLAN_PING, &it, 1, 0, err);
}
