/* Key jobs (jobs.h): encode a job's commands, send them in one go, and take
 * the replies apart, placing value bytes straight into the op's buffer. */
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "jobs.h"

void lmr__op_init(lmr_op *op, const void *key, size_t key_len, double timeout,
                  int64_t max_bulk, int max_bulk_read) {
  memset(op, 0, sizeof *op);
  op->key = key;
  op->key_len = key_len;
  op->deadline = lmr__deadline(timeout);
  op->max_bulk = max_bulk;
  op->max_bulk_read = max_bulk_read;
}

/* Whether a job may share a round trip with other small jobs (pipelined):
 * it moves few bytes (two 2 MiB parts queued on one connection were
 * measured slower than one each), and no reply of it can be taken for
 * another's. Parts and GETs go one per round trip even when small: a part
 * that does not match is normal (the value changed; the plan reads again),
 * and if it was a stray reply instead, lmr__conn_ensure catches what
 * follows it before the next command, where in a pipeline it would shift
 * the next job's reply. */
static int is_small(const lmr_key_job *job) {
  const lmr_op *op = job->op;
  switch (job->kind) {
    case LMR_JOB_HEAD:  /* at most LMR_HEAD_MAX + 1 bytes */
    case LMR_JOB_DEL:
    case LMR_JOB_CONFIG:
    case LMR_JOB_PING:
      return 1;
    case LMR_JOB_SET:  /* one piece of value (verbatim, or one header and part) */
      if (op->split && op->count >= 2)
        return lmr_stripe_len(op->len, op->count, job->part) <= LMR_PIPELINE_BYTES;
      return op->count <= 1 && op->len <= LMR_PIPELINE_BYTES;
    case LMR_JOB_PART:
    case LMR_JOB_GET:
      return 0;
  }
  return 0;
}

static void clear_results(lmr_key_job *job) {
  job->base.status = LMR_OK;
  lmr__err_clear(&job->base.err);
  job->redirect = LMR_REDIRECT_NONE;
  job->wrongtype = 0;
  job->integer = -1;
  job->stored_len = -1;
  job->head_n = 0;
  job->head_in_dst = 0;
  job->torn = 0;
  job->seen_id = 0;
  job->placed = 0;
}

void lmr__key_job_init(lmr_key_job *job, lmr_op *op, lmr_job_kind kind) {
  memset(job, 0, sizeof *job);
  job->base.run = lmr__key_job_run;
  job->op = op;
  job->kind = kind;
  job->key = op->key;
  job->key_len = op->key_len;
  clear_results(job);
  if (is_small(job))
    job->base.run_many = kind == LMR_JOB_SET || kind == LMR_JOB_DEL ? lmr__key_writes_run_many
                                                                   : lmr__key_reads_run_many;
}

void lmr__key_job_reset(lmr_key_job *job) { clear_results(job); }

static const char *kind_name(lmr_job_kind kind) {
  switch (kind) {
    case LMR_JOB_SET: return "SET";
    case LMR_JOB_HEAD: return "STRLEN";
    case LMR_JOB_PART: return "GETRANGE";
    case LMR_JOB_GET: return "GET";
    case LMR_JOB_DEL: return "DEL";
    case LMR_JOB_CONFIG: return "CONFIG GET";
    case LMR_JOB_PING: return "PING";
  }
  return "?";
}

/* The value argument of a SET: the bytes as they are, or the encoding's
 * headers and parts interleaved, each part referenced where it lies (a
 * split value's SET: its one part's header and part). */
static int value_parts(const lmr_key_job *job, struct iovec *v) {
  const lmr_op *op = job->op;
  if (job->commit) {  /* hdr(0) alone */
    v[0] = (struct iovec){(void *)op->hdrs, LMR_STRIPE_HDR_SIZE};
    return 1;
  }
  if (op->count == 0) {
    v[0] = (struct iovec){(void *)op->src, op->len};
    return 1;
  }
  int n = 0;
  int split = op->split && op->count >= 2;
  for (uint32_t i = split ? job->part : 0; i < (split ? job->part + 1 : op->count); i++) {
    v[n++] = (struct iovec){(void *)(op->hdrs + (size_t)i * LMR_STRIPE_HDR_SIZE),
                            LMR_STRIPE_HDR_SIZE};
    uint64_t len = lmr_stripe_len(op->len, op->count, i);
    /* An empty value may come with no buffer at all: no pointer from NULL. */
    if (len > 0)
      v[n++] = (struct iovec){(void *)(op->src + lmr_stripe_offset(op->len, op->count, i)), len};
  }
  return n;
}

