"""Data integrity under concurrency and eviction, and memory over many calls.

Writers and readers, each with a client of its own (so their stripes really
interleave on the server), share a few keys. Every value carries its own
proof: its first 8 bytes are a seed and the rest is that seed's random
stream, so a reader can tell a whole value from one stitched together from
two writes. Every hit must be whole; misses are allowed (a read racing a
write, an evicted stripe), torn values never.

Quick by default; LMR_SOAK_SECONDS=60 LMR_SOAK_ROUND_TRIPS=2000 for the long
soak. Run with -s to see the counts.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from lmcache_redis import RedisClient, ResponseError
from lmcache_redis._testing import RedisServer
from racing import race, run_threads

SOAK_SECONDS = float(os.environ.get("LMR_SOAK_SECONDS", "5"))
RACE_SECONDS = float(os.environ.get("LMR_SOAK_SECONDS", "3"))
ROUND_TRIPS = int(os.environ.get("LMR_SOAK_ROUND_TRIPS", "150"))
KEYS = [f"soak:{i}" for i in range(4)]
MAX_VALUE = 2 << 20
STRIPE_SIZE = 128 << 10  # many stripes per value: many chances to tear


def _value(seed: int, size: int) -> np.ndarray:
    value = np.frombuffer(np.random.default_rng(seed).bytes(size), dtype=np.uint8).copy()
    value[:8] = np.frombuffer(seed.to_bytes(8, "little"), dtype=np.uint8)
    return value


def _is_whole(buf: np.ndarray, n: int) -> bool:
    seed = int.from_bytes(buf[:8].tobytes(), "little")
    return np.array_equal(buf[:n], _value(seed, n))


def _soak(server: RedisServer, writers: int = 3, readers: int = 3) -> dict:
    counts = dict(writes=0, write_errors=0, hits=0, misses=0, torn=0)
    lock = threading.Lock()
    stop = time.monotonic() + SOAK_SECONDS

    def count(name: str) -> None:
        with lock:
            counts[name] += 1

    def writer(n: int) -> None:
        rng = np.random.default_rng(1000 + n)
        with RedisClient(server.host, server.port, stripe_size=STRIPE_SIZE,
                         connections=2) as client:
            while time.monotonic() < stop:
                seed = int(rng.integers(1, 2**62))
                size = int(rng.integers(64 << 10, MAX_VALUE))
                try:
                    client.set(KEYS[seed % len(KEYS)], _value(seed, size))
                    count("writes")
                except ResponseError:  # OOM under maxmemory: allowed, counted
                    count("write_errors")

    def reader(n: int) -> None:
        buf = np.zeros(MAX_VALUE, dtype=np.uint8)
        with RedisClient(server.host, server.port, stripe_size=STRIPE_SIZE,
                         connections=2) as client:
            i = n
            while time.monotonic() < stop:
                got = client.get(KEYS[i % len(KEYS)], buf)
                i += 1
                if got is None:
                    count("misses")
                elif _is_whole(buf, got):
                    count("hits")
                else:
                    count("torn")

    run_threads([(writer, n) for n in range(writers)] + [(reader, n) for n in range(readers)])
    print(f"\nsoak {SOAK_SECONDS:g} s: {counts}")
    return counts


def test_soak_every_hit_is_one_whole_write() -> None:
    with RedisServer() as server:
        counts = _soak(server)
    assert counts["torn"] == 0, counts
    assert counts["hits"] > 0 and counts["writes"] > 0, counts


def test_soak_with_eviction_gives_whole_values_or_misses() -> None:
    # Room for a few values only: stripes are evicted all the time.
    with RedisServer(extra_args=["--maxmemory", "6mb", "--maxmemory-policy",
                                 "allkeys-lru"]) as server:
        counts = _soak(server)
        evicted = int(server.command("INFO", "stats").split(b"evicted_keys:")[1].split()[0])
    print(f"evicted keys: {evicted}")
    assert counts["torn"] == 0, counts
    assert counts["hits"] > 0, counts
    assert evicted > 0, "the server never evicted: the test did not test eviction"


def test_soak_racing_writers_of_every_width() -> None:
    """Writers with stripes=None, 1, 4 and 16, each value 100 KiB to 33 MiB,
    race on 3 keys for 3 s (LMR_SOAK_SECONDS=N: N s) while readers with
    buffers of 200 KiB to 64 MiB check every value they read (tests/racing.py).
    Zero torn reads; once the writers stop, every reader reads the same
    value, one that could have been the last write, and then exactly the
    value of one more write; no key exists besides the 3 (no debris)."""
    with RedisServer() as server:
        counts = race(server, [f"soak:race:{i}" for i in range(3)], seconds=RACE_SECONDS,
                      seed=7)
        dbsize = server.command("DBSIZE")
    print(f"\nracing soak {RACE_SECONDS:g} s: {counts}")
    assert counts["torn"] == 0, counts
    assert counts["writes"] > 0 and counts["hits"] > 0, counts
    assert dbsize <= 3


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("stripes", [None, 1])
def test_rss_stays_flat_over_many_round_trips(redis_server, stripes) -> None:
    size = 32 << 20
    src = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8)
    dst = np.zeros(size, dtype=np.uint8)
    with RedisClient(redis_server.host, redis_server.port, stripes=stripes) as client:
        for _ in range(10):  # warm-up: the allocator's pools reach their size
            client.set("soak:rss", src)
            client.get("soak:rss", dst)
        before = _rss_bytes()
        for _ in range(ROUND_TRIPS):
            client.set("soak:rss", src)
            assert client.get("soak:rss", dst) == size
        growth = _rss_bytes() - before
        client.delete("soak:rss")
    assert np.array_equal(src, dst)
    print(f"\nRSS growth over {ROUND_TRIPS} round trips of 32 MiB: {growth / 2**20:.2f} MiB")
    # A leak of even one small allocation per call would show over the run;
    # a few MiB of slack absorb the interpreter's own noise.
    assert growth < 8 << 20, f"RSS grew by {growth} bytes"
