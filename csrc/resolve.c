/* Host name lookups (resolve.h).
 *
 * getaddrinfo has no timeout and cannot be interrupted: behind a dead DNS
 * server it takes tens of seconds. A name is therefore looked up on a
 * helper thread, while the connecting thread waits for it on one end of a
 * socket pair until the deadline. That end is published through the fd
 * hook like a socket being connected, so a close or a cancel (shutdown(2)
 * of it) ends the wait too. The helper shuts its end down when done, which
 * wakes the waiter. A waiter that gives up leaves the lookup to the
 * helper: whichever lets go last frees it, with any result in it. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "net.h"
#include "resolve.h"

typedef struct {
  pthread_mutex_t mu;       /* guards the fields up to res */
  int refs;                 /* the waiter and the helper, while each holds it */
  int done;                 /* the helper has set gai and res */
  int gai;                  /* getaddrinfo's result */
  struct addrinfo *res;     /* the lookup's until the waiter takes it */
  int wake_fd;              /* the helper's end of the pair */
  char port[8];
  char host[];
} lookup;

static void lookup_release(lookup *l) {
  pthread_mutex_lock(&l->mu);
  int last = --l->refs == 0;
  pthread_mutex_unlock(&l->mu);
  if (!last) return;
  if (l->res != NULL) freeaddrinfo(l->res);
  pthread_mutex_destroy(&l->mu);
  free(l);
}

static int stream_addrinfo(int flags, const char *host, const char *port, struct addrinfo **res) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | flags;
  return getaddrinfo(host, port, &hints, res);
}

static void *lookup_main(void *arg) {
  lookup *l = arg;
  struct addrinfo *res = NULL;
  int gai = stream_addrinfo(0, l->host, l->port, &res);
  pthread_mutex_lock(&l->mu);
  l->gai = gai;
  l->res = res;
  l->done = 1;
  pthread_mutex_unlock(&l->mu);
  /* shutdown, not just close: a child forked meanwhile holds a copy of
   * wake_fd, so the close would not be the last and no EOF would come. */
  shutdown(l->wake_fd, SHUT_WR);
  close(l->wake_fd);
  lookup_release(l);
  return NULL;
}

/* Starts the lookup of host on a helper thread; *wait_fd becomes readable
 * when it is done. */
static int lookup_start(const char *host, const char *port, lookup **out, int *wait_fd,
                        lmr_error *err) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    return lmr__err_sys(err, LMR_ECONN, errno, "socketpair");
  size_t n = strlen(host);
  lookup *l = malloc(sizeof *l + n + 1);
  if (l == NULL) {
    close(pair[0]);
    close(pair[1]);
    return lmr__err(err, LMR_ENOMEM, "out of memory resolving %s", host);
  }
  pthread_mutex_init(&l->mu, NULL);
  l->refs = 2;
  l->done = 0;
  l->gai = 0;
  l->res = NULL;
  l->wake_fd = pair[1];
  snprintf(l->port, sizeof l->port, "%s", port);
  memcpy(l->host, host, n + 1);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int e = pthread_create(&thread, &attr, lookup_main, l);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    close(pair[0]);
    close(pair[1]);
    pthread_mutex_destroy(&l->mu);
    free(l);
    return lmr__err_sys(err, LMR_ENOMEM, e, "cannot start a thread to resolve %s", host);
  }
  *out = l;
  *wait_fd = pair[0];
  return LMR_OK;
}

/* host's addresses for a stream socket to port, by the deadline. */
int lmr__resolve(const char *host, int port, int64_t deadline, lmr__net_fd_hook hook, void *hook_ctx,
                 struct addrinfo **res, lmr_error *err) {
  char service[8];
  snprintf(service, sizeof service, "%d", port);
  /* An address literal is parsed, never looked up: no thread, no wait. */
  int gai = stream_addrinfo(AI_NUMERICHOST, host, service, res);
  if (gai == EAI_NONAME) {
    lookup *l = NULL;
    int fd = -1;
    int rc = lookup_start(host, service, &l, &fd, err);
    if (rc != LMR_OK) return rc;
    hook(hook_ctx, fd);
    char what[sizeof "resolving " + 256];
    snprintf(what, sizeof what, "resolving %s", host);
    rc = lmr__net_wait(fd, POLLIN, deadline, what, err);
    pthread_mutex_lock(&l->mu);
    int done = l->done;
    gai = l->gai;
    if (done) {
      *res = l->res;
      l->res = NULL;
    }
    pthread_mutex_unlock(&l->mu);
    hook(hook_ctx, -1);
    close(fd);
    lookup_release(l);
    /* Woken while the helper goes on: the hook shut the wait down. */
    if (!done)
      return rc != LMR_OK ? rc : lmr__err(err, LMR_ECONN, "resolving %s was interrupted", host);
  }
  if (gai != 0) return lmr__err(err, LMR_ECONN, "cannot resolve %s: %s", host, gai_strerror(gai));
  return LMR_OK;
}
