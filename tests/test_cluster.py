"""Redis Cluster (issue #12), against a real local cluster (tests/conftest.py's
redis_cluster: 3 masters + 3 replicas; tests that kill, stop, fail over or
fill nodes make their own with make_own_cluster).

What is checked: round trips at every size class through the single-key,
batch and asyncio faces; a value's parts spread over every master (and a
hash tag pinning them to one); seeds that are down; resharding and
failover under load with self-verifying values (a read is a miss or a
whole value that was written to that key, never torn); a stalled master
(SIGSTOP) times out while the others serve; and the stored format's
guarantees (racing writers, eviction, a lost part) on a cluster.

Counts (operations, redirections the servers sent, errors) are printed:
run with -s to see them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter

import numpy as np
import pytest
from redis.cluster import RedisCluster as PyRedisCluster

import lmcache_redis
import lmcache_redis.asyncio
from lmcache_redis import RedisClient
from lmcache_redis._testing import RedisCluster, keyslot
from racing import _Ledger, run_threads
from selfcheck import MiB, fresh_tag, make, tag_of

STRIPE = 2 * MiB  # the default stripe_size
SIZES = {
    "1 byte": 1,
    "small": 1000,
    "stripe - 64": STRIPE - 64,
    "stripe - 63": STRIPE - 63,
    "32 MiB": 32 * MiB,
    "80 MiB": 80 * MiB,
}
HANG = 120.0  # a guard against a hang, never a timing assertion
# What a call may raise while a master dies or a slot moves under it.
FAULT_ERRORS = (lmcache_redis.ConnectionError, lmcache_redis.TimeoutError,
                lmcache_redis.ResponseError)


def _value(nbytes: int, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """(tag, value): a self-verifying value (selfcheck) of nbytes; values
    under a word are random bytes, checked by comparison."""
    tag = fresh_tag(rng)
    if nbytes < 8:
        return tag, rng.integers(0, 256, nbytes, dtype=np.uint8)
    return tag, make(tag, nbytes)


def _part_pattern(key: str) -> str:
    """The SCAN pattern of key's part keys (slot.h: K#lmr:<write id>{tag})."""
    return key + "#lmr:*"


def _keys_of_value(cluster: RedisCluster, key: str) -> dict:
    """master -> the keys of key's value it holds (part 0 and part keys)."""
    found = {}
    owner = cluster.node_for_key(key)
    for master in cluster.masters():
        keys = set(cluster.keys_on(master, _part_pattern(key)))
        # EXISTS only where the key's slot lives: any other master answers MOVED.
        if master.port == owner.port and master.command("EXISTS", key):
            keys.add(key.encode())
        found[master] = keys
    return found


def _key_on(cluster: RedisCluster, master, prefix: str) -> str:
    """A key named prefix:N whose slot ``master`` owns."""
    owned = set(cluster.slots_of(master))
    return next(k for k in (f"{prefix}:{i}" for i in range(100000)) if keyslot(k) in owned)


def _tag_on(cluster: RedisCluster, master) -> str:
    """A hash tag (without braces) whose slot ``master`` owns."""
    owned = set(cluster.slots_of(master))
    return next(t for t in (f"t{i}" for i in range(100000)) if keyslot(t) in owned)


@pytest.fixture(scope="module")
def cluster_client(redis_cluster):
    """The module's client, made from the cluster URL (every node a seed)."""
    with RedisClient.from_url(redis_cluster.url, connections=4) as client:
        yield client


# ---- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
def test_set_get_round_trip(cluster_client, key, size) -> None:
    tag, value = _value(size, np.random.default_rng(size))
    cluster_client.set(key, value)
    buf = np.zeros(size + 100, dtype=np.uint8)
    assert cluster_client.get(key, buf) == size
    assert np.array_equal(buf[:size], value)
    assert cluster_client.get(key) == value.tobytes()
    assert cluster_client.exists(key)
    assert cluster_client.delete(key)
    assert cluster_client.get(key, buf) is None
    assert not cluster_client.exists(key)


def test_cluster_true_constructor_round_trip(redis_cluster, key) -> None:
    seed = redis_cluster.nodes[0]
    with RedisClient(seed.host, seed.port, cluster=True) as client:
        _, value = _value(32 * MiB, np.random.default_rng(7))
        client.set(key, value)
        buf = np.empty(32 * MiB, dtype=np.uint8)
        assert client.get(key, buf) == 32 * MiB and np.array_equal(buf, value)


