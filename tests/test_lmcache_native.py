"""LMCacheRedisNativeClient against the contract LMCache's native_plugin L2
adapter relies on (shared/lmcache-integration.md §2), without LMCache: the
client is driven as NativeConnectorL2Adapter drives it (a demux thread
polls the event fd with a 500 ms timeout, drains, routes completions by
id; submits come from other threads), over a real redis-server. The same
client under LMCache itself: tests/lmcache_itself/."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Optional

import pytest

from lmcache_redis import ClientClosedError, ConnectionError, RedisClient
from lmcache_redis.lmcache import (DEFAULT_TIMEOUT, MAX_TIMEOUT, SETTINGS,
                                   LMCacheRedisNativeClient, client_settings)

MiB = 1 << 20
# Long enough for anything these tests do on a loaded 2-core machine; a
# completion that takes longer is a hang, not slowness.
HANG = 60.0


def lmcache_view(n: int, fill: Optional[bytes] = None, offset: int = 0) -> memoryview:
    """A view as LMCache makes them (obj.byte_array): a ctypes array's
    memoryview, format '<B', ``n`` bytes, starting ``offset`` bytes into
    its allocation (unaligned when odd)."""
    raw = (ctypes.c_ubyte * (n + offset))()
    view = memoryview((ctypes.c_ubyte * n).from_address(ctypes.addressof(raw) + offset))
    if fill is not None:
        assert len(fill) == n
        ctypes.memmove(ctypes.addressof(raw) + offset, fill, n)
    _RAW.append(raw)
    return view


# The ctypes arrays behind the views: kept for the test session's length
# (a from_address view does not own its memory, as LMCache's do not).
_RAW: list = []


def patterned(n: int, seed: int) -> bytes:
    """``n`` bytes that tell a wrong offset or another key's bytes apart."""
    block = bytes((seed * 131 + i * 7) & 0xFF for i in range(251))
    return (block * (n // 251 + 1))[:n]


class Demux:
    """NativeConnectorL2Adapter's demux loop: polls ``event_fd()`` (500 ms
    timeout), drains, records each completion by id; a second completion
    for an id, an id nobody submitted, a malformed tuple or a mask longer
    than its key list is recorded as a violation (LMCache's demux thread
    would die on the last)."""

    def __init__(self, client: LMCacheRedisNativeClient) -> None:
        self.client = client
        self.fd = int(client.event_fd())
        self.cond = threading.Condition()
        self.keys: dict = {}  # id -> number of keys, registered at submit
        self.done: dict = {}
        self.violations: list = []
        self.drains_empty = 0
        self._stop = False
        self.thread = threading.Thread(target=self._loop, name="l2-adapter-demux", daemon=True)
        self.thread.start()

    def submit(self, op: str, keys: list, views: Optional[list] = None) -> int:
        call = getattr(self.client, f"submit_batch_{op}")
        with self.cond:  # LMCache submits under its adapter lock
            batch_id = call(keys) if views is None else call(keys, views)
            assert isinstance(batch_id, int) and batch_id not in self.keys
            self.keys[batch_id] = len(keys)
        return batch_id

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._stop:
            if not poller.poll(500):
                continue
            got = self.client.drain_completions()
            with self.cond:
                if not got:
                    self.drains_empty += 1
                for c in got:
                    self._record(c)
                self.cond.notify_all()

    def _record(self, c) -> None:
        if not (isinstance(c, tuple) and len(c) == 4 and isinstance(c[0], int)
                and isinstance(c[1], bool) and isinstance(c[2], str)
                and (c[3] is None or (isinstance(c[3], list)
                                      and all(isinstance(b, bool) for b in c[3])))):
            self.violations.append(("malformed", c))
            return
        batch_id, _, _, mask = c
        if batch_id not in self.keys:
            self.violations.append(("unknown id", c))
        elif batch_id in self.done:
            self.violations.append(("second completion", c))
        elif mask is not None and len(mask) != self.keys[batch_id]:
            self.violations.append(("mask length", c, self.keys[batch_id]))
        self.done[batch_id] = c

    def wait(self, batch_id: int, timeout: float = HANG) -> tuple:
        with self.cond:
            assert self.cond.wait_for(lambda: batch_id in self.done, timeout), \
                f"batch {batch_id} never completed"
            return self.done[batch_id]

    def wait_all(self, timeout: float = HANG) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: set(self.done) >= set(self.keys), timeout), \
                f"{len(set(self.keys) - set(self.done))} batch(es) never completed"

    def stop(self) -> None:
        self._stop = True
        self.thread.join(5)
        assert not self.thread.is_alive()
        assert self.violations == []


@pytest.fixture
def native(redis_url):
    """native(**params): a client with ``url`` the session server's, and
    its Demux; closed afterwards."""
    made: list = []

    def make(**params):
        params.setdefault("url", redis_url)
        client = LMCacheRedisNativeClient(**params)
        demux = Demux(client)
        made.append((client, demux))
        return client, demux

    yield make
    for client, demux in made:
        client.close()
        demux.stop()


def own_client(server, **params):
    return LMCacheRedisNativeClient(url=server.url, **params)


# ---- construction and packaging ---------------------------------------------

def test_takes_every_setting_in_json_types(redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LMR_TEST_PASSWORD", "unused")
    text = json.dumps({"url": redis_url, "connections": 2, "stripe_size": 1048576,
                       "stripes": None, "timeout": 5, "connect_timeout": 2.5, "ttl": 3600,
                       "username": None, "db": 0, "ssl_verify": True})
    client = LMCacheRedisNativeClient(**json.loads(text))
    try:
        assert isinstance(client._client.timeout, float) and client._client.timeout == 5.0
        assert client._client.connections == 2 and client._client.stripe_size == MiB
        assert client._ttl == 3600.0
        assert "LMCacheRedisNativeClient" in repr(client) and "open" in repr(client)
    finally:
        client.close()
    assert "closed" in repr(client)


def test_defaults(redis_url):
    client = LMCacheRedisNativeClient(url=redis_url)
    try:
        assert client._client.timeout == DEFAULT_TIMEOUT <= 30
        assert client._client.connections == 8 and client._ttl is None
    finally:
        client.close()


def test_url_query_options_beat_the_defaults(redis_url):
    client = LMCacheRedisNativeClient(url=f"{redis_url}?connections=3&timeout=7")
    try:
        assert client._client.connections == 3 and client._client.timeout == 7.0
    finally:
        client.close()


@pytest.mark.parametrize("params, error, words", [
    ({}, TypeError, "'url' is required"),
    ({"url": "redis://h", "conections": 8}, TypeError, "unknown setting(s) 'conections'"),
    ({"url": "redis://h", "connections": "8"}, TypeError, "'connections' must be int"),
    ({"url": "redis://h", "connections": True}, TypeError, "'connections' must be int"),
    ({"url": "redis://h", "connections": 8.0}, TypeError, "'connections' must be int"),
    ({"url": "redis://h", "timeout": "5"}, TypeError, "'timeout' must be int or float"),
    ({"url": "redis://h", "timeout": float("nan")}, ValueError, "finite"),
    ({"url": "redis://h", "timeout": 0}, ValueError, "'timeout' must be in (0, 240]"),
    ({"url": "redis://h", "timeout": 600}, ValueError, "outlive every batch"),
    ({"url": "redis://h?timeout=601"}, ValueError, "'timeout' must be in"),
    ({"url": "redis://h", "ttl": 0}, ValueError, "setting 'ttl'"),
    # Refused by the core in every set: refused here, not by each store.
    ({"url": "redis://h", "ttl": 1e16}, ValueError, "setting 'ttl'"),
    # Checked by the core, named as the others.
    ({"url": "redis://h", "connections": 0}, ValueError, "setting 'connections': connections"),
    ({"url": "redis://h", "connections": 2**40}, ValueError, "setting 'connections'"),
    ({"url": "redis://h", "stripe_size": 7}, ValueError, "setting 'stripe_size'"),
    ({"url": "redis://h", "stripes": 300}, ValueError, "setting 'stripes'"),
    ({"url": "redis://h", "connect_timeout": -1}, ValueError, "setting 'connect_timeout'"),
    ({"url": "redis://h", "db": -1}, ValueError, "setting 'db'"),
    ({"url": "redis://h?connections=0"}, ValueError, "setting 'url': connections"),
    # null is automatic; the core's 0 for it is not a setting's value.
    ({"url": "redis://h", "stripes": 0}, ValueError, "setting 'stripes' must be >= 1"),
    ({"url": "redis://h", "stripes": -1}, ValueError, "setting 'stripes' must be >= 1"),
    ({"url": "redis://h", "ssl_verify": "false"}, TypeError, "'ssl_verify' must be bool"),
    ({"url": 6379}, TypeError, "'url' must be str"),
    ({"url": "http://h:6379"}, ValueError, "setting 'url'"),
    ({"url": "redis://h:99999"}, ValueError, "setting 'url'"),
    ({"url": "redis://h", "password_env": "LMR_TEST_UNSET_VARIABLE"}, ValueError,
     "'LMR_TEST_UNSET_VARIABLE', which is not set"),
    ({"url": "redis://:pw@h", "password_env": "HOME"}, ValueError, "given twice"),
])
def test_bad_settings_raise_naming_the_setting(params, error, words):
    with pytest.raises(error) as info:
        LMCacheRedisNativeClient(**params)
    assert words in str(info.value) and "LMCacheRedisNativeClient" in str(info.value)


def test_every_setting_is_documented_with_its_types():
    assert set(SETTINGS) >= {"url", "connections", "timeout", "ttl", "password_env"}
    assert all(isinstance(types, tuple) and what for types, what in SETTINGS.values())
    assert MAX_TIMEOUT < 300  # LMCache's L1 read locks expire at 300 s


def test_unreachable_server_raises_at_construction(make_own_server):
    server = make_own_server()
    url = server.url
    server.stop()
    with pytest.raises(ConnectionError) as info:
        LMCacheRedisNativeClient(url=url, connect_timeout=2)
    assert f"LMCacheRedisNativeClient: cannot connect to {url}" in str(info.value)


def test_a_ttl_the_core_refuses_is_refused_at_construction(redis_url):
    # The core refuses this ttl in every submit_batch_set: taken at
    # construction, every store's submit would raise (not a caller bug).
    with pytest.raises(ValueError, match="LMCacheRedisNativeClient: setting 'ttl'"):
        LMCacheRedisNativeClient(url=redis_url, ttl=1e16)
    client = LMCacheRedisNativeClient(url=redis_url, ttl=8.9e15)  # the largest kind it takes
    try:
        assert client._ttl == 8.9e15
    finally:
        client.close()


def test_password_comes_from_the_environment_and_is_never_logged(make_own_server, monkeypatch,
                                                                 caplog):
    secret = "s3cret-Pa55"
    server = make_own_server(extra_args=["--requirepass", secret])
    monkeypatch.setenv("LMR_TEST_REDIS_PASSWORD", secret)
    with caplog.at_level(logging.DEBUG, logger="lmcache_redis"):
        client = own_client(server, password_env="LMR_TEST_REDIS_PASSWORD", connections=1)
        demux = Demux(client)
        try:
            # A failure that is logged: a key Redis cannot take (too long).
            bad = demux.wait(demux.submit("exists", ["k" * (1 << 20)]))
            assert bad[1] is False and bad[3] == [False]
            ok = demux.wait(demux.submit("exists", ["k"]))
            assert ok == (ok[0], True, "", [False])
        finally:
            client.close()
            demux.stop()
    assert "failed" in caplog.text and secret not in caplog.text
    assert secret not in repr(client)


def test_a_password_in_the_url_works_and_warns(make_own_server, caplog):
    server = make_own_server(extra_args=["--requirepass", "pw"])
    with caplog.at_level(logging.WARNING, logger="lmcache_redis"):
        client = LMCacheRedisNativeClient(url=f"redis://:pw@{server.host}:{server.port}")
    client.close()
    assert "password_env" in caplog.text
    assert ":***@" in repr(client) and "pw@" not in repr(client)


def test_importing_and_constructing_imports_neither_torch_nor_lmcache(redis_url):
    code = (
        "import sys, lmcache_redis.lmcache as m\n"
        f"c = m.LMCacheRedisNativeClient(url={redis_url!r}); c.close()\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'lmcache', 'numpy'))\n"
        "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=HANG)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_has_what_lmcache_checks_for():
    # native_plugin_l2_adapter.py: these six are required, the delete optional.
    for name in ("event_fd", "submit_batch_get", "submit_batch_set", "submit_batch_exists",
                 "drain_completions", "close", "submit_batch_delete"):
        assert callable(getattr(LMCacheRedisNativeClient, name))
    # LMCache's own client is lmcache.lmcache_redis.LMCacheRedisClient.
    assert LMCacheRedisNativeClient.__name__ != "LMCacheRedisClient"


def test_the_non_mp_classes_are_only_imported_on_access():
    code = ("import sys, lmcache_redis.lmcache as m\n"
            "assert 'lmcache_redis._lmcache_connector' not in sys.modules\n"
            "try:\n    m.NoSuchThing\nexcept AttributeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=HANG)
    assert out.returncode == 0, out.stderr
    assert "has no attribute 'NoSuchThing'" in out.stdout


# ---- submission ---------------------------------------------------------------

def test_mixed_sizes_unaligned_round_trip(native):
    client, demux = native(connections=4)
    sizes = [8 * MiB, 3 * MiB, 1, 2 * MiB - 64, 2 * MiB - 63, 3 * MiB + 1]
    keys = [f"t/model@0000010a@0@{i:064x}@salt" for i in range(len(sizes))]
    src = [lmcache_view(n, patterned(n, i), offset=i % 2) for i, n in enumerate(sizes)]
    assert all(v.format == "<B" for v in src)
    assert demux.wait(demux.submit("set", keys, src))[1:] == (True, "", None)
    dst = [lmcache_view(n, offset=1 - i % 2) for i, n in enumerate(sizes)]
    got = demux.wait(demux.submit("get", keys, dst))
    assert got[1:] == (True, "", [True] * len(sizes))
    assert all(bytes(d) == patterned(n, i) for i, (d, n) in enumerate(zip(dst, sizes)))
    assert demux.wait(demux.submit("exists", keys + ["absent"]))[1:] == \
        (True, "", [True] * len(sizes) + [False])
    # A key twice in one batch: one of the two deletes it (which one is not said).
    ok, error, mask = demux.wait(demux.submit("delete", [keys[0], "absent", keys[0]]))[1:]
    assert (ok, error, mask[1], sorted([mask[0], mask[2]])) == (True, "", False, [False, True])


def test_a_256_mib_value(native):
    client, demux = native(connections=4, timeout=60)
    n = 256 * MiB + 1
    src = lmcache_view(n, patterned(n, 7))
    dst = lmcache_view(n)
    key = "t/model@0@0@big"
    try:
        assert demux.wait(demux.submit("set", [key], [src]))[1:] == (True, "", None)
        assert demux.wait(demux.submit("get", [key], [dst]))[1:] == (True, "", [True])
        assert bytes(dst) == bytes(src)
    finally:
        assert demux.wait(demux.submit("delete", [key]))[3] == [True]


def test_an_empty_batch_completes_at_once(native):
    client, demux = native()
    assert demux.wait(demux.submit("get", [], []))[1:] == (True, "", [])
    assert demux.wait(demux.submit("exists", []))[1:] == (True, "", [])
    assert demux.wait(demux.submit("set", [], []))[1:] == (True, "", None)


def test_caller_bugs_raise_naming_the_argument(native):
    client, demux = native()
    with pytest.raises(ValueError, match=r"submit_batch_get\(keys, memoryviews\).*2 keys, 1"):
        client.submit_batch_get(["a", "b"], [lmcache_view(4)])
    with pytest.raises(TypeError, match=r"submit_batch_set\(keys, memoryviews\).*memoryviews\[1\]"):
        client.submit_batch_set(["a", "b"], [lmcache_view(4), 12])
    with pytest.raises(ValueError, match=r"memoryviews\[0\] \(bytes\) is read-only"):
        client.submit_batch_get(["a"], [b"read-only"])
    with pytest.raises(TypeError, match=r"keys\[0\] must be str or bytes"):
        client.submit_batch_exists([1])
    assert client._pending == {}
    client.close()
    with pytest.raises(ClientClosedError):
        client.submit_batch_exists(["a"])


def test_ids_are_unique_ints(native):
    client, demux = native()
    ids = [demux.submit("exists", [f"k{i}"]) for i in range(500)]
    assert len(set(ids)) == 500 and all(type(i) is int for i in ids)
    demux.wait_all()


# ---- completions --------------------------------------------------------------

def test_a_cluster_url(native, redis_cluster):
    """A redis-cluster:// URL: 8 MiB chunks stored, read, checked and deleted
    through a 3-master cluster, each chunk's parts spread over the masters;
    the masks as on a single server, and nothing left behind."""
    client, demux = native(url=redis_cluster.url, connections=2)
    n, count = 8 * MiB, 4
    keys = [f"t/model@0000010a@0@{i:064x}@cluster" for i in range(count)]
    src = [lmcache_view(n, patterned(n, 20 + i), offset=i % 2) for i in range(count)]
    assert demux.wait(demux.submit("set", keys, src))[1:] == (True, "", None)
    masters = redis_cluster.masters()
    assert all(redis_cluster.keys_on(m, "t/model@*@cluster*") for m in masters)
    # The chunks, a missing key, and a chunk into a buffer of another size.
    dst = [lmcache_view(n, offset=1 - i % 2) for i in range(count)]
    views = dst + [lmcache_view(n), lmcache_view(n - 1)]
    got = demux.wait(demux.submit("get", keys + ["absent", keys[0]], views))
    assert got[1:] == (True, "", [True] * count + [False, False])
    assert all(bytes(d) == patterned(n, 20 + i) for i, d in enumerate(dst))
    assert demux.wait(demux.submit("exists", keys + ["absent"]))[1:] == \
        (True, "", [True] * count + [False])
    assert demux.wait(demux.submit("delete", [keys[0], "absent"]))[1:] == \
        (True, "", [True, False])
    assert demux.wait(demux.submit("exists", keys))[1:] == (True, "", [False] + [True] * 3)
    got = demux.wait(demux.submit("get", keys[:2], [lmcache_view(n), lmcache_view(n)]))
    assert got[1:] == (True, "", [False, True])
    assert demux.wait(demux.submit("delete", keys[1:]))[1:] == (True, "", [True] * 3)
    # delete removed every part key too.
    assert not any(redis_cluster.keys_on(m, "t/model@*@cluster*") for m in masters)


def test_get_mask_is_exact_size_only(native, redis_server):
    client, demux = native()
    src = lmcache_view(3 * MiB, patterned(3 * MiB, 1))
    assert demux.wait(demux.submit("set", ["v"], [src]))[1]
    # Another client's plain value, and ours, read into buffers of other sizes.
    redis_server.command("SET", "plain", b"x" * 100)
    views = [lmcache_view(3 * MiB - 1), lmcache_view(3 * MiB + 1), lmcache_view(100),
             lmcache_view(99), lmcache_view(101), lmcache_view(3 * MiB), lmcache_view(7)]
    got = demux.wait(demux.submit("get", ["v", "v", "plain", "plain", "plain", "v", "nope"],
                                  views))
    # Too small, too large, exact, too small, too large, exact, missing.
    assert got[1:] == (True, "", [False, False, True, False, False, True, False])
    assert bytes(views[5]) == bytes(src)


def test_set_reports_any_failed_key(make_own_server):
    # A full noeviction server refuses the large value.
    server = make_own_server(extra_args=["--maxmemory", "8mb", "--maxmemory-policy",
                                         "noeviction"])
    client = own_client(server, connections=2)
    demux = Demux(client)
    try:
        views = [lmcache_view(64, patterned(64, 1)), lmcache_view(16 * MiB, patterned(16 * MiB, 2))]
        got = demux.wait(demux.submit("set", ["small", "large"], views))
        assert got[1] is False and got[3] is None
        assert "OOM" in got[2] or "maxmemory" in got[2]
        assert demux.wait(demux.submit("exists", ["large"]))[3] == [False]
    finally:
        client.close()
        demux.stop()
    # A server of its own: the full one keeps the refused value's query
    # buffer a while, and may refuse the next small value too.
    client = own_client(make_own_server(), connections=2)
    demux = Demux(client)
    try:
        # One key refused by the client (longer than any key may be), one stored.
        got = demux.wait(demux.submit("set", ["k" * (1 << 20), "small"], views[:1] * 2))
        assert got[1] is False and got[3] is None and "key" in got[2]
        assert demux.wait(demux.submit("exists", ["small"]))[3] == [True]
    finally:
        client.close()
        demux.stop()


def test_a_stalled_server_ends_each_batch_by_its_deadline(make_own_server):
    server = make_own_server()
    client = own_client(server, connections=2, timeout=1)
    demux = Demux(client)
    try:
        views = [lmcache_view(4 * MiB, patterned(4 * MiB, 3)) for _ in range(3)]
        keys = ["a", "b", "c"]
        assert demux.wait(demux.submit("set", keys, views))[1]
        os.kill(server.pid, signal.SIGSTOP)
        try:
            # Submitting never waits for the server (it runs under LMCache's lock).
            ids = []
            t = threading.Thread(target=lambda: ids.extend(
                [demux.submit("get", keys, [lmcache_view(4 * MiB) for _ in keys]),
                 demux.submit("set", keys, views), demux.submit("exists", keys)]))
            t.start()
            t.join(HANG)
            assert not t.is_alive()
            for batch_id in ids:
                got = demux.wait(batch_id)
                assert got[1] is False and "imeout" in got[2], got
                assert got[3] is None or got[3] == [False] * 3
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert demux.wait(demux.submit("exists", keys))[1:] == (True, "", [True] * 3)
    finally:
        client.close()
        demux.stop()


def test_exactly_one_completion_per_id_when_the_server_dies(make_own_server):
    server = make_own_server()
    client = own_client(server, connections=4, timeout=10)
    demux = Demux(client)
    try:
        size = 8 * MiB
        keys = [f"k{i}" for i in range(8)]
        src = [lmcache_view(size, patterned(size, i)) for i in range(8)]
        assert demux.wait(demux.submit("set", keys, src))[1]
        dst = [lmcache_view(size) for _ in keys]
        stop = threading.Event()

        def submitter():
            while not stop.is_set():
                demux.submit("get", keys, dst)
                demux.submit("set", keys, src)
                demux.submit("exists", keys)
                time.sleep(0.002)

        threads = [threading.Thread(target=submitter) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        server.kill()
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(HANG)
        demux.wait_all()
        outcomes = Counter(c[1] for c in demux.done.values())
        assert outcomes[False] > 0, outcomes  # some batches saw the server die
        server.restart()
        # The same client works again once the server is back.
        assert demux.wait(demux.submit("set", keys[:1], src[:1]))[1:] == (True, "", None)
        assert demux.wait(demux.submit("get", keys[:1], dst[:1]))[1:] == (True, "", [True])
        assert bytes(dst[0]) == bytes(src[0])
    finally:
        client.close()
        demux.stop()


# ---- wake-ups -----------------------------------------------------------------

def test_event_fd_is_a_nonblocking_cloexec_eventfd(native):
    import fcntl

    client, demux = native()
    fd = client.event_fd()
    assert fd == client.event_fd() and isinstance(fd, int)
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert not stat.S_ISREG(os.fstat(fd).st_mode)


def test_many_submitters_one_poller_with_no_timeout(redis_url):
    """Every id arrives to a poller that waits forever between drains (a
    lost wake-up would hang it), and a full drain leaves the fd quiet."""
    client = LMCacheRedisNativeClient(url=redis_url, connections=4)
    fd = client.event_fd()
    submitted: set = set()
    lock = threading.Lock()
    arrived: list = []
    n_threads, per_thread = 4, 400

    def submit(t):
        for i in range(per_thread):
            keys = [f"many:{t}:{i}:{j}" for j in range(i % 3)]
            if i % 2:
                batch_id = client.submit_batch_exists(keys)
            else:
                batch_id = client.submit_batch_set(keys, [lmcache_view(17) for _ in keys])
            with lock:
                submitted.add(batch_id)

    def poll():
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while len(arrived) < n_threads * per_thread:
            poller.poll()  # no timeout
            arrived.extend(c[0] for c in client.drain_completions())

    poller_thread = threading.Thread(target=poll, daemon=True)
    poller_thread.start()
    threads = [threading.Thread(target=submit, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG)
    poller_thread.join(HANG)
    try:
        assert not poller_thread.is_alive(), f"{len(arrived)} of {len(submitted)} arrived"
        assert sorted(arrived) == sorted(submitted)
        assert select.select([fd], [], [], 0)[0] == []
        assert client.drain_completions() == []
    finally:
        client.close()


def test_drain_never_raises(native, monkeypatch, caplog):
    client, demux = native()

    def broken():
        raise MemoryError("test")

    monkeypatch.setattr(client, "_client", type("C", (), {"drain_completions": staticmethod(broken),
                                                          "close": lambda self: None})())
    with caplog.at_level(logging.ERROR, logger="lmcache_redis"):
        assert client.drain_completions() == []
    assert "drain_completions failed: MemoryError" in caplog.text


class _SlowHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(1.0)  # a log sink that stalls (full pipe, remote syslog)


def test_submit_does_not_wait_for_the_drain_s_logging(redis_url):
    # Submits run under LMCache's adapter lock: a drain logging failed keys
    # to a slow handler must not hold them up.
    client = LMCacheRedisNativeClient(url=redis_url)
    logger = logging.getLogger("lmcache_redis.lmcache")
    handler = _SlowHandler(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        fd = client.event_fd()
        client.submit_batch_set(["k" * MiB], [lmcache_view(16)])  # key too long: a failed key
        assert select.select([fd], [], [], HANG)[0]
        drainer = threading.Thread(target=client.drain_completions)
        drainer.start()
        time.sleep(0.2)  # the drain is inside the slow log call now
        t0 = time.monotonic()
        client.submit_batch_exists(["x"])
        took = time.monotonic() - t0
        drainer.join(HANG)
        assert took < 0.1, f"submit waited {took:.2f} s for the drain's log call"
    finally:
        logger.removeHandler(handler)
        client.close()


def test_a_completion_that_matches_no_submit_is_an_internal_error(native, monkeypatch, caplog):
    # Cannot happen (every id is recorded before it can be drained): if it
    # does, the id still gets one failed completion, and the log says why.
    client, demux = native()
    demux.stop()
    monkeypatch.setattr(client, "_client", type("C", (), {
        "drain_completions": staticmethod(lambda: [(12345, [True])]),
        "close": lambda self: None})())
    with caplog.at_level(logging.ERROR, logger="lmcache_redis"):
        got = client.drain_completions()
    assert len(got) == 1 and got[0][:2] == (12345, False) and "internal error" in got[0][2]
    assert "internal error completing batch 12345" in caplog.text


# ---- close ------------------------------------------------------------------

def test_batches_cut_short_by_close_are_not_logged_as_failures(make_own_server, caplog):
    # A normal shutdown: the batches close() ends fail (ok False) but are
    # no fault, so no WARNING; DEBUG says how many keys close() cut short.
    server = make_own_server()
    client = own_client(server, connections=2, timeout=30)
    demux = Demux(client)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.DEBUG, logger="lmcache_redis"):
            ids = [demux.submit("get", ["a", "b"], [lmcache_view(64), lmcache_view(64)]),
                   demux.submit("exists", ["a"])]
            time.sleep(0.2)
            client.close()
            for batch_id in ids:
                got = demux.wait(batch_id)
                assert got[1] is False and "ClientClosedError" in got[2]
    finally:
        os.kill(server.pid, signal.SIGCONT)
        demux.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "get: 2 of 2 key(s) cut short by close()" in caplog.text


def test_close_is_bounded_with_a_stalled_server_and_leaves_buffers_alone(make_own_server):
    server = make_own_server()
    client = own_client(server, connections=4, timeout=30)
    demux = Demux(client)
    size = 16 * MiB
    keys = [f"c{i}" for i in range(6)]
    src = [lmcache_view(size, patterned(size, i)) for i in range(6)]
    assert demux.wait(demux.submit("set", keys, src))[1]
    dst = [lmcache_view(size) for _ in keys]
    os.kill(server.pid, signal.SIGSTOP)
    try:
        ids = [demux.submit("get", keys, dst), demux.submit("set", keys, src)]
        time.sleep(0.2)  # in flight: sent, waiting on the stopped server
        closers = [threading.Thread(target=client.close) for _ in range(2)]
        for t in closers:
            t.start()
        for t in closers:
            t.join(HANG)
        assert not any(t.is_alive() for t in closers)
        canary = b"\xa5" * size
        for d in dst:
            d.cast("B")[:] = canary
        # Every unfinished id still gets its (failed) completion after close().
        for batch_id in ids:
            got = demux.wait(batch_id)
            assert got[1] is False and got[2]
        time.sleep(0.2)
        assert all(bytes(d) == canary for d in dst)
        with pytest.raises(ClientClosedError):
            client.submit_batch_get(keys, dst)
        client.close()  # idempotent
    finally:
        os.kill(server.pid, signal.SIGCONT)
        demux.stop()


def test_logs_failures_rate_limited(native, caplog):
    client, demux = native(connections=1)
    long_key = "k" * (1 << 20)
    with caplog.at_level(logging.WARNING, logger="lmcache_redis"):
        for _ in range(5):
            demux.wait(demux.submit("exists", [long_key, "short"]))
    lines = [r for r in caplog.records if "key(s) failed" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "exists: 1 of 2 key(s) failed" in lines[0].getMessage()


def test_client_settings_returns_from_url_arguments(redis_url):
    kwargs, ttl = client_settings({"url": redis_url, "ttl": 60}, "x")
    assert kwargs["url"] == redis_url and ttl == 60.0
    client = RedisClient.from_url(**kwargs)
    client.close()
