/* Cluster topology from CLUSTER SHARDS / CLUSTER SLOTS (topology.h). */
#include "topology.h"

#include <stdlib.h>
#include <string.h>

/* owner[] holds node indexes as int16_t. */
#define MAX_NODES INT16_MAX

static void topo_reset(lmr__topology *t) {
  t->nodes = NULL;
  t->nnodes = 0;
  t->nmasters = 0;
  for (int s = 0; s < LMR__SLOTS; s++) t->owner[s] = -1;
}

void lmr__topology_free(lmr__topology *t) {
  if (t == NULL) return;
  for (int i = 0; i < t->nnodes; i++) free(t->nodes[i].host);
  free(t->nodes);
  topo_reset(t);
}

/* ---- building the node list ---- */

typedef struct {
  lmr__topology *t;
  int cap;
  const char *cmd;  /* "CLUSTER SHARDS" or "CLUSTER SLOTS", for messages */
} builder;

static int malformed(const builder *b, lmr_error *err, const char *what) {
  return lmr__err(err, LMR_EPROTO, "%s: unexpected reply (%s)", b->cmd, what);
}

static int find_node(const lmr__topology *t, const char *host, size_t host_len, int port) {
  for (int i = 0; i < t->nnodes; i++)
    if (t->nodes[i].port == port && strlen(t->nodes[i].host) == host_len &&
        memcmp(t->nodes[i].host, host, host_len) == 0)
      return i;
  return -1;
}

/* Adds host:port unless it is there already; *index: the node's index
 * either way. */
static int add_node(builder *b, const char *host, size_t host_len, int port, int master,
                    int *index, lmr_error *err) {
  lmr__topology *t = b->t;
  *index = find_node(t, host, host_len, port);
  if (*index >= 0) return LMR_OK;
  if (t->nnodes == MAX_NODES) return malformed(b, err, "too many nodes");
  if (t->nnodes == b->cap) {
    int cap = b->cap == 0 ? 8 : b->cap * 2;
    lmr__topo_node *nodes = realloc(t->nodes, (size_t)cap * sizeof *nodes);
    if (nodes == NULL) return lmr__err(err, LMR_ENOMEM, "%s: out of memory", b->cmd);
    t->nodes = nodes;
    b->cap = cap;
  }
  char *h = malloc(host_len + 1);
  if (h == NULL) return lmr__err(err, LMR_ENOMEM, "%s: out of memory", b->cmd);
  memcpy(h, host, host_len);
  h[host_len] = '\0';
  t->nodes[t->nnodes] = (lmr__topo_node){.host = h, .port = port, .master = master};
  *index = t->nnodes++;
  return LMR_OK;
}

/* ---- reading fields ---- */

/* An integer, sent as one (as Redis does) or as a decimal string. */
static int get_int(const lmr__value *v, int64_t *out) {
  if (v == NULL) return -1;
  if (v->type == LMR__VALUE_INTEGER) {
    *out = v->integer;
    return 0;
  }
  if (v->type != LMR__VALUE_STRING || v->len == 0 || v->len > 18) return -1;
  int64_t n = 0;
  for (size_t i = 0; i < v->len; i++) {
    if (v->str[i] < '0' || v->str[i] > '9') return -1;
    n = n * 10 + (v->str[i] - '0');
  }
  *out = n;
  return 0;
}

enum { HOST_SKIP = 0, HOST_OK = 1 };

/* The host to reach a node by, from its stated endpoint (topology.h):
 * HOST_OK with host and len set, HOST_SKIP when it cannot be reached, or
 * LMR_EPROTO for a value that is no endpoint at all. */
static int pick_host(const builder *b, const lmr__value *endpoint, const char *asked_host,
                     const char **host, size_t *len, lmr_error *err) {
  if (endpoint == NULL || endpoint->type == LMR__VALUE_NIL ||
      (endpoint->type == LMR__VALUE_STRING && endpoint->len == 0)) {
    if (asked_host == NULL || asked_host[0] == '\0') return HOST_SKIP;
    *host = asked_host;
    *len = strlen(asked_host);
    return HOST_OK;
  }
  if (endpoint->type != LMR__VALUE_STRING || memchr(endpoint->str, '\0', endpoint->len) != NULL)
    return malformed(b, err, "a node's endpoint is not a string");
  if (endpoint->len == 1 && endpoint->str[0] == '?') return HOST_SKIP;
  *host = endpoint->str;
  *len = endpoint->len;
  return HOST_OK;
}

