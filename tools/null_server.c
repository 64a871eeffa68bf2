/*
 * lmr_null_server: a RESP2 server that speaks just enough RESP to answer
 * lmcache_redis's reads (EXISTS, STRLEN, GETRANGE, GET) with payloads from
 * pre-touched memory and to read and discard SET payloads, so a benchmark
 * shows what a client alone can do, without Redis's own costs (allocation,
 * copying into its keyspace, eviction).
 *
 *   lmr_null_server [--port N] [--bind ADDR] [--value-size BYTES]
 *                   [--stripes C] [--threads N] [--drop-in-kernel]
 *
 * Once listening it prints "PORT <n>" on stdout (--port 0 picks a free
 * port) and serves until SIGTERM or SIGINT, then exits with status 0.
 *
 * The emulated store holds one string S under every key: the value of
 * L = --value-size bytes (byte j of the value is j % 251) as lmcache_redis
 * stores it (README.md, "Stored format (version 2)"; csrc/stripe.h): with
 * --stripes C >= 2, encoded in C parts, S = hdr(0) part(0) ... hdr(C-1)
 * part(C-1) of L + 32 C bytes, every header with write id 1; with C = 0 or
 * 1 (the default), the value verbatim, as a client with stripes=1 writes
 * it. A client reads the whole value either way: it follows what S holds.
 * S is built once, in pre-touched memory; every reply's payload is sent
 * straight from it.
 *   EXISTS K [K ...]       the number of keys (every key exists).
 *   STRLEN K               :|S|
 *   GETRANGE K a b         S[a..b] with Redis's arithmetic (negative
 *                          offsets count from the end; clamped).
 *   GET K                  S whole.
 *   SET K V [...],         V is read into a 1 MiB scratch buffer and dropped
 *   PSETEX K ms V          (--drop-in-kernel: discarded by recv(MSG_TRUNC),
 *                          without the copy); +OK. S does not change.
 *   DEL, UNLINK            :0 (S stays).
 *   PING [msg]             +PONG (or msg)
 *   AUTH, SELECT, CLIENT   +OK
 *   CONFIG GET p           [p, ""] (a client reading proto-max-bulk-len
 *                          keeps Redis's default); other CONFIG: +OK
 *   QUIT                   +OK, then close.
 *   HELLO, anything else   -ERR unknown command (so clients stay on RESP2).
 * Requests are arrays of bulk strings (or inline commands: blank-separated
 * words on one line, as redis-benchmark's PING_INLINE sends). A malformed
 * request, a command name or key over 64 KiB, an argument over 1 GiB or an
 * inline line over 64 KiB closes the connection.
 *
 * One thread per connection, blocking sockets. Replies go out in request
 * order; small ones are batched and sent before the next blocking read, a
 * GET or GETRANGE payload goes out in one sendmsg straight from the shared
 * buffer. --threads N caps concurrent connections (0, the default: no cap);
 * one over the cap gets "-ERR max number of clients reached" and is closed,
 * as Redis does.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "cli_args.h"

#define RBUF_SIZE ((size_t)1 << 20)    /* reads, and the scratch SET payloads go to */
#define OBUF_SIZE ((size_t)256 << 10)  /* batched small replies */
#define MAX_KEPT_ARG ((size_t)64 << 10) /* command name, key, third and fourth arguments */
#define MAX_BULK ((uint64_t)1 << 30)   /* any argument */
#define MAX_ARGS 1048576L
#define KEPT_ARGS 4                    /* arguments stored; the rest are skipped */
#define MAX_LINE 24                    /* "*N\r\n", "$N\r\n" */
#define MAX_VALUE ((uint64_t)1 << 30)
#define MAX_STRIPES 256                /* what lmcache_redis accepts */
#define STRIPE_HDR 32
#define STRIPE_VERSION 2
#define SET_ID 1

static struct {
  uint64_t value_size;
  uint32_t stripes;        /* parts of S; 0: the value verbatim */
  unsigned char *payload;  /* S */
  uint64_t stored_len;     /* |S| */
  long max_conns;
  int drop_in_kernel;
  int listen_fd;
  int wake[2]; /* the signal thread writes here to stop the accept loop */
  atomic_int stop;
  pthread_mutex_t mu; /* guards conns, nconns */
  pthread_cond_t idle;
  struct conn *conns;
  long nconns;
  /* totals, added as connections end */
  atomic_ullong n_conns, n_gets, n_ranges, n_sets, n_other, bytes_out, bytes_in;
} g = {.value_size = (uint64_t)4 << 20, .listen_fd = -1, .wake = {-1, -1},
       .mu = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER};

