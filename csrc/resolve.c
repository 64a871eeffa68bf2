/* Host name lookups (resolve.h).
 *
 * getaddrinfo has no timeout and cannot be interrupted: behind a dead DNS
 * server it takes tens of seconds. A name is therefore looked up on a
 * detached helper thread, while each connecting thread that wants it waits
 * on one end of a socket pair of its own until its deadline. That end is
 * published through the fd hook like a socket being connected, so a close
 * or a cancel (shutdown(2) of it) ends that wait, and only that one. When
 * done, the helper shuts down the other end of every waiter's pair.
 *
 * The lookup is refcounted: the helper, the resolver's slot, and each
 * waiter (then holder of the result) hold a reference; whoever lets go
 * last frees it, result and all. A waiter that gives up just lets go, and
 * the lookup runs on for the connects that come after: they join it
 * instead of starting helpers of their own, so the helper threads stay at
 * one per client however long the resolver stalls and however often the
 * calls retry. */
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

/* A thread waiting for a lookup: an entry of its list, on the waiter's
 * stack, linked and unlinked under the lookup's mu. */
typedef struct waiter {
  int wake_fd;          /* the end of the waiter's pair that the helper shuts down */
  struct waiter *next;
} waiter;

struct lmr__lookup {
  pthread_mutex_t mu;   /* guards refs, waiters, and done, gai and res until done */
  int refs;             /* see the top of the file */
  int done;             /* the helper has set gai and res; both are fixed from then on */
  int gai;              /* getaddrinfo's result */
  struct addrinfo *res; /* its addresses: read by every holder once done */
  waiter *waiters;      /* to wake when done */
  char port[8];
  char host[];
};

static void lookup_release(lmr__lookup *l) {
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
  lmr__lookup *l = arg;
  struct addrinfo *res = NULL;
  int gai = stream_addrinfo(0, l->host, l->port, &res);
  pthread_mutex_lock(&l->mu);
  l->gai = gai;
  l->res = res;
  l->done = 1;
  /* A waiter closes its pair only after leaving the list (under mu), so
   * these fds are open. shutdown, not close: it reaches the socket itself,
   * even where a child forked during the lookup holds copies of the fds. */
  for (waiter *w = l->waiters; w != NULL; w = w->next) shutdown(w->wake_fd, SHUT_WR);
  pthread_mutex_unlock(&l->mu);
  lookup_release(l);
  return NULL;
}

/* Starts the lookup of host on a helper thread, with w its first waiter;
 * the references: the helper's, the resolver slot's and w's. */
static int lookup_start(const char *host, const char *port, waiter *w, lmr__lookup **out,
                        lmr_error *err) {
  size_t n = strlen(host);
  lmr__lookup *l = malloc(sizeof *l + n + 1);
  if (l == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory resolving %s", host);
  pthread_mutex_init(&l->mu, NULL);
  l->refs = 3;
  l->done = 0;
  l->gai = 0;
  l->res = NULL;
  w->next = NULL;
  l->waiters = w;
  snprintf(l->port, sizeof l->port, "%s", port);
  memcpy(l->host, host, n + 1);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int e = pthread_create(&thread, &attr, lookup_main, l);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    pthread_mutex_destroy(&l->mu);
    free(l);
    return lmr__err_sys(err, LMR_ENOMEM, e, "cannot start a thread to resolve %s", host);
  }
  *out = l;
  return LMR_OK;
}

/* Adds w to the lookup of host:port in flight, or to a new one (which
 * takes the resolver's slot). *out holds a reference for w. */
static int lookup_join(lmr__resolver *r, const char *host, const char *port, waiter *w,
                       lmr__lookup **out, lmr_error *err) {
  pthread_mutex_lock(&r->mu);
  lmr__lookup *l = r->last;
  if (l != NULL) {
    pthread_mutex_lock(&l->mu);
    /* A lookup that is done is not reused: the next connect, which may
     * follow a server's move, asks afresh. */
    int join = !l->done && strcmp(l->host, host) == 0 && strcmp(l->port, port) == 0;
    if (join) {
      l->refs++;
      w->next = l->waiters;
      l->waiters = w;
    }
    pthread_mutex_unlock(&l->mu);
    if (join) {
      pthread_mutex_unlock(&r->mu);
      *out = l;
      return LMR_OK;
    }
  }
  int rc = lookup_start(host, port, w, out, err);
  if (rc == LMR_OK) {
    if (l != NULL) lookup_release(l);
    r->last = *out;
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* Takes w off l's list; says whether l is done. */
static int lookup_leave(lmr__lookup *l, waiter *w, int *gai) {
  pthread_mutex_lock(&l->mu);
  waiter **p = &l->waiters;
  while (*p != w) p = &(*p)->next;
  *p = w->next;
  int done = l->done;
  *gai = l->gai;
  pthread_mutex_unlock(&l->mu);
  return done;
}

void lmr__resolver_init(lmr__resolver *r) {
  pthread_mutex_init(&r->mu, NULL);
  r->last = NULL;
}

void lmr__resolver_destroy(lmr__resolver *r) {
  if (r->last != NULL) lookup_release(r->last);
  r->last = NULL;
  pthread_mutex_destroy(&r->mu);
}

void lmr__addrs_release(lmr__addrs *a) {
  if (a->parsed != NULL) freeaddrinfo(a->parsed);
  if (a->lookup != NULL) lookup_release(a->lookup);
  memset(a, 0, sizeof *a);
}

int lmr__resolve(lmr__resolver *r, const char *host, int port, int64_t deadline,
                 lmr__net_fd_hook hook, void *hook_ctx, lmr__addrs *out, lmr_error *err) {
  memset(out, 0, sizeof *out);
  char service[8];
  snprintf(service, sizeof service, "%d", port);
  /* An address literal is parsed, never looked up: no thread, no wait. */
  struct addrinfo *parsed = NULL;
  int gai = stream_addrinfo(AI_NUMERICHOST, host, service, &parsed);
  if (gai == 0) {
    out->list = out->parsed = parsed;
    return LMR_OK;
  }
  if (gai != EAI_NONAME)
    return lmr__err(err, LMR_ECONN, "cannot resolve %s: %s", host, gai_strerror(gai));
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    return lmr__err_sys(err, LMR_ECONN, errno, "socketpair");
  waiter w = {.wake_fd = pair[1], .next = NULL};
  lmr__lookup *l = NULL;
  int rc = lookup_join(r, host, service, &w, &l, err);
  if (rc != LMR_OK) {
    close(pair[0]);
    close(pair[1]);
    return rc;
  }
  hook(hook_ctx, pair[0]);
  char what[sizeof "resolving " + 256];
  snprintf(what, sizeof what, "resolving %s", host);
  rc = lmr__net_wait(pair[0], POLLIN, deadline, what, err);
  int done = lookup_leave(l, &w, &gai);
  hook(hook_ctx, -1);
  close(pair[0]);
  close(pair[1]);
  if (!done) {
    lookup_release(l);
    /* Woken while the helper goes on: the hook shut the wait down. */
    return rc != LMR_OK ? rc : lmr__err(err, LMR_ECONN, "resolving %s was interrupted", host);
  }
  if (gai != 0) {
    lookup_release(l);
    return lmr__err(err, LMR_ECONN, "cannot resolve %s: %s", host, gai_strerror(gai));
  }
  /* done was read under l->mu, after the helper set res: res is safe to
   * read, and stays until the last reference (this one among them) goes. */
  out->list = l->res;
  out->lookup = l;
  return LMR_OK;
}
