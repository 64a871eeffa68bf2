/* Call plans (plan.h): which jobs a call runs, round by round, and what it
 * concludes from their results. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "plan.h"
#include "slot.h"

enum {
  S_DONE, S_SET, S_DEL, S_DEL_HEAD, S_HEAD, S_GET, S_PARTS, S_GUESS, S_PING,
  /* a cluster's split SET: its parts (and HEAD of what it replaces), then
   * its part 0 under the key, then the replaced value's parts go; or, when
   * it failed, its own parts go */
  S_SET_PARTS, S_SET_COMMIT, S_SET_CLEAN, S_SET_UNDO,
  /* ... a key of another type DELed before the commit goes again; a
   * commit whose reply was lost, HEAD to see whether it ran */
  S_SET_RETYPE, S_SET_VERIFY,
  /* a cluster's delete: GETDEL of the key, then the parts of what it held */
  S_DEL_PARTS
};

/* What a HEAD job found under the key. */
typedef enum { H_ABSENT, H_OTHER_TYPE, H_CHANGED, H_VERBATIM, H_ENCODED, H_BROKEN } head_kind;

static void one_job(lmr_plan *p, int stage, lmr_job_kind kind) {
  lmr__key_job_init(&p->one, p->op, kind);
  p->jobs = &p->one;
  p->njobs = 1;
  p->stage = stage;
}

static void done(lmr_plan *p) {
  p->jobs = NULL;
  p->njobs = 0;
  p->stage = S_DONE;
}

static void start_read(lmr_plan *p) {
  p->attempts++;
  one_job(p, S_HEAD, LMR_JOB_HEAD);
}

/* The value changed under the read: read it again, or give up with a miss
 * (a reader racing a stream of writers must still end). */
static void read_again(lmr_plan *p) {
  if (p->attempts < LMR_PLAN_READ_ATTEMPTS) start_read(p);
  else done(p);
}

/* What HEAD saw. GETRANGE asked for head_len + 1 bytes, so a reply of at
 * most head_len bytes is the whole string at one moment, and a longer one
 * still shows its first bytes as they were. STRLEN ran just before, and
 * must agree (the same length, or both longer than head_len): otherwise a
 * write came in between (or the server sent a stray reply), and the read
 * starts again. */
static head_kind classify_head(const lmr_key_job *j, lmr_stripe_hdr *h) {
  if (j->wrongtype && j->head_n == 0) return H_OTHER_TYPE;
  /* No string stored is empty (an empty value is encoded): no bytes, no
   * value. An empty string another client wrote reads as a miss too. */
  if (j->head_n == 0) return lmr__head_agrees(j) ? H_ABSENT : H_CHANGED;
  if (!lmr__head_agrees(j)) return H_CHANGED;
  size_t n = j->head_n < LMR_STRIPE_HDR_SIZE ? j->head_n : LMR_STRIPE_HDR_SIZE;
  switch (lmr_stripe_classify(j->head, n, (uint64_t)j->stored_len, LMR_MAX_STRIPES, j->op->split,
                              h)) {
    case LMR_STORED_VERBATIM: return H_VERBATIM;
    case LMR_STORED_ENCODED: return H_ENCODED;
    case LMR_STORED_BROKEN: break;
  }
  return H_BROKEN;
}

static int too_big(uint64_t needed, size_t cap, lmr_error *err) {
  int rc = lmr__err(err, LMR_ETOOBIG, "value is %llu bytes but the buffer holds %zu bytes",
                    (unsigned long long)needed, cap);
  err->needed = needed;
  return rc;
}

static int reserve_parts(lmr_plan *p, uint32_t n, lmr_error *err) {
  if (p->parts_cap >= n) return LMR_OK;  /* a read again may meet a wider value */
  free(p->parts);
  p->parts = malloc((size_t)n * sizeof *p->parts);
  p->parts_cap = p->parts == NULL ? 0 : n;
  return p->parts == NULL ? lmr__err(err, LMR_ENOMEM, "out of memory for %u jobs", n) : LMR_OK;
}

/* Whether the op's value of `count` parts is split over part keys. */
static int is_split(const lmr_plan *p, uint32_t count) { return p->op->split && count >= 2; }

