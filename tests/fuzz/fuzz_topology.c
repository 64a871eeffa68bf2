/* libFuzzer target for reading a cluster's shape from a server: the reply
 * tree reader (value.h) and the CLUSTER SHARDS / CLUSTER SLOTS parsers
 * (topology.h), on what a server might send.
 *
 * The input is the byte stream from the server. It is written into one end
 * of a socketpair, whose write side is then shut down, and read through a
 * real lmr_conn on the other end (as tests/c/sock_conn.h does), so the
 * connection's read-ahead, header reads and payload reads are the ones the
 * client uses, and the end of the input is the server closing: nothing ever
 * waits on a deadline. A socketpair per input, since a failed read closes
 * the connection's end (as it must); the lmr_conn itself is made once and
 * reset with lmr__conn_close, which is what the client does between uses.
 *
 * Two passes per input:
 *   1. up to MAX_REPLIES replies are read one after the other from the
 *      stream with lmr__value_read; each tree is checked (bounds, NUL
 *      terminators, shapes) and given to lmr__topology_from_shards and
 *      lmr__topology_from_slots with asked_host "h" and tls 0 and 1, and
 *      with asked_host NULL;
 *   2. lmr__topology_read on the same bytes (a fresh socketpair): CLUSTER
 *      SHARDS, the fallback to CLUSTER SLOTS, and server error replies.
 *
 * Checked: a failed read closed the connection (its reply was not read to
 * its end) and fails with LMR_ECONN (the input ended) or LMR_EPROTO, never
 * a timeout; a successful one left no payload pending and the connection
 * open. A parsed topology: nmasters <= nnodes; masters first (master -1),
 * every replica's master a valid master index; every node with a non-empty
 * host (no NUL inside) and a port in 1..65535, no host:port twice; every
 * owner[] entry -1 or a master's index. A failed parse: LMR_EPROTO (pass 2:
 * any error code) with the topology left empty. CLUSTER SLOTS ignores tls:
 * both parses agree. Everything is freed, for LeakSanitizer.
 *
 * Build: cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DLMR_FUZZ=ON
 *        cmake --build build/fuzz --target fuzz_topology
 * Run:   build/fuzz/fuzz_topology -max_total_time=60 -dict=tests/fuzz/topology.dict \
 *          CORPUS_DIR tests/fuzz/corpus_topology
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sock_conn.h"
#include "topology.h"
#include "value.h"

/* For the checks' loops over the 16384 slots: without coverage
 * instrumentation (it would trace every compare, and most of the time
 * went there); ASan and UBSan still apply. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* Longer inputs are ignored: all of an input must fit the socket's buffer
 * at once (one write, before any read). libFuzzer's -max_len is 4096 by
 * default, so this only matters for big seeds. */
#define MAX_INPUT (64 * 1024)
/* Replies read from one input: each costs a few passes over owner[]. */
#define MAX_REPLIES 4

static lmr_config cfg;
static lmr__stats stats;
static lmr_conn conn; /* 64 KiB of read-ahead: made once */
static int peer = -1;

static void init_once(void) {
  static int done;
  if (done) return;
  done = 1;
  lmr_config_init(&cfg);
  cfg.port = 7000;
  lmr__conn_init(&conn, &cfg, NULL, NULL, &stats);
}

/* A fresh socketpair under conn, the input written into its other end and
 * that end shut for writing: the input, then the server's close. */
static void open_with(const uint8_t *data, size_t size) {
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK); /* as net.c makes them */
  if (size > 0) CHECK(write(sv[1], data, size) == (ssize_t)size);
  CHECK(shutdown(sv[1], SHUT_WR) == 0);
  CHECK(conn.fd == -1);
  conn.fd = sv[0];
  conn.deadline = lmr__deadline(30); /* never reached: the input ends in EOF */
  peer = sv[1];
}

static void close_conn(void) {
  lmr__conn_close(&conn); /* resets read-ahead, parser and flags too */
  close(peer);
  peer = -1;
}

/* ---- the reply tree ---- */

typedef struct {
  size_t values, bytes;
} tree_count;

static void check_value(const lmr__value *v, int depth, tree_count *c) {
  c->values++;
  switch (v->type) {
    case LMR__VALUE_NIL:
    case LMR__VALUE_INTEGER:
      CHECK(v->str == NULL && v->elems == NULL && v->n == 0);
      break;
    case LMR__VALUE_STATUS:
    case LMR__VALUE_ERROR:
      CHECK(v->len < LMR_RESP_LINE_MAX);
      /* fallthrough */
    case LMR__VALUE_STRING:
      CHECK(v->str != NULL && v->str[v->len] == '\0');
      CHECK(v->elems == NULL && v->n == 0);
      c->bytes += v->len;
      break;
    case LMR__VALUE_ARRAY:
      CHECK(depth < LMR__VALUE_MAX_DEPTH);
      CHECK(v->str == NULL);
      CHECK((v->n == 0) == (v->elems == NULL));
      for (size_t i = 0; i < v->n; i++) check_value(&v->elems[i], depth + 1, c);
      break;
    default:
      CHECK(!"unknown value type");
  }
}

/* ---- topologies ---- */

NO_COVERAGE static void check_empty(const lmr__topology *t) {
  CHECK(t->nodes == NULL && t->nnodes == 0 && t->nmasters == 0);
  for (int s = 0; s < LMR__SLOTS; s++) CHECK(t->owner[s] == -1);
}