/* A port field: *port = 0 when absent (the node has none of that kind). */
static int get_port(const builder *b, const lmr__value *v, int *port, lmr_error *err) {
  *port = 0;
  if (v == NULL) return LMR_OK;
  int64_t p;
  if (get_int(v, &p) != 0 || p < 0 || p > 65535) return malformed(b, err, "bad port");
  *port = (int)p;
  return LMR_OK;
}

/* Marks slots [start, end] of a range given as two values as served by
 * master (-1: by no reachable node; the range is still checked). */
static int own_range(const builder *b, const lmr__value *start, const lmr__value *end, int master,
                     lmr_error *err) {
  int64_t s, e;
  if (get_int(start, &s) != 0 || get_int(end, &e) != 0 || s < 0 || e >= LMR__SLOTS || s > e)
    return malformed(b, err, "bad slot range");
  if (master >= 0)
    for (int64_t i = s; i <= e; i++) b->t->owner[i] = (int16_t)master;
  return LMR_OK;
}

/* A failed parse leaves *out empty. */
static int finish(int rc, lmr__topology *out) {
  if (rc != LMR_OK) lmr__topology_free(out);
  return rc;
}

/* ---- CLUSTER SHARDS ---- */

/* A SHARDS node's host and port; HOST_SKIP when it cannot be used. */
static int shards_node_addr(const builder *b, const lmr__value *node, const char *asked_host,
                            int tls, const char **host, size_t *len, int *port, lmr_error *err) {
  if (node->type != LMR__VALUE_ARRAY) return malformed(b, err, "a node is not an array");
  const lmr__value *endpoint = lmr__value_field(node, "endpoint");
  int rc = pick_host(b, endpoint != NULL ? endpoint : lmr__value_field(node, "ip"), asked_host,
                     host, len, err);
  if (rc != HOST_OK) return rc;
  int plain, secure;
  if ((rc = get_port(b, lmr__value_field(node, "port"), &plain, err)) != LMR_OK) return rc;
  if ((rc = get_port(b, lmr__value_field(node, "tls-port"), &secure, err)) != LMR_OK) return rc;
  *port = tls && secure != 0 ? secure : plain;
  return *port != 0 ? HOST_OK : HOST_SKIP;
}

static int is_master(const lmr__value *node) {
  return lmr__value_is(lmr__value_field(node, "role"), "master");
}

