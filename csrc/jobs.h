/* Key jobs: one Redis command on one (sub-)key and the handling of its reply,
 * run by a pool worker on that worker's connection. A client call (an "op")
 * fans out into key jobs that share the op's key, buffer and deadline. */
#ifndef LMR_JOBS_H
#define LMR_JOBS_H

#include <pthread.h>

#include "pool.h"
#include "stripe.h"

typedef enum {
  LMR_JOB_SET,     /* SET (sub-)key value [PX ttl] */
  LMR_JOB_GET,     /* GET (sub-)key into the op's buffer */
  LMR_JOB_DEL,     /* DEL (sub-)key */
  LMR_JOB_EXISTS,  /* EXISTS (sub-)key */
  LMR_JOB_PROBE,   /* GETRANGE sub-key 0 31: a stripe's header only */
} lmr_job_kind;

typedef struct {
  const char *key;
  size_t key_len;
  int64_t deadline;
  /* SET */
  const unsigned char *src;
  uint64_t len;
  uint32_t count;
  uint64_t set_id;
  int64_t ttl_ms;
  /* GET: the destination, and the layout claimed by the first stripe whose
   * header arrives. Only stripes of that layout (same write) may write into
   * dst, so stripes of two different writes never overlap in it. */
  unsigned char *dst;
  size_t cap;
  pthread_mutex_t layout_mu;
  int layout_set;
  lmr_stripe_hdr layout;
} lmr_op;

typedef struct {
  lmr_job base;        /* first, so a lmr_job* is a lmr_key_job* */
  lmr_op *op;
  lmr_job_kind kind;
  int32_t stripe;      /* sub-key index, or -1 for the key itself */
  /* results */
  int nil;             /* GET/PROBE: the key does not exist */
  int torn;            /* GET: a stripe not of this format or of another write */
  int64_t integer;     /* DEL/EXISTS reply */
  uint64_t value_len;  /* GET of the key itself: the value's length */
  int hdr_valid;       /* PROBE/GET of a stripe: hdr was decoded */
  lmr_stripe_hdr hdr;
} lmr_key_job;

void lmr__op_init(lmr_op *op, const void *key, size_t key_len, double timeout);
void lmr__op_destroy(lmr_op *op);
void lmr__key_job_init(lmr_key_job *job, lmr_op *op, lmr_job_kind kind, int32_t stripe);
/* The pool's run() for key jobs; worker_state is the worker's lmr_conn. */
void lmr__key_job_run(lmr_job *job, void *worker_state);

#endif