enum { ST_ARRAY_LINE, ST_BULK_LINE, ST_BULK_DATA, ST_BULK_CRLF, ST_INLINE };

typedef struct conn {
  int fd;
  struct conn *prev, *next;
  unsigned char *rbuf;
  size_t rpos, rlen;
  unsigned char *out;
  size_t out_len;
  /* parser */
  int state;
  char line[MAX_LINE];
  size_t line_len;
  long nargs, argi;
  uint64_t bulk_left;
  int crlf_seen;
  int keep;
  unsigned char *arg[KEPT_ARGS];
  size_t arg_len[KEPT_ARGS];
  int kept[KEPT_ARGS];
  unsigned char *inl; /* an inline command's line */
  size_t inl_len;
  int quit;
  unsigned long long gets, ranges, sets, other, bytes_out, bytes_in;
} conn;

static void usage(FILE *f) {
  fprintf(f,
          "usage: lmr_null_server [--port N] [--bind ADDR] [--value-size BYTES]\n"
          "                       [--stripes C] [--threads N] [--drop-in-kernel]\n"
          "  --port N          TCP port; 0 (default) picks a free one\n"
          "  --bind ADDR       address to listen on (default 127.0.0.1)\n"
          "  --value-size B    logical value size L (default 4M; K/M/G suffixes\n"
          "                    are binary; at most 1G)\n"
          "  --stripes C       every key holds the value of L bytes as lmcache_redis\n"
          "                    stores it in C parts (stored format 2: header, part,\n"
          "                    ..., L + 32 C bytes); 0 or 1, the default: verbatim\n"
          "  --threads N       serve at most N connections at once (0: no cap)\n"
          "  --drop-in-kernel  discard SET payloads with recv(MSG_TRUNC), which\n"
          "                    skips the copy out of the socket (default: recv into\n"
          "                    a 1 MiB scratch buffer, as a real server must)\n"
          "Answers EXISTS, STRLEN, GETRANGE and GET from that string, drops SET and\n"
          "PSETEX values. Prints \"PORT <n>\" once listening; runs until SIGTERM/SIGINT.\n");
}



static uint64_t stripe_len(uint64_t total, uint32_t count, uint32_t i) {
  return total / count + (i < total % count ? 1 : 0);
}

static uint64_t stripe_off(uint64_t total, uint32_t count, uint32_t i) {
  uint64_t base = total / count, rem = total % count;
  return (uint64_t)i * base + (i < rem ? i : rem);
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
  for (int k = 0; k < bytes; k++) p[k] = (unsigned char)(v >> (8 * k));
}

/* hdr(i) of csrc/stripe.h (format 2). */
static void stripe_hdr(unsigned char out[STRIPE_HDR], uint32_t i) {
  memcpy(out, "\x89LMR", 4);
  put_le(out + 4, STRIPE_VERSION, 2);
  put_le(out + 6, STRIPE_HDR, 2);  /* header size */
  put_le(out + 8, i, 4);
  put_le(out + 12, g.stripes, 4);
  put_le(out + 16, g.value_size, 8);
  put_le(out + 24, SET_ID, 8);
}

/* A whole decimal integer argument (as Redis's string2ll: no sign but '-',
 * no blanks, no leading zeros). */
static int arg_int(const unsigned char *p, size_t n, long long *v) {
  if (n == 0 || n > 20) return -1;
  char text[24];
  memcpy(text, p, n);
  text[n] = '\0';
  if (!(text[0] == '-' ? n > 1 && text[1] >= '1' && text[1] <= '9'
                       : text[0] >= '0' && text[0] <= '9' && (n == 1 || text[0] != '0')))
    return -1;
  errno = 0;
  char *end;
  *v = strtoll(text, &end, 10);
  return errno == 0 && *end == '\0' ? 0 : -1;
}

/* ---- sending ---- */

