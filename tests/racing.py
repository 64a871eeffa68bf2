"""Racing writers of every width and size on a few keys, with readers of
several buffer sizes: no read is ever torn, and once the writers stop every
reader reads the value of the last write, with no key left besides the
values' own (stored format 2). Used by tests/test_format.py (a fixed number
of writes) and tests/test_soak.py (for a time).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import redis

import lmcache_redis
from lmcache_redis import RedisClient
from lmcache_redis._testing import RedisServer
from selfcheck import MiB, fresh_tag, make, tag_of

WIDTHS = (None, 1, 4, 16)
RACE_SIZES = (100 * 1024, 3 * MiB, 9 * MiB, 33 * MiB)
READER_BUFFERS = (200 * 1024, 10 * MiB, 40 * MiB, 64 * MiB)


def _all_keys(r: redis.Redis) -> set:
    return set(r.scan_iter(count=1000))


def _read(client: RedisClient, key, buf: np.ndarray):
    n = client.get(key, buf)
    if n is None:
        return None, None
    return n, tag_of(buf, n)


def run_threads(targets, on_exit=None) -> None:
    """Runs fn(n) for each (fn, n) of targets on a thread of its own and
    waits for all; the first exception any raised is re-raised here, in the
    test's thread. on_exit(fn), if given, runs as each one ends."""
    failures: list[BaseException] = []

    def guarded(fn, n: int) -> None:
        try:
            fn(n)
        except BaseException as exc:  # re-raised below
            failures.append(exc)
        finally:
            if on_exit is not None:
                on_exit(fn)

    threads = [threading.Thread(target=guarded, args=target) for target in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


class _Ledger:
    """Which writes completed, in which order: every set takes a ticket
    before it is sent and one when it returns. A write W can be the final
    one only if no other write started after W had returned (that one
    reached the server after W and replaced it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ticket = 0
        self.done: dict[int, tuple[int, int, int]] = {}  # tag -> (start, end, size)
        self.last_tag_done = None

    def begin(self) -> int:
        with self.lock:
            self.ticket += 1
            return self.ticket

    def end(self, tag: int, start: int, size: int) -> None:
        with self.lock:
            self.ticket += 1
            self.done[tag] = (start, self.ticket, size)
            self.last_tag_done = tag

    def could_be_last(self, tag: int) -> bool:
        _, end, _ = self.done[tag]
        return not any(start > end for start, _, _ in self.done.values())


def race(server: RedisServer, keys: list, seconds: float = 0.0, writes_each: int = 0,
         seed: int = 0) -> dict:
    """Writers (one client per width in WIDTHS, sizes from RACE_SIZES) and
    readers (one per buffer size in READER_BUFFERS) on ``keys`` until every
    writer made ``writes_each`` writes or ``seconds`` passed; then checks
    what is left. Returns counts; raises AssertionError on any torn read,
    disagreement or debris. Used by tests/test_soak.py too."""
    ledgers = {k: _Ledger() for k in keys}
    counts = dict(writes=0, hits=0, misses=0, too_small=0, torn=0)
    lock = threading.Lock()
    writers_left = [len(WIDTHS)]
    stop_at = time.monotonic() + seconds

    def bump(name: str) -> None:
        with lock:
            counts[name] += 1

    def writer(n: int) -> None:
        rng = np.random.default_rng(seed * 1000 + n)
        with RedisClient(server.host, server.port, stripes=WIDTHS[n]) as client:
            i = 0
            while (i < writes_each) if writes_each else (time.monotonic() < stop_at):
                k = keys[int(rng.integers(len(keys)))]
                size = RACE_SIZES[(n + i) % len(RACE_SIZES)]
                tag = fresh_tag(rng)
                value = make(tag, size)
                start = ledgers[k].begin()
                client.set(k, value)
                ledgers[k].end(tag, start, size)
                bump("writes")
                i += 1

    def reader(n: int) -> None:
        buf = np.empty(READER_BUFFERS[n], dtype=np.uint8)
        with RedisClient(server.host, server.port) as client:
            i = n
            while True:
                with lock:
                    if not writers_left[0]:
                        return
                k = keys[i % len(keys)]
                i += 1
                try:
                    got, tag = _read(client, k, buf)
                except lmcache_redis.BufferTooSmallError:
                    bump("too_small")
                    continue
                if got is None:
                    bump("misses")
                elif tag is None:
                    bump("torn")
                else:
                    with ledgers[k].lock:
                        sizes = {t: s for t, (_, _, s) in ledgers[k].done.items()}
                    # A value being written may be read before its set returns.
                    bump("hits" if sizes.get(tag, got) == got else "torn")

    def writer_done(fn) -> None:
        if fn is writer:
            with lock:
                writers_left[0] -= 1

    run_threads([(writer, n) for n in range(len(WIDTHS))]
                + [(reader, n) for n in range(len(READER_BUFFERS))], on_exit=writer_done)
    assert counts["torn"] == 0, counts

    # The writers stopped: every reader reads the same, last written value.
    with redis.Redis(server.host, server.port) as r:
        written = {k for k in keys if ledgers[k].done}
        assert _all_keys(r) == {k.encode() for k in written}, "keys besides the values"
    readers = [RedisClient(server.host, server.port, stripes=w) for w in WIDTHS]
    try:
        for k in written:
            ledger = ledgers[k]
            seen = set()
            for client in readers:
                for cap in READER_BUFFERS:
                    buf = np.empty(cap, dtype=np.uint8)
                    try:
                        got, tag = _read(client, k, buf)
                    except lmcache_redis.BufferTooSmallError:
                        continue
                    assert got is not None, (k, cap, "a stored value read as a miss")
                    assert tag in ledger.done and ledger.done[tag][2] == got, (k, cap, got)
                    seen.add(tag)
                    assert client.exists(k)
            assert len(seen) == 1, (k, "readers disagree", seen)
            assert ledger.could_be_last(seen.pop()), (k, "an older write won")
        # One more write each, after the race: the last completed set wins.
        rng = np.random.default_rng(seed + 99)
        for n, k in enumerate(sorted(written)):
            tag = fresh_tag(rng)
            size = RACE_SIZES[n % len(RACE_SIZES)]
            readers[n % len(readers)].set(k, make(tag, size))
            for client in readers:
                buf = np.empty(64 * MiB, dtype=np.uint8)
                assert _read(client, k, buf) == (size, tag)
                assert client.exists(k)
    finally:
        for client in readers:
            client.close()
    return counts
