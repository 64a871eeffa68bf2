/* Cluster topology (csrc/topology.h): replies of a real Redis 7.0.15
 * cluster, replies written here for each endpoint rule, and
 * lmr__topology_read's choice of command, all over a socketpair. */
#include "sock_conn.h"
#include "test.h"
#include "topology.h"

/* CLUSTER SHARDS and CLUSTER SLOTS, raw, from Redis 7.0.15: three masters
 * made by redis-cli --cluster create 127.0.0.1:7301 127.0.0.1:7302
 * 127.0.0.1:7303, then a replica of 7301 on 7304 (asked on 7304). */
static const char shards_7_0_15[] =
    "*3\r\n"
    "*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*1\r\n"
    "*14\r\n$2\r\nid\r\n$40\r\n70b03c7fb7d7b2d9c648f193bd12c773cf0361c7\r\n$4\r\nport\r\n:7302\r\n"
    "$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
    "$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
    "*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n"
    "*14\r\n$2\r\nid\r\n$40\r\n0b766673a0f18bdc9607e9025b858d2d567af1d8\r\n$4\r\nport\r\n:7301\r\n"
    "$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
    "$18\r\nreplication-offset\r\n:266\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
    "*14\r\n$2\r\nid\r\n$40\r\n8d0e92e54528911e14b5355fdcd38033c8a7116c\r\n$4\r\nport\r\n:7304\r\n"
    "$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n"
    "$18\r\nreplication-offset\r\n:280\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
    "*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n"
    "*14\r\n$2\r\nid\r\n$40\r\n46bd18feb4090659e431779d43464168ab9c184a\r\n$4\r\nport\r\n:7303\r\n"
    "$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
    "$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";

/* The node entries' fourth element, *0, is the (empty) networking
 * metadata map, not a replica. */
static const char slots_7_0_15[] =
    "*3\r\n"
    "*4\r\n:0\r\n:5460\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:7301\r\n$40\r\n0b766673a0f18bdc9607e9025b858d2d567af1d8\r\n*0\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:7304\r\n$40\r\n8d0e92e54528911e14b5355fdcd38033c8a7116c\r\n*0\r\n"
    "*3\r\n:5461\r\n:10922\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:7302\r\n$40\r\n70b03c7fb7d7b2d9c648f193bd12c773cf0361c7\r\n*0\r\n"
    "*3\r\n:10923\r\n:16383\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:7303\r\n$40\r\n46bd18feb4090659e431779d43464168ab9c184a\r\n*0\r\n";

typedef int (*parse_fn)(const lmr__value *, const char *, int, lmr__topology *, lmr_error *);

/* Reads the reply in bytes[0..n) into a tree and parses it. */
static int parse_bytes(parse_fn parse, const char *bytes, size_t n, const char *asked_host,
                       int tls, lmr__topology *t, lmr_error *err) {
  sock_conn s;
  if (sock_conn_open(&s) != 0 || sock_conn_feed(&s, bytes, n) != 0) return 99;
  lmr__value *v;
  int rc = lmr__value_read(&s.conn, &v, err);
  sock_conn_close(&s);
  if (rc != LMR_OK) return 98;
  rc = parse(v, asked_host, tls, t, err);
  lmr__value_free(v);
  return rc;
}

static int find(const lmr__topology *t, const char *host, int port) {
  for (int i = 0; i < t->nnodes; i++)
    if (t->nodes[i].port == port && strcmp(t->nodes[i].host, host) == 0) return i;
  return -1;
}

/* Slots [a, b] are all served by node i. */
static int owned(const lmr__topology *t, int a, int b, int i) {
  for (int s = a; s <= b; s++)
    if (t->owner[s] != i) TEST_FAIL_("slot %d: owner %d, not %d", s, t->owner[s], i);
  return 0;
}

/* The cluster above, whichever command described it. */
static int check_real(const lmr__topology *t) {
  ASSERT_EQ(t->nnodes, 4);
  ASSERT_EQ(t->nmasters, 3);
  int m1 = find(t, "127.0.0.1", 7301), m2 = find(t, "127.0.0.1", 7302);
  int m3 = find(t, "127.0.0.1", 7303), r = find(t, "127.0.0.1", 7304);
  ASSERT(m1 >= 0 && m1 < 3 && m2 >= 0 && m2 < 3 && m3 >= 0 && m3 < 3);
  ASSERT_EQ(r, 3);  /* masters first */
  ASSERT_EQ(t->nodes[m1].master, -1);
  ASSERT_EQ(t->nodes[m2].master, -1);
  ASSERT_EQ(t->nodes[m3].master, -1);
  ASSERT_EQ(t->nodes[r].master, m1);
  ASSERT_EQ(owned(t, 0, 5460, m1), 0);
  ASSERT_EQ(owned(t, 5461, 10922, m2), 0);
  ASSERT_EQ(owned(t, 10923, 16383, m3), 0);
  return 0;
}

