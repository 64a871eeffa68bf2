"""What the client benchmarks (``*-bench.py``) share.

* the command-line flags common to all of them (``make_parser``,
  ``parse_args``) and the server they talk to (``redis_address``: the one
  given by --host/--port, --port alone meaning localhost, or a throwaway
  tuned ``redis-server`` from tools/local_redis.py); which server it is
  (version, address, settings, started here or not) is printed first;
* the test data: value ``i`` is ``chunk_bytes(args, i)``, random bytes from
  a seed of its own, so a check regenerates it instead of keeping a copy;
  a ``PagedPool`` of --num-chunks objects holds them (``make_pool``), the
  same objects the reads land in (one pool for both phases: zeroed
  between them), and the keys (``make_keys``);
* what a run will hold in memory, said before it starts (``say_memory``),
  and progress bars on stderr for every phase (``progress``; off with
  --json or --no-progress);
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
in flight; 1 when sequential), pool_backend, server_cpu_s_per_gb (with
--server-cpu: the server's CPU seconds, user + sys from INFO cpu before and
after the timed section, per GB moved; else null). Fields that do not apply to
a client are null. GB is 10**9 bytes, GiB 2**30.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import numpy as np

from paged_pool import PagedPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import local_redis  # noqa: E402  (tools/, put on the path above)

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
    parser.add_argument("--host", help="use this Redis server (default: localhost when --port "
                                       "is given, else start a throwaway tuned redis-server "
                                       "(tools/local_redis.py) and stop it at the end)")
    parser.add_argument("--port", type=int,
                        help=f"its port (default {DEFAULT_PORT}); --port alone means a server "
                             "on localhost")
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
                        help="print one JSON object per op per line instead of text "
                             "(no progress bars; the server line goes to stderr)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars")
    parser.add_argument("--server-cpu", action="store_true",
                        help="also report the server's CPU seconds per GB of each timed "
                             "section (INFO cpu before and after it, untimed)")
    return parser


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse and check the command line; adds ``size_bytes``. Neither
    --read nor --write means both."""
    return check_args(parser, parser.parse_args())


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """parse_args' checks and defaults on parsed ``args``."""
    if not args.read and not args.write:
        args.read = args.write = True
    if args.port is not None and args.host is None:
        args.host = "localhost"  # --port alone: a server on this machine
    if args.num_chunks < 1:
        parser.error("--num-chunks must be at least 1")
    args.size_bytes = int(args.size_mb * MiB)
    if args.size_bytes <= 0 or args.size_bytes % 2:
        parser.error(f"--size-mb must give a positive even number of bytes, "
                     f"not {args.size_bytes}")
    return args


def info(message: str, args: argparse.Namespace) -> None:
    """A line for the person running the script: stdout with text output,
    stderr with --json (whose stdout is for the JSON lines only)."""
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def progress(args: argparse.Namespace, total: int, desc: str, unit: str = "value") -> Any:
    """A tqdm progress bar on stderr (update(n), close(); a context
    manager), or one that shows nothing with --json / --no-progress or
    when tqdm is missing."""
    if not (args.json or args.no_progress):
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                        mininterval=0.5)
    return _NoProgress()


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _resp_command(sock: socket.socket, *parts: str) -> Any:
    """Sends one command; its reply as str / int / list / None (errors raise)."""
    sock.sendall(b"*%d\r\n" % len(parts) + b"".join(
        b"$%d\r\n%s\r\n" % (len(p.encode()), p.encode()) for p in parts))
    reader = sock.makefile("rb")

    def read() -> Any:
        line = reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else reader.read(n + 2)[:-2].decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line[:80]!r}")

    # Closed here: an open reader keeps the socket's file descriptor
    # open after the socket's own close() (a ResourceWarning under pytest).
    with reader:
        return read()


