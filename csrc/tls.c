/* TLS (tls.h) with OpenSSL.
 *
 * The session talks to its socket through a small BIO of our own rather
 * than OpenSSL's socket BIO, for one reason: OpenSSL's writes use write(2),
 * which raises SIGPIPE when the server has gone, killing a process that did
 * not ignore it; ours use send(2) with MSG_NOSIGNAL like net.c. It also
 * keeps the errno of a failed call for the message.
 *
 * Every OpenSSL call that can fail starts with an empty error queue (it is
 * per thread, and SSL_get_error misreads stale entries) and leaves it empty.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "net.h"
#include "tls.h"

/* OpenSSL's receive buffer (with read-ahead): several 16 KiB records per
 * recv(2), not one read for a record's header and another for its body. */
#define TLS_READ_BUFFER (128 * 1024)
/* Pieces of a command up to this size (RESP headers, keys, stripe headers)
 * are gathered into one buffer and sent as one record; larger pieces (the
 * values) are encrypted straight from the caller's memory. */
#define TLS_SMALL_PIECE 4096
#define TLS_STAGE 16384 /* a TLS record's most plaintext */

struct lmr__tls_ctx {
  SSL_CTX *ssl_ctx;
  char *name;          /* the name verified and sent as SNI */
  int sni;             /* 0 when name is an IP address (SNI carries only DNS names) */
  char endpoint[160];  /* for messages */
};

struct lmr__tls {
  SSL *ssl;
  const lmr__tls_ctx *ctx;
  int fd;
  int eof;        /* the socket reported the end of the stream */
  int sys_errno;  /* errno of the socket call that failed, 0 if none */
};

/* ---- errors ---- */

/* The first queued OpenSSL error as "reason" text in buf (or `fallback`
 * when none is queued); empties this thread's queue. Returns the error. */
static unsigned long take_error(char *buf, size_t n, const char *fallback) {
  unsigned long e = ERR_get_error();
  const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
  char sys[96];
  if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SYS) {
    /* A failed system call (a missing file, say): its errno's text. */
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    reason = strerror_r(ERR_GET_REASON(e), sys, sizeof sys);
#else
    reason = strerror_r(ERR_GET_REASON(e), sys, sizeof sys) == 0 ? sys : NULL;
#endif
  }
  if (reason != NULL) snprintf(buf, n, "%s", reason);
  else if (e != 0) ERR_error_string_n(e, buf, n);
  else snprintf(buf, n, "%s", fallback);
  ERR_clear_error();
  return e;
}

static int is_reason(unsigned long e, int lib, int reason) {
  return e != 0 && ERR_GET_LIB(e) == lib && ERR_GET_REASON(e) == reason;
}

/* An error from a handshake, read or write that is not "try again".
 * `action` names it, before the endpoint: "handshake with", "receive from",
 * "send to". */
