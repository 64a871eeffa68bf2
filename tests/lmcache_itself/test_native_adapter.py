"""LMCacheRedisNativeClient loaded by LMCache 0.5.6 itself: the MP mode's
L2 adapter API (create_l2_adapter with a native_plugin spec, as
`lmcache server --l2-adapter` does), driven from pytest: store, lookup,
load, delete, mixed sizes, partial failures. Patterned random data, so a
byte at a wrong offset or from another key is caught (LMCache's own bench
fills each value with one byte)."""

from __future__ import annotations

import argparse
import json
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lmcache")

from lmcache.cli.commands.bench.l2_adapter_bench.data import (  # noqa: E402
    create_l1_memory_desc, make_aligned_tensor, make_memory_objects, make_object_keys,
    wait_eventfd)
from lmcache.v1.distributed.l2_adapters import create_l2_adapter  # noqa: E402
from lmcache.v1.distributed.l2_adapters.config import (  # noqa: E402
    parse_args_to_l2_adapters_config)
# How LMCache names an object in Redis (the keys our client is given).
from lmcache.v1.distributed.l2_adapters.native_connector_l2_adapter import (  # noqa: E402
    _object_key_to_string)

MiB = 1 << 20
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def spec(adapter_params: dict, outer: dict | None = None) -> str:
    inner = {"type": "native_plugin", "module_path": "lmcache_redis.lmcache",
             "class_name": "LMCacheRedisNativeClient", "adapter_params": adapter_params}
    return json.dumps(inner if outer is None else {**outer, "inner": inner})


