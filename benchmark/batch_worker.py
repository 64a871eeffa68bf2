"""One client of the batch comparison (batch_compare.py), in a process of its own.

Started by batch_compare.py, one process per client, all on the same
server; each process keeps its client connected for the whole run and
measures the batches it is told to, one cell at a time, so that only one
client holds a cell's buffers at once. The protocol is one JSON object a
line: the first line out says the client is ready (or why it is not);
then for each line in (a cell: value size, keys per batch, the ops to time
and how often) one line out with the measured rows or an error.

Per cell: the values (bench_common.StampedValues, distinct per key) are
made untimed in one buffer of n x size bytes (redis-py: as bytes); then

* SET, ``reps`` batches of the n keys, each batch to keys of its own
  (written into the empty server; untimed and once when SET is not timed);
* GET, ``reps`` batches into the buffer, zeroed before each, every value
  checked after each (untimed; a wrong byte is an error);
* EXISTS, ``reps`` batches of the n keys, every answer must be True;

and at the end FLUSHALL (untimed), the buffers freed and handed back.
Each timed batch: wall seconds (perf_counter), this process's CPU seconds
(process_time: all its threads) and the server's (INFO cpu user + sys
before and after, over a connection of its own); for the asyncio clients
the loop's worst lag during the call (a ticker task that sleeps 1 ms: the
longest gap between its wake-ups, less the 1 ms).

Clients (--client):

* ``ours-sync``: lmcache_redis.RedisClient ``set_many`` / ``get_many`` /
  ``exists_many``; until those exist, a stand-in (labelled so): 4 Python
  threads calling the single-key ``set`` / ``get`` / ``exists``;
* ``ours-asyncio``: ``await`` lmcache_redis.asyncio.RedisClient's
  ``set_many`` / ``get_many`` / ``exists_many``; until it exists, a
  stand-in: ``run_in_executor`` over 4 threads on the single-key API;
* ``lmcache``: LMCache's C++ RESP client (lmcache 0.5.6), one
  ``submit_batch_set`` / ``submit_batch_get`` / ``submit_batch_exists`` of
  all n keys over --lmcache-workers workers, waiting on its event_fd as
  lmcache-cpp-bench.py does (run under .venv-lmcache's python);
* ``redis-py``: a redis-py (hiredis) pipeline (no transaction) of n
  SET / GET / EXISTS commands on one connection;
* ``redis-py-asyncio``: redis.asyncio, GET and SET gathered over a pool
  with at most 8 in flight (the baseline's asyncio setting); EXISTS as one
  pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("LMCACHE_DISABLE_BANNER", "1")

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import numpy as np  # noqa: E402

import bench_common  # noqa: E402

CLIENTS = ("ours-sync", "ours-asyncio", "lmcache", "redis-py", "redis-py-asyncio")
TICK_S = 0.001
STAND_IN_THREADS = 4
REDIS_PY_ASYNC_IN_FLIGHT = 8


def load_script(name: str, filename: str) -> Any:
    """A neighbouring script whose file name is no module name."""
    spec = importlib.util.spec_from_file_location(name, BENCH / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Batch:
    """A cell's values: ``arrays`` (n rows of size bytes, one allocation),
    and for redis-py the same values as ``bytes``."""

    def __init__(self, values: bench_common.StampedValues, n: int, as_bytes: bool) -> None:
        self.values, self.n = values, n
        self.memory: Optional[np.ndarray] = None
        self.arrays: list[np.ndarray] = []
        self.blobs: Optional[list[bytes]] = None
        if as_bytes:
            # redis-py sends bytes and reads into new bytes: no buffer of ours.
            self.blobs = [values.make(i) for i in range(n)]
            return
        self.memory = np.empty((n, values.size), dtype=np.uint8)
        for i in range(n):
            values.fill(self.memory[i], i)
        self.arrays = list(self.memory)


# --- the clients: set(keys, batch), get(keys, batch) -> per key its length
# (or the bytes read), exists(keys) -> list of bools; each call is one whole
# batch (an asyncio client's returns an awaitable: repeat() and once() await it).

class Client:
    label = ""
    variant = ""
    is_async = False

    def set(self, keys: list[str], batch: Batch) -> None:
        raise NotImplementedError

    def get(self, keys: list[str], batch: Batch) -> list:
        """Reads into batch.arrays; returns per key its length or None."""
        raise NotImplementedError

    def exists(self, keys: list[str]) -> list[bool]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def repeat(self, count: int, call: Callable[[int], Any], tally: "Tally") -> None:
        """``call(rep)`` for rep in range(count), each timed into ``tally``
        (which also runs the untimed steps around each)."""
        for rep in range(count):
            tally.before(rep)
            tally.start()
            result = call(rep)
            tally.stop(None)
            tally.after(rep, result)

    def once(self, call: Callable[[], Any]) -> Any:
        """``call()`` untimed (an asyncio client's awaitable, awaited)."""
        return call()


class OursSync(Client):
    label = "ours sync"

    def __init__(self, host: str, port: int, timeout: float) -> None:
        import lmcache_redis
        self.c = lmcache_redis.RedisClient(host, port, timeout=timeout)
        self.batch_api = hasattr(self.c, "get_many")
        if self.batch_api:
            self.variant = "set_many / get_many / exists_many"
        else:
            self.label = "ours sync STAND-IN"
            self.variant = (f"stand-in: {STAND_IN_THREADS} Python threads on the single-key "
                            "set / get / exists (no set_many / get_many yet)")
            self.pool = ThreadPoolExecutor(STAND_IN_THREADS)

    def set(self, keys, batch):
        if self.batch_api:
            self.c.set_many(keys, batch.arrays)
        else:
            list(self.pool.map(self.c.set, keys, batch.arrays))

    def get(self, keys, batch):
        if self.batch_api:
            return self.c.get_many(keys, batch.arrays)
        return list(self.pool.map(self.c.get, keys, batch.arrays))

    def exists(self, keys):
        if self.batch_api:
            return self.c.exists_many(keys)
        return list(self.pool.map(self.c.exists, keys))

    def close(self):
        self.c.close()


class AsyncClient(Client):
    """An asyncio client: its own loop, and a ticker task beside each
    timed call to measure how long the loop was kept from running."""

    is_async = True

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def repeat(self, count, call, tally):
        """As Client.repeat, all in one run of the loop, with a ticker task
        beside: while a call is awaited, the longest gap between the
        ticker's wake-ups (less its 1 ms sleep) is the loop's worst lag
        during that call. The untimed steps between calls (INFO, zeroing,
        checking) block the loop and are not counted."""
        state = dict(active=False, last=0.0, worst=0.0)

        async def ticker():
            while True:
                await asyncio.sleep(TICK_S)
                now = time.perf_counter()
                if state["active"]:
                    state["worst"] = max(state["worst"], now - state["last"] - TICK_S)
                state["last"] = now

        async def all_reps():
            task = asyncio.ensure_future(ticker())
            await asyncio.sleep(0)  # the ticker is running before the first call
            try:
                for rep in range(count):
                    tally.before(rep)
                    tally.start()
                    state.update(active=True, last=time.perf_counter(), worst=0.0)
                    result = await call(rep)
                    now = time.perf_counter()
                    state["active"] = False
                    tally.stop(max(state["worst"], now - state["last"] - TICK_S, 0.0))
                    tally.after(rep, result)
            finally:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.loop.run_until_complete(all_reps())

    def once(self, call):
        async def await_it():
            return await call()
        return self.loop.run_until_complete(await_it())


class OursAsyncio(AsyncClient):
    label = "ours asyncio"

    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__()
        import lmcache_redis
        try:
            import lmcache_redis.asyncio as lmr_asyncio
        except ImportError:
            lmr_asyncio = None
        self.batch_api = lmr_asyncio is not None and hasattr(lmr_asyncio, "RedisClient")
        if self.batch_api:
            self.variant = "await set_many / get_many / exists_many"

            async def make():
                return lmr_asyncio.RedisClient(host, port, timeout=timeout)
            self.c = self.loop.run_until_complete(make())
        else:
            self.label = "ours asyncio STAND-IN"
            self.variant = (f"stand-in: run_in_executor over {STAND_IN_THREADS} threads on "
                            "the single-key API (no lmcache_redis.asyncio yet)")
            self.c = lmcache_redis.RedisClient(host, port, timeout=timeout)
            self.pool = ThreadPoolExecutor(STAND_IN_THREADS)

    def _each(self, fn, *columns):
        return asyncio.gather(*(self.loop.run_in_executor(self.pool, fn, *args)
                                for args in zip(*columns)))

    def set(self, keys, batch):
        if self.batch_api:
            return self.c.set_many(keys, batch.arrays)
        return self._each(self.c.set, keys, batch.arrays)

    def get(self, keys, batch):
        if self.batch_api:
            return self.c.get_many(keys, batch.arrays)
        return self._each(self.c.get, keys, batch.arrays)

    def exists(self, keys):
        if self.batch_api:
            return self.c.exists_many(keys)
        return self._each(self.c.exists, keys)

    def close(self):
        if self.batch_api:
            self.loop.run_until_complete(self.c.aclose())
        else:
            self.c.close()
        self.loop.close()


class LMCache(Client):
    label = "LMCache C++"

    def __init__(self, host: str, port: int, timeout: float, workers: int) -> None:
        from lmcache.lmcache_redis import LMCacheRedisClient
        peer = load_script("lmcache_cpp_bench", "lmcache-cpp-bench.py")
        self.byte_view = peer.byte_view
        self.c = LMCacheRedisClient(host, port, workers)
        self.waiter = peer.Waiter(self.c, timeout)
        self.variant = f"submit_batch_set / _get / _exists, {workers} workers"
        if workers != 8:
            self.label = f"LMCache C++ {workers}w"
        self._views: dict[int, list] = {}

    def views(self, batch):
        if id(batch) not in self._views:
            self._views = {id(batch): [self.byte_view(a) for a in batch.arrays]}
        return self._views[id(batch)]

    def set(self, keys, batch):
        self.waiter.wait(self.c.submit_batch_set(keys, self.views(batch)),
                         f"SET of {len(keys)} keys")

    def get(self, keys, batch):
        # Waiter fails the run unless every key was read whole (its mask).
        self.waiter.wait(self.c.submit_batch_get(keys, self.views(batch)),
                         f"GET of {len(keys)} keys")
        return [batch.values.size] * len(keys)

    def exists(self, keys):
        _, ok, error, mask = self.waiter.wait(self.c.submit_batch_exists(keys),
                                              f"EXISTS of {len(keys)} keys")
        return [bool(x) for x in mask]

    def close(self):
        self._views = {}
        self.c.close()


class RedisPy(Client):
    label = "redis-py pipeline"
    variant = "pipeline(transaction=False) of n commands, one connection"

    def __init__(self, host: str, port: int, timeout: float) -> None:
        import redis
        self.r = redis.Redis(host=host, port=port, socket_timeout=timeout)
        self.r.ping()

    def _pipe(self, command: str, *columns) -> list:
        pipe = self.r.pipeline(transaction=False)
        for args in zip(*columns):
            getattr(pipe, command)(*args)
        return pipe.execute()

    def set(self, keys, batch):
        self._pipe("set", keys, batch.blobs)

    def get(self, keys, batch):
        return self._pipe("get", keys)

    def exists(self, keys):
        return [bool(x) for x in self._pipe("exists", keys)]

    def close(self):
        self.r.close()


class RedisPyAsyncio(AsyncClient):
    label = "redis-py asyncio"
    variant = (f"redis.asyncio: GET/SET gathered, at most {REDIS_PY_ASYNC_IN_FLIGHT} in "
               "flight; EXISTS one pipeline")

    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__()
        import redis.asyncio
        self.r = redis.asyncio.Redis(host=host, port=port, socket_timeout=timeout,
                                     max_connections=REDIS_PY_ASYNC_IN_FLIGHT)

        async def connect():
            await asyncio.gather(*(self.r.ping() for _ in range(REDIS_PY_ASYNC_IN_FLIGHT)))
        self.loop.run_until_complete(connect())

    def _gather(self, op, *columns):
        async def all_():
            gate = asyncio.Semaphore(REDIS_PY_ASYNC_IN_FLIGHT)

            async def one(*args):
                async with gate:
                    return await op(*args)
            return await asyncio.gather(*(one(*args) for args in zip(*columns)))
        return all_()

    def set(self, keys, batch):
        return self._gather(self.r.set, keys, batch.blobs)

    def get(self, keys, batch):
        return self._gather(self.r.get, keys)

    def exists(self, keys):
        async def pipe():
            p = self.r.pipeline(transaction=False)
            for key in keys:
                p.exists(key)
            return [bool(x) for x in await p.execute()]
        return pipe()

    def close(self):
        self.loop.run_until_complete(self.r.aclose())
        self.loop.close()


def make_client(args: argparse.Namespace, host: str, port: int) -> Client:
    if args.client == "ours-sync":
        return OursSync(host, port, args.timeout)
    if args.client == "ours-asyncio":
        return OursAsyncio(host, port, args.timeout)
    if args.client == "lmcache":
        return LMCache(host, port, args.timeout, args.lmcache_workers)
    if args.client == "redis-py":
        return RedisPy(host, port, args.timeout)
    return RedisPyAsyncio(host, port, args.timeout)


# --- one cell ---------------------------------------------------------------

class Server:
    """A connection of its own to the server, for INFO cpu and FLUSHALL."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=60)

    def cpu(self) -> Optional[float]:
        return bench_common.info_cpu_seconds(self.sock)

    def flushall(self) -> None:
        bench_common._resp_command(self.sock, "FLUSHALL")


class Tally:
    """One row's timed calls summed: wall and this process's CPU seconds,
    the server's CPU seconds (INFO before and after each call, untimed),
    and each call's loop lag; with the untimed steps around each call."""

    def __init__(self, server: Server, before: Optional[Callable[[int], None]],
                 after: Optional[Callable[[int, Any], None]]) -> None:
        self.server, self._before, self._after = server, before, after
        self.wall = self.cpu = 0.0
        self.server_cpu: Optional[float] = 0.0
        self.lags: list[float] = []

    def before(self, rep: int) -> None:
        if self._before is not None:
            self._before(rep)
        self._s0 = self.server.cpu()

    def start(self) -> None:
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self, lag: Optional[float]) -> None:
        t1 = time.perf_counter()
        c1 = time.process_time()
        self.wall += t1 - self._t0
        self.cpu += c1 - self._c0
        if lag is not None:
            self.lags.append(lag)

    def after(self, rep: int, result: Any) -> None:
        s1 = self.server.cpu()
        if self.server_cpu is None or self._s0 is None or s1 is None:
            self.server_cpu = None
        else:
            self.server_cpu += s1 - self._s0
        if self._after is not None:
            self._after(rep, result)


