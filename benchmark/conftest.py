"""Fixtures for the pytest-benchmark suite (benchmark/test_*.py).

Not part of the default test run (pyproject's testpaths is ["tests"]); run
it by naming this directory:

    python -P -m pytest benchmark --benchmark-json=benchmark/results/bench.json

The server is a throwaway redis-server tuned for huge values
(tools/local_redis.py), or the one LMCACHE_REDIS_URL names (e.g.
redis://127.0.0.1:6379; only keys under "lmcache_redis-bench:" are
touched there, and deleted after each benchmark).

Value sizes: 4 and 32 MiB; 80 MiB too with --bench-full or
LMCACHE_BENCH_FULL=1. A test that asks for the ``size`` fixture runs once
per size, or at the sizes of its ``@pytest.mark.sizes_mib(...)`` marker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import redis

import lmcache_redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import local_redis  # noqa: E402  (tools/, put on the path above)

MiB = 1 << 20
GB = 1e9  # gb_per_s is in 10**9 bytes per second, as in compare.py
SIZES_MIB = (4, 32)
FULL_SIZES_MIB = (4, 32, 80)
KEY_PREFIX = "lmcache_redis-bench:"

# What the JSON report says about the server (filled in by redis_url).
_server_info: dict = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-full", action="store_true",
                     help="lmcache_redis benchmarks: also 80 MiB values "
                          "(or set LMCACHE_BENCH_FULL=1)")


def full_run(config: pytest.Config) -> bool:
    return bool(config.getoption("--bench-full")) or \
        os.environ.get("LMCACHE_BENCH_FULL", "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sizes_mib(*sizes): value sizes (MiB) of a benchmark, "
                                       "instead of the suite's")
    # pytest-benchmark does not make the directory of --benchmark-json.
    json_path = config.getoption("benchmark_json", None)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "size" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("sizes_mib")
    sizes = marker.args if marker else (FULL_SIZES_MIB if full_run(metafunc.config)
                                        else SIZES_MIB)
    # Session scope: the buffers of one size are made once, shared by every
    # benchmark at that size, and freed when the next size starts.
    metafunc.parametrize("size", [s * MiB for s in sizes], ids=[f"{s}MiB" for s in sizes],
                         scope="session")


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list,
                                 output_json: dict) -> None:
    output_json["lmcache_redis"] = dict(_server_info, full=full_run(config),
                                        lmcache_redis_file=lmcache_redis.__file__)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The server's URL: LMCACHE_REDIS_URL, or a throwaway tuned server's."""
    url = os.environ.get("LMCACHE_REDIS_URL")
    server = None
    if not url:
        server = local_redis.start()
        url = server.url
    try:
        with redis.Redis.from_url(url) as r:
            version = r.info("server").get("redis_version")
        _server_info.update(
            server="LMCACHE_REDIS_URL" if server is None else
                   "throwaway redis-server, tools/local_redis.py: " + local_redis.settings(),
            redis_version=version)
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def lmcache_client(redis_url: str) -> Iterator[Callable[..., lmcache_redis.RedisClient]]:
    """lmcache_client(stripes=None, connections=4): one shared client per
    config; stripes=None leaves the client's default (stripes by stripe_size)."""
    clients: dict[tuple[Optional[int], int], lmcache_redis.RedisClient] = {}

    def get(stripes: Optional[int] = None, connections: int = 4) -> lmcache_redis.RedisClient:
        if (stripes, connections) not in clients:
            options = {} if stripes is None else {"stripes": stripes}
            clients[stripes, connections] = lmcache_redis.RedisClient.from_url(
                redis_url, connections=connections, timeout=60.0, **options)
        return clients[stripes, connections]

    yield get
    for client in clients.values():
        client.close()


@pytest.fixture(scope="session")
def redis_py(redis_url: str) -> Iterator[redis.Redis]:
    """The baseline: one redis.Redis (hiredis parser when installed)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=60.0)
    yield client
    client.close()


@pytest.fixture
def key(request: pytest.FixtureRequest,
        lmcache_client: Callable[..., lmcache_redis.RedisClient]) -> Iterator[str]:
    """A key for this benchmark only; deleted (all its stripes) afterwards."""
    name = KEY_PREFIX + request.node.name
    lmcache_client().delete(name)
    yield name
    lmcache_client().delete(name)


@pytest.fixture(scope="session")
def src(size: int) -> np.ndarray:
    """``size`` random bytes, every page touched: what the SETs send."""
    return np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)


@pytest.fixture(scope="session")
def src_bytes(src: np.ndarray) -> bytes:
    """The same bytes as a bytes object, which redis-py sends (made untimed)."""
    return src.tobytes()


@pytest.fixture(scope="session")
def dst(size: int) -> np.ndarray:
    """A ``size``-byte destination for lmcache_redis GETs, zero-filled once so
    every page is mapped before a GET is timed (np.zeros would map lazily)."""
    buf = np.empty(size, dtype=np.uint8)
    buf.fill(0)
    return buf
