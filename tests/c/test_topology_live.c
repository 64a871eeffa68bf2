/* Topology and key slots against real servers this test starts itself: a
 * cluster of three masters made with CLUSTER ADDSLOTSRANGE and CLUSTER
 * MEET (no redis-cli), read through lmr__topology_read from each node;
 * lmr__key_slot and part keys checked against CLUSTER KEYSLOT; and a
 * plain (non-cluster) server refused with LMR_EINVAL. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
/* live_open (clients) is not used here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "live_server.h"
#pragma GCC diagnostic pop
#include "slot.h"
#include "test.h"
#include "topology.h"
#include "value.h"

#define NODES 3

static char dir[] = "/tmp/lmr-topo-XXXXXX";
static pid_t pids[NODES + 1];
static int ports[NODES + 1];
/* Cluster bus ports, given explicitly: a free port picked for the node may
 * be above 55535, where the default (port + 10000) does not exist. */
static int bus_ports[NODES];

static pid_t start_cluster_node(int port, int bus_port) {
  char p[16], bp[16], conf[64];
  snprintf(p, sizeof p, "%d", port);
  snprintf(bp, sizeof bp, "%d", bus_port);
  snprintf(conf, sizeof conf, "nodes-%d.conf", port);
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) {
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
    }
    execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--loglevel", "warning", "--cluster-enabled", "yes",
           "--cluster-port", bp, "--cluster-config-file", conf, "--dir", dir, (char *)NULL);
    _exit(127);
  }
  return pid;
}

typedef struct {
  lmr_config cfg;
  lmr__stats stats;
  lmr__resolver resolver;
  lmr_conn conn;
} node_conn;

/* Connects, retrying for up to 5 s while the server starts. */
static int node_open(node_conn *n, int port) {
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
  return -1;
}

static void node_close(node_conn *n) {
  lmr__conn_destroy(&n->conn);
  lmr__resolver_destroy(&n->resolver);
}

/* Sends argc string arguments; the reply in *v. */
static int command(node_conn *n, lmr__value **v, int argc, const char **argv) {
  lmr_cmd cmd;
  lmr_cmd_init(&cmd, argc);
  for (int i = 0; i < argc; i++) lmr_cmd_arg(&cmd, argv[i], strlen(argv[i]));
  lmr_error err;
  n->conn.deadline = lmr__deadline(5);
  int rc = lmr__conn_send(&n->conn, &cmd, &err);
  if (rc == LMR_OK) rc = lmr__value_read(&n->conn, v, &err);
  if (rc != LMR_OK) fprintf(stderr, "  %s: %s\n", argv[0], err.msg);
  return rc;
}

/* A command whose reply must be +OK. */
static int command_ok(node_conn *n, int argc, const char **argv) {
  lmr__value *v;
  ASSERT_EQ(command(n, &v, argc, argv), LMR_OK);
  int ok = lmr__value_is(v, "OK");
  if (!ok) fprintf(stderr, "  %s %s: %s\n", argv[0], argv[1], v->str != NULL ? v->str : "?");
  lmr__value_free(v);
  ASSERT(ok);
  return 0;
}

static int range_of(int i, int *first, int *last) {
  *first = i * LMR__SLOTS / NODES;
  *last = (i + 1) * LMR__SLOTS / NODES - 1;
  return 0;
}

/* The topology as read from node `from`, once the cluster agrees: 1 when
 * it is the expected one, 0 when not (yet). */
static int topology_is_complete(node_conn *n, lmr__topology *t) {
  lmr_error err;
  n->conn.deadline = lmr__deadline(5);
  if (lmr__topology_read(&n->conn, "127.0.0.1", 0, t, &err) != LMR_OK) {
    fprintf(stderr, "  topology: %s\n", err.msg);
    return -1;
  }
  if (t->nmasters != NODES) return 0;
  for (int s = 0; s < LMR__SLOTS; s++)
    if (t->owner[s] < 0) return 0;
  return 1;
}

static int check_topology(const lmr__topology *t) {
  ASSERT_EQ(t->nnodes, NODES);
  for (int i = 0; i < NODES; i++) {
    int first, last, at = -1;
    range_of(i, &first, &last);
    for (int k = 0; k < t->nnodes; k++)
      if (t->nodes[k].port == ports[i]) at = k;
    ASSERT(at >= 0);
    ASSERT(strcmp(t->nodes[at].host, "127.0.0.1") == 0);
    ASSERT_EQ(t->nodes[at].master, -1);
    for (int s = first; s <= last; s++) ASSERT_EQ(t->owner[s], at);
  }
  return 0;
}

