/*
 * Worker pool: N threads fed by one FIFO job queue.
 *
 * Each worker owns a private state (in the client: one connection) created
 * by `worker_init` on the worker's own thread. A caller groups jobs in a
 * batch, submits them together and waits for the batch; each job carries
 * its own status, and the pool never looks inside a job beyond `run`.
 *
 * The batch's `on_done` hook is called once, by whichever thread finishes
 * the last job; the default wakes lmr_batch_wait. Another completion path
 * (an eventfd for asyncio) plugs in there. Routing jobs to per-node queues
 * (Redis Cluster) would replace lmr_pool_submit's single queue.
 */
#ifndef LMR_POOL_H
#define LMR_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lmcache_redis.h"

typedef struct lmr_job lmr_job;
typedef struct lmr_batch lmr_batch;
typedef struct lmr_pool lmr_pool;

struct lmr_job {
  lmr_job *next;             /* queue link, owned by the pool */
  lmr_batch *batch;
  /* Runs on a worker; must set status (and err when failing). */
  void (*run)(lmr_job *job, void *worker_state);
  int status;
  lmr_error err;
  atomic_int cancelled;      /* set by lmr_pool_cancel while it runs */
};

struct lmr_batch {
  atomic_int pending;
  void (*on_done)(lmr_batch *b);  /* NULL: wake lmr_batch_wait */
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

void lmr_batch_init(lmr_batch *b);
void lmr_batch_destroy(lmr_batch *b);
/* Queues n jobs (array of pointers), all belonging to batch b; a batch is
 * submitted once, then waited on once (init it again for another round). If the pool is
 * shutting down every job completes at once with LMR_ECLOSED. */
void lmr_pool_submit(lmr_pool *p, lmr_batch *b, lmr_job **jobs, int n);
/* Blocks until every job submitted in b has finished. */
void lmr_batch_wait(lmr_batch *b);
/* Waits at most timeout_ns for b; 1 when every job has finished, else 0. */
int lmr_batch_wait_for(lmr_batch *b, int64_t timeout_ns);
/* Gives up on batch b (submitted to p): its queued jobs complete at once
 * with LMR_ECANCELED, unrun; its running ones get `cancelled` set and their
 * workers worker_cancel. The caller still waits for b, which then ends
 * soon; only then are the jobs the caller's again. */
void lmr_pool_cancel(lmr_pool *p, lmr_batch *b);

/* Fails queued jobs with LMR_ECLOSED, interrupts running ones, joins all
 * workers and runs worker_fini. Idempotent and thread-safe. */
void lmr_pool_shutdown(lmr_pool *p);
void lmr_pool_free(lmr_pool *p);

#endif
