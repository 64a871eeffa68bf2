/* For the C tests that talk to a real Redis Cluster: LIVE_CLUSTER_NODES
 * masters started on free ports, made into one cluster with CLUSTER
 * ADDSLOTSRANGE (an equal range each, in port order) and CLUSTER MEET (no
 * redis-cli), and admin connections to send them commands (the cluster's
 * own, MIGRATE, INFO) outside the client under test. Header-only, like
 * live_server.h: each test is one executable. */
#ifndef LMR_LIVE_CLUSTER_H
#define LMR_LIVE_CLUSTER_H

#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "live_server.h"
#include "slot.h"
#include "test.h"
#include "topology.h"
#include "value.h"

#define LIVE_CLUSTER_NODES 3

typedef struct {
  char dir[32];                   /* the nodes' cluster config files */
  int ports[LIVE_CLUSTER_NODES];
  /* Cluster bus ports, given explicitly: a free port picked for the node
   * may be above 55535, where the default (port + 10000) does not exist. */
  int bus_ports[LIVE_CLUSTER_NODES];
  pid_t pids[LIVE_CLUSTER_NODES];
} live_cluster;

/* One admin connection to a node (the library's own connection, so that
 * the replies come as lmr__value trees). */
typedef struct {
  lmr_config cfg;
  lmr__stats stats;
  lmr__resolver resolver;
  lmr_conn conn;
} live_node_conn;

/* The slots node i is given: an equal share, in order. */
static inline void live_cluster_range(int i, int *first, int *last) {
  *first = i * LMR__SLOTS / LIVE_CLUSTER_NODES;
  *last = (i + 1) * LMR__SLOTS / LIVE_CLUSTER_NODES - 1;
}

/* The node that was given `slot` at start. */
static inline int live_cluster_node_of(int slot) {
  for (int i = 0; i < LIVE_CLUSTER_NODES; i++) {
    int first, last;
    live_cluster_range(i, &first, &last);
    if (slot >= first && slot <= last) return i;
  }
  return -1;
}

static inline pid_t live_start_cluster_node(const char *dir, int port, int bus_port) {
  char bp[16], conf[64];
  snprintf(bp, sizeof bp, "%d", bus_port);
  snprintf(conf, sizeof conf, "nodes-%d.conf", port);
  const char *more[] = {"--cluster-enabled", "yes", "--cluster-port", bp,
                        "--cluster-config-file", conf, "--dir", dir, NULL};
  return live_spawn_redis(port, more);
}

/* Connects, retrying for up to 5 s while the server starts. */
static inline int live_node_open(live_node_conn *n, int port) {
  lmr_config_init(&n->cfg);
  n->cfg.host = "127.0.0.1";
  n->cfg.port = port;
  memset(&n->stats, 0, sizeof n->stats);
  lmr__resolver_init(&n->resolver);
  lmr__conn_init(&n->conn, &n->cfg, NULL, &n->resolver, &n->stats);
  lmr_error err;
  for (int tries = 0; tries < 100; tries++) {
    n->conn.deadline = lmr__deadline(5);
    if (lmr__conn_ensure(&n->conn, &err) == LMR_OK) return 0;
    usleep(50 * 1000);
  }
  fprintf(stderr, "  cannot connect to port %d: %s\n", port, err.msg);
  lmr__conn_destroy(&n->conn);
  lmr__resolver_destroy(&n->resolver);
  return -1;
}

static inline void live_node_close(live_node_conn *n) {
  lmr__conn_destroy(&n->conn);
  lmr__resolver_destroy(&n->resolver);
}

/* Sends argc string arguments; the reply in *v (a server error is a
 * value, not a failure). */
