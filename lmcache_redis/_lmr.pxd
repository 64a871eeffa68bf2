# Mirror of csrc/lmcache_redis.h, one to one.
from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from "lmcache_redis.h" nogil:
    ctypedef enum lmr_code:
        LMR_OK
        LMR_EINVAL
        LMR_ENOMEM
        LMR_ECONN
        LMR_ETIMEDOUT
        LMR_EPROTO
        LMR_ERESPONSE
        LMR_EAUTH
        LMR_ETOOBIG
        LMR_ECLOSED
        LMR_ECANCELED

    ctypedef struct lmr_error:
        int code
        uint64_t needed
        char msg[256]

    const char *lmr_code_name(int code)
    const char *lmr_strerror(int code)

    enum:
        LMR_MAX_STRIPES
        LMR_MAX_CONNECTIONS
        LMR_MAX_KEY_LEN
        LMR_MIN_STRIPE_SIZE
        LMR_MAX_STRIPE_SIZE
        LMR_DEFAULT_STRIPE_SIZE

    ctypedef struct lmr_config:
        const char *host
        int port
        const char *unix_path
        const char *username
        const char *password
        int db
        double timeout
        double connect_timeout
        int stripes
        uint64_t stripe_size
        int connections
        int tls
        const char *tls_ca_file
        const char *tls_cert_file
        const char *tls_key_file
        const char *tls_server_name
        int tls_verify
        int cluster
        const char *cluster_seeds
        int read_from_replicas

    void lmr_config_init(lmr_config *cfg)

    ctypedef struct lmr_client:
        pass

    ctypedef struct lmr_stats:
        uint64_t bytes_sent
        uint64_t bytes_received
        uint64_t bytes_copied
        uint64_t commands
        uint64_t reconnects
        uint64_t redirections

    int lmr_client_open(lmr_client **out, const lmr_config *cfg, lmr_error *err)
    void lmr_client_close(lmr_client *c)
    int lmr_client_closed(const lmr_client *c)
    void lmr_client_free(lmr_client *c)
    int lmr_set(lmr_client *c, const void *key, size_t key_len, const void *buf,
                size_t len, int64_t ttl_ms, lmr_error *err)
    int lmr_get(lmr_client *c, const void *key, size_t key_len, void *buf,
                size_t cap, int *found, size_t *len, lmr_error *err)
    int lmr_exists(lmr_client *c, const void *key, size_t key_len, int *found,
                   lmr_error *err)
    int lmr_delete(lmr_client *c, const void *key, size_t key_len, int *found,
                   lmr_error *err)
    int lmr_ping(lmr_client *c, lmr_error *err)

    # ---- batches: many keys per call ----
    ctypedef enum lmr_batch_op:
        LMR_BATCH_GET
        LMR_BATCH_SET
        LMR_BATCH_EXISTS
        LMR_BATCH_DELETE

    ctypedef struct lmr_item:
        const void *key
        size_t key_len
        void *buf
        size_t len
        int status
        int found
        uint64_t value_len
        lmr_error err

    enum:
        LMR_MAX_BATCH

    int lmr_batch_run(lmr_client *c, lmr_batch_op op, lmr_item *items, size_t n,
                      int64_t ttl_ms, lmr_error *err)
    int lmr_event_fd(lmr_client *c)
    int lmr_batch_submit(lmr_client *c, lmr_batch_op op, lmr_item *items, size_t n,
                         int64_t ttl_ms, uint64_t *id, lmr_error *err)

    ctypedef struct lmr_completion:
        uint64_t id
        int status
        lmr_item *items
        size_t n

    size_t lmr_drain(lmr_client *c, lmr_completion *out, size_t max)
    int lmr_batch_cancel(lmr_client *c, uint64_t id)

    ctypedef int (*lmr_cancel_check)(void *ctx) noexcept
    enum:
        LMR_CANCEL_POLL_MS
    void lmr_thread_set_cancel_check(lmr_cancel_check check, void *ctx)

    void lmr_client_stats(const lmr_client *c, lmr_stats *out)


cdef extern from "stripe.h" nogil:
    uint32_t lmr_stripe_count(uint64_t len, uint64_t budget, uint32_t group, uint32_t max_count)
