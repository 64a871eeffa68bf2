/* The shape of a Redis Cluster: its nodes and which master serves each
 * slot, read from CLUSTER SHARDS (Redis >= 7.0) or, from older servers,
 * CLUSTER SLOTS. Parsing is separate from I/O: the parsers take a reply
 * tree (value.h), so they are unit-tested on canned replies.
 *
 * Endpoints. A node's host is its preferred endpoint as the server states
 * it (cluster-preferred-endpoint-type: an IP, a hostname, ...):
 *   - a non-empty endpoint other than "?" is used as it is;
 *   - "" (SHARDS) or NIL (SLOTS) means the endpoint is unknown to the
 *     cluster (nodes behind a load balancer; cluster-preferred-endpoint-type
 *     unknown-endpoint) or the node does not know its own IP: the host
 *     the reply came from (asked_host) is used, with the node's port;
 *   - "?" means the node should be reached by hostname but has none set:
 *     it cannot be reached, and is left out (a master's slots then have no
 *     owner);
 *   - SHARDS without an "endpoint" field: its "ip" (empty: asked_host).
 * Ports: SHARDS gives "port" (plain; absent when the node has no plain
 * port) and "tls-port" (when TLS is on); with tls the TLS port is used when
 * given, else "port"; without tls "port", and a node with only a TLS port
 * is left out. CLUSTER SLOTS gives one port, the one for this connection's
 * kind, used as it is.
 *
 * Which nodes. Every master is kept, whatever its health ("failed" ones
 * still own their slots until a replica takes over); replicas only when
 * SHARDS says health "online" (SLOTS lists no failed replicas). A node is
 * identified by host:port: one listed twice is kept once (SLOTS repeats a
 * node in each of its ranges); one listed as a master is never also a
 * replica.
 */
#ifndef LMR_TOPOLOGY_H
#define LMR_TOPOLOGY_H

#include <stdint.h>

#include "conn.h"
#include "slot.h"
#include "value.h"

typedef struct {
  char *host;  /* endpoint to connect to (NUL-terminated, owned) */
  int port;    /* the TCP port (the TLS port when tls and the node says one) */
  int master;  /* -1 for a master; else the index of its master in nodes */
} lmr__topo_node;

typedef struct {
  lmr__topo_node *nodes;       /* the masters first: nodes[0..nmasters) */
  int nnodes;
  int nmasters;
  int16_t owner[LMR__SLOTS];   /* index of the master serving each slot, -1: none */
} lmr__topology;

/* Parse a CLUSTER SHARDS reply (RESP2: arrays of alternating field names
 * and values). asked_host: the host of the node that answered, used where
 * a node's endpoint is empty (NULL: such nodes are left out). tls: prefer
 * "tls-port". On success *out is filled (free it with
 * lmr__topology_free); a reply of another shape is LMR_EPROTO, and *out is
 * then empty. Slots no reachable master serves have owner -1; a cluster
 * with no slots assigned yet parses to no owners at all. */
int lmr__topology_from_shards(const lmr__value *v, const char *asked_host, int tls,
                              lmr__topology *out, lmr_error *err);
/* The same from a CLUSTER SLOTS reply ([[start, end, master, replica...]...],
 * each node [endpoint, port, id, metadata...]). tls is not needed: the
 * server already gave the port for this connection's kind. */
int lmr__topology_from_slots(const lmr__value *v, const char *asked_host, int tls,
                             lmr__topology *out, lmr_error *err);
/* Sends CLUSTER SHARDS on conn (already connected: lmr__conn_ensure; its
 * deadline set by the caller, as for any operation) and parses the reply;
 * a server that does not know the subcommand (Redis < 7.0) is asked
 * CLUSTER SLOTS instead. A server with cluster support disabled is
 * LMR_EINVAL, saying that asked_host:port is not a cluster node; other
 * server errors are LMR_ERESPONSE (LMR_EAUTH for NOAUTH/WRONGPASS); I/O
 * errors as conn.h reports them. */
int lmr__topology_read(lmr_conn *conn, const char *asked_host, int tls, lmr__topology *out,
                       lmr_error *err);
/* Frees what t holds and leaves it empty (no nodes, no owners); t itself
 * is the caller's. Safe on an empty or already freed topology. */
void lmr__topology_free(lmr__topology *t);

#endif