/* Starts a command in cmd: the first one, or one more after what cmd holds;
 * after an ASK, each of the job's commands goes after an ASKING of its own
 * (the flag it sets lasts one command). */
static void start_cmd(lmr_cmd *cmd, int append, int argc) {
  if (append) lmr_cmd_next(cmd, argc);
  else lmr_cmd_init(cmd, argc);
}

static void begin(const lmr_key_job *job, lmr_cmd *cmd, int *append, int argc) {
  if (job->asking) {
    start_cmd(cmd, *append, 1);
    lmr_cmd_arg_copy(cmd, "ASKING");
    *append = 1;
  }
  start_cmd(cmd, *append, argc);
  *append = 1;
}

/* Encodes the job's commands into cmd, after what it holds if append. */
static void encode(const lmr_key_job *job, lmr_cmd *cmd, int append) {
  const lmr_op *op = job->op;
  switch (job->kind) {
    case LMR_JOB_SET: {
      /* PSETEX, not SET ... PX: the value must be the command's last
       * argument, so that Redis can keep the bulk it read as the value
       * instead of copying it out of a query buffer that holds more. */
      struct iovec v[2 * LMR_MAX_STRIPES];
      int nv = value_parts(job, v);
      if (job->swap) {  /* SET key value [PX ms] GET: the value is copied, once */
        begin(job, cmd, &append, op->ttl_ms > 0 ? 6 : 4);
        lmr_cmd_arg_copy(cmd, "SET");
        lmr_cmd_arg(cmd, job->key, job->key_len);
        lmr_cmd_arg_parts(cmd, v, nv);
        if (op->ttl_ms > 0) {
          lmr_cmd_arg_copy(cmd, "PX");
          lmr_cmd_arg_int(cmd, op->ttl_ms);
        }
        lmr_cmd_arg_copy(cmd, "GET");
        return;
      }
      begin(job, cmd, &append, op->ttl_ms > 0 ? 4 : 3);
      lmr_cmd_arg_copy(cmd, op->ttl_ms > 0 ? "PSETEX" : "SET");
      lmr_cmd_arg(cmd, job->key, job->key_len);
      if (op->ttl_ms > 0) lmr_cmd_arg_int(cmd, op->ttl_ms);
      lmr_cmd_arg_parts(cmd, v, nv);
      return;
    }
    case LMR_JOB_HEAD:
      /* GETRANGE asks one byte more than the plan looks at: a reply of at
       * most head_len bytes is then the whole string as it was when
       * GETRANGE ran, whatever other clients did since STRLEN. */
      begin(job, cmd, &append, 2);
      lmr_cmd_arg_copy(cmd, "STRLEN");
      lmr_cmd_arg(cmd, job->key, job->key_len);
      begin(job, cmd, &append, 4);
      lmr_cmd_arg_copy(cmd, "GETRANGE");
      lmr_cmd_arg(cmd, job->key, job->key_len);
      lmr_cmd_arg_copy(cmd, "0");
      lmr_cmd_arg_int(cmd, (int64_t)op->head_len);
      return;
    case LMR_JOB_PART: {
      const lmr_stripe_hdr *h = &op->layout;
      /* A split value's part is the whole string under its own key. */
      uint64_t from =
          op->split ? 0 : lmr_stripe_stored_offset(h->total_len, h->count, job->part);
      uint64_t n = LMR_STRIPE_HDR_SIZE + lmr_stripe_len(h->total_len, h->count, job->part);
      begin(job, cmd, &append, 4);
      lmr_cmd_arg_copy(cmd, "GETRANGE");
      lmr_cmd_arg(cmd, job->key, job->key_len);
      lmr_cmd_arg_int(cmd, (int64_t)from);
      lmr_cmd_arg_int(cmd, (int64_t)(from + n - 1));
      return;
    }
    case LMR_JOB_CONFIG:
      begin(job, cmd, &append, 3);
      lmr_cmd_arg_copy(cmd, "CONFIG");
      lmr_cmd_arg_copy(cmd, "GET");
      lmr_cmd_arg(cmd, op->key, op->key_len);
      return;
    case LMR_JOB_PING:
      begin(job, cmd, &append, 1);
      lmr_cmd_arg_copy(cmd, "PING");
      return;
    case LMR_JOB_GET:
    case LMR_JOB_DEL:
      begin(job, cmd, &append, 2);
      /* GETDEL: a DEL that says what it deleted, as a swap does */
      lmr_cmd_arg_copy(cmd, job->swap ? "GETDEL" : kind_name(job->kind));
      lmr_cmd_arg(cmd, job->key, job->key_len);
      return;
  }
}

