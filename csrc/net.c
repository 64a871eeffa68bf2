/* Sockets (net.h). Non-blocking sockets + poll give every wait a deadline:
 * a server that stalls or drips bytes cannot hold a caller past its timeout. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "net.h"

void lmr__net_endpoint(const lmr_config *cfg, char *out, size_t n) {
  if (cfg->unix_path != NULL) snprintf(out, n, "unix:%s", cfg->unix_path);
  else snprintf(out, n, "%s:%d", cfg->host, cfg->port);
}

int lmr__net_wait(int fd, short events, int64_t deadline, const char *what, lmr_error *err) {
  for (;;) {
    int64_t left_ns = deadline - lmr__now_ns();
    if (left_ns <= 0) return lmr__err(err, LMR_ETIMEDOUT, "timed out %s", what);
    struct pollfd pfd = {.fd = fd, .events = events};
    /* Round up so a sub-millisecond remainder still waits. */
    int64_t ms = (left_ns + 999999) / 1000000;
    int rc = poll(&pfd, 1, ms > INT_MAX ? INT_MAX : (int)ms);
    if (rc > 0) return LMR_OK;  /* errors and hang-ups surface in the next call */
    if (rc < 0 && errno != EINTR) return lmr__err_sys(err, LMR_ECONN, errno, "poll");
  }
}

typedef struct {
  lmr__net_fd_hook hook;
  void *ctx;
} fd_hook;

static void close_hooked(int fd, const fd_hook *h) {
  h->hook(h->ctx, -1);
  close(fd);
}

/* Whether fd was shut down for reading, as a close or a cancel does to the
 * hooked fd: how a loop that cannot wait for that in poll(2) learns of it
 * (an unconnected Unix socket polls as hung up at once). */
static int shut_down(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
  return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLRDHUP);
}

/* Longest pause between two tries of a Unix connect: also how long a close
 * may wait for the retrying connect to notice it. */
#define UNIX_RETRY_MAX_NS (16 * 1000000LL)

/* A Unix socket's connect either completes at once or fails: EAGAIN means
 * the listener's backlog is full (the server is not accepting fast enough),
 * and nothing goes on in the background as after TCP's EINPROGRESS. So it
 * is tried again, after pauses growing from 1 ms, until the deadline. */
static int connect_unix(int fd, const struct sockaddr *addr, socklen_t len, int64_t deadline,
                        const char *endpoint, lmr_error *err) {
  int64_t pause_ns = 1000000;
  while (connect(fd, addr, len) != 0) {
    if (errno != EAGAIN)
      return lmr__err_sys(err, LMR_ECONN, errno, "cannot connect to %s", endpoint);
    if (shut_down(fd))
      return lmr__err(err, LMR_ECONN, "connecting to %s was interrupted", endpoint);
    int64_t left_ns = deadline - lmr__now_ns();
    if (left_ns <= 0)
      return lmr__err(err, LMR_ETIMEDOUT,
                      "timed out connecting to %s: its listen backlog stayed full (the server "
                      "accepts no connections, or not fast enough)", endpoint);
    int64_t ns = pause_ns < left_ns ? pause_ns : left_ns;
    nanosleep(&(struct timespec){.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000}, NULL);
    if (pause_ns < UNIX_RETRY_MAX_NS) pause_ns *= 2;
  }
  return LMR_OK;
}

/* A TCP connect in progress (EINPROGRESS) completes in the background; its
 * outcome is in SO_ERROR once the socket is writable. */
static int connect_tcp(int fd, const struct sockaddr *addr, socklen_t len, int64_t deadline,
                       const char *endpoint, lmr_error *err) {
  if (connect(fd, addr, len) == 0) return LMR_OK;
  if (errno != EINPROGRESS)
    return lmr__err_sys(err, LMR_ECONN, errno, "cannot connect to %s", endpoint);
  char what[sizeof "connecting to " + 160];
  snprintf(what, sizeof what, "connecting to %s", endpoint);
  int rc = lmr__net_wait(fd, POLLOUT, deadline, what, err);
  if (rc != LMR_OK) return rc;
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
  if (soerr != 0) return lmr__err_sys(err, LMR_ECONN, soerr, "cannot connect to %s", endpoint);
  return LMR_OK;
}

static int connect_one(const struct sockaddr *addr, socklen_t len, int family,
                       int64_t deadline, const char *endpoint, const fd_hook *h, int *out,
                       lmr_error *err) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return lmr__err_sys(err, LMR_ECONN, errno, "socket");
  h->hook(h->ctx, fd);
  int rc = family == AF_UNIX ? connect_unix(fd, addr, len, deadline, endpoint, err)
                             : connect_tcp(fd, addr, len, deadline, endpoint, err);
  if (rc != LMR_OK) {
    close_hooked(fd, h);
    return rc;
  }
  if (family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  *out = fd;
  return LMR_OK;
}

int lmr__net_connect(const lmr_config *cfg, const struct addrinfo *addrs, int64_t deadline,
                     lmr__net_fd_hook hook, void *hook_ctx, int *fd, lmr_error *err) {
  fd_hook h = {hook, hook_ctx};
  char endpoint[160];
  lmr__net_endpoint(cfg, endpoint, sizeof endpoint);
  if (cfg->unix_path != NULL) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(cfg->unix_path) >= sizeof sa.sun_path)
      return lmr__err(err, LMR_EINVAL, "unix socket path is longer than %zu bytes",
                      sizeof sa.sun_path - 1);
    strcpy(sa.sun_path, cfg->unix_path);
    return connect_one((struct sockaddr *)&sa, sizeof sa, AF_UNIX, deadline, endpoint, &h, fd, err);
  }
  int rc = lmr__err(err, LMR_ECONN, "%s has no address to connect to", endpoint);
  for (const struct addrinfo *ai = addrs; ai != NULL; ai = ai->ai_next) {
    rc = connect_one(ai->ai_addr, ai->ai_addrlen, ai->ai_family, deadline, endpoint, &h, fd, err);
    if (rc == LMR_OK || rc == LMR_ETIMEDOUT) break;
  }
  return rc;
}

int lmr__net_send_all(int fd, struct iovec *iov, int iovcnt, int64_t deadline,
                      lmr_error *err) {
  while (iovcnt > 0) {
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)(iovcnt < IOV_MAX ? iovcnt : IOV_MAX);
    ssize_t k = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return lmr__err_sys(err, LMR_ECONN, errno, "send");
      int rc = lmr__net_wait(fd, POLLOUT, deadline, "sending a command", err);
      if (rc != LMR_OK) return rc;
      continue;
    }
    /* Advance past what was sent without moving any payload bytes. */
    size_t sent = (size_t)k;
    while (iovcnt > 0 && sent >= iov->iov_len) {
      sent -= iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (char *)iov->iov_base + sent;
      iov->iov_len -= sent;
    }
  }
  return LMR_OK;
}

long lmr__net_recv(int fd, void *buf, size_t n, int64_t deadline, lmr_error *err) {
  for (;;) {
    ssize_t k = recv(fd, buf, n, 0);
    if (k > 0) return (long)k;
    if (k == 0) return lmr__err(err, LMR_ECONN, "server closed the connection");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return lmr__err_sys(err, LMR_ECONN, errno, "recv");
    int rc = lmr__net_wait(fd, POLLIN, deadline, "waiting for the server's reply", err);
    if (rc != LMR_OK) return rc;
  }
}
