/* The worker pool (pool.h) with dummy jobs and no network: groups from
 * several threads, failing worker_init, shutdown with jobs queued, submit
 * after shutdown, the interrupt hook, two shutdowns racing, small jobs run
 * together (run_many), and the signals a worker leaves unblocked. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool.h"
#include "test.h"

#define MAX_WORKERS 8

/* Pool callbacks record what happened here. */
typedef struct {
  int fail_mask;                     /* worker i's init fails when bit i is set */
  atomic_int inits, finis;           /* successful inits, finis */
  atomic_int interrupts[MAX_WORKERS];
  /* Gate for blocking jobs: they wait until a worker is interrupted. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
  int blocked;                       /* blocking jobs currently waiting */
} ctx_t;

typedef struct {
  int magic;  /* proves run() gets the state its worker's init made */
  int index;
} worker_t;

#define WORKER_MAGIC 0x5eed

static int w_init(void *ctxp, int index, void **state, lmr_error *err) {
  ctx_t *ctx = ctxp;
  if (ctx->fail_mask & (1 << index)) {
    snprintf(err->msg, sizeof err->msg, "worker %d failed", index);
    err->code = LMR_ECONN;
    return LMR_ECONN;
  }
  worker_t *w = malloc(sizeof *w);
  if (w == NULL) return LMR_ENOMEM;
  *w = (worker_t){WORKER_MAGIC, index};
  *state = w;
  atomic_fetch_add(&ctx->inits, 1);
  return LMR_OK;
}

static void w_fini(void *ctxp, void *state) {
  ctx_t *ctx = ctxp;
  atomic_fetch_add(&ctx->finis, 1);
  free(state);
}

/* Like shutdown(2) on a socket: makes a blocked job give up. */
static void w_interrupt(void *ctxp, void *state) {
  ctx_t *ctx = ctxp;
  atomic_fetch_add(&ctx->interrupts[((worker_t *)state)->index], 1);
  pthread_mutex_lock(&ctx->mu);
  ctx->open = 1;
  pthread_cond_broadcast(&ctx->cv);
  pthread_mutex_unlock(&ctx->mu);
}

static void ctx_init(ctx_t *ctx, int fail_mask) {
  memset(ctx, 0, sizeof *ctx);
  ctx->fail_mask = fail_mask;
  pthread_mutex_init(&ctx->mu, NULL);
  pthread_cond_init(&ctx->cv, NULL);
}

static void ctx_destroy(ctx_t *ctx) {
  pthread_mutex_destroy(&ctx->mu);
  pthread_cond_destroy(&ctx->cv);
}

static int make_pool(lmr_pool **p, ctx_t *ctx, int workers, lmr_error *err) {
  lmr_pool_config cfg = {.workers = workers, .worker_init = w_init, .worker_fini = w_fini,
                         .worker_interrupt = w_interrupt, .ctx = ctx};
  return lmr_pool_create(p, &cfg, err);
}

/* A job counts its runs in its own slot. */
typedef struct {
  lmr_job base;  /* first: run() casts back */
  atomic_int runs;
  int bad_state;
  ctx_t *ctx;
} test_job;

static void run_count(lmr_job *job, void *state) {
  test_job *t = (test_job *)job;
  worker_t *w = state;
  if (w == NULL || w->magic != WORKER_MAGIC) t->bad_state = 1;
  atomic_fetch_add(&t->runs, 1);
  job->status = LMR_OK;
}

/* Blocks until a worker is interrupted, then fails as a dropped socket would. */
static void run_block(lmr_job *job, void *state) {
  (void)state;
  test_job *t = (test_job *)job;
  atomic_fetch_add(&t->runs, 1);
  pthread_mutex_lock(&t->ctx->mu);
  t->ctx->blocked++;
  pthread_cond_broadcast(&t->ctx->cv);
  while (!t->ctx->open) pthread_cond_wait(&t->ctx->cv, &t->ctx->mu);
  pthread_mutex_unlock(&t->ctx->mu);
  job->status = LMR_ECONN;
  job->err.code = LMR_ECONN;
}

static void job_init(test_job *t, void (*run)(lmr_job *, void *), ctx_t *ctx) {
  memset(t, 0, sizeof *t);
  t->base.run = run;
  t->base.status = 12345;  /* neither OK nor an error code: must be overwritten */
  atomic_init(&t->runs, 0);
  t->ctx = ctx;
}

