/* Host name lookups bounded by a deadline and cut short by the fd hook
 * (net.h), for connecting to a host given by name. */
#ifndef LMR_RESOLVE_H
#define LMR_RESOLVE_H

#include <netdb.h>
#include <stdint.h>

#include "lmcache_redis.h"
#include "net.h"

/* host's addresses for a stream socket to port, by the deadline; *res is
 * the caller's to freeaddrinfo. An address literal is parsed at once; a
 * name is looked up on a helper thread while this one waits on an fd that
 * it hands to hook (then -1 before closing it), so that shutdown(2) of that
 * fd ends the wait. */
int lmr__resolve(const char *host, int port, int64_t deadline, lmr__net_fd_hook hook,
                 void *hook_ctx, struct addrinfo **res, lmr_error *err);

#endif