/* A reply of the wrong type leaves the stream's state unknown. */
static int unexpected(lmr_key_job *job, lmr_conn *conn, const char *what) {
  lmr__conn_close(conn);
  return lmr__err(&job->base.err, LMR_EPROTO, "unexpected reply type to %s", what);
}

static int is_wrongtype(const lmr_reply *r) {
  return r->type == LMR_REPLY_ERROR && strncmp(r->str, "WRONGTYPE", 9) == 0;
}

/* Moves a bulk payload of n bytes to dst and consumes its CRLF. */
static int take_bulk(lmr_conn *conn, void *dst, size_t n, lmr_error *err) {
  size_t copied = 0;
  int rc = lmr__conn_read_payload(conn, dst, n, &copied, err);
  if (rc != LMR_OK) return rc;
  if (dst != NULL) {
    LMR__COUNT(conn->stats, bytes_received, n);
    LMR__COUNT(conn->stats, bytes_copied, copied);
  }
  return lmr__conn_end_bulk(conn, err);
}

/* A cluster node's answer that the job belongs elsewhere, or later:
 * "MOVED <slot> <host:port>", "ASK <slot> <host:port>", "TRYAGAIN ...",
 * "CLUSTERDOWN ...". Noted in the job (the first one only); the caller
 * still reports the error, which stands if nobody acts on it. */
static void note_redirect(lmr_key_job *job, const lmr_reply *r) {
  const char *text = r->str;
  if (job->redirect != LMR_REDIRECT_NONE) return;
  if (strncmp(text, "TRYAGAIN", 8) == 0 || strncmp(text, "CLUSTERDOWN", 11) == 0) {
    job->redirect = LMR_REDIRECT_RETRY;
    return;
  }
  /* A replica still loading, or cut off from its master: its master
   * serves the read instead (read_from_replicas). */
  if (strncmp(text, "LOADING", 7) == 0 || strncmp(text, "MASTERDOWN", 10) == 0) {
    job->redirect = LMR_REDIRECT_RETRY;
    job->master_only = 1;
    return;
  }
  /* A line cut at the parser's limit may have lost the port's last digits. */
  if (r->len >= LMR_RESP_LINE_MAX - 1) return;
  lmr_redirect_kind kind = strncmp(text, "MOVED ", 6) == 0 ? LMR_REDIRECT_MOVED
                           : strncmp(text, "ASK ", 4) == 0 ? LMR_REDIRECT_ASK
                                                           : LMR_REDIRECT_NONE;
  if (kind == LMR_REDIRECT_NONE) return;
  const char *p = strchr(text, ' ') + 1;
  char *end;
  long slot = strtol(p, &end, 10);
  if (end == p || *end != ' ' || slot < 0 || slot > 16383) return;
  size_t n = strlen(end + 1);
  if (n == 0 || n >= sizeof job->redirect_to) return;
  memcpy(job->redirect_to, end + 1, n + 1);
  job->redirect_slot = (uint16_t)slot;
  job->redirect = kind;
}

static int server_error(lmr_key_job *job, const lmr_reply *r, const char *context,
                        lmr_error *err) {
  note_redirect(job, r);
  return lmr__conn_server_error(r, context, err);
}

/* An error reply to one command of a pipelined round: kept (the first one
 * only) while the round's other replies are still read, so that the
 * connection stays in step and usable. */
static void note_error(lmr_key_job *job, int *first, lmr_error *err, const lmr_reply *r,
                       const char *context) {
  lmr_error later;
  if (*first == LMR_OK) *first = server_error(job, r, context, err);
  else lmr__conn_server_error(r, context, &later);
}

/* The next reply to one of the job's commands, after the +OK to the
 * ASKING before it, if any. */
