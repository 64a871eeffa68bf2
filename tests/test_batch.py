"""Batches (issue #10): get_many / set_many / exists_many / delete_many and
their _ptr forms, and the submit/drain surface the asyncio face and the
LMCache plug-in build on: per-key results in one batch, argument errors
that name the argument, the event fd, every submission completed exactly
once (from 4 threads with a polling drainer; with close() or a killed
server mid-batch), and no write into a caller's buffer once close() or
cancel_batch() returned."""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest

import lmcache_redis
from lmcache_redis import (BatchError, BufferTooSmallError, ClientClosedError,
                           OperationCancelledError, RedisClient, RedisError)

MiB = 1 << 20
# The stripe boundary with the default stripe_size: up to 2 MiB - 64 bytes a
# value is stored verbatim, one byte more and it is striped.
BOUNDARY = lmcache_redis.DEFAULT_STRIPE_SIZE - 64
# A guard against a hang (a lost completion), never a timing assertion.
HANG = 60.0


@pytest.fixture(scope="module")
def client(redis_server):
    with RedisClient(redis_server.host, redis_server.port) as c:
        yield c


def _pattern(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def _drain_until(client: RedisClient, ids, seen: Counter, results: dict) -> None:
    """Polls the event fd and drains until every id of `ids` completed."""
    fd = client.event_fd()
    deadline = time.monotonic() + HANG
    while not set(ids) <= set(seen):
        assert time.monotonic() < deadline, f"{len(set(ids) - set(seen))} ids never completed"
        select.select([fd], [], [], 0.5)
        for batch_id, res in client.drain_completions():
            seen[batch_id] += 1
            results[batch_id] = res


# ---- many keys per call -------------------------------------------------------


def test_exists_and_delete_1000_keys(client, key) -> None:
    keys = [f"{key}:{i}" for i in range(1000)]
    stored = keys[::2]
    client.set_many(stored, [b"v%d" % i for i in range(len(stored))])
    assert client.exists_many(keys) == [i % 2 == 0 for i in range(1000)]
    assert client.delete_many(keys) == [i % 2 == 0 for i in range(1000)]
    assert client.exists_many(keys) == [False] * 1000
    assert client.delete_many(keys) == [False] * 1000


SIZES = [0, 100, BOUNDARY, BOUNDARY + 1, 4 * MiB, 32 * MiB]


@pytest.mark.parametrize("extra", [0, 1000], ids=["exact-buffers", "larger-buffers"])
def test_mixed_sizes_round_trip(client, key, extra: int) -> None:
    keys = [f"{key}:{n}" for n in SIZES]
    values = [_pattern(n, n) for n in SIZES]
    assert client.set_many(keys, values) is None
    outs = [np.zeros(n + extra, dtype=np.uint8) for n in SIZES]
    assert client.get_many(keys, outs) == SIZES
    for n, value, out in zip(SIZES, values, outs):
        assert np.array_equal(out[:n], value), n
    # Each is an ordinary value: the single-key calls read it too.
    assert client.get(keys[3]) == values[3].tobytes()
    assert client.delete_many(keys) == [True] * len(SIZES)


def test_misses_and_wrong_size_buffers_in_one_batch(client, key) -> None:
    keys = [f"{key}:hit", f"{key}:miss", f"{key}:big", f"{key}:hit2", f"{key}:empty"]
    client.set_many([keys[0], keys[2], keys[3], keys[4]],
                    [_pattern(1000, 1), _pattern(3 * MiB, 2), _pattern(10, 3), b""])
    outs = [bytearray(1000), bytearray(10), bytearray(MiB), bytearray(10), bytearray(5)]
    with pytest.raises(BatchError) as info:
        client.get_many(keys, outs)
    e = info.value
    assert isinstance(e, RedisError)
    assert e.results[:2] == [1000, None] and e.results[3:] == [10, 0]
    assert isinstance(e.results[2], BufferTooSmallError) and e.results[2].needed == 3 * MiB
    assert list(e.errors) == [keys[2]] and e.errors[keys[2]] is e.results[2]
    assert e.stored is None
    assert keys[2] in str(e) and "BufferTooSmallError" in str(e) and "1 of 5" in str(e)
    # The other keys were read all the same.
    assert outs[0] == _pattern(1000, 1).tobytes() and outs[3] == _pattern(10, 3).tobytes()
    client.delete_many(keys)


def test_batch_error_names_the_first_few_keys_and_pickles(client, key) -> None:
    keys = [f"{key}:{i}" for i in range(6)]
    client.set_many(keys, [b"xx"] * 6)
    with pytest.raises(BatchError) as info:
        client.get_many(keys, [bytearray(1)] * 6)
    message = str(info.value)
    assert "6 of 6" in message and keys[0] in message and keys[2] in message
    assert keys[5] not in message and "3 more" in message
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == message and copy.results[1].needed == 2
    client.delete_many(keys)


def test_keys_from_an_iterator_name_the_failed_keys(client, key) -> None:
    # Seen failing before the keys were read into a list once per call:
    # IndexError (BatchError read the iterator new_batch had consumed).
    keys = [f"{key}:{i}" for i in range(3)]
    client.set_many((k for k in keys), [b"xx"] * 3)
    with pytest.raises(BatchError) as info:
        client.get_many(iter(keys), [bytearray(2), bytearray(1), bytearray(2)])
    assert list(info.value.errors) == [keys[1]] and info.value.results[0] == 2
    block = np.zeros(8, dtype=np.uint8)
    with pytest.raises(BatchError) as info:
        client.get_many_ptr((k for k in keys), [block.ctypes.data] * 3, [1, 2, 2])
    assert list(info.value.errors) == [keys[0]]
    assert client.delete_many(iter(keys)) == [True] * 3


def test_batch_error_keeps_every_failure_of_a_repeated_key(client, key) -> None:
    # Seen failing before BatchError.failures: errors, keyed by key, kept
    # one failure of a key given twice.
    client.set(key, b"xx")
    with pytest.raises(BatchError) as info:
        client.get_many([key, "other", key], [bytearray(1), bytearray(1), bytearray(0)])
    e = info.value
    assert "2 of 3 keys failed" in str(e)
    assert [(i, k) for i, k, _ in e.failures] == [(0, key), (2, key)]
    assert all(exc is e.results[i] for i, _, exc in e.failures)
    assert list(e.errors) == [key] and e.errors[key] is e.results[0]  # the first
    copy = pickle.loads(pickle.dumps(e))
    assert [(i, k) for i, k, _ in copy.failures] == [(0, key), (2, key)]
    assert copy.failures[1][2].needed == 2
    client.delete(key)


def test_cancel_batch_wants_an_int(client) -> None:
    for bad in ("x", 1.0, None, True):
        with pytest.raises(TypeError, match=r"cancel_batch\(batch_id\): batch_id must be an "
                                            r"int, not " + type(bad).__name__):
            client.cancel_batch(bad)


def test_set_many_says_which_keys_were_stored(make_own_server) -> None:
    # A value over the server's proto-max-bulk-len (1 MiB here) is refused
    # before it is sent; the other keys of the batch are stored.
    server = make_own_server(extra_args=["--proto-max-bulk-len", "1mb"])
    with RedisClient(server.host, server.port) as c:
        keys = ["small", "huge", "small2"]
        with pytest.raises(BatchError) as info:
            c.set_many(keys, [b"a", bytes(2 * MiB), b"b"])
        e = info.value
        assert e.stored == ["small", "small2"]
        assert list(e.errors) == ["huge"] and isinstance(e.errors["huge"], ValueError)
        assert e.results[0] is True and e.results[2] is True
        assert c.exists_many(keys) == [True, False, True]


def test_set_many_ttl(client, key, redis_server) -> None:
    keys = [f"{key}:{i}" for i in range(3)]
    client.set_many(keys, [b"x"] * 3, ttl=100)
    for k in keys:
        assert 0 < redis_server.command("PTTL", k) <= 100_000
    client.delete_many(keys)


def test_ptr_forms_with_numpy_addresses(client, key) -> None:
    sizes = [0, 100, 5 * MiB]
    keys = [f"{key}:{n}" for n in sizes]
    values = [_pattern(n, n + 7) for n in sizes]
    client.set_many_ptr(keys, [v.ctypes.data for v in values], sizes, ttl=60)
    block = np.zeros(sum(sizes) + 64, dtype=np.uint8)
    offsets = np.cumsum([0] + sizes[:-1])
    addresses = [block.ctypes.data + int(o) for o in offsets]
    assert client.get_many_ptr(keys, addresses, sizes) == sizes
    for o, n, v in zip(offsets, sizes, values):
        assert np.array_equal(block[o:o + n], v)
    with pytest.raises(BatchError) as info:
        client.get_many_ptr(keys, addresses, [0, 100, 4 * MiB])
    assert info.value.results[2].needed == 5 * MiB
    client.delete_many(keys)


def test_rows_of_a_2d_array_are_buffers(client, key) -> None:
    keys = [f"{key}:{i}" for i in range(4)]
    values = _pattern(4 * 1000, 5).reshape(4, 1000)
    client.set_many(keys, values)
    out = np.zeros((4, 1000), dtype=np.uint8)
    assert client.get_many(keys, out) == [1000] * 4
    assert np.array_equal(out, values)
    client.delete_many(keys)


def test_empty_batches(client) -> None:
    assert client.get_many([], []) == []
    assert client.set_many([], []) is None
    assert client.exists_many([]) == [] and client.delete_many(()) == []
    batch_id = client.submit_batch_exists([])
    seen, results = Counter(), {}
    _drain_until(client, [batch_id], seen, results)
    assert results[batch_id] == []


def _bad_calls(c: RedisClient):
    ro = b"read-only"
    strided = np.zeros(64, dtype=np.uint8)[::2]
    return {
        "length-mismatch": (lambda: c.get_many(["a", "b"], [bytearray(1)]),
                            ValueError, ["get_many(keys, buffers)", "keys", "buffers", "2", "1"]),
        "length-mismatch-ptr": (lambda: c.get_many_ptr(["a"], [1, 2], [1]),
                                ValueError, ["keys", "addresses", "sizes"]),
        "bad-key-type": (lambda: c.exists_many(["a", 7]),
                         TypeError, ["exists_many(keys)", "keys[1]", "int"]),
        "one-key-for-keys": (lambda: c.delete_many("abc"), TypeError, ["keys", "sequence"]),
        "read-only-buffer": (lambda: c.get_many(["a", "b", "c"], [bytearray(1), bytearray(1), ro]),
                             ValueError, ["get_many(keys, buffers)", "buffers[2]", "read-only"]),
        "strided-buffer": (lambda: c.set_many(["a"], [strided]),
                           ValueError, ["set_many(keys, buffers)", "buffers[0]", "C-contiguous"]),
        "not-a-buffer": (lambda: c.set_many(["a", "b"], [b"x", 3]),
                         TypeError, ["buffers[1]", "buffer protocol", "int"]),
        "one-buffer-for-buffers": (lambda: c.get_many(["a"], bytearray(4)),
                                   TypeError, ["buffers", "one per key"]),
        "negative-size": (lambda: c.get_many_ptr(["a", "b"], [1, 1], [1, -1]),
                          ValueError, ["get_many_ptr(keys, addresses, sizes)", "sizes[1]"]),
        "null-address": (lambda: c.set_many_ptr(["a"], [0], [10]),
                         ValueError, ["addresses[0]", "NULL"]),
        "address-type": (lambda: c.submit_batch_get_ptr(["a"], [1.5], [1]),
                         TypeError, ["submit_batch_get_ptr", "addresses[0]"]),
        "bad-ttl": (lambda: c.set_many(["a"], [b"x"], ttl=-1), ValueError, ["ttl"]),
        "submit-bad-key": (lambda: c.submit_batch_set([b"a", None], [b"", b""]),
                           TypeError, ["submit_batch_set(keys, buffers)", "keys[1]"]),
        # Seen failing before the form was passed explicitly: None buffers
        # stored empty values, or read as a length probe.
        "none-buffers-set": (lambda: c.set_many(["a"], None), TypeError,
                             ["set_many(keys, buffers): buffers must be a sequence of buffers, "
                              "not NoneType"]),
        "none-buffers-get": (lambda: c.get_many(["a"], None), TypeError,
                             ["get_many(keys, buffers): buffers must be a sequence of buffers, "
                              "not NoneType"]),
        "none-buffers-submit": (lambda: c.submit_batch_set(["a"], None), TypeError,
                                ["submit_batch_set(keys, buffers): buffers", "NoneType"]),
        "none-addresses": (lambda: c.set_many_ptr(["a"], None, [1]), TypeError,
                           ["set_many_ptr(keys, addresses, sizes): addresses must be a "
                            "sequence of ints, not NoneType"]),
        "none-sizes": (lambda: c.submit_batch_get_ptr(["a"], [1], None), TypeError,
                       ["submit_batch_get_ptr(keys, addresses, sizes): sizes must be a "
                        "sequence of ints, not NoneType"]),
        "none-keys": (lambda: c.exists_many(None), TypeError,
                      ["exists_many(keys): keys must be a sequence of keys, not NoneType"]),
    }


@pytest.mark.parametrize("case", list(_bad_calls(None)))
def test_argument_errors_name_the_argument(client, case: str) -> None:
    call, exc, words = _bad_calls(client)[case]
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert client.drain_completions() == []  # nothing was submitted


def test_none_for_buffers_stores_nothing(client, key) -> None:
    # Seen failing before the form was passed explicitly: set_many(keys,
    # None) stored an empty value under each key.
    for call in (lambda: client.set_many([key], None),
                 lambda: client.set_many_ptr([key], None, [0]),
                 lambda: client.submit_batch_set([key], None)):
        with pytest.raises(TypeError):
            call()
    assert client.exists(key) is False
    assert client.drain_completions() == []


def test_buffers_are_released_when_done(client, key) -> None:
    # A bytearray cannot be resized while a view of it is held.
    client.set(key, b"abc")
    buf = bytearray(10)
    client.get_many([key], [buf])
    buf.extend(b"!")  # released when get_many returned
    batch_id = client.submit_batch_get([key], [buf])
    with pytest.raises(BufferError):
        buf.extend(b"!")  # held until drained
    _drain_until(client, [batch_id], Counter(), {})
    buf.extend(b"!")
    with pytest.raises(ValueError):
        client.get_many([key, key], [buf, b"ro"])
    buf.extend(b"!")  # the views taken before the bad argument were released


def test_nothing_is_kept_once_drained(client, key) -> None:
    import sys
    import tracemalloc

    client.set(key, b"abc")
    k, buf = key.encode(), bytearray(10)
    refs = sys.getrefcount(k), sys.getrefcount(buf)

    def rounds(n: int) -> None:
        for _ in range(n):
            ids = [client.submit_batch_get([k, k], [buf, buf]),
                   client.submit_batch_exists([k]), client.submit_batch_set([k], [b"abc"])]
            client.get_many([k], [buf])
            _drain_until(client, ids, Counter(), {})

    rounds(50)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rounds(500)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown  # 2,000 batches' items and views all freed
    assert (sys.getrefcount(k), sys.getrefcount(buf)) == refs
    client.delete(key)


def test_a_submission_keeps_its_keep_object_until_drained(client, key) -> None:
    # Seen failing before _keep: the asyncio get(key)'s bytes were kept
    # alive by a dict of the asyncio client alone.
    import sys

    client.set(key, b"abc")
    out = bytearray(3)
    keep = object()
    refs = sys.getrefcount(keep)
    batch_id = client.submit_batch_get_ptr([key], [np.frombuffer(out, np.uint8).ctypes.data],
                                           [3], _keep=keep)
    assert sys.getrefcount(keep) == refs + 1
    results = {}
    _drain_until(client, [batch_id], Counter(), results)
    assert results[batch_id] == [3] and out == b"abc"
    assert sys.getrefcount(keep) == refs
    client.delete(key)


def test_undrained_completions_release_their_buffers_when_the_client_is_freed(
        redis_server, key) -> None:
    c = RedisClient(redis_server.host, redis_server.port)
    c.set(key, b"abc")
    buf = bytearray(10)
    c.submit_batch_get([key], [buf])
    c.close()
    with pytest.raises(BufferError):
        buf.extend(b"!")  # closed, not drained: still held
    del c
    buf.extend(b"!")


def test_closed_client(redis_server) -> None:
    c = RedisClient(redis_server.host, redis_server.port)
    c.close()
    for call in (lambda: c.get_many(["a"], [bytearray(1)]), lambda: c.exists_many(["a"]),
                 lambda: c.submit_batch_get(["a"], [bytearray(1)]),
                 lambda: c.submit_batch_delete(["a"])):
        with pytest.raises(ClientClosedError):
            call()
    assert c.drain_completions() == []
    assert c.cancel_batch(1) is False


def test_ctrl_c_interrupts_a_batch(make_own_server) -> None:
    assert threading.current_thread() is threading.main_thread()
    server = make_own_server()
    n = 4 * MiB
    with RedisClient(server.host, server.port, timeout=10) as c:
        c.set_many(["a", "b"], [_pattern(n, 1), _pattern(n, 2)])
        outs = [np.zeros(n, dtype=np.uint8) for _ in range(2)]
        os.kill(server.pid, signal.SIGSTOP)
        try:
            def fire() -> None:
                time.sleep(0.2)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

            threading.Thread(target=fire, daemon=True).start()
            with pytest.raises(KeyboardInterrupt):
                c.get_many(["a", "b"], outs)
            for out in outs:
                out[:] = 7
        finally:
            os.kill(server.pid, signal.SIGCONT)
        time.sleep(0.2)
        assert all((out == 7).all() for out in outs)
        assert c.get_many(["a", "b"], outs) == [n, n]
        assert np.array_equal(outs[1], _pattern(n, 2))


# Seen failing before aa486aa: a pipelined run was not cut short by a
# cancel, which then waited out the timeout (the keys: TimeoutError).
def test_cancel_cuts_short_a_batch_of_more_keys_than_connections(make_own_server) -> None:
    server = make_own_server()
    keys = [f"k{i}" for i in range(6)]
    with RedisClient(server.host, server.port, connections=2, timeout=30) as c:
        c.set_many(keys, [b"x" * 1000] * 6)
        outs = [bytearray(1000) for _ in keys]
        os.kill(server.pid, signal.SIGSTOP)
        try:
            batch_id = c.submit_batch_get(keys, outs)
            time.sleep(0.1)  # its first rounds are sent, and wait for replies
            assert c.cancel_batch(batch_id) is True
        finally:
            os.kill(server.pid, signal.SIGCONT)
        results = {}
        _drain_until(c, [batch_id], Counter(), results)
        assert all(isinstance(r, OperationCancelledError) for r in results[batch_id]), \
            results[batch_id]


# ---- submit / drain --------------------------------------------------------------


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_event_fd_is_readable_exactly_while_completions_wait(client, key) -> None:
    fd = client.event_fd()
    assert fd == client.event_fd() and fd >= 0
    client.drain_completions()
    assert not _readable(fd)
    client.set(key, b"value")
    buf = bytearray(10)
    ids = [client.submit_batch_get([key], [buf]), client.submit_batch_exists([key, "nope"])]
    assert ids[0] != ids[1] and all(isinstance(i, int) and i > 0 for i in ids)
    # Both completions waiting: readable, and it stays so until drained.
    deadline = time.monotonic() + HANG
    done = []
    while len(done) < 2:
        assert time.monotonic() < deadline
        assert select.select([fd], [], [], HANG)[0]
        assert _readable(fd)  # still: nothing has drained it yet
        done += client.drain_completions()
    assert not _readable(fd)  # all drained
    assert client.drain_completions() == []
    assert sorted(done) == sorted([(ids[0], [5]), (ids[1], [True, False])])
    assert buf[:5] == b"value"
    client.delete(key)


def test_every_kind_of_submission_completes_once(client, key) -> None:
    keys = [f"{key}:{i}" for i in range(8)]
    values = [_pattern(1000 * i, i) for i in range(8)]
    outs = [np.zeros(8000, dtype=np.uint8) for _ in range(8)]
    block = np.zeros(8 * 8000, dtype=np.uint8)
    addresses = [block.ctypes.data + 8000 * i for i in range(8)]
    submitted = {}
    submitted["set"] = client.submit_batch_set(keys, values, ttl=60)
    seen, results = Counter(), {}
    _drain_until(client, list(submitted.values()), seen, results)
    submitted["get"] = client.submit_batch_get(keys, outs)
    submitted["get_ptr"] = client.submit_batch_get_ptr(keys, addresses, [8000] * 8)
    submitted["exists"] = client.submit_batch_exists(keys + [f"{key}:none"])
    submitted["set_ptr"] = client.submit_batch_set_ptr([f"{key}:p"], [block.ctypes.data], [10])
    submitted["small"] = client.submit_batch_get(keys, [bytearray(10)] * 8)
    _drain_until(client, list(submitted.values()), seen, results)
    submitted["delete"] = client.submit_batch_delete(keys + [f"{key}:p", f"{key}:none"])
    _drain_until(client, list(submitted.values()), seen, results)
    assert set(seen.values()) == {1} and len(seen) == len(submitted)
    by = {name: results[i] for name, i in submitted.items()}
    assert by["set"] == [True] * 8 and by["set_ptr"] == [True]
    assert by["get"] == by["get_ptr"] == [1000 * i for i in range(8)]
    for i in range(8):
        assert np.array_equal(outs[i][:1000 * i], values[i])
        assert np.array_equal(block[8000 * i:8000 * i + 1000 * i], values[i])
    assert by["exists"] == [True] * 8 + [False]
    assert by["small"][0] == 0 and by["small"][1] is not None
    assert [r.needed for r in by["small"][1:] if isinstance(r, BufferTooSmallError)] == \
        [1000 * i for i in range(1, 8) if 1000 * i > 10]
    assert by["delete"] == [True] * 9 + [False]
    assert not _readable(client.event_fd())


@pytest.mark.parametrize("exc", [MemoryError, KeyboardInterrupt])
def test_drain_keeps_the_completions_it_could_not_convert(client, key, monkeypatch,
                                                         exc) -> None:
    # Seen failing before drain_completions kept what it had taken: the
    # completions taken by a call whose converting raised were lost; and
    # before it re-armed the fd for them: a poller waited forever.
    client.set(key, b"xx")
    ids = [client.submit_batch_exists([key]), client.submit_batch_get([key], [bytearray(1)]),
           client.submit_batch_exists([key, "nope"])]
    fd = client.event_fd()
    assert select.select([fd], [], [], HANG)[0]
    time.sleep(0.2)  # all three wait, most likely: one drain takes them all
    real, raised = lmcache_redis._core.error_from_code, []

    def fails_once(*args):
        if not raised:
            raised.append(1)
            raise exc("while converting")
        return real(*args)

    monkeypatch.setattr(lmcache_redis._core, "error_from_code", fails_once)
    seen, results = Counter(), {}
    deadline = time.monotonic() + 5
    while not set(ids) <= set(seen):
        assert time.monotonic() < deadline, f"lost: {set(ids) - set(seen)}"
        select.select([fd], [], [], 0.05)
        try:
            done = client.drain_completions()
        except exc:
            # Those taken wait in the client now: the fd says so (a poller
            # that drains only when it is readable must come back).
            assert _readable(fd)
            continue
        for batch_id, res in done:
            seen[batch_id] += 1
            results[batch_id] = res
    assert raised and set(seen.values()) == {1} and set(seen) == set(ids)
    assert results[ids[0]] == [True] and results[ids[2]] == [True, False]
    assert isinstance(results[ids[1]][0], BufferTooSmallError)
    assert results[ids[1]][0].needed == 2
    assert client.drain_completions() == []
    client.delete(key)


def test_20000_submissions_from_4_threads_with_a_polling_drainer(redis_server, key) -> None:
    # As LMCache does: submitters on their own threads, one thread that
    # polls the event fd and drains.
    threads, per_thread = 4, 5000
    with RedisClient(redis_server.host, redis_server.port) as c:
        c.set(key, b"x" * 100)
        fd = c.event_fd()
        submitted: list = [[] for _ in range(threads)]
        seen = Counter()
        wrong = []
        stop = threading.Event()

        def submitter(t: int) -> None:
            buf = bytearray(100)
            for i in range(per_thread):
                kind = i % 3
                if kind == 0:
                    batch_id = c.submit_batch_exists([key, f"{key}:none"])
                elif kind == 1:
                    batch_id = c.submit_batch_get([key], [buf])
                else:
                    batch_id = c.submit_batch_get_ptr([f"{key}:none"], [0], [0])
                submitted[t].append((batch_id, kind))

        def drainer() -> None:
            while not stop.is_set():
                select.select([fd], [], [], 0.05)
                for batch_id, res in c.drain_completions():
                    seen[batch_id] += 1
                    if res not in ([True, False], [100], [None]):
                        wrong.append((batch_id, res))

        poller = threading.Thread(target=drainer)
        poller.start()
        workers = [threading.Thread(target=submitter, args=(t,)) for t in range(threads)]
        try:
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            expected = {batch_id: kind for s in submitted for batch_id, kind in s}
            deadline = time.monotonic() + HANG
            while len(seen) < len(expected) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)  # a duplicate, if any, would arrive now
        finally:
            stop.set()
            poller.join()
        assert len(expected) == threads * per_thread  # ids are unique
        assert set(seen) == set(expected), f"lost: {len(set(expected) - set(seen))}"
        assert set(seen.values()) == {1}
        assert not wrong, wrong[:5]
        assert c.drain_completions() == []
        c.delete(key)