static int send_all(conn *c, struct iovec *iov, int cnt) {
  while (cnt > 0) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
    ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    c->bytes_out += (unsigned long long)n;
    size_t left = (size_t)n;
    while (cnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = (char *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

static int flush_out(conn *c) {
  if (c->out_len == 0) return 0;
  struct iovec iov = {c->out, c->out_len};
  c->out_len = 0;
  return send_all(c, &iov, 1);
}

static int out_add(conn *c, const void *p, size_t n) {
  if (c->out_len + n > OBUF_SIZE && flush_out(c) < 0) return -1;
  memcpy(c->out + c->out_len, p, n);
  c->out_len += n;
  return 0;
}

static int out_str(conn *c, const char *s) { return out_add(c, s, strlen(s)); }

static int out_bulk(conn *c, const void *p, size_t n) {
  char hdr[32];
  int k = snprintf(hdr, sizeof hdr, "$%zu\r\n", n);
  if (out_add(c, hdr, (size_t)k) < 0 || out_add(c, p, n) < 0) return -1;
  return out_add(c, "\r\n", 2);
}

/* Batched replies, then the bulk header, the payload from the pre-touched
 * buffer and the CRLF: one sendmsg unless it is cut. */
static int reply_payload(conn *c, uint64_t len, const unsigned char *data) {
  char head[32];
  int k = snprintf(head, sizeof head, "$%llu\r\n", (unsigned long long)len);
  if (out_add(c, head, (size_t)k) < 0) return -1;
  struct iovec iov[3] = {{c->out, c->out_len},
                         {(void *)data, (size_t)len},
                         {(void *)"\r\n", 2}};
  c->out_len = 0;
  return send_all(c, iov, 3);
}

/* ---- commands ---- */

static int cmd_is(const conn *c, const char *name) {
  size_t n = strlen(name);
  return c->arg_len[0] == n && strncasecmp((const char *)c->arg[0], name, n) == 0;
}

/* GETRANGE K a b over S, with t_string.c's arithmetic. */
static int reply_getrange(conn *c) {
  static const char not_int[] = "-ERR value is not an integer or out of range\r\n";
  long long start, end, n = (long long)g.stored_len;
  c->ranges++;
  if (!c->kept[2] || !c->kept[3] || arg_int(c->arg[2], c->arg_len[2], &start) < 0 ||
      arg_int(c->arg[3], c->arg_len[3], &end) < 0)
    return out_str(c, not_int);
  if (start < 0 && end < 0 && start > end) return out_str(c, "$0\r\n\r\n");
  if (start < 0) start = n + start;
  if (end < 0) end = n + end;
  if (start < 0) start = 0;
  if (end < 0) end = 0;
  if (end >= n) end = n - 1;
  if (n == 0 || start > end) return out_str(c, "$0\r\n\r\n");
  return reply_payload(c, (uint64_t)(end - start + 1), g.payload + start);
}

static int execute(conn *c) {
  static const char wrong_args[] = "-ERR wrong number of arguments\r\n";
  long n = c->nargs;
  char num[32];
  if (cmd_is(c, "GETRANGE")) return n == 4 ? reply_getrange(c) : out_str(c, wrong_args);
  if (cmd_is(c, "GET")) {
    c->gets++;
    return n == 2 ? reply_payload(c, g.stored_len, g.payload) : out_str(c, wrong_args);
  }
  if (cmd_is(c, "SET") || cmd_is(c, "PSETEX")) {
    c->sets++;
    return out_str(c, n >= 3 + cmd_is(c, "PSETEX") ? "+OK\r\n" : wrong_args);
  }
  c->other++;
  if (cmd_is(c, "EXISTS")) {
    if (n < 2) return out_str(c, wrong_args);
    snprintf(num, sizeof num, ":%ld\r\n", n - 1);
    return out_str(c, num);
  }
  if (cmd_is(c, "STRLEN")) {
    if (n != 2) return out_str(c, wrong_args);
    snprintf(num, sizeof num, ":%llu\r\n", (unsigned long long)g.stored_len);
    return out_str(c, num);
  }
  if (cmd_is(c, "DEL") || cmd_is(c, "UNLINK"))
    return out_str(c, n >= 2 ? ":0\r\n" : wrong_args);
  if (cmd_is(c, "PING")) {
    if (n == 1) return out_str(c, "+PONG\r\n");
    if (n == 2) return out_bulk(c, c->arg[1], c->arg_len[1]);
    return out_str(c, wrong_args);
  }
  if (cmd_is(c, "CONFIG")) {
    if (n == 3 && c->arg_len[1] == 3 && strncasecmp((const char *)c->arg[1], "GET", 3) == 0 &&
        c->kept[2]) {
      /* CONFIG GET p: [p, ""] (redis-benchmark asks for "save" and
       * "appendonly") */
      if (out_str(c, "*2\r\n") < 0 || out_bulk(c, c->arg[2], c->arg_len[2]) < 0) return -1;
      return out_str(c, "$0\r\n\r\n");
    }
    return out_str(c, "+OK\r\n");
  }
  if (cmd_is(c, "AUTH") || cmd_is(c, "SELECT") || cmd_is(c, "CLIENT"))
    return out_str(c, "+OK\r\n");
  if (cmd_is(c, "QUIT")) {
    c->quit = 1;
    return out_str(c, "+OK\r\n");
  }
  return out_str(c, "-ERR unknown command\r\n");
}

/* ---- request parsing ---- */

/* A header line "<type><digits>\r\n"; the array line may also be "*-1". */
static int parse_line(const conn *c, char type, long long *v) {
  const char *p = c->line, *end = c->line + c->line_len;
  if (c->line_len < 4 || p[0] != type || end[-2] != '\r' || end[-1] != '\n') return -1;
  p++;
  end -= 2;
  int neg = 0;
  if (*p == '-' && type == '*') {
    neg = 1;
    p++;
  }
  if (p == end || end - p > 18) return -1;
  long long x = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9') return -1;
    x = x * 10 + (*p - '0');
  }
  *v = neg ? -x : x;
  return 0;
}

/* An inline command (redis-benchmark's PING_INLINE): words separated by
 * blanks on one line of at most 64 KiB; no quoting. */
static int parse_inline(conn *c, const unsigned char *p, size_t avail) {
  const unsigned char *nl = memchr(p, '\n', avail);
  size_t take = nl != NULL ? (size_t)(nl - p) + 1 : avail;
  if (c->inl_len + take > MAX_KEPT_ARG) return -1;
  memcpy(c->inl + c->inl_len, p, take);
  c->inl_len += take;
  c->rpos += take;
  if (nl == NULL) return 0;
  c->state = ST_ARRAY_LINE;
  size_t end = c->inl_len - 1;
  if (end > 0 && c->inl[end - 1] == '\r') end--;
  c->nargs = 0;
  for (size_t i = 0; i < end;) {
    if (c->inl[i] == ' ' || c->inl[i] == '\t') {
      i++;
      continue;
    }
    size_t j = i;
    while (j < end && c->inl[j] != ' ' && c->inl[j] != '\t') j++;
    if (c->nargs < KEPT_ARGS) {
      memcpy(c->arg[c->nargs], c->inl + i, j - i);
      c->arg_len[c->nargs] = j - i;
      c->kept[c->nargs] = 1;
    }
    c->nargs++;
    i = j;
  }
  return c->nargs > 0 ? execute(c) : 0; /* an empty line is skipped */
}

/* Consumes rbuf[rpos, rlen), executing each command as it completes.
 * -1: malformed request or a failed send; close the connection. */
static int parse(conn *c) {
  while (c->rpos < c->rlen && !c->quit) {
    unsigned char *p = c->rbuf + c->rpos;
    size_t avail = c->rlen - c->rpos;
    if (c->state == ST_ARRAY_LINE && c->line_len == 0 && *p != '*') {
      c->state = ST_INLINE;
      c->inl_len = 0;
    }
    switch (c->state) {
      case ST_ARRAY_LINE:
      case ST_BULK_LINE: {
        unsigned char *nl = memchr(p, '\n', avail);
        size_t take = nl != NULL ? (size_t)(nl - p) + 1 : avail;
        if (c->line_len + take > MAX_LINE) return -1;
        memcpy(c->line + c->line_len, p, take);
        c->line_len += take;
        c->rpos += take;
        if (nl == NULL) return 0;
        long long v;
        int rc = parse_line(c, c->state == ST_ARRAY_LINE ? '*' : '$', &v);
        c->line_len = 0;
        if (rc < 0) return -1;
        if (c->state == ST_ARRAY_LINE) {
          if (v <= 0) continue; /* an empty array: nothing to do, as in Redis */
          if (v > MAX_ARGS) return -1;
          c->nargs = (long)v;
          c->argi = 0;
          c->state = ST_BULK_LINE;
        } else {
          if ((uint64_t)v > MAX_BULK) return -1;
          if (c->argi < 2 && (size_t)v > MAX_KEPT_ARG) return -1; /* command, key */
          c->keep = c->argi < KEPT_ARGS && (size_t)v <= MAX_KEPT_ARG;
          if (c->argi < KEPT_ARGS) {
            c->arg_len[c->argi] = (size_t)v;
            c->kept[c->argi] = c->keep;
          }
          c->bulk_left = (uint64_t)v;
          c->crlf_seen = 0;
          c->state = v > 0 ? ST_BULK_DATA : ST_BULK_CRLF;
        }
        break;
      }
      case ST_BULK_DATA: {
        size_t take = avail < c->bulk_left ? avail : (size_t)c->bulk_left;
        if (c->keep)
          memcpy(c->arg[c->argi] + (c->arg_len[c->argi] - c->bulk_left), p, take);
        else
          c->bytes_in += take; /* a SET payload (or other big argument), dropped */
        c->rpos += take;
        c->bulk_left -= take;
        if (c->bulk_left == 0) c->state = ST_BULK_CRLF;
        break;
      }
      case ST_BULK_CRLF: {
        if (*p != (c->crlf_seen == 0 ? '\r' : '\n')) return -1;
        c->rpos++;
        if (++c->crlf_seen < 2) break;
        if (++c->argi < c->nargs) {
          c->state = ST_BULK_LINE;
          break;
        }
        c->state = ST_ARRAY_LINE;
        if (execute(c) < 0) return -1;
        break;
      }
      case ST_INLINE:
        if (parse_inline(c, p, avail) < 0) return -1;
        break;
    }
  }
  return 0;
}

/* ---- connections ---- */

static void *serve(void *arg) {
  conn *c = arg;
  for (;;) {
    if (c->rpos == c->rlen) {
      /* Replies batched from this read go out before the next one blocks. */
      if (flush_out(c) < 0 || c->quit) break;
      ssize_t n;
      if (g.drop_in_kernel && c->state == ST_BULK_DATA && !c->keep) {
        /* The rest of a SET payload: recv with MSG_TRUNC discards TCP data
         * in the kernel, without copying it out. (Capped at the buffer's
         * size all the same, so nothing could write past it.) */
        size_t want = c->bulk_left < RBUF_SIZE ? (size_t)c->bulk_left : RBUF_SIZE;
        n = recv(c->fd, c->rbuf, want, MSG_TRUNC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        c->bytes_in += (unsigned long long)n;
        c->bulk_left -= (uint64_t)n;
        if (c->bulk_left == 0) c->state = ST_BULK_CRLF;
        continue;
      }
      n = recv(c->fd, c->rbuf, RBUF_SIZE, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      c->rpos = 0;
      c->rlen = (size_t)n;
    }
    if (parse(c) < 0) break;
    if (c->quit) { /* commands after QUIT are dropped */
      flush_out(c);
      break;
    }
  }

  /* Totals first: main prints them once the last connection has left. */
  atomic_fetch_add(&g.n_gets, c->gets);
  atomic_fetch_add(&g.n_ranges, c->ranges);
  atomic_fetch_add(&g.n_sets, c->sets);
  atomic_fetch_add(&g.n_other, c->other);
  atomic_fetch_add(&g.bytes_out, c->bytes_out);
  atomic_fetch_add(&g.bytes_in, c->bytes_in);
  pthread_mutex_lock(&g.mu);
  if (c->prev != NULL) c->prev->next = c->next;
  else g.conns = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  g.nconns--;
  pthread_cond_broadcast(&g.idle);
  pthread_mutex_unlock(&g.mu);
  close(c->fd);
  free(c->rbuf);
  free(c->out);
  for (int k = 0; k < KEPT_ARGS; k++) free(c->arg[k]);
  free(c->inl);
  free(c);
  return NULL;
}

static conn *conn_new(int fd) {
  conn *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->fd = fd;
  c->rbuf = malloc(RBUF_SIZE);
  c->out = malloc(OBUF_SIZE);
  c->inl = malloc(MAX_KEPT_ARG);
  int ok = c->rbuf != NULL && c->out != NULL && c->inl != NULL;
  for (int k = 0; k < KEPT_ARGS; k++) ok = ok && (c->arg[k] = malloc(MAX_KEPT_ARG)) != NULL;
  if (!ok) {
    free(c->rbuf);
    free(c->out);
    free(c->inl);
    for (int k = 0; k < KEPT_ARGS; k++) free(c->arg[k]);
    free(c);
    return NULL;
  }
  memset(c->rbuf, 0, RBUF_SIZE); /* touched now, not during the first request */
  memset(c->out, 0, OBUF_SIZE);
  return c;
}

static void refuse(int fd, const char *msg) {
  ssize_t n = send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)n;
  close(fd);
}

static void accept_one(void) {
  int fd = accept(g.listen_fd, NULL, NULL);
  if (fd < 0) {
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      struct timespec ts = {0, 10 * 1000 * 1000}; /* let connections end */
      nanosleep(&ts, NULL);
    }
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  pthread_mutex_lock(&g.mu);
  int full = g.max_conns > 0 && g.nconns >= g.max_conns;
  pthread_mutex_unlock(&g.mu);
  if (full) {
    refuse(fd, "-ERR max number of clients reached\r\n");
    return;
  }
  conn *c = conn_new(fd);
  if (c == NULL) {
    refuse(fd, "-ERR out of memory\r\n");
    return;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_mutex_lock(&g.mu);
  pthread_t t;
  int rc = pthread_create(&t, &attr, serve, c);
  if (rc == 0) {
    c->next = g.conns;
    if (g.conns != NULL) g.conns->prev = c;
    g.conns = c;
    g.nconns++;
    atomic_fetch_add(&g.n_conns, 1);
  }
  pthread_mutex_unlock(&g.mu);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    free(c->rbuf);
    free(c->out);
    free(c->inl);
    for (int k = 0; k < KEPT_ARGS; k++) free(c->arg[k]);
    free(c);
    refuse(fd, "-ERR cannot start a thread\r\n");
  }
}

/* SIGINT/SIGTERM are blocked in every thread; this one takes them. */
static void *signal_thread(void *arg) {
  sigset_t *set = arg;
  int sig;
  while (sigwait(set, &sig) != 0) {
  }
  atomic_store(&g.stop, 1);
  char b = 1;
  ssize_t n = write(g.wake[1], &b, 1);
  (void)n;
  return NULL;
}

static int listen_on(const char *bind_addr, unsigned port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res;
  char service[16];
  snprintf(service, sizeof service, "%u", port);
  int rc = getaddrinfo(bind_addr, service, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "lmr_null_server: %s: %s\n", bind_addr, gai_strerror(rc));
    return -1;
  }
  int fd = -1, err = 0;
  for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 511) == 0) break;
    err = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) fprintf(stderr, "lmr_null_server: listen on %s:%u: %s\n", bind_addr, port,
                      strerror(err));
  return fd;
}

