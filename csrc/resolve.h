/* Host name lookups bounded by a deadline and cut short by the fd hook
 * (net.h), for connecting to a host given by name.
 *
 * A client keeps one lmr__resolver for all its connections: at most one
 * lookup of a name is in flight for it, and every connect that needs the
 * name while that lookup runs waits for the same one. A connect that gives
 * up (its deadline, a close, a cancel) leaves the lookup running for the
 * next, so a stalled resolver costs one helper thread per client, however
 * often the calls retry. */
#ifndef LMR_RESOLVE_H
#define LMR_RESOLVE_H

#include <netdb.h>
#include <pthread.h>
#include <stdint.h>

#include "lmcache_redis.h"
#include "net.h"

typedef struct lmr__lookup lmr__lookup;

typedef struct {
  pthread_mutex_t mu;  /* guards last */
  lmr__lookup *last;   /* the latest lookup started, running or done, or NULL;
                        * the resolver holds a reference to it */
} lmr__resolver;

void lmr__resolver_init(lmr__resolver *r);
/* Lets go of the last lookup; a helper still running frees it when done.
 * No lmr__resolve may be running on r. */
void lmr__resolver_destroy(lmr__resolver *r);

/* The addresses lmr__resolve found: read-only, valid until
 * lmr__addrs_release. */
typedef struct {
  const struct addrinfo *list;
  struct addrinfo *parsed; /* an address literal's own list, or NULL */
  lmr__lookup *lookup;     /* a name's: the shared lookup the list is in */
} lmr__addrs;

/* host's addresses for a stream socket to port, by the deadline, into
 * *out (to release with lmr__addrs_release). An address literal is parsed
 * at once. A name is looked up on a helper thread (or the lookup of it in
 * flight is joined) while this thread waits on an fd of its own, handed
 * to hook (and -1 before it is closed): shutdown(2) of that fd ends this
 * wait, and no other. */
int lmr__resolve(lmr__resolver *r, const char *host, int port, int64_t deadline,
                 lmr__net_fd_hook hook, void *hook_ctx, lmr__addrs *out, lmr_error *err);
/* Frees what *a holds (nothing after a failed lmr__resolve). */
void lmr__addrs_release(lmr__addrs *a);

#endif
