"""rediss-cluster://: TLS to every node of a real local TLS cluster
(RedisCluster(tls=...): tls-port on every node, tls-cluster and
tls-replication on, so the nodes announce their TLS ports; the plain ports
stay open for the fixture's own commands).

What Redis 7.0 tells a client about ports there, checked first (the
client's routing rests on it): CLUSTER SHARDS gives "port" (plain) and
"tls-port" whatever the asking connection is; CLUSTER SLOTS, CLUSTER NODES,
MOVED and ASK give the port of the asking connection's kind (a TLS
connection is told TLS ports). Then our client over TLS: round trips (32 MiB
and small values, the batch API), a value's parts on every master, every
connection it holds on a TLS port, and redirections (MOVED after a
reshard, ASK during a slot's migration) followed to TLS ports.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from urllib.parse import quote

import numpy as np
import pytest

from lmcache_redis import RedisClient
from lmcache_redis._testing import (ClusterNode, RedisCluster, TestCertificates, _encode,
                                    _read_reply, keyslot, make_test_certificates)
from selfcheck import MiB, fresh_tag, make

SIZES = [0, 1, 1000, 2 * MiB - 63, 3 * MiB + 1, 32 * MiB]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TestCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("tls-cluster"))


@pytest.fixture(scope="module")
def tls_cluster(certs) -> Iterator[RedisCluster]:
    """3 masters + 3 replicas, TLS everywhere; tests may reshard it."""
    with RedisCluster(masters=3, replicas=1, tls=certs) as cluster:
        yield cluster


def _url(cluster: RedisCluster, certs: TestCertificates, **options) -> str:
    query = "&".join([f"ssl_ca_certs={quote(certs.ca_cert)}"] +
                     [f"{k}={v}" for k, v in options.items()])
    return f"{cluster.tls_url}?{query}"


@pytest.fixture(scope="module")
def tls_client(tls_cluster, certs) -> Iterator[RedisClient]:
    with RedisClient.from_url(_url(tls_cluster, certs, connections=4)) as client:
        yield client


def _tls_command(node: ClusterNode, certs: TestCertificates, *args: object):
    """One command over a fresh TLS connection to node's TLS port; an error
    reply is returned (as RespError), not raised."""
    context = ssl.create_default_context(cafile=certs.ca_cert)
    with socket.create_connection((node.host, node.tls_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=node.host) as sock:
            sock.sendall(_encode(args))
            with sock.makefile("rb") as f:
                return _read_reply(f)


def _connections_by_port(cluster: RedisCluster) -> dict[str, int]:
    """How many client connections the nodes hold on their plain and on
    their TLS ports (CLIENT LIST's laddr), leaving out the one asking (on the
    plain port) and the replication links (flags S and M)."""
    counts = {"plain": 0, "tls": 0}
    for node in cluster.live_nodes():
        for line in node.command("CLIENT", "LIST").decode().splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("cmd") == "client|list" or set(fields.get("flags", "")) & {"S", "M"}:
                continue
            port = int(fields["laddr"].rsplit(":", 1)[1])
            counts["tls" if port == node.tls_port else "plain"] += 1
    return counts


def _key_in_slot(slot: int, prefix: str) -> str:
    return next(k for k in (f"{prefix}:{i}" for i in range(1_000_000)) if keyslot(k) == slot)


def _value(nbytes: int, rng: np.random.Generator) -> np.ndarray:
    if nbytes < 8:
        return rng.integers(0, 256, nbytes, dtype=np.uint8)
    return make(fresh_tag(rng), nbytes)


def _same(client: RedisClient, key: str, value: np.ndarray) -> None:
    buf = np.zeros(value.nbytes + 16, dtype=np.uint8)
    assert client.get(key, buf) == value.nbytes
    assert np.array_equal(buf[:value.nbytes], value)


# ---- what the nodes announce ------------------------------------------------------


def test_fixture_urls_and_ports(tls_cluster) -> None:
    nodes = tls_cluster.nodes
    assert tls_cluster.tls_url == "rediss-cluster://" + ",".join(
        f"127.0.0.1:{n.tls_port}" for n in nodes)
    assert tls_cluster.url == "redis-cluster://" + ",".join(n.address for n in nodes)
    assert all(n.tls_port != n.port for n in nodes)
    with pytest.raises(RuntimeError, match="without tls="):
        RedisCluster().tls_url


def test_shards_give_both_ports_whatever_the_connection(tls_cluster, certs) -> None:
    tls_of = {n.port: n.tls_port for n in tls_cluster.nodes}
    node = tls_cluster.nodes[0]
    for reply in (node.command("CLUSTER", "SHARDS"),
                  _tls_command(node, certs, "CLUSTER", "SHARDS")):
        seen = set()
        for shard in reply:
            fields = dict(zip(shard[::2], shard[1::2]))
            for n in fields[b"nodes"]:
                n = dict(zip(n[::2], n[1::2]))
                assert n[b"tls-port"] == tls_of[n[b"port"]]
                seen.add(n[b"port"])
        assert seen == set(tls_of)


def test_slots_and_nodes_give_the_asking_connections_kind_of_port(tls_cluster, certs) -> None:
    node = tls_cluster.nodes[0]
    plain_ports = {n.port for n in tls_cluster.nodes}
    tls_ports = {n.tls_port for n in tls_cluster.nodes}
    for reply, ports in ((node.command("CLUSTER", "SLOTS"), plain_ports),
                         (_tls_command(node, certs, "CLUSTER", "SLOTS"), tls_ports)):
        named = {entry[1] for r in reply for entry in r[2:]}
        assert named and named <= ports
    for reply, ports in ((node.command("CLUSTER", "NODES"), plain_ports),
                         (_tls_command(node, certs, "CLUSTER", "NODES"), tls_ports)):
        named = {int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
                 for line in reply.decode().splitlines()}
        assert named == ports


def test_moved_names_the_tls_port_to_a_tls_connection(tls_cluster, certs) -> None:
    owner = tls_cluster.masters()[1]
    key = _key_in_slot(tls_cluster.slots_of(owner)[0], "moved")
    asked = tls_cluster.masters()[0]
    reply = _tls_command(asked, certs, "GET", key)
    assert str(reply) == f"MOVED {keyslot(key)} 127.0.0.1:{owner.tls_port}"
    with pytest.raises(Exception, match=f"MOVED {keyslot(key)} 127.0.0.1:{owner.port}$"):
        asked.command("GET", key)  # a plain connection: the plain port


# ---- our client over TLS -------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(tls_client, key, size) -> None:
    value = _value(size, np.random.default_rng(size))
    tls_client.set(key, value)
    _same(tls_client, key, value)
    assert tls_client.exists(key)
    assert tls_client.delete(key)
    assert tls_client.get(key) is None


def test_client_is_tls_and_holds_connections_on_tls_ports_only(tls_cluster, tls_client,
                                                              key) -> None:
    assert tls_client.ssl and tls_client.ssl_verify
    tls_client.set(key, _value(32 * MiB, np.random.default_rng(1)))  # every master
    counts = _connections_by_port(tls_cluster)
    assert counts["plain"] == 0 and counts["tls"] >= 3, counts


def test_batch_round_trip(tls_client, key) -> None:
    rng = np.random.default_rng(2)
    keys = [f"{key}:{n}" for n in SIZES]
    values = [_value(n, rng) for n in SIZES]
    tls_client.set_many(keys, values)
    assert tls_client.exists_many(keys + [f"{key}:never"]) == [True] * len(keys) + [False]
    bufs = [np.zeros(n, dtype=np.uint8) for n in SIZES]
    assert tls_client.get_many(keys, bufs) == SIZES
    assert all(np.array_equal(b, v) for b, v in zip(bufs, values))
    assert tls_client.delete_many(keys) == [True] * len(keys)
    assert tls_client.get_many(keys, bufs) == [None] * len(keys)


def test_a_32_mib_value_has_parts_on_every_master(tls_cluster, tls_client, key) -> None:
    value = _value(32 * MiB, np.random.default_rng(3))
    tls_client.set(key, value)
    holding = {m.port: len(tls_cluster.keys_on(m, key + "*")) for m in tls_cluster.masters()}
    assert all(n >= 1 for n in holding.values()), holding
    _same(tls_client, key, value)


def test_moved_after_a_reshard_is_followed_to_the_tls_port(tls_cluster, certs, key) -> None:
    src, dst = tls_cluster.masters()[:2]
    moving = tls_cluster.slots_of(src)[:4]  # reshard moves the lowest slots
    keys = [_key_in_slot(s, key) for s in moving]
    rng = np.random.default_rng(4)
    values = [_value(n, rng) for n in (100, 3 * MiB, 32 * MiB, 1)]
    # A client of its own, so its slot map is the one from before the reshard.
    with RedisClient.from_url(_url(tls_cluster, certs)) as client:
        for k, v in zip(keys, values):
            client.set(k, v)
        moved_before = tls_cluster.error_replies().get("MOVED", 0)
        assert tls_cluster.reshard(src, dst, len(moving)) == moving
        for k, v in zip(keys, values):
            assert tls_cluster.node_for_key(k).port == dst.port
            _same(client, k, v)
        assert tls_cluster.error_replies().get("MOVED", 0) > moved_before
        counts = _connections_by_port(tls_cluster)
        assert counts["plain"] == 0, counts
        tls_cluster.reshard(dst, src, len(moving))  # as it was, for the other tests
        for k, v in zip(keys, values):
            _same(client, k, v)


def test_ask_during_a_migration_is_followed_to_the_tls_port(tls_cluster, certs, key) -> None:
    src, dst = tls_cluster.masters()[1:3]
    slot = tls_cluster.slots_of(src)[-1]
    k = _key_in_slot(slot, key)
    with RedisClient.from_url(_url(tls_cluster, certs)) as client:
        client.set(k, b"asked for")  # one part: the key K itself
        asks_before = tls_cluster.error_replies().get("ASK", 0)
        dst.command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id)
        src.command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id)
        try:
            # Under tls-cluster, MIGRATE connects with TLS: the TLS port.
            assert src.command("MIGRATE", dst.host, dst.tls_port, "", 0, 5000,
                               "KEYS", k) == "OK"
            assert _tls_command(src, certs, "GET", k).args[0] == (
                f"ASK {slot} 127.0.0.1:{dst.tls_port}")
            assert client.get(k) == b"asked for"
            assert tls_cluster.error_replies().get("ASK", 0) > asks_before
        finally:
            # Finish the migration (k is on dst now): the slot is dst's.
            for node in (dst, src, *tls_cluster.masters()):
                node.command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
        tls_cluster.wait_settled("the slot's migration finished")
        assert client.get(k) == b"asked for"
    assert _connections_by_port(tls_cluster)["plain"] == 0