static inline int live_command(live_node_conn *n, lmr__value **v, int argc, const char **argv) {
  lmr_cmd cmd;
  lmr_cmd_init(&cmd, argc);
  for (int i = 0; i < argc; i++) lmr_cmd_arg(&cmd, argv[i], strlen(argv[i]));
  lmr_error err;
  n->conn.deadline = lmr__deadline(10);
  int rc = lmr__conn_send(&n->conn, &cmd, &err);
  if (rc == LMR_OK) rc = lmr__value_read(&n->conn, v, &err);
  if (rc != LMR_OK) fprintf(stderr, "  %s: %s\n", argv[0], err.msg);
  return rc;
}

/* A command whose reply must be +OK. */
static inline int live_command_ok(live_node_conn *n, int argc, const char **argv) {
  lmr__value *v;
  ASSERT_EQ(live_command(n, &v, argc, argv), LMR_OK);
  int ok = lmr__value_is(v, "OK");
  if (!ok)
    fprintf(stderr, "  %s %s: %s\n", argv[0], argc > 1 ? argv[1] : "",
            v->str != NULL ? v->str : "?");
  lmr__value_free(v);
  ASSERT(ok);
  return 0;
}

/* A command whose reply is an integer, in *out. */
static inline int live_command_int(live_node_conn *n, int64_t *out, int argc, const char **argv) {
  lmr__value *v;
  ASSERT_EQ(live_command(n, &v, argc, argv), LMR_OK);
  int ok = v->type == LMR__VALUE_INTEGER;
  if (!ok) fprintf(stderr, "  %s: %s\n", argv[0], v->str != NULL ? v->str : "not an integer");
  *out = v->integer;
  lmr__value_free(v);
  ASSERT(ok);
  return 0;
}

/* The number after "<field>:" or "<field>:count=" in an INFO section (0
 * when the field is absent: Redis leaves out counters that are still 0). */
static inline int live_info_count(live_node_conn *n, const char *section, const char *field,
                                  int64_t *out) {
  lmr__value *v;
  ASSERT_EQ(live_command(n, &v, 2, (const char *[]){"INFO", section}), LMR_OK);
  ASSERT_EQ(v->type, LMR__VALUE_STRING);
  *out = 0;
  size_t flen = strlen(field);
  for (const char *line = v->str; line != NULL && *line != '\0';) {
    if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
      const char *num = line + flen + 1;
      if (strncmp(num, "count=", 6) == 0) num += 6;
      else if (strncmp(num, "calls=", 6) == 0) num += 6;
      *out = strtoll(num, NULL, 10);
      break;
    }
    line = strchr(line, '\n');
    if (line != NULL) line++;
  }
  lmr__value_free(v);
  return 0;
}

/* The node's id (CLUSTER MYID), 40 hex characters, into id[41]. */
static inline int live_node_id(live_node_conn *n, char *id) {
  lmr__value *v;
  ASSERT_EQ(live_command(n, &v, 2, (const char *[]){"CLUSTER", "MYID"}), LMR_OK);
  int ok = v->type == LMR__VALUE_STRING && v->len == 40;
  if (ok) memcpy(id, v->str, 41);
  lmr__value_free(v);
  ASSERT(ok);
  return 0;
}

/* Whether node n sees every node as a master and every slot served, and
 * says cluster_state:ok (a master waits a moment after start before it
 * does, and until then refuses every key with CLUSTERDOWN): 1 yes, 0 not
 * yet, -1 on failure. */
static inline int live_cluster_node_ready(live_node_conn *n) {
  lmr__topology t;
  lmr_error err;
  n->conn.deadline = lmr__deadline(5);
  if (lmr__topology_read(&n->conn, "127.0.0.1", 0, &t, &err) != LMR_OK) {
    fprintf(stderr, "  topology: %s\n", err.msg);
    return -1;
  }
  int ready = t.nmasters == LIVE_CLUSTER_NODES;
  for (int s = 0; s < LMR__SLOTS && ready; s++) ready = t.owner[s] >= 0;
  lmr__topology_free(&t);
  if (!ready) return 0;
  lmr__value *v;
  if (live_command(n, &v, 2, (const char *[]){"CLUSTER", "INFO"}) != LMR_OK) return -1;
  ready = v->type == LMR__VALUE_STRING && strstr(v->str, "cluster_state:ok") != NULL;
  lmr__value_free(v);
  return ready;
}