static int io_error(lmr__tls *t, int ssl_error, const char *action, lmr_error *err) {
  const char *endpoint = t->ctx->endpoint;
  int handshake = strncmp(action, "handshake", 9) == 0;
  /* A close during the handshake usually means the port is not a TLS port. */
  char closed[sizeof t->ctx->endpoint + 96];
  if (handshake)
    snprintf(closed, sizeof closed, "TLS handshake with %s failed: the server closed the "
             "connection (is it a TLS port?)", endpoint);
  else
    snprintf(closed, sizeof closed, "server closed the connection");
  if (ssl_error == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return lmr__err(err, LMR_ECONN, "%s", closed);
  }
  if (ssl_error == SSL_ERROR_SYSCALL && t->sys_errno != 0) {
    ERR_clear_error();
    return lmr__err_sys(err, LMR_ECONN, t->sys_errno, "TLS %s %s", action, endpoint);
  }
  char reason[128];
  unsigned long e = take_error(reason, sizeof reason, "no reason given");
  /* A reason the server gave (an alert) beats the end of stream after it. */
  if (is_reason(e, ERR_LIB_SSL, SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
      (e == 0 && (ssl_error == SSL_ERROR_SYSCALL || t->eof)))
    return lmr__err(err, LMR_ECONN, "%s", closed);
  if (is_reason(e, ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED)) {
    long v = SSL_get_verify_result(t->ssl);
    const char *hint = "";
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
      hint = " (the certificate is not for that name)";
    else if (v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
             v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
             v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT)
      hint = " (its CA is not among the trusted ones)";
    return lmr__err(err, LMR_ECONN, "TLS handshake with %s failed: certificate verify failed: %s%s",
                    endpoint, X509_verify_cert_error_string(v), hint);
  }
  const char *hint = "";
  if (is_reason(e, ERR_LIB_SSL, SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED))
    hint = " (the server requires a client certificate)";
  else if (handshake && (is_reason(e, ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER) ||
                         is_reason(e, ERR_LIB_SSL, SSL_R_PACKET_LENGTH_TOO_LONG)))
    hint = " (is it a TLS port?)";
  return lmr__err(err, LMR_ECONN, "TLS %s %s failed: %s%s", action, endpoint, reason, hint);
}

/* ---- the socket BIO ---- */

static int sock_write(BIO *b, const char *data, size_t n, size_t *written) {
  lmr__tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  for (;;) {
    ssize_t k = send(t->fd, data, n, MSG_NOSIGNAL);
    if (k >= 0) {
      *written = (size_t)k;
      return 1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
    else t->sys_errno = errno;
    return 0;
  }
}

static int sock_read(BIO *b, char *buf, size_t n, size_t *got) {
  lmr__tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  for (;;) {
    ssize_t k = recv(t->fd, buf, n, 0);
    if (k > 0) {
      *got = (size_t)k;
      return 1;
    }
    if (k == 0) t->eof = 1;
    else if (errno == EINTR) continue;
    else if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
    else t->sys_errno = errno;
    return 0;
  }
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  lmr__tls *t = BIO_get_data(b);
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  /* nothing is buffered here */
    case BIO_CTRL_EOF:
      return t != NULL && t->eof;
    default:
      return 0;
  }
}

/* One method for the process: BIO type indices are few (BIO_get_new_index). */
static BIO_METHOD *sock_method;
static pthread_once_t sock_method_once = PTHREAD_ONCE_INIT;

static void make_sock_method(void) {
  int index = BIO_get_new_index();
  BIO_METHOD *m = index < 0 ? NULL
                            : BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "lmcache_redis socket");
  if (m != NULL && (!BIO_meth_set_write_ex(m, sock_write) || !BIO_meth_set_read_ex(m, sock_read) ||
                    !BIO_meth_set_ctrl(m, sock_ctrl))) {
    BIO_meth_free(m);
    m = NULL;
  }
  sock_method = m;
}

/* ---- the context ---- */

/* Never prompt on the terminal for a key's passphrase (OpenSSL's default
 * would, from a worker thread): an encrypted key fails to load instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)userdata;
  return 0;
}

static int is_ip_address(const char *s) {
  unsigned char addr[16];
  return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

/* 1 when the PEM file at path holds an encrypted key. */
static int is_encrypted_pem(const char *path) {
  char head[4096];
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  size_t n = fread(head, 1, sizeof head - 1, f);
  fclose(f);
  head[n] = '\0';
  return strstr(head, "ENCRYPTED") != NULL;
}

static int ctx_error(lmr_error *err, int code, const char *what, const char *path) {
  char reason[128];
  take_error(reason, sizeof reason, "unknown error");
  if (path != NULL) return lmr__err(err, code, "cannot load the TLS %s %s: %s", what, path, reason);
  return lmr__err(err, code, "cannot set up TLS (%s): %s", what, reason);
}