TEST(real_shards) {
  lmr__topology t;
  lmr_error err;
  ASSERT_EQ(parse_bytes(lmr__topology_from_shards, shards_7_0_15, sizeof shards_7_0_15 - 1,
                        "localhost", 0, &t, &err), LMR_OK);
  ASSERT_EQ(check_real(&t), 0);
  lmr__topology_free(&t);
  ASSERT_EQ(t.nnodes, 0);
  ASSERT(t.nodes == NULL);
  ASSERT_EQ(t.owner[0], -1);
  lmr__topology_free(&t);  /* twice: harmless */
  return 0;
}

TEST(real_slots) {
  lmr__topology t;
  lmr_error err;
  ASSERT_EQ(parse_bytes(lmr__topology_from_slots, slots_7_0_15, sizeof slots_7_0_15 - 1,
                        "localhost", 0, &t, &err), LMR_OK);
  ASSERT_EQ(check_real(&t), 0);
  lmr__topology_free(&t);
  return 0;
}

/* One SHARDS node: its fields, in the order Redis sends them. endpoint
 * NULL: no endpoint field; tls_port 0: no tls-port field; port 0: no
 * port field. */
static long shard_node(char *b, size_t cap, long n, const char *ip, const char *endpoint,
                       int port, int tls_port, const char *role, const char *health) {
  int fields = 6 + (endpoint != NULL) + (port != 0) + (tls_port != 0);
  n = resp_build(b, cap, (size_t)n, "assss", 2 * fields, "id", "0123", "ip", ip);
  if (n >= 0 && port != 0) n = resp_build(b, cap, (size_t)n, "si", "port", (long long)port);
  if (n >= 0 && tls_port != 0) n = resp_build(b, cap, (size_t)n, "si", "tls-port", (long long)tls_port);
  if (n >= 0 && endpoint != NULL) n = resp_build(b, cap, (size_t)n, "ss", "endpoint", endpoint);
  if (n >= 0)
    n = resp_build(b, cap, (size_t)n, "sssissss", "role", role, "replication-offset", 0LL,
                   "health", health, "hostname", "");
  return n;
}

