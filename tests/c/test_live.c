/* The client against a real redis-server that this test starts itself on a
 * free port: racing writers of different part counts and sizes and readers
 * of different buffer sizes on a few keys, over real sockets, from several
 * threads sharing clients. Every value is self-verifying, so a torn read
 * (parts of two writes) is caught; after the writers stop every reader
 * reads the same, last written value. Run under TSan by tools/run-sanitizers
 * (the stored format's reads and writes, with their pool, in one test). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "lmcache_redis.h"
#include "live_server.h"
#include "test.h"

#define KEYS 3
#define WRITERS 3
#define READERS 3
#define ROUNDS 25
#define MAX_VALUE (3u << 20)

static int open_client(lmr_client **c, int port, int stripes) {
  lmr_config cfg;
  lmr_config_init(&cfg);
  cfg.stripes = stripes;
  cfg.stripe_size = 256 * 1024;  /* several parts even for small values */
  cfg.connections = 4;
  return live_open(c, &cfg, "127.0.0.1", port);
}

typedef struct {
  lmr_client *clients[3];  /* stripes 0 (by size), 1 (verbatim), 7 */
  atomic_int writers_left;
  atomic_int torn, hits, failures;
  atomic_uint_fast64_t next_tag;
} shared_state;

static const char *const keys[KEYS] = {"live:0", "live:1", "live:2"};

static void *writer(void *arg) {
  shared_state *s = arg;
  unsigned char *v = malloc(MAX_VALUE);
  for (int r = 0; r < ROUNDS; r++) {
    uint64_t tag = atomic_fetch_add(&s->next_tag, 1) * 2 + 1;
    size_t n = 8 + (size_t)(tag * 2654435761u % (MAX_VALUE - 8));
    live_fill(v, n, tag);
    lmr_error err;
    if (lmr_set(s->clients[tag % 3], keys[tag % KEYS], 6, v, n, 0, &err) != LMR_OK)
      atomic_fetch_add(&s->failures, 1);
  }
  free(v);
  atomic_fetch_sub(&s->writers_left, 1);
  return NULL;
}

static void *reader(void *arg) {
  shared_state *s = arg;
  size_t cap = MAX_VALUE;
  unsigned char *buf = malloc(cap), *scratch = malloc(cap);
  for (int i = 0; atomic_load(&s->writers_left) > 0; i++) {
    int found = 0;
    size_t n = 0;
    lmr_error err;
    int rc = lmr_get(s->clients[i % 3], keys[i % KEYS], 6, buf, cap, &found, &n, &err);
    if (rc != LMR_OK) atomic_fetch_add(&s->failures, 1);
    else if (found && live_tag_of(buf, n, scratch) == 0) atomic_fetch_add(&s->torn, 1);
    else if (found) atomic_fetch_add(&s->hits, 1);
  }
  free(buf);
  free(scratch);
  return NULL;
}

TEST(racing_writers_and_readers) {
  int port = live_free_port();
  ASSERT(port > 0);
  pid_t pid = live_start_redis(port);
  ASSERT(pid > 0);
  shared_state s = {0};
  static const int stripes[3] = {0, 1, 7};
  ASSERT_EQ(open_client(&s.clients[0], port, stripes[0]), LMR_OK);
  for (int k = 1; k < 3; k++) ASSERT_EQ(open_client(&s.clients[k], port, stripes[k]), LMR_OK);
  atomic_init(&s.writers_left, WRITERS);
  atomic_init(&s.next_tag, 1);
  pthread_t t[WRITERS + READERS];
  for (int i = 0; i < WRITERS; i++) pthread_create(&t[i], NULL, writer, &s);
  for (int i = 0; i < READERS; i++) pthread_create(&t[WRITERS + i], NULL, reader, &s);
  for (int i = 0; i < WRITERS + READERS; i++) pthread_join(t[i], NULL);
  printf("  %d writes, %d verified hits, %d torn\n", WRITERS * ROUNDS, atomic_load(&s.hits),
         atomic_load(&s.torn));
  ASSERT_EQ(atomic_load(&s.failures), 0);
  ASSERT_EQ(atomic_load(&s.torn), 0);

  /* Quiet now: every client reads the same whole value of every key. */
  unsigned char *buf = malloc(MAX_VALUE), *scratch = malloc(MAX_VALUE);
  for (int k = 0; k < KEYS; k++) {
    uint64_t seen = 0;
    for (int c = 0; c < 3; c++) {
      int found = 0;
      size_t n = 0;
      lmr_error err;
      ASSERT_EQ(lmr_get(s.clients[c], keys[k], 6, buf, MAX_VALUE, &found, &n, &err), LMR_OK);
      ASSERT_EQ(found, 1);
      uint64_t tag = live_tag_of(buf, n, scratch);
      ASSERT_NE(tag, 0);
      if (c == 0) seen = tag;
      ASSERT_EQ(tag, seen);
    }
  }
  free(buf);
  free(scratch);
  for (int k = 0; k < 3; k++) lmr_client_free(s.clients[k]);
  live_stop_redis(pid, SIGTERM);
  return 0;
}

TEST_MAIN(TEST_ENTRY(racing_writers_and_readers))
