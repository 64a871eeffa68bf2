/* Whole replies read into trees (csrc/value.h), over a socketpair. */
#include "sock_conn.h"
#include "test.h"
#include "value.h"

/* Reads one reply from bytes fed whole. */
static int read_fed(sock_conn *s, const void *bytes, size_t n, lmr__value **v, lmr_error *err) {
  if (sock_conn_feed(s, bytes, n) != 0) return 99;
  return lmr__value_read(&s->conn, v, err);
}

TEST(every_type) {
  sock_conn s;
  ASSERT_EQ(sock_conn_open(&s), 0);
  static const char r[] = "*7\r\n:42\r\n$3\r\nabc\r\n+OK\r\n-ERR boom\r\n$-1\r\n*0\r\n$3\r\na\0b\r\n";
  lmr__value *v;
  lmr_error err;
  ASSERT_EQ(read_fed(&s, r, sizeof r - 1, &v, &err), LMR_OK);
  ASSERT_EQ(v->type, LMR__VALUE_ARRAY);
  ASSERT_EQ(v->n, 7);
  ASSERT_EQ(v->elems[0].type, LMR__VALUE_INTEGER);
  ASSERT_EQ(v->elems[0].integer, 42);
  ASSERT_EQ(v->elems[1].type, LMR__VALUE_STRING);
  ASSERT(lmr__value_is(&v->elems[1], "abc"));
  ASSERT_EQ(v->elems[1].str[3], '\0');
  ASSERT_EQ(v->elems[2].type, LMR__VALUE_STATUS);
  ASSERT(lmr__value_is(&v->elems[2], "OK"));
  ASSERT_EQ(v->elems[3].type, LMR__VALUE_ERROR);  /* a value, not a failure */
  ASSERT(strcmp(v->elems[3].str, "ERR boom") == 0);
  ASSERT(!lmr__value_is(&v->elems[3], "ERR boom"));  /* only strings compare */
  ASSERT_EQ(v->elems[4].type, LMR__VALUE_NIL);
  ASSERT_EQ(v->elems[5].type, LMR__VALUE_ARRAY);
  ASSERT_EQ(v->elems[5].n, 0);
  ASSERT_EQ(v->elems[6].len, 3);
  ASSERT_MEM_EQ(v->elems[6].str, "a\0b", 3);
  lmr__value_free(v);
  ASSERT(s.conn.fd >= 0);
  sock_conn_close(&s);
  return 0;
}

TEST(replies_in_a_row) {
  sock_conn s;
  ASSERT_EQ(sock_conn_open(&s), 0);
  ASSERT_EQ(sock_conn_feed_str(&s, "-ERR first\r\n*-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n"), 0);
  lmr__value *v;
  lmr_error err;
  ASSERT_EQ(lmr__value_read(&s.conn, &v, &err), LMR_OK);
  ASSERT_EQ(v->type, LMR__VALUE_ERROR);
  lmr__value_free(v);
  ASSERT_EQ(lmr__value_read(&s.conn, &v, &err), LMR_OK);
  ASSERT_EQ(v->type, LMR__VALUE_NIL);
  lmr__value_free(v);
  ASSERT_EQ(lmr__value_read(&s.conn, &v, &err), LMR_OK);
  ASSERT_EQ(v->n, 2);
  ASSERT_EQ(v->elems[0].elems[0].integer, 1);
  ASSERT_EQ(v->elems[1].type, LMR__VALUE_STRING);
  ASSERT_EQ(v->elems[1].len, 0);
  ASSERT(lmr__value_is(&v->elems[1], ""));
  lmr__value_free(v);
  ASSERT(s.conn.fd >= 0);
  sock_conn_close(&s);
  return 0;
}