/* Trust, client certificate and verification settings on a new SSL_CTX. */
static int configure(lmr__tls_ctx *ctx, const lmr_config *cfg, lmr_error *err) {
  SSL_CTX *s = ctx->ssl_ctx;
  if (!SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION))
    return ctx_error(err, LMR_EINVAL, "minimum version TLS 1.2", NULL);
  /* Partial writes: SSL_write_ex returns after each record, like send(2)
   * does after a partial send; moving buffer: a retry may pass a different
   * address for the same bytes. */
  SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(s, 1);
  SSL_CTX_set_default_read_buffer_len(s, TLS_READ_BUFFER);
  SSL_CTX_set_default_passwd_cb(s, no_passphrase);

  if (cfg->tls_ca_file != NULL) {
    if (!SSL_CTX_load_verify_locations(s, cfg->tls_ca_file, NULL))
      return ctx_error(err, LMR_EINVAL, "CA file", cfg->tls_ca_file);
  } else if (!SSL_CTX_set_default_verify_paths(s)) {
    return ctx_error(err, LMR_EINVAL, "the system's trusted CAs", NULL);
  }
  if (cfg->tls_cert_file != NULL) {
    const char *key = cfg->tls_key_file != NULL ? cfg->tls_key_file : cfg->tls_cert_file;
    if (!SSL_CTX_use_certificate_chain_file(s, cfg->tls_cert_file))
      return ctx_error(err, LMR_EINVAL, "certificate file", cfg->tls_cert_file);
    if (!SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM)) {
      if (is_encrypted_pem(key)) {
        ERR_clear_error();
        return lmr__err(err, LMR_EINVAL, "the TLS key file %s is encrypted: give a key without "
                        "a passphrase (openssl pkey -in KEY -out PLAIN_KEY)", key);
      }
      return ctx_error(err, LMR_EINVAL, "key file", key);
    }
    if (!SSL_CTX_check_private_key(s))
      return ctx_error(err, LMR_EINVAL, "key file (not the certificate's key)", key);
  }

  if (!cfg->tls_verify) {
    SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
    return LMR_OK;
  }
  SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
  /* The name check is part of the chain's verification: a certificate for
   * another name fails the handshake like an untrusted one. */
  X509_VERIFY_PARAM *param = SSL_CTX_get0_param(s);
  int ok;
  if (!ctx->sni) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(param, ctx->name);
  } else {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    ok = X509_VERIFY_PARAM_set1_host(param, ctx->name, 0);
  }
  if (!ok) return lmr__err(err, LMR_EINVAL, "cannot verify the TLS server name '%s'", ctx->name);
  return LMR_OK;
}

int lmr__tls_ctx_new(lmr__tls_ctx **out, const lmr_config *cfg, lmr_error *err) {
  *out = NULL;
  pthread_once(&sock_method_once, make_sock_method);
  if (sock_method == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for TLS");
  lmr__tls_ctx *ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for TLS");
  const char *name = cfg->tls_server_name != NULL ? cfg->tls_server_name : cfg->host;
  ctx->name = strdup(name);
  ctx->sni = !is_ip_address(name);
  lmr__net_endpoint(cfg, ctx->endpoint, sizeof ctx->endpoint);
  ERR_clear_error();
  ctx->ssl_ctx = ctx->name != NULL ? SSL_CTX_new(TLS_client_method()) : NULL;
  int rc = ctx->ssl_ctx != NULL ? configure(ctx, cfg, err)
                                : ctx_error(err, LMR_ENOMEM, "new context", NULL);
  if (rc != LMR_OK) {
    lmr__tls_ctx_free(ctx);
    return rc;
  }
  *out = ctx;
  return LMR_OK;
}

void lmr__tls_ctx_free(lmr__tls_ctx *ctx) {
  if (ctx == NULL) return;
  SSL_CTX_free(ctx->ssl_ctx);
  free(ctx->name);
  free(ctx);
}

/* ---- sessions ---- */

/* Waits for what SSL_get_error asked for: the socket readable or writable. */
static int wait_for(lmr__tls *t, int ssl_error, int64_t deadline, const char *what,
                    lmr_error *err) {
  short events = ssl_error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
  return lmr__net_wait(t->fd, events, deadline, what, err);
}

static int is_retry(int ssl_error) {
  return ssl_error == SSL_ERROR_WANT_READ || ssl_error == SSL_ERROR_WANT_WRITE;
}

int lmr__tls_connect(lmr__tls_ctx *ctx, int fd, int64_t deadline, lmr__tls **out,
                     lmr_error *err) {
  *out = NULL;
  lmr__tls *t = calloc(1, sizeof *t);
  if (t == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for a TLS session");
  t->ctx = ctx;
  t->fd = fd;
  ERR_clear_error();
  t->ssl = SSL_new(ctx->ssl_ctx);
  BIO *bio = t->ssl != NULL ? BIO_new(sock_method) : NULL;
  if (bio == NULL) {
    ERR_clear_error();
    lmr__tls_free(t);
    return lmr__err(err, LMR_ENOMEM, "out of memory for a TLS session");
  }
  BIO_set_data(bio, t);
  BIO_set_init(bio, 1);
  SSL_set_bio(t->ssl, bio, bio);  /* the session owns the BIO now */
  if (ctx->sni && !SSL_set_tlsext_host_name(t->ssl, ctx->name)) {
    int rc = ctx_error(err, LMR_EINVAL, "server name", NULL);
    lmr__tls_free(t);
    return rc;
  }
  /* A plain Redis port never answers a ClientHello: it waits for the end
   * of an inline command. Hence the hint in the timeout's message. */
  char what[sizeof ctx->endpoint + 64];
  snprintf(what, sizeof what, "in the TLS handshake with %s (is it a TLS port?)", ctx->endpoint);
  for (;;) {
    ERR_clear_error();
    int r = SSL_connect(t->ssl);
    if (r == 1) break;
    int e = SSL_get_error(t->ssl, r);
    int rc = is_retry(e) ? wait_for(t, e, deadline, what, err) : io_error(t, e, "handshake with", err);
    if (rc != LMR_OK) {
      ERR_clear_error();
      lmr__tls_free(t);
      return rc;
    }
  }
  *out = t;
  return LMR_OK;
}

void lmr__tls_free(lmr__tls *t) {
  if (t == NULL) return;
  /* No close_notify: the session ends because the connection is dropped,
   * and the socket may be broken or shut down already. */
  SSL_free(t->ssl);
  free(t);
}

/* A send that failed because the server closed the connection may have
 * been answered with the reason first: an alert (such as "certificate
 * required", sent after a TLS 1.3 handshake the client saw succeed) waiting
 * in the socket. Report that rather than the bare reset or broken pipe. */
static int send_error(lmr__tls *t, int ssl_error, lmr_error *err) {
  int rc = io_error(t, ssl_error, "send to", err);
  char byte;
  size_t k;
  ERR_clear_error();
  /* Alerts are the SSL reasons above SSL_AD_REASON_OFFSET. */
  if (!SSL_read_ex(t->ssl, &byte, 1, &k) && SSL_get_error(t->ssl, 0) == SSL_ERROR_SSL &&
      ERR_GET_LIB(ERR_peek_error()) == ERR_LIB_SSL &&
      ERR_GET_REASON(ERR_peek_error()) > SSL_AD_REASON_OFFSET)
    return io_error(t, SSL_ERROR_SSL, "send to", err);
  ERR_clear_error();
  return rc;
}

/* Writes all n bytes at p, one record after another. */
static int write_all(lmr__tls *t, const char *p, size_t n, int64_t deadline, lmr_error *err) {
  while (n > 0) {
    size_t k = 0;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, p, n, &k)) {
      p += k;
      n -= k;
      continue;
    }
    int e = SSL_get_error(t->ssl, 0);
    int rc = is_retry(e) ? wait_for(t, e, deadline, "sending a command", err)
                         : send_error(t, e, err);
    if (rc != LMR_OK) return rc;
  }
  return LMR_OK;
}