def test_batch_round_trip_every_size(cluster_client, key) -> None:
    rng = np.random.default_rng(12)
    keys = [f"{key}:{name}" for name in SIZES]
    values = [_value(n, rng)[1] for n in SIZES.values()]
    cluster_client.set_many(keys, values)
    assert cluster_client.exists_many(keys + [f"{key}:never"]) == [True] * len(keys) + [False]
    bufs = [np.zeros(n, dtype=np.uint8) for n in SIZES.values()]
    assert cluster_client.get_many(keys, bufs) == list(SIZES.values())
    for name, got, want in zip(SIZES, bufs, values):
        assert np.array_equal(got, want), name
    assert cluster_client.delete_many(keys) == [True] * len(keys)
    assert cluster_client.get_many(keys, bufs) == [None] * len(keys)
    assert cluster_client.exists_many(keys) == [False] * len(keys)


def test_asyncio_round_trip_every_size(redis_cluster, key) -> None:
    rng = np.random.default_rng(13)
    keys = [f"{key}:{name}" for name in SIZES]
    values = [_value(n, rng)[1] for n in SIZES.values()]

    async def main() -> None:
        async with lmcache_redis.asyncio.RedisClient.from_url(redis_cluster.url) as c:
            await asyncio.gather(*[c.set(k, v) for k, v in zip(keys, values)])
            bufs = [np.zeros(n, dtype=np.uint8) for n in SIZES.values()]
            lengths = await asyncio.gather(*[c.get(k, b) for k, b in zip(keys, bufs)])
            assert lengths == list(SIZES.values())
            for name, got, want in zip(SIZES, bufs, values):
                assert np.array_equal(got, want), name
            assert await c.exists_many(keys) == [True] * len(keys)
            bufs2 = [np.zeros(n, dtype=np.uint8) for n in SIZES.values()]
            assert await c.get_many(keys, bufs2) == list(SIZES.values())
            assert all(np.array_equal(g, w) for g, w in zip(bufs2, values))
            assert await c.delete_many(keys) == [True] * len(keys)
            assert await c.get(keys[-1], bufs[-1]) is None

    asyncio.run(asyncio.wait_for(main(), HANG))


# ---- placement -------------------------------------------------------------------------


def test_a_32_mib_value_has_parts_on_every_master(redis_cluster, cluster_client, key) -> None:
    for master in redis_cluster.masters():
        master.command("FLUSHALL")
    _, value = _value(32 * MiB, np.random.default_rng(3))
    cluster_client.set(key, value)
    per_master = {m.port: redis_cluster.dbsize(m) for m in redis_cluster.masters()}
    print(f"keys per master after one 32 MiB value: {per_master}")
    assert all(n >= 1 for n in per_master.values()), per_master
    # Every key there belongs to this value: K itself or one of its part keys.
    found = _keys_of_value(redis_cluster, key)
    assert sum(len(keys) for keys in found.values()) == sum(per_master.values())
    assert all(keys for keys in found.values())
    buf = np.empty(32 * MiB, dtype=np.uint8)
    assert cluster_client.get(key, buf) == 32 * MiB and np.array_equal(buf, value)


def test_a_hash_tag_pins_every_part_to_one_master(redis_cluster, cluster_client, key) -> None:
    pinned = f"{{pin}}{key}"
    _, value = _value(32 * MiB, np.random.default_rng(4))
    cluster_client.set(pinned, value)
    owner = redis_cluster.node_for_key(pinned)
    found = _keys_of_value(redis_cluster, pinned)
    print(f"keys of a hash-tagged 32 MiB value per master: "
          f"{ {m.port: len(k) for m, k in found.items()} }")
    assert len(found[owner]) >= 2  # the value is striped, all of it here
    assert all(not keys for master, keys in found.items() if master is not owner)
    buf = np.empty(32 * MiB, dtype=np.uint8)
    assert cluster_client.get(pinned, buf) == 32 * MiB and np.array_equal(buf, value)
    assert cluster_client.delete(pinned)
    assert not any(_keys_of_value(redis_cluster, pinned).values())


