"""Review findings (branch review1) on the LMCache plug-ins: each test
fails on main at the time of the review."""

from __future__ import annotations

import ctypes
import logging
import select
import threading
import time

import pytest

from lmcache_redis.lmcache import LMCacheRedisNativeClient


def _view(n: int) -> memoryview:
    raw = (ctypes.c_ubyte * n)()
    _KEEP.append(raw)
    return memoryview(raw)


_KEEP: list = []


def test_a_ttl_the_client_cannot_use_is_refused_at_construction(redis_url):
    # client_settings only checks ttl > 0; the core refuses ttl >= 9e15 s in
    # every submit_batch_set, so the misconfiguration surfaces as a raising
    # submit on every store (LMCache drops each batch; non-MP put raises).
    try:
        client = LMCacheRedisNativeClient(url=redis_url, ttl=1e16)
    except ValueError as exc:
        assert "ttl" in str(exc)
        return
    try:
        # What happens instead: the store's submit raises for a setting.
        client.submit_batch_set(["k"], [_view(16)])
    except ValueError as exc:
        pytest.fail(f"the constructor took ttl=1e16, every submit_batch_set raises: {exc}")
    finally:
        client.close()


class _SlowHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(1.0)  # a log sink that stalls (full pipe, remote syslog)


def test_submit_does_not_wait_for_the_drain_s_logging(redis_url):
    # drain_completions logs failed keys while holding the lock submit
    # needs; submit runs under LMCache's adapter lock and must not block.
    client = LMCacheRedisNativeClient(url=redis_url)
    logger = logging.getLogger("lmcache_redis.lmcache")
    handler = _SlowHandler(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        fd = client.event_fd()
        client.submit_batch_set(["k" * (1 << 20)], [_view(16)])  # key too long: a failed key
        assert select.select([fd], [], [], 30)[0]
        drainer = threading.Thread(target=client.drain_completions)
        drainer.start()
        time.sleep(0.2)  # the drain is inside the slow log call now
        t0 = time.monotonic()
        client.submit_batch_exists(["x"])
        took = time.monotonic() - t0
        drainer.join(10)
        assert took < 0.1, f"submit waited {took:.2f} s for the drain's log call"
    finally:
        logger.removeHandler(handler)
        client.close()
