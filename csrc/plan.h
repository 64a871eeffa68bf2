/* Call plans: the stored format's rules (stripe.h) for one key and one
 * call. A plan is a small state machine: it hands out a round of key jobs,
 * is told when they have run, and either hands out the next round or ends
 * with a verdict. It never touches a socket or a thread, so its rules are
 * unit-tested by filling in job results by hand (tests/c/test_plan.c).
 *
 *   get     HEAD (STRLEN, then GETRANGE of the first bytes, one byte more
 *           than it looks at): a miss, a key of another type, a broken
 *           value or a value that fits in the first bytes ends here; then
 *           one GETRANGE per part of an encoded value, or one GET of a
 *           longer verbatim value. A value replaced between the rounds (or
 *           between GETRANGE and STRLEN) is read again: at most
 *           LMR_PLAN_READ_ATTEMPTS reads, then a miss.
 *           With a guess (a part count for a value exactly as long as the
 *           buffer: what a writer with the reader's settings stores, as
 *           LMCache's readers and writers are), the first read skips HEAD:
 *           it reads the parts of that layout at once, each checked
 *           against its own header, and it is a hit when every part is
 *           there and all carry one write id: one round trip instead of
 *           two. Anything else (a miss, another length, another count, a
 *           write in between) reads again from HEAD; that guessed read
 *           counts as one of the reads.
 *   exists  HEAD alone: a whole value of this format (or verbatim) exists.
 *           In a cluster, of a split value: its commit record (the parts
 *           are only read by get).
 *   set     one SET (PSETEX with a TTL) of the value, verbatim or encoded.
 *           In a cluster the key's SET is a swap (SET ... GET), and a split
 *           value's parts go first, a SET per part key (named by the
 *           write's id), its commit record under the key last; then the
 *           parts of the split value the swap replaced go (DEL), or, when
 *           the write failed, its own.
 *   delete  one DEL; in a cluster, GETDEL, then a DEL of every part key of
 *           the split value it removed.
 *   ping    one PING (no key).
 */
#ifndef LMR_PLAN_H
#define LMR_PLAN_H

#include "jobs.h"

#define LMR_PLAN_READ_ATTEMPTS 3
/* Time a cluster's cleanup round (DELs of part keys) gets at least. */
#define LMR_PLAN_CLEANUP_NS (1000LL * 1000 * 1000)

typedef enum {
  LMR_PLAN_GET,
  LMR_PLAN_EXISTS,
  LMR_PLAN_SET,
  LMR_PLAN_DELETE,
  LMR_PLAN_PING
} lmr_plan_kind;

typedef struct {
  lmr_plan_kind kind;
  lmr_op *op;
  int stage;             /* internal: what the current round is */
  int attempts;          /* reads started */
  lmr_key_job *jobs;     /* the current round: njobs of them; 0 when done */
  int njobs;
  lmr_key_job one;       /* storage for one-job rounds */
  lmr_key_job *parts;    /* storage for a round of parts, when needed */
  uint32_t parts_cap;    /* jobs it holds */
  unsigned char *hdrs;   /* an encoded SET's headers */
  char *names;           /* split: room for the part keys of names_count parts */
  uint32_t names_count;
  size_t name_stride;    /* bytes between two of them */
  lmr_stripe_hdr written;  /* split set: the write's layout and id */
  lmr_stripe_hdr replaced; /* ... and the split value it replaces (count 0: none) */
  lmr_error undo;          /* ... the error it fails with, once its parts went */
  int retyped;             /* ... a key of another type was DELed for it */
  uint32_t guess;        /* get: the guessed part count (0: none) */
  /* verdict */
  int found;             /* get: a hit; exists: a whole value; delete: a key went;
                            ping: the server answered */
  uint64_t len;          /* get: the value's length */
  /* get with a guess that failed: what HEAD then found under the key, for
   * the caller's next guess at this buffer size. LMR_PLAN_LEARNED_NONE: it
   * says nothing (a miss, a changed value); 0: no guess fits (a verbatim
   * value, or another length); else the value's part count. */
  uint32_t learned;
} lmr_plan;

#define LMR_PLAN_LEARNED_NONE UINT32_MAX

/* Starts a plan over op (key, deadline, and for get the buffer). For set,
 * op->src/len/ttl_ms are the value; `count` is its part count (1 with a
 * value that does not begin with the magic: verbatim), `set_id` the
 * write's id. For get, `count` is the guess (0 or 1: none). Fails with
 * LMR_EINVAL for a value the server cannot take. */
int lmr__plan_start(lmr_plan *p, lmr_plan_kind kind, lmr_op *op, uint32_t count,
                    uint64_t set_id, lmr_error *err);
/* After every job of the round has run: LMR_OK with p->njobs > 0 (run the
 * new round), LMR_OK with p->njobs == 0 (done: see the verdict), or the
 * call's error (the first failed job's, in job order, or the plan's own). */
int lmr__plan_next(lmr_plan *p, lmr_error *err);
void lmr__plan_destroy(lmr_plan *p);

#endif