NO_COVERAGE static void check_topology(const lmr__topology *t) {
  CHECK(t->nnodes >= 0 && t->nnodes <= INT16_MAX);
  CHECK(t->nmasters >= 0 && t->nmasters <= t->nnodes);
  CHECK((t->nnodes == 0) || t->nodes != NULL);
  for (int i = 0; i < t->nnodes; i++) {
    const lmr__topo_node *n = &t->nodes[i];
    CHECK(n->host != NULL && n->host[0] != '\0');
    CHECK(n->port >= 1 && n->port <= 65535);
    if (i < t->nmasters)
      CHECK(n->master == -1);
    else
      CHECK(n->master >= 0 && n->master < t->nmasters);
  }
  /* host:port identifies a node: none twice (quadratic, but so is the
   * parser's own lookup, and inputs are small). */
  for (int i = 0; i < t->nnodes; i++)
    for (int j = i + 1; j < t->nnodes; j++)
      CHECK(t->nodes[i].port != t->nodes[j].port || strcmp(t->nodes[i].host, t->nodes[j].host) != 0);
  for (int s = 0; s < LMR__SLOTS; s++) CHECK(t->owner[s] >= -1 && t->owner[s] < t->nmasters);
}

NO_COVERAGE static int same_topology(const lmr__topology *a, const lmr__topology *b) {
  if (a->nnodes != b->nnodes || a->nmasters != b->nmasters) return 0;
  if (memcmp(a->owner, b->owner, sizeof a->owner) != 0) return 0;
  for (int i = 0; i < a->nnodes; i++)
    if (a->nodes[i].port != b->nodes[i].port || a->nodes[i].master != b->nodes[i].master ||
        strcmp(a->nodes[i].host, b->nodes[i].host) != 0)
      return 0;
  return 1;
}

typedef int (*parse_fn)(const lmr__value *, const char *, int, lmr__topology *, lmr_error *);

/* Parses v into *t and checks the result; returns the parser's code. */
static int parse_checked(parse_fn parse, const lmr__value *v, const char *asked_host, int tls,
                         lmr__topology *t) {
  lmr_error err;
  memset(t, 0x5A, sizeof *t); /* whatever it held: the parser resets it */
  int rc = parse(v, asked_host, tls, t, &err);
  if (rc == LMR_OK) {
    check_topology(t);
  } else {
    CHECK(rc == LMR_EPROTO);
    CHECK(err.code == rc);
    check_empty(t);
  }
  return rc;
}

static void parse_all(const lmr__value *v) {
  lmr__topology a, b;
  for (int tls = 0; tls <= 1; tls++) {
    parse_checked(lmr__topology_from_shards, v, "h", tls, &a);
    lmr__topology_free(&a);
    check_empty(&a);
    lmr__topology_free(&a); /* twice: harmless */
  }
  parse_checked(lmr__topology_from_shards, v, NULL, 0, &a);
  lmr__topology_free(&a);

  /* CLUSTER SLOTS: the port is the reply's, whatever tls says. */
  int ra = parse_checked(lmr__topology_from_slots, v, "h", 0, &a);
  int rb = parse_checked(lmr__topology_from_slots, v, "h", 1, &b);
  CHECK(ra == rb);
  CHECK(same_topology(&a, &b));
  lmr__topology_free(&a);
  lmr__topology_free(&b);
  parse_checked(lmr__topology_from_slots, v, NULL, 0, &a);
  lmr__topology_free(&a);
}

/* ---- the passes ---- */

static void read_replies(const uint8_t *data, size_t size) {
  open_with(data, size);
  for (int k = 0; k < MAX_REPLIES; k++) {
    lmr_error err;
    lmr__value *v = (lmr__value *)&v; /* not NULL: the read must set it */
    int rc = lmr__value_read(&conn, &v, &err);
    if (rc != LMR_OK) {
      CHECK(v == NULL);
      CHECK(rc == LMR_ECONN || rc == LMR_EPROTO);
      CHECK(err.code == rc);
      CHECK(conn.fd == -1); /* the rest of the reply is on it: closed */
      break;
    }
    CHECK(v != NULL);
    CHECK(conn.fd >= 0);
    CHECK(lmr_resp_payload_pending(&conn.parser) == 0);
    CHECK(conn.rpos <= conn.rlen);
    tree_count c = {0, 0};
    check_value(v, 0, &c);
    CHECK(c.values <= LMR__VALUE_MAX_ELEMS);
    CHECK(c.bytes <= LMR__VALUE_MAX_BYTES);
    parse_all(v);
    lmr__value_free(v);
  }
  close_conn();
}

static void read_topology(const uint8_t *data, size_t size) {
  open_with(data, size);
  lmr__topology t;
  lmr_error err;
  memset(&t, 0x5A, sizeof t);
  int rc = lmr__topology_read(&conn, "h", 0, &t, &err);
  if (rc == LMR_OK) {
    check_topology(&t);
  } else {
    CHECK(rc < 0 && rc != LMR_ETIMEDOUT);
    CHECK(err.code == rc);
    check_empty(&t);
  }
  lmr__topology_free(&t);
  close_conn();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > MAX_INPUT) return 0;
  init_once();
  read_replies(data, size);
  read_topology(data, size);
  return 0;
}