def run_cell(client: Client, server: Server, cell: dict) -> list[dict]:
    size, n, reps = cell["size"], cell["n"], cell["reps"]
    values = bench_common.StampedValues(size)
    batch = Batch(values, n, as_bytes=isinstance(client, (RedisPy, RedisPyAsyncio)))
    prefix = cell["prefix"]

    def keys_of(rep: int) -> list[str]:
        return [f"{prefix}{rep}:{i}" for i in range(n)]

    rows = []

    def timed(op: str, count: int, call: Callable[[int], Any],
              before: Optional[Callable[[int], None]] = None,
              after: Optional[Callable[[int, Any], None]] = None) -> None:
        tally = Tally(server, before, after)
        client.repeat(count, call, tally)
        rows.append(dict(op=op, reps=count, seconds=tally.wall, cpu_seconds=tally.cpu,
                         server_cpu_seconds=tally.server_cpu, keys=n * count,
                         bytes=(n * count * size if op != "exists" else 0),
                         loop_lag_max_s=max(tally.lags) if tally.lags else None))

    try:
        set_reps = reps.get("set", 0)
        if set_reps:
            timed("set", set_reps, lambda rep: client.set(keys_of(rep), batch))
        else:
            client.once(lambda: client.set(keys_of(0), batch))
        if reps.get("get"):
            if batch.blobs is not None:
                batch.blobs = None  # redis-py: the values sent, freed before the reads
                bench_common.release_memory()

            def zero(rep: int) -> None:
                if batch.memory is not None:
                    batch.memory.fill(0)

            def check(rep: int, got: list) -> None:
                if len(got) != n:
                    bench_common.fail(f"GET of {n} keys: {len(got)} results")
                for i, key in enumerate(keys_of(rep)):
                    if isinstance(got[i], (bytes, bytearray, memoryview)):  # redis-py
                        values.check(key, i, got[i], len(got[i]))
                    else:
                        values.check(key, i, batch.arrays[i], got[i])
                got.clear()

            timed("get", reps["get"], lambda rep: client.get(keys_of(rep), batch),
                  before=zero, after=check)
        if reps.get("exists"):
            def all_found(rep: int, got: list) -> None:
                if len(got) != n or not all(got):
                    missing = [k for k, f in zip(keys_of(0), got) if not f][:3]
                    bench_common.fail(f"EXISTS of {n} keys: {n - sum(map(bool, got))} "
                                      f"not found, e.g. {missing}")

            timed("exists", reps["exists"], lambda rep: client.exists(keys_of(0)),
                  after=all_found)
    finally:
        server.flushall()
        del batch
        if isinstance(client, LMCache):
            client._views = {}
        bench_common.release_memory()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client", choices=CLIENTS, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=120,
                    help="seconds one batch may take (default 120)")
    ap.add_argument("--lmcache-workers", type=int, default=8)
    args = ap.parse_args()
    out = sys.stdout
    # Nothing else may write to the protocol's stdout (LMCache logs, prints).
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        client = make_client(args, args.host, args.port)
        server = Server(args.host, args.port)
    except BaseException as exc:  # noqa: BLE001 (said on the protocol, then exit)
        send(dict(error=f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1)
    send(dict(ready=True, label=client.label, variant=client.variant, pid=os.getpid()))
    for line in sys.stdin:
        cell = json.loads(line)
        if cell.get("quit"):
            break
        try:
            send(dict(rows=run_cell(client, server, cell)))
        except BaseException as exc:  # noqa: BLE001 (one cell's failure, reported)
            traceback.print_exc()
            send(dict(error=f"{type(exc).__name__}: {exc}"))
            if not isinstance(exc, (Exception, SystemExit)):
                raise
    client.close()


if __name__ == "__main__":
    main()
