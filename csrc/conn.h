/* A connection: one socket (with a TLS session on it, or plain), its
 * read-ahead buffer and its reply parser.
 *
 * Replies are read header by header; a bulk payload is then moved with
 * lmr__conn_read_payload straight into its destination. Only the bytes that
 * arrived with a header read (at most LMR_HEADER_READ) are copied.
 *
 * Any failure of the stream (I/O error, timeout, malformed reply) closes the
 * connection before returning; the next lmr__conn_ensure reconnects. Server
 * error replies and callers' own decisions leave it open, except a protocol
 * error reply ("ERR Protocol error: ..."), after which the server closes
 * the connection: it is read to its end like any reply, and then re-made.
 */
#ifndef LMR_CONN_H
#define LMR_CONN_H

#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "resolve.h"
#include "resp.h"
#include "tls.h"

/* Largest read while looking for a reply header: small, so that little of a
 * following payload lands in (and must be copied out of) the buffer. */
#define LMR_HEADER_READ 512
/* Read-ahead size when skipping unwanted payload bytes. */
#define LMR_RBUF_SIZE (64 * 1024)

typedef struct {
  int fd;                     /* -1 while disconnected */
  lmr__tls *tls;              /* the TLS session on fd, or NULL */
  lmr__tls_ctx *tls_ctx;      /* the client's, or NULL: plain TCP */
  lmr__resolver *resolver;    /* the client's: its connections share lookups */
  atomic_int interrupted;     /* set once by lmr__conn_interrupt */
  const atomic_int *cancel;   /* the running job's cancel flag, or NULL */
  pthread_mutex_t fd_mu;      /* guards fd against a concurrent interrupt */
  const lmr_config *cfg;
  lmr__stats *stats;
  int64_t deadline;           /* of the operation being served */
  int ever_connected;
  int server_closes;          /* it sent a protocol error: re-made before reuse */
  int readonly;               /* cluster, reads from replicas: READONLY once connected */
  size_t rpos, rlen;          /* unread bytes: rbuf[rpos..rlen) */
  lmr_resp_parser parser;
  char rbuf[LMR_RBUF_SIZE];
} lmr_conn;

/* tls_ctx: NULL for plain connections. resolver: the client's, for all
 * its connections, so that they share the lookup of its host name. */
void lmr__conn_init(lmr_conn *c, const lmr_config *cfg, lmr__tls_ctx *tls_ctx,
                    lmr__resolver *resolver, lmr__stats *stats);
/* Connects (TLS handshake, AUTH, SELECT) unless already connected. */
int lmr__conn_ensure(lmr_conn *c, lmr_error *err);
void lmr__conn_close(lmr_conn *c);
/* From another thread: makes current and future I/O on c fail promptly. */
void lmr__conn_interrupt(lmr_conn *c);
/* From another thread, after setting *c->cancel: makes the I/O of the
 * current job fail promptly (LMR_ECANCELED). The connection is closed by
 * its worker and re-made for the next job. */
void lmr__conn_cancel(lmr_conn *c);
void lmr__conn_destroy(lmr_conn *c);

int lmr__conn_send(lmr_conn *c, lmr_cmd *cmd, lmr_error *err);
/* Next reply header (never LMR_REPLY_BULK_END). Text replies point into the
 * parser and stay valid until the next read. */
int lmr__conn_read_reply(lmr_conn *c, lmr_reply *r, lmr_error *err);
/* Moves n pending payload bytes to dst (NULL discards them); *copied (if
 * not NULL) says how many of them came through the read-ahead buffer. */
int lmr__conn_read_payload(lmr_conn *c, void *dst, size_t n, size_t *copied,
                           lmr_error *err);
/* Discards what is left of the payload and checks the closing CRLF. */
int lmr__conn_end_bulk(lmr_conn *c, lmr_error *err);

/* Turns a server error reply into LMR_EAUTH (NOAUTH, WRONGPASS) or
 * LMR_ERESPONSE, the server's text as the message. */
int lmr__conn_server_error(const lmr_reply *r, const char *context, lmr_error *err);

#endif
