"""The asyncio face (issue #10): lmcache_redis.asyncio.RedisClient, built on
the submit/drain surface and loop.add_reader. Many gets in flight at once,
verified byte for byte; a cancelled await never lets the library write into
its buffer afterwards; the loop keeps running while a gigabyte moves; the
results and exceptions are the sync client's."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest

import lmcache_redis
from lmcache_redis import (BatchError, BufferTooSmallError, ClientClosedError,
                           ConnectionError)
from lmcache_redis.asyncio import RedisClient

MiB = 1 << 20
HANG = 60.0  # a guard against a hang, never a timing assertion


def _shifted_values(count: int, size: int, seed: int):
    """count distinct values of `size` bytes as overlapping views of one
    array (value i starts 8 * i bytes in), so 64 x 32 MiB take 32 MiB."""
    base = np.random.default_rng(seed).integers(0, 256, size + 8 * count, dtype=np.uint8)
    return [base[8 * i:8 * i + size] for i in range(count)]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, HANG))


def test_gather_64_gets_of_32_mib(redis_server, key) -> None:
    count, size = 64, 32 * MiB
    keys = [f"{key}:{i}" for i in range(count)]
    values = _shifted_values(count, size, 1)
    out = np.zeros((count, size), dtype=np.uint8)  # 2 GiB

    async def main():
        async with RedisClient(redis_server.host, redis_server.port) as c:
            await c.set_many(keys, values)
            lengths = await asyncio.gather(*[c.get(k, out[i]) for i, k in enumerate(keys)])
            assert lengths == [size] * count
            assert await c.delete_many(keys) == [True] * count

    run(main())
    for i in range(count):
        assert np.array_equal(out[i], values[i]), i


def test_one_key_calls_and_their_errors(redis_server, key) -> None:
    async def main():
        async with RedisClient.from_url(redis_server.url, connections=2) as c:
            assert c.client.connections == 2 and not c.closed
            assert await c.set(key, b"hello", ttl=60) is None
            assert await c.get(key) == b"hello"
            buf = bytearray(10)
            assert await c.get(key, buf) == 5 and buf[:5] == b"hello"
            assert await c.exists(key) is True
            with pytest.raises(BufferTooSmallError) as info:
                await c.get(key, bytearray(2))
            assert info.value.needed == 5
            await c.set(key, b"")
            assert await c.get(key) == b"" and await c.get(key, buf) == 0
            assert await c.delete(key) is True and await c.delete(key) is False
            assert await c.get(key) is None and await c.get(key, buf) is None
            assert await c.exists(key) is False
            big = os.urandom(5 * MiB)
            await c.set(key, big)
            assert await c.get(key) == big
            with pytest.raises(TypeError, match="key"):
                await c.get(3)
            with pytest.raises(ValueError, match="read-only"):
                await c.get(key, b"read-only")
            await c.delete(key)
        assert c.closed
        with pytest.raises(ClientClosedError):
            await c.get(key, buf)
        await c.aclose()  # idempotent

    run(main())


def test_many_key_calls_and_their_errors(redis_server, key) -> None:
    keys = [f"{key}:{i}" for i in range(5)]
    values = [os.urandom(n) for n in (0, 10, 1000, MiB, 3 * MiB)]

    async def main():
        async with RedisClient(redis_server.host, redis_server.port) as c:
            await c.set_many(keys, values, ttl=60)
            outs = [bytearray(3 * MiB) for _ in keys]
            assert await c.get_many(keys, outs) == [len(v) for v in values]
            assert all(o[:len(v)] == v for o, v in zip(outs, values))
            assert await c.exists_many(keys + ["nope"]) == [True] * 5 + [False]
            small = [bytearray(100) for _ in keys]
            with pytest.raises(BatchError) as info:
                await c.get_many(iter(keys), small)  # any iterable of keys
            e = info.value
            assert e.results[:2] == [0, 10]
            assert [k for k in e.errors] == keys[2:]
            assert e.results[3].needed == MiB
            block = np.zeros(4 * MiB, dtype=np.uint8)
            sizes = [len(v) for v in values]
            addresses = [block.ctypes.data + i * 800 * 1024 for i in range(5)]
            src = np.frombuffer(values[3], dtype=np.uint8)
            await c.set_many_ptr(keys[3:4], [src.ctypes.data], [MiB])
            assert await c.get_many_ptr(keys[:3], addresses[:3], sizes[:3]) == sizes[:3]
            assert block[800 * 1024:800 * 1024 + 10].tobytes() == values[1]
            with pytest.raises(ValueError, match="differ in length"):
                await c.get_many(keys, outs[:2])
            assert await c.delete_many(keys) == [True] * 5

    run(main())


def test_cancelled_get_many_never_writes_afterwards(make_own_server) -> None:
    server = make_own_server()
    count, size = 8, 16 * MiB
    keys = [f"c{i}" for i in range(count)]
    values = _shifted_values(count, size, 2)
    outs = np.zeros((count, size), dtype=np.uint8)

    async def main(stall: bool):
        # The cancel cuts the stalled reads short; it does not wait out the
        # timeout (test_batch.py, test_cancel_cuts_short_...).
        async with RedisClient(server.host, server.port, timeout=30) as c:
            await c.set_many(keys, values)
            if stall:
                os.kill(server.pid, signal.SIGSTOP)
            try:
                task = asyncio.ensure_future(c.get_many(keys, outs))
                await asyncio.sleep(0.1 if stall else 0.002)
                task.cancel()
                try:
                    await task
                    cancelled = False  # live: it may have finished first
                except asyncio.CancelledError:
                    cancelled = True
                outs[:] = 0x77  # the caller owns its buffer again
                assert cancelled or not stall
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await asyncio.sleep(0.3)
            assert (outs == 0x77).all(), "written after the cancelled await returned"
            # The client works on; the cancelled batch's completion was
            # drained and dropped.
            assert await c.get_many(keys[:2], outs[:2]) == [size, size]
            assert np.array_equal(outs[1], values[1])
            assert c._pending == {}

    run(main(stall=True))
    run(main(stall=False))


def test_cancelled_get_without_buffer(make_own_server) -> None:
    server = make_own_server()

    async def main():
        async with RedisClient(server.host, server.port, timeout=20) as c:
            await c.set("k", os.urandom(8 * MiB))
            os.kill(server.pid, signal.SIGSTOP)
            try:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(c.get("k"), 0.2)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert len(await c.get("k")) == 8 * MiB

    run(main())


def test_loop_keeps_running_during_a_1_gb_batch(redis_server, key) -> None:
    count, size = 32, 32 * MiB
    keys = [f"{key}:{i}" for i in range(count)]
    values = _shifted_values(count, size, 3)
    outs = np.zeros((count, size), dtype=np.uint8)  # 1 GiB
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    async def main():
        async with RedisClient(redis_server.host, redis_server.port) as c:
            t = asyncio.ensure_future(ticker())
            await asyncio.sleep(0.01)
            before = ticks
            await c.set_many(keys, values)
            during_set = ticks - before
            before = ticks
            assert await c.get_many(keys, outs) == [size] * count
            during_get = ticks - before
            t.cancel()
            await c.delete_many(keys)
            return during_set, during_get

    during_set, during_get = run(main())
    # Behaviour, not timing: the loop ran many times while each batch moved.
    assert during_set > 10 and during_get > 10, (during_set, during_get)
    assert np.array_equal(outs[count - 1], values[count - 1])


def test_aclose_completes_calls_in_flight(make_own_server) -> None:
    server = make_own_server()

    async def main():
        c = RedisClient(server.host, server.port, timeout=20)
        await c.set_many(["a", "b"], [b"1" * MiB, b"2" * MiB])
        outs = [bytearray(MiB) for _ in range(4)]
        os.kill(server.pid, signal.SIGSTOP)
        try:
            tasks = [asyncio.ensure_future(c.get("a", outs[0])),
                     asyncio.ensure_future(c.get_many(["a", "b"], outs[1:3])),
                     asyncio.ensure_future(c.exists("b"))]
            await asyncio.sleep(0.1)
            await c.aclose()
            for o in outs:
                o[:] = b"\x11" * MiB
        finally:
            os.kill(server.pid, signal.SIGCONT)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], ClientClosedError)
        assert isinstance(results[1], BatchError)
        assert all(isinstance(e, ClientClosedError) for e in results[1].errors.values())
        assert isinstance(results[2], ClientClosedError)
        await asyncio.sleep(0.2)
        assert all(o == b"\x11" * MiB for o in outs)
        assert c.closed and c._pending == {}
        with pytest.raises(ClientClosedError):
            await c.exists("a")

    run(main())


def test_server_gone_raises_connection_error(own_server) -> None:
    async def main():
        async with RedisClient(own_server.host, own_server.port, timeout=5) as c:
            await c.set("k", b"v")
            own_server.kill()
            with pytest.raises(ConnectionError):
                await c.get("k")
            with pytest.raises(BatchError) as info:
                await c.exists_many(["k", "j"])
            assert all(isinstance(e, ConnectionError) for e in info.value.errors.values())
            own_server.restart()
            assert await c.exists("k") is False

    run(main())


def test_one_client_many_loops_in_turn(redis_server, key) -> None:
    c = RedisClient(redis_server.host, redis_server.port)

    async def use(value: bytes):
        await c.set(key, value)
        return await c.get(key)

    assert asyncio.run(use(b"one")) == b"one"
    assert asyncio.run(use(b"two")) == b"two"  # a new loop after the first closed

    async def finish():
        await c.delete(key)
        await c.aclose()

    asyncio.run(finish())
    assert "lmcache_redis.asyncio.RedisClient(" in repr(c)


def test_the_module_is_documented() -> None:
    import lmcache_redis.asyncio as aio

    assert "cancel" in aio.__doc__ and "add_reader" in aio.__doc__
    assert "unspecified" in RedisClient.__doc__
    for name in ("get", "set", "exists", "delete", "get_many", "set_many", "exists_many",
                 "delete_many", "get_many_ptr", "set_many_ptr", "aclose", "from_url"):
        assert getattr(RedisClient, name).__doc__, name
        if name not in ("aclose", "from_url"):
            assert asyncio.iscoroutinefunction(getattr(RedisClient, name)), name
    assert lmcache_redis.OperationCancelledError.__doc__


def test_readme_asyncio_example_runs(redis_server, key) -> None:
    import subprocess
    import sys

    from test_batch import readme_block

    code = readme_block("asyncio", redis_server.host, redis_server.port, key)
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    with lmcache_redis.RedisClient(redis_server.host, redis_server.port) as c:
        assert c.delete_many([f"{key}-{i}" for i in range(8)]) == [True] * 8


def test_none_for_buffers_is_refused(redis_server, key) -> None:
    # Seen failing before the form was passed explicitly: set_many(keys,
    # None) stored an empty value, get_many(keys, None) was a length probe.
    async def main():
        async with RedisClient(redis_server.host, redis_server.port) as c:
            with pytest.raises(TypeError, match=r"set_many\(keys, buffers\): buffers must be "
                                                r"a sequence of buffers, not NoneType"):
                await c.set_many([key], None)
            assert await c.exists(key) is False
            await c.set(key, b"abc")
            with pytest.raises(TypeError, match=r"get_many\(keys, buffers\): buffers"):
                await c.get_many([key], None)
            with pytest.raises(TypeError, match=r"set_many_ptr\(keys, addresses, sizes\): "
                                                r"addresses must be a sequence of ints"):
                await c.set_many_ptr([key], None, [0])
            assert await c.get(key) == b"abc"
            await c.delete(key)

    run(main())


def test_keys_changed_while_awaiting_change_nothing(redis_server, key) -> None:
    # Seen failing before the asyncio _many calls copied their keys: a list
    # emptied by another task while get_many awaited made its BatchError
    # an IndexError.
    keys = [f"{key}:{i}" for i in range(3)]

    async def main():
        async with RedisClient(redis_server.host, redis_server.port) as c:
            await c.set_many(keys, [b"xx"] * 3)
            mine = list(keys)
            task = asyncio.ensure_future(
                c.get_many(mine, [bytearray(2), bytearray(1), bytearray(2)]))
            await asyncio.sleep(0)  # submitted; now another task changes the list
            mine.clear()
            with pytest.raises(BatchError) as info:
                await task
            assert list(info.value.errors) == [keys[1]]
            assert await c.delete_many(keys) == [True] * 3

    run(main())


def test_argument_errors_name_the_public_call(redis_server, key) -> None:
    # Seen failing before the calls passed their names through: the
    # messages named submit_batch_get(keys, buffers) and buffers[0].
    async def main():
        async with RedisClient(redis_server.host, redis_server.port) as c:
            cases = [
                (c.get(key, b"ro"), ValueError, "get(key, buffer): buffer (bytes) is read-only"),
                (c.set(key, 3), TypeError, "set(key, buffer): buffer must support the buffer"),
                (c.set(key, None), TypeError, "set(key, buffer): buffer must support"),
                (c.exists(7), TypeError, "exists(key): key must be str or bytes, not int"),
                (c.delete(None), TypeError, "delete(key): key must be str or bytes"),
                (c.get(7), TypeError, "get(key): key must be str or bytes, not int"),
                (c.get_many([key, key], [bytearray(1), 3]), TypeError,
                 "get_many(keys, buffers): buffers[1] must support"),
                (c.set_many([key], [b"x", b"y"]), ValueError,
                 "set_many(keys, buffers): keys and buffers differ in length"),
                (c.exists_many("abc"), TypeError, "exists_many(keys): keys must be a sequence"),
                (c.delete_many([1]), TypeError, "delete_many(keys): keys[0] must be str"),
                (c.get_many_ptr([key], [1.5], [1]), TypeError,
                 "get_many_ptr(keys, addresses, sizes): addresses[0] must be an int"),
                (c.set_many_ptr([key], [0], [1]), ValueError,
                 "set_many_ptr(keys, addresses, sizes): addresses[0] is NULL"),
            ]
            for coro, exc, words in cases:
                with pytest.raises(exc) as info:
                    await coro
                assert str(info.value).startswith(words), str(info.value)
                assert "submit_batch" not in str(info.value)
            assert c._pending == {} and c.client.drain_completions() == []

    run(main())


_GET_DESTROYED = r"""
import asyncio, gc, os, signal, sys, time
from lmcache_redis import OperationCancelledError
from lmcache_redis.asyncio import RedisClient

host, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = 8 << 20
c = RedisClient(host, port, timeout=30)
core = c.client


class Stalling:
    # Stops the server just before get(key) submits its read into the new
    # bytes object (the length probe before it is answered).
    def __getattr__(self, name):
        return getattr(core, name)

    def submit_batch_get_ptr(self, keys, addresses, *args, **kwargs):
        if addresses[0] != 0:
            os.kill(pid, signal.SIGSTOP)
        return core.submit_batch_get_ptr(keys, addresses, *args, **kwargs)


c._client = Stalling()
loop = asyncio.new_event_loop()
loop.run_until_complete(c.set("k", b"\x01" * n))
task = loop.create_task(c.get("k"))
loop.run_until_complete(asyncio.sleep(0.3))
assert not task.done()
loop.close()  # with the task pending: then the task, its coroutine and
del task, c   # the asyncio client are garbage, in one cycle
gc.collect()
canary = bytearray(n)
canary[:] = b"\x5a" * n  # most likely where a freed bytes object was
os.kill(pid, signal.SIGCONT)
time.sleep(0.5)
assert canary.count(0x5a) == n, "written after the get(key) was destroyed"
deadline, done = time.monotonic() + 20, []
while len(done) < 1 and time.monotonic() < deadline:
    time.sleep(0.01)
    done += [r for _, r in core.drain_completions()]
