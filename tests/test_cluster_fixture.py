"""Tests of lmcache_redis._testing.RedisCluster, which the cluster tests
rely on, checked with redis-py's own cluster client (not ours): it starts
and stops cleanly, hashes keys as Redis does, and its reshard, failover and
stall helpers change the cluster the way they claim."""

from __future__ import annotations

import os
import socket
import time

import pytest
from redis.cluster import RedisCluster as PyRedisCluster

from lmcache_redis._testing import RedisCluster, keyslot

KEYS = [f"fixture:{i}" for i in range(1000)]


def _nothing_listens_on(port: int) -> bool:
    # Not a bind test: the killed nodes' connections leave the port in
    # TIME_WAIT, which redis-server (SO_REUSEADDR) ignores.
    with socket.socket() as sock:
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


def _redis_py(cluster: RedisCluster, node=None) -> PyRedisCluster:
    node = node or cluster.live_nodes()[0]
    return PyRedisCluster(host=node.host, port=node.port)


def _store_keys(cluster: RedisCluster) -> None:
    with _redis_py(cluster) as r:
        for k in KEYS:
            r.set(k, k)


def _all_keys_read_back(cluster: RedisCluster, node=None) -> None:
    with _redis_py(cluster, node) as r:
        for k in KEYS:
            assert r.get(k) == k.encode(), k


def test_starts_settled_and_stops_clean_three_times() -> None:
    for _ in range(3):
        begun = time.monotonic()
        with RedisCluster(masters=3, replicas=1) as cluster:
            print(f"started in {time.monotonic() - begun:.2f} s")
            nodes = cluster.nodes
            assert len(nodes) == 6
            masters = cluster.masters()
            assert len(masters) == 3
            assert sorted(len(cluster.slots_of(m)) for m in masters) == [5461, 5461, 5462]
            assert all(len(cluster.replicas_of(m)) == 1 for m in masters)
            for node in nodes:
                info = node.command("CLUSTER", "INFO").decode()
                assert "cluster_state:ok" in info and "cluster_known_nodes:6" in info
            assert cluster.url == "redis-cluster://" + ",".join(
                f"127.0.0.1:{n.port}" for n in nodes)
            dirs = [n._dir for n in nodes]
            assert all(os.path.exists(os.path.join(d, f"nodes-{n.port}.conf"))
                       for d, n in zip(dirs, nodes))
        assert all(n.pid is None for n in nodes)
        assert all(_nothing_listens_on(n.port) for n in nodes)
        assert not any(os.path.exists(d) for d in dirs)


def test_keyslot_and_node_for_key_match_the_server(redis_cluster) -> None:
    asked = redis_cluster.nodes[0]
    for key in ["", "a", "foo", "{pin}x", "{pin}y", "x{}y", "{}{a}", "a{b}c{d}", "\xe9",
                *KEYS[:50]]:
        assert keyslot(key) == asked.command("CLUSTER", "KEYSLOT", key), key
    assert keyslot("{pin}x") == keyslot("pin") == keyslot("other{pin}")
    with _redis_py(redis_cluster) as r:
        for k in KEYS[:50]:
            r.set(k, k)
            owner = redis_cluster.node_for_key(k)
            assert owner.command("GET", k) == k.encode()
            assert redis_cluster.dbsize(owner) >= 1
            assert k.encode() in redis_cluster.keys_on(owner, k)


def test_reshard_100_slots_moves_keys_and_redirects(redis_cluster) -> None:
    _store_keys(redis_cluster)
    src, dst = redis_cluster.masters()[:2]
    key = next(k for k in KEYS if keyslot(k) in redis_cluster.slots_of(src)[:100])
    begun = time.monotonic()
    moved = redis_cluster.reshard(src, dst, 100)
    print(f"resharded 100 slots in {time.monotonic() - begun:.2f} s")
    assert len(moved) == 100 and keyslot(key) in moved
    assert redis_cluster.node_for_key(key) is dst
    # The old owner now sends clients on: a real MOVED, naming the new owner.
    with pytest.raises(Exception, match=f"MOVED {keyslot(key)} 127.0.0.1:{dst.port}"):
        src.command("GET", key)
    assert dst.command("GET", key) == key.encode()
    _all_keys_read_back(redis_cluster)


def test_kill_master_promotes_its_replica_and_restart_rejoins(make_own_cluster) -> None:
    cluster = make_own_cluster(masters=3, replicas=1)
    _store_keys(cluster)
    victim = cluster.masters()[0]
    replica = cluster.replicas_of(victim)[0]
    killed, promoted, seconds = cluster.kill_master(0)
    print(f"failover after kill -9 settled in {seconds:.2f} s "
          f"(node timeout {cluster.node_timeout:g} s)")
    assert killed is victim and promoted is replica and killed.pid is None
    assert promoted in cluster.masters() and len(cluster.masters()) == 3
    assert seconds < cluster.node_timeout + 10
    _all_keys_read_back(cluster, promoted)  # the replica had every key
    seconds = cluster.restart_node(killed)
    print(f"the killed node rejoined in {seconds:.2f} s")
    assert killed in cluster.replicas_of(promoted)


def test_manual_failover_swaps_roles_without_losing_keys(make_own_cluster) -> None:
    cluster = make_own_cluster(masters=3, replicas=1)
    _store_keys(cluster)
    master = cluster.masters()[1]
    replica = cluster.replicas_of(master)[0]
    seconds = cluster.manual_failover(replica)
    print(f"manual failover settled in {seconds:.2f} s")
    assert replica in cluster.masters() and master not in cluster.masters()
    assert master in cluster.replicas_of(replica)
    _all_keys_read_back(cluster)


def test_stopped_node_answers_nothing_until_continued(make_own_cluster) -> None:
    # A long node timeout: the stall is not taken for a failure.
    cluster = make_own_cluster(masters=3, replicas=0, node_timeout_ms=30000)
    _store_keys(cluster)
    stalled = cluster.masters()[2]
    cluster.stop_node(stalled)
    assert stalled not in cluster.live_nodes()
    with pytest.raises(OSError):
        from lmcache_redis._testing import resp_command
        resp_command(("127.0.0.1", stalled.port), "PING", timeout=0.5)
    other = cluster.masters()[0]
    assert other.command("PING") == "PONG"
    cluster.cont_node(stalled)
    assert stalled.command("PING") == "PONG"
    _all_keys_read_back(cluster)


def test_extra_args_reach_every_node(make_own_cluster) -> None:
    cluster = make_own_cluster(masters=2, replicas=0, extra_args=[
        "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru",
        "--proto-max-bulk-len", "1gb"])
    for node in cluster.nodes:
        assert node.command("CONFIG", "GET", "maxmemory") == [b"maxmemory", b"67108864"]
        assert node.command("CONFIG", "GET", "maxmemory-policy")[1] == b"allkeys-lru"
        assert node.command("CONFIG", "GET", "proto-max-bulk-len")[1] == b"1073741824"


def test_a_failed_start_stops_every_node_it_started() -> None:
    cluster = RedisCluster(masters=2, replicas=0, extra_args=["--no-such-option", "1"])
    with pytest.raises(RuntimeError, match="no-such-option|exited during start-up"):
        cluster.start()
    assert cluster.nodes == []
