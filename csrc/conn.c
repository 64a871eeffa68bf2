/* Connections (conn.h): socket + read-ahead + parser, and the handshake.
 * The socket's bytes go through net.c, or tls.c when the client uses TLS;
 * a host name is looked up by resolve.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "net.h"

void lmr__conn_init(lmr_conn *c, const lmr_config *cfg, lmr__tls_ctx *tls_ctx,
                    lmr__resolver *resolver, lmr__stats *stats) {
  c->fd = -1;
  c->tls = NULL;
  c->tls_ctx = tls_ctx;
  c->resolver = resolver;
  atomic_init(&c->interrupted, 0);
  c->cancel = NULL;
  pthread_mutex_init(&c->fd_mu, NULL);
  c->cfg = cfg;
  c->stats = stats;
  c->deadline = 0;
  c->ever_connected = 0;
  c->server_closes = 0;
  c->readonly = 0;
  c->rpos = c->rlen = 0;
  lmr_resp_parser_init(&c->parser);
}

void lmr__conn_close(lmr_conn *c) {
  /* Only this connection's worker uses the session; an interrupt touches
   * just the fd. */
  lmr__tls_free(c->tls);
  c->tls = NULL;
  pthread_mutex_lock(&c->fd_mu);
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  pthread_mutex_unlock(&c->fd_mu);
  c->server_closes = 0;
  c->rpos = c->rlen = 0;
  lmr_resp_parser_init(&c->parser);
}

void lmr__conn_interrupt(lmr_conn *c) {
  atomic_store(&c->interrupted, 1);
  pthread_mutex_lock(&c->fd_mu);
  if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
  pthread_mutex_unlock(&c->fd_mu);
}

void lmr__conn_cancel(lmr_conn *c) {
  pthread_mutex_lock(&c->fd_mu);
  if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
  pthread_mutex_unlock(&c->fd_mu);
}

static int cancelled(const lmr_conn *c) {
  return c->cancel != NULL && atomic_load(c->cancel);
}

void lmr__conn_destroy(lmr_conn *c) {
  lmr__conn_close(c);
  pthread_mutex_destroy(&c->fd_mu);
}

/* Closes after a stream failure; an interrupted connection reports
 * LMR_ECLOSED whatever broke, since the client closing caused it, and a
 * cancelled job's LMR_ECANCELED. */
static int broken(lmr_conn *c, int rc, lmr_error *err) {
  lmr__conn_close(c);
  if (atomic_load(&c->interrupted))
    return lmr__err(err, LMR_ECLOSED, "client was closed during the operation");
  if (cancelled(c)) return lmr__err(err, LMR_ECANCELED, "call was cancelled");
  return rc;
}

/* A plain connection whose handshake was cut off, or answered with a TLS
 * record, most likely reached a TLS port: say so. */
static int tls_hint(int rc, lmr_error *err) {
  static const char hint[] =
      " (right after connecting: the server may speak TLS; if so, use ssl=True or a "
      "rediss:// URL)";
  if (err != NULL && (rc == LMR_ECONN || rc == LMR_EPROTO)) {
    size_t n = strlen(err->msg);
    if (n > sizeof err->msg - sizeof hint) n = sizeof err->msg - sizeof hint;
    memcpy(err->msg + n, hint, sizeof hint);
  }
  return rc;
}

int lmr__conn_server_error(const lmr_reply *r, const char *context, lmr_error *err) {
  int code = LMR_ERESPONSE;
  if (strncmp(r->str, "NOAUTH", 6) == 0 || strncmp(r->str, "WRONGPASS", 9) == 0)
    code = LMR_EAUTH;
  return lmr__err(err, code, "%s: %s", context, r->str);
}

/* Sends one handshake command and expects +OK / +PONG. */
static int handshake_step(lmr_conn *c, lmr_cmd *cmd, const char *context, int fail_code,
                          int *replied, lmr_error *err) {
  int rc = lmr__conn_send(c, cmd, err);
  lmr_reply r;
  if (rc == LMR_OK) rc = lmr__conn_read_reply(c, &r, err);
  if (rc != LMR_OK) return rc;
  *replied = 1;
  if (r.type == LMR_REPLY_STATUS) return LMR_OK;
  if (r.type == LMR_REPLY_ERROR) {
    rc = lmr__conn_server_error(&r, context, err);
    if (rc == LMR_ERESPONSE) rc = lmr__err(err, fail_code, "%s: %s", context, r.str);
    return broken(c, rc, err);
  }
  return broken(c, lmr__err(err, LMR_EPROTO, "%s: unexpected reply type", context), err);
}

/* An idle connection has nothing to read: EOF, an error or stray bytes
 * mean the server closed it (restart, CLIENT KILL, idle timeout) or it is
 * out of step; either way it must be re-made before it is used. With TLS,
 * bytes in the session count too (a close_notify arrives as a record). */
