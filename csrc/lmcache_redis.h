/*
 * lmcache_redis: a Redis client for huge values.
 *
 * One value is one Redis string under its key (stored format 2, stripe.h):
 * written by one command sent straight from the caller's memory, and read
 * in `stripes` parts by a pool of `connections` worker threads in
 * parallel, each part landing directly in its place in the caller's memory.
 * On a Redis Cluster (lmr_config.cluster) a value's parts are keys of their
 * own, spread over the masters, each master with its own `connections`.
 *
 * Every call is thread-safe: many threads may share one client.
 * Functions return LMR_OK (0) or a negative lmr_code; the error object,
 * when given, receives the code and a message a person can act on.
 */
#ifndef LMCACHE_REDIS_H
#define LMCACHE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: one table generates the enum, lmr_code_name and lmr_strerror. */
#define LMR_ERRNO_MAP(XX)                                                   \
  XX(EINVAL, -1, "invalid argument")                                        \
  XX(ENOMEM, -2, "out of memory")                                           \
  XX(ECONN, -3, "connection error")                                         \
  XX(ETIMEDOUT, -4, "operation timed out")                                  \
  XX(EPROTO, -5, "protocol error")                                          \
  XX(ERESPONSE, -6, "server replied with an error")                         \
  XX(EAUTH, -7, "authentication failed")                                    \
  XX(ETOOBIG, -8, "value does not fit the buffer")                          \
  XX(ECLOSED, -9, "client is closed")                                       \
  XX(ECANCELED, -10, "call was cancelled")

typedef enum {
  LMR_OK = 0,
#define LMR_XX_ENUM(name, value, text) LMR_##name = (value),
  LMR_ERRNO_MAP(LMR_XX_ENUM)
#undef LMR_XX_ENUM
} lmr_code;

#define LMR_ERRSTR_SIZE 256

typedef struct {
  int code;                   /* LMR_OK or a negative lmr_code */
  uint64_t needed;            /* LMR_ETOOBIG: the value's length in bytes */
  char msg[LMR_ERRSTR_SIZE];  /* never contains a password */
} lmr_error;

/* Name ("ETIMEDOUT") and generic text of a code; "EUNKNOWN" for others. */
const char *lmr_code_name(int code);
const char *lmr_strerror(int code);

/* Limits. A stored value's stripe count (from any writer) must be in range. */
#define LMR_MAX_STRIPES 256
#define LMR_MAX_CONNECTIONS 64
#define LMR_MAX_KEY_LEN (64u * 1024u)
/* Part size bounds when the count follows the value's size. */
#define LMR_MIN_STRIPE_SIZE (4u * 1024u)
#define LMR_MAX_STRIPE_SIZE (256u * 1024u * 1024u)
#define LMR_DEFAULT_STRIPE_SIZE (2u * 1024u * 1024u)

typedef struct {
  const char *host;        /* TCP host; ignored when unix_path is set */
  int port;
  const char *unix_path;   /* Unix socket path, or NULL for TCP */
  const char *username;    /* ACL user, or NULL for the default user */
  const char *password;    /* NULL: no AUTH */
  int db;                  /* SELECT db after connecting when > 0 */
  double timeout;          /* seconds for a whole operation; > 0 */
  double connect_timeout;  /* seconds for name lookup + connect + handshake; > 0 */
  int stripes;             /* parts per value written: 1..LMR_MAX_STRIPES
                              (1: verbatim), or 0: as stripe_size asks */
  uint64_t stripe_size;    /* with stripes == 0: most bytes per part */
  int connections;         /* worker threads/connections: 1..LMR_MAX_CONNECTIONS */
  /* TLS (TCP only). With tls_verify the server's certificate must chain to
   * a trusted CA and name the server (tls_server_name, else host: a DNS
   * name or an IP address); the handshake fails otherwise. */
  int tls;                     /* 1: TLS on every connection */
  const char *tls_ca_file;     /* PEM file of trusted CAs; NULL: the system's */
  const char *tls_cert_file;   /* client certificate (PEM chain), or NULL */
  const char *tls_key_file;    /* its private key (PEM, unencrypted); NULL:
                                  in tls_cert_file */
  const char *tls_server_name; /* name to verify and send (SNI); NULL: host */
  int tls_verify;              /* 1 (default): verify as above; 0: accept any
                                  certificate (no protection from a
                                  man in the middle) */
  /* Redis Cluster (TCP only, database 0). host:port and cluster_seeds are
   * seed nodes: the slot map is read from the first that answers, and
   * every master gets its own `connections` workers. A value's parts are
   * spread over the masters (stripe.h, "In a cluster"). */
  int cluster;                 /* 1: the server is a Redis Cluster */
  const char *cluster_seeds;   /* more seeds, "host:port,host:port", or NULL */
  int read_from_replicas;      /* cluster: reads may be served by replicas */
} lmr_config;