/* ---- many batches from several threads ---- */

#define SUBMITTERS 4
#define BATCHES 300
#define BATCH_MAX 40

typedef struct {
  lmr_pool *pool;
  int seed;
  int failures;  /* jobs not run exactly once, or not OK */
} submitter;

static void *submit_loop(void *argp) {
  submitter *s = argp;
  test_job *jobs = calloc(BATCH_MAX, sizeof *jobs);
  lmr_job *ptrs[BATCH_MAX];
  unsigned seed = (unsigned)s->seed;
  for (int b = 0; b < BATCHES; b++) {
    int n = 1 + (int)(rand_r(&seed) % BATCH_MAX);
    for (int i = 0; i < n; i++) {
      job_init(&jobs[i], run_count, NULL);
      ptrs[i] = &jobs[i].base;
    }
    lmr_group batch;
    lmr_group_init(&batch, 0, NULL);
    lmr_pool_run_group(s->pool, &batch, ptrs, n);
    lmr_group_wait(&batch);
    lmr_group_destroy(&batch);
    for (int i = 0; i < n; i++)
      if (atomic_load(&jobs[i].runs) != 1 || jobs[i].base.status != LMR_OK ||
          jobs[i].bad_state)
        s->failures++;
  }
  free(jobs);
  return NULL;
}

TEST(many_batches) {
  ctx_t ctx;
  ctx_init(&ctx, 0);
  lmr_pool *p;
  lmr_error err;
  ASSERT_EQ(make_pool(&p, &ctx, 4, &err), LMR_OK);
  ASSERT_EQ(atomic_load(&ctx.inits), 4);  /* create waits for every init */
  pthread_t threads[SUBMITTERS];
  submitter subs[SUBMITTERS];
  for (int i = 0; i < SUBMITTERS; i++) {
    subs[i] = (submitter){p, i + 1, 0};
    ASSERT_EQ(pthread_create(&threads[i], NULL, submit_loop, &subs[i]), 0);
  }
  for (int i = 0; i < SUBMITTERS; i++) {
    pthread_join(threads[i], NULL);
    ASSERT_EQ(subs[i].failures, 0);
  }
  lmr_pool_free(p);
  ASSERT_EQ(atomic_load(&ctx.finis), 4);
  ctx_destroy(&ctx);
  return 0;
}

/* ---- worker_init failures ---- */

TEST(init_failure) {
  ctx_t ctx;
  lmr_pool *p = (lmr_pool *)&ctx;  /* must be reset to NULL */
  lmr_error err;
  /* Workers 1 and 3 fail: create returns worker 1's error, and the workers
   * that did start are finished. */
  ctx_init(&ctx, (1 << 1) | (1 << 3));
  ASSERT_EQ(make_pool(&p, &ctx, 4, &err), LMR_ECONN);
  ASSERT(p == NULL);
  ASSERT_EQ(err.code, LMR_ECONN);
  ASSERT(strcmp(err.msg, "worker 1 failed") == 0);
  ASSERT_EQ(atomic_load(&ctx.inits), 2);
  ASSERT_EQ(atomic_load(&ctx.finis), 2);
  ctx_destroy(&ctx);

  ctx_init(&ctx, 1 << 0);  /* the only worker fails */
  ASSERT_EQ(make_pool(&p, &ctx, 1, &err), LMR_ECONN);
  ASSERT(p == NULL);
  ctx_destroy(&ctx);

  ctx_init(&ctx, 0);
  ASSERT_EQ(make_pool(&p, &ctx, 0, &err), LMR_EINVAL);
  ASSERT(p == NULL);
  ctx_destroy(&ctx);
  return 0;
}

/* ---- shutdown ---- */

typedef struct {
  lmr_group *batch;
  atomic_int woke;
} waiter;

static void *wait_batch(void *argp) {
  waiter *w = argp;
  lmr_group_wait(w->batch);
  atomic_store(&w->woke, 1);
  return NULL;
}

/* One worker is stuck in a job, the rest of the batch is queued behind it.
 * Shutdown interrupts the stuck job, fails the queued ones with ECLOSED, and
 * a thread waiting on the batch wakes. */