static int idle_conn_ok(lmr_conn *c) {
  if (c->tls != NULL && lmr__tls_pending(c->tls)) return 0;
  char b;
  ssize_t k = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

/* The socket being connected (or the name lookup's fd before it) is
 * published as c->fd at once, so that lmr__conn_interrupt can cut a
 * connect short too. */
static void publish_fd(void *ctx, int fd) {
  lmr_conn *c = ctx;
  pthread_mutex_lock(&c->fd_mu);
  c->fd = fd;
  if (fd >= 0 && (atomic_load(&c->interrupted) || cancelled(c))) shutdown(fd, SHUT_RDWR);
  pthread_mutex_unlock(&c->fd_mu);
}

int lmr__conn_ensure(lmr_conn *c, lmr_error *err) {
  if (c->fd >= 0 && !c->server_closes && c->rpos == c->rlen && idle_conn_ok(c)) return LMR_OK;
  if (c->fd >= 0) lmr__conn_close(c);
  if (atomic_load(&c->interrupted)) return lmr__err(err, LMR_ECLOSED, "client is closed");
  if (cancelled(c)) return lmr__err(err, LMR_ECANCELED, "call was cancelled");
  int64_t deadline = lmr__deadline(c->cfg->connect_timeout);
  if (deadline > c->deadline && c->deadline != 0) deadline = c->deadline;
  lmr__addrs addrs = {0};
  int rc = c->cfg->unix_path != NULL ? LMR_OK
                                     : lmr__resolve(c->resolver, c->cfg->host, c->cfg->port,
                                                    deadline, publish_fd, c, &addrs, err);
  int fd;
  if (rc == LMR_OK) rc = lmr__net_connect(c->cfg, addrs.list, deadline, publish_fd, c, &fd, err);
  lmr__addrs_release(&addrs);
  if (rc != LMR_OK) {
    if (atomic_load(&c->interrupted))
      return lmr__err(err, LMR_ECLOSED, "client was closed during the operation");
    if (cancelled(c)) return lmr__err(err, LMR_ECANCELED, "call was cancelled");
    return rc;
  }
  if (atomic_load(&c->interrupted)) return broken(c, LMR_ECLOSED, err);
  if (cancelled(c)) return broken(c, LMR_ECANCELED, err);
  if (c->tls_ctx != NULL) {
    rc = lmr__tls_connect(c->tls_ctx, fd, deadline, &c->tls, err);
    if (rc != LMR_OK) return broken(c, rc, err);
  }
  if (c->ever_connected) LMR__COUNT(c->stats, reconnects, 1);
  c->ever_connected = 1;

  int64_t op_deadline = c->deadline;
  c->deadline = deadline;
  int replied = 0;  /* the server answered in RESP */
  lmr_cmd cmd;
  if (c->cfg->password != NULL) {
    lmr_cmd_init(&cmd, c->cfg->username != NULL ? 3 : 2);
    lmr_cmd_arg_copy(&cmd, "AUTH");
    if (c->cfg->username != NULL) lmr_cmd_arg(&cmd, c->cfg->username, strlen(c->cfg->username));
    lmr_cmd_arg(&cmd, c->cfg->password, strlen(c->cfg->password));
    rc = handshake_step(c, &cmd, "authentication failed", LMR_EAUTH, &replied, err);
  }
  if (rc == LMR_OK && c->cfg->db > 0) {
    lmr_cmd_init(&cmd, 2);
    lmr_cmd_arg_copy(&cmd, "SELECT");
    lmr_cmd_arg_int(&cmd, c->cfg->db);
    rc = handshake_step(c, &cmd, "SELECT failed", LMR_ERESPONSE, &replied, err);
  }
  if (rc == LMR_OK && c->readonly) {
    /* A replica then serves reads of its master's slots (a master takes
     * the flag and serves everything, as before). */
    lmr_cmd_init(&cmd, 1);
    lmr_cmd_arg_copy(&cmd, "READONLY");
    rc = handshake_step(c, &cmd, "READONLY failed", LMR_ERESPONSE, &replied, err);
  }
  if (rc == LMR_OK) {
    /* PING proves the connection usable now, and reports NOAUTH at once
     * when the server wants a password that was not given. */
    lmr_cmd_init(&cmd, 1);
    lmr_cmd_arg_copy(&cmd, "PING");
    rc = handshake_step(c, &cmd, "PING failed", LMR_ERESPONSE, &replied, err);
  }
  if (rc != LMR_OK && c->tls_ctx == NULL && !replied) tls_hint(rc, err);
  /* Nothing may follow the handshake's replies: such bytes would be taken
   * for the next command's reply. */
  if (rc == LMR_OK && (c->rpos != c->rlen || !idle_conn_ok(c)))
    rc = broken(c, lmr__err(err, LMR_EPROTO, "unexpected bytes after the handshake"), err);
  c->deadline = op_deadline;
  return rc;
}

int lmr__conn_send(lmr_conn *c, lmr_cmd *cmd, lmr_error *err) {
  if (cmd->overflow) return lmr__err(err, LMR_EINVAL, "command too large to encode");
  int rc = c->tls != NULL ? lmr__tls_send_all(c->tls, cmd->iov, cmd->iovcnt, c->deadline, err)
                          : lmr__net_send_all(c->fd, cmd->iov, cmd->iovcnt, c->deadline, err);
  if (rc != LMR_OK) return broken(c, rc, err);
  LMR__COUNT(c->stats, commands, (uint64_t)cmd->ncmds);
  return LMR_OK;
}

/* 1..n bytes from the socket into buf, decrypted when TLS is on. */
static long recv_some(lmr_conn *c, void *buf, size_t n, lmr_error *err) {
  return c->tls != NULL ? lmr__tls_recv(c->tls, buf, n, c->deadline, err)
                        : lmr__net_recv(c->fd, buf, n, c->deadline, err);
}

/* Refills the empty read-ahead buffer with at most `limit` bytes. */
static int fill(lmr_conn *c, size_t limit, lmr_error *err) {
  long k = recv_some(c, c->rbuf, limit, err);
  if (k < 0) return broken(c, (int)k, err);
  c->rpos = 0;
  c->rlen = (size_t)k;
  return LMR_OK;
}

static int next_event(lmr_conn *c, lmr_reply *r, lmr_error *err) {
  for (;;) {
    if (c->rpos < c->rlen) {
      long k = lmr_resp_feed(&c->parser, c->rbuf + c->rpos, c->rlen - c->rpos, r);
      if (k < 0)
        return broken(c, lmr__err(err, LMR_EPROTO, "malformed reply from the server"), err);
      c->rpos += (size_t)k;
      if (r->type != LMR_REPLY_NONE) return LMR_OK;
    }
    int rc = fill(c, LMR_HEADER_READ, err);
    if (rc != LMR_OK) return rc;
  }
}

/* The start of the error Redis sends before it closes a connection whose
 * request it could not parse (an argument longer than proto-max-bulk-len). */
static const char protocol_error[] = "ERR Protocol error";

int lmr__conn_read_reply(lmr_conn *c, lmr_reply *r, lmr_error *err) {
  int rc = next_event(c, r, err);
  if (rc == LMR_OK && r->type == LMR_REPLY_BULK_END)
    return broken(c, lmr__err(err, LMR_EPROTO, "reply stream out of step"), err);
  /* The close may arrive after the next command is sent on the connection
   * (which then fails with "Connection reset by peer"): it goes now. */
  if (rc == LMR_OK && r->type == LMR_REPLY_ERROR &&
      strncmp(r->str, protocol_error, sizeof protocol_error - 1) == 0)
    c->server_closes = 1;
  return rc;
}

int lmr__conn_read_payload(lmr_conn *c, void *dst, size_t n, size_t *copied,
                           lmr_error *err) {
  if ((int64_t)n > lmr_resp_payload_pending(&c->parser))
    return broken(c, lmr__err(err, LMR_EPROTO, "payload read past the reply"), err);
  char *out = dst;
  /* Bytes that came in with the header: the only copy on this path. */
  size_t k = lmr_resp_take_payload(&c->parser, c->rbuf + c->rpos, c->rlen - c->rpos, out, n);
  c->rpos += k;
  n -= k;
  if (copied != NULL) *copied = k;
  if (out != NULL) out += k;
  while (n > 0) {
    if (out == NULL) {
      int rc = fill(c, sizeof c->rbuf, err);
      if (rc != LMR_OK) return rc;
      k = lmr_resp_take_payload(&c->parser, c->rbuf, c->rlen, NULL, n);
      c->rpos = k;
    } else {
      long got = recv_some(c, out, n, err);
      if (got < 0) return broken(c, (int)got, err);
      k = (size_t)got;
      lmr_resp_payload_done(&c->parser, k);
      out += k;
    }
    n -= k;
  }
  return LMR_OK;
}

int lmr__conn_end_bulk(lmr_conn *c, lmr_error *err) {
  int64_t left = lmr_resp_payload_pending(&c->parser);
  int rc = lmr__conn_read_payload(c, NULL, (size_t)left, NULL, err);
  lmr_reply r;
  if (rc == LMR_OK) rc = next_event(c, &r, err);
  if (rc == LMR_OK && r.type != LMR_REPLY_BULK_END)
    return broken(c, lmr__err(err, LMR_EPROTO, "bulk reply not terminated"), err);
  return rc;
}