@pytest.mark.parametrize("server_state", ["stalled", "live"])
def test_close_with_submissions_in_flight(make_own_server, server_state: str) -> None:
    server = make_own_server()
    n = 8 * MiB
    c = RedisClient(server.host, server.port, timeout=20)
    c.set_many(["a", "b"], [_pattern(n, 1), _pattern(n, 2)])
    canaries = [bytearray(n) for _ in range(12)]
    if server_state == "stalled":
        os.kill(server.pid, signal.SIGSTOP)
    try:
        ids = [c.submit_batch_get(["a", "b"], canaries[2 * i:2 * i + 2]) for i in range(6)]
        ids.append(c.submit_batch_exists(["a"] * 100))
        c.close()
        for canary in canaries:
            canary[:] = b"\x5a" * n
    finally:
        os.kill(server.pid, signal.SIGCONT)
    time.sleep(0.3)
    assert all(canary.count(b"\x5a") == n for canary in canaries), "written after close()"
    seen, results = Counter(), {}
    _drain_until(c, ids, seen, results)
    assert set(seen.values()) == {1} and set(seen) == set(ids)
    assert c.drain_completions() == []
    outcomes = [r for i in ids for r in results[i]]
    for r in outcomes:
        assert r in (n, True) or isinstance(r, RedisError), r
    if server_state == "stalled":
        assert all(isinstance(r, ClientClosedError) for r in outcomes), outcomes
    with pytest.raises(ClientClosedError):
        c.submit_batch_exists(["a"])