static int read_reply(lmr_key_job *job, lmr_conn *conn, lmr_reply *r, lmr_error *err) {
  int rc;
  if (job->asking) {
    if ((rc = lmr__conn_read_reply(conn, r, err)) != LMR_OK) return rc;
    if (r->type != LMR_REPLY_STATUS || strcmp(r->str, "OK") != 0)
      return unexpected(job, conn, "ASKING");
  }
  return lmr__conn_read_reply(conn, r, err);
}

/* HEAD: STRLEN, then GETRANGE's bytes. A key of another type answers both
 * with WRONGTYPE: a fact about the key, not a failure. The bytes go to the
 * buffer as far as it reaches (the first 32 also to job->head); the one
 * byte past head_len, if any, only says that the string is longer. */
static int handle_head(lmr_key_job *job, lmr_conn *conn) {
  lmr_op *op = job->op;
  lmr_error *err = &job->base.err;
  int first = LMR_OK;
  lmr_reply r;
  int rc = read_reply(job, conn, &r, err);
  if (rc != LMR_OK) return rc;
  if (is_wrongtype(&r)) job->stored_len = -1;  /* another type then; GETRANGE says now */
  else if (r.type == LMR_REPLY_ERROR) note_error(job, &first, err, &r, "STRLEN");
  else if (r.type != LMR_REPLY_INTEGER) return unexpected(job, conn, "STRLEN");
  else job->stored_len = r.integer;
  if ((rc = read_reply(job, conn, &r, err)) != LMR_OK) return rc;
  if (is_wrongtype(&r)) {
    job->wrongtype = 1;
    return first;
  }
  if (r.type == LMR_REPLY_ERROR) {
    note_error(job, &first, err, &r, "GETRANGE");
    return first;
  }
  if (r.type != LMR_REPLY_BULK) return unexpected(job, conn, "GETRANGE");
  if ((uint64_t)r.integer > op->head_len + 1)
    return unexpected(job, conn, "GETRANGE (longer than asked for)");
  if (first != LMR_OK) {
    rc = lmr__conn_end_bulk(conn, err);
    return rc != LMR_OK ? rc : first;
  }
  size_t n = (size_t)r.integer;
  size_t keep = n < LMR_STRIPE_HDR_SIZE ? n : LMR_STRIPE_HDR_SIZE;
  job->head_n = n;
  /* cap >= 32 whenever head_len <= cap; a smaller buffer gets nothing here
   * (the plan copies from job->head what fits), nor does one that a guessed
   * read's parts are landing in. */
  job->head_in_dst = op->head_len <= op->cap && !op->layout_guessed;
  size_t placed = job->head_in_dst ? (n < op->cap ? n : op->cap) : 0;
  if (placed > 0) {
    size_t copied = 0;
    rc = lmr__conn_read_payload(conn, op->dst, placed, &copied, err);
    if (rc != LMR_OK) return rc;
    LMR__COUNT(conn->stats, bytes_received, placed);
    LMR__COUNT(conn->stats, bytes_copied, copied);
    memcpy(job->head, op->dst, keep);
  } else if (keep > 0) {
    rc = lmr__conn_read_payload(conn, job->head, keep, NULL, err);
    if (rc != LMR_OK) return rc;
  }
  rc = lmr__conn_end_bulk(conn, err);
  /* If the disagreement is a stray reply, the real one is still coming:
   * the stream is out of step, so the connection goes (the plan reads
   * again, on a fresh one). A racing write costs a reconnect, no more. */
  if (rc == LMR_OK && !lmr__head_agrees(job)) lmr__conn_close(conn);
  return rc;
}

/* PART: the part's header must be the one op->layout promises (same write,
 * this index); only then does its payload go into the buffer. Anything
 * else means the value changed since the layout was read (or, for a
 * guessed layout, that the guess was wrong). */
