"""What the client benchmarks (``*-bench.py``) share.

* the command-line flags common to all of them (``make_parser``,
  ``parse_args``) and the server they talk to (``redis_address``: the one
  given by --host/--port, or a throwaway ``redis-server``);
* the test data: a ``PagedPool`` whose first --num-chunks objects hold
  random bytes (``make_pool``) and the keys (``make_keys``);
* timing: wall seconds of the timed section, client CPU seconds
  (``time.process_time()``: user + sys of this whole process, all its
  threads, C worker threads included) and, for sequential runs, each op's
  latency (``time_ops``, ``time_call``);
* verification of what was read (``check_chunk``): a wrong byte ends the
  run with exit status 1;
* the driver (``run``): the writes (timed with --write, untimed otherwise,
  since the reads need the keys; with --overwrite an untimed pass first), then the timed reads and their
  verification, then deleting the keys; and the result printing, as text
  or one JSON object per op per line (--json).

JSON fields: client, overwrite, variant, op ("set"/"get"), size_bytes,
num_chunks, concurrent, stripes, connections, seconds, cpu_seconds, gb_per_s,
gib_per_s, cpu_s_per_gb, latency_median_s (null when concurrent), parser
(redis-py's "hiredis"/"python", else null), parallelism (threads or tasks
in flight; 1 when sequential), pool_backend. Fields that do not apply to
a client are null. GB is 10**9 bytes, GiB 2**30.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Callable, NoReturn, Optional

import numpy as np

from paged_pool import PagedPool

from lmcache_redis._testing import RedisServer

MiB = 1 << 20
GB = 10**9
GiB = 1 << 30
DEFAULT_PORT = 6379


def make_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every client benchmark has."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size-mb", "--value-size-mb", dest="size_mb", type=float, default=32.0,
        help="size of each value (one KV chunk) in MiB (default 32: LMCache's chunk "
             "(num_layers=32, 2, chunk_tokens=256, num_kv_heads=8, head_size=128) in "
             "bfloat16. The reference shape (32, 2, 256, 8, 4096) would make 1 GiB "
             "chunks: its last dimension must be the head size, 128, not the hidden "
             "size 4096). Other sizes just set the bytes per value.")
    parser.add_argument("--num-chunks", type=int, default=20,
                        help="number of values (keys), default 20")
    parser.add_argument("--write", action="store_true",
                        help="time the writes (SET); with neither --write nor --read, both")
    parser.add_argument("--read", action="store_true",
                        help="time the reads (GET); the keys are written first anyway")
    parser.add_argument("--concurrent", action="store_true",
                        help="keep many keys in flight at once instead of one after another")
    parser.add_argument("--host", help="use this Redis server (default: start a throwaway "
                                       "redis-server and stop it at the end)")
    parser.add_argument("--port", type=int,
                        help=f"its port (default {DEFAULT_PORT}; only with --host)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one operation may take (default 30)")
    parser.add_argument("--key-prefix", default="bench:",
                        help="keys are PREFIX0, PREFIX1, ... (default 'bench:'); they are "
                             "overwritten and deleted")
    parser.add_argument("--overwrite", action="store_true",
                        help="write every key once untimed, then time writing them again: "
                             "the steady state of a full cache, where the server reuses "
                             "the memory of the values it replaces instead of faulting in "
                             "fresh pages")
    parser.add_argument("--no-verify", action="store_true",
                        help="don't compare what was read with what was written (only for "
                             "servers that don't store, such as tools/null_server.c)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per op per line instead of text")
    return parser


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse and check the command line; adds ``size_bytes``. Neither
    --read nor --write means both."""
    args = parser.parse_args()
    if not args.read and not args.write:
        args.read = args.write = True
    if args.port is not None and args.host is None:
        parser.error("--port needs --host (without --host a throwaway server is started)")
    if args.num_chunks < 1:
        parser.error("--num-chunks must be at least 1")
    args.size_bytes = int(args.size_mb * MiB)
    if args.size_bytes <= 0 or args.size_bytes % 2:
        parser.error(f"--size-mb must give a positive even number of bytes, "
                     f"not {args.size_bytes}")
    return args