def test_server_killed_mid_batch(own_server) -> None:
    n = 4 * MiB
    with RedisClient(own_server.host, own_server.port, timeout=10) as c:
        c.set_many(["a", "b"], [_pattern(n, 1), _pattern(n, 2)])
        outs = [bytearray(n) for _ in range(20)]
        # Stalled first, so that every batch is surely in flight when it dies.
        os.kill(own_server.pid, signal.SIGSTOP)
        ids = [c.submit_batch_get(["a", "b"], outs[2 * i:2 * i + 2]) for i in range(10)]
        ids += [c.submit_batch_set(["c"], [bytes(n)]), c.submit_batch_exists(["a", "b"]),
                c.submit_batch_delete(["a"])]
        own_server.kill()
        seen, results = Counter(), {}
        _drain_until(c, ids, seen, results)
        assert set(seen.values()) == {1} and set(seen) == set(ids)
        outcomes = [r for i in ids for r in results[i]]
        assert all(isinstance(r, lmcache_redis.ConnectionError) for r in outcomes), outcomes
        own_server.restart()
        # The client works again: each connection re-made on its next use.
        assert c.exists_many(["a", "b"]) == [False, False]
        c.set_many(["a", "b"], [b"1", b"22"])
        assert c.get_many(["a", "b"], [bytearray(2), bytearray(2)]) == [1, 2]
        batch_id = c.submit_batch_get(["b"], [outs[0]])
        _drain_until(c, [batch_id], seen, results)
        assert results[batch_id] == [2]