TEST(shutdown_with_queued_jobs) {
  enum { N = 10 };
  ctx_t ctx;
  ctx_init(&ctx, 0);
  lmr_pool *p;
  lmr_error err;
  ASSERT_EQ(make_pool(&p, &ctx, 1, &err), LMR_OK);

  static test_job jobs[N];
  lmr_job *ptrs[N];
  for (int i = 0; i < N; i++) {
    job_init(&jobs[i], i == 0 ? run_block : run_count, &ctx);
    ptrs[i] = &jobs[i].base;
  }
  lmr_group batch;
  lmr_group_init(&batch, 0, NULL);
  lmr_pool_run_group(p, &batch, ptrs, N);

  /* Wait until the worker is stuck in job 0, so jobs 1.. stay queued. */
  pthread_mutex_lock(&ctx.mu);
  while (ctx.blocked == 0) pthread_cond_wait(&ctx.cv, &ctx.mu);
  pthread_mutex_unlock(&ctx.mu);
  waiter w = {&batch, 0};
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, NULL, wait_batch, &w), 0);

  lmr_pool_shutdown(p);
  pthread_join(t, NULL);
  ASSERT_EQ(atomic_load(&w.woke), 1);
  ASSERT_EQ(atomic_load(&ctx.interrupts[0]), 1);
  ASSERT_EQ(jobs[0].base.status, LMR_ECONN);  /* ran, and gave up when interrupted */
  for (int i = 1; i < N; i++) {
    ASSERT_EQ(atomic_load(&jobs[i].runs), 0);
    ASSERT_EQ(jobs[i].base.status, LMR_ECLOSED);
    ASSERT_EQ(jobs[i].base.err.code, LMR_ECLOSED);
  }
  ASSERT_EQ(atomic_load(&ctx.finis), 1);  /* shutdown joined the worker */
  lmr_group_destroy(&batch);

  lmr_pool_shutdown(p);  /* idempotent; free shuts down once more */
  lmr_pool_free(p);
  ASSERT_EQ(atomic_load(&ctx.interrupts[0]), 1);
  ASSERT_EQ(atomic_load(&ctx.finis), 1);
  ctx_destroy(&ctx);
  return 0;
}

/* A group whose on_done hook counts its calls instead of waking a waiter. */
typedef struct {
  lmr_group b;  /* first: the hook casts back */
  atomic_int done_calls;
} counted_batch;

static void count_done(lmr_group *b) { atomic_fetch_add(&((counted_batch *)b)->done_calls, 1); }

/* After shutdown, submitted jobs complete at once with ECLOSED, unrun, and
 * the group's on_done hook fires once. */
TEST(submit_after_shutdown) {
  enum { N = 5 };
  ctx_t ctx;
  ctx_init(&ctx, 0);
  lmr_pool *p;
  lmr_error err;
  ASSERT_EQ(make_pool(&p, &ctx, 2, &err), LMR_OK);
  lmr_pool_shutdown(p);

  test_job jobs[N];
  lmr_job *ptrs[N];
  for (int i = 0; i < N; i++) {
    job_init(&jobs[i], run_count, &ctx);
    ptrs[i] = &jobs[i].base;
  }
  lmr_group batch;
  lmr_group_init(&batch, 0, NULL);
  lmr_pool_run_group(p, &batch, ptrs, N);
  lmr_group_wait(&batch);  /* returns: everything completed in submit */
  lmr_group_destroy(&batch);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(atomic_load(&jobs[i].runs), 0);
    ASSERT_EQ(jobs[i].base.status, LMR_ECLOSED);
  }

  counted_batch cb;
  lmr_group_init(&cb.b, 0, count_done);
  atomic_init(&cb.done_calls, 0);
  for (int i = 0; i < N; i++) job_init(&jobs[i], run_count, &ctx);
  lmr_pool_run_group(p, &cb.b, ptrs, N);
  ASSERT_EQ(atomic_load(&cb.done_calls), 1);
  lmr_group_destroy(&cb.b);

  lmr_pool_free(p);
  ctx_destroy(&ctx);
  return 0;
}

