/* Sockets: connecting with a deadline, and blocking-style send/recv on a
 * non-blocking socket bounded by an absolute deadline (lmr__now_ns clock).
 * Every function returns LMR_OK / a byte count, or a negative lmr_code with
 * err naming the failing call. None of them closes the socket. */
#ifndef LMR_NET_H
#define LMR_NET_H

#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "lmcache_redis.h"

/* Told each socket the moment it exists (fd) and before it is closed (-1),
 * so that another thread can shut a connect in progress down: shutdown(2)
 * of that fd ends the connect at once. The fd may also be one that a name
 * lookup is awaited on; shutting it down ends that wait the same way. */
typedef void (*lmr__net_fd_hook)(void *ctx, int fd);

/* Connects to cfg's Unix path, or else to the first of addrs (cfg->host's
 * addresses for cfg->port, from lmr__resolve) that takes the connection, by
 * the deadline; on success *fd is a non-blocking,
 * close-on-exec stream socket (TCP_NODELAY for TCP). A Unix socket whose
 * listen backlog is full is tried again until the deadline. */
int lmr__net_connect(const lmr_config *cfg, const struct addrinfo *addrs, int64_t deadline,
                     lmr__net_fd_hook hook, void *hook_ctx, int *fd, lmr_error *err);

/* Sends every byte of iov[0..iovcnt). The iovec array is consumed (its
 * entries are advanced in place), the bytes they point at are not touched. */
int lmr__net_send_all(int fd, struct iovec *iov, int iovcnt, int64_t deadline,
                      lmr_error *err);

/* Receives 1..n bytes into buf; the peer closing is an LMR_ECONN error. */
long lmr__net_recv(int fd, void *buf, size_t n, int64_t deadline, lmr_error *err);

/* Waits until fd is ready for poll(2) `events` or the deadline passes; the
 * timeout's message is "timed out <what>". Errors and hang-ups are left for
 * the next I/O call on fd to report. */
int lmr__net_wait(int fd, short events, int64_t deadline, const char *what, lmr_error *err);

/* Describes the endpoint ("127.0.0.1:6379" or "unix:/path") for messages. */
void lmr__net_endpoint(const lmr_config *cfg, char *out, size_t n);

#endif