/* Fills a config with the defaults (localhost:6379, stripes of at most
 * LMR_DEFAULT_STRIPE_SIZE, 4 connections, no TLS, tls_verify 1). */
void lmr_config_init(lmr_config *cfg);

typedef struct lmr_client lmr_client;

/* Counters since the client opened; monotonic, approximate under concurrency. */
typedef struct {
  uint64_t bytes_sent;          /* value bytes sent from caller memory */
  uint64_t bytes_received;      /* value bytes received into caller memory */
  uint64_t bytes_copied;        /* of those, bytes that passed through a
                                   read-ahead buffer (header read spill-over) */
  uint64_t commands;            /* commands sent */
  uint64_t reconnects;          /* connections re-established after an error */
  uint64_t redirections;        /* cluster: commands sent again elsewhere (MOVED,
                                   ASK) or later (TRYAGAIN, CLUSTERDOWN) */
} lmr_stats;

/* Connects all `connections` connections (AUTH, SELECT) before returning. */
int lmr_client_open(lmr_client **out, const lmr_config *cfg, lmr_error *err);

/* Stops the workers: operations in flight fail with LMR_ECLOSED, later
 * calls too; submitted batches complete (their completions can still be
 * drained). Once it returns, in every thread that called it, no worker
 * touches a caller's buffer. Idempotent. Does not free the client. */
void lmr_client_close(lmr_client *c);

/* 1 once lmr_client_close was called, else 0. */
int lmr_client_closed(const lmr_client *c);

/* Closes if needed and frees, with any completions not drained. No call
 * may be in flight or follow. */
void lmr_client_free(lmr_client *c);

/* Stores len bytes at buf under key, replacing whatever was there in one
 * command; ttl_ms > 0 sets an expiry, 0 none. LMR_EINVAL before anything is
 * sent when the stored string would exceed the server's proto-max-bulk-len
 * (read at open; 512 MiB when the server will not say). */
int lmr_set(lmr_client *c, const void *key, size_t key_len, const void *buf,
            size_t len, int64_t ttl_ms, lmr_error *err);

/* Reads the value under key into buf (capacity cap). On a hit *found = 1
 * and *len = its length; on a miss (absent, a key of another type, a broken
 * encoding, or a value replaced under every one of a few reads) *found = 0
 * and buf's contents are unspecified.
 * LMR_ETOOBIG when the value is longer than cap (err->needed says how long). */
int lmr_get(lmr_client *c, const void *key, size_t key_len, void *buf,
            size_t cap, int *found, size_t *len, lmr_error *err);

/* *found = 1 when a whole value is stored under key (a verbatim string, or
 * a whole encoding; one round trip, the value not read). A get right after
 * may still miss if the value changes or expires in between. */
int lmr_exists(lmr_client *c, const void *key, size_t key_len, int *found,
               lmr_error *err);

/* Deletes the key (DEL, whatever it holds); *found = 1 if it existed. */
int lmr_delete(lmr_client *c, const void *key, size_t key_len, int *found,
               lmr_error *err);

/* One PING round trip over one connection (reconnecting it if needed):
 * LMR_OK when the server answered PONG. */
int lmr_ping(lmr_client *c, lmr_error *err);

/* ---- batches: many keys per call ----
 *
 * A batch carries many keys of one kind of operation; its keys' commands
 * spread over every connection (small ones pipelined), and every key gets
 * its own result in its item. A batch is either run and waited for
 * (lmr_batch_run: the synchronous API, which the single-key calls above
 * use too), or submitted (lmr_batch_submit) and collected later from a
 * completion queue whose event fd (lmr_event_fd) a caller polls: no thread
 * waits for it. */