static int cluster_test(void) {
  node_conn n[NODES];
  for (int i = 0; i < NODES; i++) ASSERT_EQ(node_open(&n[i], ports[i]), 0);
  for (int i = 0; i < NODES; i++) {
    int first, last;
    range_of(i, &first, &last);
    char a[16], b[16], p[16], bp[16];
    snprintf(a, sizeof a, "%d", first);
    snprintf(b, sizeof b, "%d", last);
    ASSERT_EQ(command_ok(&n[i], 4, (const char *[]){"CLUSTER", "ADDSLOTSRANGE", a, b}), 0);
    if (i > 0) {
      snprintf(p, sizeof p, "%d", ports[i]);
      snprintf(bp, sizeof bp, "%d", bus_ports[i]);
      ASSERT_EQ(command_ok(&n[0], 5, (const char *[]){"CLUSTER", "MEET", "127.0.0.1", p, bp}), 0);
    }
  }
  /* Gossip spreads the slots within a few seconds. */
  for (int i = 0; i < NODES; i++) {
    lmr__topology t;
    int done = 0;
    for (int tries = 0; tries < 200 && done == 0; tries++) {
      done = topology_is_complete(&n[i], &t);
      if (done == 0) {
        lmr__topology_free(&t);
        usleep(50 * 1000);
      }
    }
    ASSERT_EQ(done, 1);
    ASSERT_EQ(check_topology(&t), 0);
    lmr__topology_free(&t);
  }
  /* Slots as the server computes them: keys with and without tags, part
   * keys. */
  srand(7);
  static const char chars[] = "ab{}x#:0";
  for (int k = 0; k < 400; k++) {
    char key[16 + LMR__PART_KEY_EXTRA];
    size_t len = (size_t)(rand() % 12);
    for (size_t j = 0; j < len; j++) key[j] = chars[rand() % (int)(sizeof chars - 1)];
    if (k % 2 == 1) {  /* a part key of that key */
      uint32_t count = 2 + (uint32_t)(rand() % 255);
      len = lmr__part_key(key, len, 1 + (uint32_t)rand() % (count - 1), count, key);
    }
    key[len] = '\0';
    lmr__value *v;
    ASSERT_EQ(command(&n[k % NODES], &v, 3, (const char *[]){"CLUSTER", "KEYSLOT", key}), LMR_OK);
    int64_t got = v->type == LMR__VALUE_INTEGER ? v->integer : -1;
    lmr__value_free(v);
    if (got != lmr__key_slot(key, len)) TEST_FAIL_("key \"%s\": server %lld", key, (long long)got);
  }
  for (int i = 0; i < NODES; i++) node_close(&n[i]);
  return 0;
}

static int plain_server_test(void) {
  node_conn n;
  ASSERT_EQ(node_open(&n, ports[NODES]), 0);
  lmr__topology t;
  lmr_error err;
  n.conn.deadline = lmr__deadline(5);
  ASSERT_EQ(lmr__topology_read(&n.conn, "127.0.0.1", 0, &t, &err), LMR_EINVAL);
  if (strstr(err.msg, "is not a Redis Cluster node") == NULL) TEST_FAIL_("message: %s", err.msg);
  node_close(&n);
  return 0;
}

TEST(live) {
  ASSERT(mkdtemp(dir) != NULL);
  for (int i = 0; i <= NODES; i++) {
    ports[i] = live_free_port();
    ASSERT(ports[i] > 0);
    if (i < NODES) {
      do bus_ports[i] = live_free_port();
      while (bus_ports[i] == ports[i]);
      ASSERT(bus_ports[i] > 0);
    }
    pids[i] = i < NODES ? start_cluster_node(ports[i], bus_ports[i]) : live_start_redis(ports[i]);
    ASSERT(pids[i] > 0);
  }
  int rc = cluster_test();
  if (rc == 0) rc = plain_server_test();
  for (int i = 0; i <= NODES; i++) live_stop_redis(pids[i], SIGKILL);
  for (int i = 0; i < NODES; i++) {
    char conf[128];
    snprintf(conf, sizeof conf, "%s/nodes-%d.conf", dir, ports[i]);
    unlink(conf);
  }
  rmdir(dir);
  return rc;
}

TEST_MAIN(TEST_ENTRY(live))
