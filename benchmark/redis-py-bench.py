"""Benchmark redis-py, the baseline: SET and GET of KV-cache-sized chunks.

--client-type single-pool (default): one redis.Redis, one key after
another; with --concurrent, redis.asyncio instead: all keys gathered at
once, at most --concurrency (default 8) in flight.
--client-type multi-pool: --pools redis.Redis instances, each with its own
connection pool, used round-robin: one key after another, or from
--threads Python threads with --concurrent (key i goes to instance
i % --pools; "connections" in the output counts the instances).

redis-py's hiredis parser is used when hiredis is installed; the output
says which parser ran. redis-py sends bytes, so the values are made as
bytes before the timing starts; GET returns new bytes objects. The values
sent are freed before the reads (so a run holds one set of values at a
time, not two), and what was read is compared with the values regenerated
from their seeds afterwards, outside the timing (a wrong byte exits with
status 1).

    python benchmark/redis-py-bench.py --client-type single-pool --size-mb 32 --num-chunks 100 --read --concurrent
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Optional

import bench_common
import redis
import redis.asyncio


class Workload:
    """The chunks to write, as the bytes redis-py sends, their keys, and
    the values read back."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # Plus about two values per request in flight: redis-py's reply
        # buffers (measured: 3.7 GiB at 100 x 32 MiB, asyncio, 8 in flight).
        in_flight = (1 if not args.concurrent else args.concurrency
                     if args.client_type == "single-pool" else args.threads or args.pools)
        bench_common.say_memory(args, args.num_chunks + 2 * in_flight,
                                f"{args.num_chunks} x {args.size_mb:g} MiB as bytes: the "
                                "values sent, freed before the reads, then the values read; "
                                "and redis-py's buffers")
        with bench_common.progress(args, args.num_chunks, "making the values") as bar:
            self.blobs: list[bytes] = []
            for i in range(args.num_chunks):  # made untimed
                self.blobs.append(bench_common.chunk_bytes(args, i))
                bar.update(1)
        self.keys = bench_common.make_keys(args)
        self.values: list[Optional[bytes]] = [None] * len(self.keys)

    def release(self) -> None:
        """Free the values sent (the reads need only the keys)."""
        self.blobs = []

    def verify(self, i: int) -> None:
        """Check value i as read against the value written."""
        value = self.values[i]
        bench_common.check_chunk(self.keys[i], bench_common.expected_chunk(self.args, i),
                                 value, None if value is None else len(value))
        self.values[i] = None  # done with it


def parser_name(pool: Any, default_parser: type) -> str:
    """"hiredis" or "python": the reply parser that connections of
    ``pool`` (a sync or asyncio ConnectionPool) are made with."""
    parser_class = pool.connection_kwargs.get("parser_class") or default_parser
    return "hiredis" if "Hiredis" in parser_class.__name__ else "python"


def run_sync(args: argparse.Namespace, host: str, port: int, work: Workload) -> None:
    """single-pool (sequential) or multi-pool (sequential or threads)."""
    count = args.pools if args.client_type == "multi-pool" else 1
    clients = [redis.Redis(host=host, port=port, socket_timeout=args.timeout) for _ in range(count)]
    try:
        for client in clients:
            client.ping()  # connect before the timing
        threads = (args.threads or args.pools) if args.concurrent else None
        n = len(work.keys)

        def put(i: int) -> None:
            clients[i % count].set(work.keys[i], work.blobs[i])

        def fetch(i: int) -> None:
            work.values[i] = clients[i % count].get(work.keys[i])

        meta = dict(client="redis-py", variant=args.client_type + ("+threads" if threads else ""),
                    stripes=None, connections=count, parallelism=threads or 1,
                    parser=parser_name(clients[0].connection_pool,
                                       redis.connection.DefaultParser),
                    pool_backend="bytes")
        bench_common.run(args, meta,
                         write=lambda bar: bench_common.time_ops(put, n, threads, bar),
                         read=lambda bar: bench_common.time_ops(fetch, n, threads, bar),
                         verify=work.verify, cleanup=lambda: clients[0].delete(*work.keys),
                         before_read=work.release)
    finally:
        for client in clients:
            client.close()


def run_asyncio(args: argparse.Namespace, host: str, port: int, work: Workload) -> None:
    """single-pool with --concurrent: redis.asyncio, gather over all keys."""
    limit = args.concurrency
    loop = asyncio.new_event_loop()
    client = redis.asyncio.Redis(host=host, port=port, max_connections=limit,
                                 socket_timeout=args.timeout)

    async def put(i: int) -> None:
        await client.set(work.keys[i], work.blobs[i])

    async def fetch(i: int) -> None:
        work.values[i] = await client.get(work.keys[i])

    async def gather_all(op, bar) -> None:
        in_flight = asyncio.Semaphore(limit)

        async def bounded(i: int) -> None:
            async with in_flight:
                await op(i)
            bar.update(1)

        await asyncio.gather(*(bounded(i) for i in range(len(work.keys))))

    async def connect_all() -> None:
        await asyncio.gather(*(client.ping() for _ in range(limit)))

    def timed(op):
        return lambda bar: bench_common.time_call(
            lambda: loop.run_until_complete(gather_all(op, bar)))

    try:
        loop.run_until_complete(connect_all())  # open the connections before the timing
        meta = dict(client="redis-py", variant="asyncio", stripes=None, connections=limit,
                    parallelism=limit,
                    parser=parser_name(client.connection_pool,
                                       redis.asyncio.connection.DefaultParser),
                    pool_backend="bytes")
        bench_common.run(args, meta, write=timed(put), read=timed(fetch), verify=work.verify,
                         cleanup=lambda: loop.run_until_complete(client.delete(*work.keys)),
                         before_read=work.release)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


def main() -> None:
    parser = bench_common.make_parser(__doc__)
    parser.add_argument("--client-type", choices=("single-pool", "multi-pool"),
                        default="single-pool",
                        help="one redis.Redis (default; asyncio with --concurrent) or "
                             "--pools of them used round-robin")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="asyncio: requests in flight at once (default 8)")
    parser.add_argument("--pools", type=int, default=4,
                        help="multi-pool: redis.Redis instances (default 4)")
    parser.add_argument("--threads", type=int,
                        help="multi-pool with --concurrent: Python threads (default --pools)")
    args = bench_common.parse_args(parser)
    work = Workload(args)
    with bench_common.redis_address(args) as (host, port):
        if args.concurrent and args.client_type == "single-pool":
            run_asyncio(args, host, port, work)
        else:
            run_sync(args, host, port, work)


if __name__ == "__main__":
    main()
