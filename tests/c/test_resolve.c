/* Name resolution with a resolver that stalls, as behind a dead DNS server:
 * a connect must give up at its connect timeout, and closing the client or
 * cancelling the call must stop the wait at once.
 *
 * This program defines its own getaddrinfo: the library (linked in
 * statically) calls it instead of libc's, which it reaches through
 * dlsym(RTLD_NEXT). Names ending in ".test" stand for 127.0.0.1, looked up
 * the long way (on the helper thread resolve.c starts for names); while
 * `stalling` is set their lookups wait, at most STALL_MAX_S, then fail
 * with EAI_AGAIN as a dead DNS server's would. Run under ASan and TSan by
 * tools/run-sanitizers: a helper left behind by a connect that gave up
 * must free its lookup, result and all. */
#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "lmcache_redis.h"
#include "live_server.h"
#include "test.h"

#define STALL_MAX_S 3
#define MS (1000 * 1000LL)

static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fake_cv = PTHREAD_COND_INITIALIZER;
static int stalling;  /* lookups of ".test" names wait while set */
static int stalled;   /* lookups waiting now */

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

static int is_test_name(const char *node) {
  size_t n = node != NULL ? strlen(node) : 0;
  return n > 5 && strcmp(node + n - 5, ".test") == 0;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
  getaddrinfo_fn real = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
  if (real == NULL) abort();
  if (!is_test_name(node)) return real(node, service, hints, res);
  if (hints != NULL && (hints->ai_flags & AI_NUMERICHOST)) return EAI_NONAME;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += STALL_MAX_S;
  int gave_up = 0;
  pthread_mutex_lock(&fake_mu);
  stalled++;
  pthread_cond_broadcast(&fake_cv);
  while (stalling && !gave_up) gave_up = pthread_cond_timedwait(&fake_cv, &fake_mu, &until) != 0;
  stalled--;
  pthread_mutex_unlock(&fake_mu);
  return gave_up ? EAI_AGAIN : real("127.0.0.1", service, hints, res);
}

static void set_stalling(int on) {
  pthread_mutex_lock(&fake_mu);
  stalling = on;
  pthread_cond_broadcast(&fake_cv);
  pthread_mutex_unlock(&fake_mu);
}

/* Waits (up to 5 s) until a lookup is stalled. */
static int wait_stalled(void) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 5;
  pthread_mutex_lock(&fake_mu);
  while (stalled == 0 && pthread_cond_timedwait(&fake_cv, &fake_mu, &until) == 0) {
  }
  int n = stalled;
  pthread_mutex_unlock(&fake_mu);
  ASSERT(n > 0);
  return 0;
}

static int thread_count(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int n = -1;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "Threads: %d", &n) == 1) break;
  if (f != NULL) fclose(f);
  return n;
}

static void *no_op(void *arg) { return arg; }

/* The threads of the program before a test, counted after a first thread
 * has come and gone: TSan's runtime starts one of its own with it. */
static int baseline_threads(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, no_op, NULL) == 0) pthread_join(t, NULL);
  return thread_count();
}

/* Waits (up to 5 s) until the helpers of lookups given up on are gone:
 * the program is back to `baseline` threads. */
static int wait_helpers_gone(int baseline) {
  for (int i = 0; i < 500 && thread_count() > baseline; i++) usleep(10 * 1000);
  ASSERT_EQ(thread_count(), baseline);
  return 0;
}

static void test_config(lmr_config *cfg, int port) {
  lmr_config_init(cfg);
  cfg->host = "redis.test";
  cfg->port = port;
  cfg->connections = 1;
  cfg->timeout = 30;
  cfg->connect_timeout = 30;
}

/* Opens a client of redis.test:port, retrying while the server starts. */
static int open_test_client(lmr_client **c, int port) {
  lmr_config cfg;
  test_config(&cfg, port);
  ASSERT_EQ(live_open(c, &cfg, cfg.host, port), LMR_OK);
  return 0;
}

TEST(stalled_lookup_times_out) {
  int baseline = baseline_threads();
  lmr_config cfg;
  test_config(&cfg, 6379);
  cfg.connections = 2;
  cfg.connect_timeout = 0.3;
  set_stalling(1);
  lmr_client *c = NULL;
  lmr_error err;
  int64_t t0 = lmr__now_ns();
  int rc = lmr_client_open(&c, &cfg, &err);
  int64_t took = lmr__now_ns() - t0;
  set_stalling(0);  /* the helpers left behind finish, with a result to free */
  ASSERT_EQ(rc, LMR_ETIMEDOUT);
  ASSERT(c == NULL);
  ASSERT(took >= 250 * MS);
  ASSERT(took < 1000 * MS);
  if (strstr(err.msg, "redis.test") == NULL) TEST_FAIL_("message without the host: %s", err.msg);
  ASSERT_EQ(wait_helpers_gone(baseline), 0);
  return 0;
}

typedef struct {
  lmr_client *c;
  int rc;
  lmr_error err;
} call;