TEST(fields) {
  sock_conn s;
  ASSERT_EQ(sock_conn_open(&s), 0);
  char r[256];
  long n = resp_build(r, sizeof r, 0, "asisss", 5, "port", 7000LL, "ip", "10.0.0.1", "odd");
  ASSERT(n > 0);
  lmr__value *v;
  lmr_error err;
  ASSERT_EQ(read_fed(&s, r, (size_t)n, &v, &err), LMR_OK);
  ASSERT_EQ(lmr__value_field(v, "port")->integer, 7000);
  ASSERT(lmr__value_is(lmr__value_field(v, "ip"), "10.0.0.1"));
  ASSERT(lmr__value_field(v, "odd") == NULL);  /* a name without a value */
  ASSERT(lmr__value_field(v, "10.0.0.1") == NULL);  /* values are not names */
  ASSERT(lmr__value_field(NULL, "ip") == NULL);
  ASSERT(lmr__value_field(&v->elems[0], "ip") == NULL);
  lmr__value_free(v);
  lmr__value_free(NULL);
  sock_conn_close(&s);
  return 0;
}

/* A failure mid-reply closes the connection: the rest must not be read as
 * the next reply. */
static int fails_closed(const char *bytes, int code, const char *msg_part) {
  sock_conn s;
  ASSERT_EQ(sock_conn_open(&s), 0);
  lmr__value *v = (lmr__value *)&s;  /* must become NULL */
  lmr_error err;
  ASSERT_EQ(read_fed(&s, bytes, strlen(bytes), &v, &err), code);
  ASSERT(v == NULL);
  ASSERT_EQ(s.conn.fd, -1);
  if (msg_part != NULL && strstr(err.msg, msg_part) == NULL) TEST_FAIL_("message: %s", err.msg);
  sock_conn_close(&s);
  return 0;
}

TEST(depth_bound) {
  char r[256] = "";
  for (int i = 0; i < LMR__VALUE_MAX_DEPTH; i++) strcat(r, "*1\r\n");
  strcat(r, ":7\r\n");
  sock_conn s;
  ASSERT_EQ(sock_conn_open(&s), 0);
  lmr__value *v;
  lmr_error err;
  ASSERT_EQ(read_fed(&s, r, strlen(r), &v, &err), LMR_OK);  /* 8 arrays: fine */
  lmr__value_free(v);
  sock_conn_close(&s);
  char deeper[256] = "*1\r\n";
  strcat(deeper, r);
  ASSERT_EQ(fails_closed(deeper, LMR_EPROTO, "nested too deep"), 0);
  return 0;
}

TEST(size_bounds) {
  char r[64];
  snprintf(r, sizeof r, "*%u\r\n", LMR__VALUE_MAX_ELEMS);  /* itself + that many */
  ASSERT_EQ(fails_closed(r, LMR_EPROTO, "over 1048576 values"), 0);
  /* 3 values read by then: one more than the rest. */
  snprintf(r, sizeof r, "*2\r\n:1\r\n*%u\r\n", LMR__VALUE_MAX_ELEMS - 2);
  ASSERT_EQ(fails_closed(r, LMR_EPROTO, "values"), 0);
  snprintf(r, sizeof r, "$%u\r\n", LMR__VALUE_MAX_BYTES + 1);
  ASSERT_EQ(fails_closed(r, LMR_EPROTO, "bytes of strings"), 0);
  snprintf(r, sizeof r, "*2\r\n$4\r\nabcd\r\n$%u\r\n", LMR__VALUE_MAX_BYTES - 3);
  ASSERT_EQ(fails_closed(r, LMR_EPROTO, "bytes of strings"), 0);
  return 0;
}

TEST(malformed_and_cut) {
  ASSERT_EQ(fails_closed("*2\r\n?x\r\n", LMR_EPROTO, NULL), 0);
  /* The server goes away mid-reply. */
  sock_conn s;
  ASSERT_EQ(sock_conn_open(&s), 0);
  ASSERT_EQ(sock_conn_feed_str(&s, "*3\r\n:1\r\n$5\r\nab"), 0);
  shutdown(s.peer, SHUT_WR);
  lmr__value *v;
  lmr_error err;
  int rc = lmr__value_read(&s.conn, &v, &err);
  ASSERT(rc != LMR_OK);
  ASSERT(v == NULL);
  ASSERT_EQ(s.conn.fd, -1);
  sock_conn_close(&s);
  return 0;
}

TEST_MAIN(TEST_ENTRY(every_type), TEST_ENTRY(replies_in_a_row), TEST_ENTRY(fields),
          TEST_ENTRY(depth_bound), TEST_ENTRY(size_bounds), TEST_ENTRY(malformed_and_cut))
