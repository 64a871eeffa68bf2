/* A whole RESP2 reply read into a small tree, for the few replies whose
 * shape the client must walk (CLUSTER SHARDS, CLUSTER SLOTS). The data
 * path never uses it: values' payloads go straight to their buffers
 * (conn.h).
 *
 * Bounded, since a reply's shape comes from the network: at most
 * LMR__VALUE_MAX_DEPTH nested arrays, LMR__VALUE_MAX_ELEMS values in all
 * and LMR__VALUE_MAX_BYTES bytes of strings in all. A reply past a bound
 * fails with LMR_EPROTO and the connection is closed, since the rest of
 * the reply is still on it.
 */
#ifndef LMR_VALUE_H
#define LMR_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"

#define LMR__VALUE_MAX_DEPTH 8
#define LMR__VALUE_MAX_ELEMS (1u << 20)
#define LMR__VALUE_MAX_BYTES (4u << 20)

typedef enum {
  LMR__VALUE_NIL,      /* $-1 or *-1 */
  LMR__VALUE_INTEGER,  /* :n */
  LMR__VALUE_STRING,   /* $n bulk string */
  LMR__VALUE_STATUS,   /* +text */
  LMR__VALUE_ERROR,    /* -text: the server's error, as a value */
  LMR__VALUE_ARRAY,    /* *n */
} lmr__value_type;

typedef struct lmr__value {
  lmr__value_type type;
  int64_t integer;            /* INTEGER */
  char *str;                  /* STRING, STATUS, ERROR: len bytes and a NUL
                                 (a bulk string may hold NULs too) */
  size_t len;
  struct lmr__value *elems;   /* ARRAY: n elements (NULL when n == 0) */
  size_t n;
} lmr__value;

/* Reads one whole reply from conn (a command was sent on it) into a new
 * tree, *out, to be freed with lmr__value_free. A server error reply is a
 * value (LMR__VALUE_ERROR), not a failure; its text is the first
 * LMR_RESP_LINE_MAX - 1 bytes. On failure *out is NULL: I/O errors and
 * timeouts as conn.h reports them (conn->deadline bounds the wait),
 * LMR_EPROTO for a malformed or oversized reply, LMR_ENOMEM; the
 * connection is closed whenever the reply was not read to its end. */
int lmr__value_read(lmr_conn *conn, lmr__value **out, lmr_error *err);
void lmr__value_free(lmr__value *v);

/* Helpers for walking a tree; all accept NULL. */
/* 1 when v is a STRING or STATUS equal to the NUL-terminated s. */
int lmr__value_is(const lmr__value *v, const char *s);
/* In an ARRAY of alternating names and values (a RESP2 map), the value
 * after the first name equal to `name`, or NULL. */
const lmr__value *lmr__value_field(const lmr__value *map, const char *name);

#endif
