/* The public client (lmcache_redis.h): configuration, and the lifecycle of
 * the worker pool of connections and of the completion queue. The calls
 * themselves are batches (batch.c); what they send and conclude is
 * plan.c's alone. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <math.h>
#include <unistd.h>

#include "client.h"
#include "conn.h"
#include "plan.h"

void lmr_config_init(lmr_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->host = "localhost";
  cfg->port = 6379;
  cfg->timeout = 10.0;
  cfg->connect_timeout = 5.0;
  cfg->stripes = 0;
  cfg->stripe_size = LMR_DEFAULT_STRIPE_SIZE;
  cfg->connections = 4;
  cfg->tls = 0;
  cfg->tls_verify = 1;
}

/* The one check of a configuration. Its messages name the Python
 * argument (the C field where it differs) and what would be accepted. */
static int check_config(const lmr_config *cfg, lmr_error *err) {
  if (cfg->unix_path == NULL && (cfg->host == NULL || cfg->host[0] == '\0'))
    return lmr__err(err, LMR_EINVAL,
                    "host must not be empty: give a host name or address, or "
                    "unix_socket_path (unix_path) for a Unix socket");
  if (cfg->unix_path == NULL && (cfg->port < 1 || cfg->port > 65535))
    return lmr__err(err, LMR_EINVAL, "port must be in 1..65535 (Redis's default: 6379), got %d",
                    cfg->port);
  if (cfg->unix_path != NULL && cfg->unix_path[0] == '\0')
    return lmr__err(err, LMR_EINVAL, "unix_socket_path (unix_path) must not be empty");
  if (cfg->stripes < 0 || cfg->stripes > LMR_MAX_STRIPES)
    return lmr__err(err, LMR_EINVAL,
                    "stripes must be in 1..%d, or None (or 0) to let stripe_size choose the "
                    "count; got %d",
                    LMR_MAX_STRIPES, cfg->stripes);
  if (cfg->stripes == 0 && (cfg->stripe_size < LMR_MIN_STRIPE_SIZE ||
                            cfg->stripe_size > LMR_MAX_STRIPE_SIZE))
    return lmr__err(err, LMR_EINVAL,
                    "stripe_size must be in %u..%u bytes (4 KiB..256 MiB; default 2 MiB), "
                    "got %llu",
                    LMR_MIN_STRIPE_SIZE, LMR_MAX_STRIPE_SIZE,
                    (unsigned long long)cfg->stripe_size);
  if (cfg->connections < 1 || cfg->connections > LMR_MAX_CONNECTIONS)
    return lmr__err(err, LMR_EINVAL, "connections must be in 1..%d (default 4), got %d",
                    LMR_MAX_CONNECTIONS, cfg->connections);
  if (!(cfg->timeout > 0) || !isfinite(cfg->timeout) || cfg->timeout > 1e6)
    return lmr__err(err, LMR_EINVAL,
                    "timeout must be a positive number of seconds (at most 1e6), got %g",
                    cfg->timeout);
  if (!(cfg->connect_timeout > 0) || !isfinite(cfg->connect_timeout) ||
      cfg->connect_timeout > 1e6)
    return lmr__err(err, LMR_EINVAL,
                    "connect_timeout must be a positive number of seconds (at most 1e6), got %g",
                    cfg->connect_timeout);
  if (cfg->db < 0) return lmr__err(err, LMR_EINVAL, "db must be >= 0, got %d", cfg->db);
  if (cfg->username != NULL && cfg->password == NULL)
    return lmr__err(err, LMR_EINVAL, "username needs a password: give password too");
  if (cfg->tls && cfg->unix_path != NULL)
    return lmr__err(err, LMR_EINVAL,
                    "ssl=True (tls) is for TCP connections, not unix_socket_path (unix_path)");
  if (!cfg->tls && (cfg->tls_ca_file != NULL || cfg->tls_cert_file != NULL ||
                    cfg->tls_key_file != NULL || cfg->tls_server_name != NULL))
    return lmr__err(err, LMR_EINVAL,
                    "%s given without ssl=True (C: tls = 1): add ssl=True or use a rediss:// URL",
                    cfg->tls_ca_file != NULL     ? "ssl_ca_certs (tls_ca_file)"
                    : cfg->tls_cert_file != NULL ? "ssl_certfile (tls_cert_file)"
                    : cfg->tls_key_file != NULL  ? "ssl_keyfile (tls_key_file)"
                                                 : "ssl_server_name (tls_server_name)");
  if (cfg->tls_key_file != NULL && cfg->tls_cert_file == NULL)
    return lmr__err(err, LMR_EINVAL,
                    "ssl_keyfile (tls_key_file) needs ssl_certfile (tls_cert_file), the "
                    "certificate it belongs to");
  if (cfg->tls_server_name != NULL && cfg->tls_server_name[0] == '\0')
    return lmr__err(err, LMR_EINVAL,
                    "ssl_server_name (tls_server_name) must not be empty: leave it None to "
                    "verify the host name");
  if (!cfg->cluster && (cfg->cluster_seeds != NULL || cfg->read_from_replicas))
    return lmr__err(err, LMR_EINVAL,
                    "%s is for a Redis Cluster: add cluster=True or use a redis-cluster:// URL",
                    cfg->cluster_seeds != NULL ? "cluster_seeds" : "read_from_replicas");
  if (cfg->cluster && cfg->unix_path != NULL)
    return lmr__err(err, LMR_EINVAL,
                    "cluster=True needs TCP seed nodes (host, port), not unix_socket_path "
                    "(unix_path): cluster nodes announce TCP addresses");
  if (cfg->cluster && cfg->db != 0)
    return lmr__err(err, LMR_EINVAL,
                    "a Redis Cluster has only database 0, got db=%d: drop db", cfg->db);
  return LMR_OK;
}