static void *get_call(void *arg) {
  call *k = arg;
  unsigned char buf[8];
  int found;
  size_t n;
  k->rc = lmr_get(k->c, "k", 1, buf, sizeof buf, &found, &n, &k->err);
  return NULL;
}

TEST(close_stops_a_stalled_lookup) {
  int baseline = baseline_threads();
  int port = live_free_port();
  ASSERT(port > 0);
  pid_t pid = live_start_redis(port);
  ASSERT(pid > 0);
  call k = {0};
  ASSERT_EQ(open_test_client(&k.c, port), LMR_OK);
  lmr_error err;
  ASSERT_EQ(lmr_set(k.c, "k", 1, "v", 1, 0, &err), LMR_OK);
  live_stop_redis(pid, SIGKILL);  /* the next call reconnects, looking the name up */
  set_stalling(1);
  pthread_t t;
  pthread_create(&t, NULL, get_call, &k);
  ASSERT_EQ(wait_stalled(), 0);
  int64_t t0 = lmr__now_ns();
  lmr_client_close(k.c);
  int64_t took = lmr__now_ns() - t0;
  pthread_join(t, NULL);
  set_stalling(0);
  lmr_client_free(k.c);
  if (took >= 500 * MS) TEST_FAIL_("close took %lld ms", (long long)(took / MS));
  ASSERT_EQ(k.rc, LMR_ECLOSED);
  ASSERT_EQ(wait_helpers_gone(baseline), 0);
  return 0;
}

static int cancel_when_stalled(void *ctx) {
  (void)ctx;
  pthread_mutex_lock(&fake_mu);
  int n = stalled;
  pthread_mutex_unlock(&fake_mu);
  return n > 0;
}

TEST(cancel_stops_a_stalled_lookup) {
  int baseline = baseline_threads();
  int port = live_free_port();
  ASSERT(port > 0);
  pid_t pid = live_start_redis(port);
  ASSERT(pid > 0);
  lmr_client *c;
  ASSERT_EQ(open_test_client(&c, port), LMR_OK);
  lmr_error err;
  ASSERT_EQ(lmr_set(c, "k", 1, "v", 1, 0, &err), LMR_OK);
  /* A restart drops the connection; the server is back at once. */
  live_stop_redis(pid, SIGKILL);
  pid = live_start_redis(port);
  ASSERT(pid > 0);
  set_stalling(1);
  lmr_thread_set_cancel_check(cancel_when_stalled, NULL);
  unsigned char buf[8];
  int found;
  size_t n;
  int64_t t0 = lmr__now_ns();
  int rc = lmr_get(c, "k", 1, buf, sizeof buf, &found, &n, &err);
  int64_t took = lmr__now_ns() - t0;
  lmr_thread_set_cancel_check(NULL, NULL);
  set_stalling(0);
  ASSERT_EQ(rc, LMR_ECANCELED);
  if (took >= 500 * MS) TEST_FAIL_("the cancelled call took %lld ms", (long long)(took / MS));
  /* The connection is re-made for the next call: a miss on the new server
   * (retried while it starts). */
  for (int tries = 0; tries < 100; tries++) {
    rc = lmr_get(c, "k", 1, buf, sizeof buf, &found, &n, &err);
    if (rc == LMR_OK) break;
    usleep(50 * 1000);
  }
  ASSERT_EQ(rc, LMR_OK);
  ASSERT_EQ(found, 0);
  lmr_client_free(c);
  live_stop_redis(pid, SIGTERM);
  ASSERT_EQ(wait_helpers_gone(baseline), 0);
  return 0;
}

/* A lookup's waiter is woken by the helper closing its end of the socket
 * pair. A fork() while the lookup runs (multiprocessing's "fork" start
 * method, os.fork) gives the child a copy of that end: the close is then
 * not the last, no EOF reaches the waiter, and the connect waits out its
 * whole connect timeout although the name was found long before. */
TEST(a_fork_during_a_lookup_does_not_hold_the_connect) {
  int port = live_free_port();
  ASSERT(port > 0);
  pid_t pid = live_start_redis(port);
  ASSERT(pid > 0);
  lmr_config cfg;
  test_config(&cfg, port);
  cfg.connect_timeout = 2;
  call k = {0};
  ASSERT_EQ(live_open(&k.c, &cfg, cfg.host, port), LMR_OK);
  lmr_error err;
  ASSERT_EQ(lmr_set(k.c, "k", 1, "v", 1, 0, &err), LMR_OK);
  /* A restart drops the connection; the server is back at once. */
  live_stop_redis(pid, SIGKILL);
  pid = live_start_redis(port);
  ASSERT(pid > 0);
  usleep(300 * 1000);  /* it listens */
  set_stalling(1);
  pthread_t t;
  pthread_create(&t, NULL, get_call, &k);
  ASSERT_EQ(wait_stalled(), 0);
  pid_t child = fork();
  if (child == 0) {
    pause();  /* holds its copies of the process's fds, as a forked worker does */
    _exit(0);
  }
  ASSERT(child > 0);
  int64_t t0 = lmr__now_ns();
  set_stalling(0);  /* the name is found now */
  pthread_join(t, NULL);
  int64_t took = lmr__now_ns() - t0;
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  lmr_client_free(k.c);
  live_stop_redis(pid, SIGTERM);
  if (k.rc != LMR_OK || took >= 1000 * MS)
    TEST_FAIL_("the call after the lookup: rc %d after %lld ms (%s)", k.rc,
               (long long)(took / MS), k.rc != LMR_OK ? k.err.msg : "");
  return 0;
}