static int shards_parse(builder *b, const lmr__value *v, const char *asked_host, int tls,
                        int *shard_master, lmr_error *err) {
  /* Pass 1: each shard's master, and its slots. */
  for (size_t i = 0; i < v->n; i++) {
    const lmr__value *shard = &v->elems[i];
    if (shard->type != LMR__VALUE_ARRAY) return malformed(b, err, "a shard is not an array");
    const lmr__value *slots = lmr__value_field(shard, "slots");
    const lmr__value *nodes = lmr__value_field(shard, "nodes");
    if (slots == NULL || slots->type != LMR__VALUE_ARRAY || slots->n % 2 != 0)
      return malformed(b, err, "a shard's slots");
    if (nodes == NULL || nodes->type != LMR__VALUE_ARRAY) return malformed(b, err, "a shard's nodes");
    shard_master[i] = -1;
    /* An online master first: some servers (Redis 7.2 before its fix,
     * redis#13414) list a failed old master ahead of the promoted one. */
    for (int pass = 0; pass < 2 && shard_master[i] < 0; pass++) {
      for (size_t k = 0; k < nodes->n && shard_master[i] < 0; k++) {
        const lmr__value *node = &nodes->elems[k];
        if (node->type != LMR__VALUE_ARRAY) return malformed(b, err, "a node is not an array");
        if (!is_master(node)) continue;
        const lmr__value *health = lmr__value_field(node, "health");
        if (pass == 0 && health != NULL && !lmr__value_is(health, "online")) continue;
        const char *host;
        size_t len;
        int port;
        int rc = shards_node_addr(b, node, asked_host, tls, &host, &len, &port, err);
        if (rc < 0) return rc;
        if (rc == HOST_SKIP) break;  /* that master cannot be reached */
        if ((rc = add_node(b, host, len, port, -1, &shard_master[i], err)) != LMR_OK) return rc;
      }
    }
    for (size_t k = 0; k < slots->n; k += 2) {
      int rc = own_range(b, &slots->elems[k], &slots->elems[k + 1], shard_master[i], err);
      if (rc != LMR_OK) return rc;
    }
  }
  b->t->nmasters = b->t->nnodes;
  /* Pass 2: the replicas that are online, under their shard's master. */
  for (size_t i = 0; i < v->n; i++) {
    if (shard_master[i] < 0) continue;
    const lmr__value *nodes = lmr__value_field(&v->elems[i], "nodes");
    for (size_t k = 0; k < nodes->n; k++) {
      const lmr__value *node = &nodes->elems[k];
      const lmr__value *health = lmr__value_field(node, "health");
      if (is_master(node) || (health != NULL && !lmr__value_is(health, "online"))) continue;
      const char *host = NULL;
      size_t len = 0;
      int port = 0, index;
      int rc = shards_node_addr(b, node, asked_host, tls, &host, &len, &port, err);
      if (rc < 0) return rc;
      if (rc == HOST_SKIP || find_node(b->t, host, len, port) >= 0) continue;
      if ((rc = add_node(b, host, len, port, shard_master[i], &index, err)) != LMR_OK) return rc;
    }
  }
  return LMR_OK;
}

int lmr__topology_from_shards(const lmr__value *v, const char *asked_host, int tls,
                              lmr__topology *out, lmr_error *err) {
  topo_reset(out);
  builder b = {.t = out, .cap = 0, .cmd = "CLUSTER SHARDS"};
  if (v == NULL || v->type != LMR__VALUE_ARRAY) return malformed(&b, err, "not an array");
  int *shard_master = malloc((v->n > 0 ? v->n : 1) * sizeof *shard_master);
  if (shard_master == NULL) return lmr__err(err, LMR_ENOMEM, "%s: out of memory", b.cmd);
  int rc = shards_parse(&b, v, asked_host, tls, shard_master, err);
  free(shard_master);
  return finish(rc, out);
}

/* ---- CLUSTER SLOTS ---- */

/* A SLOTS node ([endpoint, port, id, metadata...]); HOST_SKIP when it
 * cannot be used. */
static int slots_node_addr(const builder *b, const lmr__value *node, const char *asked_host,
                           const char **host, size_t *len, int *port, lmr_error *err) {
  if (node->type != LMR__VALUE_ARRAY || node->n < 2) return malformed(b, err, "a node is not an array");
  int rc = pick_host(b, &node->elems[0], asked_host, host, len, err);
  if (rc != HOST_OK) return rc;
  if ((rc = get_port(b, &node->elems[1], port, err)) != LMR_OK) return rc;
  return *port != 0 ? HOST_OK : HOST_SKIP;
}

static int slots_parse(builder *b, const lmr__value *v, const char *asked_host, int *range_master,
                       lmr_error *err) {
  /* Pass 1: masters (the third element of each range) and their slots. */
  for (size_t i = 0; i < v->n; i++) {
    const lmr__value *r = &v->elems[i];
    if (r->type != LMR__VALUE_ARRAY || r->n < 3) return malformed(b, err, "a slot range");
    const char *host = NULL;
    size_t len = 0;
    int port = 0;
    range_master[i] = -1;
    int rc = slots_node_addr(b, &r->elems[2], asked_host, &host, &len, &port, err);
    if (rc < 0) return rc;
    if (rc == HOST_OK && (rc = add_node(b, host, len, port, -1, &range_master[i], err)) != LMR_OK)
      return rc;
    if ((rc = own_range(b, &r->elems[0], &r->elems[1], range_master[i], err)) != LMR_OK) return rc;
  }
  b->t->nmasters = b->t->nnodes;
  /* Pass 2: the replicas after it. */
  for (size_t i = 0; i < v->n; i++) {
    if (range_master[i] < 0) continue;
    const lmr__value *r = &v->elems[i];
    for (size_t k = 3; k < r->n; k++) {
      const char *host = NULL;
      size_t len = 0;
      int port = 0, index;
      int rc = slots_node_addr(b, &r->elems[k], asked_host, &host, &len, &port, err);
      if (rc < 0) return rc;
      if (rc == HOST_SKIP || find_node(b->t, host, len, port) >= 0) continue;
      if ((rc = add_node(b, host, len, port, range_master[i], &index, err)) != LMR_OK) return rc;
    }
  }
  return LMR_OK;
}