class Adapter:
    """An L2 adapter made by LMCache from a --l2-adapter spec, over one L1
    buffer of ``l1_bytes``; wait() for a task's result."""

    def __init__(self, spec_json: str, l1_bytes: int) -> None:
        cfg = parse_args_to_l2_adapters_config(argparse.Namespace(l2_adapter=[spec_json]))
        self.buf = make_aligned_tensor(l1_bytes)
        self.used = 0
        self.a = create_l2_adapter(cfg.adapters[0], l1_memory_desc=create_l1_memory_desc(self.buf))

    def objects(self, n: int, size: int, random: bool):
        objs = make_memory_objects(self.buf, n, size, self.used)
        self.used += n * size
        if random:
            for o in objs:
                o.raw_data.copy_(torch.randint(0, 256, (size,), dtype=torch.uint8))
        return objs

    @staticmethod
    def wait(efd: int, poll, tid, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while (res := poll(tid)) is None:
            assert time.monotonic() < deadline, f"L2 task {tid} never completed"
            wait_eventfd(efd, timeout=0.1)
        return res

    def store(self, keys, objs):
        a = self.a
        tid = a.submit_store_task(keys, objs)
        return self.wait(a.get_store_event_fd(), lambda t: a.pop_completed_store_tasks().get(t),
                         tid)

    def lookup(self, keys) -> list:
        a = self.a
        tid = a.submit_lookup_and_lock_task(keys, {})
        bm = self.wait(a.get_lookup_and_lock_event_fd(), a.query_lookup_and_lock_result, tid)
        return bm.get_indices_list()

    def load(self, keys, objs) -> list:
        a = self.a
        tid = a.submit_load_task(keys, objs)
        bm = self.wait(a.get_load_event_fd(), a.query_load_result, tid)
        return bm.get_indices_list()

    def healthy(self) -> bool:
        return self.a.report_status()["is_healthy"]

    def close(self) -> None:
        self.a.close()


@pytest.fixture
def adapter(redis_url):
    made = []

    def make(params=None, outer=None, l1_bytes=256 * MiB, url=None):
        a = Adapter(spec({"url": url or redis_url, "connections": 4, **(params or {})}, outer),
                    l1_bytes)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


def same(a, b) -> bool:
    return all(torch.equal(x.raw_data, y.raw_data) for x, y in zip(a, b))


def test_store_lookup_load_delete_with_mixed_sizes(adapter):
    ad = adapter()
    assert ad.a.report_status()["type"] == "LMCacheRedisNativeClient"
    # One batch of three sizes (hybrid models store so): striped, verbatim
    # just under the stripe boundary, and one byte.
    sizes = [8 * MiB, 3 * MiB + 1, 2 * MiB - 64, 1]
    keys = make_object_keys(len(sizes) * 2, model_name=MODEL, key_offset=5000)
    src, dst = [], []
    for i, size in enumerate(sizes):
        src += ad.objects(2, size, random=True)
    for size in sizes:
        dst += ad.objects(2, size, random=False)
    res = ad.store(keys, src)
    assert res.is_successful()
    absent = make_object_keys(3, model_name=MODEL, key_offset=999_000)
    assert ad.lookup(keys[:3] + absent + keys[3:]) == [0, 1, 2] + list(range(6, 6 + len(keys) - 3))
    assert ad.load(keys, dst) == list(range(len(keys)))
    ad.a.submit_unlock(keys)
    assert same(src, dst)
    ad.a.delete(keys[:2])  # blocks until its completion
    assert ad.lookup(keys) == list(range(2, len(keys)))
    assert ad.healthy()


def test_a_load_reports_exactly_the_keys_that_landed(adapter, redis_server):
    ad = adapter()
    keys = make_object_keys(4, model_name=MODEL, key_offset=6000)
    src = ad.objects(4, 3 * MiB, random=True)
    assert ad.store(keys, src).is_successful()
    # Key 1 replaced by another client's value of another size, key 3
    # removed: loading must say only 0 and 2 landed.
    names = [_object_key_to_string(k) for k in keys]
    redis_server.command("SET", names[1], b"short")
    redis_server.command("DEL", names[3])
    dst = ad.objects(4, 3 * MiB, random=False)
    assert ad.load(keys, dst) == [0, 2]
    assert same([src[0], src[2]], [dst[0], dst[2]])
    assert ad.healthy()


def test_a_refused_store_is_reported_not_ok(adapter, make_own_server):
    server = make_own_server(extra_args=["--maxmemory", "8mb", "--maxmemory-policy",
                                         "noeviction"])
    ad = adapter(url=server.url)
    keys = make_object_keys(2, model_name=MODEL, key_offset=7000)
    res = ad.store(keys, ad.objects(2, 16 * MiB, random=True))
    assert not res.is_successful()
    assert ad.lookup(keys) == []
    assert ad.healthy()


def test_server_down_fails_tasks_and_keeps_the_adapter_alive(adapter, make_own_server):
    server = make_own_server()
    ad = adapter(url=server.url, params={"timeout": 2})
    keys = make_object_keys(2, model_name=MODEL, key_offset=8000)
    src = ad.objects(2, 4 * MiB, random=True)
    assert ad.store(keys, src).is_successful()
    server.kill()
    assert not ad.store(keys, src).is_successful()
    assert ad.lookup(keys) == []
    assert ad.load(keys, ad.objects(2, 4 * MiB, random=False)) == []
    assert ad.healthy()
    server.restart()  # empty: nothing persisted; the same client reconnects
    assert ad.store(keys, src).is_successful()
    dst = ad.objects(2, 4 * MiB, random=False)
    assert ad.load(keys, dst) == [0, 1] and same(src, dst)


def test_fault_inject_drops_loads_it_is_told_to(adapter):
    ad = adapter(outer={"type": "fault_inject", "rate": 0.5})
    keys = make_object_keys(16, model_name=MODEL, key_offset=9000)
    src = ad.objects(16, 1 * MiB, random=True)
    assert ad.store(keys, src).is_successful()
    dst = ad.objects(16, 1 * MiB, random=False)
    loaded = ad.load(keys, dst)
    assert 0 < len(loaded) < 16
    assert same([src[i] for i in loaded], [dst[i] for i in loaded])
