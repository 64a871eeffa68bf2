/* RESP2 reply parser: a byte-at-a-time state machine that never buffers a
 * bulk payload (see resp.h for the payload hand-off). */
#include <string.h>

#include "resp.h"

enum {
  S_TYPE,        /* next byte is a type byte */
  S_LINE,        /* inside a header line, before its CR */
  S_LINE_LF,     /* header line's CR seen, LF must follow */
  S_PAYLOAD,     /* bulk payload bytes pending (moved by the caller) */
  S_PAYLOAD_CR,  /* payload complete, CR must follow */
  S_PAYLOAD_LF,  /* payload's CR seen, LF must follow */
};

/* Longest number line: "-9223372036854775808" is 20 bytes. */
#define NUMBER_LINE_MAX 20

void lmr_resp_parser_init(lmr_resp_parser *p) {
  memset(p, 0, sizeof *p);
  p->state = S_TYPE;
  p->max_bulk = LMR_RESP_MAX_BULK;
}

static long fail(lmr_resp_parser *p) {
  p->broken = 1;
  return -1;
}

/* Parses a signed decimal with no sign but '-', no spaces, no overflow. */
static int parse_int(const char *s, size_t n, int64_t *out) {
  size_t i = 0;
  int neg = 0;
  if (n > 0 && s[0] == '-') {
    neg = 1;
    i = 1;
  }
  if (i == n) return -1;
  uint64_t v = 0;
  uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (limit - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return 0;
}

/* A whole header line sits in p->line: turn it into a reply. */
static int finish_line(lmr_resp_parser *p, lmr_reply *out) {
  p->line[p->line_len] = '\0';
  switch (p->type) {
    case '+':
    case '-':
      out->type = p->type == '+' ? LMR_REPLY_STATUS : LMR_REPLY_ERROR;
      out->str = p->line;
      out->len = p->line_len;
      p->state = S_TYPE;
      return 0;
    case ':':
      if (parse_int(p->line, p->line_len, &out->integer) != 0) return -1;
      out->type = LMR_REPLY_INTEGER;
      p->state = S_TYPE;
      return 0;
    case '$':
    case '*': {
      int64_t n;
      if (parse_int(p->line, p->line_len, &n) != 0 || n < -1) return -1;
      if (n == -1) {
        out->type = LMR_REPLY_NIL;
        p->state = S_TYPE;
        return 0;
      }
      out->integer = n;
      if (p->type == '*') {
        if (n > LMR_RESP_MAX_ARRAY) return -1;
        out->type = LMR_REPLY_ARRAY;
        p->state = S_TYPE;
      } else {
        if (n > p->max_bulk) return -1;
        out->type = LMR_REPLY_BULK;
        p->remaining = n;
        p->state = n > 0 ? S_PAYLOAD : S_PAYLOAD_CR;
      }
      return 0;
    }
    default:
      return -1;
  }
}

long lmr_resp_feed(lmr_resp_parser *p, const char *in, size_t n, lmr_reply *out) {
  out->type = LMR_REPLY_NONE;
  out->str = NULL;
  out->len = 0;
  if (p->broken || p->state == S_PAYLOAD) return fail(p);
  size_t i = 0;
  while (i < n) {
    char ch = in[i++];
    switch (p->state) {
      case S_TYPE:
        if (ch != '+' && ch != '-' && ch != ':' && ch != '$' && ch != '*') return fail(p);
        p->type = ch;
        p->line_len = 0;
        p->state = S_LINE;
        break;
      case S_LINE:
        if (ch == '\r') {
          p->state = S_LINE_LF;
        } else if (ch == '\n') {
          return fail(p);
        } else if (p->type != '+' && p->type != '-' && p->line_len == NUMBER_LINE_MAX) {
          return fail(p);
        } else if (p->line_len < LMR_RESP_LINE_MAX - 1) {
          p->line[p->line_len++] = ch; /* the rest of a long text is dropped */
        }
        break;
      case S_LINE_LF:
        if (ch != '\n' || finish_line(p, out) != 0) return fail(p);
        return (long)i;
      case S_PAYLOAD_CR:
        if (ch != '\r') return fail(p);
        p->state = S_PAYLOAD_LF;
        break;
      case S_PAYLOAD_LF:
        if (ch != '\n') return fail(p);
        p->state = S_TYPE;
        out->type = LMR_REPLY_BULK_END;
        return (long)i;
      default:
        return fail(p);
    }
  }
  return (long)i;
}

int64_t lmr_resp_payload_pending(const lmr_resp_parser *p) {
  return p->state == S_PAYLOAD ? p->remaining : 0;
}

size_t lmr_resp_take_payload(lmr_resp_parser *p, const char *in, size_t n,
                             void *dst, size_t want) {
  if (p->state != S_PAYLOAD) return 0;
  size_t k = n < want ? n : want;
  if ((int64_t)k > p->remaining) k = (size_t)p->remaining;
  if (dst != NULL && k > 0) memcpy(dst, in, k);
  lmr_resp_payload_done(p, k);
  return k;
}

void lmr_resp_payload_done(lmr_resp_parser *p, size_t k) {
  if (p->state != S_PAYLOAD) return;
  p->remaining -= (int64_t)k;
  if (p->remaining <= 0) {
    p->remaining = 0;
    p->state = S_PAYLOAD_CR;
  }
}