def test_from_url_connects_when_the_first_seed_is_down(redis_cluster, key) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    live = ",".join(n.address for n in redis_cluster.nodes[1:3])
    with RedisClient.from_url(f"redis-cluster://127.0.0.1:{dead},{live}",
                              connect_timeout=2.0) as client:
        client.set(key, b"reached through the second seed")
        assert client.get(key) == b"reached through the second seed"


# ---- load while the cluster changes ------------------------------------------------------


class _Load:
    """Threads setting and getting self-verifying values on ``keys`` until
    stopped. Every tag written to a key is recorded before its set is sent,
    so a read is checked against what may be there: a miss, or a whole
    value of a tag written to that key with its length. Errors are counted
    by type (a call raising is allowed only where a test says so)."""

    SIZES = (100 * 1024, 3 * MiB, 9 * MiB)

    def __init__(self, client: RedisClient, keys: list, threads: int) -> None:
        self.client, self.keys, self.threads = client, keys, threads
        self.lock = threading.Lock()
        self.written = {k: {} for k in keys}  # key -> {tag: size}
        self.counts = Counter()
        self.errors = Counter()
        self.error_times: list[float] = []
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.failures: list[BaseException] = []

    def _worker(self, n: int) -> None:
        rng = np.random.default_rng(1000 + n)
        buf = np.empty(max(self.SIZES), dtype=np.uint8)
        i = 0
        while not self.stop.is_set():
            k = self.keys[int(rng.integers(len(self.keys)))]
            try:
                if i % 2 == 0:
                    size = self.SIZES[(n + i) % len(self.SIZES)]
                    tag = fresh_tag(rng)
                    with self.lock:
                        self.written[k][tag] = size
                    self.client.set(k, make(tag, size))
                    self._count("sets")
                else:
                    got = self.client.get(k, buf)
                    if got is None:
                        self._count("misses")
                    else:
                        tag = tag_of(buf, got)
                        with self.lock:
                            ok = tag is not None and self.written[k].get(tag) == got
                        self._count("hits" if ok else "torn")
            except lmcache_redis.RedisError as exc:
                with self.lock:
                    self.errors[type(exc).__name__] += 1
                    self.error_times.append(time.monotonic())
                    self.last_error = exc
            i += 1

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def _guarded(self, n: int) -> None:
        try:
            self._worker(n)
        except BaseException as exc:  # re-raised by finish()
            self.failures.append(exc)

    def start(self) -> "_Load":
        self._threads = [threading.Thread(target=self._guarded, args=(n,))
                         for n in range(self.threads)]
        for t in self._threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(HANG)
            assert not t.is_alive(), "a load thread hangs"
        if self.failures:
            raise self.failures[0]

    def operations(self) -> int:
        return sum(self.counts[k] for k in ("sets", "hits", "misses", "torn"))

    def report(self, what: str, redirections: dict) -> str:
        return (f"{what}: {self.operations()} operations {dict(self.counts)}, "
                f"errors {dict(self.errors) or 0}, redirections sent by the servers "
                f"{redirections}")


def _redirections(before: dict, after: dict) -> dict:
    return {kind: after.get(kind, 0) - before.get(kind, 0)
            for kind in ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
            if after.get(kind, 0) != before.get(kind, 0)}


def test_resharding_1200_slots_under_load(redis_cluster, key) -> None:
    src, dst = redis_cluster.masters()[:2]
    moving = set(redis_cluster.slots_of(src)[:1200])  # what reshard takes: the lowest
    keys = [k for k in (f"{key}:{i}" for i in range(20000)) if keyslot(k) in moving][:16]
    assert len(keys) == 16
    before = redis_cluster.error_replies()
    with RedisClient.from_url(redis_cluster.url, connections=4, timeout=20.0) as client:
        load = _Load(client, keys, threads=4).start()
        try:
            time.sleep(1.0)  # the values exist before their slots move
            begun = time.monotonic()
            moved = redis_cluster.reshard(src, dst, 1200)
            took = time.monotonic() - begun
            time.sleep(1.0)  # and the client keeps up after
        finally:
            load.finish()
        redirections = _redirections(before, redis_cluster.error_replies())
        print(load.report(f"resharding 1200 slots ({took:.1f} s) under 4 threads",
                          redirections), f"client stats {client.stats()}")
        assert set(moved) == moving and all(redis_cluster.node_for_key(k) is dst for k in keys)
        assert load.counts["torn"] == 0, load.counts
        # MOVED and ASK are followed inside a call; none may surface.
        assert not load.errors, (load.errors, load.last_error)
        assert load.counts["hits"] > 0 and load.counts["sets"] > 0
        assert redirections.get("MOVED", 0) + redirections.get("ASK", 0) > 0
        assert client.stats()["redirections"] > 0  # followed by the client
        # Everything written is still readable and whole afterwards.
        buf = np.empty(max(_Load.SIZES), dtype=np.uint8)
        for k in keys:
            got = client.get(k, buf)
            assert got is not None and load.written[k].get(tag_of(buf, got)) == got, k


