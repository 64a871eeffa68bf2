"""SET and GET throughput of lmcache_redis against redis-py, with pytest-benchmark.

Each benchmark times one op on one key per round (benchmark.pedantic, one
warm-up round), in groups "set <N> MiB" / "get <N> MiB" so that
lmcache_redis and redis-py (hiredis) line up in the compare view.
lmcache_redis runs with its defaults (named "lmcache_redis": stripes by
stripe_size, 2 MiB, so 3 / 20 / 48 stripes at 4 / 32 / 80 MiB; 4
connections) and with stripes fixed at 1 and 16 ("lmcache_redis-stripes1",
"-stripes16"; 4 connections). "latency get 32 MiB" is a
single 32 MiB GET with more rounds, ours against redis-py.

extra_info: gb_per_s (size over the mean round, 10**9 bytes/s), size_bytes,
op, client, stripes (the count a value of this size gets), stripe_size
(null when stripes is fixed), connections (redis-py: null stripes, 1
connection), and parser for redis-py. Nothing here asserts a speed; each benchmark
checks once, outside the timing, that the stored value reads back intact.

Each SET round writes a fresh key (the key is deleted in the untimed
pedantic setup), as LMCache writes new chunks. GETs read a value written
before the timing; lmcache_redis reads into a preallocated numpy buffer,
redis-py returns a new bytes object.

    python -P -m pytest benchmark --benchmark-json=benchmark/results/bench.json
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pytest
import redis
import redis.utils

import lmcache_redis

MiB = 1 << 20
GB = 1e9  # gb_per_s: 10**9 bytes per second, as in compare.py


@dataclass(frozen=True)
class Config:
    client: str  # "lmcache_redis" or "redis-py"
    stripes: Optional[int] = None  # lmcache_redis: None is the default (by stripe_size)
    connections: Optional[int] = None

    def __str__(self) -> str:
        if self.client == "redis-py" or self.stripes is None:
            return self.client
        return f"{self.client}-stripes{self.stripes}"


OURS = Config("lmcache_redis", None, 4)  # the defaults
REDIS_PY = Config("redis-py", None, 1)
CONFIGS = [OURS, Config("lmcache_redis", 1, 4), Config("lmcache_redis", 16, 4), REDIS_PY]


def rounds_for(size: int) -> int:
    """Timed rounds: about 1 GiB moved per benchmark, 8 to 100 rounds."""
    return max(8, min(100, (1024 * MiB) // size))


class Ops:
    """One config's set/get/delete on one key, and its check of the data."""

    def __init__(self, config: Config, key: str, src: np.ndarray, src_bytes: bytes,
                 dst: np.ndarray, lmcache_client: Callable[..., lmcache_redis.RedisClient],
                 redis_py: redis.Redis) -> None:
        self.config, self.key, self.src, self.dst = config, key, src, dst
        self.stripes, self.stripe_size = None, None
        if config.client == "redis-py":
            self.set = lambda: redis_py.set(key, src_bytes)
            self.get = lambda: redis_py.get(key)
            self._delete = lambda: redis_py.delete(key)
        else:
            client = lmcache_client(config.stripes, config.connections)
            self.stripes = config.stripes
            if config.stripes is None:
                self.stripe_size = client.stripe_size
                self.stripes = lmcache_redis.stripe_count(src.nbytes, client.stripe_size,
                                                          client.connections)
            self.set = lambda: client.set(key, src)
            self.get = lambda: client.get(key, dst)
            self._delete = lambda: client.delete(key)

    def delete(self) -> None:
        # None: a pedantic setup that returns something gives the target's args
        self._delete()

    def check(self, result: object) -> None:
        """``result``: what the last timed get returned."""
        if self.config.client == "redis-py":
            assert result is not None and len(result) == self.src.nbytes
            assert np.array_equal(np.frombuffer(result, dtype=np.uint8), self.src)
        else:
            assert result == self.src.nbytes
            assert np.array_equal(self.dst, self.src)

    def check_stored(self) -> None:
        """Reads the value back (untimed) and compares it with what was set."""
        self.dst.fill(0)
        self.check(self.get())


def record(benchmark, ops: Ops, op: str, size: int) -> None:
    """extra_info, from the finished benchmark's stats."""
    mean = benchmark.stats.stats.mean
    config = ops.config
    benchmark.extra_info.update(
        gb_per_s=round(size / mean / GB, 3), size_bytes=size, op=op, client=config.client,
        stripes=ops.stripes, stripe_size=ops.stripe_size, connections=config.connections)
    if config.client == "redis-py":
        benchmark.extra_info["parser"] = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "python"


@pytest.fixture
def ops(request, key, src, src_bytes, dst, lmcache_client, redis_py) -> Ops:
    return Ops(request.param, key, src, src_bytes, dst, lmcache_client, redis_py)


@pytest.mark.parametrize("ops", CONFIGS, ids=str, indirect=True)
def test_set(benchmark, ops: Ops, size: int) -> None:
    benchmark.group = f"set {size // MiB} MiB"
    benchmark.pedantic(ops.set, setup=ops.delete, rounds=rounds_for(size), warmup_rounds=1)
    record(benchmark, ops, "set", size)
    ops.check_stored()


@pytest.mark.parametrize("ops", CONFIGS, ids=str, indirect=True)
def test_get(benchmark, ops: Ops, size: int) -> None:
    benchmark.group = f"get {size // MiB} MiB"
    ops.set()
    ops.dst.fill(0)  # what a broken GET leaves must not look like the data
    result = benchmark.pedantic(ops.get, rounds=rounds_for(size), warmup_rounds=1)
    record(benchmark, ops, "get", size)
    ops.check(result)


@pytest.mark.sizes_mib(32)
@pytest.mark.parametrize("ops", [OURS, REDIS_PY], ids=str, indirect=True)
def test_latency_get(benchmark, ops: Ops, size: int) -> None:
    """One 32 MiB GET of one key, the time a caller waits for a chunk."""
    benchmark.group = f"latency get {size // MiB} MiB"
    ops.set()
    ops.dst.fill(0)
    result = benchmark.pedantic(ops.get, rounds=50, warmup_rounds=1)
    record(benchmark, ops, "get", size)
    stats = benchmark.stats.stats
    benchmark.extra_info.update(latency_median_ms=round(stats.median * 1e3, 3),
                                latency_min_ms=round(stats.min * 1e3, 3),
                                latency_max_ms=round(stats.max * 1e3, 3))
    ops.check(result)
