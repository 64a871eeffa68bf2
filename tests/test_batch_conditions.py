"""Batches under a deployment's conditions: a full server that refuses
writes (noeviction), a full LRU cache that evicts while batches read, and
batch writers racing batch readers, redis-py writers and deleters on the
same keys. Every value is self-verifying (tests/selfcheck.py), so a read
that returns bytes of two writes, or a shifted or cut value, is caught.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import redis

from lmcache_redis import BatchError, RedisClient, ResponseError
from racing import run_threads
from selfcheck import MiB, fresh_tag, make, tag_of

# Several parts per value of a MiB or more (the parts' read round runs).
STRIPE = 256 * 1024


def _verified(results, bufs, tags) -> int:
    """Counts the hits; each must be the whole value its key was last given
    by one of the writes in `tags[i]` (a set of the tags written to it)."""
    hits = 0
    for n, buf, allowed in zip(results, bufs, tags):
        if n is None:
            continue
        got = tag_of(buf, n)
        assert got is not None, "a torn or damaged value was returned"
        assert got in allowed, "a value no writer wrote to this key"
        hits += 1
    return hits


def test_set_many_into_a_full_server_says_what_was_stored(make_own_server) -> None:
    # noeviction: once full, the server refuses each further SET with OOM;
    # the batch reports per key, and what it stored is there, whole.
    server = make_own_server(extra_args=["--maxmemory", "24mb",
                                         "--maxmemory-policy", "noeviction"])
    rng = np.random.default_rng(1)
    keys = [f"full:{i}" for i in range(40)]
    tags = [fresh_tag(rng) for _ in keys]
    values = [make(t, MiB + i) for i, t in enumerate(tags)]
    with RedisClient(server.host, server.port, stripe_size=STRIPE) as c:
        with pytest.raises(BatchError) as info:
            c.set_many(keys, values)
        e = info.value
        assert e.stored and e.errors
        assert set(e.stored) | set(e.errors) == set(keys)
        for exc in e.errors.values():
            assert isinstance(exc, ResponseError) and "OOM" in str(exc)
        assert c.exists_many(keys) == [k in e.stored for k in keys]
        bufs = [np.empty(2 * MiB, dtype=np.uint8) for _ in keys]
        got = c.get_many(keys, bufs)
        assert [n is not None for n in got] == [k in e.stored for k in keys]
        assert _verified(got, bufs, [{t} for t in tags]) == len(e.stored)


def test_get_many_from_a_full_lru_cache(make_own_server) -> None:
    # allkeys-lru, always full: writes evict older values whole; a batch
    # read returns each key's whole value or a miss, never a part.
    server = make_own_server(extra_args=["--maxmemory", "24mb",
                                         "--maxmemory-policy", "allkeys-lru"])
    rng = np.random.default_rng(2)
    keys = [f"lru:{i}" for i in range(60)]
    tags = [fresh_tag(rng) for _ in keys]
    with RedisClient(server.host, server.port, stripe_size=STRIPE) as c:
        for start in range(0, len(keys), 6):
            part = slice(start, start + 6)
            c.set_many(keys[part], [make(t, MiB + 8 * i) for i, t in enumerate(tags[part])])
        bufs = [np.empty(2 * MiB, dtype=np.uint8) for _ in keys]
        got = c.get_many(keys, bufs)
        hits = _verified(got, bufs, [{t} for t in tags])
        assert 0 < hits < len(keys)  # full: some evicted, some kept
        assert any(n is not None for n in got[-6:])  # the newest survive


def test_batch_writers_race_readers_and_other_clients(own_server) -> None:
    # On 6 keys at once: set_many of values of 3 sizes and part counts,
    # redis-py SETs (verbatim) and DELs, and get_many / exists_many readers.
    keys = [f"race:{i}" for i in range(6)]
    written = [set() for _ in keys]  # every tag ever written to each key
    lock = threading.Lock()
    rng_lock = threading.Lock()
    rng = np.random.default_rng(3)
    sizes = (100 * 1024, 3 * MiB, 9 * MiB)
    reads = {"hits": 0}

    def tag_for(i: int) -> int:
        with rng_lock:
            t = fresh_tag(rng)
        with lock:
            written[i].add(t)
        return t

    def ours_writer(n: int) -> None:
        with RedisClient(own_server.host, own_server.port, stripe_size=STRIPE) as c:
            for r in range(n):
                vals = [make(tag_for(i), sizes[(r + i) % 3] + r) for i in range(len(keys))]
                c.set_many(keys, vals)

    def redis_py_writer(n: int) -> None:
        r = redis.Redis(own_server.host, own_server.port)
        for k in range(n):
            i = k % len(keys)
            if k % 5 == 4:
                r.delete(keys[i])
            else:
                r.set(keys[i], make(tag_for(i), 50_000 + k).tobytes())
        r.close()

    def reader(n: int) -> None:
        bufs = [np.empty(16 * MiB, dtype=np.uint8) for _ in keys]
        with RedisClient(own_server.host, own_server.port) as c:
            for _ in range(n):
                got = c.get_many(keys, bufs)
                with lock:
                    allowed = [set(s) for s in written]
                reads["hits"] += _verified(got, bufs, allowed)
                c.exists_many(keys)

    run_threads([(ours_writer, 15), (redis_py_writer, 60), (reader, 25), (reader, 25)])
    assert reads["hits"] > 0
    # Quiet now: every reader agrees with redis-py on what each key holds.
    with RedisClient(own_server.host, own_server.port) as c:
        bufs = [np.empty(16 * MiB, dtype=np.uint8) for _ in keys]
        got = c.get_many(keys, bufs)
        _verified(got, bufs, written)
        r = redis.Redis(own_server.host, own_server.port)
        assert [bool(r.exists(k)) for k in keys] == [n is not None for n in got]
        r.close()