TEST(shards_endpoint_rules) {
  static char b[8192];
  long n = resp_build(b, sizeof b, 0, "a", 5);
  /* 1: endpoint "" (unknown endpoint): the asked host, its port. */
  n = resp_build(b, sizeof b, (size_t)n, "asaiisa", 4, "slots", 2, 0LL, 99LL, "nodes", 2);
  n = shard_node(b, sizeof b, n, "10.0.0.1", "", 7001, 0, "master", "online");
  n = shard_node(b, sizeof b, n, "10.0.0.2", "", 7002, 0, "replica", "online");
  /* 2: endpoint "?" (no hostname): left out, with its slots and replicas. */
  n = resp_build(b, sizeof b, (size_t)n, "asaiisa", 4, "slots", 2, 100LL, 199LL, "nodes", 2);
  n = shard_node(b, sizeof b, n, "10.0.0.3", "?", 7003, 0, "master", "online");
  n = shard_node(b, sizeof b, n, "10.0.0.4", "db4.example", 7004, 0, "replica", "online");
  /* 3: no endpoint field: the ip; a failed master kept; replicas only
   * when online; two ranges. */
  n = resp_build(b, sizeof b, (size_t)n, "asaiiiisa", 4, "slots", 4, 200LL, 299LL, 400LL, 400LL,
                 "nodes", 4);
  n = shard_node(b, sizeof b, n, "10.0.0.5", NULL, 7005, 0, "master", "failed");
  n = shard_node(b, sizeof b, n, "10.0.0.6", NULL, 7006, 0, "replica", "loading");
  n = shard_node(b, sizeof b, n, "10.0.0.7", NULL, 7007, 0, "replica", "failed");
  n = shard_node(b, sizeof b, n, "10.0.0.8", NULL, 7008, 0, "replica", "online");
  /* 4: a hostname endpoint; TLS ports; the master listed after its replica. */
  n = resp_build(b, sizeof b, (size_t)n, "asaiisa", 4, "slots", 2, 300LL, 399LL, "nodes", 2);
  n = shard_node(b, sizeof b, n, "10.0.0.10", "r10.example", 7010, 8010, "replica", "online");
  n = shard_node(b, sizeof b, n, "10.0.0.9", "m9.example", 7009, 8009, "master", "online");
  /* 5: only a TLS port; no slots (a shard being emptied). */
  n = resp_build(b, sizeof b, (size_t)n, "asasa", 4, "slots", 0, "nodes", 1);
  n = shard_node(b, sizeof b, n, "10.0.0.11", "m11.example", 0, 8011, "master", "online");
  ASSERT(n > 0);

  lmr__topology t;
  lmr_error err;
  ASSERT_EQ(parse_bytes(lmr__topology_from_shards, b, (size_t)n, "seed.example", 0, &t, &err),
            LMR_OK);
  /* Masters: seed:7001, 10.0.0.5:7005, m9:7009 (m11 has no plain port). */
  ASSERT_EQ(t.nmasters, 3);
  ASSERT_EQ(t.nnodes, 6);
  int m1 = find(&t, "seed.example", 7001), m5 = find(&t, "10.0.0.5", 7005);
  int m9 = find(&t, "m9.example", 7009);
  ASSERT(m1 >= 0 && m5 >= 0 && m9 >= 0);
  ASSERT_EQ(t.nodes[find(&t, "seed.example", 7002)].master, m1);
  ASSERT_EQ(t.nodes[find(&t, "10.0.0.8", 7008)].master, m5);
  ASSERT_EQ(t.nodes[find(&t, "r10.example", 7010)].master, m9);
  ASSERT_EQ(find(&t, "db4.example", 7004), -1);  /* its master was left out */
  ASSERT_EQ(find(&t, "10.0.0.6", 7006), -1);
  ASSERT_EQ(find(&t, "10.0.0.7", 7007), -1);
  ASSERT_EQ(owned(&t, 0, 99, m1), 0);
  ASSERT_EQ(owned(&t, 100, 199, -1), 0);
  ASSERT_EQ(owned(&t, 200, 299, m5), 0);
  ASSERT_EQ(owned(&t, 300, 399, m9), 0);
  ASSERT_EQ(owned(&t, 400, 400, m5), 0);
  ASSERT_EQ(owned(&t, 401, 16383, -1), 0);
  lmr__topology_free(&t);

  /* With TLS: the TLS ports where given, so m11 is in too. */
  ASSERT_EQ(parse_bytes(lmr__topology_from_shards, b, (size_t)n, "seed.example", 1, &t, &err),
            LMR_OK);
  ASSERT_EQ(t.nmasters, 4);
  ASSERT(find(&t, "m9.example", 8009) >= 0);
  ASSERT(find(&t, "r10.example", 8010) >= 0);
  ASSERT(find(&t, "m11.example", 8011) >= 0);
  ASSERT(find(&t, "seed.example", 7001) >= 0);  /* no tls-port: "port" */
  lmr__topology_free(&t);

  /* No asked host: the nodes with an empty endpoint are left out. */
  ASSERT_EQ(parse_bytes(lmr__topology_from_shards, b, (size_t)n, NULL, 0, &t, &err), LMR_OK);
  ASSERT_EQ(t.nmasters, 2);
  ASSERT_EQ(owned(&t, 0, 99, -1), 0);
  lmr__topology_free(&t);
  return 0;
}