/* on_done replaces the wake-up: it fires exactly once, after the last job. */
TEST(on_done_once) {
  enum { N = 64 };
  ctx_t ctx;
  ctx_init(&ctx, 0);
  lmr_pool *p;
  lmr_error err;
  ASSERT_EQ(make_pool(&p, &ctx, 4, &err), LMR_OK);
  static test_job jobs[N];
  lmr_job *ptrs[N];
  for (int round = 0; round < 50; round++) {
    for (int i = 0; i < N; i++) {
      job_init(&jobs[i], run_count, &ctx);
      ptrs[i] = &jobs[i].base;
    }
    counted_batch cb;
    lmr_group_init(&cb.b, 0, count_done);
    atomic_init(&cb.done_calls, 0);
    lmr_pool_run_group(p, &cb.b, ptrs, N);
    while (atomic_load(&cb.done_calls) == 0) sched_yield();
    for (int i = 0; i < N; i++) ASSERT_EQ(atomic_load(&jobs[i].runs), 1);
    ASSERT_EQ(atomic_load(&cb.done_calls), 1);
    lmr_group_destroy(&cb.b);
  }
  lmr_pool_free(p);
  ctx_destroy(&ctx);
  return 0;
}

/* Shutdown interrupts every worker once, even idle ones, and finishes each. */
TEST(interrupt_each_worker) {
  ctx_t ctx;
  ctx_init(&ctx, 0);
  lmr_pool *p;
  lmr_error err;
  ASSERT_EQ(make_pool(&p, &ctx, MAX_WORKERS, &err), LMR_OK);
  lmr_pool_shutdown(p);
  for (int i = 0; i < MAX_WORKERS; i++) ASSERT_EQ(atomic_load(&ctx.interrupts[i]), 1);
  ASSERT_EQ(atomic_load(&ctx.finis), MAX_WORKERS);
  lmr_pool_free(p);
  ctx_destroy(&ctx);
  return 0;
}

/* ---- two shutdowns racing ---- */

/* Runs 300 ms whatever happens (a job that does not notice an interrupt). */
static void run_slow(lmr_job *job, void *state) {
  (void)state;
  test_job *t = (test_job *)job;
  atomic_fetch_add(&t->runs, 1);
  usleep(300 * 1000);
  job->status = LMR_OK;
}

typedef struct {
  lmr_pool *pool;
  ctx_t *ctx;
  int finis_seen;  /* workers finished when this shutdown returned */
} closer;

static void *shut(void *arg) {
  closer *c = arg;
  lmr_pool_shutdown(c->pool);
  c->finis_seen = atomic_load(&c->ctx->finis);
  return NULL;
}

/* A second shutdown while the first still joins returns only once the
 * workers are gone (it used to return at once: a close() racing another
 * close() could free what workers still used). */
TEST(second_shutdown_waits_for_the_first) {
  ctx_t ctx;
  ctx_init(&ctx, 0);
  lmr_pool *p;
  lmr_error err;
  ASSERT_EQ(make_pool(&p, &ctx, 1, &err), LMR_OK);
  test_job job;
  job_init(&job, run_slow, &ctx);
  lmr_job *ptr = &job.base;
  lmr_group g;
  lmr_group_init(&g, 0, NULL);
  lmr_pool_run_group(p, &g, &ptr, 1);
  while (atomic_load(&job.runs) == 0) usleep(1000);
  closer a = {p, &ctx, -1}, b = {p, &ctx, -1};
  pthread_t ta, tb;
  ASSERT_EQ(pthread_create(&ta, NULL, shut, &a), 0);
  usleep(50 * 1000);  /* a is joining the slow worker */
  ASSERT_EQ(pthread_create(&tb, NULL, shut, &b), 0);
  pthread_join(tb, NULL);
  pthread_join(ta, NULL);
  ASSERT_EQ(b.finis_seen, 1);
  ASSERT_EQ(a.finis_seen, 1);
  lmr_group_wait(&g);
  lmr_group_destroy(&g);
  lmr_pool_free(p);
  ctx_destroy(&ctx);
  return 0;
}

/* ---- signals ---- */

static atomic_int segv_blocked, int_blocked;

static void run_sigmask(lmr_job *job, void *state) {
  (void)state;
  sigset_t set;
  pthread_sigmask(SIG_BLOCK, NULL, &set);
  atomic_store(&segv_blocked, sigismember(&set, SIGSEGV) + sigismember(&set, SIGBUS) +
                                  sigismember(&set, SIGFPE));
  atomic_store(&int_blocked, sigismember(&set, SIGINT));
  job->status = LMR_OK;
}