static int handle_part(lmr_key_job *job, lmr_conn *conn, const lmr_reply *r) {
  lmr_op *op = job->op;
  lmr_error *err = &job->base.err;
  const lmr_stripe_hdr *want = &op->layout;
  uint64_t len = lmr_stripe_len(want->total_len, want->count, job->part);
  if ((uint64_t)r->integer != LMR_STRIPE_HDR_SIZE + len) {
    job->torn = 1;
    return lmr__conn_end_bulk(conn, err);
  }
  unsigned char raw[LMR_STRIPE_HDR_SIZE];
  int rc = lmr__conn_read_payload(conn, raw, sizeof raw, NULL, err);
  if (rc != LMR_OK) return rc;
  lmr_stripe_hdr h;
  if (lmr_stripe_hdr_decode(raw, want->count, &h) != 0 || !lmr__part_matches(op, job->part, &h)) {
    job->torn = 1;
    return lmr__conn_end_bulk(conn, err);
  }
  job->seen_id = h.set_id;
  /* An empty part of an empty value: no pointer into a buffer that may be NULL. */
  unsigned char *dst =
      len > 0 ? op->dst + lmr_stripe_offset(want->total_len, want->count, job->part) : NULL;
  return take_bulk(conn, dst, (size_t)len, err);
}

/* SET ... GET's reply: the string it replaced, kept as a HEAD keeps one
 * (its first bytes, its length; nil: none). Its other bytes are skipped. */
static int handle_swap(lmr_key_job *job, lmr_conn *conn, const lmr_reply *r) {
  if (r->type == LMR_REPLY_NIL) return LMR_OK;
  size_t n = (size_t)r->integer;
  size_t keep = n < LMR_STRIPE_HDR_SIZE ? n : LMR_STRIPE_HDR_SIZE;
  job->stored_len = r->integer;
  job->head_n = n;
  int rc = lmr__conn_read_payload(conn, job->head, keep, NULL, &job->base.err);
  return rc == LMR_OK ? lmr__conn_end_bulk(conn, &job->base.err) : rc;
}

/* GET of a verbatim value: into the buffer when it fits; a longer one is
 * skipped (the plan learns its length and decides). */
static int handle_get(lmr_key_job *job, lmr_conn *conn, const lmr_reply *r) {
  if (r->type == LMR_REPLY_NIL) return LMR_OK;
  job->stored_len = r->integer;
  job->placed = (uint64_t)r->integer <= job->op->cap;
  return take_bulk(conn, job->placed ? job->op->dst : NULL, (size_t)r->integer,
                   &job->base.err);
}

/* CONFIG GET name: [name, value] when the setting exists. A server that
 * refuses (no permission, renamed command) leaves integer at -1. */
static int handle_config(lmr_key_job *job, lmr_conn *conn, const lmr_reply *r) {
  lmr_error *err = &job->base.err;
  if (r->type == LMR_REPLY_ERROR) return LMR_OK;
  if (r->type != LMR_REPLY_ARRAY) return unexpected(job, conn, "CONFIG GET");
  for (int64_t i = 0; i < r->integer; i++) {
    lmr_reply e;
    int rc = lmr__conn_read_reply(conn, &e, err);
    if (rc != LMR_OK) return rc;
    if (e.type != LMR_REPLY_BULK) return unexpected(job, conn, "CONFIG GET");
    char text[32] = {0};
    size_t n = (size_t)e.integer < sizeof text - 1 ? (size_t)e.integer : 0;
    if ((rc = lmr__conn_read_payload(conn, n > 0 ? text : NULL, n, NULL, err)) != LMR_OK ||
        (rc = lmr__conn_end_bulk(conn, err)) != LMR_OK)
      return rc;
    if (i == 1 && n > 0) {
      char *end;
      long long v = strtoll(text, &end, 10);
      if (*end == '\0' && v > 0) job->integer = v;
    }
  }
  return LMR_OK;
}

