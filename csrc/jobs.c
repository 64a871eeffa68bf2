/* Key jobs (jobs.h): encode one command, send it, and take its reply apart,
 * placing GET payloads straight into the op's buffer. */
#include <string.h>

#include "conn.h"
#include "jobs.h"

void lmr__op_init(lmr_op *op, const void *key, size_t key_len, double timeout) {
  memset(op, 0, sizeof *op);
  op->key = key;
  op->key_len = key_len;
  op->deadline = lmr__deadline(timeout);
  pthread_mutex_init(&op->layout_mu, NULL);
}

void lmr__op_destroy(lmr_op *op) { pthread_mutex_destroy(&op->layout_mu); }

void lmr__key_job_init(lmr_key_job *job, lmr_op *op, lmr_job_kind kind, int32_t stripe) {
  memset(job, 0, sizeof *job);
  job->base.run = lmr__key_job_run;
  job->op = op;
  job->kind = kind;
  job->stripe = stripe;
}

static const char *kind_name(lmr_job_kind kind) {
  switch (kind) {
    case LMR_JOB_SET: return "SET";
    case LMR_JOB_GET: return "GET";
    case LMR_JOB_DEL: return "DEL";
    case LMR_JOB_EXISTS: return "EXISTS";
    case LMR_JOB_PROBE: return "GETRANGE";
  }
  return "?";
}

/* Builds the command. `suffix` and `hdr` must outlive the send. */
static void encode(lmr_key_job *job, lmr_cmd *cmd, char *suffix,
                   unsigned char hdr[LMR_STRIPE_HDR_SIZE]) {
  lmr_op *op = job->op;
  struct iovec key[2] = {{.iov_base = (void *)op->key, .iov_len = op->key_len}};
  int key_parts = 1;
  if (job->stripe >= 0) {
    key[1].iov_base = suffix;
    key[1].iov_len = lmr_stripe_suffix((uint32_t)job->stripe, suffix);
    key_parts = 2;
  }
  switch (job->kind) {
    case LMR_JOB_SET: {
      struct iovec value[2];
      int value_parts = 0;
      if (job->stripe < 0) {
        value[value_parts++] = (struct iovec){(void *)op->src, op->len};
      } else {
        uint32_t i = (uint32_t)job->stripe;
        lmr_stripe_hdr h = {.index = i, .count = op->count, .total_len = op->len,
                            .set_id = op->set_id};
        lmr_stripe_hdr_encode(&h, hdr);
        value[value_parts++] = (struct iovec){hdr, LMR_STRIPE_HDR_SIZE};
        value[value_parts++] =
            (struct iovec){(void *)(op->src + lmr_stripe_offset(op->len, op->count, i)),
                           lmr_stripe_len(op->len, op->count, i)};
      }
      lmr_cmd_init(cmd, op->ttl_ms > 0 ? 5 : 3);
      lmr_cmd_arg_copy(cmd, "SET");
      lmr_cmd_arg_parts(cmd, key, key_parts);
      lmr_cmd_arg_parts(cmd, value, value_parts);
      if (op->ttl_ms > 0) {
        lmr_cmd_arg_copy(cmd, "PX");
        lmr_cmd_arg_int(cmd, op->ttl_ms);
      }
      return;
    }
    case LMR_JOB_PROBE:
      lmr_cmd_init(cmd, 4);
      lmr_cmd_arg_copy(cmd, "GETRANGE");
      lmr_cmd_arg_parts(cmd, key, key_parts);
      lmr_cmd_arg_copy(cmd, "0");
      lmr_cmd_arg_int(cmd, LMR_STRIPE_HDR_SIZE - 1);
      return;
    default:
      lmr_cmd_init(cmd, 2);
      lmr_cmd_arg_copy(cmd, kind_name(job->kind));
      lmr_cmd_arg_parts(cmd, key, key_parts);
      return;
  }
}

/* Reads a stripe's header from the bulk payload and decides where (if
 * anywhere) the rest of the payload goes. Returns the destination, or NULL
 * with job->torn set or an error in job->base.status. */
static unsigned char *place_stripe(lmr_key_job *job, lmr_conn *conn, int64_t bulk_len) {
  lmr_op *op = job->op;
  unsigned char raw[LMR_STRIPE_HDR_SIZE];
  if (bulk_len < LMR_STRIPE_HDR_SIZE) {
    job->torn = 1;
    return NULL;
  }
  job->base.status = lmr__conn_read_payload(conn, raw, sizeof raw, NULL, &job->base.err);
  if (job->base.status != LMR_OK) return NULL;
  lmr_stripe_hdr h;
  if (lmr_stripe_hdr_decode(raw, LMR_MAX_STRIPES, &h) != 0 ||
      h.index != (uint32_t)job->stripe ||
      lmr_stripe_len(h.total_len, h.count, h.index) !=
          (uint64_t)(bulk_len - LMR_STRIPE_HDR_SIZE)) {
    job->torn = 1;
    return NULL;
  }
  job->hdr = h;
  job->hdr_valid = 1;
  if (h.total_len > op->cap) {
    job->base.status = lmr__err(&job->base.err, LMR_ETOOBIG,
                           "value is %llu bytes but the buffer holds %zu bytes",
                           (unsigned long long)h.total_len, op->cap);
    job->base.err.needed = h.total_len;
    return NULL;
  }
  pthread_mutex_lock(&op->layout_mu);
  if (!op->layout_set) {
    op->layout = h;
    op->layout_set = 1;
  } else if (op->layout.set_id != h.set_id || op->layout.count != h.count ||
             op->layout.total_len != h.total_len) {
    job->torn = 1;
  }
  pthread_mutex_unlock(&op->layout_mu);
  if (job->torn) return NULL;
  return op->dst + lmr_stripe_offset(h.total_len, h.count, h.index);
}

