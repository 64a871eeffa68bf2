/* Reply trees (value.h). */
#include "value.h"

#include <stdlib.h>
#include <string.h>

/* What is left of the bounds for the reply being read. */
typedef struct {
  size_t elems;
  size_t bytes;
} budget;

static void value_clear(lmr__value *v) {
  if (v->type == LMR__VALUE_ARRAY) {
    for (size_t i = 0; i < v->n; i++) value_clear(&v->elems[i]);
    free(v->elems);
  } else {
    free(v->str);
  }
}

void lmr__value_free(lmr__value *v) {
  if (v == NULL) return;
  value_clear(v);
  free(v);
}

/* A failure that leaves part of the reply unread: the connection would
 * hand the rest to the next command, so it goes. (conn.h's own failures
 * have closed it already; closing twice is harmless.) */
static int abandon(lmr_conn *conn, int rc) {
  lmr__conn_close(conn);
  return rc;
}

/* Room for a string of n bytes in v (NUL-terminated), within the budget. */
static int alloc_text(lmr__value *v, uint64_t n, budget *b, lmr_conn *conn, lmr_error *err) {
  if (n > b->bytes)
    return abandon(conn, lmr__err(err, LMR_EPROTO, "reply too large (over %u bytes of strings)",
                                  LMR__VALUE_MAX_BYTES));
  b->bytes -= (size_t)n;
  v->str = malloc((size_t)n + 1);
  if (v->str == NULL) return abandon(conn, lmr__err(err, LMR_ENOMEM, "out of memory reading a reply"));
  v->str[n] = '\0';
  v->len = (size_t)n;
  return LMR_OK;
}

/* Reads one value into *v (zeroed by the caller, and already counted in
 * the budget's values); depth: arrays around it. On failure *v holds what
 * was read, for value_clear. */
static int read_value(lmr_conn *conn, lmr__value *v, int depth, budget *b, lmr_error *err) {
  lmr_reply r;
  int rc = lmr__conn_read_reply(conn, &r, err);
  if (rc != LMR_OK) return rc;
  switch (r.type) {
    case LMR_REPLY_NIL:
      v->type = LMR__VALUE_NIL;
      return LMR_OK;
    case LMR_REPLY_INTEGER:
      v->type = LMR__VALUE_INTEGER;
      v->integer = r.integer;
      return LMR_OK;
    case LMR_REPLY_STATUS:
    case LMR_REPLY_ERROR:
      v->type = r.type == LMR_REPLY_STATUS ? LMR__VALUE_STATUS : LMR__VALUE_ERROR;
      if ((rc = alloc_text(v, r.len, b, conn, err)) != LMR_OK) return rc;
      if (r.len > 0) memcpy(v->str, r.str, r.len);
      return LMR_OK;
    case LMR_REPLY_BULK:
      v->type = LMR__VALUE_STRING;
      if ((rc = alloc_text(v, r.integer < 0 ? UINT64_MAX : (uint64_t)r.integer, b, conn, err)) !=
          LMR_OK)
        return rc;
      rc = lmr__conn_read_payload(conn, v->str, v->len, NULL, err);
      if (rc == LMR_OK) rc = lmr__conn_end_bulk(conn, err);
      return rc;
    case LMR_REPLY_ARRAY: {
      v->type = LMR__VALUE_ARRAY;
      if (depth >= LMR__VALUE_MAX_DEPTH)
        return abandon(conn, lmr__err(err, LMR_EPROTO, "reply nested too deep (over %d arrays)",
                                      LMR__VALUE_MAX_DEPTH));
      /* The count is taken from the budget before anything is allocated
       * for it: nested arrays that each claim the most cannot allocate
       * more than one such claim between them. */
      if (r.integer < 0 || (uint64_t)r.integer > b->elems)
        return abandon(conn, lmr__err(err, LMR_EPROTO, "reply too large (over %u values)",
                                      LMR__VALUE_MAX_ELEMS));
      size_t n = (size_t)r.integer;
      b->elems -= n;
      if (n == 0) return LMR_OK;
      v->elems = calloc(n, sizeof *v->elems);
      if (v->elems == NULL)
        return abandon(conn, lmr__err(err, LMR_ENOMEM, "out of memory reading a reply"));
      for (size_t i = 0; i < n; i++) {
        v->n = i + 1;  /* elems[i] is cleared on failure too */
        rc = read_value(conn, &v->elems[i], depth + 1, b, err);
        if (rc != LMR_OK) return rc;
      }
      return LMR_OK;
    }
    default:
      return abandon(conn, lmr__err(err, LMR_EPROTO, "unexpected reply type %d", (int)r.type));
  }
}

int lmr__value_read(lmr_conn *conn, lmr__value **out, lmr_error *err) {
  *out = NULL;
  lmr__value *v = calloc(1, sizeof *v);
  if (v == NULL) return abandon(conn, lmr__err(err, LMR_ENOMEM, "out of memory reading a reply"));
  budget b = {LMR__VALUE_MAX_ELEMS - 1, LMR__VALUE_MAX_BYTES};  /* less the top value */
  int rc = read_value(conn, v, 0, &b, err);
  if (rc != LMR_OK) {
    lmr__value_free(v);
    return rc;
  }
  *out = v;
  return LMR_OK;
}

int lmr__value_is(const lmr__value *v, const char *s) {
  if (v == NULL || (v->type != LMR__VALUE_STRING && v->type != LMR__VALUE_STATUS)) return 0;
  size_t n = strlen(s);
  return v->len == n && memcmp(v->str, s, n) == 0;
}

const lmr__value *lmr__value_field(const lmr__value *map, const char *name) {
  if (map == NULL || map->type != LMR__VALUE_ARRAY) return NULL;
  for (size_t i = 0; i + 1 < map->n; i += 2)
    if (lmr__value_is(&map->elems[i], name)) return &map->elems[i + 1];
  return NULL;
}