static char *dup_or_null(const char *s, int *failed) {
  if (s == NULL) return NULL;
  char *d = strdup(s);
  if (d == NULL) *failed = 1;
  return d;
}

/* splitmix64: a bijection, so distinct counters give distinct set ids. */
static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t lmr__client_set_id(lmr_client *c) {
  uint64_t n = atomic_fetch_add_explicit(&c->id_next, 1, memory_order_relaxed);
  return mix64(c->id_seed + n);
}

static void read_server_limits(lmr_client *c);

int lmr_client_open(lmr_client **out, const lmr_config *cfg, lmr_error *err) {
  *out = NULL;
  lmr__err_clear(err);
  int rc = check_config(cfg, err);
  if (rc != LMR_OK) return rc;
  lmr_client *c = calloc(1, sizeof *c);
  if (c == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for the client");
  pthread_mutex_init(&c->cq_mu, NULL);
  pthread_cond_init(&c->cq_cv, NULL);
  lmr__router_init(&c->router);
  c->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (c->event_fd < 0) {
    rc = lmr__err_sys(err, LMR_ENOMEM, errno, "cannot create the completion event fd");
    lmr_client_free(c);
    return rc;
  }
  int failed = 0;
  c->cfg = *cfg;
  c->cfg.host = c->host = dup_or_null(cfg->host, &failed);
  c->cfg.unix_path = c->unix_path = dup_or_null(cfg->unix_path, &failed);
  c->cfg.username = c->username = dup_or_null(cfg->username, &failed);
  c->cfg.password = c->password = dup_or_null(cfg->password, &failed);
  c->cfg.tls_ca_file = c->tls_ca_file = dup_or_null(cfg->tls_ca_file, &failed);
  c->cfg.tls_cert_file = c->tls_cert_file = dup_or_null(cfg->tls_cert_file, &failed);
  c->cfg.tls_key_file = c->tls_key_file = dup_or_null(cfg->tls_key_file, &failed);
  c->cfg.tls_server_name = c->tls_server_name = dup_or_null(cfg->tls_server_name, &failed);
  c->cfg.cluster_seeds = c->cluster_seeds = dup_or_null(cfg->cluster_seeds, &failed);
  /* Random seed: set ids of different clients must not collide. */
  if (getrandom(&c->id_seed, sizeof c->id_seed, 0) != (ssize_t)sizeof c->id_seed)
    c->id_seed = (uint64_t)lmr__now_ns() ^ (uint64_t)(uintptr_t)c;
  atomic_init(&c->id_next, 0);
  atomic_init(&c->batch_next, 0);
  atomic_init(&c->closed, 0);
  c->pid = getpid();
  if (failed) {
    lmr_client_free(c);
    return lmr__err(err, LMR_ENOMEM, "out of memory for the client");
  }
  /* Certificates are loaded once, here: a bad file fails the open. */
  if (cfg->tls && (rc = lmr__tls_ctx_new(&c->tls, &c->cfg, err)) != LMR_OK) {
    lmr_client_free(c);
    return rc;
  }
  rc = lmr__router_open(c, err);
  if (rc != LMR_OK) {
    lmr_client_free(c);
    return rc;
  }
  read_server_limits(c);
  *out = c;
  return LMR_OK;
}

/* In a forked child the pool's threads do not exist: joining them would
 * hang and shutdown(2) would cut the parent's sockets. The child leaves the
 * pool alone (its memory is the parent's copy) and only marks itself closed. */
int lmr__client_in_opening_process(const lmr_client *c) { return getpid() == c->pid; }

void lmr_client_close(lmr_client *c) {
  atomic_store(&c->closed, 1);
  if (lmr__client_in_opening_process(c)) lmr__router_close(c);
}

int lmr_client_closed(const lmr_client *c) { return atomic_load(&c->closed); }

void lmr_client_free(lmr_client *c) {
  if (c == NULL) return;
  lmr_client_close(c);
  /* The workers are gone now. In a forked child the router is left alone:
   * its threads are the parent's, its locks may be copies taken by them. */
  if (lmr__client_in_opening_process(c)) lmr__router_free(c);
  lmr__batch_free_done(c);
  if (c->event_fd >= 0) close(c->event_fd);
  pthread_mutex_destroy(&c->cq_mu);
  pthread_cond_destroy(&c->cq_cv);
  if (c->password != NULL) memset(c->password, 0, strlen(c->password));
  free(c->host);
  free(c->unix_path);
  free(c->username);
  free(c->password);
  free(c->tls_ca_file);
  free(c->tls_cert_file);
  free(c->tls_key_file);
  free(c->tls_server_name);
  free(c->cluster_seeds);
  lmr__tls_ctx_free(c->tls);
  free(c);
}

void lmr_client_stats(const lmr_client *c, lmr_stats *out) {
  lmr__stats *s = (lmr__stats *)&c->stats;
  out->bytes_sent = atomic_load(&s->bytes_sent);
  out->bytes_received = atomic_load(&s->bytes_received);
  out->bytes_copied = atomic_load(&s->bytes_copied);
  out->commands = atomic_load(&s->commands);
  out->reconnects = atomic_load(&s->reconnects);
  out->redirections = atomic_load(&s->redirections);
}

/* ---- what batch.c needs ---- */

int lmr__client_check_open(lmr_client *c, lmr_error *err) {
  if (atomic_load(&c->closed)) return lmr__err(err, LMR_ECLOSED, "client is closed");
  if (!lmr__client_in_opening_process(c))
    return lmr__err(err, LMR_ECLOSED,
                    "client was opened in process %ld and has no workers in this one "
                    "(after fork, open a new client)", (long)c->pid);
  return LMR_OK;
}

uint32_t lmr__client_stripes_for(const lmr_client *c, uint64_t len) {
  if (c->cfg.stripes > 0) return (uint32_t)c->cfg.stripes;
  return lmr_stripe_count(len, c->cfg.stripe_size, (uint32_t)c->cfg.connections,
                          LMR_MAX_STRIPES);
}

/* A slot per buffer size (a hash of it): cap << 16 | f << 8 | skips, with
 * f = count - 1 for a learned part count (2..256), 0 for "no guess", and
 * skips the reads of that size left to read from HEAD. A learned "no
 * guess" holds for READ_HINT_SKIPS reads, then guessing is tried again (a
 * partial chunk met once must not cost every full one later). A size that
 * shares a slot with another just loses its learning. */
#define READ_HINT_SKIPS 64u
#define READ_HINT_MAX_CAP (UINT64_C(1) << 48)

static atomic_uint_fast64_t *read_hint(lmr_client *c, uint64_t cap) {
  return &c->read_hints[(cap ^ (cap >> 12) ^ (cap >> 24)) % LMR__READ_HINTS];
}

uint32_t lmr__client_read_guess(lmr_client *c, uint64_t cap) {
  uint32_t guess = lmr__client_stripes_for(c, cap);
  if (cap >= READ_HINT_MAX_CAP) return guess;
  atomic_uint_fast64_t *slot = read_hint(c, cap);
  uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);
  if (e >> 16 != cap) return guess;
  uint32_t f = (uint32_t)(e >> 8) & 0xffu, skips = (uint32_t)e & 0xffu;
  if (f != 0) return f + 1;
  if (skips == 0) return guess;
  atomic_store_explicit(slot, (cap << 16) | (skips - 1), memory_order_relaxed);
  return 0;
}