static unsigned bound_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return 0;
}

/* The value's bytes: j % 251 at offset j, in memory touched up front. */
static unsigned char *make_value(uint64_t len) {
  size_t align = (size_t)2 << 20;
  size_t size = len == 0 ? align : ((size_t)len + align - 1) / align * align;
  void *p = NULL;
  if (posix_memalign(&p, align, size) != 0) return NULL;
#ifdef MADV_HUGEPAGE
  madvise(p, size, MADV_HUGEPAGE); /* fewer TLB misses; a hint only */
#endif
  unsigned char *b = p;
  size_t n = size < 251 ? size : 251;
  for (size_t j = 0; j < n; j++) b[j] = (unsigned char)(j % 251);
  while (n < size) { /* n stays a multiple of the period */
    size_t k = n <= size - n ? n : size - n;
    memcpy(b + n, b, k);
    n += k;
  }
  return b;
}

/* S: the value verbatim, or encoded in g.stripes parts, in memory touched
 * up front; sets g.stored_len. */
static unsigned char *make_payload(void) {
  unsigned char *value = make_value(g.value_size);
  if (value == NULL || g.stripes < 2) {
    g.stripes = 0;
    g.stored_len = g.value_size;
    return value;
  }
  g.stored_len = g.value_size + (uint64_t)g.stripes * STRIPE_HDR;
  unsigned char *s = make_value(g.stored_len); /* allocated and touched alike */
  if (s != NULL) {
    uint64_t at = 0;
    for (uint32_t i = 0; i < g.stripes; i++) {
      uint64_t len = stripe_len(g.value_size, g.stripes, i);
      stripe_hdr(s + at, i);
      memcpy(s + at + STRIPE_HDR, value + stripe_off(g.value_size, g.stripes, i), len);
      at += STRIPE_HDR + len;
    }
  }
  free(value);
  return s;
}

