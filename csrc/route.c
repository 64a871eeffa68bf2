/* Routing (route.h): the nodes, their pools, a cluster's slot map and the
 * refresher that keeps it. Lock order: router mu, then a pool's lock (a
 * pool is made, or cancelled, under mu); no job runs under mu. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "conn.h"
#include "route.h"
#include "slot.h"
#include "topology.h"

struct lmr__node {
  char *host;
  int port;
  lmr_config cfg;            /* the client's, aimed at this node */
  lmr__resolver resolver;    /* its connections share lookups of its host */
  lmr_pool *pool;            /* NULL until a job first goes there */
  struct lmr_client *c;
  /* A master's replicas (read_from_replicas), as the last map said, and
   * the turn of the next read among it and them. */
  int replicas[LMR__MAX_REPLICAS];
  int nreplicas;
  unsigned turn;
};

/* ---- a node's workers: one connection each ---- */

static int worker_init(void *ctx, int index, void **state, lmr_error *err) {
  (void)index;
  lmr__node *n = ctx;
  lmr_conn *conn = malloc(sizeof *conn);
  if (conn == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for a connection");
  lmr__conn_init(conn, &n->cfg, n->c->tls, &n->resolver, &n->c->stats);
  conn->readonly = n->c->cfg.read_from_replicas;
  /* A single server's workers connect now, so that open fails on a server
   * that cannot be reached; a cluster's connect on their first job (a
   * master met through MOVED is made on a worker's thread, and may be one
   * that is failing). */
  int rc = n->c->cfg.cluster ? LMR_OK : lmr__conn_ensure(conn, err);
  if (rc != LMR_OK) {
    lmr__conn_destroy(conn);
    free(conn);
    return rc;
  }
  *state = conn;
  return LMR_OK;
}

static void worker_fini(void *ctx, void *state) {
  (void)ctx;
  lmr__conn_destroy(state);
  free(state);
}

static void worker_interrupt(void *ctx, void *state) {
  (void)ctx;
  lmr__conn_interrupt(state);
}

static void worker_cancel(void *ctx, void *state) {
  (void)ctx;
  lmr__conn_cancel(state);
}

/* ---- nodes ---- */

static void node_free(lmr__node *n) {
  if (n == NULL) return;
  lmr_pool_free(n->pool);
  lmr__resolver_destroy(&n->resolver);
  free(n->host);
  free(n);
}

/* The node at host:port, added if new. Called with mu held; -1 when out
 * of memory. */
static int node_index(lmr__router *r, struct lmr_client *c, const char *host, size_t host_len,
                      int port) {
  for (int i = 0; i < r->nnodes; i++)
    if (r->nodes[i]->port == port && strlen(r->nodes[i]->host) == host_len &&
        memcmp(r->nodes[i]->host, host, host_len) == 0)
      return i;
  if (r->nnodes == LMR__MAX_NODES) return -1;  /* owner[] holds int16_t */
  if (r->nnodes == r->cap) {
    int cap = r->cap == 0 ? 8 : 2 * r->cap;
    lmr__node **grown = realloc(r->nodes, (size_t)cap * sizeof *grown);
    if (grown == NULL) return -1;
    r->nodes = grown;
    r->cap = cap;
  }
  lmr__node *n = calloc(1, sizeof *n);
  if (n == NULL) return -1;
  n->host = malloc(host_len + 1);
  if (n->host == NULL) {
    free(n);
    return -1;
  }
  memcpy(n->host, host, host_len);
  n->host[host_len] = '\0';
  n->port = port;
  n->c = c;
  n->cfg = c->cfg;
  n->cfg.host = n->host;
  n->cfg.port = port;
  lmr__resolver_init(&n->resolver);
  r->nodes[r->nnodes] = n;
  return r->nnodes++;
}

/* The node's pool, made if need be. Called with mu held. */
static lmr_pool *node_pool(lmr__node *n, lmr_error *err) {
  if (n->pool != NULL) return n->pool;
  lmr_pool_config pc = {.workers = n->c->cfg.connections,
                        .worker_init = worker_init,
                        .worker_fini = worker_fini,
                        .worker_interrupt = worker_interrupt,
                        .worker_cancel = worker_cancel,
                        .ctx = n};
  if (lmr_pool_create(&n->pool, &pc, err) != LMR_OK) return NULL;
  return n->pool;
}

/* "host:port" (an IPv6 host may be bracketed) into its parts; an empty
 * host stays empty. -1 when malformed. */
static int split_addr(const char *s, size_t n, const char **host, size_t *host_len, int *port) {
  const char *colon = NULL;
  for (size_t i = n; i-- > 0;)
    if (s[i] == ':') {
      colon = s + i;
      break;
    }
  if (colon == NULL || colon + 1 == s + n) return -1;
  long p = 0;
  for (const char *q = colon + 1; q < s + n; q++) {
    if (*q < '0' || *q > '9' || p > 65535) return -1;
    p = p * 10 + (*q - '0');
  }
  if (p < 1 || p > 65535) return -1;
  *host = s;
  *host_len = (size_t)(colon - s);
  if (*host_len >= 2 && s[0] == '[' && colon[-1] == ']') {
    (*host)++;
    *host_len -= 2;
  }
  *port = (int)p;
  return 0;
}

/* ---- the slot map ---- */

/* Takes a topology in: its masters become nodes and serve their slots;
 * with read_from_replicas, their replicas become nodes too, listed with
 * their masters. */
static int apply_topology(lmr__router *r, struct lmr_client *c, const lmr__topology *t) {
  int *index = calloc((size_t)(t->nnodes > 0 ? t->nnodes : 1), sizeof *index);
  if (index == NULL) return -1;
  int rc = 0;
  for (int i = 0; i < r->nnodes; i++) r->nodes[i]->nreplicas = 0;
  /* Masters first (topology.h): a replica's master has its index already. */
  for (int i = 0; i < t->nnodes && rc == 0; i++) {
    int m = t->nodes[i].master;
    index[i] = -1;
    if (m != -1 && (!c->cfg.read_from_replicas || m < 0 || m >= i || index[m] < 0)) continue;
    index[i] = node_index(r, c, t->nodes[i].host, strlen(t->nodes[i].host), t->nodes[i].port);
    if (index[i] < 0) {
      rc = -1;
      break;
    }
    lmr__node *master = m == -1 ? NULL : r->nodes[index[m]];
    if (master != NULL && master->nreplicas < LMR__MAX_REPLICAS)
      master->replicas[master->nreplicas++] = index[i];
  }
  /* A slot the map leaves without a master keeps the one it had: a map
   * read from a node that knows little (just added, reset, cut off) must
   * not take slots away; MOVED corrects an owner that is wrong. */
  for (int s = 0; s < LMR__SLOTS && rc == 0; s++) {
    int m = t->owner[s];
    if (m >= 0 && m < t->nnodes && index[m] >= 0) r->owner[s] = (int16_t)index[m];
  }
  free(index);
  return rc;
}

/* Reads the slot map from node i: LMR_OK once applied. */
static int read_map_from(lmr__router *r, struct lmr_client *c, lmr__node *n, lmr_error *err) {
  lmr_conn *conn = malloc(sizeof *conn);
  if (conn == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for a connection");
  lmr__conn_init(conn, &n->cfg, c->tls, &n->resolver, &c->stats);
  /* (Without READONLY: a server that is no cluster node is then told
   * apart by CLUSTER SHARDS's answer, not READONLY's.) */
  conn->deadline = lmr__deadline(c->cfg.connect_timeout);
  pthread_mutex_lock(&r->mu);
  int rc = r->closed ? lmr__err(err, LMR_ECLOSED, "client is closed") : LMR_OK;
  r->reading = rc == LMR_OK ? conn : NULL;
  pthread_mutex_unlock(&r->mu);
  lmr__topology t;
  memset(&t, 0, sizeof t);
  if (rc == LMR_OK) rc = lmr__conn_ensure(conn, err);
  if (rc == LMR_OK) rc = lmr__topology_read(conn, n->host, c->cfg.tls, &t, err);
  pthread_mutex_lock(&r->mu);
  r->reading = NULL;
  if (rc == LMR_OK && apply_topology(r, c, &t) != 0)
    rc = lmr__err(err, LMR_ENOMEM, "out of memory for the slot map");
  if (rc == LMR_OK) r->refreshes++;
  pthread_mutex_unlock(&r->mu);
  lmr__topology_free(&t);
  lmr__conn_destroy(conn);
  free(conn);
  return rc;
}

/* Reads the slot map from the first node that answers, trying them all,
 * starting from a different one each time (so that a dead node is not
 * always asked first). */
static int read_map(lmr__router *r, struct lmr_client *c, lmr_error *err) {
  pthread_mutex_lock(&r->mu);
  int n = r->nnodes;
  uint64_t start = r->refreshes;
  pthread_mutex_unlock(&r->mu);
  int rc = lmr__err(err, LMR_ECONN, "no cluster node is known");
  for (int k = 0; k < n; k++) {
    pthread_mutex_lock(&r->mu);
    lmr__node *node = r->nodes[(start + (uint64_t)k) % (uint64_t)n];
    pthread_mutex_unlock(&r->mu);
    rc = read_map_from(r, c, node, err);
    if (rc == LMR_OK || rc == LMR_ECLOSED || rc == LMR_EINVAL || rc == LMR_EAUTH) return rc;
  }
  return rc;
}

/* Takes out of r->later those with tag (any: every one) or due by `now`
 * (0: none by time). Called with mu held. */
static lmr__later *take_later(lmr__router *r, int any, uint64_t tag, int64_t now) {
  lmr__later *taken = NULL, **link = &r->later;
  while (*link != NULL) {
    lmr__later *l = *link;
    if (any || l->tag == tag || (now != 0 && l->due <= now)) {
      *link = l->next;
      l->next = taken;
      taken = l;
    } else {
      link = &l->next;
    }
  }
  return taken;
}

static void fire_all(lmr__later *l) {
  while (l != NULL) {
    lmr__later *next = l->next;
    l->fire(l);  /* may free l */
    l = next;
  }
}

void lmr__route_later(struct lmr_client *c, lmr__later *l) {
  lmr__router *r = &c->router;
  pthread_mutex_lock(&r->mu);
  int now = r->stopping || !r->thread_started;
  if (!now) {
    l->next = r->later;
    r->later = l;
    pthread_cond_signal(&r->cv);
  }
  pthread_mutex_unlock(&r->mu);
  if (now) l->fire(l);
}

static void *refresher_main(void *arg) {
  struct lmr_client *c = arg;
  lmr__router *r = &c->router;
  pthread_mutex_lock(&r->mu);
  while (!r->stopping) {
    int64_t now = lmr__now_ns();
    lmr__later *ready = take_later(r, 0, 0, now);
    if (ready != NULL) {
      pthread_mutex_unlock(&r->mu);
      fire_all(ready);
      pthread_mutex_lock(&r->mu);
      continue;
    }
    int64_t due = r->requested ? r->last_ns + (int64_t)LMR__REFRESH_GAP_MS * 1000000
                               : r->last_ns + (int64_t)LMR__REFRESH_PERIOD_S * 1000000000;
    for (lmr__later *l = r->later; l != NULL; l = l->next)
      if (l->due < due) due = l->due;
    if (now < due) {
      struct timespec until;
      clock_gettime(CLOCK_MONOTONIC, &until);
      int64_t ns = (int64_t)until.tv_nsec + (due - now);
      until.tv_sec += (time_t)(ns / 1000000000);
      until.tv_nsec = (long)(ns % 1000000000);
      pthread_cond_timedwait(&r->cv, &r->mu, &until);
      continue;
    }
    r->requested = 0;
    pthread_mutex_unlock(&r->mu);
    lmr_error err;
    read_map(r, c, &err);  /* a failure is met by the next one */
    pthread_mutex_lock(&r->mu);
    r->last_ns = lmr__now_ns();
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* Seeds: host:port, then cluster_seeds ("h:p,h:p"). */
static int add_seeds(lmr__router *r, struct lmr_client *c, lmr_error *err) {
  if (node_index(r, c, c->cfg.host, strlen(c->cfg.host), c->cfg.port) < 0)
    return lmr__err(err, LMR_ENOMEM, "out of memory for the seed nodes");
  const char *s = c->cfg.cluster_seeds;
  while (s != NULL && *s != '\0') {
    size_t n = strcspn(s, ",");
    const char *host;
    size_t host_len;
    int port;
    if (split_addr(s, n, &host, &host_len, &port) != 0 || host_len == 0 ||
        (memchr(host, ':', host_len) != NULL && host == s))  /* IPv6 unbracketed */
      return lmr__err(err, LMR_EINVAL,
                      "cluster_seeds: %.*s is not host:port (e.g. 10.0.0.2:7000, [::1]:7000)",
                      (int)(n < 100 ? n : 100), s);
    if (node_index(r, c, host, host_len, port) < 0)
      return lmr__err(err, LMR_ENOMEM, "out of memory for the seed nodes");
    s += n;
    if (*s == ',') s++;
  }
  return LMR_OK;
}

void lmr__router_init(lmr__router *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&r->cv, &attr);
  pthread_condattr_destroy(&attr);
}

int lmr__router_open(struct lmr_client *c, lmr_error *err) {
  lmr__router *r = &c->router;
  pthread_mutex_lock(&r->mu);
  int rc = add_seeds(r, c, err);
  if (rc == LMR_OK && !c->cfg.cluster && node_pool(r->nodes[0], err) == NULL) rc = err->code;
  if (rc == LMR_OK && !c->cfg.cluster) r->single = r->nodes[0];
  pthread_mutex_unlock(&r->mu);
  if (rc != LMR_OK || !c->cfg.cluster) return rc;
  r->owner = malloc(LMR__SLOTS * sizeof *r->owner);
  if (r->owner == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for the slot map");
  for (int s = 0; s < LMR__SLOTS; s++) r->owner[s] = -1;
  lmr_error last;
  if ((rc = read_map(r, c, &last)) != LMR_OK)
    return lmr__err(err, rc, "cannot read the cluster's slot map from any seed node (%s)",
                    last.msg);
  r->last_ns = lmr__now_ns();
  if (pthread_create(&r->thread, NULL, refresher_main, c) != 0)
    return lmr__err(err, LMR_ENOMEM, "cannot start the slot map's refresher thread");
  r->thread_started = 1;
  return LMR_OK;
}

/* Node i's pool (NULL: none made, or no node i), read under mu: the node
 * list may grow meanwhile. Pools are never freed before the router. */
static int pool_at(lmr__router *r, int i, lmr_pool **pool) {
  pthread_mutex_lock(&r->mu);
  int exists = i < r->nnodes;
  *pool = exists ? r->nodes[i]->pool : NULL;
  pthread_mutex_unlock(&r->mu);
  return exists;
}

void lmr__router_close(struct lmr_client *c) {
  lmr__router *r = &c->router;
  pthread_mutex_lock(&r->mu);
  r->closed = 1;  /* no pool is made from here on */
  r->stopping = 1;
  if (r->reading != NULL) lmr__conn_interrupt(r->reading);
  pthread_cond_broadcast(&r->cv);
  lmr__later *waiting = take_later(r, 1, 0, 0);
  pthread_mutex_unlock(&r->mu);
  fire_all(waiting);  /* their jobs find the router closed */
  lmr_pool *pool;
  for (int i = 0; pool_at(r, i, &pool); i++)
    if (pool != NULL) lmr_pool_shutdown(pool);
}

void lmr__router_free(struct lmr_client *c) {
  lmr__router *r = &c->router;
  lmr__router_close(c);
  if (r->thread_started) pthread_join(r->thread, NULL);
  r->thread_started = 0;
  for (int i = 0; i < r->nnodes; i++) node_free(r->nodes[i]);
  free(r->nodes);
  free(r->owner);
  r->nodes = NULL;
  r->owner = NULL;
  r->nnodes = r->cap = 0;
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
}

/* ---- routing ---- */

lmr_pool *lmr__route_job(struct lmr_client *c, lmr_key_job *job, lmr_error *err) {
  lmr__router *r = &c->router;
  if (r->single != NULL) {  /* no lock on a single server's hot path: its pool is
                               fixed, and refuses jobs itself once closing */
    job->node = r->single;
    return r->single->pool;
  }
  lmr_pool *pool = NULL;
  pthread_mutex_lock(&r->mu);
  if (r->closed) {
    pthread_mutex_unlock(&r->mu);
    lmr__err(err, LMR_ECLOSED, "client is closed");
    return NULL;
  }
  lmr__node *n = NULL;
  if (job->pinned) {
    n = job->node;
  } else {
    int i = job->key_len == 0 ? -1 : r->owner[lmr__key_slot(job->key, job->key_len)];
    /* No key (PING, CONFIG), or a slot the map gives no master: any
     * master, whose MOVED (or CLUSTERDOWN) then says more. */
    for (int s = 0; s < LMR__SLOTS && i < 0; s++) i = r->owner[s];
    if (i >= 0) n = r->nodes[i];
    else lmr__err(err, LMR_ECONN, "no master serves any slot (the cluster is down)");
    /* Reads take turns over the master and its replicas; writes stay. */
    int read = job->kind == LMR_JOB_HEAD || job->kind == LMR_JOB_PART || job->kind == LMR_JOB_GET;
    if (n != NULL && read && !job->master_only && n->nreplicas > 0) {
      unsigned k = n->turn++ % (unsigned)(n->nreplicas + 1);
      if (k > 0) n = r->nodes[n->replicas[k - 1]];
    }
  }
  if (n != NULL) {
    job->node = n;
    pool = node_pool(n, err);
  }
  pthread_mutex_unlock(&r->mu);
  if (pool == NULL && r->owner != NULL) lmr__route_refresh_soon(c);
  return pool;
}

void lmr__route_refresh_soon(struct lmr_client *c) {
  lmr__router *r = &c->router;
  if (r->owner == NULL) return;
  pthread_mutex_lock(&r->mu);
  r->requested = 1;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

void lmr__route_redirected(struct lmr_client *c, lmr_key_job *job) {
  lmr__router *r = &c->router;
  if (job->redirect == LMR_REDIRECT_RETRY || r->owner == NULL) {
    job->pinned = job->asking = 0;
    lmr__route_refresh_soon(c);
    return;
  }
  const char *host;
  size_t host_len;
  int port;
  const char *to = job->redirect_to;
  pthread_mutex_lock(&r->mu);
  int i = -1;
  if (!r->closed && split_addr(to, strlen(to), &host, &host_len, &port) == 0) {
    /* No host: the node that answered, at another port. */
    const lmr__node *from = job->node;
    if (host_len == 0 && from != NULL) {
      host = from->host;
      host_len = strlen(from->host);
    }
    /* "?": the node is to be reached by a hostname it does not have. */
    if (host_len > 0 && !(host_len == 1 && host[0] == '?')) i = node_index(r, c, host, host_len, port);
  }
  if (i >= 0 && job->redirect == LMR_REDIRECT_MOVED) r->owner[job->redirect_slot] = (int16_t)i;
  int ask = i >= 0 && job->redirect == LMR_REDIRECT_ASK;
  job->pinned = job->asking = ask;
  if (ask) job->node = r->nodes[i];
  pthread_mutex_unlock(&r->mu);
  if (job->redirect == LMR_REDIRECT_MOVED) lmr__route_refresh_soon(c);
}

void lmr__route_cancel(struct lmr_client *c, uint64_t tag) {
  /* Not under mu: a cancelled job's round ends at once, and its next
   * round is routed (under mu) by this very thread. */
  lmr__router *r = &c->router;
  lmr_pool *pool;
  for (int i = 0; pool_at(r, i, &pool); i++)
    if (pool != NULL) lmr_pool_cancel(pool, tag);
  pthread_mutex_lock(&r->mu);
  lmr__later *waiting = take_later(r, 0, tag, 0);
  pthread_mutex_unlock(&r->mu);
  fire_all(waiting);
}
