/*
 * Worker pool: N threads fed by one FIFO job queue.
 *
 * Each worker owns a private state (in the client: one connection) created
 * by `worker_init` on the worker's own thread. Jobs belong to groups (a
 * round of one key's commands, in the client); each job carries its own
 * status, and the pool never looks inside a job beyond `run`/`run_many`.
 *
 * A group's `on_done` hook is called once, by whichever thread finishes its
 * last job (batch.c advances the key's plan there); without one, the
 * group's waiter wakes (lmr_group_wait). Small jobs that may share a round
 * trip (run_many) are handed to one worker together, so that a batch of a
 * thousand EXISTS costs a few round trips, not a thousand. A client has
 * one pool per server node (route.h): a Redis Cluster's masters each get
 * their own.
 */
#ifndef LMR_POOL_H
#define LMR_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lmcache_redis.h"

typedef struct lmr_job lmr_job;
typedef struct lmr_group lmr_group;
typedef struct lmr_pool lmr_pool;

/* Most jobs handed to one worker at once (run_many). */
#define LMR_POOL_RUN_MAX 64
/* Fewest, when that many wait: a handful of small jobs is one round trip on
 * one connection rather than a thread woken per job (on a small machine
 * the wake-ups cost more than the pipelined commands). */
#define LMR_POOL_RUN_MIN 16

struct lmr_job {
  lmr_job *next;             /* queue link, owned by the pool */
  lmr_group *group;
  /* Runs on a worker; must set status (and err when failing). */
  void (*run)(lmr_job *job, void *worker_state);
  /* Non-NULL: the job is small, and consecutive queued jobs with the same
   * run_many may be run together by one call (each status set). */
  void (*run_many)(lmr_job **jobs, int n, void *worker_state);
  int status;
  lmr_error err;
  atomic_int cancelled;      /* set by lmr_pool_cancel while it runs */
};

struct lmr_group {
  atomic_int pending;
  uint64_t tag;                   /* lmr_pool_cancel's selector */
  void (*on_done)(lmr_group *g);  /* NULL: wake lmr_group_wait */
  int waitable;                   /* mu/cv exist (on_done == NULL) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
};

typedef struct {
  int workers;
  /* Creates a worker's state on its thread; returns LMR_OK or an error. */
  int (*worker_init)(void *ctx, int index, void **state, lmr_error *err);
  void (*worker_fini)(void *ctx, void *state);
  /* Makes a worker blocked in I/O give up soon (e.g. shutdown(2) its
   * socket). Called with the pool lock held, from the closing thread. */
  void (*worker_interrupt)(void *ctx, void *state);
  /* Makes the worker's current job (its `cancelled` already set) give up
   * soon, leaving the worker usable for later jobs. Called with the pool
   * lock held, from the cancelling thread; NULL: running jobs just finish. */
  void (*worker_cancel)(void *ctx, void *state);
  void *ctx;
} lmr_pool_config;

/* Starts the workers and waits until every worker_init has returned; if any
 * failed, stops them all and returns the first error by worker index. */
int lmr_pool_create(lmr_pool **out, const lmr_pool_config *cfg, lmr_error *err);

/* A group runs once: init, add its jobs, submit, then wait (on_done NULL)
 * or be told (on_done); init it again for another round. */
void lmr_group_init(lmr_group *g, uint64_t tag, void (*on_done)(lmr_group *g));
void lmr_group_destroy(lmr_group *g);
void lmr_group_add(lmr_group *g, lmr_job *job);
/* Queues n jobs (array of pointers), each already added to its group.
 * LMR_ECLOSED, with nothing queued or completed, when the pool is shutting
 * down: the jobs are still the caller's. */
int lmr_pool_submit(lmr_pool *p, lmr_job **jobs, int n);
/* Finishes a job added to its group but never queued (its status and err
 * set by the caller), as if a worker had run it. */
void lmr_job_complete(lmr_job *job);
/* Adds n jobs to g and submits them; if the pool is shutting down they
 * complete at once with LMR_ECLOSED. */
void lmr_pool_run_group(lmr_pool *p, lmr_group *g, lmr_job **jobs, int n);
/* Blocks until every job of g has finished. */
void lmr_group_wait(lmr_group *g);
/* Waits at most timeout_ns for g; 1 when every job has finished, else 0. */
int lmr_group_wait_for(lmr_group *g, int64_t timeout_ns);
/* Gives up on every group tagged `tag`: their queued jobs complete at once
 * with LMR_ECANCELED, unrun; their running ones get `cancelled` set and
 * their workers worker_cancel (a run_many sorts out its other jobs). The
 * caller still waits for its groups, which then end soon; only then are
 * the jobs the caller's again. */
void lmr_pool_cancel(lmr_pool *p, uint64_t tag);

/* Fails queued jobs with LMR_ECLOSED, interrupts running ones, joins all
 * workers and runs worker_fini. Idempotent and thread-safe: every caller
 * returns only once the workers are gone. */
void lmr_pool_shutdown(lmr_pool *p);
void lmr_pool_free(lmr_pool *p);

#endif