assert len(done) == 1 and isinstance(done[0][0], OperationCancelledError), done
print("ok")
"""


def test_a_destroyed_get_without_buffer_writes_nowhere(make_own_server) -> None:
    # Seen failing before the batch owned the bytes it reads into and _run
    # cancelled on GeneratorExit: the read went on into freed memory after
    # the loop closed with the task pending and gc destroyed it.
    import subprocess
    import sys

    server = make_own_server()
    out = subprocess.run([sys.executable, "-c", _GET_DESTROYED, server.host, str(server.port),
                          str(server.pid)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stdout,
                                                                out.stderr[-3000:])


def test_aclose_after_the_client_was_closed_elsewhere(make_own_server) -> None:
    # Seen failing before aclose always drained: closed by the sync client
    # first, aclose removed the reader and left the calls in flight
    # pending for ever.
    server = make_own_server()

    async def main():
        c = RedisClient(server.host, server.port, timeout=20)
        await c.set("a", b"1" * MiB)
        out = bytearray(MiB)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            tasks = [asyncio.ensure_future(c.get("a", out)),
                     asyncio.ensure_future(c.exists_many(["a", "b"]))]
            await asyncio.sleep(0.1)
            c.client.close()  # elsewhere; the loop has not run since
            await c.aclose()
        finally:
            os.kill(server.pid, signal.SIGCONT)
        done, _ = await asyncio.wait(tasks, timeout=10)
        assert len(done) == 2, "calls in flight never completed"
        assert isinstance(tasks[0].exception(), ClientClosedError)
        assert isinstance(tasks[1].exception(), BatchError)
        assert c._pending == {}

    run(main())


def test_a_second_loop_at_once_is_refused(redis_server, key) -> None:
    # Seen failing before _attach held a lock: two loops in two threads
    # both attached (both checked before either set its loop).
    import threading

    c = RedisClient(redis_server.host, redis_server.port)
    core = c.client

    class SlowAttach:
        # Widens the window between _attach's check and its act.
        def __getattr__(self, name):
            return getattr(core, name)

        def event_fd(self):
            time.sleep(0.3)
            return core.event_fd()

    c._client = SlowAttach()
    outcomes: list = []
    both_ready = threading.Barrier(2)

    def use() -> None:
        async def main():
            both_ready.wait(HANG)
            try:
                await c.exists(key)
                await asyncio.sleep(0.5)  # still attached when the other one tries
                outcomes.append("ok")
            except RuntimeError as e:
                outcomes.append(str(e))

        asyncio.run(main())

    threads = [threading.Thread(target=use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG)
    assert outcomes.count("ok") == 1, outcomes
    assert "in use by another event loop; make one client per loop" in \
        [o for o in outcomes if o != "ok"][0]
    asyncio.run(c.aclose())


def test_aclose_from_another_thread_wakes_the_owning_loop(make_own_server) -> None:
    # Seen failing before aclose went through call_soon_threadsafe: it
    # resolved the owning loop's futures from its own thread (a debug loop
    # refuses: "Non-thread-safe operation").
    import threading

    server = make_own_server()
    c = RedisClient(server.host, server.port, timeout=20)
    started = threading.Event()
    outcome: list = []

    def owner() -> None:
        async def main():
            await c.set("a", b"1")
            os.kill(server.pid, signal.SIGSTOP)
            task = asyncio.ensure_future(c.exists_many(["a", "b"]))
            await asyncio.sleep(0.1)
            started.set()
            try:
                await task
                outcome.append("returned")
            except BatchError as e:
                outcome.append([type(x).__name__ for x in e.results])

        asyncio.run(main(), debug=True)

    t = threading.Thread(target=owner)
    t.start()
    try:
        assert started.wait(HANG)
        asyncio.run(c.aclose())
    finally:
        os.kill(server.pid, signal.SIGCONT)
        t.join(10)
    assert not t.is_alive(), "the owning loop's call never completed"
    assert outcome == [["ClientClosedError", "ClientClosedError"]]
    assert c.closed and c._pending == {}


def test_a_drain_that_raised_is_retried(redis_server, key, monkeypatch) -> None:
    # Seen failing before the event fd's reader retried a drain that
    # raised: the completions it kept were not drained until another came,
    # and the call awaiting them hung.
    real, raised = lmcache_redis._core.error_from_code, []

    def fails_once(*args):
        if not raised:
            raised.append(1)
            raise MemoryError("while converting")
        return real(*args)

    async def main():
        async with RedisClient(redis_server.host, redis_server.port) as c:
            await c.set(key, b"xx")
            asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)
            monkeypatch.setattr(lmcache_redis._core, "error_from_code", fails_once)
            with pytest.raises(BufferTooSmallError):
                await asyncio.wait_for(c.get(key, bytearray(1)), 10)
            assert raised
            await c.delete(key)

    run(main())


def test_get_without_buffer_takes_its_attempt_count_from_the_core(redis_server, key,
                                                                   monkeypatch) -> None:
    # One rule for both clients: how many reads get(key) may take. With a
    # single attempt (the read that learns the length), both give up.
    import lmcache_redis._core as core

    sync = lmcache_redis.RedisClient.from_url(redis_server.url, connections=1)
    try:
        sync.set(key, b"hello")
        monkeypatch.setattr(core, "_GET_ATTEMPTS", 1)
        assert sync.get(key) is None

        async def main():
            async with RedisClient.from_url(redis_server.url, connections=1) as c:
                return await c.get(key)

        assert run(main()) is None
        monkeypatch.undo()
        assert sync.get(key) == b"hello" and run(main()) == b"hello"
    finally:
        sync.delete(key)
        sync.close()
