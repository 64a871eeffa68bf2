/* Worker pool (pool.h).
 *
 * Lock invariants: `mu` guards the queue (head/tail/queued), `stopping`,
 * `started`, `states[]`, `running[]`/`nrunning[]` (the jobs each worker
 * runs: lmr_pool_cancel finds a group's running jobs there) and the idle
 * stack (`idle`, `nidle`, `woken`). A worker's state is created and destroyed on the worker's own
 * thread; states[i] is non-NULL exactly while it may be interrupted, so
 * lmr_pool_shutdown never touches a state that is being destroyed.
 * A job is owned by the queue until a worker pops it, then by that worker
 * until complete() hands it back to its group.
 *
 * Idle workers wait on their own condition variable, stacked: a new job
 * wakes the worker that went idle last. Its connection and caches are warm,
 * and a call of one job keeps landing on one connection and one core; with
 * a shared condition variable the workers took turns, which on two cores
 * halved single-stripe throughput (BENCHMARKS.md).
 */
#include <errno.h>
#include <signal.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pool.h"

struct lmr_pool {
  lmr_pool_config cfg;
  pthread_mutex_t mu;
  pthread_cond_t start_cv;  /* a worker's init returned */
  pthread_cond_t *wake_cv;  /* per worker: it was handed work, or stopping */
  int *idle;                /* stack of idle worker indices, last idle on top */
  int nidle;
  int *woken;               /* per worker: taken off the idle stack */
  lmr_job *head, *tail;
  int queued;               /* jobs in the queue */
  int initialized;           /* the locks and condition variables exist */
  int stopping;
  int joining;              /* a shutdown is joining the workers */
  int joined;               /* ... and has joined them */
  pthread_cond_t joined_cv; /* joined became 1 */
  int started;              /* workers whose init has returned */
  int nthreads;             /* threads actually created */
  pthread_t *threads;
  void **states;
  lmr_job ***running;       /* per worker: the jobs it runs (its own array) */
  int *nrunning;            /* per worker: how many (0: idle) */
  lmr_error *init_err;      /* per worker: its init's result */
};

typedef struct {
  lmr_pool *pool;
  int index;
} worker_arg;

static void group_finished(lmr_group *g) {
  if (g->on_done != NULL) {
    g->on_done(g);
    return;
  }
  pthread_mutex_lock(&g->mu);
  g->done = 1;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);  /* the waiter may free g once this returns */
}

static void complete(lmr_job *job) {
  lmr_group *g = job->group;
  if (atomic_fetch_sub_explicit(&g->pending, 1, memory_order_acq_rel) == 1) group_finished(g);
}

void lmr_job_complete(lmr_job *job) { complete(job); }

static void fail_cancelled(lmr_job *job) {
  job->status = lmr__err(&job->err, LMR_ECANCELED, "call was cancelled");
  complete(job);
}

static void fail_closed(lmr_job *job) {
  job->status = lmr__err(&job->err, LMR_ECLOSED, "client is closed");
  complete(job);
}

/* Pops the next job, and with a small one (run_many) the small jobs queued
 * right behind it: up to this worker's share of the queue, so that the
 * other workers get theirs. Called with mu held. */
static int take_run(lmr_pool *p, lmr_job **run) {
  int share = (p->queued + p->nthreads - 1) / p->nthreads;
  if (share < LMR_POOL_RUN_MIN) share = LMR_POOL_RUN_MIN;
  if (share > LMR_POOL_RUN_MAX) share = LMR_POOL_RUN_MAX;
  int n = 0;
  do {
    lmr_job *job = p->head;
    p->head = job->next;
    if (p->head == NULL) p->tail = NULL;
    p->queued--;
    run[n++] = job;
  } while (n < share && run[0]->run_many != NULL && p->head != NULL &&
           p->head->run_many == run[0]->run_many);
  return n;
}

static void *worker_main(void *argp) {
  worker_arg arg = *(worker_arg *)argp;
  lmr_job *run[LMR_POOL_RUN_MAX];
  free(argp);
  lmr_pool *p = arg.pool;
  void *state = NULL;
  lmr_error err;
  lmr__err_clear(&err);
  int rc = p->cfg.worker_init(p->cfg.ctx, arg.index, &state, &err);

  pthread_mutex_lock(&p->mu);
  p->init_err[arg.index] = err;
  p->init_err[arg.index].code = rc;
  if (rc == LMR_OK) p->states[arg.index] = state;
  p->started++;
  pthread_cond_broadcast(&p->start_cv);
  if (rc != LMR_OK) {
    pthread_mutex_unlock(&p->mu);
    return NULL;
  }
  for (;;) {
    if (p->stopping) break;  /* shutdown fails what is still queued */
    if (p->head == NULL) {
      p->woken[arg.index] = 0;
      p->idle[p->nidle++] = arg.index;
      while (!p->woken[arg.index] && !p->stopping)
        pthread_cond_wait(&p->wake_cv[arg.index], &p->mu);
      continue;
    }
    int n = take_run(p, run);
    p->running[arg.index] = run;
    p->nrunning[arg.index] = n;
    pthread_mutex_unlock(&p->mu);
    if (n == 1) run[0]->run(run[0], state);
    else run[0]->run_many(run, n, state);
    pthread_mutex_lock(&p->mu);
    p->nrunning[arg.index] = 0;  /* before complete: then the jobs are the callers' */
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n; i++) complete(run[i]);
    pthread_mutex_lock(&p->mu);
  }
  p->states[arg.index] = NULL;
  pthread_mutex_unlock(&p->mu);
  if (p->cfg.worker_fini != NULL) p->cfg.worker_fini(p->cfg.ctx, state);
  return NULL;
}

