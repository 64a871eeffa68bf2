/* The client's insides, shared by client.c (its lifecycle) and batch.c (the
 * calls, run as batches). Neither plan.c nor jobs.c sees this. */
#ifndef LMR_CLIENT_H
#define LMR_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "internal.h"
#include "pool.h"
#include "resolve.h"
#include "tls.h"

typedef struct lmr__sub lmr__sub;

struct lmr_client {
  lmr_config cfg;    /* its strings point at the copies below */
  char *host, *unix_path, *username, *password;
  char *tls_ca_file, *tls_cert_file, *tls_key_file, *tls_server_name;
  lmr__tls_ctx *tls; /* shared by all connections; NULL without TLS */
  lmr__resolver resolver; /* shared by all connections: one lookup of host at a time */
  lmr_pool *pool;
  lmr__stats stats;
  uint64_t id_seed;
  atomic_uint_fast64_t id_next;   /* set ids (mixed with id_seed) */
  atomic_uint_fast64_t batch_next; /* batch ids: 1, 2, ... */
  atomic_int closed;
  int64_t max_bulk;  /* the server's proto-max-bulk-len, read at open */
  int max_bulk_read; /* 0: the server did not say; max_bulk is Redis's default */
  pid_t pid;         /* the workers exist only in the process that opened */
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

/* batch.c: the completions nobody drained, freed with the client. */
void lmr__batch_free_done(lmr_client *c);

#endif