static int handle_reply(lmr_key_job *job, lmr_conn *conn) {
  if (job->kind == LMR_JOB_HEAD) return handle_head(job, conn);
  lmr_error *err = &job->base.err;
  lmr_reply r;
  int rc = read_reply(job, conn, &r, err);
  if (rc != LMR_OK) return rc;
  if (job->kind == LMR_JOB_CONFIG) return handle_config(job, conn, &r);
  if (is_wrongtype(&r) && job->swap) {
    job->wrongtype = 1;  /* a swap or GETDEL of another type: the plan DELs it */
    return LMR_OK;
  }
  if (is_wrongtype(&r) && (job->kind == LMR_JOB_GET || job->kind == LMR_JOB_PART)) {
    job->wrongtype = 1;
    job->torn = 1;
    return LMR_OK;
  }
  if (r.type == LMR_REPLY_ERROR) return server_error(job, &r, kind_name(job->kind), err);
  switch (job->kind) {
    case LMR_JOB_SET:
      if (job->swap && (r.type == LMR_REPLY_NIL || r.type == LMR_REPLY_BULK))
        return handle_swap(job, conn, &r);
      if (!job->swap && r.type == LMR_REPLY_STATUS && strcmp(r.str, "OK") == 0) return LMR_OK;
      break;
    case LMR_JOB_PING:
      if (r.type == LMR_REPLY_STATUS && strcmp(r.str, "PONG") == 0) return LMR_OK;
      break;
    case LMR_JOB_DEL:
      if (job->swap && (r.type == LMR_REPLY_NIL || r.type == LMR_REPLY_BULK)) {
        job->integer = r.type == LMR_REPLY_BULK;
        return handle_swap(job, conn, &r);
      }
      if (!job->swap && r.type == LMR_REPLY_INTEGER) {
        job->integer = r.integer;
        return LMR_OK;
      }
      break;
    case LMR_JOB_GET:
      if (r.type == LMR_REPLY_NIL || r.type == LMR_REPLY_BULK) return handle_get(job, conn, &r);
      break;
    case LMR_JOB_PART:
      if (r.type == LMR_REPLY_BULK) return handle_part(job, conn, &r);
      break;
    case LMR_JOB_HEAD:
    case LMR_JOB_CONFIG:
      break;
  }
  return unexpected(job, conn, kind_name(job->kind));
}

/* No reply may claim more than the server would ever send: at least
 * Redis's default, since a value stored before an operator lowered the
 * server's limit is still sent whole. */
static int64_t reply_limit(const lmr_key_job *job) {
  return job->op->max_bulk > LMR_RESP_MAX_BULK ? job->op->max_bulk : LMR_RESP_MAX_BULK;
}

static void count_sent(const lmr_key_job *job, lmr_conn *conn) {
  if (job->kind != LMR_JOB_SET || job->commit) return;
  const lmr_op *op = job->op;
  LMR__COUNT(conn->stats, bytes_sent,
             op->split && op->count >= 2 ? lmr_stripe_len(op->len, op->count, job->part)
                                         : op->len);
}

/* Whether the job may still be sent: not cancelled, not past its deadline.
 * If not, it ends here with that status. */
static int still_wanted(lmr_key_job *job) {
  lmr_job *base = &job->base;
  if (atomic_load(&base->cancelled)) {
    base->status = lmr__err(&base->err, LMR_ECANCELED, "call was cancelled");
    return 0;
  }
  if (lmr__now_ns() >= job->op->deadline) {
    base->status = lmr__err(&base->err, LMR_ETIMEDOUT, "timed out before %s was sent",
                            kind_name(job->kind));
    return 0;
  }
  return 1;
}

static int run_commands(lmr_key_job *job, lmr_conn *conn) {
  lmr_error *err = &job->base.err;
  int rc = lmr__conn_ensure(conn, err);
  if (rc == LMR_OK) {
    conn->parser.max_bulk = reply_limit(job);
    lmr_cmd cmd;
    encode(job, &cmd, 0);
    rc = lmr__conn_send(conn, &cmd, err);
    if (rc == LMR_OK) count_sent(job, conn);
  }
  if (rc == LMR_OK) rc = handle_reply(job, conn);
  return rc;
}

void lmr__key_job_run(lmr_job *base, void *worker_state) {
  lmr_key_job *job = (lmr_key_job *)base;
  lmr_conn *conn = worker_state;
  conn->deadline = job->op->deadline;
  /* lmr_pool_cancel may set the flag from here on; the connection then
   * fails its I/O with LMR_ECANCELED. */
  conn->cancel = &base->cancelled;
  if (still_wanted(job)) base->status = run_commands(job, conn);
  conn->cancel = NULL;
}

/* Room one small job's commands may take in a lmr_cmd (HEAD, the largest:
 * two commands, the key twice, two numbers). */
#define SMALL_JOB_SCRATCH 192  /* with an ASKING before each command */
#define SMALL_JOB_IOV 16

/* Sends the jobs' commands, as few sends as the command buffer allows. */
static int send_all(lmr_key_job **jobs, int n, lmr_conn *conn, lmr_error *err) {
  lmr_cmd cmd;
  int held = 0;
  for (int i = 0; i < n; i++) {
    if (held && (LMR_CMD_SCRATCH - cmd.used < SMALL_JOB_SCRATCH ||
                 LMR_CMD_MAX_IOV - cmd.iovcnt < SMALL_JOB_IOV)) {
      int rc = lmr__conn_send(conn, &cmd, err);
      if (rc != LMR_OK) return rc;
      held = 0;
    }
    encode(jobs[i], &cmd, held);
    held = 1;
  }
  return held ? lmr__conn_send(conn, &cmd, err) : LMR_OK;
}

