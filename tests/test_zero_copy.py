"""get receives values in place, and the GIL is released while the C core
works."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from lmcache_redis import RedisClient

MiB = 1 << 20
LMR_HEADER_READ = 512  # csrc/conn.h: the largest read while looking for a reply header


@pytest.fixture(scope="module")
def data_32_mib() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, 32 * MiB, dtype=np.uint8)


@pytest.mark.parametrize("how, stripes, connections", [
    ("get", 1, 1), ("get", 1, 4), ("get", 4, 4), ("get", 8, 8),
    ("get_ptr", 1, 1), ("get_ptr", 8, 4),
])
def test_get_receives_in_place(redis_server, key, data_32_mib, how: str, stripes: int,
                               connections: int) -> None:
    # stats()["bytes_copied"] counts the received value bytes that went
    # through a connection's read-ahead buffer: the bytes that happened to
    # arrive together with a reply's header ("$<len>\r\n"), which is read
    # into that buffer at most LMR_HEADER_READ bytes at a time. Everything
    # else is recv()'d straight into the caller's memory. A get (format 2)
    # reads the first round's 2 replies (GETRANGE of the first bytes,
    # STRLEN), then one reply per part (a verbatim value: one GET), so it
    # copies at most (2 + stripes) * LMR_HEADER_READ bytes, however large
    # the value; a copying client would copy all 32 MiB.
    data = data_32_mib
    size = data.nbytes
    with RedisClient(redis_server.host, redis_server.port, stripes=stripes,
                     connections=connections) as client:
        client.set(key, data)
        out = np.empty(size, dtype=np.uint8)
        before = client.stats()
        if how == "get":
            assert client.get(key, out) == size
        else:
            assert client.get_ptr(key, out.ctypes.data, out.nbytes) == size
        after = client.stats()
        np.testing.assert_array_equal(out, data)
        assert after["bytes_copied"] - before["bytes_copied"] <= (2 + stripes) * LMR_HEADER_READ
        assert after["bytes_received"] - before["bytes_received"] >= size
        assert after["bytes_sent"] == before["bytes_sent"]  # a get sends no value bytes
        client.delete(key)


def test_set_sends_the_value_once(redis_server, key) -> None:
    size = 4 * MiB + 3
    data = np.random.default_rng(6).bytes(size)
    with RedisClient(redis_server.host, redis_server.port, stripes=8) as client:
        before = client.stats()["bytes_sent"]
        client.set(key, data)
        assert client.stats()["bytes_sent"] - before == size
        client.delete(key)


def test_other_threads_run_during_a_get_loop(redis_server, key) -> None:
    size = 8 * MiB
    with RedisClient(redis_server.host, redis_server.port, stripes=8) as client:
        client.set(key, np.random.default_rng(7).bytes(size))
        out = np.empty(size, dtype=np.uint8)
        stop = threading.Event()
        count = 0

        def count_up() -> None:  # pure Python: needs the GIL to make any progress
            nonlocal count
            while not stop.is_set():
                count += 1

        counter = threading.Thread(target=count_up)
        counter.start()
        try:
            for _ in range(20):
                assert client.get(key, out) == size
        finally:
            stop.set()
            counter.join()
        assert count > 0
        client.delete(key)


def test_gil_is_released_while_waiting(own_server, key) -> None:
    # Deterministic: with the server stopped (SIGSTOP), a get cannot finish
    # until this thread resumes the server. If get held the GIL, this
    # thread could not run, and the get would end in TimeoutError instead.
    server = own_server
    with RedisClient(server.host, server.port, stripes=4, timeout=10) as client:
        data = np.random.default_rng(8).bytes(MiB)
        client.set(key, data)
        out = bytearray(MiB)
        os.kill(server.pid, signal.SIGSTOP)
        results: list = []

        def read() -> None:
            try:
                results.append(client.get(key, out))
            except BaseException as e:  # noqa: BLE001 - handed to the test
                results.append(e)

        before = client.stats()["commands"]
        reader = threading.Thread(target=read)
        reader.start()
        try:
            deadline = time.monotonic() + 30  # stops a hang; not a timed assertion
            while client.stats()["commands"] == before:  # the get has sent its GETs
                assert time.monotonic() < deadline
                time.sleep(0.001)
            progress = sum(1 for _ in range(100_000))  # Python work while get waits
            assert progress == 100_000
            assert reader.is_alive() and not results  # get is still inside C
        finally:
            os.kill(server.pid, signal.SIGCONT)
            reader.join()
        assert results == [MiB]
        assert out == data
