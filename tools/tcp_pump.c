/*
 * lmr_tcp_pump: the raw loopback transport limit. K sender/receiver thread
 * pairs move --bytes in total (split evenly) over K loopback TCP connections
 * (or Unix socket pairs with --unix); each sender send()s --chunk bytes at a
 * time from a pre-touched buffer, each receiver recv()s into one. The clock
 * runs from the first sender passing the start barrier (all buffers touched,
 * all sockets connected) to the last byte received.
 *
 * By default each receiver reuses one --chunk-sized buffer, which stays in
 * the CPU cache: the transport alone. A client that lands values in memory
 * cannot do that: --recv-span S makes each receiver walk through a
 * pre-touched S-byte area instead (S = the value size), so the copy out of
 * the kernel writes to memory as a client's does.
 *
 *   lmr_tcp_pump [--bytes N] [--chunk BYTES] [--recv-span BYTES] [--streams K]
 *                [--unix] [--json]
 *
 * Sizes take binary suffixes (K/KiB, M/MiB, G/GiB). Rates are reported in
 * GB/s (1e9 bytes/s) and GiB/s; cpu_seconds is the process's user + system
 * CPU time over the run (up to 2 x streams x seconds: it shows how much of
 * the machine the copy loop took).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli_args.h"

#define MAX_STREAMS 256
#define MAX_CHUNK ((uint64_t)1 << 30)

typedef struct {
  int fd;
  uint64_t bytes;   /* to send, or received */
  size_t chunk;
  size_t span;      /* receiver: size of the area it walks through */
  double begin;     /* sender: when it passed the start barrier */
  double end;       /* receiver: when its last byte arrived */
  const char *error;
  int err;
} side;

static pthread_barrier_t start;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static unsigned char *touched_buffer(size_t n, int fill) {
  void *p = NULL;
  if (posix_memalign(&p, 4096, n) != 0) return NULL;
  memset(p, fill, n);
  return p;
}

static void *sender(void *arg) {
  side *s = arg;
  unsigned char *buf = touched_buffer(s->chunk, 0xa5);
  pthread_barrier_wait(&start);
  s->begin = now();
  if (buf == NULL) {
    s->error = "out of memory";
    shutdown(s->fd, SHUT_WR);
    return NULL;
  }
  uint64_t left = s->bytes;
  while (left > 0) {
    size_t want = left < s->chunk ? (size_t)left : s->chunk;
    ssize_t n = send(s->fd, buf, want, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      s->error = "send";
      s->err = errno;
      break;
    }
    left -= (uint64_t)n;
  }
  shutdown(s->fd, SHUT_WR);
  free(buf);
  return NULL;
}

static void *receiver(void *arg) {
  side *s = arg;
  unsigned char *buf = touched_buffer(s->span, 0);
  pthread_barrier_wait(&start);
  if (buf == NULL) {
    s->error = "out of memory";
    s->end = now();
    return NULL;
  }
  size_t off = 0;
  for (;;) {
    size_t room = s->span - off;
    ssize_t n = recv(s->fd, buf + off, room < s->chunk ? room : s->chunk, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      s->error = "recv";
      s->err = errno;
      break;
    }
    if (n == 0) break;
    s->bytes += (uint64_t)n;
    off = (off + (size_t)n) % s->span;
  }
  s->end = now();
  free(buf);
  return NULL;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: lmr_tcp_pump [--bytes N] [--chunk BYTES] [--recv-span BYTES] [--streams K]\n"
          "                    [--unix] [--json]\n"
          "  --bytes N      total bytes over all streams (default 4G)\n"
          "  --chunk B      bytes per send()/recv() call (default 1M)\n"
          "  --recv-span S  each receiver fills an S-byte area chunk by chunk, as a\n"
          "                 client fills S-byte values (default: one chunk, cache-hot)\n"
          "  --streams K    sender/receiver thread pairs (default 1)\n"
          "  --unix         Unix socket pairs instead of loopback TCP\n"
          "  --json         one JSON object line instead of text\n"
          "Sizes take binary suffixes: K/KiB, M/MiB, G/GiB.\n");
}