/* Most times a run is sent again after its connection broke. */
#define RESENDS 2

/* Ends job k of a run whose connection broke at another job (err): a
 * cancelled job as cancelled, a closed client as closed, anything else as
 * a lost connection, since the command may or may not have run. */
static void lost_with_run(lmr_key_job *job, const lmr_error *err) {
  lmr_job *base = &job->base;
  if (atomic_load(&base->cancelled))
    base->status = lmr__err(&base->err, LMR_ECANCELED, "call was cancelled");
  else if (err->code == LMR_ECLOSED)
    base->status = lmr__err_copy(&base->err, err);
  else
    base->status = lmr__err(&base->err, LMR_ECONN,
                            "connection lost before the reply to %s (%s)", kind_name(job->kind),
                            err->msg);
}

/* A run of small jobs on one connection: every command sent, then every
 * reply read in order, so the run costs about one round trip.
 *
 * Reads (HEAD, PING, CONFIG) and writes (SET, DEL) never share a run (two
 * run_many functions), because a run may be sent again: a HEAD whose two
 * replies disagree closes the connection on purpose (a stray reply may be
 * coming), and the jobs after it go again on a fresh one; and when the
 * connection breaks (a cancel cut it, the server went, a reply timed out),
 * the reads not yet answered go again, at most RESENDS times. Writes are
 * not repeated: after a break, those not answered fail (they may or may
 * not have run). A cancel (lmr_pool_cancel) cuts the connection of a run
 * holding any of the cancelled jobs. */
static void run_many(lmr_job **base, int n, lmr_conn *conn, int may_resend) {
  lmr_key_job *todo[LMR_POOL_RUN_MAX];
  int left = 0, breaks = 0;
  for (int i = 0; i < n; i++) todo[left++] = (lmr_key_job *)base[i];
  conn->cancel = NULL;  /* errors stay as they were: sorted out below */
  while (left > 0) {
    int m = 0;
    int64_t deadline = INT64_MAX, limit = 0;
    for (int i = 0; i < left; i++) {
      if (!still_wanted(todo[i])) continue;
      todo[m++] = todo[i];
      if (todo[i]->op->deadline < deadline) deadline = todo[i]->op->deadline;
      if (reply_limit(todo[i]) > limit) limit = reply_limit(todo[i]);
    }
    if (m == 0) return;
    lmr_error err;
    conn->deadline = deadline;
    int rc = lmr__conn_ensure(conn, &err);
    if (rc == LMR_OK) {
      conn->parser.max_bulk = limit;
      rc = send_all(todo, m, conn, &err);
    }
    if (rc != LMR_OK) {
      for (int i = 0; i < m; i++) lost_with_run(todo[i], &err);
      return;
    }
    left = 0;
    for (int i = 0; i < m; i++) {
      lmr_key_job *job = todo[i];
      count_sent(job, conn);
      conn->deadline = job->op->deadline;
      job->base.status = handle_reply(job, conn);
      if (conn->fd >= 0) continue;
      if (job->base.status == LMR_OK) {  /* closed on purpose: the rest go again */
        for (int k = i + 1; k < m; k++) todo[left++] = todo[k];
        break;
      }
      /* The stream broke at job i: its error is its own unless a cancel
       * cut the connection; the replies after it are lost. */
      err = job->base.err;
      int cut = 0;
      for (int k = i; k < m; k++) cut |= atomic_load(&todo[k]->base.cancelled);
      int again = may_resend && breaks++ < RESENDS;
      for (int k = cut ? i : i + 1; k < m; k++) {
        if (again && !atomic_load(&todo[k]->base.cancelled)) todo[left++] = todo[k];
        else lost_with_run(todo[k], &err);
      }
      break;
    }
  }
}

void lmr__key_reads_run_many(lmr_job **jobs, int n, void *worker_state) {
  run_many(jobs, n, worker_state, 1);
}

void lmr__key_writes_run_many(lmr_job **jobs, int n, void *worker_state) {
  run_many(jobs, n, worker_state, 0);
}