TEST(slots_endpoint_rules) {
  static char b[4096];
  long n = resp_build(b, sizeof b, 0, "a", 5);
  /* NIL endpoint (unknown): the asked host; a hostname endpoint. */
  n = resp_build(b, sizeof b, (size_t)n, "aii" "ani" "asis", 4, 0LL, 99LL, 2, 7001LL, 3,
                 "r.example", 7002LL, "id2");
  /* The same master again (one node), its replica again. */
  n = resp_build(b, sizeof b, (size_t)n, "aii" "anis" "asisa", 4, 200LL, 299LL, 3, 7001LL, "id1",
                 4, "r.example", 7002LL, "id2", 0);
  /* "?": left out with its slots. */
  n = resp_build(b, sizeof b, (size_t)n, "aii" "asi", 3, 100LL, 199LL, 2, "?", 7003LL);
  /* "" endpoint: the asked host too. Metadata with a hostname. */
  n = resp_build(b, sizeof b, (size_t)n, "aii" "asisass", 3, 300LL, 399LL, 4, "", 7004LL, "id4",
                 2, "hostname", "h4");
  /* A replica that is a master elsewhere stays a master. */
  n = resp_build(b, sizeof b, (size_t)n, "aii" "asis" "anis", 4, 400LL, 499LL, 3, "m5", 7005LL,
                 "id5", 3, 7004LL, "id4");
  ASSERT(n > 0);
  lmr__topology t;
  lmr_error err;
  ASSERT_EQ(parse_bytes(lmr__topology_from_slots, b, (size_t)n, "seed", 0, &t, &err), LMR_OK);
  ASSERT_EQ(t.nmasters, 3);
  ASSERT_EQ(t.nnodes, 4);
  int m1 = find(&t, "seed", 7001), m4 = find(&t, "seed", 7004), m5 = find(&t, "m5", 7005);
  int r2 = find(&t, "r.example", 7002);
  ASSERT(m1 >= 0 && m4 >= 0 && m5 >= 0 && r2 >= 0);
  ASSERT_EQ(t.nodes[r2].master, m1);
  ASSERT_EQ(t.nodes[m4].master, -1);
  ASSERT_EQ(owned(&t, 0, 99, m1), 0);
  ASSERT_EQ(owned(&t, 100, 199, -1), 0);
  ASSERT_EQ(owned(&t, 200, 299, m1), 0);
  ASSERT_EQ(owned(&t, 300, 399, m4), 0);
  ASSERT_EQ(owned(&t, 400, 499, m5), 0);
  lmr__topology_free(&t);
  return 0;
}

static int rejected(parse_fn parse, const char *bytes) {
  lmr__topology t;
  lmr_error err;
  ASSERT_EQ(parse_bytes(parse, bytes, strlen(bytes), "seed", 0, &t, &err), LMR_EPROTO);
  ASSERT_EQ(t.nnodes, 0);
  ASSERT(t.nodes == NULL);
  ASSERT_EQ(t.owner[0], -1);
  ASSERT(strstr(err.msg, "CLUSTER") != NULL);
  return 0;
}

TEST(malformed) {
  parse_fn sh = lmr__topology_from_shards, sl = lmr__topology_from_slots;
  ASSERT_EQ(rejected(sh, "+OK\r\n"), 0);
  ASSERT_EQ(rejected(sl, ":1\r\n"), 0);
  ASSERT_EQ(rejected(sh, "*1\r\n:1\r\n"), 0);
  /* slots out of range, reversed, odd; no nodes */
  static const char node[] =
      "*6\r\n$4\r\nport\r\n:7001\r\n$8\r\nendpoint\r\n$1\r\na\r\n$4\r\nrole\r\n$6\r\nmaster\r\n";
  char b[512];
  snprintf(b, sizeof b, "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16384\r\n$5\r\nnodes\r\n*1\r\n%s", node);
  ASSERT_EQ(rejected(sh, b), 0);
  snprintf(b, sizeof b, "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:9\r\n:8\r\n$5\r\nnodes\r\n*1\r\n%s", node);
  ASSERT_EQ(rejected(sh, b), 0);
  snprintf(b, sizeof b, "*1\r\n*4\r\n$5\r\nslots\r\n*1\r\n:9\r\n$5\r\nnodes\r\n*1\r\n%s", node);
  ASSERT_EQ(rejected(sh, b), 0);
  ASSERT_EQ(rejected(sh, "*1\r\n*2\r\n$5\r\nslots\r\n*0\r\n"), 0);
  /* a port out of range, a number endpoint */
  ASSERT_EQ(rejected(sh, "*1\r\n*4\r\n$5\r\nslots\r\n*0\r\n$5\r\nnodes\r\n*1\r\n"
                         "*6\r\n$4\r\nport\r\n:70000\r\n$8\r\nendpoint\r\n$1\r\na\r\n"
                         "$4\r\nrole\r\n$6\r\nmaster\r\n"), 0);
  ASSERT_EQ(rejected(sl, "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:5\r\n:7001\r\n"), 0);
  ASSERT_EQ(rejected(sl, "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\na\r\n"), 0);
  ASSERT_EQ(rejected(sl, "*1\r\n*2\r\n:0\r\n:1\r\n"), 0);
  /* An empty cluster parses: no nodes, no owners. */
  lmr__topology t;
  lmr_error err;
  ASSERT_EQ(parse_bytes(sh, "*0\r\n", 4, "seed", 0, &t, &err), LMR_OK);
  ASSERT_EQ(t.nnodes, 0);
  ASSERT_EQ(owned(&t, 0, 16383, -1), 0);
  lmr__topology_free(&t);
  return 0;
}

