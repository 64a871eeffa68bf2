/* For the C tests that talk to a real redis-server: a free port, a server
 * started there (Debian's redis-server, on PATH), and a client opened once
 * it listens. Header-only (static inline: a test need not use them all):
 * each test is one executable. */
#ifndef LMR_LIVE_SERVER_H
#define LMR_LIVE_SERVER_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lmcache_redis.h"

static inline int live_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t n = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &n) != 0)
    return -1;
  close(fd);
  return ntohs(a.sin_port);
}

/* Starts redis-server on port (no persistence, quiet), with up to 8 more
 * arguments (NULL-terminated `more`, or NULL). */
static inline pid_t live_spawn_redis(int port, const char *const *more) {
  char p[16];
  snprintf(p, sizeof p, "%d", port);
  const char *argv[32] = {"redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--loglevel", "warning"};
  int argc = 11;
  for (int i = 0; more != NULL && more[i] != NULL && argc < 30; i++) argv[argc++] = more[i];
  argv[argc] = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);  /* its start-up banner is noise here */
    if (null >= 0) {
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
    }
    execvp("redis-server", (char *const *)argv);
    _exit(127);
  }
  return pid;
}

static inline pid_t live_start_redis(int port) { return live_spawn_redis(port, NULL); }

static inline void live_stop_redis(pid_t pid, int sig) {
  kill(pid, sig);
  waitpid(pid, NULL, 0);
}

/* Opens a client of cfg at host:port (127.0.0.1, or a name standing for
 * it), retrying for up to 5 s while the server starts. */
static inline int live_open(lmr_client **c, lmr_config *cfg, const char *host, int port) {
  cfg->host = host;
  cfg->port = port;
  lmr_error err;
  int rc = LMR_ECONN;
  for (int tries = 0; tries < 100 && rc != LMR_OK; tries++) {
    rc = lmr_client_open(c, cfg, &err);
    if (rc != LMR_OK) usleep(50 * 1000);
  }
  return rc;
}

/* Self-verifying values: a value of n bytes named by tag, 8-byte words
 * tag*(i+1) ^ n, so a read that mixes two writes, or lands shifted or cut,
 * cannot pass for one. */
static inline void live_fill(unsigned char *v, size_t n, uint64_t tag) {
  for (size_t i = 0; i < n; i++) v[i] = (unsigned char)((tag * (i / 8 + 1) ^ n) >> (8 * (i % 8)));
}

/* The tag a value of n bytes was made from, or 0 when it is no such value
 * (scratch: room for n bytes). */
static inline uint64_t live_tag_of(const unsigned char *v, size_t n, unsigned char *scratch) {
  if (n < 8) return 0;
  uint64_t w = 0;
  for (int k = 0; k < 8; k++) w |= (uint64_t)v[k] << (8 * k);
  uint64_t tag = w ^ n;
  live_fill(scratch, n, tag);
  return memcmp(scratch, v, n) == 0 ? tag : 0;
}

#endif
