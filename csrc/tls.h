/* TLS over a connected socket. OpenSSL stays behind this interface: no
 * other file includes an OpenSSL header.
 *
 * One lmr__tls_ctx per client holds what every connection shares (trusted
 * CAs, the client certificate, the name to verify); one lmr__tls per
 * connection holds its session. The I/O functions mirror net.h's: waits are
 * bounded by an absolute deadline on the non-blocking socket, they return
 * LMR_OK / a byte count or a negative lmr_code with err set, and none of
 * them closes the socket. shutdown(2) of the socket from another thread
 * makes a call in progress fail at once, as on a plain connection.
 */
#ifndef LMR_TLS_H
#define LMR_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "lmcache_redis.h"

typedef struct lmr__tls_ctx lmr__tls_ctx;
typedef struct lmr__tls lmr__tls;

/* Loads cfg's CA file (or the system's trust store) and client certificate;
 * a file that cannot be loaded is an LMR_EINVAL error naming it. */
int lmr__tls_ctx_new(lmr__tls_ctx **out, const lmr_config *cfg, lmr_error *err);
void lmr__tls_ctx_free(lmr__tls_ctx *ctx);

/* Runs the handshake on connected socket fd, verifying the server as the
 * context says. A failed verification is LMR_ECONN with the reason. */
int lmr__tls_connect(lmr__tls_ctx *ctx, int fd, int64_t deadline, lmr__tls **out,
                     lmr_error *err);
/* Frees the session; the socket is left to the caller. */
void lmr__tls_free(lmr__tls *t);

/* As lmr__net_send_all: every byte of iov[0..iovcnt), the large pieces
 * encrypted straight from where they are (iov itself may be consumed). */
int lmr__tls_send_all(lmr__tls *t, struct iovec *iov, int iovcnt, int64_t deadline,
                      lmr_error *err);

/* As lmr__net_recv: 1..n decrypted bytes into buf. */
long lmr__tls_recv(lmr__tls *t, void *buf, size_t n, int64_t deadline, lmr_error *err);

/* 1 when the session holds received bytes not yet read: application data
 * or a record still to process (such as the server's close_notify). */
int lmr__tls_pending(const lmr__tls *t);

#endif