void lmr__client_read_learned(lmr_client *c, uint64_t cap, uint32_t learned) {
  if (cap >= READ_HINT_MAX_CAP || learned > LMR_MAX_STRIPES) return;
  uint64_t e = learned >= 2 ? (cap << 16) | ((uint64_t)(learned - 1) << 8)
                            : (cap << 16) | READ_HINT_SKIPS;
  atomic_store_explicit(read_hint(c, cap), e, memory_order_relaxed);
}

/* Reads the server's proto-max-bulk-len once; a server that will not say
 * (no permission for CONFIG) is taken to have Redis's default. A broken
 * connection gets a second try on a fresh one. Not cancellable. */
static void read_server_limits(lmr_client *c) {
  static const char name[] = "proto-max-bulk-len";
  c->max_bulk = LMR_RESP_MAX_BULK;
  c->max_bulk_read = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    lmr_op op;
    lmr__op_init(&op, name, sizeof name - 1, c->cfg.connect_timeout, LMR_RESP_MAX_BULK, 0);
    lmr_key_job job;
    lmr__key_job_init(&job, &op, LMR_JOB_CONFIG);
    lmr_job *ptr = &job.base;
    lmr_error err;
    lmr_pool *pool = lmr__route_job(c, &job, &err);
    if (pool == NULL) return;
    lmr_group g;
    lmr_group_init(&g, 0, NULL);
    lmr_pool_run_group(pool, &g, &ptr, 1);
    lmr_group_wait(&g);
    lmr_group_destroy(&g);
    if (job.base.status == LMR_OK) {
      if (job.integer > 0) {
        c->max_bulk = job.integer;
        c->max_bulk_read = 1;
      }
      return;
    }
  }
}