static void die(const char *what) {
  fprintf(stderr, "lmr_tcp_pump: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* One connected pair: fds[0] sends, fds[1] receives. */
static void make_pair(int use_unix, int listener, const struct sockaddr_in *addr, int fds[2]) {
  if (use_unix) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) die("socketpair");
    return;
  }
  fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fds[0] < 0) die("socket");
  if (connect(fds[0], (const struct sockaddr *)addr, sizeof *addr) != 0) die("connect");
  fds[1] = accept(listener, NULL, NULL);
  if (fds[1] < 0) die("accept");
  int one = 1;
  setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int main(int argc, char **argv) {
  uint64_t total = (uint64_t)4 << 30, chunk = (uint64_t)1 << 20, streams = 1, span = 0;
  int json = 0, use_unix = 0;
  for (int i = 1; i < argc; i++) {
    const char *v;
    int bad = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (strcmp(argv[i], "--unix") == 0) {
      use_unix = 1;
    } else if ((v = cli_value("lmr_tcp_pump", argc, argv, &i, "--bytes")) != NULL) {
      bad = cli_size(v, UINT64_MAX, &total) < 0;
    } else if ((v = cli_value("lmr_tcp_pump", argc, argv, &i, "--chunk")) != NULL) {
      bad = cli_size(v, MAX_CHUNK, &chunk) < 0 || chunk == 0;
    } else if ((v = cli_value("lmr_tcp_pump", argc, argv, &i, "--recv-span")) != NULL) {
      bad = cli_size(v, MAX_CHUNK, &span) < 0 || span == 0;
    } else if ((v = cli_value("lmr_tcp_pump", argc, argv, &i, "--streams")) != NULL) {
      bad = cli_size(v, MAX_STREAMS, &streams) < 0 || streams == 0;
    } else {
      fprintf(stderr, "lmr_tcp_pump: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "lmr_tcp_pump: bad value '%s' for %s\n", v, argv[i - 1]);
      return 2;
    }
  }
  if (span == 0) span = chunk;
  signal(SIGPIPE, SIG_IGN);
  int k = (int)streams;

  int listener = -1;
  struct sockaddr_in addr = {.sin_family = AF_INET};
  if (!use_unix) {
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
    if (listen(listener, k) != 0) die("listen");
    socklen_t len = sizeof addr;
    if (getsockname(listener, (struct sockaddr *)&addr, &len) != 0) die("getsockname");
  }

  side *send_side = calloc((size_t)k, sizeof *send_side);
  side *recv_side = calloc((size_t)k, sizeof *recv_side);
  pthread_t *threads = calloc((size_t)k * 2, sizeof *threads);
  if (send_side == NULL || recv_side == NULL || threads == NULL) die("calloc");
  for (int s = 0; s < k; s++) {
    int fds[2];
    make_pair(use_unix, listener, &addr, fds);
    send_side[s] = (side){.fd = fds[0], .chunk = (size_t)chunk,
                          .bytes = total / streams + ((uint64_t)s < total % streams ? 1 : 0)};
    recv_side[s] = (side){.fd = fds[1], .chunk = (size_t)chunk, .span = (size_t)span};
  }
  if (listener >= 0) close(listener);

  pthread_barrier_init(&start, NULL, (unsigned)(2 * k + 1));
  for (int s = 0; s < k; s++) {
    errno = pthread_create(&threads[2 * s], NULL, receiver, &recv_side[s]);
    if (errno != 0) die("pthread_create");
    errno = pthread_create(&threads[2 * s + 1], NULL, sender, &send_side[s]);
    if (errno != 0) die("pthread_create");
  }
  pthread_barrier_wait(&start); /* every buffer is touched, every socket connected */
  double cpu0 = cpu_seconds();
  for (int s = 0; s < 2 * k; s++) pthread_join(threads[s], NULL);
  double cpu = cpu_seconds() - cpu0;

  double t0 = send_side[0].begin, t1 = t0;
  uint64_t moved = 0;
  int failed = 0;
  for (int s = 0; s < k; s++) {
    side *sides[2] = {&send_side[s], &recv_side[s]};
    for (int j = 0; j < 2; j++) {
      if (sides[j]->error != NULL) {
        fprintf(stderr, "lmr_tcp_pump: stream %d: %s: %s\n", s, sides[j]->error,
                strerror(sides[j]->err));
        failed = 1;
      }
    }
    if (recv_side[s].bytes != send_side[s].bytes) {
      fprintf(stderr, "lmr_tcp_pump: stream %d: received %llu of %llu bytes\n", s,
              (unsigned long long)recv_side[s].bytes, (unsigned long long)send_side[s].bytes);
      failed = 1;
    }
    moved += recv_side[s].bytes;
    if (send_side[s].begin < t0) t0 = send_side[s].begin;
    if (recv_side[s].end > t1) t1 = recv_side[s].end;
    close(send_side[s].fd);
    close(recv_side[s].fd);
  }
  if (failed) return 1;

  double secs = t1 - t0;
  double rate = secs > 0 ? (double)moved / secs : 0.0;
  const char *transport = use_unix ? "unix" : "tcp";
  if (json) {
    printf("{\"transport\":\"%s\",\"bytes\":%llu,\"seconds\":%.6f,\"gb_per_s\":%.4f,"
           "\"gib_per_s\":%.4f,\"streams\":%d,\"chunk\":%llu,\"recv_span\":%llu,"
           "\"cpu_seconds\":%.3f}\n",
           transport, (unsigned long long)moved, secs, rate / 1e9, rate / (double)(1u << 30), k,
           (unsigned long long)chunk, (unsigned long long)span, cpu);
  } else {
    printf("%s loopback, %d stream%s, %llu-byte chunks into a %llu-byte area: %llu bytes in "
           "%.3f s = %.3f GB/s (%.3f GiB/s), %.2f CPU-seconds\n",
           transport, k, k == 1 ? "" : "s", (unsigned long long)chunk, (unsigned long long)span,
           (unsigned long long)moved, secs, rate / 1e9, rate / (double)(1u << 30), cpu);
  }
  free(send_side);
  free(recv_side);
  free(threads);
  pthread_barrier_destroy(&start);
  return 0;
}