def test_cancel_batch(make_own_server) -> None:
    server = make_own_server()
    n = 4 * MiB
    with RedisClient(server.host, server.port, timeout=10) as c:
        c.set_many(["a", "b"], [_pattern(n, 1), _pattern(n, 2)])
        outs = [bytearray(n), bytearray(n)]
        os.kill(server.pid, signal.SIGSTOP)
        try:
            batch_id = c.submit_batch_get(["a", "b"], outs)
            other = c.submit_batch_exists(["a"])
            assert c.cancel_batch(batch_id) is True
            for out in outs:
                out[:] = b"\x33" * n
        finally:
            os.kill(server.pid, signal.SIGCONT)
        seen, results = Counter(), {}
        _drain_until(c, [batch_id, other], seen, results)
        time.sleep(0.2)
        assert all(out.count(b"\x33") == n for out in outs), "written after cancel_batch()"
        assert all(isinstance(r, OperationCancelledError) for r in results[batch_id])
        assert results[other] == [True]  # the other batch was left alone
        assert c.cancel_batch(batch_id) is False  # completed
        assert c.cancel_batch(other) is False
        assert c.cancel_batch(10**9) is False and c.cancel_batch(-1) is False
        assert c.get_many(["a", "b"], outs) == [n, n]
        assert outs[1] == _pattern(n, 2).tobytes()