int lmr__tls_send_all(lmr__tls *t, struct iovec *iov, int iovcnt, int64_t deadline,
                      lmr_error *err) {
  char stage[TLS_STAGE];
  while (iovcnt > 0) {
    int rc;
    if (iov->iov_len > TLS_SMALL_PIECE) {
      rc = write_all(t, iov->iov_base, iov->iov_len, deadline, err);
      iov++;
      iovcnt--;
    } else {
      /* A record per tiny piece would cost a send(2) and a record's
       * overhead each: gather the run of small pieces. */
      size_t used = 0;
      while (iovcnt > 0 && iov->iov_len <= TLS_SMALL_PIECE && iov->iov_len <= sizeof stage - used) {
        memcpy(stage + used, iov->iov_base, iov->iov_len);
        used += iov->iov_len;
        iov++;
        iovcnt--;
      }
      rc = write_all(t, stage, used, deadline, err);
    }
    if (rc != LMR_OK) return rc;
  }
  return LMR_OK;
}

long lmr__tls_recv(lmr__tls *t, void *buf, size_t n, int64_t deadline, lmr_error *err) {
  for (;;) {
    size_t k = 0;
    ERR_clear_error();
    /* OpenSSL decrypts a record in its own buffer and copies the plaintext
     * to buf: the one copy TLS in user space costs. */
    if (SSL_read_ex(t->ssl, buf, n, &k)) return (long)k;
    int e = SSL_get_error(t->ssl, 0);
    int rc = is_retry(e) ? wait_for(t, e, deadline, "waiting for the server's reply", err)
                         : io_error(t, e, "receive from", err);
    if (rc != LMR_OK) return rc;
  }
}

int lmr__tls_pending(const lmr__tls *t) { return SSL_has_pending(t->ssl); }