static void join_all(lmr_pool *p) {
  for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
}

int lmr_pool_create(lmr_pool **out, const lmr_pool_config *cfg, lmr_error *err) {
  *out = NULL;
  if (cfg->workers < 1) return lmr__err(err, LMR_EINVAL, "a pool needs at least one worker");
  lmr_pool *p = calloc(1, sizeof *p);
  if (p == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for the worker pool");
  p->cfg = *cfg;
  p->threads = calloc((size_t)cfg->workers, sizeof *p->threads);
  p->states = calloc((size_t)cfg->workers, sizeof *p->states);
  p->running = calloc((size_t)cfg->workers, sizeof *p->running);
  p->nrunning = calloc((size_t)cfg->workers, sizeof *p->nrunning);
  p->init_err = calloc((size_t)cfg->workers, sizeof *p->init_err);
  p->wake_cv = calloc((size_t)cfg->workers, sizeof *p->wake_cv);
  p->idle = calloc((size_t)cfg->workers, sizeof *p->idle);
  p->woken = calloc((size_t)cfg->workers, sizeof *p->woken);
  if (p->threads == NULL || p->states == NULL || p->running == NULL || p->nrunning == NULL ||
      p->init_err == NULL ||
      p->wake_cv == NULL || p->idle == NULL || p->woken == NULL) {
    lmr_pool_free(p);
    return lmr__err(err, LMR_ENOMEM, "out of memory for the worker pool");
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->start_cv, NULL);
  pthread_cond_init(&p->joined_cv, NULL);
  for (int i = 0; i < cfg->workers; i++) pthread_cond_init(&p->wake_cv[i], NULL);
  p->initialized = 1;

  /* Workers block every asynchronous signal, so signals (Ctrl-C in Python)
   * go to the caller's threads and never interrupt a worker's syscalls. A
   * fault is another matter: blocked, a SIGSEGV kills the process without
   * its handler (Python's faulthandler) ever running. */
  sigset_t all, old;
  sigfillset(&all);
  static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT};
  for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&all, faults[i]);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = LMR_OK;
  for (int i = 0; i < cfg->workers; i++) {
    worker_arg *arg = malloc(sizeof *arg);
    if (arg == NULL) {
      rc = lmr__err(err, LMR_ENOMEM, "out of memory starting worker %d", i);
      break;
    }
    arg->pool = p;
    arg->index = i;
    if (pthread_create(&p->threads[i], NULL, worker_main, arg) != 0) {
      free(arg);
      rc = lmr__err(err, LMR_ENOMEM, "cannot start worker thread %d", i);
      break;
    }
    p->nthreads++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);

  pthread_mutex_lock(&p->mu);
  while (p->started < p->nthreads) pthread_cond_wait(&p->start_cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; rc == LMR_OK && i < p->nthreads; i++) {
    if (p->init_err[i].code != LMR_OK) rc = lmr__err_copy(err, &p->init_err[i]);
  }
  if (rc != LMR_OK) {
    lmr_pool_shutdown(p);
    lmr_pool_free(p);
    return rc;
  }
  *out = p;
  return LMR_OK;
}

void lmr_group_init(lmr_group *g, uint64_t tag, void (*on_done)(lmr_group *g)) {
  atomic_init(&g->pending, 0);
  g->tag = tag;
  g->on_done = on_done;
  g->done = 0;
  g->waitable = on_done == NULL;
  if (!g->waitable) return;  /* a batch's thousand groups need no locks */
  pthread_mutex_init(&g->mu, NULL);
  /* Timed waits (lmr_group_wait_for) count on the monotonic clock. */
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&g->cv, &attr);
  pthread_condattr_destroy(&attr);
}

void lmr_group_destroy(lmr_group *g) {
  if (!g->waitable) return;
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
}

void lmr_group_add(lmr_group *g, lmr_job *job) {
  job->group = g;
  job->next = NULL;
  atomic_init(&job->cancelled, 0);
  atomic_fetch_add_explicit(&g->pending, 1, memory_order_relaxed);
}