def test_a_master_added_then_removed_under_load(make_own_cluster, key) -> None:
    cluster = make_own_cluster(replicas=0)
    src = cluster.masters()[0]
    moving = set(cluster.slots_of(src)[:2000])
    keys = [k for k in (f"{key}:{i}" for i in range(40000)) if keyslot(k) in moving][:12]
    before = cluster.error_replies()
    with RedisClient.from_url(cluster.url, connections=2, timeout=20.0) as client:
        load = _Load(client, keys, threads=2).start()
        try:
            time.sleep(0.5)
            new = cluster.add_master()
            cluster.reshard(src, new, 2000)  # the client meets a node it never knew
            time.sleep(0.5)
            assert cluster.dbsize(new) > 0
            cluster.reshard(new, src, 2000)  # and back, before the node leaves
            cluster.remove_node(new)
            time.sleep(0.5)
        finally:
            load.finish()
        redirections = _redirections(before, cluster.error_replies())
        print(load.report("a master added, 2000 slots resharded to it and back, removed",
                          redirections))
        assert load.counts["torn"] == 0, load.counts
        assert not load.errors, (load.errors, load.last_error)
        assert redirections.get("MOVED", 0) + redirections.get("ASK", 0) > 0
        buf = np.empty(max(_Load.SIZES), dtype=np.uint8)
        for k in keys:
            got = client.get(k, buf)
            assert got is not None and load.written[k].get(tag_of(buf, got)) == got, k


def test_a_cluster_without_a_master_for_a_slot_fails_calls_within_the_timeout(
        make_own_cluster, key) -> None:
    # A master with no replica dies: its slots have no owner, the others
    # say CLUSTERDOWN (cluster-require-full-coverage yes, Redis's default)
    # and every call ends with a clear error by its timeout.
    cluster = make_own_cluster(replicas=0)
    victim = cluster.masters()[1]
    on_victim = _key_on(cluster, victim, f"{key}:victim")
    elsewhere = _key_on(cluster, cluster.masters()[0], f"{key}:alive")
    buf = np.empty(MiB, dtype=np.uint8)
    with RedisClient.from_url(cluster.url, timeout=1.0, connect_timeout=0.5) as client:
        client.set(elsewhere, np.ones(MiB, dtype=np.uint8))
        victim.kill()
        # Past the node timeout the others mark it failed and the cluster down.
        deadline = time.monotonic() + 10 * cluster.node_timeout + 10
        while True:
            begun = time.monotonic()
            try:
                client.get(elsewhere, buf)  # served until the cluster is marked down
                error = None
            except FAULT_ERRORS as exc:
                error = exc
            took = time.monotonic() - begun
            assert took < 1.0 + 1.0, took
            if error is not None and "CLUSTERDOWN" in str(error):
                break
            assert time.monotonic() < deadline, f"never CLUSTERDOWN: {error}"
            time.sleep(0.2)
        print(f"a call on a down cluster: {type(error).__name__}: {error} after {took:.2f} s")
        begun = time.monotonic()
        with pytest.raises(FAULT_ERRORS):
            client.set(on_victim, buf)
        assert time.monotonic() - begun < 1.0 + 1.0


def _spread_keys(cluster: RedisCluster, prefix: str, per_master: int) -> list:
    return [_key_on(cluster, m, f"{prefix}:{m.port}:{i}")
            for m in cluster.masters() for i in range(per_master)]


