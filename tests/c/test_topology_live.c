/* Topology and key slots against real servers this test starts itself: a
 * cluster of three masters made with CLUSTER ADDSLOTSRANGE and CLUSTER
 * MEET (no redis-cli), read through lmr__topology_read from each node;
 * lmr__key_slot and part keys checked against CLUSTER KEYSLOT; and a
 * plain (non-cluster) server refused with LMR_EINVAL. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "live_cluster.h"
#include "slot.h"
#include "test.h"
#include "topology.h"
#include "value.h"

#define NODES LIVE_CLUSTER_NODES

static live_cluster lc;
static pid_t plain_pid;
static int plain_port;

/* The topology as read from node `from`, once the cluster agrees: 1 when
 * it is the expected one, 0 when not (yet). */
static int topology_is_complete(live_node_conn *n, lmr__topology *t) {
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
    live_cluster_range(i, &first, &last);
    for (int k = 0; k < t->nnodes; k++)
      if (t->nodes[k].port == lc.ports[i]) at = k;
    ASSERT(at >= 0);
    ASSERT(strcmp(t->nodes[at].host, "127.0.0.1") == 0);
    ASSERT_EQ(t->nodes[at].master, -1);
    for (int s = first; s <= last; s++) ASSERT_EQ(t->owner[s], at);
  }
  return 0;
}

static int cluster_test(void) {
  live_node_conn n[NODES];
  for (int i = 0; i < NODES; i++) ASSERT_EQ(live_node_open(&n[i], lc.ports[i]), 0);
  /* live_cluster_start waited until every node serves every slot. */
  for (int i = 0; i < NODES; i++) {
    lmr__topology t;
    ASSERT_EQ(topology_is_complete(&n[i], &t), 1);
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
      len = lmr__part_key(key, len, 1 + (uint32_t)rand() % (count - 1), count, (uint64_t)rand(), key);
    }
    key[len] = '\0';
    lmr__value *v;
    ASSERT_EQ(live_command(&n[k % NODES], &v, 3, (const char *[]){"CLUSTER", "KEYSLOT", key}), LMR_OK);
    int64_t got = v->type == LMR__VALUE_INTEGER ? v->integer : -1;
    lmr__value_free(v);
    if (got != lmr__key_slot(key, len)) TEST_FAIL_("key \"%s\": server %lld", key, (long long)got);
  }
  for (int i = 0; i < NODES; i++) live_node_close(&n[i]);
  return 0;
}

static int plain_server_test(void) {
  live_node_conn n;
  ASSERT_EQ(live_node_open(&n, plain_port), 0);
  lmr__topology t;
  lmr_error err;
  n.conn.deadline = lmr__deadline(5);
  ASSERT_EQ(lmr__topology_read(&n.conn, "127.0.0.1", 0, &t, &err), LMR_EINVAL);
  if (strstr(err.msg, "is not a Redis Cluster node") == NULL) TEST_FAIL_("message: %s", err.msg);
  live_node_close(&n);
  return 0;
}

TEST(live) {
  plain_port = live_free_port();
  ASSERT(plain_port > 0);
  plain_pid = live_start_redis(plain_port);
  ASSERT(plain_pid > 0);
  int rc = live_cluster_start(&lc);
  if (rc == 0) rc = cluster_test();
  if (rc == 0) rc = plain_server_test();
  live_cluster_stop(&lc);
  live_stop_redis(plain_pid, SIGKILL);
  return rc;
}

TEST_MAIN(TEST_ENTRY(live))