/* Each connect that gives up on a stalled lookup leaves its helper thread
 * behind until getaddrinfo returns (behind a dead DNS server: resolv.conf's
 * timeout x attempts x servers, 10-30 s). Calls with a short timeout that
 * keep finding the connection down start one more each: the threads grow
 * with the call rate, not with the pool, until pthread_create fails for
 * the whole process (containers often cap pids at 1024..4096). */
TEST(lookups_given_up_on_do_not_pile_up) {
  int baseline = baseline_threads();
  int port = live_free_port();
  ASSERT(port > 0);
  pid_t pid = live_start_redis(port);
  ASSERT(pid > 0);
  lmr_config cfg;
  test_config(&cfg, port);
  cfg.timeout = 0.05;
  lmr_client *c;
  ASSERT_EQ(live_open(&c, &cfg, cfg.host, port), LMR_OK);
  live_stop_redis(pid, SIGKILL);  /* every call now reconnects, looking the name up */
  set_stalling(1);
  unsigned char buf[8];
  int found;
  size_t n;
  lmr_error err;
  for (int i = 0; i < 40; i++) lmr_get(c, "k", 1, buf, sizeof buf, &found, &n, &err);
  int extra = thread_count() - baseline;
  set_stalling(0);
  lmr_client_free(c);
  ASSERT_EQ(wait_helpers_gone(baseline), 0);
  /* The pool's one worker, and at most a lookup or so for it. */
  if (extra > 3) TEST_FAIL_("%d threads beyond the program's after 40 calls", extra);
  return 0;
}

/* The connections of a client that reconnect together wait for one shared
 * lookup: one helper thread, and every waiter woken when it ends, by its
 * result or by close(). */
#define SHARED_CALLS 3

static int shared_lookup(int close_it) {
  int baseline = baseline_threads();
  int port = live_free_port();
  ASSERT(port > 0);
  pid_t pid = live_start_redis(port);
  ASSERT(pid > 0);
  lmr_config cfg;
  test_config(&cfg, port);
  cfg.connections = SHARED_CALLS;
  cfg.connect_timeout = 5;
  lmr_client *c;
  ASSERT_EQ(live_open(&c, &cfg, cfg.host, port), LMR_OK);
  live_stop_redis(pid, SIGKILL);  /* every connection reconnects, looking the name up */
  pid = live_start_redis(port);
  ASSERT(pid > 0);
  usleep(300 * 1000);  /* it listens */
  set_stalling(1);
  call k[SHARED_CALLS];
  pthread_t t[SHARED_CALLS];
  for (int i = 0; i < SHARED_CALLS; i++) {
    k[i] = (call){.c = c};
    pthread_create(&t[i], NULL, get_call, &k[i]);
  }
  ASSERT_EQ(wait_stalled(), 0);
  usleep(200 * 1000);  /* the other calls reach the lookup */
  /* The pool's workers, the callers, and one helper. */
  int extra = thread_count() - baseline;
  int64_t t0 = lmr__now_ns();
  if (close_it) lmr_client_close(c);
  else set_stalling(0);
  for (int i = 0; i < SHARED_CALLS; i++) pthread_join(t[i], NULL);
  int64_t took = lmr__now_ns() - t0;
  set_stalling(0);
  lmr_client_free(c);
  live_stop_redis(pid, SIGTERM);
  ASSERT_EQ(wait_helpers_gone(baseline), 0);
  if (extra > 2 * SHARED_CALLS + 1) TEST_FAIL_("%d threads beyond the program's", extra);
  if (took >= 500 * MS) TEST_FAIL_("the calls ended %lld ms after", (long long)(took / MS));
  for (int i = 0; i < SHARED_CALLS; i++)
    if (k[i].rc != (close_it ? LMR_ECLOSED : LMR_OK))
      TEST_FAIL_("call %d: rc %d (%s)", i, k[i].rc, k[i].err.msg);
  return 0;
}

TEST(every_waiter_of_a_shared_lookup_gets_its_result) { return shared_lookup(0); }

TEST(close_stops_every_waiter_of_a_shared_lookup) { return shared_lookup(1); }

TEST_MAIN(TEST_ENTRY(stalled_lookup_times_out), TEST_ENTRY(close_stops_a_stalled_lookup),
          TEST_ENTRY(cancel_stops_a_stalled_lookup),
          TEST_ENTRY(a_fork_during_a_lookup_does_not_hold_the_connect),
          TEST_ENTRY(lookups_given_up_on_do_not_pile_up),
          TEST_ENTRY(every_waiter_of_a_shared_lookup_gets_its_result),
          TEST_ENTRY(close_stops_every_waiter_of_a_shared_lookup))