@contextlib.contextmanager
def redis_address(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    """``(host, port)`` of --host/--port, or of a throwaway redis-server
    that runs for the duration of the ``with`` block."""
    if args.host is not None:
        yield args.host, DEFAULT_PORT if args.port is None else args.port
        return
    with RedisServer() as server:
        yield server.host, server.port


def make_pool(args: argparse.Namespace, copies: int) -> PagedPool:
    """A pool of ``copies * num_chunks`` objects of --size-mb; the first
    ``num_chunks`` (the values to write) are filled with random bytes, a
    different pattern for each. The others are left zeroed, to read into."""
    pool = PagedPool(copies * args.num_chunks, args.size_bytes)
    rng = np.random.default_rng(0)
    for obj in pool.objects[:args.num_chunks]:
        obj.view[:] = rng.integers(0, 256, obj.nbytes, dtype=np.uint8)
    return pool


def make_keys(args: argparse.Namespace) -> list[str]:
    """The --num-chunks keys, in chunk order."""
    return [f"{args.key_prefix}{i}" for i in range(args.num_chunks)]


@dataclass
class Timing:
    """One timed section: wall and client CPU seconds, and each op's
    latency in seconds when the ops ran one after another (else None)."""

    seconds: float
    cpu_seconds: float
    latencies: Optional[list[float]] = None


def time_call(section: Callable[[], None]) -> Timing:
    """Time ``section()`` as one block (e.g. an asyncio gather)."""
    wall, cpu = time.perf_counter(), time.process_time()
    section()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def time_ops(op: Callable[[int], None], n: int, threads: Optional[int] = None) -> Timing:
    """Time ``op(i)`` for ``i`` in ``range(n)``.

    ``threads=None``: one after another in this thread, each op's latency
    recorded. Else ``threads`` Python threads, started and parked before the
    clock starts; item ``i`` goes to thread ``i % threads``, so ``op`` may
    pick a per-thread resource as ``resources[i % threads]``. The first
    exception raised in any thread is re-raised here.
    """
    if threads is None:
        latencies = []
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            start = time.perf_counter()
            op(i)
            latencies.append(time.perf_counter() - start)
        return Timing(time.perf_counter() - wall, time.process_time() - cpu, latencies)

    start_line = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(first: int) -> None:
        start_line.wait()
        try:
            for i in range(first, n, threads):
                op(i)
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    start_line.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.join()
    timing = Timing(time.perf_counter() - wall, time.process_time() - cpu)
    if errors:
        raise errors[0]
    return timing


def fail(message: str) -> NoReturn:
    """End the run with exit status 1 (cleanup in ``finally`` still runs)."""
    raise SystemExit(f"FAIL: {message}")


def check_chunk(key: str, expected: np.ndarray, got: Any, length: Optional[int]) -> None:
    """Check one read: ``length`` (None for a miss) must be the size of
    ``expected`` and the first ``length`` bytes of buffer ``got`` equal to
    it. Anything else ends the run via ``fail``."""
    if length is None:
        fail(f"{key}: a miss, the value written was not found")
    if length != expected.nbytes:
        fail(f"{key}: read {length} bytes, wrote {expected.nbytes}")
    data = np.frombuffer(got, dtype=np.uint8, count=length)
    if not np.array_equal(data, expected):
        offset = int(np.flatnonzero(data != expected)[0])
        fail(f"{key}: wrong byte at offset {offset}: read {data[offset]}, "
             f"wrote {expected[offset]}")


@dataclass
class Result:
    """One op's measurement; ``asdict`` of it is the JSON line."""

    client: str
    overwrite: bool
    variant: str
    op: str
    size_bytes: int
    num_chunks: int
    concurrent: bool
    stripes: Optional[int]
    connections: Optional[int]
    seconds: float
    cpu_seconds: float
    gb_per_s: float
    gib_per_s: float
    cpu_s_per_gb: float
    latency_median_s: Optional[float]
    parser: Optional[str]
    parallelism: int
    pool_backend: str

    def text(self) -> str:
        """The human-readable line."""
        total = self.size_bytes * self.num_chunks
        line = (f"{'Write' if self.op == 'set' else 'Read'} {total / GB:.2f} GB in "
                f"{self.seconds:.2f} s: {self.gb_per_s:.2f} GB/s ({self.gib_per_s:.2f} GiB/s), "
                f"client CPU {self.cpu_seconds:.2f} s ({self.cpu_s_per_gb:.2f} s/GB)")
        if self.latency_median_s is not None:
            line += f", median latency {self.latency_median_s * 1e3:.1f} ms"
        return line


def describe(meta: dict[str, Any], args: argparse.Namespace) -> str:
    """The header line of the text output: what ran, with which settings."""
    size = (f"{args.size_bytes // MiB} MiB" if args.size_bytes % MiB == 0
            else f"{args.size_bytes} bytes")
    settings = [f"{name} {meta[name]}" for name in
                ("stripes", "connections", "parallelism", "parser", "pool_backend")
                if meta[name] is not None]
    return (f"{meta['client']} {meta['variant']}: {args.num_chunks} x {size}, "
            + ", ".join(settings))


def run(args: argparse.Namespace, meta: dict[str, Any], *,
        write: Callable[[], Timing], read: Callable[[], Timing],
        verify: Callable[[], None], cleanup: Callable[[], None]) -> None:
    """Run and report one benchmark.

    Args:
        meta: the Result fields that describe the client: client, variant,
            stripes, connections, parser, parallelism, pool_backend.
        write: writes every chunk; timed and reported with --write.
        read: reads every chunk back; timed and reported with --read.
        verify: checks what ``read`` got (with ``check_chunk``); untimed.
        cleanup: deletes the keys; runs even when the rest failed.
    """
    if not args.json:
        print(describe(meta, args), flush=True)
    try:
        if args.write and args.overwrite:
            write()  # untimed: the server allocates the values' memory here
        if args.write:
            report(args, meta, "set", write())
        elif args.read:
            write()  # untimed: the reads need the keys
        if args.read:
            timing = read()
            if not args.no_verify:
                verify()
            report(args, meta, "get", timing)
    finally:
        cleanup()


def report(args: argparse.Namespace, meta: dict[str, Any], op: str, timing: Timing) -> None:
    """Print one op's Result as text or as a JSON line."""
    total = args.size_bytes * args.num_chunks
    result = Result(
        op=op, size_bytes=args.size_bytes, num_chunks=args.num_chunks,
        overwrite=args.overwrite, concurrent=args.concurrent, seconds=timing.seconds, cpu_seconds=timing.cpu_seconds,
        gb_per_s=total / GB / timing.seconds, gib_per_s=total / GiB / timing.seconds,
        cpu_s_per_gb=timing.cpu_seconds / (total / GB),
        latency_median_s=statistics.median(timing.latencies) if timing.latencies else None,
        **meta)
    print(json.dumps(asdict(result)) if args.json else result.text(), flush=True)