/* Starts the nodes, gives each its slots, introduces them, and waits (up
 * to 10 s) until every node serves the whole slot map. On failure what
 * started is left for live_cluster_stop. */
static inline int live_cluster_start(live_cluster *lc) {
  memset(lc, 0, sizeof *lc);
  snprintf(lc->dir, sizeof lc->dir, "/tmp/lmr-cluster-XXXXXX");
  ASSERT(mkdtemp(lc->dir) != NULL);
  for (int i = 0; i < LIVE_CLUSTER_NODES; i++) {
    lc->ports[i] = live_free_port();
    ASSERT(lc->ports[i] > 0);
    do lc->bus_ports[i] = live_free_port();
    while (lc->bus_ports[i] == lc->ports[i]);
    ASSERT(lc->bus_ports[i] > 0);
    lc->pids[i] = live_start_cluster_node(lc->dir, lc->ports[i], lc->bus_ports[i]);
    ASSERT(lc->pids[i] > 0);
  }
  live_node_conn n[LIVE_CLUSTER_NODES];
  int opened = 0, rc = 0;
  for (; opened < LIVE_CLUSTER_NODES && rc == 0; opened++)
    rc = live_node_open(&n[opened], lc->ports[opened]);
  if (rc != 0) opened--;  /* the one that failed closed itself */
  for (int i = 0; i < LIVE_CLUSTER_NODES && rc == 0; i++) {
    int first, last;
    live_cluster_range(i, &first, &last);
    char a[16], b[16], p[16], bp[16];
    snprintf(a, sizeof a, "%d", first);
    snprintf(b, sizeof b, "%d", last);
    rc = live_command_ok(&n[i], 4, (const char *[]){"CLUSTER", "ADDSLOTSRANGE", a, b});
    /* Distinct config epochs before the nodes meet, as redis-cli --cluster
     * create gives them: left at 0, the nodes settle their collisions by
     * gossip for a while after start, and a slot moved meanwhile (SETSLOT
     * NODE) can flip back to its old owner, both nodes then answering
     * MOVED to the other. */
    char epoch[16];
    snprintf(epoch, sizeof epoch, "%d", i + 1);
    if (rc == 0)
      rc = live_command_ok(&n[i], 3, (const char *[]){"CLUSTER", "SET-CONFIG-EPOCH", epoch});
    if (rc == 0 && i > 0) {
      snprintf(p, sizeof p, "%d", lc->ports[i]);
      snprintf(bp, sizeof bp, "%d", lc->bus_ports[i]);
      rc = live_command_ok(&n[0], 5, (const char *[]){"CLUSTER", "MEET", "127.0.0.1", p, bp});
    }
  }
  /* Gossip spreads the slots within a few seconds. */
  for (int i = 0; i < LIVE_CLUSTER_NODES && rc == 0; i++) {
    int ready = 0;
    for (int tries = 0; tries < 200 && ready == 0; tries++)
      if ((ready = live_cluster_node_ready(&n[i])) == 0) usleep(50 * 1000);
    if (ready != 1) {
      fprintf(stderr, "  node %d (port %d) never saw the whole cluster\n", i, lc->ports[i]);
      rc = 1;
    }
  }
  for (int i = 0; i < opened; i++) live_node_close(&n[i]);
  return rc;
}

static inline void live_cluster_stop(live_cluster *lc) {
  for (int i = 0; i < LIVE_CLUSTER_NODES; i++) {
    if (lc->pids[i] > 0) live_stop_redis(lc->pids[i], SIGKILL);
    lc->pids[i] = 0;
    char conf[128];
    snprintf(conf, sizeof conf, "%s/nodes-%d.conf", lc->dir, lc->ports[i]);
    unlink(conf);
  }
  if (lc->dir[0] != '\0') rmdir(lc->dir);
}

#endif
