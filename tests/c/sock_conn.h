/* For C tests of code that reads replies from an lmr_conn: a connection
 * over one end of a socketpair, the test writing the server's bytes into
 * the other end. Header-only. */
#ifndef LMR_SOCK_CONN_H
#define LMR_SOCK_CONN_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

typedef struct {
  lmr_config cfg;
  lmr__stats stats;
  lmr_conn conn;
  int peer;  /* the "server" end */
} sock_conn;

static inline int sock_conn_open(sock_conn *s) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return -1;
  fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);  /* as net.c makes them */
  memset(&s->stats, 0, sizeof s->stats);
  lmr_config_init(&s->cfg);
  lmr__conn_init(&s->conn, &s->cfg, NULL, NULL, &s->stats);
  s->conn.fd = sv[0];
  s->conn.deadline = lmr__deadline(5);
  s->peer = sv[1];
  return 0;
}

static inline void sock_conn_close(sock_conn *s) {
  lmr__conn_destroy(&s->conn);
  close(s->peer);
}

/* The server sends n bytes (small: they must fit the socket's buffer). */
static inline int sock_conn_feed(sock_conn *s, const void *p, size_t n) {
  return write(s->peer, p, n) == (ssize_t)n ? 0 : -1;
}
static inline int sock_conn_feed_str(sock_conn *s, const char *p) { return sock_conn_feed(s, p, strlen(p)); }

/* RESP2 written by a tiny format: 'a' an array (int count follows), 's' a
 * bulk string (const char *), 'i' an integer (long long), 'n' a nil bulk,
 * 'e' an error line (const char *). Appends to buf (cap bytes, a NUL kept
 * after); returns the new length, or -1 when it does not fit. */
static inline long resp_build(char *buf, size_t cap, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  for (const char *f = fmt; *f != '\0' && len < cap; f++) {
    int k = 0;
    size_t room = cap - len;
    switch (*f) {
      case 'a': k = snprintf(buf + len, room, "*%d\r\n", va_arg(ap, int)); break;
      case 's': {
        const char *s = va_arg(ap, const char *);
        k = snprintf(buf + len, room, "$%zu\r\n%s\r\n", strlen(s), s);
        break;
      }
      case 'i': k = snprintf(buf + len, room, ":%lld\r\n", va_arg(ap, long long)); break;
      case 'n': k = snprintf(buf + len, room, "$-1\r\n"); break;
      case 'e': k = snprintf(buf + len, room, "-%s\r\n", va_arg(ap, const char *)); break;
      default: k = -1;
    }
    if (k < 0 || (size_t)k >= room) {
      va_end(ap);
      return -1;
    }
    len += (size_t)k;
  }
  va_end(ap);
  return (long)len;
}

#endif