def test_kill_master_under_load_the_same_client_recovers(make_own_cluster, key) -> None:
    cluster = make_own_cluster(masters=3, replicas=1)
    keys = _spread_keys(cluster, key, 4)
    with RedisClient.from_url(cluster.url, connections=2, timeout=2.0,
                              connect_timeout=1.0) as client:
        load = _Load(client, keys, threads=2).start()
        try:
            time.sleep(1.0)
            killed_at = time.monotonic()
            victim, promoted, settled = cluster.kill_master(0)
            # The same client, not a new one, works again: a key the promoted
            # replica now owns is written and read back.
            probe = _key_on(cluster, promoted, f"{key}:probe")
            deadline = killed_at + cluster.node_timeout + 5.0
            last = None
            while True:
                try:
                    client.set(probe, b"after the failover")
                    if client.get(probe) == b"after the failover":
                        break
                except FAULT_ERRORS as exc:
                    last = exc
                assert time.monotonic() < deadline, f"not recovered; last error {last!r}"
                time.sleep(0.05)
            recovered = time.monotonic() - killed_at
            time.sleep(1.0)  # the load goes on, on the recovered client
        finally:
            load.finish()
    print(load.report(f"kill -9 of master {victim.address}: cluster settled in {settled:.2f} s, "
                      f"client recovered {recovered:.2f} s after the kill", {}))
    assert load.counts["torn"] == 0, load.counts
    assert set(load.errors) <= {"ConnectionError", "TimeoutError", "ResponseError"}, load.errors
    # A call already in flight at recovery may still end in its timeout (2 s).
    late = [t - killed_at for t in load.error_times if t > killed_at + recovered + 2.0]
    assert not late, f"errors {late} s after the kill, after the client had recovered"
    assert recovered < cluster.node_timeout + 5.0


def test_manual_failover_under_load_has_no_errors(make_own_cluster, key) -> None:
    cluster = make_own_cluster(masters=3, replicas=1)
    keys = _spread_keys(cluster, key, 4)
    before = cluster.error_replies()
    with RedisClient.from_url(cluster.url, connections=2, timeout=10.0) as client:
        load = _Load(client, keys, threads=2).start()
        try:
            time.sleep(1.0)
            replica = cluster.replicas_of(cluster.masters()[1])[0]
            took = cluster.manual_failover(replica)
            time.sleep(1.0)
        finally:
            load.finish()
    print(load.report(f"manual failover ({took:.2f} s)",
                      _redirections(before, cluster.error_replies())))
    assert load.counts["torn"] == 0 and not load.errors, (load.counts, load.errors)
    assert load.counts["hits"] > 0


def test_a_stopped_master_times_out_and_the_others_serve(make_own_cluster, key) -> None:
    # A long node timeout: the stall is not detected as a failure, so the
    # cluster stays up and only the stopped master's keys are unreachable.
    cluster = make_own_cluster(masters=3, replicas=0, node_timeout_ms=30000)
    masters = cluster.masters()
    stalled, others = masters[0], masters[1:]
    small = {m: _key_on(cluster, m, f"{key}:small") for m in masters}
    pinned = {m: f"{{{_tag_on(cluster, m)}}}{key}" for m in masters}
    spread = f"{key}:spread"  # unpinned: has parts on the stalled master too
    timeout = 1.0
    with RedisClient.from_url(cluster.url, connections=2, timeout=timeout) as client:
        _, big = _value(16 * MiB, np.random.default_rng(5))
        for m in masters:
            client.set(small[m], b"small")
            client.set(pinned[m], big)
        client.set(spread, big)
        buf = np.empty(16 * MiB, dtype=np.uint8)
        cluster.stop_node(stalled)
        try:
            for stalled_key in (small[stalled], pinned[stalled], spread):
                begun = time.monotonic()
                with pytest.raises(lmcache_redis.TimeoutError):
                    client.get(stalled_key, buf)
                took = time.monotonic() - begun
                print(f"get of {stalled_key!r} on the stopped master: timed out after {took:.2f} s")
                assert took < timeout + 1.0
            begun = time.monotonic()
            with pytest.raises(lmcache_redis.TimeoutError):
                client.set(small[stalled], b"x")
            assert time.monotonic() - begun < timeout + 1.0
            for m in others:
                assert client.get(small[m]) == b"small"
                assert client.get(pinned[m], buf) == 16 * MiB and np.array_equal(buf, big)
                client.set(small[m], b"written while another master is stopped")
        finally:
            cluster.cont_node(stalled)
        # Once it runs again, the same client reaches it.
        assert client.get(small[stalled]) == b"small"
        assert client.get(spread, buf) == 16 * MiB and np.array_equal(buf, big)