static int handle_get(lmr_key_job *job, lmr_conn *conn, const lmr_reply *r) {
  lmr_op *op = job->op;
  lmr_error *err = &job->base.err;
  if (r->type == LMR_REPLY_NIL) {
    job->nil = 1;
    return LMR_OK;
  }
  unsigned char *dst;
  if (job->stripe < 0) {
    if ((uint64_t)r->integer > op->cap) {
      job->base.status = lmr__err(err, LMR_ETOOBIG,
                             "value is %lld bytes but the buffer holds %zu bytes",
                             (long long)r->integer, op->cap);
      err->needed = (uint64_t)r->integer;
      dst = NULL;
    } else {
      job->value_len = (uint64_t)r->integer;
      dst = op->dst;
    }
  } else {
    dst = place_stripe(job, conn, r->integer);
    if (job->base.status != LMR_OK && job->base.status != LMR_ETOOBIG) return job->base.status;
  }
  if (dst != NULL) {
    size_t n = (size_t)lmr_resp_payload_pending(&conn->parser), copied = 0;
    int rc = lmr__conn_read_payload(conn, dst, n, &copied, err);
    if (rc != LMR_OK) return rc;
    LMR__COUNT(conn->stats, bytes_received, n);
    LMR__COUNT(conn->stats, bytes_copied, copied);
  }
  /* A payload not placed (torn, too big) is skipped here; the connection
   * stays in step and usable. */
  int rc = lmr__conn_end_bulk(conn, err);
  return rc != LMR_OK ? rc : job->base.status;
}

static int handle_probe(lmr_key_job *job, lmr_conn *conn, const lmr_reply *r) {
  lmr_error *err = &job->base.err;
  if (r->type == LMR_REPLY_NIL || r->integer == 0) { /* GETRANGE of no key: "" */
    job->nil = 1;
    return r->type == LMR_REPLY_NIL ? LMR_OK : lmr__conn_end_bulk(conn, err);
  }
  if (r->integer == LMR_STRIPE_HDR_SIZE) {
    unsigned char raw[LMR_STRIPE_HDR_SIZE];
    int rc = lmr__conn_read_payload(conn, raw, sizeof raw, NULL, err);
    if (rc != LMR_OK) return rc;
    job->hdr_valid = lmr_stripe_hdr_decode(raw, LMR_MAX_STRIPES, &job->hdr) == 0;
  }
  return lmr__conn_end_bulk(conn, err);
}

static int handle_reply(lmr_key_job *job, lmr_conn *conn) {
  lmr_error *err = &job->base.err;
  lmr_reply r;
  int rc = lmr__conn_read_reply(conn, &r, err);
  if (rc != LMR_OK) return rc;
  if (r.type == LMR_REPLY_ERROR) return lmr__conn_server_error(&r, kind_name(job->kind), err);
  switch (job->kind) {
    case LMR_JOB_SET:
      if (r.type == LMR_REPLY_STATUS && strcmp(r.str, "OK") == 0) return LMR_OK;
      break;
    case LMR_JOB_DEL:
    case LMR_JOB_EXISTS:
      if (r.type == LMR_REPLY_INTEGER) {
        job->integer = r.integer;
        return LMR_OK;
      }
      break;
    case LMR_JOB_GET:
      if (r.type == LMR_REPLY_NIL || r.type == LMR_REPLY_BULK) return handle_get(job, conn, &r);
      break;
    case LMR_JOB_PROBE:
      if (r.type == LMR_REPLY_NIL || r.type == LMR_REPLY_BULK) return handle_probe(job, conn, &r);
      break;
  }
  /* A reply of the wrong type leaves the stream's state unknown. */
  lmr__conn_close(conn);
  return lmr__err(err, LMR_EPROTO, "unexpected reply type to %s", kind_name(job->kind));
}

void lmr__key_job_run(lmr_job *base, void *worker_state) {
  lmr_key_job *job = (lmr_key_job *)base;
  lmr_conn *conn = worker_state;
  lmr_error *err = &base->err;
  job->base.status = LMR_OK;
  conn->deadline = job->op->deadline;
  if (lmr__now_ns() >= conn->deadline) {
    base->status = lmr__err(err, LMR_ETIMEDOUT, "timed out before %s was sent",
                            kind_name(job->kind));
    return;
  }
  int rc = lmr__conn_ensure(conn, err);
  if (rc == LMR_OK) {
    lmr_cmd cmd;
    char suffix[LMR_STRIPE_SUFFIX_MAX];
    unsigned char hdr[LMR_STRIPE_HDR_SIZE];
    encode(job, &cmd, suffix, hdr);
    rc = lmr__conn_send(conn, &cmd, err);
    if (rc == LMR_OK && job->kind == LMR_JOB_SET)
      LMR__COUNT(conn->stats, bytes_sent, job->stripe < 0 ? job->op->len
                 : lmr_stripe_len(job->op->len, job->op->count, (uint32_t)job->stripe));
  }
  if (rc == LMR_OK) rc = handle_reply(job, conn);
  base->status = rc;
}
