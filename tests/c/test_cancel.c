/* Cancelling a call (lmr_thread_set_cancel_check, lmr_pool_cancel) over
 * real sockets, against a local server that completes the handshake and
 * then never answers a data command: the call must end soon after its
 * cancel check asks, with LMR_ECANCELED; the connections it was using are
 * dropped and re-made, and the client goes on working. The pool's part
 * (queued jobs never run, running ones told, other batches untouched) is
 * checked without sockets. Run under TSan by tools/run-sanitizers. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "pool.h"
#include "test.h"

/* ---- a server that answers PING and CONFIG, and stalls on the rest ---- */

#define MAX_CONNS 16

typedef struct {
  int listen_fd;
  int port;
  int wake[2];  /* a byte here stops the server thread */
  pthread_t thread;
  atomic_int data_commands;  /* reads that got no answer */
} stall_server;

static void *serve(void *arg) {
  stall_server *s = arg;
  struct pollfd fds[2 + MAX_CONNS];
  int n = 2;
  fds[0] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
  fds[1] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
  for (;;) {
    if (poll(fds, (nfds_t)n, -1) < 0) continue;
    if (fds[1].revents) break;
    if ((fds[0].revents & POLLIN) && n < 2 + MAX_CONNS) {
      int fd = accept(s->listen_fd, NULL, NULL);
      if (fd >= 0) fds[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    for (int i = 2; i < n; i++) {
      if (!fds[i].revents) continue;
      char buf[4096];
      ssize_t k = read(fds[i].fd, buf, sizeof buf - 1);
      if (k <= 0) {  /* the client hung up (a cancel shuts it down) */
        close(fds[i].fd);
        fds[i--] = fds[--n];
        continue;
      }
      buf[k] = '\0';
      /* Each handshake command comes alone, awaiting its reply. */
      if (strstr(buf, "PING") != NULL) {
        if (write(fds[i].fd, "+PONG\r\n", 7) != 7) abort();
      } else if (strstr(buf, "CONFIG") != NULL) {
        if (write(fds[i].fd, "-ERR no CONFIG here\r\n", 21) != 21) abort();
      } else {
        atomic_fetch_add(&s->data_commands, 1);
      }
    }
  }
  for (int i = 2; i < n; i++) close(fds[i].fd);
  return NULL;
}

static int server_start(stall_server *s) {
  memset(s, 0, sizeof *s);
  s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT(s->listen_fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  ASSERT_EQ(bind(s->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
  ASSERT_EQ(listen(s->listen_fd, 16), 0);
  ASSERT_EQ(getsockname(s->listen_fd, (struct sockaddr *)&a, &len), 0);
  s->port = ntohs(a.sin_port);
  ASSERT_EQ(pipe(s->wake), 0);
  ASSERT_EQ(pthread_create(&s->thread, NULL, serve, s), 0);
  return 0;
}

static void server_stop(stall_server *s) {
  if (write(s->wake[1], "x", 1) != 1) abort();
  pthread_join(s->thread, NULL);
  close(s->listen_fd);
  close(s->wake[0]);
  close(s->wake[1]);
}

static int open_client(lmr_client **c, const stall_server *s, int connections) {
  lmr_config cfg;
  lmr_config_init(&cfg);
  cfg.host = "127.0.0.1";
  cfg.port = s->port;
  cfg.connections = connections;
  cfg.timeout = 20.0;  /* far beyond the test's bound: only a cancel ends the call */
  lmr_error err;
  int rc = lmr_client_open(c, &cfg, &err);
  if (rc != LMR_OK) fprintf(stderr, "  open: %s\n", err.msg);
  ASSERT_EQ(rc, LMR_OK);
  return 0;
}

/* A cancel check that asks once `after_ns` have passed since `start`. */
typedef struct {
  int64_t start, after_ns, asked_at;
  int calls;
} cancel_after;

static int check_after(void *arg) {
  cancel_after *a = arg;
  a->calls++;
  int64_t now = lmr__now_ns();
  if (now - a->start < a->after_ns) return 0;
  a->asked_at = now;
  return 1;
}

static int check_never(void *arg) {
  (*(int *)arg)++;
  return 0;
}

TEST(cancel_a_stalled_get) {
  stall_server s;
  ASSERT_EQ(server_start(&s), 0);
  lmr_client *c;
  /* One connection: the PINGs below must use the one that was cancelled. */
  ASSERT_EQ(open_client(&c, &s, 1), 0);
  cancel_after a = {.start = lmr__now_ns(), .after_ns = 200 * 1000000LL};
  lmr_thread_set_cancel_check(check_after, &a);
  unsigned char buf[1024];
  int found = 7;
  size_t len = 7;
  lmr_error err;
  ASSERT_EQ(lmr_get(c, "k", 1, buf, sizeof buf, &found, &len, &err), LMR_ECANCELED);
  int64_t after_ask = lmr__now_ns() - a.asked_at;
  ASSERT_EQ(err.code, LMR_ECANCELED);
  ASSERT_EQ(found, 0);
  ASSERT(a.calls >= 2);  /* every LMR_CANCEL_POLL_MS until it asked */
  ASSERT(after_ask < 3000 * 1000000LL);  /* cancelled, not timed out (loose: TSan, 2 cores) */
  ASSERT(atomic_load(&s.data_commands) >= 1);
  lmr_thread_set_cancel_check(NULL, NULL);

  /* The stalled connection was dropped: PING (answered) works, on a
   * connection made again where needed. */
  for (int i = 0; i < 4; i++) ASSERT_EQ(lmr_ping(c, &err), LMR_OK);
  lmr_stats st;
  lmr_client_stats(c, &st);
  ASSERT(st.reconnects >= 1);
  lmr_client_free(c);
  server_stop(&s);
  return 0;
}

TEST(cancel_a_stalled_set_and_exists) {
  stall_server s;
  ASSERT_EQ(server_start(&s), 0);
  lmr_client *c;
  ASSERT_EQ(open_client(&c, &s, 4), 0);
  static unsigned char value[1 << 20];
  lmr_error err;
  for (int round = 0; round < 3; round++) {
    cancel_after a = {.start = lmr__now_ns(), .after_ns = 60 * 1000000LL};
    lmr_thread_set_cancel_check(check_after, &a);
    ASSERT_EQ(lmr_set(c, "k", 1, value, sizeof value, 0, &err), LMR_ECANCELED);
    a.start = lmr__now_ns();
    int found;
    ASSERT_EQ(lmr_exists(c, "k", 1, &found, &err), LMR_ECANCELED);
  }
  lmr_thread_set_cancel_check(NULL, NULL);
  ASSERT_EQ(lmr_ping(c, &err), LMR_OK);
  lmr_client_free(c);
  server_stop(&s);
  return 0;
}

/* A check that never asks changes nothing; the setting is per thread. */
static void *ping_without_check(void *arg) {
  lmr_error err;
  intptr_t rc = lmr_ping(arg, &err);
  return (void *)rc;
}

TEST(check_that_never_asks) {
  stall_server s;
  ASSERT_EQ(server_start(&s), 0);
  lmr_client *c;
  ASSERT_EQ(open_client(&c, &s, 2), 0);
  int calls = 0;
  lmr_thread_set_cancel_check(check_never, &calls);
  lmr_error err;
  for (int i = 0; i < 10; i++) ASSERT_EQ(lmr_ping(c, &err), LMR_OK);
  pthread_t t;
  void *rc;
  ASSERT_EQ(pthread_create(&t, NULL, ping_without_check, c), 0);
  pthread_join(t, &rc);
  ASSERT_EQ((intptr_t)rc, LMR_OK);
  lmr_thread_set_cancel_check(NULL, NULL);
  lmr_client_free(c);
  server_stop(&s);
  return 0;
}

/* Closing the client while a cancelled call waits still ends both. */
typedef struct {
  lmr_client *c;
  int rc;
} get_arg;

static int check_soon(void *arg) {
  (void)arg;
  return 1;
}

static void *get_then_cancel(void *argp) {
  get_arg *arg = argp;
  lmr_thread_set_cancel_check(check_soon, NULL);
  unsigned char buf[64];
  int found;
  size_t len;
  lmr_error err;
  arg->rc = lmr_get(arg->c, "k", 1, buf, sizeof buf, &found, &len, &err);
  return NULL;
}

TEST(cancel_races_close) {
  stall_server s;
  ASSERT_EQ(server_start(&s), 0);
  for (int i = 0; i < 5; i++) {
    lmr_client *c;
    ASSERT_EQ(open_client(&c, &s, 2), 0);
    get_arg arg = {c, 0};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, get_then_cancel, &arg), 0);
    usleep((useconds_t)(i * 20000));
    lmr_client_close(c);
    pthread_join(t, NULL);
    ASSERT(arg.rc == LMR_ECANCELED || arg.rc == LMR_ECLOSED);
    lmr_client_free(c);
  }
  server_stop(&s);
  return 0;
}

/* ---- the pool alone ---- */

typedef struct {
  lmr_job base;
  atomic_int ran;
  atomic_int *gate;  /* blocking jobs wait until it opens or they are cancelled */
} test_job;

static void run_blocking(lmr_job *job, void *state) {
  (void)state;
  test_job *j = (test_job *)job;
  atomic_store(&j->ran, 1);
  while (!atomic_load(&job->cancelled) && !atomic_load(j->gate)) usleep(1000);
  job->status = atomic_load(&job->cancelled) ? LMR_ECANCELED : LMR_OK;
}

static void run_quick(lmr_job *job, void *state) {
  (void)state;
  atomic_store(&((test_job *)job)->ran, 1);
  job->status = LMR_OK;
}

static atomic_int cancels;

static int p_state;

static int p_init(void *ctx, int index, void **state, lmr_error *err) {
  (void)ctx, (void)index, (void)err;
  *state = &p_state;
  return LMR_OK;
}

static void p_cancel(void *ctx, void *state) {
  (void)ctx, (void)state;
  atomic_fetch_add(&cancels, 1);
}

TEST(pool_cancel) {
  lmr_pool *p;
  lmr_error err;
  lmr_pool_config cfg = {.workers = 1, .worker_init = p_init, .worker_cancel = p_cancel};
  ASSERT_EQ(lmr_pool_create(&p, &cfg, &err), LMR_OK);
  atomic_int gate = 0;
  test_job jobs[4], other;
  lmr_job *ptrs[4];
  for (int i = 0; i < 4; i++) {
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].base.run = i == 0 ? run_blocking : run_quick;
    jobs[i].gate = &gate;
    ptrs[i] = &jobs[i].base;
  }
  memset(&other, 0, sizeof other);
  other.base.run = run_quick;
  lmr_job *optr = &other.base;
  lmr_group b, ob;
  lmr_group_init(&b, 1, NULL);
  lmr_group_init(&ob, 2, NULL);
  lmr_pool_run_group(p, &b, ptrs, 4);
  lmr_pool_run_group(p, &ob, &optr, 1);
  while (!atomic_load(&jobs[0].ran)) usleep(1000);
  ASSERT_EQ(lmr_group_wait_for(&b, 20 * 1000000LL), 0);  /* job 0 blocks */
  lmr_pool_cancel(p, 1);
  lmr_group_wait(&b);
  ASSERT_EQ(atomic_load(&cancels), 1);  /* the one running job's worker */
  ASSERT_EQ(jobs[0].base.status, LMR_ECANCELED);
  for (int i = 1; i < 4; i++) {
    ASSERT_EQ(atomic_load(&jobs[i].ran), 0);
    ASSERT_EQ(jobs[i].base.status, LMR_ECANCELED);
  }
  lmr_group_wait(&ob);  /* another batch's job still runs */
  ASSERT_EQ(atomic_load(&other.ran), 1);
  ASSERT_EQ(other.base.status, LMR_OK);
  ASSERT_EQ(lmr_group_wait_for(&ob, 0), 1);
  lmr_group_destroy(&b);
  lmr_group_destroy(&ob);
  lmr_pool_free(p);
  return 0;
}

TEST_MAIN(TEST_ENTRY(pool_cancel), TEST_ENTRY(cancel_a_stalled_get),
          TEST_ENTRY(cancel_a_stalled_set_and_exists), TEST_ENTRY(check_that_never_asks),
          TEST_ENTRY(cancel_races_close))
