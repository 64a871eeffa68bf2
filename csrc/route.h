/* Where a job goes: the server's nodes (one, or a Redis Cluster's masters
 * and the nodes met on the way), each with its own pool of workers, and a
 * cluster's slot map.
 *
 * Single node: one node, its pool made at open (every worker connected),
 * and every job goes there. Cluster: the slot map is read at open from the
 * seeds (CLUSTER SHARDS, else CLUSTER SLOTS, topology.h) and kept by a
 * refresher thread: read again when a node answers MOVED, when a
 * connection to a node fails, and every LMR__REFRESH_PERIOD_S. A master's
 * pool is made when a job first goes there (its workers connect on their
 * first job). A node, once known, lives as long as the client: a node that
 * left the cluster keeps idle workers, a few per node ever met.
 *
 * read_from_replicas: every connection says READONLY, and a read's jobs
 * (HEAD, parts, GET) take turns over its slot's master and the replicas
 * the last map listed; writes go to the master. A replica that lags shows
 * a part of an older write: the read is read again or misses, as for a
 * racing writer, never wrong data.
 */
#ifndef LMR_ROUTE_H
#define LMR_ROUTE_H

#include <pthread.h>
#include <stdint.h>

#include "conn.h"
#include "jobs.h"
#include "pool.h"
#include "resolve.h"

typedef struct lmr__node lmr__node;

/* Something to do later on the refresher's thread (a round's jobs that a
 * node asked to send again after a pause): never on a worker, which would
 * hold up every other job of its pool meanwhile. */
typedef struct lmr__later lmr__later;
struct lmr__later {
  lmr__later *next;
  int64_t due;                    /* lmr__now_ns() time */
  uint64_t tag;                   /* the batch's id (lmr__route_cancel) */
  void (*fire)(lmr__later *l);    /* called once, with no router lock held */
};

/* Seconds between two readings of the slot map when nothing asks sooner. */
#define LMR__REFRESH_PERIOD_S 10
/* Least time between two readings: a burst of MOVED replies is one. */
#define LMR__REFRESH_GAP_MS 100
/* Most times one job is sent elsewhere (MOVED, ASK) or again (TRYAGAIN,
 * CLUSTERDOWN) before its error stands. */
#define LMR__MAX_REDIRECTS 16
/* Most replicas of one master that reads take turns over. */
#define LMR__MAX_REPLICAS 8
/* Most nodes a client keeps (the slot map holds their indices in int16_t). */
#define LMR__MAX_NODES 32767

typedef struct {
  pthread_mutex_t mu;     /* guards everything below */
  lmr__node **nodes;      /* every node met; grows only */
  int nnodes, cap;
  int16_t *owner;         /* cluster: the node serving each slot, -1: none */
  lmr__node *single;      /* a single server's one node (set at open, then
                             read without mu: every job goes there) */
  int closed;             /* no pool is made or found any more */
  /* the refresher (cluster only) */
  pthread_t thread;
  int thread_started;
  pthread_cond_t cv;      /* a refresh was asked for, or stop */
  int requested, stopping;
  lmr_conn *reading;      /* its connection while it reads the map */
  int64_t last_ns;        /* when the map was last read */
  lmr__later *later;      /* what lmr__route_later holds, unordered */
  uint64_t refreshes;     /* readings done (tests, stats) */
} lmr__router;

struct lmr_client;

/* Sets up an empty router (its locks); lmr__router_free undoes it. */
void lmr__router_init(lmr__router *r);
/* Makes the nodes (and for a single node its connected pool; for a cluster
 * the first slot map, then the refresher). On failure the router holds
 * what lmr__router_free frees. */
int lmr__router_open(struct lmr_client *c, lmr_error *err);
/* Stops the refresher and every pool: later routes fail with ECLOSED.
 * Thread-safe, idempotent. */
void lmr__router_close(struct lmr_client *c);
void lmr__router_free(struct lmr_client *c);

/* The pool job goes to (its slot's master, or the node an ASK pinned it
 * to; for a job without a key, the first master), noted in job->node.
 * NULL when there is none, err saying why (closed; no master serves the
 * slot). */
lmr_pool *lmr__route_job(struct lmr_client *c, lmr_key_job *job, lmr_error *err);
/* Acts on what a node answered instead (job->redirect): MOVED remaps the
 * slot (and asks for a refresh), ASK pins the job to the node named, a
 * retry asks for a refresh. */
void lmr__route_redirected(struct lmr_client *c, lmr_key_job *job);
/* Asks the refresher to read the slot map again soon (cluster only). */
void lmr__route_refresh_soon(struct lmr_client *c);
/* lmr_pool_cancel on every node's pool, and what waits in lmr__route_later
 * for that tag fired at once (to find its batch cancelled). */
void lmr__route_cancel(struct lmr_client *c, uint64_t tag);
/* Fires l at l->due on the refresher's thread, or at once when the router
 * is closing (or closed, or has no refresher: a single node). */
void lmr__route_later(struct lmr_client *c, lmr__later *l);

#endif
