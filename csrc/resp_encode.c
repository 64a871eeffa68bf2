/* RESP2 command encoder: an iovec list, small pieces in scratch, big ones
 * referenced in place. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "resp.h"

static void push_iov(lmr_cmd *c, const void *p, size_t n) {
  if (n == 0) return;
  if (c->iovcnt == LMR_CMD_MAX_IOV) {
    c->overflow = 1;
    return;
  }
  c->iov[c->iovcnt].iov_base = (void *)p;
  c->iov[c->iovcnt].iov_len = n;
  c->iovcnt++;
  c->total += n;
}

/* Appends bytes to scratch; adjacent scratch pieces share one iovec. */
static void push_scratch(lmr_cmd *c, const char *s, size_t n) {
  if (n > LMR_CMD_SCRATCH - c->used) {
    c->overflow = 1;
    return;
  }
  char *dst = c->scratch + c->used;
  memcpy(dst, s, n);
  c->used += n;
  struct iovec *last = c->iovcnt > 0 ? &c->iov[c->iovcnt - 1] : NULL;
  if (last != NULL && (char *)last->iov_base + last->iov_len == dst) {
    last->iov_len += n;
    c->total += n;
  } else {
    push_iov(c, dst, n);
  }
}

static void push_header(lmr_cmd *c, char kind, uint64_t n) {
  char buf[32];
  int k = snprintf(buf, sizeof buf, "%c%" PRIu64 "\r\n", kind, n);
  push_scratch(c, buf, (size_t)k);
}

void lmr_cmd_init(lmr_cmd *c, int argc) {
  c->iovcnt = 0;
  c->ncmds = 1;
  c->total = 0;
  c->used = 0;
  c->overflow = 0;
  push_header(c, '*', (uint64_t)argc);
}

void lmr_cmd_next(lmr_cmd *c, int argc) {
  c->ncmds++;
  push_header(c, '*', (uint64_t)argc);
}

void lmr_cmd_arg_parts(lmr_cmd *c, const struct iovec *parts, int nparts) {
  uint64_t n = 0;
  for (int i = 0; i < nparts; i++) n += parts[i].iov_len;
  push_header(c, '$', n);
  for (int i = 0; i < nparts; i++) push_iov(c, parts[i].iov_base, parts[i].iov_len);
  push_scratch(c, "\r\n", 2);
}

void lmr_cmd_arg(lmr_cmd *c, const void *p, size_t n) {
  struct iovec part = {.iov_base = (void *)p, .iov_len = n};
  lmr_cmd_arg_parts(c, &part, 1);
}

void lmr_cmd_arg_copy(lmr_cmd *c, const char *s) {
  size_t n = strlen(s);
  push_header(c, '$', n);
  push_scratch(c, s, n);
  push_scratch(c, "\r\n", 2);
}

void lmr_cmd_arg_int(lmr_cmd *c, int64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "%" PRId64, v);
  lmr_cmd_arg_copy(c, buf);
}
