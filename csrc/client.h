/* The client's insides, shared by client.c (its lifecycle) and batch.c (the
 * calls, run as batches). Neither plan.c nor jobs.c sees this. */
#ifndef LMR_CLIENT_H
#define LMR_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "internal.h"
#include "pool.h"
#include "route.h"
#include "tls.h"

typedef struct lmr__sub lmr__sub;

#define LMR__READ_HINTS 64

struct lmr_client {
  lmr_config cfg;    /* its strings point at the copies below */
  char *host, *unix_path, *username, *password;
  char *tls_ca_file, *tls_cert_file, *tls_key_file, *tls_server_name;
  char *cluster_seeds;
  lmr__tls_ctx *tls; /* shared by all connections; NULL without TLS */
  lmr__router router; /* the nodes and their pools of workers */
  lmr__stats stats;
  uint64_t id_seed;
  atomic_uint_fast64_t id_next;   /* set ids (mixed with id_seed) */
  atomic_uint_fast64_t batch_next; /* batch ids: 1, 2, ... */
  atomic_int closed;
  int64_t max_bulk;  /* the server's proto-max-bulk-len, read at open */
  int max_bulk_read; /* 0: the server did not say; max_bulk is Redis's default */
  pid_t pid;         /* the workers exist only in the process that opened */
  /* Reads' guesses by buffer size (see lmr__client_read_guess): each slot
   * (cap << 16 | count << 8 | reads left to skip), relaxed atomics: a
   * stale or torn-free but outdated slot costs a round trip, never data. */
  atomic_uint_fast64_t read_hints[LMR__READ_HINTS];
  /* Submitted batches (batch.c): `cq_mu` guards both lists; `cq_cv` is
   * broadcast whenever one moves from the first to the second. */
  int event_fd;      /* readable while `done` is not empty */
  pthread_mutex_t cq_mu;
  pthread_cond_t cq_cv;
  lmr__sub *running; /* submitted, not complete */
  lmr__sub *done_head, *done_tail; /* complete, not drained (oldest first) */
};

/* LMR_OK, or LMR_ECLOSED (closed, or a forked child's copy) in err. */
int lmr__client_check_open(lmr_client *c, lmr_error *err);
/* 0 in a forked child: the pool's threads and batches are the parent's. */
int lmr__client_in_opening_process(const lmr_client *c);
/* A new write id: distinct for every write of every client. */
uint64_t lmr__client_set_id(lmr_client *c);
/* Parts for a value of len bytes: the fixed count, or as stripe.h's
 * lmr_stripe_count chooses for stripe_size. */
uint32_t lmr__client_stripes_for(const lmr_client *c, uint64_t len);

/* The part count to guess for a read into a buffer of cap bytes (plan.h):
 * what this client would write for a value of that size, unless reads of
 * that size found otherwise lately; 0: read from HEAD, no guess. */
uint32_t lmr__client_read_guess(lmr_client *c, uint64_t cap);
/* A read into cap bytes learned (plan.h's `learned`) how such values are
 * stored: their part count, or 0 (not as guessed: the next reads of that
 * size skip guessing for a while). */
void lmr__client_read_learned(lmr_client *c, uint64_t cap, uint32_t learned);

/* batch.c: the completions nobody drained, freed with the client. */
void lmr__batch_free_done(lmr_client *c);

#endif