def readme_block(section: str, host: str, port: int, prefix: str) -> str:
    """The first python block of README.md's `section`, pointed at the test
    server, its keys renamed to `prefix`-N."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split(f"\n## {section}\n", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert 'RedisClient("localhost", 6379)' in block and '"chunk-' in block
    return (block.replace('RedisClient("localhost", 6379)', f'RedisClient("{host}", {port})')
            .replace('"chunk-', f'"{prefix}-'))


def test_readme_batches_example_runs(redis_server, key) -> None:
    import subprocess
    import sys

    code = readme_block("Batches", redis_server.host, redis_server.port, key)
    code += "\nclient.delete_many(keys)\nclient.close()\nprint('ok')\n"
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "BufferTooSmallError" in out.stdout and out.stdout.strip().endswith("ok")


BATCH_CALLS = ["get_many", "set_many", "exists_many", "delete_many", "get_many_ptr",
               "set_many_ptr", "event_fd", "submit_batch_get", "submit_batch_set",
               "submit_batch_exists", "submit_batch_delete", "submit_batch_get_ptr",
               "submit_batch_set_ptr", "drain_completions", "cancel_batch"]


def test_batch_calls_are_documented_and_in_the_stub() -> None:
    import inspect
    from pathlib import Path

    stub = Path(lmcache_redis._core.__file__).with_name("_core.pyi").read_text()
    for name in BATCH_CALLS:
        method = getattr(RedisClient, name)
        assert method.__doc__ and len(method.__doc__) > 80, name
        assert f"def {name}(" in stub, name
    assert list(inspect.signature(RedisClient.get_many).parameters) == ["self", "keys", "buffers"]
    assert list(inspect.signature(RedisClient.set_many_ptr).parameters) == [
        "self", "keys", "addresses", "sizes", "ttl"]
    assert "BatchError" in lmcache_redis.__all__ and "OperationCancelledError" in lmcache_redis.__all__