/* lmr__topology_read against canned answers; what it sent is checked. */
static int read_with(const char *answers, size_t n, const char *want_sent, int want_rc,
                     lmr__topology *t, lmr_error *err) {
  sock_conn s;
  ASSERT_EQ(sock_conn_open(&s), 0);
  s.cfg.port = 7301;
  ASSERT_EQ(sock_conn_feed(&s, answers, n), 0);
  ASSERT_EQ(lmr__topology_read(&s.conn, "127.0.0.1", 0, t, err), want_rc);
  char sent[256] = {0};
  ssize_t k = recv(s.peer, sent, sizeof sent - 1, MSG_DONTWAIT);
  ASSERT_EQ(k, (ssize_t)strlen(want_sent));
  ASSERT(strcmp(sent, want_sent) == 0);
  ASSERT(s.conn.fd >= 0);  /* whole replies were read: still usable */
  sock_conn_close(&s);
  return 0;
}

#define SHARDS_CMD "*2\r\n$7\r\nCLUSTER\r\n$6\r\nSHARDS\r\n"
#define SLOTS_CMD "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n"

TEST(read_shards) {
  lmr__topology t;
  lmr_error err;
  ASSERT_EQ(read_with(shards_7_0_15, sizeof shards_7_0_15 - 1, SHARDS_CMD, LMR_OK, &t, &err), 0);
  ASSERT_EQ(check_real(&t), 0);
  lmr__topology_free(&t);
  return 0;
}

TEST(read_falls_back_to_slots) {
  char b[2048];
  /* Redis 6's text, and 7's for a subcommand it does not know. */
  static const char *texts[] = {
      "-ERR Unknown subcommand or wrong number of arguments for 'SHARDS'. Try CLUSTER HELP.\r\n",
      "-ERR unknown subcommand 'SHARDS'. Try CLUSTER HELP.\r\n"};
  for (int i = 0; i < 2; i++) {
    int n = snprintf(b, sizeof b, "%s%s", texts[i], slots_7_0_15);
    lmr__topology t;
    lmr_error err;
    ASSERT_EQ(read_with(b, (size_t)n, SHARDS_CMD SLOTS_CMD, LMR_OK, &t, &err), 0);
    ASSERT_EQ(check_real(&t), 0);
    lmr__topology_free(&t);
  }
  return 0;
}

TEST(read_errors) {
  lmr__topology t;
  lmr_error err;
  static const char disabled[] = "-ERR This instance has cluster support disabled\r\n";
  ASSERT_EQ(read_with(disabled, sizeof disabled - 1, SHARDS_CMD, LMR_EINVAL, &t, &err), 0);
  if (strstr(err.msg, "127.0.0.1:7301 is not a Redis Cluster node") == NULL ||
      strstr(err.msg, "cluster=True") == NULL || strstr(err.msg, "redis://") == NULL)
    TEST_FAIL_("message: %s", err.msg);
  ASSERT_EQ(t.nnodes, 0);
  static const char noauth[] = "-NOAUTH Authentication required.\r\n";
  ASSERT_EQ(read_with(noauth, sizeof noauth - 1, SHARDS_CMD, LMR_EAUTH, &t, &err), 0);
  static const char other[] = "-ERR unknown subcommand 'SHARDS'.\r\n-ERR oops\r\n";
  ASSERT_EQ(read_with(other, sizeof other - 1, SHARDS_CMD SLOTS_CMD, LMR_ERESPONSE, &t, &err), 0);
  if (strstr(err.msg, "CLUSTER SLOTS: ERR oops") == NULL) TEST_FAIL_("message: %s", err.msg);
  return 0;
}

TEST_MAIN(TEST_ENTRY(real_shards), TEST_ENTRY(real_slots), TEST_ENTRY(shards_endpoint_rules),
          TEST_ENTRY(slots_endpoint_rules), TEST_ENTRY(malformed), TEST_ENTRY(read_shards),
          TEST_ENTRY(read_falls_back_to_slots), TEST_ENTRY(read_errors))