# ---- stored-format guarantees on a cluster -------------------------------------------------


def test_racing_writers_on_one_key_last_write_wins(redis_cluster, key) -> None:
    sizes = (100 * 1024, 3 * MiB, 9 * MiB, 33 * MiB)
    ledger = _Ledger()
    counts = Counter()
    lock = threading.Lock()
    writers_done = threading.Event()

    with RedisClient.from_url(redis_cluster.url, connections=4) as client:
        def writer(n: int) -> None:
            rng = np.random.default_rng(50 + n)
            for i in range(12):
                size = sizes[(n + i) % len(sizes)]
                tag = fresh_tag(rng)
                start = ledger.begin()
                client.set(key, make(tag, size))
                ledger.end(tag, start, size)

        def reader(n: int) -> None:
            buf = np.empty(64 * MiB, dtype=np.uint8)
            while not writers_done.is_set():
                got = client.get(key, buf)
                if got is None:
                    what = "misses"
                else:
                    tag = tag_of(buf, got)
                    with ledger.lock:
                        size = ledger.done.get(tag, (0, 0, got))[2]  # still being written
                    what = "hits" if tag is not None and size == got else "torn"
                with lock:
                    counts[what] += 1

        def writer_then_done(n: int) -> None:
            try:
                writer(n)
            finally:
                with lock:
                    counts["writers finished"] += 1
                    if counts["writers finished"] == 3:
                        writers_done.set()

        run_threads([(writer_then_done, n) for n in range(3)] + [(reader, n) for n in range(2)])
        print(f"racing writers on one key: {3 * 12} writes, reads {dict(counts)}")
        assert counts["torn"] == 0, counts
        buf = np.empty(64 * MiB, dtype=np.uint8)
        got = client.get(key, buf)
        tag = tag_of(buf, got)
        assert tag in ledger.done and ledger.done[tag][2] == got
        assert ledger.could_be_last(tag), "an older write won"