int lmr_pool_submit(lmr_pool *p, lmr_job **jobs, int n) {
  if (n <= 0) return LMR_OK;
  pthread_mutex_lock(&p->mu);
  if (p->stopping) {
    pthread_mutex_unlock(&p->mu);
    return LMR_ECLOSED;
  }
  for (int i = 0; i < n; i++) {
    lmr_job *job = jobs[i];
    if (p->tail != NULL) p->tail->next = job; else p->head = job;
    p->tail = job;
  }
  p->queued += n;
  /* A worker per run the new jobs make (take_run's runs, as if none of
   * them were taken yet): small jobs alike in runs of LMR_POOL_RUN_MIN, any
   * other job alone. */
  int runs = 0;
  for (int i = 0, len = 0; i < n; i++) {
    int joins = len > 0 && len < LMR_POOL_RUN_MIN && jobs[i]->run_many != NULL &&
                jobs[i]->run_many == jobs[i - 1]->run_many;
    len = joins ? len + 1 : 1;
    runs += !joins;
  }
  for (int i = 0; i < runs && p->nidle > 0; i++) {
    int w = p->idle[--p->nidle];
    p->woken[w] = 1;
    pthread_cond_signal(&p->wake_cv[w]);
  }
  pthread_mutex_unlock(&p->mu);
  return LMR_OK;
}

void lmr_pool_run_group(lmr_pool *p, lmr_group *g, lmr_job **jobs, int n) {
  if (n <= 0) {
    group_finished(g);
    return;
  }
  for (int i = 0; i < n; i++) lmr_group_add(g, jobs[i]);
  if (lmr_pool_submit(p, jobs, n) == LMR_OK) return;
  for (int i = 0; i < n; i++) fail_closed(jobs[i]);
}

void lmr_group_wait(lmr_group *g) {
  pthread_mutex_lock(&g->mu);
  while (!g->done) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

int lmr_group_wait_for(lmr_group *g, int64_t timeout_ns) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  int64_t ns = (int64_t)until.tv_nsec + timeout_ns % 1000000000;
  until.tv_sec += (time_t)(timeout_ns / 1000000000 + ns / 1000000000);
  until.tv_nsec = (long)(ns % 1000000000);
  pthread_mutex_lock(&g->mu);
  while (!g->done) {
    if (pthread_cond_timedwait(&g->cv, &g->mu, &until) == ETIMEDOUT) break;
  }
  int done = g->done;
  pthread_mutex_unlock(&g->mu);
  return done;
}

void lmr_pool_cancel(lmr_pool *p, uint64_t tag) {
  lmr_job *unrun = NULL;
  pthread_mutex_lock(&p->mu);
  /* Take the tagged jobs out of the queue, keeping the others in order. */
  lmr_job **link = &p->head;
  p->tail = NULL;
  while (*link != NULL) {
    lmr_job *job = *link;
    if (job->group->tag == tag) {
      *link = job->next;
      p->queued--;
      job->next = unrun;
      unrun = job;
    } else {
      p->tail = job;
      link = &job->next;
    }
  }
  for (int i = 0; i < p->nthreads; i++) {
    int hit = 0;
    for (int k = 0; k < p->nrunning[i]; k++) {
      lmr_job *job = p->running[i][k];
      if (job->group->tag != tag) continue;
      atomic_store(&job->cancelled, 1);
      hit = 1;
    }
    if (hit && p->cfg.worker_cancel != NULL && p->states[i] != NULL)
      p->cfg.worker_cancel(p->cfg.ctx, p->states[i]);
  }
  pthread_mutex_unlock(&p->mu);
  while (unrun != NULL) {
    lmr_job *next = unrun->next;
    fail_cancelled(unrun);
    unrun = next;
  }
}

void lmr_pool_shutdown(lmr_pool *p) {
  pthread_mutex_lock(&p->mu);
  if (p->joining) {  /* another caller joins: return only once it has */
    while (!p->joined) pthread_cond_wait(&p->joined_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return;
  }
  p->stopping = 1;
  lmr_job *queued = p->head;
  p->head = p->tail = NULL;
  p->queued = 0;
  if (p->cfg.worker_interrupt != NULL) {
    for (int i = 0; i < p->nthreads; i++)
      if (p->states[i] != NULL) p->cfg.worker_interrupt(p->cfg.ctx, p->states[i]);
  }
  for (int i = 0; i < p->nthreads; i++) pthread_cond_signal(&p->wake_cv[i]);
  p->joining = 1;  /* later callers wait for this one's join */
  pthread_mutex_unlock(&p->mu);

  while (queued != NULL) {
    lmr_job *next = queued->next;
    fail_closed(queued);
    queued = next;
  }
  join_all(p);
  pthread_mutex_lock(&p->mu);
  p->joined = 1;
  pthread_cond_broadcast(&p->joined_cv);
  pthread_mutex_unlock(&p->mu);
}

void lmr_pool_free(lmr_pool *p) {
  if (p == NULL) return;
  if (p->initialized) {
    lmr_pool_shutdown(p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->joined_cv);
    for (int i = 0; i < p->cfg.workers; i++) pthread_cond_destroy(&p->wake_cv[i]);
  }
  free(p->threads);
  free(p->states);
  free(p->running);
  free(p->nrunning);
  free(p->init_err);
  free(p->wake_cv);
  free(p->idle);
  free(p->woken);
  free(p);
}
