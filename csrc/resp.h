/*
 * RESP2 codec, free of I/O.
 *
 * Encoder: builds a command as an iovec list. Small pieces (the "*N", "$len"
 * headers, CRLFs, short literals) live in the command's own scratch space;
 * large pieces (keys, values) are referenced where they are, never copied.
 *
 * Parser: fed bytes, it yields reply headers one at a time. A bulk string's
 * payload is never buffered here: after LMR_REPLY_BULK the caller moves the
 * payload itself (from its read-ahead with lmr_resp_take_payload, or straight
 * from the socket into its final place, then lmr_resp_payload_done), and the
 * parser checks the trailing CRLF. Arrays yield their count; their elements
 * follow as ordinary replies.
 */
#ifndef LMR_RESP_H
#define LMR_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* ---- encoder ---- */

/* Room for an encoded value (two pieces per part, 256 parts) and the
 * command around it. */
#define LMR_CMD_MAX_IOV 544
#define LMR_CMD_SCRATCH 512

typedef struct {
  struct iovec iov[LMR_CMD_MAX_IOV];
  int iovcnt;
  int ncmds;       /* commands in it (lmr_cmd_next pipelines more) */
  size_t total;    /* bytes in all iovecs */
  size_t used;     /* scratch bytes used */
  int overflow;    /* set when iov or scratch ran out: the command is invalid */
  char scratch[LMR_CMD_SCRATCH];
} lmr_cmd;

/* Starts a command of argc arguments. */
void lmr_cmd_init(lmr_cmd *c, int argc);
/* Starts another command of argc arguments after the last one, to be sent
 * with it (a pipeline; the replies come back in order). */
void lmr_cmd_next(lmr_cmd *c, int argc);
/* One argument made of nparts pieces, referenced (not copied). */
void lmr_cmd_arg_parts(lmr_cmd *c, const struct iovec *parts, int nparts);
/* One argument from a single referenced piece. */
void lmr_cmd_arg(lmr_cmd *c, const void *p, size_t n);
/* One short argument copied into scratch (command names, numbers). */
void lmr_cmd_arg_copy(lmr_cmd *c, const char *s);
void lmr_cmd_arg_int(lmr_cmd *c, int64_t v);

/* ---- parser ---- */

typedef enum {
  LMR_REPLY_NONE = 0,  /* need more bytes */
  LMR_REPLY_STATUS,    /* +text: str/len */
  LMR_REPLY_ERROR,     /* -text: str/len */
  LMR_REPLY_INTEGER,   /* :n: integer */
  LMR_REPLY_NIL,       /* $-1 or *-1 */
  LMR_REPLY_BULK,      /* $n header: integer = n; payload follows */
  LMR_REPLY_ARRAY,     /* *n: integer = n elements follow */
  LMR_REPLY_BULK_END,  /* the CRLF after a bulk payload was checked */
} lmr_reply_type;

/* Simple-string and error texts keep this many bytes less one (the NUL); longer lines are
 * consumed whole and truncated. */
#define LMR_RESP_LINE_MAX 256
/* Longest bulk payload accepted unless the parser is told otherwise
 * (max_bulk): Redis's own default proto-max-bulk-len. */
#define LMR_RESP_MAX_BULK (512ll * 1024 * 1024)
/* Longest array accepted. */
#define LMR_RESP_MAX_ARRAY (1ll << 24)

typedef struct {
  lmr_reply_type type;
  int64_t integer;
  const char *str;  /* STATUS/ERROR text, valid until the next feed */
  size_t len;
} lmr_reply;

typedef struct {
  int state;
  int broken;                  /* sticky: once set every call fails */
  char type;                   /* type byte of the line being read */
  size_t line_len;             /* bytes of the line kept in `line` */
  int64_t remaining;           /* payload bytes still to come */
  int64_t max_bulk;            /* longest bulk accepted; LMR_RESP_MAX_BULK at init */
  char line[LMR_RESP_LINE_MAX];
} lmr_resp_parser;

void lmr_resp_parser_init(lmr_resp_parser *p);

/* Parses from in[0..n). Returns bytes consumed (>= 0) and sets *out; out->type
 * is LMR_REPLY_NONE when all input was consumed without completing a reply.
 * Returns -1 on malformed input (the parser is then broken for good).
 * Must not be called while payload bytes are pending (see below). */
long lmr_resp_feed(lmr_resp_parser *p, const char *in, size_t n, lmr_reply *out);

/* Payload bytes still expected (0 when none pending). */
int64_t lmr_resp_payload_pending(const lmr_resp_parser *p);
/* Moves up to `want` pending payload bytes from in[0..n) to dst (NULL
 * discards them). Returns bytes consumed. */
size_t lmr_resp_take_payload(lmr_resp_parser *p, const char *in, size_t n,
                             void *dst, size_t want);
/* Records k payload bytes the caller delivered itself (k <= pending). */
void lmr_resp_payload_done(lmr_resp_parser *p, size_t k);

#endif