typedef enum {
  LMR_BATCH_GET,     /* items' buf/len: where the value goes, its capacity */
  LMR_BATCH_SET,     /* items' buf/len: the value */
  LMR_BATCH_EXISTS,  /* buf/len unused */
  LMR_BATCH_DELETE   /* buf/len unused */
} lmr_batch_op;

/* One key of a batch: the caller fills key..len, the batch the rest. */
typedef struct {
  const void *key;
  size_t key_len;
  void *buf;
  size_t len;
  int status;         /* LMR_OK, or this key's error (err says more);
                         LMR_ETOOBIG: a get's value is longer than len */
  int found;          /* get: a hit; exists: a whole value; delete: the key
                         existed; set: stored */
  uint64_t value_len; /* get: the value's length on a hit, or with
                         LMR_ETOOBIG the length it needs */
  lmr_error err;
} lmr_item;

/* Most items in one batch. */
#define LMR_MAX_BATCH (1u << 20)

/* Runs a batch of n items and waits for every one (cancellable like the
 * single-key calls: lmr_thread_set_cancel_check). ttl_ms: set's expiry (0:
 * none). Returns LMR_OK when every item succeeded (a miss is a success),
 * else the first failed item's code, its message in err; a problem with
 * the batch itself (a closed client, a bad argument) fails every item,
 * except n > LMR_MAX_BATCH, which touches none. */
int lmr_batch_run(lmr_client *c, lmr_batch_op op, lmr_item *items, size_t n,
                  int64_t ttl_ms, lmr_error *err);

/* The completion queue's event fd (an eventfd, owned by the client):
 * readable while completions wait to be drained. Poll it, never read it. */
int lmr_event_fd(lmr_client *c);

/* Starts a batch and returns at once with its id (> 0): submitting never
 * waits for the network. The items, their keys and buffers must stay
 * valid, and set's buffers unchanged, until the batch's completion has
 * been drained. Exactly one completion per id follows, whatever happens
 * (a connection lost, the server gone, the timeout passed, the client
 * closed: those items fail). Fails without an id, and no completion, only
 * when the client is already closed, an argument is invalid, or memory for
 * the batch's bookkeeping runs out. */
int lmr_batch_submit(lmr_client *c, lmr_batch_op op, lmr_item *items, size_t n,
                     int64_t ttl_ms, uint64_t *id, lmr_error *err);

typedef struct {
  uint64_t id;        /* lmr_batch_submit's */
  int status;         /* LMR_OK, or the first failed item's code */
  lmr_item *items;    /* the submitted items, results filled in */
  size_t n;
} lmr_completion;

/* Takes up to max waiting completions, oldest first; the event fd stays
 * readable while any are left. Never blocks. Returns how many it took. */
size_t lmr_drain(lmr_client *c, lmr_completion *out, size_t max);

/* Cancels the submitted batch `id`: its queued commands never run, its
 * running ones are cut short (their connections re-made; small reads of
 * other batches pipelined with them are sent again, small writes fail
 * with LMR_ECONN), and once no
 * worker touches its items or buffers any more it returns 1. Its
 * completion is still delivered (items cut short: LMR_ECANCELED; a set
 * may or may not have stored, whole; on a cluster, a value of several
 * parts may be left with parts of two writes: it then reads as a miss). 0 when `id` has already completed
 * (or never existed). */
int lmr_batch_cancel(lmr_client *c, uint64_t id);

/* Cancelling a call from the thread that made it (Ctrl-C in Python).
 *
 * While a call made on this thread waits for its jobs, it calls `check`
 * every LMR_CANCEL_POLL_MS milliseconds; a nonzero return cancels it: jobs
 * not yet started never run, the connections of those running are shut
 * down (each is closed and re-made on its next use, never reused
 * mid-reply), and once every job has finished the call returns
 * LMR_ECANCELED. When it returns, no worker touches its buffer any more.
 * The setting is per thread; check = NULL turns it off. lmr_client_open
 * is not cancelled. */
typedef int (*lmr_cancel_check)(void *ctx);
#define LMR_CANCEL_POLL_MS 50
void lmr_thread_set_cancel_check(lmr_cancel_check check, void *ctx);

void lmr_client_stats(const lmr_client *c, lmr_stats *out);

#ifdef __cplusplus
}
#endif
#endif
