/* Key jobs: a few Redis commands on one key, sent together on one
 * connection, and the handling of their replies, run by a pool worker. A
 * client call (an "op") fans out into key jobs that share the op's key,
 * buffer and deadline; plan.c decides which jobs and reads their results.
 *
 * A job records what the server said (its result fields) and fails (status
 * != LMR_OK) only when the connection or the server failed; what the data
 * means (a miss, a value replaced meanwhile) is the plan's to decide. */
#ifndef LMR_JOBS_H
#define LMR_JOBS_H

#include "pool.h"
#include "stripe.h"

typedef enum {
  LMR_JOB_SET,     /* SET key value, or PSETEX key ms value: verbatim or encoded */
  LMR_JOB_HEAD,    /* STRLEN key; GETRANGE key 0 head_len (head_len + 1 bytes) */
  LMR_JOB_PART,    /* GETRANGE of part `part` of op->layout, into its place */
  LMR_JOB_GET,     /* GET key into the op's buffer (a verbatim value) */
  LMR_JOB_DEL,     /* DEL key; with swap, GETDEL key (what it deleted kept) */
  LMR_JOB_CONFIG,  /* CONFIG GET <key>: a numeric server setting */
  LMR_JOB_PING,    /* PING (no key): the server answers +PONG */
} lmr_job_kind;

/* Bytes of a value the first round of a read fetches at most. */
#define LMR_HEAD_MAX (64u * 1024u)
/* Most value bytes a job may move and still be pipelined with others. */
#define LMR_PIPELINE_BYTES (64u * 1024u)

typedef struct {
  const char *key;
  size_t key_len;
  int64_t deadline;
  int64_t max_bulk;         /* the server's proto-max-bulk-len */
  int max_bulk_read;        /* 0: the server did not say, max_bulk is assumed */
  /* SET: the value, and for an encoded one its headers (count of them) */
  const unsigned char *src;
  uint64_t len;
  int64_t ttl_ms;
  uint32_t count;           /* parts; 0: verbatim */
  const unsigned char *hdrs;
  /* reads: the caller's buffer, and the layout its PART jobs read */
  unsigned char *dst;
  size_t cap;
  size_t head_len;          /* HEAD: the first bytes a read looks at */
  lmr_stripe_hdr layout;
  int layout_guessed;       /* layout is a guess with no write id: each PART
                               takes any, and records the one it saw */
  int split;                /* a cluster's: parts >= 1 under part keys (stripe.h) */
} lmr_op;

/* What a cluster node answered instead of running a job's command. */
typedef enum {
  LMR_REDIRECT_NONE,
  LMR_REDIRECT_MOVED,  /* the slot lives elsewhere now: ask there, and remap */
  LMR_REDIRECT_ASK,    /* the key is being migrated: ask there once (ASKING) */
  LMR_REDIRECT_RETRY,  /* TRYAGAIN, CLUSTERDOWN: the same again, a moment later */
} lmr_redirect_kind;

/* Longest "host:port" a redirection may name (a DNS name, a port). */
#define LMR_REDIRECT_ADDR_MAX 272

typedef struct {
  lmr_job base;        /* first, so a lmr_job* is a lmr_key_job* */
  lmr_op *op;
  lmr_job_kind kind;
  uint32_t part;       /* PART, and a split SET: the part's index */
  int commit;          /* SET: of a split value's commit record, hdr(0) alone */
  int swap;            /* SET ... GET (cluster): the reply, the string it
                          replaced, is kept as a HEAD's is (head, head_n,
                          stored_len: -1 for none) */
  const char *key;     /* the Redis key its commands name: op's, or a part key */
  size_t key_len;
  /* cluster: where the job goes (route.c) */
  void *node;          /* the node it was last queued to (route.c) */
  int pinned;          /* go to `node` again, not to its slot's (after an ASK) */
  int cleanup;         /* deletes what a write leaves behind: runs even when
                          its call is cancelled (its round goes untagged, so
                          lmr_pool_cancel never finds it: batch.c) */
  int master_only;     /* never to a replica (read_from_replicas): a split
                          write's check of its own commit, or a read a
                          replica could not serve (LOADING, MASTERDOWN) */
  int asking;          /* each command is preceded by ASKING (after an ASK) */
  int redirects;       /* times it was sent elsewhere */
  lmr_redirect_kind redirect;       /* what the node answered instead */
  uint16_t redirect_slot;
  char redirect_to[LMR_REDIRECT_ADDR_MAX]; /* MOVED/ASK's "host:port" */
  /* results */
  int wrongtype;       /* the key holds another type than a string */
  int64_t integer;     /* DEL, HEAD's EXISTS, CONFIG's value (-1: not known) */
  int64_t stored_len;  /* HEAD: STRLEN; GET: the reply's length (-1: nil) */
  size_t head_n;       /* HEAD: bytes GETRANGE returned */
  int head_in_dst;     /* HEAD: they were placed at op->dst */
  unsigned char head[LMR_STRIPE_HDR_SIZE]; /* HEAD: the first min(head_n, 32) */
  int torn;            /* PART: not the part of op->layout's write */
  uint64_t seen_id;    /* PART: the write id in its header (when not torn) */
  int placed;          /* GET: the value is in op->dst */
} lmr_key_job;

/* Whether a HEAD job's two replies agree: GETRANGE's bytes (at most
 * head_len: the whole string; head_len + 1: a longer one) and STRLEN's
 * length. They disagree when a write came in between, or when the server
 * sent a stray reply that was taken for the next one. */
static inline int lmr__head_agrees(const lmr_key_job *j) {
  if (j->head_n <= j->op->head_len) return j->stored_len == (int64_t)j->head_n;
  return j->stored_len > (int64_t)j->op->head_len;
}

/* Whether hdr, read at part `part`'s place, is that part of the value
 * op->layout describes: its index, count and length, and unless the layout
 * is a guess, its write. */
static inline int lmr__part_matches(const lmr_op *op, uint32_t part, const lmr_stripe_hdr *h) {
  const lmr_stripe_hdr *want = &op->layout;
  return h->index == part && h->count == want->count && h->total_len == want->total_len &&
         (op->layout_guessed || h->set_id == want->set_id);
}

void lmr__op_init(lmr_op *op, const void *key, size_t key_len, double timeout,
                  int64_t max_bulk, int max_bulk_read);
void lmr__key_job_init(lmr_key_job *job, lmr_op *op, lmr_job_kind kind);
/* Makes a job that ran ready to run again, elsewhere after a redirection:
 * its results cleared, its command (kind, part, key) and routing kept. */
void lmr__key_job_reset(lmr_key_job *job);
/* The pool's run() for key jobs; worker_state is the worker's lmr_conn. */
void lmr__key_job_run(lmr_job *job, void *worker_state);
/* The pool's run_many() for small key jobs, pipelined on one connection:
 * reads (HEAD, PING, CONFIG) and writes (SET, DEL) apart, since a run of
 * reads may be sent again. */
void lmr__key_reads_run_many(lmr_job **jobs, int n, void *worker_state);
void lmr__key_writes_run_many(lmr_job **jobs, int n, void *worker_state);

#endif
