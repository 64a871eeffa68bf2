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

static int copy_text(lmr__value *v, const char *s, size_t n, budget *b, lmr_conn *conn,
                     lmr_error *err) {
  if (n > b->bytes)
    return abandon(conn, lmr__err(err, LMR_EPROTO, "reply too large (over %u bytes of strings)",
                                  LMR__VALUE_MAX_BYTES));
  b->bytes -= n;
  v->str = malloc(n + 1);
  if (v->str == NULL) return abandon(conn, lmr__err(err, LMR_ENOMEM, "out of memory reading a reply"));
  if (n > 0) memcpy(v->str, s, n);
  v->str[n] = '\0';
  v->len = n;
  return LMR_OK;
}

/* Reads one value into *v (zeroed by the caller); depth: arrays around it.
 * On failure *v holds what was read, for value_clear. */
static int read_value(lmr_conn *conn, lmr__value *v, int depth, budget *b, lmr_error *err) {
  if (b->elems == 0)
    return abandon(conn, lmr__err(err, LMR_EPROTO, "reply too large (over %u values)",
                                  LMR__VALUE_MAX_ELEMS));
  b->elems--;
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
      return copy_text(v, r.str, r.len, b, conn, err);
    case LMR_REPLY_BULK: {
      v->type = LMR__VALUE_STRING;
      if (r.integer < 0 || (uint64_t)r.integer > b->bytes)
        return abandon(conn, lmr__err(err, LMR_EPROTO, "reply too large (over %u bytes of strings)",
                                      LMR__VALUE_MAX_BYTES));
      size_t n = (size_t)r.integer;
      b->bytes -= n;
      v->str = malloc(n + 1);
      if (v->str == NULL)
        return abandon(conn, lmr__err(err, LMR_ENOMEM, "out of memory reading a reply"));
      v->len = n;
      v->str[n] = '\0';
      rc = lmr__conn_read_payload(conn, v->str, n, NULL, err);
      if (rc == LMR_OK) rc = lmr__conn_end_bulk(conn, err);
      return rc;
    }
    case LMR_REPLY_ARRAY: {
      v->type = LMR__VALUE_ARRAY;
      if (depth >= LMR__VALUE_MAX_DEPTH)
        return abandon(conn, lmr__err(err, LMR_EPROTO, "reply nested too deep (over %d arrays)",
                                      LMR__VALUE_MAX_DEPTH));
      /* The count is checked before anything is allocated for it. */
      if (r.integer < 0 || (uint64_t)r.integer > b->elems)
        return abandon(conn, lmr__err(err, LMR_EPROTO, "reply too large (over %u values)",
                                      LMR__VALUE_MAX_ELEMS));
      size_t n = (size_t)r.integer;
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
  budget b = {LMR__VALUE_MAX_ELEMS, LMR__VALUE_MAX_BYTES};
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