int main(int argc, char **argv) {
  const char *bind_addr = "127.0.0.1";
  uint64_t port = 0, stripes = 0, threads = 0;
  for (int i = 1; i < argc; i++) {
    const char *v;
    int bad = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--drop-in-kernel") == 0) {
      g.drop_in_kernel = 1;
    } else if ((v = cli_value("lmr_null_server", argc, argv, &i, "--port")) != NULL) {
      bad = cli_size(v, 65535, &port) < 0;
    } else if ((v = cli_value("lmr_null_server", argc, argv, &i, "--bind")) != NULL) {
      bind_addr = v;
    } else if ((v = cli_value("lmr_null_server", argc, argv, &i, "--value-size")) != NULL) {
      bad = cli_size(v, MAX_VALUE, &g.value_size) < 0;
    } else if ((v = cli_value("lmr_null_server", argc, argv, &i, "--stripes")) != NULL) {
      bad = cli_size(v, MAX_STRIPES, &stripes) < 0;
    } else if ((v = cli_value("lmr_null_server", argc, argv, &i, "--threads")) != NULL) {
      bad = cli_size(v, 1000000, &threads) < 0;
    } else {
      fprintf(stderr, "lmr_null_server: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "lmr_null_server: bad value '%s' for %s\n", v, argv[i - 1]);
      return 2;
    }
  }
  g.stripes = (uint32_t)stripes;
  g.max_conns = (long)threads;

  g.payload = make_payload();
  if (g.payload == NULL) {
    fprintf(stderr, "lmr_null_server: cannot allocate %llu bytes\n",
            (unsigned long long)g.value_size);
    return 1;
  }

  /* Block the stop signals before any thread starts so all inherit it. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  g.listen_fd = listen_on(bind_addr, (unsigned)port);
  if (g.listen_fd < 0) return 1;
  if (pipe(g.wake) != 0) {
    perror("lmr_null_server: pipe");
    return 1;
  }
  pthread_t sig_thread;
  if (pthread_create(&sig_thread, NULL, signal_thread, &set) != 0) {
    fprintf(stderr, "lmr_null_server: cannot start the signal thread\n");
    return 1;
  }
  printf("PORT %u\n", bound_port(g.listen_fd));
  fflush(stdout);

  while (!atomic_load(&g.stop)) {
    struct pollfd pfd[2] = {{.fd = g.listen_fd, .events = POLLIN},
                            {.fd = g.wake[0], .events = POLLIN}};
    int n = poll(pfd, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("lmr_null_server: poll");
      break;
    }
    if (pfd[1].revents != 0) break;
    if (pfd[0].revents != 0) accept_one();
  }
  close(g.listen_fd);

  /* Wake every connection thread and give them a few seconds to finish. */
  pthread_mutex_lock(&g.mu);
  for (conn *c = g.conns; c != NULL; c = c->next) shutdown(c->fd, SHUT_RDWR);
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 5;
  while (g.nconns > 0 && pthread_cond_timedwait(&g.idle, &g.mu, &deadline) == 0) {
  }
  long left = g.nconns;
  pthread_mutex_unlock(&g.mu);
  if (atomic_load(&g.stop)) pthread_join(sig_thread, NULL);

  fprintf(stderr,
          "lmr_null_server: %llu connections, %llu GET, %llu GETRANGE, %llu SET, %llu other; "
          "%llu bytes sent, %llu argument bytes dropped%s\n",
          (unsigned long long)atomic_load(&g.n_conns), (unsigned long long)atomic_load(&g.n_gets),
          (unsigned long long)atomic_load(&g.n_ranges),
          (unsigned long long)atomic_load(&g.n_sets), (unsigned long long)atomic_load(&g.n_other),
          (unsigned long long)atomic_load(&g.bytes_out),
          (unsigned long long)atomic_load(&g.bytes_in),
          left > 0 ? " (some connections still open)" : "");
  if (left > 0) return 0; /* threads still use the payload: let exit reclaim it */
  free(g.payload);
  return 0;
}