def test_eviction_leaves_whole_values_or_misses(make_own_cluster, key) -> None:
    cluster = make_own_cluster(masters=3, replicas=0, extra_args=[
        "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
    rng = np.random.default_rng(21)
    keys = [f"{key}:{i}" for i in range(40)]  # 320 MiB into 192 MiB
    tags = {}
    refused = 0
    with RedisClient.from_url(cluster.url, connections=2) as client:
        for k in keys:
            tag, value = _value(8 * MiB, rng)
            try:
                client.set(k, value)
                tags[k] = tag
            except lmcache_redis.ResponseError:  # OOM while evicting: not stored
                refused += 1
        hits = misses = 0
        buf = np.empty(8 * MiB, dtype=np.uint8)
        for k in keys:
            got = client.get(k, buf)
            if got is None:
                misses += 1
            else:
                assert got == 8 * MiB and tag_of(buf, got) == tags.get(k), k
                hits += 1
    evicted = sum(int(dict(line.split(":") for line in m.command("INFO", "stats").decode()
                             .split("\r\n") if ":" in line)["evicted_keys"])
                  for m in cluster.masters())
    print(f"allkeys-lru, 40 x 8 MiB into 3 x 64 MiB: {hits} whole, {misses} misses, "
          f"{refused} sets refused, {evicted} keys evicted by the servers")
    assert evicted > 0 and misses > 0 and hits > 0


def test_a_deleted_part_key_makes_the_value_a_miss(redis_cluster, cluster_client, key) -> None:
    _, value = _value(32 * MiB, np.random.default_rng(6))
    cluster_client.set(key, value)
    part_keys = [k for keys in _keys_of_value(redis_cluster, key).values() for k in keys
                 if k != key.encode()]
    assert len(part_keys) >= 2, part_keys
    seed = redis_cluster.nodes[0]
    with PyRedisCluster(host=seed.host, port=seed.port) as r:
        assert r.delete(part_keys[len(part_keys) // 2]) == 1
    buf = np.full(32 * MiB, 0xAB, dtype=np.uint8)
    assert cluster_client.get(key, buf) is None
    assert cluster_client.get(key) is None
    # Written again, it is whole again.
    cluster_client.set(key, value)
    assert cluster_client.get(key, buf) == 32 * MiB and np.array_equal(buf, value)


def _getrange_calls(node) -> int:
    """GETRANGE commands a node has run (INFO commandstats)."""
    text = node.command("INFO", "commandstats")
    text = text.decode() if isinstance(text, bytes) else text
    for line in text.splitlines():
        if line.startswith("cmdstat_getrange:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_read_from_replicas_reads_there_and_writes_stay_on_masters(redis_cluster, key) -> None:
    rng = np.random.default_rng(7)
    _, value = _value(8 * MiB, rng)
    buf = np.empty(8 * MiB, dtype=np.uint8)
    replicas = [r for m in redis_cluster.masters() for r in redis_cluster.replicas_of(m)]
    assert replicas
    with RedisClient.from_url(redis_cluster.url + "?read_from_replicas=true",
                              stripe_size=MiB) as client:
        assert client.read_from_replicas
        client.set(key, value)  # a write: masters only (a replica would answer MOVED)
        # The replicas catch up asynchronously: until they do, a read that
        # meets a stale part is read again or misses, never wrong data.
        deadline = time.monotonic() + 10
        while True:
            n = client.get(key, buf)
            if n is not None:
                break
            assert time.monotonic() < deadline, "the replicas never caught up"
            time.sleep(0.05)
        assert n == value.size and np.array_equal(buf, value)
        before = sum(_getrange_calls(r) for r in replicas)
        for _ in range(6):
            n = client.get(key, buf)
            assert n is None or (n == value.size and np.array_equal(buf, value))
        after = sum(_getrange_calls(r) for r in replicas)
        print(f"GETRANGEs served by replicas over 6 reads of 8 parts: {after - before}")
        assert after > before
        assert client.delete(key)


def _cluster_state(node) -> str:
    text = node.command("CLUSTER", "INFO")
    text = text.decode() if isinstance(text, bytes) else text
    return next(line.split(":")[1].strip() for line in text.splitlines()
                if line.startswith("cluster_state"))


def test_cancel_and_close_are_prompt_while_a_down_cluster_is_retried(make_own_cluster) -> None:
    # While the cluster is down, every answer is CLUSTERDOWN and each key's
    # jobs wait a little before they go again. That wait happens off the
    # workers: once a worker slept it per key, a batch of 128 keys on one
    # connection held a cancel (and every other job of the pool) for seconds.
    cluster = make_own_cluster(replicas=0, node_timeout_ms=500)
    stalled, live = cluster.masters()[0], cluster.masters()[1]
    keys = [_key_on(cluster, live, f"down:{i}") for i in range(128)]
    buffers = [bytearray(1000) for _ in keys]
    with RedisClient.from_url(cluster.url, connections=1, timeout=30.0) as client:
        cluster.stop_node(stalled)
        try:
            deadline = time.monotonic() + 30
            while _cluster_state(live) != "fail":
                assert time.monotonic() < deadline, "the cluster never went down"
                time.sleep(0.05)
            batch = client.submit_batch_get(keys, buffers)
            time.sleep(2.0)  # well into the retries
            begun = time.monotonic()
            assert client.cancel_batch(batch)
            took = time.monotonic() - begun
            print(f"cancel of 128 keys being retried: {took:.3f} s")
            assert took < 5.0, took  # a guard far below the old 128 x 160 ms
            (done_id, results), = client.drain_completions()
            assert done_id == batch
            assert all(isinstance(r, lmcache_redis.RedisError) for r in results), results[:3]
            client.submit_batch_get(keys, buffers)
            time.sleep(1.0)
            begun = time.monotonic()
            client.close()
            assert time.monotonic() - begun < 5.0
        finally:
            cluster.cont_node(stalled, wait=False)


def test_racing_writers_leave_the_last_commit_whole_and_no_debris(redis_cluster, key) -> None:
    # Writers of different sizes (so of different part counts) race on one
    # key, with deletes among them. Once they stop, the key holds one whole
    # value (the last to commit) or none (a delete came last), never parts
    # of two writes for good; and no part key is left that the key's record
    # does not name. Before commit records, a write's parts were at fixed
    # keys: two racing writes could leave them mixed, and the key read as a
    # miss until written again.
    sizes = (3 * MiB, 5 * MiB + 7, 9 * MiB)
    written: dict = {}
    lock = threading.Lock()

    def writer(n: int) -> None:
        rng = np.random.default_rng(50 + n)
        with RedisClient.from_url(redis_cluster.url, connections=2) as client:
            for i in range(12):
                if n == 0 and i % 4 == 3:
                    client.delete(key)
                    continue
                size = sizes[(n + i) % len(sizes)]
                tag = fresh_tag(rng)
                with lock:
                    written[tag] = size
                client.set(key, make(tag, size))

    for round_ in range(3):
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG)
        buf = np.empty(max(sizes), dtype=np.uint8)
        with RedisClient.from_url(redis_cluster.url) as client:
            got = client.get(key, buf)
            parts = sum(len(k) for k in _keys_of_value(redis_cluster, key).values())
            if got is None:
                assert parts == 0, f"round {round_}: no value, yet {parts} of its keys are left"
            else:
                assert written.get(tag_of(buf, got)) == got, f"round {round_}: torn"
                count = lmcache_redis.stripe_count(got, connections=2)  # the writers'
                assert parts == 1 + count, (round_, parts, count)  # the record and its parts
        print(f"racing round {round_}: {'a miss' if got is None else f'{got} bytes whole'}, "
              f"{parts} keys")
    with RedisClient.from_url(redis_cluster.url) as client:
        client.delete(key)
    assert not any(_keys_of_value(redis_cluster, key).values())


def test_a_set_replaces_a_key_of_another_type(redis_cluster, cluster_client, key) -> None:
    # As on one server, a set replaces whatever the key holds; on a cluster
    # the key's SET ... GET refuses another type, so the client DELs it and
    # swaps again (seen failing first: "SET: WRONGTYPE ...").
    owner = redis_cluster.node_for_key(key)
    rng = np.random.default_rng(11)
    for size in (1000, 9 * MiB):
        owner.command("DEL", key)
        owner.command("RPUSH", key, "x")
        _, value = _value(size, rng)
        cluster_client.set(key, value)
        buf = np.empty(size, dtype=np.uint8)
        assert cluster_client.get(key, buf) == size and np.array_equal(buf, value)
    assert cluster_client.delete(key)
    assert not any(_keys_of_value(redis_cluster, key).values())
    owner.command("RPUSH", key, "x")
    assert cluster_client.delete(key)  # a key of another type goes too
    assert owner.command("EXISTS", key) == 0


def test_a_full_noeviction_cluster_refuses_a_write_and_keeps_no_part_of_it(
        make_own_cluster, key) -> None:
    # Masters at maxmemory with noeviction refuse writes (OOM): the set
    # fails with the server's error, the parts it did store go again (no
    # record names them), and what was stored before still reads whole.
    cluster = make_own_cluster(replicas=0, extra_args=["--maxmemory", "24mb",
                                                       "--maxmemory-policy", "noeviction"])
    rng = np.random.default_rng(21)
    stored = {}
    buf = np.empty(8 * MiB, dtype=np.uint8)
    with RedisClient.from_url(cluster.url) as client:
        for i in range(40):
            k = f"{key}:{i}"
            _, value = _value(8 * MiB, rng)
            try:
                client.set(k, value)
            except lmcache_redis.ResponseError as exc:
                assert "OOM" in str(exc), exc
                refused = k
                break
            stored[k] = value
        else:
            pytest.fail("40 x 8 MiB fit in 3 x 24 MiB")
        print(f"noeviction cluster: {len(stored)} values stored, then {refused!r} refused")
        assert stored
        assert not any(_keys_of_value(cluster, refused).values())  # no part left
        assert client.get(refused, buf) is None
        for k, value in stored.items():
            assert client.get(k, buf) == value.size and np.array_equal(buf, value), k
        expected = sum(1 + lmcache_redis.stripe_count(v.size) for v in stored.values())
        assert sum(cluster.dbsize(m) for m in cluster.masters()) == expected
