"""The non-MP plug-in driven by LMCache 0.5.6 itself: LMCache's
CreateStorageBackends builds a RemoteBackend for ``lmcache_redis`` from
its configuration (from_defaults, a YAML file, the environment), and the
tests use it as LMCache's storage manager does: put, contains, get, the
batched and non-blocking forms, a partial chunk, misses, cancellation and
close, with LMCache's reference counts audited and its memory checked for
leaks. shared/lmcache-integration.md §4, §5 and §12.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from lmcache.utils import CacheEngineKey
from lmcache.v1.config import LMCacheEngineConfig, load_engine_config_with_overrides
from lmcache.v1.memory_management import MemoryFormat
from lmcache.v1.metadata import LMCacheMetadata
from lmcache.v1.storage_backend.connector import ConnectorContext

from lmcache_redis import RedisClient
from lmcache_redis.lmcache import LMCacheRedisConnectorAdapter

pytestmark = pytest.mark.lmcache

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "lmcache_redis"
MODEL = "lmcache-redis-tests/cpu-model"   # real model names hold a "/"
# (layers, K/V, tokens, KV heads, head size): 4 MiB chunks of 256 tokens in
# bf16, 16 KiB per token; a chunk is striped (> 2 MiB), a short one is not.
KV_SHAPE = (16, 2, 256, 4, 64)
CHUNK_TOKENS = 256
TOKEN_BYTES = 16 << 10
CHUNK_BYTES = CHUNK_TOKENS * TOKEN_BYTES
CPU_GB = 0.25                              # LMCache's local CPU buffer: 64 chunks


def plugin_extra(url: str, name: str = PLUGIN, **settings) -> dict:
    """The extra_config lines that turn the plug-in on (README)."""
    extra = {f"remote_storage_plugin.{name}.module_path": "lmcache_redis.lmcache",
             f"remote_storage_plugin.{name}.class_name": "LMCacheRedisConnectorAdapter"}
    if url is not None:
        extra[f"remote_storage_plugin.{name}.url"] = url
    extra.update((f"remote_storage_plugin.{name}.{k}", v) for k, v in settings.items())
    return extra


def engine_config(extra: dict, plugins=(PLUGIN,), **kwargs) -> LMCacheEngineConfig:
    values = dict(chunk_size=CHUNK_TOKENS, local_cpu=True, max_local_cpu_size=CPU_GB,
                  remote_serde="naive", remote_storage_plugins=list(plugins),
                  extra_config=extra)
    values.update(kwargs)
    return LMCacheEngineConfig.from_defaults(**values)


def engine_metadata() -> LMCacheMetadata:
    return LMCacheMetadata(model_name=MODEL, world_size=1, local_world_size=1, worker_id=0,
                           local_worker_id=0, kv_dtype=torch.bfloat16, kv_shape=KV_SHAPE,
                           chunk_size=CHUNK_TOKENS)


def new_key() -> CacheEngineKey:
    # Real chunk hashes are signed 64-bit: half of them negative.
    return CacheEngineKey(MODEL, 1, 0, random.getrandbits(64) - (1 << 63), torch.bfloat16)


class Stack:
    """LMCache's backends for one configuration, and what the tests do
    with them."""

    def __init__(self, backends: dict, metadata: LMCacheMetadata, loop, name: str = PLUGIN):
        self.backends = backends
        self.metadata = metadata
        self.loop = loop
        self.cpu = backends["LocalCPUBackend"]
        self.rb = backends[f"RemoteBackend-{name}"]
        # LMCache only logs a plug-in that failed to load: check it here.
        assert self.rb.connection is not None, f"RemoteBackend-{name} has no connection"
        self.connector = self.rb.connection.getWrappedConnector()
        assert type(self.connector).__name__ == "LMCacheRedisConnector"
        self.capacity = self.free_chunks()
        assert self.capacity >= 60

    def allocate(self, tokens: int = CHUNK_TOKENS):
        """A chunk of ``tokens`` tokens, filled with random bytes; and a
        copy of them."""
        shape = list(self.metadata.get_shapes()[0])
        shape[2] = tokens
        obj = self.cpu.allocate([torch.Size(shape)], self.metadata.get_dtypes(),
                                MemoryFormat.KV_2LTD)
        assert obj is not None and obj.get_size() == tokens * TOKEN_BYTES
        data = torch.randint(0, 256, (obj.get_size(),), dtype=torch.uint8)
        obj.tensor.view(torch.uint8).view(-1).copy_(data)
        return obj, data

    def free_chunks(self) -> int:
        """How many full chunks the local CPU buffer can hold now (it
        evicts nothing to find out)."""
        objs = []
        while True:
            obj = self.cpu.allocate(self.metadata.get_shapes(), self.metadata.get_dtypes(),
                                    MemoryFormat.KV_2LTD, eviction=False, busy_loop=False)
            if obj is None:
                break
            objs.append(obj)
        for obj in objs:
            obj.ref_count_down()
        return len(objs)

    def assert_no_leak(self, held: int = 0, timeout: float = 5.0) -> None:
        """Every chunk this stack's reads allocated has been released: the
        whole buffer is free again but for the ``held`` chunks the test
        holds. (A cancelled read releases once its batch has ended, on
        LMCache's loop: hence the wait.)"""
        want = self.capacity - held
        give_up = time.monotonic() + timeout
        while (free := self.free_chunks()) != want and time.monotonic() < give_up:
            time.sleep(0.02)
        assert free == want

    def run(self, coro, timeout: float = 30):
        """Runs a coroutine on LMCache's loop, as its storage manager
        does, and waits for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def put(self, key, obj) -> None:
        self.rb.submit_put_task(key, obj).result(timeout=30)
        assert obj.get_ref_count() == 1

    def put_many(self, keys, objs) -> None:
        """batched_submit_put_task returns nothing to wait for: it calls
        back once per key after the batch."""
        done = threading.Semaphore(0)
        self.rb.batched_submit_put_task(keys, objs, on_complete_callback=lambda k: done.release())
        for _ in keys:
            assert done.acquire(timeout=30), "batched put did not complete"
        # LMCache's wrapper releases the put's reference as the put ends.
        assert [o.get_ref_count() for o in objs] == [1] * len(objs)


def same_bytes(obj, data: torch.Tensor) -> bool:
    return torch.equal(obj.tensor.view(torch.uint8).reshape(-1), data)


@pytest.fixture
def stack(redis_url, make_backends, lmcache_loop) -> Stack:
    md = engine_metadata()
    return Stack(make_backends(engine_config(plugin_extra(redis_url)), md), md, lmcache_loop)


# ---- §12: put -> contains -> get, and a miss ---------------------------------

def test_put_contains_get_and_a_miss(stack):
    rb = stack.rb
    key = new_key()
    obj, data = stack.allocate()
    assert not rb.contains(key)
    stack.put(key, obj)
    assert rb.contains(key)
    got = rb.get_blocking(key)
    assert got is not None and got is not obj
    assert got.get_shapes() == stack.metadata.get_shapes() and got.get_size() == CHUNK_BYTES
    assert same_bytes(got, data)
    assert got.get_ref_count() == 1   # LMCache's now
    assert rb.get_blocking(new_key()) is None
    got.ref_count_down()
    obj.ref_count_down()
    stack.assert_no_leak()


def test_sync_calls_from_another_thread(stack):
    """exists_sync, batched_contains and remove_sync: LMCache calls them
    from its own threads and blocks on them."""
    keys = [new_key() for _ in range(3)]
    objs = [stack.allocate()[0] for _ in keys]
    stack.put_many(keys[:2], objs[:2])
    assert stack.connector.exists_sync(keys[0]) and not stack.connector.exists_sync(keys[2])
    assert stack.rb.batched_contains(keys) == 2
    assert stack.rb.batched_contains([keys[2]] + keys[:2]) == 0
    assert stack.rb.remove(keys[0]) is True
    assert stack.rb.remove(keys[0]) is False
    assert not stack.rb.contains(keys[0])
    assert stack.rb.batched_contains(keys) == 0
    for obj in objs:
        obj.ref_count_down()
    stack.assert_no_leak()


def test_use_exists_sync_contains(redis_url, make_backends, lmcache_loop):
    md = engine_metadata()
    extra = {**plugin_extra(redis_url), "use_exists_sync": True}
    s = Stack(make_backends(engine_config(extra), md), md, lmcache_loop)
    key = new_key()
    obj, _ = s.allocate()
    assert not s.rb.contains(key)
    s.put(key, obj)
    assert s.rb.contains(key)
    obj.ref_count_down()


# ---- the batched forms ---------------------------------------------------------

def test_batched_put_and_batched_get_blocking(stack):
    keys = [new_key() for _ in range(8)]
    pairs = [stack.allocate() for _ in keys]
    stack.put_many(keys, [o for o, _ in pairs])
    missing = new_key()
    got = stack.rb.batched_get_blocking(keys[:4] + [missing] + keys[4:])
    assert len(got) == 9 and got[4] is None
    hits = got[:4] + got[5:]
    assert all(g is not None and g.get_ref_count() == 1 for g in hits)
    assert all(same_bytes(g, data) for g, (_, data) in zip(hits, pairs))
    for g in hits:
        g.ref_count_down()
    for obj, _ in pairs:
        obj.ref_count_down()
    stack.assert_no_leak()


def test_async_contains_and_non_blocking_get_give_the_hit_prefix(stack):
    """A miss in the middle: the lookup counts the keys before it, the
    non-blocking get returns their objects and releases the later hits."""
    keys = [new_key() for _ in range(5)]
    pairs = [stack.allocate() for _ in keys]
    stored = [0, 1, 3, 4]                     # keys[2] is a miss
    stack.put_many([keys[i] for i in stored], [pairs[i][0] for i in stored])
    assert stack.run(stack.rb.batched_async_contains("lookup-1", keys)) == 2
    assert stack.run(stack.rb.batched_async_contains("lookup-2", keys[3:])) == 2
    assert stack.run(stack.rb.batched_async_contains("lookup-3", keys[2:])) == 0
    got = stack.run(stack.rb.batched_get_non_blocking("lookup-1", keys))
    assert len(got) == 2
    assert all(same_bytes(g, pairs[i][1]) for i, g in enumerate(got))
    for g in got:
        g.ref_count_down()
    assert stack.run(stack.rb.batched_get_non_blocking("lookup-4", keys[2:])) == []
    for obj, _ in pairs:
        obj.ref_count_down()
    # The hits after the miss (keys[3], keys[4]) were released inside:
    stack.assert_no_leak()


# ---- partial chunks and values that are no chunk -------------------------------

@pytest.mark.parametrize("tokens", [1, 100, 200])
def test_partial_chunk_round_trip(stack, tokens):
    """A prompt's last chunk is stored as its own size; it comes back with
    that shape and those bytes (100 tokens: 1.6 MiB, stored as one part;
    200: 3.2 MiB, striped)."""
    key = new_key()
    obj, data = stack.allocate(tokens)
    stack.put(key, obj)
    got = stack.rb.get_blocking(key)
    assert got is not None
    assert tuple(got.tensor.shape) == (2, KV_SHAPE[0], tokens, KV_SHAPE[3] * KV_SHAPE[4])
    assert got.get_size() == tokens * TOKEN_BYTES and same_bytes(got, data)
    got.ref_count_down()
    obj.ref_count_down()
    stack.assert_no_leak()


def test_values_that_are_no_chunk_are_misses(stack, redis_server):
    """Written by someone else: a length that is no whole number of
    tokens, an empty value, a value longer than a chunk. Each is a miss,
    and its object is released."""
    keys = [new_key() for _ in range(3)]
    with RedisClient(redis_server.host, redis_server.port) as client:
        client.set(keys[0].to_string(), os.urandom(TOKEN_BYTES + 1))
        client.set(keys[1].to_string(), b"")
        client.set(keys[2].to_string(), os.urandom(CHUNK_BYTES + TOKEN_BYTES))
    assert all(stack.rb.contains(k) for k in keys)
    assert all(stack.rb.get_blocking(k) is None for k in keys)
    assert stack.rb.batched_get_blocking(keys) == [None] * 3
    stack.assert_no_leak()


def test_no_memory_is_a_miss_at_once(redis_url, make_backends, lmcache_loop):
    """With LMCache's CPU buffer full, a read is a miss at once: it does not
    wait on the shared loop for memory (LMCache's allocate() default)."""
    md = engine_metadata()
    s = Stack(make_backends(engine_config(plugin_extra(redis_url), blocking_timeout_secs=5),
                            md), md, lmcache_loop)
    key = new_key()
    obj, data = s.allocate()
    s.put(key, obj)
    held = [obj]
    while (more := s.cpu.allocate(md.get_shapes(), md.get_dtypes(), MemoryFormat.KV_2LTD,
                                  eviction=False, busy_loop=False)) is not None:
        held.append(more)
    started = time.monotonic()
    assert s.rb.get_blocking(key) is None
    assert s.rb.batched_get_blocking([key]) == [None]
    assert s.run(s.rb.batched_get_non_blocking("l", [key])) == []
    assert time.monotonic() - started < 1
    held.pop().ref_count_down()              # room for one chunk
    got = s.rb.get_blocking(key)
    assert got is not None and same_bytes(got, data)
    for o in held + [got]:
        o.ref_count_down()
    s.assert_no_leak()


# ---- reference counts under cancellation and close ------------------------------

def test_a_cancelled_read_releases_its_object(make_own_server, make_backends, lmcache_loop,
                                              lmcache_log):
    """LMCache's get_blocking gives up after blocking_timeout_secs and
    cancels the read: the object is released once no worker writes into
    it any more, and the plug-in works again once the server does."""
    server = make_own_server()
    md = engine_metadata()
    s = Stack(make_backends(engine_config(plugin_extra(server.url), blocking_timeout_secs=1),
                            md), md, lmcache_loop)
    key = new_key()
    obj, data = s.allocate()
    s.put(key, obj)
    remote_log = lmcache_log("lmcache.v1.storage_backend.remote_backend")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert s.rb.get_blocking(key) is None
        assert time.monotonic() - started < 5
        assert s.rb.batched_get_blocking([key, new_key()]) == [None, None]
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert any("timeout" in m for m in remote_log.messages(logging.WARNING))
    s.assert_no_leak(held=1)
    got = s.rb.get_blocking(key)
    assert got is not None and same_bytes(got, data)
    got.ref_count_down()
    obj.ref_count_down()
    s.assert_no_leak()


def test_close_is_bounded_with_a_stopped_server_and_idempotent(make_own_server, make_backends,
                                                                lmcache_loop, caplog):
    server = make_own_server()
    md = engine_metadata()
    s = Stack(make_backends(engine_config(plugin_extra(server.url)), md), md, lmcache_loop)
    key = new_key()
    obj, _ = s.allocate()
    s.put(key, obj)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        reading = asyncio.run_coroutine_threadsafe(s.connector.get(key), lmcache_loop)
        time.sleep(0.2)
        assert not reading.done()
        started = time.monotonic()
        closer = threading.Thread(target=s.rb.close, daemon=True)
        closer.start()
        closer.join(10)
        assert not closer.is_alive(), "RemoteBackend.close() hung"
        assert time.monotonic() - started < 5
        assert reading.result(5) is None      # cut short: a miss, released
        # A normal shutdown: no warning about the key close() cut short.
        assert not [r for r in caplog.records
                    if r.name.startswith("lmcache_redis") and r.levelno >= logging.WARNING]
        s.rb.close()                           # again: returns at once
        assert s.rb.get_blocking(key) is None  # closed: a miss
    finally:
        os.kill(server.pid, signal.SIGCONT)
    obj.ref_count_down()
    s.assert_no_leak()


def test_failed_puts_leave_the_references_to_lmcache(make_own_server, make_backends,
                                                     lmcache_loop, lmcache_log):
    """A full server refuses the writes: the put raises (LMCache logs and
    counts it), the batched put raises a BatchError (LMCache logs it), and
    either way LMCache's wrapper, not the plug-in, releases the put's
    reference: every object is back at 1."""
    server = make_own_server(extra_args=["--maxmemory", "2mb", "--maxmemory-policy",
                                         "noeviction"])
    md = engine_metadata()
    s = Stack(make_backends(engine_config(plugin_extra(server.url)), md), md, lmcache_loop)
    log = lmcache_log("lmcache.v1.storage_backend.connector.instrumented_connector")
    key = new_key()
    obj, _ = s.allocate()
    with pytest.raises(Exception, match="OOM"):
        s.rb.submit_put_task(key, obj).result(timeout=30)
    assert s.rb.put_failed_count == 1 and obj.get_ref_count() == 1
    keys = [new_key() for _ in range(3)]
    objs = [s.allocate()[0] for _ in keys]
    s.put_many(keys, objs)
    assert any("batched put error" in m for m in log.messages(logging.WARNING))
    assert s.rb.batched_contains(keys) == 0
    for o in objs + [obj]:
        o.ref_count_down()
    s.assert_no_leak()


# ---- the loop stays free ---------------------------------------------------------

def test_batches_do_not_block_the_loop(redis_url, make_backends, lmcache_loop):
    """LMCache's one loop serves every backend: while 192 MiB go out and
    192 MiB come back, a probe on the loop keeps running (a call that
    blocked the loop would stall it for the whole transfer)."""
    md = engine_metadata()
    s = Stack(make_backends(engine_config(plugin_extra(redis_url), max_local_cpu_size=0.5), md),
              md, lmcache_loop)
    n = 48
    keys = [new_key() for _ in range(n)]
    pairs = [s.allocate() for _ in keys]
    lags: list = []

    async def probe(stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - before - 0.001)

    async def transfer():
        stop = asyncio.Event()
        prober = asyncio.ensure_future(probe(stop))
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await s.connector.batched_put(keys, [o for o, _ in pairs])
        got = await s.connector.batched_get(keys)
        took = time.perf_counter() - started
        stop.set()
        await prober
        return got, took

    got, took = s.run(transfer())
    assert all(g is not None and same_bytes(g, d) for g, (_, d) in zip(got, pairs))
    for o in got + [o for o, _ in pairs]:
        o.ref_count_down()
    s.assert_no_leak()
    # 2-8 ms on a loaded 2-core machine (8 client workers and Redis on 2
    # cores); a blocked loop shows the whole transfer's time (`took`).
    assert max(lags) < 0.05, f"loop stalled {max(lags) * 1e3:.1f} ms (transfer: {took:.3f} s)"


def test_ping_and_list(stack):
    assert stack.connector.support_ping() and stack.run(stack.connector.ping()) == 0
    with pytest.raises(NotImplementedError, match="does not list"):
        stack.run(stack.connector.list())


# ---- configuration -----------------------------------------------------------------

def test_can_parse():
    adapter = LMCacheRedisConnectorAdapter()   # LMCache makes it with no arguments
    assert adapter.can_parse("plugin://lmcache_redis")
    assert adapter.can_parse("plugin://lmcache_redis.x")
    assert not adapter.can_parse("plugin://redis")
    assert not adapter.can_parse("plugin://lmcache_redis_x")
    assert not adapter.can_parse("redis://127.0.0.1:6379")


def test_create_connector_allocates_nothing(redis_url, lmcache_loop):
    """In LMCache's scheduler role the context holds a stub CPU backend
    whose allocate() raises: making the connector, and a lookup, work."""
    ctx = ConnectorContext(url=f"plugin://{PLUGIN}", loop=lmcache_loop, local_cpu_backend=None,
                           config=engine_config(plugin_extra(redis_url)),
                           metadata=engine_metadata(), plugin_name=PLUGIN)
    connector = LMCacheRedisConnectorAdapter().create_connector(ctx)
    try:
        assert connector.meta_shapes == engine_metadata().get_shapes()
        assert connector.full_chunk_size_bytes == CHUNK_BYTES
        assert asyncio.run_coroutine_threadsafe(
            connector.batched_async_contains("l", [new_key()]), lmcache_loop).result(10) == 0
    finally:
        asyncio.run_coroutine_threadsafe(connector.close(), lmcache_loop).result(15)
    asyncio.run_coroutine_threadsafe(connector.close(), lmcache_loop).result(1)


@pytest.mark.parametrize("settings, config_kwargs, error, message", [
    ({"url": None}, {}, TypeError, "setting 'url' is required"),
    ({"url": "http://127.0.0.1:6379"}, {}, ValueError, "URL scheme must be"),
    ({"conections": 8}, {}, TypeError, "unknown setting(s) 'conections'"),
    ({"timeout": "5"}, {}, TypeError, "setting 'timeout' must be"),
    # Refused by the core in every set: refused here, not by every put.
    ({"ttl": 1e16}, {}, ValueError, "setting 'ttl'"),
    ({"connections": 0}, {}, ValueError, "setting 'connections': connections must be"),
    ({"stripes": 0}, {}, ValueError, "setting 'stripes' must be >= 1"),
    ({}, {"remote_serde": "kivi"}, ValueError, "remote_serde must be 'naive'"),
    ({"url": "redis://127.0.0.1:1"}, {}, ConnectionError, "cannot connect to redis://127.0.0.1:1"),
])
def test_bad_settings_raise_in_create_connector(redis_url, lmcache_loop, make_backends,
                                                lmcache_log, settings, config_kwargs, error,
                                                message):
    """Our message, from create_connector; LMCache only logs it and runs
    on with no connection (every lookup a miss)."""
    settings = {"url": redis_url, **settings}
    url = settings.pop("url")
    config = engine_config(plugin_extra(url, **settings), **config_kwargs)
    ctx = ConnectorContext(url=f"plugin://{PLUGIN}", loop=lmcache_loop, local_cpu_backend=None,
                           config=config, metadata=engine_metadata(), plugin_name=PLUGIN)
    with pytest.raises(error) as raised:
        LMCacheRedisConnectorAdapter().create_connector(ctx)
    assert message in str(raised.value) and f"lmcache_redis plug-in '{PLUGIN}'" in str(raised.value)
    if config_kwargs:
        return  # LMCache's RemoteBackend does not build another serde than naive here
    log = lmcache_log("lmcache.v1.storage_backend.remote_backend")
    backends = make_backends(config, engine_metadata())
    rb = backends[f"RemoteBackend-{PLUGIN}"]
    assert rb.connection is None
    assert any(message in m for m in log.messages(logging.WARNING))
    assert not rb.contains(new_key())


def test_connector_class_named_directly_says_to_name_the_adapter(redis_url, make_backends,
                                                                 lmcache_log):
    """class_name: LMCacheRedisConnector (a RemoteConnector): LMCache makes
    it without metadata or plug-in name; it refuses, saying what to set."""
    extra = plugin_extra(redis_url)
    extra[f"remote_storage_plugin.{PLUGIN}.class_name"] = "LMCacheRedisConnector"
    log = lmcache_log("lmcache.v1.storage_backend.remote_backend")
    rb = make_backends(engine_config(extra), engine_metadata())[f"RemoteBackend-{PLUGIN}"]
    assert rb.connection is None
    assert any("LMCacheRedisConnectorAdapter" in m for m in log.messages(logging.WARNING))


def test_password_from_the_environment(make_own_server, make_backends, lmcache_loop,
                                       monkeypatch):
    """LMCache logs its whole configuration (extra_config included) at INFO:
    the password comes from the variable password_env names."""
    server = make_own_server(extra_args=["--requirepass", "s3cret-pw"])
    monkeypatch.setenv("LMCACHE_REDIS_TEST_PASSWORD", "s3cret-pw")
    md = engine_metadata()
    extra = plugin_extra(server.url, password_env="LMCACHE_REDIS_TEST_PASSWORD")
    s = Stack(make_backends(engine_config(extra), md), md, lmcache_loop)
    key = new_key()
    obj, _ = s.allocate()
    s.put(key, obj)
    assert s.rb.contains(key)
    obj.ref_count_down()
    assert "s3cret-pw" not in repr(s.rb.connection)


def test_two_instances_take_their_own_settings(redis_url, make_backends, lmcache_loop):
    """lmcache_redis and lmcache_redis.b side by side: each reads its own
    keys (b's keys start with lmcache_redis's prefix); b's db=1 keeps its
    values apart."""
    name_b = f"{PLUGIN}.b"
    extra = {**plugin_extra(redis_url), **plugin_extra(redis_url, name_b, db=1)}
    md = engine_metadata()
    backends = make_backends(engine_config(extra, plugins=(PLUGIN, name_b)), md)
    a = Stack(backends, md, lmcache_loop)
    b = Stack(backends, md, lmcache_loop, name=name_b)
    assert a.connector._sync.db == 0 and b.connector._sync.db == 1
    key = new_key()
    obj, _ = a.allocate()
    a.put(key, obj)
    assert a.rb.contains(key) and not b.rb.contains(key)
    obj.ref_count_down()


def test_yaml_form(redis_url, tmp_path, make_backends, lmcache_loop):
    """The README's YAML, read by LMCacheEngineConfig.from_file."""
    path = tmp_path / "lmcache.yaml"
    path.write_text(f"""\
chunk_size: 256
local_cpu: true
max_local_cpu_size: {CPU_GB}
remote_serde: naive
remote_storage_plugins: ["lmcache_redis"]
extra_config:
  remote_storage_plugin.lmcache_redis.module_path: lmcache_redis.lmcache
  remote_storage_plugin.lmcache_redis.class_name: LMCacheRedisConnectorAdapter
  remote_storage_plugin.lmcache_redis.url: "{redis_url}?connections=4"
  remote_storage_plugin.lmcache_redis.ttl: 3600
""")
    config = LMCacheEngineConfig.from_file(str(path))
    assert config.remote_storage_plugins == [PLUGIN]
    md = engine_metadata()
    s = Stack(make_backends(config, md), md, lmcache_loop)
    assert s.connector._sync.connections == 4 and s.connector._ttl == 3600
    key = new_key()
    obj, data = s.allocate()
    s.put(key, obj)
    got = s.rb.get_blocking(key)
    assert got is not None and same_bytes(got, data)
    got.ref_count_down()
    obj.ref_count_down()


def env_form(url: str) -> dict:
    """The README's environment form."""
    return {"LMCACHE_REMOTE_STORAGE_PLUGINS": PLUGIN,
            "LMCACHE_EXTRA_CONFIG": json.dumps(plugin_extra(url))}


def test_environment_form(redis_url, monkeypatch, make_backends, lmcache_loop):
    """LMCACHE_REMOTE_STORAGE_PLUGINS (comma-separated) and
    LMCACHE_EXTRA_CONFIG (JSON), read by LMCacheEngineConfig.from_env, as
    LMCache does with no config file."""
    monkeypatch.delenv("LMCACHE_CONFIG_FILE", raising=False)
    for name, value in {**env_form(redis_url), "LMCACHE_CHUNK_SIZE": "256",
                        "LMCACHE_LOCAL_CPU": "true",
                        "LMCACHE_MAX_LOCAL_CPU_SIZE": str(CPU_GB)}.items():
        monkeypatch.setenv(name, value)
    config = LMCacheEngineConfig.from_env()
    assert config.remote_storage_plugins == [PLUGIN]
    assert config.extra_config == plugin_extra(redis_url)
    md = engine_metadata()
    s = Stack(make_backends(config, md), md, lmcache_loop)
    key = new_key()
    obj, _ = s.allocate()
    s.put(key, obj)
    assert s.rb.contains(key)
    obj.ref_count_down()


def test_environment_overrides_the_yaml_file(redis_url, tmp_path, monkeypatch, make_backends,
                                             lmcache_loop):
    """With LMCACHE_CONFIG_FILE, LMCache reads the file, then the
    environment: LMCACHE_EXTRA_CONFIG replaces the file's whole
    extra_config (here: a URL nothing listens on)."""
    path = tmp_path / "lmcache.yaml"
    path.write_text(json.dumps({"chunk_size": 256, "local_cpu": True,
                                "max_local_cpu_size": CPU_GB, "remote_serde": "naive",
                                "remote_storage_plugins": ["elsewhere"],
                                "extra_config": plugin_extra("redis://127.0.0.1:1")}))
    monkeypatch.setenv("LMCACHE_CONFIG_FILE", str(path))
    for name, value in env_form(redis_url).items():
        monkeypatch.setenv(name, value)
    config = load_engine_config_with_overrides()
    assert config.remote_storage_plugins == [PLUGIN]
    assert config.extra_config == plugin_extra(redis_url)
    md = engine_metadata()
    Stack(make_backends(config, md), md, lmcache_loop)


def test_importing_the_plugin_module_does_not_import_lmcache():
    """LMCache's getattr(module, class_name) is what imports lmcache; the
    module alone (the MP plug-in's) imports neither lmcache nor torch."""
    code = ("import sys, lmcache_redis.lmcache as m\n"
            "assert 'lmcache' not in sys.modules and 'torch' not in sys.modules\n"
            "m.LMCacheRedisConnectorAdapter\n"
            "assert 'lmcache' in sys.modules\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-P", "-W", "error", "-c", code], env=env, check=True,
                   timeout=60)
