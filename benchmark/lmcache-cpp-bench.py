"""Benchmark LMCache's own C++ RESP client: SET and GET of KV-cache chunks.

The peer that LMCache users run today: ``LMCacheRedisClient(host, port,
num_workers)`` from ``lmcache.lmcache_redis`` (the ``lmcache==0.5.6``
wheel), driven as LMCache's L2 adapter drives it: ``submit_batch_set`` /
``submit_batch_get`` of keys and ``'<B'`` memoryviews over the pool objects
(``memoryview((c_ubyte * n).from_address(addr))``, as LMCache's
``obj.byte_array``), then waiting on ``event_fd`` and ``drain_completions``
for that batch's future id. Each value is stored verbatim under its key.

It runs in .venv-lmcache (benchmark/lmcache_venv.py makes it)::

    .venv-lmcache/bin/python benchmark/lmcache-cpp-bench.py --size-mb 32 --num-chunks 20

Sequential (default): one key per submit, the next submitted when the last
completed (a 1-key batch uses one of its connections; each op's latency is
recorded). --concurrent: all keys in one batch, which it tiles over
min(num_workers, keys) worker threads, one connection each.

Writes go from the objects of one paged pool, the reads land in the same
objects, zeroed in between; what was read is compared with what was
written outside the timing (a wrong byte exits with status 1). It only
GETs keys it wrote: LMCache 0.5.6's worker blocks forever on a GET miss.
Its client has no timeouts: when a batch does not complete within
--timeout seconds, the script says so and exits with status 3 without
waiting for its workers.
"""

from __future__ import annotations

import ctypes
import os
import select
import sys
import time
from pathlib import Path
from typing import Any, Optional

# Before anything imports lmcache: no usage reports leave the machine.
os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("LMCACHE_DISABLE_BANNER", "1")

# The repo root: bench_common's tools/local_redis.py imports lmcache_redis._testing
# (this repo's, built in place), which this venv does not have installed.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import bench_common  # noqa: E402

CLIENT = "LMCache C++ (resp)"
VARIANTS = {False: "1 key per submit", True: "all keys in one batch"}
HUNG_EXIT = 3


def byte_view(view: Any) -> memoryview:
    """A writable ``'<B'`` memoryview of a C-contiguous uint8 array's bytes,
    as LMCache hands its L2 clients (``MemoryObj.byte_array``)."""
    return memoryview((ctypes.c_ubyte * view.nbytes).from_address(view.ctypes.data))


class Waiter:
    """Waits for future ids of one LMCacheRedisClient: polls its event_fd,
    drains every completion, keeps those not yet asked for."""

    def __init__(self, client: Any, timeout: float) -> None:
        self.client, self.timeout = client, timeout
        self.poll = select.poll()
        self.poll.register(client.event_fd(), select.POLLIN)
        self.done: dict[int, tuple] = {}

    def wait(self, future: int, what: str) -> tuple:
        """``(future_id, ok, error, mask)`` of ``future``; a failed one ends the run."""
        deadline = time.monotonic() + self.timeout
        while future not in self.done:
            left = deadline - time.monotonic()
            if left <= 0:
                # Its workers have no timeouts and close() would wait for them.
                print(f"FAIL: {what}: LMCache's client did not complete within "
                      f"{self.timeout:g} s (its workers have no timeouts); exiting without "
                      "waiting for them", file=sys.stderr, flush=True)
                os._exit(HUNG_EXIT)
            self.poll.poll(min(left, 0.5) * 1000)
            for completion in self.client.drain_completions():
                self.done[completion[0]] = completion
        completion = self.done.pop(future)
        _, ok, error, mask = completion
        if not ok or (mask is not None and not all(mask)):
            bench_common.fail(f"{what}: ok={ok} error={error!r} mask={mask}")
        return completion


def main() -> None:
    parser = bench_common.make_parser(__doc__)
    parser.add_argument("--num-workers", type=int, default=8,
                        help="LMCacheRedisClient's worker threads, one connection each "
                             "(default 8, its own default; 4 to match lmcache_redis's "
                             "connections)")
    args = bench_common.parse_args(parser)
    if args.num_workers < 1:
        parser.error("--num-workers must be at least 1")

    from lmcache.lmcache_redis import LMCacheRedisClient

    n = args.num_chunks
    pool = bench_common.make_pool(args)
    objects = pool.objects
    views = [byte_view(obj.view) for obj in objects]
    keys = bench_common.make_keys(args)

    with bench_common.redis_address(args) as (host, port):
        client = LMCacheRedisClient(host, port, args.num_workers)
        waiter = Waiter(client, args.timeout)
        try:
            def one(submit: Any, i: int, what: str) -> None:
                waiter.wait(submit([keys[i]], [views[i]]), f"{what} {keys[i]}")

            def phase(submit: Any, what: str) -> Any:
                def timed(bar: Any) -> bench_common.Timing:
                    if not args.concurrent:
                        return bench_common.time_ops(lambda i: one(submit, i, what), n, None, bar)
                    timing = bench_common.time_call(
                        lambda: waiter.wait(submit(keys, views[:n]), f"{what} of {n} keys"))
                    bar.update(n)
                    return timing
                return timed

            def verify(i: int) -> None:
                # The mask said every key was read in full (Waiter checked it).
                bench_common.check_chunk(keys[i], bench_common.expected_chunk(args, i),
                                         objects[i].view, objects[i].nbytes)

            def cleanup() -> None:
                waiter.wait(client.submit_batch_delete(keys), "DEL")

            meta = dict(client=CLIENT, variant=VARIANTS[args.concurrent], stripes=None,
                        connections=args.num_workers, parser=None,
                        parallelism=min(args.num_workers, n) if args.concurrent else 1,
                        pool_backend=pool.backend)
            bench_common.run(args, meta,
                             write=phase(client.submit_batch_set, "SET"),
                             read=phase(client.submit_batch_get, "GET"),
                             verify=verify, cleanup=cleanup,
                             before_read=lambda: bench_common.zero_objects(args, objects))
        finally:
            client.close()


if __name__ == "__main__":
    main()