/* Room for the part keys of a split value of `count` parts. */
static int reserve_names(lmr_plan *p, uint32_t count, lmr_error *err) {
  if (p->names != NULL && p->names_count >= count) return LMR_OK;
  free(p->names);
  p->name_stride = p->op->key_len + LMR__PART_KEY_EXTRA;
  p->names = malloc(p->name_stride * count);
  p->names_count = p->names == NULL ? 0 : count;
  if (p->names == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for %u part keys", count);
  return LMR_OK;
}

/* Points job (part `part` of `count` of write `set_id`) at its key: the
 * op's for a value not split, else the part's own key. */
static void aim_at_part(lmr_plan *p, lmr_key_job *job, uint32_t part, uint32_t count,
                        uint64_t set_id) {
  job->part = part;
  if (!is_split(p, count)) return;
  char *name = p->names + p->name_stride * part;
  job->key = name;
  job->key_len = lmr__part_key(p->op->key, p->op->key_len, part, count, set_id, name);
}

/* A round, after `first` jobs, of one `kind` job per part of split value
 * h, at its part keys. A round of DELs is a cleanup (of a write that
 * failed, of a value replaced or deleted): it gets LMR_PLAN_CLEANUP_NS from
 * now even when the call's deadline is nearer or past, since a write that
 * timed out is the commonest reason to clean up, and its DELs would
 * otherwise all fail "timed out before DEL was sent". */
static int split_round(lmr_plan *p, const lmr_stripe_hdr *h, uint32_t first, lmr_job_kind kind,
                       int stage, lmr_error *err) {
  if (kind == LMR_JOB_DEL) {
    int64_t until = lmr__now_ns() + LMR_PLAN_CLEANUP_NS;
    if (p->op->deadline < until) p->op->deadline = until;
  }
  int rc = reserve_parts(p, first + h->count, err);
  if (rc == LMR_OK) rc = reserve_names(p, h->count, err);
  if (rc != LMR_OK) return rc;
  for (uint32_t i = 0; i < h->count; i++) {
    lmr__key_job_init(&p->parts[first + i], p->op, kind);
    aim_at_part(p, &p->parts[first + i], i, h->count, h->set_id);
    /* A cancel must not strand what the call wrote or unlinked. */
    p->parts[first + i].cleanup = kind == LMR_JOB_DEL;
  }
  p->jobs = p->parts;
  p->njobs = (int)(first + h->count);
  p->stage = stage;
  return LMR_OK;
}

/* A round of one GETRANGE per part of layout h, after `first` jobs. */
static int parts_round(lmr_plan *p, const lmr_stripe_hdr *h, uint32_t first, lmr_error *err) {
  int rc = reserve_parts(p, first + h->count, err);
  if (rc == LMR_OK && is_split(p, h->count)) rc = reserve_names(p, h->count, err);
  if (rc != LMR_OK) return rc;
  p->op->layout = *h;
  for (uint32_t i = 0; i < h->count; i++) {
    lmr__key_job_init(&p->parts[first + i], p->op, LMR_JOB_PART);
    aim_at_part(p, &p->parts[first + i], i, h->count, h->set_id);
  }
  p->jobs = p->parts;
  p->njobs = (int)(first + h->count);
  p->stage = S_PARTS;
  return LMR_OK;
}

/* The guessed first read: HEAD (of the header alone, and not into the
 * buffer, where parts land meanwhile) and the parts of `count` for a value
 * as long as the buffer, all in one round. */
static int guess_round(lmr_plan *p, uint32_t count, lmr_error *err) {
  lmr_op *op = p->op;
  lmr_stripe_hdr h = {.count = count, .total_len = op->cap};
  int rc = parts_round(p, &h, 1, err);
  if (rc != LMR_OK) return rc;
  op->layout_guessed = 1;
  op->head_len = LMR_STRIPE_HDR_SIZE;
  lmr__key_job_init(&p->parts[0], op, LMR_JOB_HEAD);
  p->guess = count;
  p->attempts = 1;
  p->stage = S_GUESS;
  return LMR_OK;
}

/* What HEAD, after a guess that failed, says about values as long as the
 * buffer: their part count, or that they are stored otherwise (verbatim,
 * or another length is what the buffer meets). A miss, another type, a
 * broken or a changing value say nothing. */
static void learn(lmr_plan *p, head_kind k, const lmr_stripe_hdr *h) {
  if (p->guess == 0) return;
  if (k == H_ENCODED && h->total_len == p->op->cap) p->learned = h->count;
  else if (k == H_ENCODED || k == H_VERBATIM) p->learned = 0;
}

static int after_head(lmr_plan *p, lmr_error *err) {
  lmr_op *op = p->op;
  const lmr_key_job *j = &p->one;
  lmr_stripe_hdr h;
  head_kind k = classify_head(j, &h);
  learn(p, k, &h);
  if (k == H_CHANGED) {
    read_again(p);
    return LMR_OK;
  }
  if (p->kind == LMR_PLAN_EXISTS || k == H_ABSENT || k == H_OTHER_TYPE || k == H_BROKEN) {
    p->found = k == H_VERBATIM || k == H_ENCODED;
    done(p);
    return LMR_OK;
  }
  int whole = j->head_n <= op->head_len;
  if (k == H_VERBATIM) {
    uint64_t s = (uint64_t)j->stored_len;
    if (s > op->cap) return too_big(s, op->cap, err);
    if (!whole) {
      one_job(p, S_GET, LMR_JOB_GET);
      return LMR_OK;
    }
    if (!j->head_in_dst) memcpy(op->dst, j->head, j->head_n); /* 0 < n <= cap < 32 */
    p->found = 1;
    p->len = s;
    done(p);
    return LMR_OK;
  }
  if (h.total_len > op->cap) return too_big(h.total_len, op->cap, err);
  if (whole && j->head_in_dst && !is_split(p, h.count)) {
    /* A small encoded value came whole: take its headers out in place. */
    if (lmr_stripe_decode_in_place(op->dst, &h) != 0) {
      read_again(p);
      return LMR_OK;
    }
    p->found = 1;
    p->len = h.total_len;
    done(p);
    return LMR_OK;
  }
  return parts_round(p, &h, 0, err);
}

static void after_get(lmr_plan *p) {
  const lmr_key_job *j = &p->one;
  if (j->stored_len < 0) {  /* gone, or of another type, since HEAD */
    done(p);
    return;
  }
  /* Longer than the buffer, or encoded now: replaced since HEAD. */
  if (!j->placed || lmr_stripe_has_magic(p->op->dst, (size_t)j->stored_len)) {
    read_again(p);
    return;
  }
  p->found = 1;
  p->len = (uint64_t)j->stored_len;
  done(p);
}

static void after_parts(lmr_plan *p) {
  for (int i = 0; i < p->njobs; i++) {
    if (p->jobs[i].torn) {
      read_again(p);
      return;
    }
  }
  p->found = 1;
  p->len = p->op->layout.total_len;
  done(p);
}

/* The guessed read: a hit when every part matched its place, all came
 * from one write, and HEAD saw that write whole (its hdr(0), and a string
 * of exactly its length: not one another client grew or cut); otherwise
 * what HEAD saw decides, as in a read without a guess. */
static int after_guess(lmr_plan *p, lmr_error *err) {
  const lmr_key_job *parts = p->jobs + 1;
  int n = p->njobs - 1, whole = 1;
  for (int i = 0; i < n && whole; i++)
    whole = !parts[i].torn && parts[i].seen_id == parts[0].seen_id;
  lmr_stripe_hdr h;
  const lmr_stripe_hdr *want = &p->op->layout;
  if (whole && classify_head(&p->jobs[0], &h) == H_ENCODED && h.set_id == parts[0].seen_id &&
      h.count == want->count && h.total_len == want->total_len) {
    p->found = 1;
    p->len = p->op->layout.total_len;
    done(p);
    return LMR_OK;
  }
  p->op->layout_guessed = 0;
  p->one = p->jobs[0];
  return after_head(p, err);
}

/* The SET ... GET of the key: a split write's record, or a value of one
 * piece (p->written says which). */
static void commit_round(lmr_plan *p) {
  one_job(p, S_SET_COMMIT, LMR_JOB_SET);
  p->one.commit = is_split(p, p->written.count);
  p->one.swap = 1;
}

static int start_set(lmr_plan *p, uint32_t count, uint64_t set_id, lmr_error *err) {
  lmr_op *op = p->op;
  /* A value that begins with the magic is encoded, even when small, so that
   * no verbatim value can pass for an encoded one; so is the empty value,
   * so that a reader tells "no value" from "empty value" by one GETRANGE. */
  if (op->len == 0) count = 1;  /* one header: nothing to read in parallel */
  else if (count == 1 && !lmr_stripe_has_magic(op->src, op->len)) count = 0;
  /* What one key holds at most: the whole value, or a split value's part
   * 0 (its longest) with its header. */
  uint64_t stored = count == 0          ? op->len
                    : is_split(p, count) ? LMR_STRIPE_HDR_SIZE + lmr_stripe_len(op->len, count, 0)
                                         : lmr_stripe_stored_len(op->len, count);
  if (stored > (uint64_t)op->max_bulk)
    return lmr__err(err, LMR_EINVAL,
                    "value is %llu bytes (%llu stored) but the server's proto-max-bulk-len is "
                    "%lld bytes%s: store smaller values, or raise the server's limit "
                    "(CONFIG SET proto-max-bulk-len)",
                    (unsigned long long)op->len, (unsigned long long)stored,
                    (long long)op->max_bulk,
                    op->max_bulk_read ? "" : " (Redis's default: the server would not say)");
  op->count = count;
  if (count > 0) {
    p->hdrs = malloc((size_t)count * LMR_STRIPE_HDR_SIZE);
    if (p->hdrs == NULL) return lmr__err(err, LMR_ENOMEM, "out of memory for headers");
    for (uint32_t i = 0; i < count; i++) {
      lmr_stripe_hdr h = {.index = i, .count = count, .total_len = op->len, .set_id = set_id};
      lmr_stripe_hdr_encode(&h, p->hdrs + (size_t)i * LMR_STRIPE_HDR_SIZE);
    }
    op->hdrs = p->hdrs;
  }
  p->written = (lmr_stripe_hdr){.count = count, .total_len = op->len, .set_id = set_id};
  if (!op->split) {
    one_job(p, S_SET, LMR_JOB_SET);
    return LMR_OK;
  }
  /* A cluster's SET swaps what the key holds (SET ... GET), to learn the
   * split value it replaces, whose parts then go. A split value's parts
   * come first, under keys named by its write id that no other write
   * touches; its commit record under the key last. */
  op->head_len = LMR_STRIPE_HDR_SIZE;  /* what a swap's reply keeps */
  if (!is_split(p, count)) {
    commit_round(p);
    return LMR_OK;
  }
  return split_round(p, &p->written, 0, LMR_JOB_SET, S_SET_PARTS, err);
}

/* The write failed at some step (err): its own parts go, whatever was
 * stored of them (unreferenced, they would stay until evicted or
 * expired), then the call fails with err. */
static int undo_set(lmr_plan *p, const lmr_error *err, lmr_error *out) {
  if (!is_split(p, p->written.count)) return lmr__err_copy(out, err);
  p->undo = *err;
  int rc = split_round(p, &p->written, 0, LMR_JOB_DEL, S_SET_UNDO, out);
  return rc == LMR_OK ? LMR_OK : lmr__err_copy(out, err);
}

static int after_set_parts(lmr_plan *p, lmr_error *err) {
  for (int i = 0; i < p->njobs; i++)
    if (p->jobs[i].base.status != LMR_OK) return undo_set(p, &p->jobs[i].base.err, err);
  commit_round(p);
  return LMR_OK;
}

/* Whether a write that failed with this error may still have run: its
 * reply was lost (the connection, the timeout, a cancel that cut it). */
static int may_have_run(int code) {
  return code == LMR_ECONN || code == LMR_ETIMEDOUT || code == LMR_EPROTO || code == LMR_ECANCELED;
}

/* After a commit that may have run: the key holds this write's record
 * (it ran: the write stands, the value it replaced is not known, its
 * parts stay until evicted or expired), or not (its parts go, and the
 * call fails); a HEAD that fails too leaves the parts, lest a record that
 * did land be left naming parts that are gone. */
static int after_set_verify(lmr_plan *p, lmr_error *err) {
  lmr_stripe_hdr h;
  if (p->one.base.status == LMR_OK && classify_head(&p->one, &h) == H_ENCODED &&
      h.set_id == p->written.set_id) {
    done(p);
    return LMR_OK;
  }
  if (p->one.base.status == LMR_OK) return undo_set(p, &p->undo, err);
  done(p);
  return lmr__err_copy(err, &p->undo);
}

/* The key holds the write now; the split value it replaced (the swap's
 * reply), if any, goes: its parts are unreadable from here on. A failure
 * of that leaves them until evicted or expired, and fails nothing. */
static int after_set_commit(lmr_plan *p, lmr_error *err) {
  lmr_key_job *j = &p->one;
  if (j->base.status != LMR_OK && is_split(p, p->written.count) && may_have_run(j->base.status)) {
    p->undo = j->base.err;
    one_job(p, S_SET_VERIFY, LMR_JOB_HEAD);
    p->one.master_only = 1;
    p->one.cleanup = 1;  /* runs past a cancel, within the cleanup's time */
    int64_t until = lmr__now_ns() + LMR_PLAN_CLEANUP_NS;
    if (p->op->deadline < until) p->op->deadline = until;
    return LMR_OK;
  }
  if (j->base.status != LMR_OK) return undo_set(p, &j->base.err, err);
  if (j->wrongtype) {  /* SET ... GET refuses another type: DEL it, once */
    if (p->retyped) {
      lmr_error e;
      lmr__err(&e, LMR_ERESPONSE, "SET: the key keeps holding another type than a string");
      return undo_set(p, &e, err);
    }
    p->retyped = 1;
    one_job(p, S_SET_RETYPE, LMR_JOB_DEL);
    return LMR_OK;
  }
  lmr_stripe_hdr old;
  if (p->one.stored_len < 0 || classify_head(&p->one, &old) != H_ENCODED ||
      !is_split(p, old.count) || old.set_id == p->written.set_id ||
      split_round(p, &old, 0, LMR_JOB_DEL, S_SET_CLEAN, err) != LMR_OK)
    done(p);
  return LMR_OK;
}

/* A cluster's delete, after GETDEL of the key: a key of another type is
 * deleted by DEL; the parts of the split value GETDEL removed go. */
static int after_del_head(lmr_plan *p, lmr_error *err) {
  if (p->one.wrongtype) {
    one_job(p, S_DEL, LMR_JOB_DEL);
    return LMR_OK;
  }
  p->found = p->one.stored_len >= 0;
  lmr_stripe_hdr h;
  if (!p->found || classify_head(&p->one, &h) != H_ENCODED || !is_split(p, h.count) ||
      split_round(p, &h, 0, LMR_JOB_DEL, S_DEL_PARTS, err) != LMR_OK)
    done(p);
  return LMR_OK;
}

int lmr__plan_start(lmr_plan *p, lmr_plan_kind kind, lmr_op *op, uint32_t count,
                    uint64_t set_id, lmr_error *err) {
  memset(p, 0, sizeof *p);
  p->kind = kind;
  p->op = op;
  switch (kind) {
    case LMR_PLAN_SET:
      return start_set(p, count, set_id, err);
    case LMR_PLAN_DELETE:
      if (!op->split) {
        one_job(p, S_DEL, LMR_JOB_DEL);
        return LMR_OK;
      }
      /* GETDEL: the record it removes names the parts to delete, even
       * when a write commits just before it. */
      op->head_len = LMR_STRIPE_HDR_SIZE;
      one_job(p, S_DEL_HEAD, LMR_JOB_DEL);
      p->one.swap = 1;
      return LMR_OK;
    case LMR_PLAN_PING:
      one_job(p, S_PING, LMR_JOB_PING);
      return LMR_OK;
    case LMR_PLAN_EXISTS:
      op->dst = NULL;
      op->cap = 0;
      op->head_len = LMR_STRIPE_HDR_SIZE;
      break;
    case LMR_PLAN_GET: {
      size_t n = op->cap < LMR_HEAD_MAX ? op->cap : LMR_HEAD_MAX;
      op->head_len = n > LMR_STRIPE_HDR_SIZE ? n : LMR_STRIPE_HDR_SIZE;
      p->learned = LMR_PLAN_LEARNED_NONE;
      /* (A cluster's part keys are named by the record: never guessed.) */
      if (count >= 2 && count <= LMR_MAX_STRIPES && op->cap > 0 && !op->split)
        return guess_round(p, count, err);
      break;
    }
  }
  start_read(p);
  return LMR_OK;
}

int lmr__plan_next(lmr_plan *p, lmr_error *err) {
  switch (p->stage) {  /* the stages that judge their jobs' failures themselves */
    case S_SET_PARTS:
      return after_set_parts(p, err);
    case S_SET_COMMIT:
      return after_set_commit(p, err);
    case S_SET_VERIFY:
      return after_set_verify(p, err);
    case S_SET_RETYPE:
      if (p->one.base.status != LMR_OK) return undo_set(p, &p->one.base.err, err);
      commit_round(p);
      return LMR_OK;
    case S_SET_CLEAN:
    case S_DEL_PARTS:  /* the value went with its record: a part left fails nothing */
      done(p);
      return LMR_OK;
    case S_SET_UNDO:
      done(p);
      return lmr__err_copy(err, &p->undo);
    default:
      break;
  }
  for (int i = 0; i < p->njobs; i++)
    if (p->jobs[i].base.status != LMR_OK) return lmr__err_copy(err, &p->jobs[i].base.err);
  switch (p->stage) {
    case S_HEAD:
      return after_head(p, err);
    case S_GET:
      after_get(p);
      return LMR_OK;
    case S_PARTS:
      after_parts(p);
      return LMR_OK;
    case S_GUESS:
      return after_guess(p, err);
    case S_DEL_HEAD:
      return after_del_head(p, err);
    case S_DEL:
      p->found = p->jobs[0].integer > 0;
      break;
    case S_PING:
      p->found = 1;
      break;
    default:
      break;
  }
  done(p);
  return LMR_OK;
}

void lmr__plan_destroy(lmr_plan *p) {
  free(p->parts);
  free(p->hdrs);
  free(p->names);
  p->names = NULL;
  p->parts = NULL;
  p->parts_cap = 0;
  p->hdrs = NULL;
}