def describe_server(host: str, port: int, timeout: float = 5.0) -> str:
    """What the server at host:port is and how it is set: version and the
    settings that matter for huge values, read with INFO and CONFIG GET."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            server_info = _resp_command(sock, "INFO", "server")
            fields = dict(line.split(":", 1) for line in server_info.splitlines()
                          if ":" in line)
            text = f"redis-server {fields.get('redis_version', '?')}"
            try:
                reply = _resp_command(sock, "CONFIG", "GET", "save", "appendonly",
                                      "io-threads", "maxmemory")
                conf = dict(zip(reply[::2], reply[1::2]))
                text += ", " + ", ".join(
                    f"{name} {conf[name]!r}" if name == "save" else f"{name} {conf[name]}"
                    for name in ("save", "appendonly", "io-threads", "maxmemory")
                    if name in conf)
            except RuntimeError as exc:  # CONFIG refused (renamed, ACL)
                text += f" (settings unknown: CONFIG GET: {exc})"
            return text
    except (OSError, RuntimeError, ValueError) as exc:
        return f"(could not query it: {exc})"


@contextlib.contextmanager
def redis_address(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    """``(host, port)`` of --host/--port (--port alone: localhost), or of a
    throwaway tuned redis-server that runs for the duration of the ``with``
    block. Says which server first."""
    if args.host is not None:
        port = DEFAULT_PORT if args.port is None else args.port
        about = ("TLS port, not queried" if getattr(args, "ssl_ca_certs", None)
                 else describe_server(args.host, port))
        if about.startswith("(could not query it: [Errno 111]"):
            raise SystemExit(
                f"no Redis server at {args.host}:{port} (connection refused). Start one, e.g. "
                f"`redis-server --port {port} --save '' --appendonly no`, or leave out "
                f"--host and --port to have this script start a throwaway one.")
        info(f"server: {args.host}:{port}, not started by this script: {about}", args)
        args.server_address = (args.host, port)
        yield args.host, port
        return
    with local_redis.running() as server:
        info(f"server: {server.host}:{server.port}, a throwaway one started by this script "
             f"(no --host/--port; stopped at the end): "
             f"{describe_server(server.host, server.port)}; "
             f"MALLOC_CONF={local_redis.MALLOC_CONF}. "
             f"--port {DEFAULT_PORT} measures yours on localhost instead", args)
        args.server_address = (server.host, server.port)
        yield server.host, server.port


def server_cpu_seconds(args: argparse.Namespace) -> Optional[float]:
    """The server's CPU seconds so far (INFO cpu: used_cpu_sys +
    used_cpu_user, all its threads), with --server-cpu; else None. None too
    when the server does not answer INFO (a null server)."""
    address = getattr(args, "server_address", None)
    if not getattr(args, "server_cpu", False) or address is None:
        return None
    try:
        with socket.create_connection(address, timeout=5) as sock:
            return info_cpu_seconds(sock)
    except OSError:
        return None


def info_cpu_seconds(sock: socket.socket) -> Optional[float]:
    """used_cpu_sys + used_cpu_user from ``INFO cpu`` over an open
    connection (all the server's threads); None when it does not answer
    INFO (a null server)."""
    try:
        text = _resp_command(sock, "INFO", "cpu")
    except (OSError, RuntimeError, ValueError):
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])
    except (KeyError, ValueError):
        return None


# The two kinds of server the side-by-side benchmarks measure.
SERVER_KINDS = {
    "stock": "redis-server --save '' --appendonly no, jemalloc's defaults",
    "tuned": f"tools/local_redis.py: {local_redis.settings()}",
}


def start_server(kind: str, extra_args: list[str] = ()) -> Any:
    """A started throwaway server of a kind of SERVER_KINDS (stop() it when
    done): 'stock' is Debian's redis-server with its defaults besides
    --save '' --appendonly no (RedisServer always adds those); 'tuned' is
    tools/local_redis.py's settings. ``extra_args`` go on its command line."""
    if kind == "tuned":
        return local_redis.start(list(extra_args))
    from lmcache_redis._testing import RedisServer
    return RedisServer(extra_args=list(extra_args)).start()


class StampedValues:
    """Cheap distinct test values of ``size`` bytes for batches of many big
    values: one random block (from a seed of the size) with, in the first
    8 bytes of every 64 KiB, a stamp of the value's index and that 64 KiB's
    place. Making a value is a copy, checking it one pass; a value read
    into another key's place, a stripe or a range out of place, a miss that
    left the buffer alone (zero it first) each fail the check."""

    STEP = 64 << 10

    def __init__(self, size: int) -> None:
        if size <= 0 or size % 8:
            raise ValueError(f"size must be a positive multiple of 8 bytes, not {size}")
        self.size = size
        self.base = np.frombuffer(np.random.default_rng(size).bytes(size), dtype=np.uint8)
        self._columns = np.arange(0, size // 8, self.STEP // 8)

    def _stamps(self, i: int) -> np.ndarray:
        return (np.uint64(i) << np.uint64(32)) | self._columns.astype(np.uint64)

    def fill(self, out: np.ndarray, i: int) -> None:
        """Writes value ``i`` into ``out`` (a uint8 array of ``size`` bytes)."""
        out[:] = self.base
        out.view(np.uint64)[self._columns] = self._stamps(i)

    def make(self, i: int) -> bytes:
        """Value ``i`` as bytes (what redis-py sends)."""
        out = np.empty(self.size, dtype=np.uint8)
        self.fill(out, i)
        return out.tobytes()

    def check(self, key: str, i: int, got: Any, length: Optional[int]) -> None:
        """Checks a read of value ``i`` under ``key``: ``length`` (None for
        a miss) must be ``size`` and ``got``'s bytes value ``i``; else
        ``fail``."""
        if length is None:
            fail(f"{key}: a miss, the value written was not found")
        if length != self.size:
            fail(f"{key}: read {length} bytes, wrote {self.size}")
        data = np.frombuffer(got, dtype=np.uint8, count=self.size)
        words = data.view(np.uint64)
        stamps = words[self._columns]
        if not np.array_equal(stamps, self._stamps(i)):
            j = int(np.flatnonzero(stamps != self._stamps(i))[0])
            fail(f"{key}: wrong stamp at offset {j * self.STEP}: {int(stamps[j]):#x}, "
                 f"wrote {int(self._stamps(i)[j]):#x}")
        # Between the stamps: rows of 64 KiB, each but its first word (when
        # the size is no multiple of 64 KiB, the tail is compared apart).
        step = self.STEP // 8
        rows = len(words) // step
        base = self.base.view(np.uint64)
        a = words[:rows * step].reshape(rows, step)[:, 1:]
        b = base[:rows * step].reshape(rows, step)[:, 1:]
        tail_a, tail_b = words[rows * step + 1:], base[rows * step + 1:]
        if not (np.array_equal(a, b) and np.array_equal(tail_a, tail_b)):
            bad = np.flatnonzero(words != base)
            bad = bad[~np.isin(bad, self._columns)]
            fail(f"{key}: wrong bytes at offset {int(bad[0]) * 8}")


def release_memory() -> None:
    """Hands freed memory back to the system (glibc keeps freed blocks of
    up to 32 MiB in its heap): between batches of GiBs, so that one
    client's leftovers do not crowd the next."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def chunk_bytes(args: argparse.Namespace, i: int) -> bytes:
    """Value ``i``: --size-mb random bytes from seed ``i`` (the same in
    every run and every script, and regenerated to check a read)."""
    return np.random.default_rng(i).bytes(args.size_bytes)


def expected_chunk(args: argparse.Namespace, i: int) -> np.ndarray:
    """Value ``i`` as a uint8 array, to check a read against."""
    return np.frombuffer(chunk_bytes(args, i), dtype=np.uint8)


def say_memory(args: argparse.Namespace, values: int, what: str) -> None:
    """Says, before anything is allocated, what the run will hold: ``values``
    values of --size-mb at once (``what`` says which), plus one more while
    checking; and the server holds the --num-chunks values too."""
    own = (values + 1) * args.size_bytes
    info(f"memory: this run holds about {size_text(own)} ({what}), and the server "
         f"{size_text(args.num_chunks * args.size_bytes)} more for the values", args)


def size_text(nbytes: int) -> str:
    """``nbytes`` as GiB from 1 GiB up, else MiB."""
    return f"{nbytes / GiB:.1f} GiB" if nbytes >= GiB else f"{nbytes / MiB:.0f} MiB"


def make_pool(args: argparse.Namespace, copies: int = 1) -> PagedPool:
    """A pool of ``copies * num_chunks`` objects of --size-mb; the first
    ``num_chunks`` hold the values to write (``chunk_bytes``). The others,
    if any, are left zeroed."""
    say_memory(args, copies * args.num_chunks,
               f"a pool of {copies * args.num_chunks} x {args.size_mb:g} MiB"
               + (": the values, then what is read into them" if copies == 1 else ""))
    pool = PagedPool(copies * args.num_chunks, args.size_bytes)
    with progress(args, args.num_chunks, "making the values") as bar:
        for i, obj in enumerate(pool.objects[:args.num_chunks]):
            obj.view[:] = np.frombuffer(chunk_bytes(args, i), dtype=np.uint8)
            bar.update(1)
    return pool


def zero_objects(args: argparse.Namespace, objects: list) -> None:
    """Zero the objects the reads land in (untimed), so that a read that
    moves nothing cannot pass the check."""
    with progress(args, len(objects), "clearing the pool for the reads") as bar:
        for obj in objects:
            obj.view.fill(0)
            bar.update(1)


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
    server_cpu_seconds: Optional[float] = None


def time_call(section: Callable[[], None]) -> Timing:
    """Time ``section()`` as one block (e.g. an asyncio gather)."""
    wall, cpu = time.perf_counter(), time.process_time()
    section()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def time_ops(op: Callable[[int], None], n: int, threads: Optional[int] = None,
             bar: Any = None) -> Timing:
    """Time ``op(i)`` for ``i`` in ``range(n)``; ``bar.update(1)`` after
    each (a ``progress`` bar; it draws at most twice a second).

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
            if bar is not None:
                bar.update(1)
        return Timing(time.perf_counter() - wall, time.process_time() - cpu, latencies)

    start_line = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(first: int) -> None:
        start_line.wait()
        try:
            for i in range(first, n, threads):
                op(i)
                if bar is not None:
                    bar.update(1)
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
    server_cpu_s_per_gb: Optional[float] = None

    def text(self) -> str:
        """The human-readable line."""
        total = self.size_bytes * self.num_chunks
        line = (f"{'Write' if self.op == 'set' else 'Read'} {total / GB:.2f} GB in "
                f"{self.seconds:.2f} s: {self.gb_per_s:.2f} GB/s ({self.gib_per_s:.2f} GiB/s), "
                f"client CPU {self.cpu_seconds:.2f} s ({self.cpu_s_per_gb:.2f} s/GB)")
        if self.latency_median_s is not None:
            line += f", median latency {self.latency_median_s * 1e3:.1f} ms"
        if self.server_cpu_s_per_gb is not None:
            line += f", server CPU {self.server_cpu_s_per_gb:.2f} s/GB"
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
        write: Callable[[Any], Timing], read: Callable[[Any], Timing],
        verify: Callable[[int], None], cleanup: Callable[[], None],
        before_read: Optional[Callable[[], None]] = None) -> None:
    """Run and report one benchmark.

    Args:
        meta: the Result fields that describe the client: client, variant,
            stripes, connections, parser, parallelism, pool_backend.
        write: writes every chunk, given a progress bar to update once per
            value; timed and reported with --write.
        read: reads every chunk back, the same way; timed and reported with
            --read.
        verify: checks what ``read`` got for value ``i`` (with
            ``check_chunk``); untimed.
        cleanup: deletes the keys; runs even when the rest failed.
        before_read: between the writes and the reads, untimed: e.g. zero
            the buffers the reads land in, or free what the writes sent.
    """
    if not args.json:
        print(describe(meta, args), flush=True)
    n = args.num_chunks

    def phase(action: Callable[[Any], Timing], desc: str) -> Timing:
        with progress(args, n, desc) as bar:
            before = server_cpu_seconds(args)
            timing = action(bar)
            after = server_cpu_seconds(args)
        if before is not None and after is not None:
            timing.server_cpu_seconds = after - before
        return timing

    try:
        if args.write and args.overwrite:
            # untimed: the server allocates the values' memory here
            phase(write, "SET, untimed first pass (--overwrite)")
        if args.write:
            report(args, meta, "set", phase(write, "SET, timed"))
        elif args.read:
            phase(write, "SET, untimed (the reads need the keys)")
        if args.read:
            if before_read is not None:
                before_read()
            timing = phase(read, "GET, timed")
            if not args.no_verify:
                with progress(args, n, "checking what was read") as bar:
                    for i in range(n):
                        verify(i)
                        bar.update(1)
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
        server_cpu_s_per_gb=(None if timing.server_cpu_seconds is None
                             else timing.server_cpu_seconds / (total / GB)),
        **meta)
    print(json.dumps(asdict(result)) if args.json else result.text(), flush=True)