/* Workers block Ctrl-C and the like, never faults: a SIGSEGV on a worker
 * must reach the process's handler (Python's faulthandler), not kill it
 * silently. */
TEST(workers_leave_faults_unblocked) {
  ctx_t ctx;
  ctx_init(&ctx, 0);
  lmr_pool *p;
  lmr_error err;
  ASSERT_EQ(make_pool(&p, &ctx, 1, &err), LMR_OK);
  atomic_store(&segv_blocked, -1);
  test_job job;
  job_init(&job, run_sigmask, &ctx);
  lmr_job *ptr = &job.base;
  lmr_group g;
  lmr_group_init(&g, 0, NULL);
  lmr_pool_run_group(p, &g, &ptr, 1);
  lmr_group_wait(&g);
  lmr_group_destroy(&g);
  ASSERT_EQ(atomic_load(&segv_blocked), 0);
  ASSERT_EQ(atomic_load(&int_blocked), 1);
  lmr_pool_free(p);
  ctx_destroy(&ctx);
  return 0;
}

/* ---- run_many ---- */

static atomic_int most_together;

static void run_many_count(lmr_job **jobs, int n, void *state) {
  int seen = atomic_load(&most_together);
  while (n > seen && !atomic_compare_exchange_weak(&most_together, &seen, n)) {
  }
  for (int i = 0; i < n; i++) run_count(jobs[i], state);
}

/* Runs n small jobs (all with run_many) as one group on a pool of
 * `workers`: 0 when each ran exactly once and well; the most handed to one
 * worker at once in *together. */
static int run_small_jobs(int workers, int n, int *together) {
  enum { MAX_JOBS = 64 };
  static test_job jobs[MAX_JOBS];
  lmr_job *ptrs[MAX_JOBS];
  ASSERT(n <= MAX_JOBS);
  ctx_t ctx;
  ctx_init(&ctx, 0);
  lmr_pool *p;
  lmr_error err;
  ASSERT_EQ(make_pool(&p, &ctx, workers, &err), LMR_OK);
  for (int i = 0; i < n; i++) {
    job_init(&jobs[i], run_count, &ctx);
    jobs[i].base.run_many = run_many_count;
    ptrs[i] = &jobs[i].base;
  }
  atomic_store(&most_together, 0);
  lmr_group g;
  lmr_group_init(&g, 0, NULL);
  lmr_pool_run_group(p, &g, ptrs, n);
  lmr_group_wait(&g);
  lmr_group_destroy(&g);
  for (int i = 0; i < n; i++) {
    ASSERT_EQ(atomic_load(&jobs[i].runs), 1);
    ASSERT_EQ(jobs[i].base.status, LMR_OK);
    ASSERT_EQ(jobs[i].bad_state, 0);
  }
  *together = atomic_load(&most_together);
  lmr_pool_free(p);
  ctx_destroy(&ctx);
  return 0;
}

/* Small jobs queued together are handed to a worker together, at most its
 * share of the queue; each still runs exactly once. */
TEST(small_jobs_run_together) {
  int together;
  ASSERT_EQ(run_small_jobs(2, 40, &together), 0);
  ASSERT(together > 1);
  ASSERT(together <= 20);  /* the other worker's share is left */
  return 0;
}

/* A handful of small jobs (fewer than LMR_POOL_RUN_MIN) is one run: one
 * worker is woken for them and runs them together, one round trip, while
 * the other workers sleep on (each wake-up costs more than the pipelined
 * commands save on a small machine). */
TEST(a_few_small_jobs_are_one_run) {
  int together;
  ASSERT_EQ(run_small_jobs(4, 8, &together), 0);
  ASSERT_EQ(together, 8);
  return 0;
}

TEST_MAIN(TEST_ENTRY(many_batches), TEST_ENTRY(init_failure),
          TEST_ENTRY(shutdown_with_queued_jobs), TEST_ENTRY(submit_after_shutdown),
          TEST_ENTRY(on_done_once), TEST_ENTRY(interrupt_each_worker),
          TEST_ENTRY(second_shutdown_waits_for_the_first),
          TEST_ENTRY(workers_leave_faults_unblocked), TEST_ENTRY(small_jobs_run_together),
          TEST_ENTRY(a_few_small_jobs_are_one_run))