int lmr__topology_from_slots(const lmr__value *v, const char *asked_host, int tls,
                             lmr__topology *out, lmr_error *err) {
  (void)tls;  /* the reply's port is already the one for this connection's kind */
  topo_reset(out);
  builder b = {.t = out, .cap = 0, .cmd = "CLUSTER SLOTS"};
  if (v == NULL || v->type != LMR__VALUE_ARRAY) return malformed(&b, err, "not an array");
  int *range_master = malloc((v->n > 0 ? v->n : 1) * sizeof *range_master);
  if (range_master == NULL) return lmr__err(err, LMR_ENOMEM, "%s: out of memory", b.cmd);
  int rc = slots_parse(&b, v, asked_host, range_master, err);
  free(range_master);
  return finish(rc, out);
}

/* ---- asking a node ---- */

static int ask(lmr_conn *conn, const char *subcommand, lmr__value **reply, lmr_error *err) {
  lmr_cmd cmd;
  lmr_cmd_init(&cmd, 2);
  lmr_cmd_arg_copy(&cmd, "CLUSTER");
  lmr_cmd_arg_copy(&cmd, subcommand);
  int rc = lmr__conn_send(conn, &cmd, err);
  return rc != LMR_OK ? rc : lmr__value_read(conn, reply, err);
}

/* A server error reply to CLUSTER <subcommand>, as an error code. */
static int server_error(const lmr_conn *conn, const lmr__value *reply, const char *asked_host,
                        const char *context, lmr_error *err) {
  /* "ERR This instance has cluster support disabled" (Redis), or no
   * CLUSTER command at all. */
  if (strcasestr(reply->str, "cluster support disabled") != NULL ||
      strcasestr(reply->str, "unknown command") != NULL)
    return lmr__err(err, LMR_EINVAL,
                    "the server at %s:%d is not a Redis Cluster node (%s): drop cluster=True, "
                    "or use a redis:// URL",
                    asked_host != NULL ? asked_host : "?", conn->cfg->port, reply->str);
  lmr_reply r = {.type = LMR_REPLY_ERROR, .str = reply->str, .len = reply->len};
  return lmr__conn_server_error(&r, context, err);
}

int lmr__topology_read(lmr_conn *conn, const char *asked_host, int tls, lmr__topology *out,
                       lmr_error *err) {
  topo_reset(out);
  lmr__value *reply;
  int rc = ask(conn, "SHARDS", &reply, err);
  if (rc != LMR_OK) return rc;
  if (reply->type == LMR__VALUE_ERROR && strcasestr(reply->str, "unknown subcommand") != NULL) {
    /* Redis < 7.0 */
    lmr__value_free(reply);
    if ((rc = ask(conn, "SLOTS", &reply, err)) != LMR_OK) return rc;
    rc = reply->type == LMR__VALUE_ERROR
             ? server_error(conn, reply, asked_host, "CLUSTER SLOTS", err)
             : lmr__topology_from_slots(reply, asked_host, tls, out, err);
  } else {
    rc = reply->type == LMR__VALUE_ERROR
             ? server_error(conn, reply, asked_host, "CLUSTER SHARDS", err)
             : lmr__topology_from_shards(reply, asked_host, tls, out, err);
  }
  lmr__value_free(reply);
  return rc;
}
