"""Shared fixtures: one Redis server for the whole test session.

Set LMCACHE_REDIS_URL (e.g. redis://127.0.0.1:6379) to test against a
server that is already running instead of a throwaway one.

tests/lmcache_itself/ runs LMCache 0.5.6 itself: it is collected only
where lmcache imports (the .venv-lmcache venv, where tools/run-tests runs
it), so the main venv's run neither needs LMCache nor skips anything.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union
from urllib.parse import urlsplit

import pytest

from lmcache_redis._testing import RedisCluster, RedisServer

# Before anything imports lmcache: LMCache sends usage reports off the
# machine unless told not to, and no test traffic may leave it (either
# variable stops it; the banner is cosmetic). Set, not defaulted: a
# developer's LMCACHE_TRACK_USAGE=true must not reach a test run.
os.environ.update({"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1",
                   "LMCACHE_DISABLE_BANNER": "1"})

collect_ignore = [] if importlib.util.find_spec("lmcache") is not None else ["lmcache_itself"]


@dataclass(frozen=True)
class ExternalRedis:
    """A server given by LMCACHE_REDIS_URL; these tests neither start nor
    stop it."""

    host: str
    port: int
    url: str


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Union[RedisServer, ExternalRedis]]:
    """The session's Redis server: throwaway, or LMCACHE_REDIS_URL's."""
    url = os.environ.get("LMCACHE_REDIS_URL")
    if url:
        parts = urlsplit(url)
        yield ExternalRedis(parts.hostname or "127.0.0.1", parts.port or 6379, url)
        return
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: Union[RedisServer, ExternalRedis]) -> str:
    """The URL of the session's Redis server."""
    return redis_server.url


@pytest.fixture(scope="module")
def clients(redis_server):
    """clients(stripes, connections=4): one RedisClient per setting and test
    module, made on first use and closed with the module."""
    from lmcache_redis import RedisClient

    made: dict = {}

    def get(stripes: int, connections: int = 4) -> RedisClient:
        if (stripes, connections) not in made:
            made[stripes, connections] = RedisClient(
                redis_server.host, redis_server.port, stripes=stripes, connections=connections)
        return made[stripes, connections]

    yield get
    for client in made.values():
        client.close()


@pytest.fixture
def key(request) -> str:
    """A key no other test uses, named after the test module."""
    return f"{request.module.__name__}:{uuid.uuid4().hex}"


@pytest.fixture
def make_own_server():
    """make_own_server(**RedisServer options): a started server of the test's
    own, free to kill, pause, restart or stop; stopped after the test."""
    made: list[RedisServer] = []

    def make(**options) -> RedisServer:
        made.append(RedisServer(**options).start())
        return made[-1]

    yield make
    for server in made:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)  # in case a test left it stopped
        server.stop()


@pytest.fixture
def own_server(make_own_server) -> RedisServer:
    """A plain server of the test's own (see make_own_server)."""
    return make_own_server()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master, 3-replica cluster shared by a test module; a test may
    reshard it but must leave every node running (one that kills or fails
    over nodes makes its own with make_own_cluster)."""
    with RedisCluster(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def make_own_cluster():
    """make_own_cluster(**RedisCluster options): a started cluster of the
    test's own, free to kill, stop, fail over or fill; stopped after the
    test (stopped nodes continued first)."""
    made: list[RedisCluster] = []

    def make(**options) -> RedisCluster:
        made.append(RedisCluster(**options).start())
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop()
