"""Many Python threads sharing clients: every call is thread-safe, and a
read racing writes of one key gets one whole written value or a miss,
never a mix."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lmcache_redis import RedisClient

MiB = 1 << 20
THREADS = 8


def _run_all(*workers) -> list:
    """Runs each callable on its own thread, started together; re-raises
    the first exception; returns their results."""
    start = threading.Barrier(len(workers))

    def wrap(work):
        start.wait()
        return work()

    with ThreadPoolExecutor(len(workers)) as pool:
        futures = [pool.submit(wrap, w) for w in workers]
        return [f.result() for f in futures]


@pytest.mark.parametrize("stripes, connections", [(8, 4), (1, 4), (3, 2)])
def test_threads_share_one_client(clients, key, stripes: int, connections: int) -> None:
    client = clients(stripes, connections)

    def worker(t: int) -> int:
        rng = np.random.default_rng(t)
        done = 0
        for round_ in range(3):
            size = int(rng.integers(1 * MiB, 3 * MiB))
            data = rng.bytes(size)
            k = f"{key}:{t}:{round_}"
            client.set(k, data)
            out = np.empty(size + 10, dtype=np.uint8)
            assert client.get(k, out) == size
            assert out[:size].tobytes() == data
            assert client.delete(k)
            done += 1
        return done

    assert _run_all(*[lambda t=t: worker(t) for t in range(THREADS)]) == [3] * THREADS


@pytest.mark.parametrize(
    "writer_stripes, reader_stripes",
    [((8,), (8,)), ((1,), (1, 8)), ((1, 3, 8), (1, 8, 16))],
    ids=["striped", "plain", "mixed-layouts"],
)
def test_racing_writes_never_mix(redis_server, clients, key, writer_stripes,
                                 reader_stripes) -> None:
    n_writers, n_readers, writes, reads = 4, 4, 15, 30
    # Writer w's j-th value: its own random bytes and its own length, so a
    # mix of two writes could not pass for either.
    base = 256 * 1024
    values = {
        (w, j): np.random.default_rng(1000 * w + j).bytes(base + 8 * w + j)
        for w in range(n_writers) for j in range(writes)
    }
    by_content = {v: wj for wj, v in values.items()}
    longest = max(len(v) for v in values.values())
    clients(writer_stripes[0]).set(key, values[0, 0])

    def writer(w: int) -> int:
        # Its own client: its stripes travel in parallel with the readers'.
        with RedisClient(redis_server.host, redis_server.port, connections=4,
                         stripes=writer_stripes[w % len(writer_stripes)]) as client:
            for j in range(writes):
                client.set(key, values[w, j])
        return writes

    def reader(r: int) -> tuple:
        client = clients(reader_stripes[r % len(reader_stripes)])
        out = bytearray(longest)
        hits = misses = 0
        for _ in range(reads):
            n = client.get(key, out)
            if n is None:
                misses += 1
                continue
            got = bytes(out[:n])
            assert got in by_content, f"read {n} bytes that no writer wrote"
            hits += 1
        return hits, misses

    results = _run_all(*[lambda w=w: writer(w) for w in range(n_writers)],
                       *[lambda r=r: reader(r) for r in range(n_readers)])
    assert results[:n_writers] == [writes] * n_writers
    assert sum(hits for hits, _ in results[n_writers:]) + sum(
        misses for _, misses in results[n_writers:]) == n_readers * reads
    if writer_stripes == (1,):
        # A plain SET is atomic: once the writes stop, the key holds the
        # last value of some writer. (Racing striped writers may leave
        # stripes of different writes behind: a miss, never a mix.)
        out = bytearray(longest)
        for stripes in reader_stripes:
            n = clients(stripes).get(key, out)
            assert n is not None
            assert by_content[bytes(out[:n])][1] == writes - 1
    clients(8).delete(key)


def test_threads_with_distinct_clients_and_deletes(clients, key) -> None:
    # Sets, gets, exists and deletes of a few keys from threads, over
    # clients of different layouts; any hit is a whole value.
    values = [np.random.default_rng(i).bytes(100_000 + i) for i in range(4)]
    keys = [f"{key}:{i}" for i in range(4)]

    def worker(t: int) -> int:
        client = clients((1, 2, 8)[t % 3])
        out = bytearray(200_000)
        for j in range(20):
            i = (t + j) % 4
            op = (t * 7 + j) % 4
            if op == 0:
                client.set(keys[i], values[i])
            elif op == 1:
                client.delete(keys[i])
            elif op == 2:
                client.exists(keys[i])
            else:
                n = client.get(keys[i], out)
                if n is not None:
                    assert bytes(out[:n]) == values[i]
        return 20

    assert _run_all(*[lambda t=t: worker(t) for t in range(THREADS)]) == [20] * THREADS
    for k in keys:
        clients(8).delete(k)
