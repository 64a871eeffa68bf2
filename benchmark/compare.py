"""Every client and every limit side by side, in one run.

Each client run gets a fresh throwaway redis-server tuned for huge values
(tools/local_redis.py), so each starts from the same empty server (or all
use --host/--port). The clients run each in its own process on the same keys
and sizes: redis-py (sequential and asyncio), the pure-Python zero-copy
client (at several value sizes, to find its best), lmcache_redis (a stripe
sweep, sequential and concurrent), lmcache_redis against the null server
(tools/null_server.c: the client's own ceiling), the raw loopback TCP limit
(tools/tcp_pump.c), redis-benchmark / memtier_benchmark when installed, and
LMCache's own C++ RESP client (lmcache 0.5.6's LMCacheRedisClient, what
LMCache users run today; benchmark/lmcache-cpp-bench.py, in .venv-lmcache,
which benchmark/lmcache_venv.py makes when missing; --no-lmcache skips it).
The 32 MiB runs are repeated with --overwrite: the keys are written once
untimed, then the timed writes replace them (a full cache's steady state).

Prints one table, and writes the rows as JSON and two plots (throughput
against stripe count and against value size) as a PNG.

    python benchmark/compare.py            # quick: about 6 min with the batch rows, the cluster rows and bench l2
    python benchmark/compare.py --full     # 50-key batches, all sizes, full sweep (~25 min)
    python benchmark/compare.py --malloc-conf none   # servers with jemalloc's defaults
    python benchmark/compare.py --no-lmcache   # without LMCache's C++ client
    python benchmark/compare.py --no-batches   # without the batch rows
    python benchmark/compare.py --no-l2        # without `lmcache bench l2`
    python benchmark/compare.py --no-cluster   # without the Redis Cluster rows
    python benchmark/compare.py --cluster      # the Redis Cluster rows alone: quick, ~1.5 min
    python benchmark/compare.py --cluster --full   # 3 rounds of 24 values, ~5 min
    python benchmark/compare.py --batches      # the batch rows alone: quick, ~2 min
    python benchmark/compare.py --batches --full   # the whole batch matrix alone, ~13 min

After the comparison above come the batch rows (benchmark/batch_compare.py):
GET, SET and EXISTS of n keys per call, ours (sync ``_many`` and asyncio)
against LMCache's client's batches and redis-py's pipeline and asyncio, on
a stock and a tuned server that it starts itself (its docstring says how);
not with --host/--port.

Then the Redis Cluster rows (benchmark/cluster_compare.py): clusters of
1, 2 and 3 masters that it starts itself (and one plain server for
reference), sequential and batched GET/SET of 32 MiB values, ours against
redis-py's RedisCluster, with the client's and every shard's CPU per GB;
not with --host/--port; --no-cluster leaves them out.

Last comes LMCache's own benchmark, `lmcache bench l2`, driving ours (its
native_plugin adapter) and LMCache's client (its resp adapter) on a stock
and a tuned server (benchmark/lmcache_l2.py, quick or --full); not with
--host/--port, nor --no-lmcache (it runs in .venv-lmcache); --no-l2 leaves
it out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"
sys.path.insert(0, str(ROOT / "tools"))

import local_redis  # noqa: E402  (tools/, put on the path above)

sys.path.insert(0, str(BENCH))
import batch_compare  # noqa: E402  (benchmark/, where this file is)
import bench_common  # noqa: E402
import cluster_compare  # noqa: E402
import lmcache_l2  # noqa: E402
import lmcache_venv  # noqa: E402

# LMCache's own C++ RESP client, the peer LMCache users run today.
LMCACHE = "LMCache C++ (resp)"
# Its client has no timeouts (a GET miss wedges a worker for good): a run
# that takes longer than this is reported and left out, not waited for.
LMCACHE_RUN_TIMEOUT_S = 300

MiB = 1 << 20
GiB = 1 << 30
GB = 1e9


@dataclass
class Plan:
    """What one mode runs."""

    num_chunks: int
    sizes_mb: list[int]              # lmcache_redis (default config) and redis-py
    stripe_sweep: list[int]          # at 32 MiB, real server
    null_stripe_sweep: list[int]     # at 32 MiB, null server
    connection_sweep: list[int]      # at 32 MiB with the default stripes
    resp_py_sizes_mb: list[int]
    redis_py_chunks: int             # redis-py is slow: fewer keys in quick mode
    rounds: int                      # runs of each scored row (median reported)
    lmcache_workers: tuple = (8,)    # LMCacheRedisClient num_workers, at sizes_mb


QUICK = Plan(num_chunks=10, sizes_mb=[4, 32], stripe_sweep=[1, 8, 16],
             null_stripe_sweep=[1, 16], connection_sweep=[], resp_py_sizes_mb=[4, 32],
             redis_py_chunks=4, rounds=1)
FULL = Plan(num_chunks=50, sizes_mb=[4, 32, 80], stripe_sweep=[1, 2, 4, 8, 12, 16],
            null_stripe_sweep=[1, 2, 4, 8, 16], connection_sweep=[1, 2, 4, 8],
            resp_py_sizes_mb=[1, 4, 8, 32], redis_py_chunks=50, rounds=3,
            lmcache_workers=(8, 4))


@dataclass
class Run:
    """One process to run, and how to label its rows."""

    label: str
    argv: list[str]
    target: str = "redis"            # "redis" or "null"
    default_config: bool = False     # lmcache_redis with its default settings
    scored: bool = False             # the scorecard uses it: run in every round
    optional: bool = False           # a peer that may fail or hang: say so, go on without it


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()

    def step(self, label: str) -> None:
        width = 30
        filled = width * self.done // max(self.total, 1)
        elapsed = time.monotonic() - self.start
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:5.0f}s {label[:50]:<50}")
        sys.stderr.flush()
        self.done += 1

    def close(self) -> None:
        sys.stderr.write("\r" + " " * 100 + "\r")
        sys.stderr.flush()


def script(name: str, *args: object) -> list[str]:
    return [sys.executable, str(BENCH / name), *map(str, args)]


def lmcache_runs(plan: Plan, python: Path) -> list[Run]:
    """LMCache's C++ client at every size of the plan: one key per submit
    and all keys in one batch, GET and SET, with each num_workers of the
    plan (its default 8 first). Run in every round, like the scored rows."""
    runs = []
    for size in plan.sizes_mb:
        for workers in plan.lmcache_workers:
            for concurrent in (False, True):
                mode = "all keys in one batch" if concurrent else "1 key per submit"
                runs.append(Run(
                    f"{LMCACHE}, {mode} {size} MiB" + (f", {workers} workers" if workers != 8 else ""),
                    [str(python), str(BENCH / "lmcache-cpp-bench.py"), "--size-mb", str(size),
                     "--num-chunks", str(plan.num_chunks), "--num-workers", str(workers)]
                    + (["--concurrent"] if concurrent else []),
                    scored=True, optional=True))
    return runs


def plan_runs(plan: Plan, default_stripes: int, default_conns: int,
              lmcache_python: Optional[Path] = None) -> list[Run]:
    n = plan.num_chunks
    runs: list[Run] = []
    for size in plan.sizes_mb:
        rn, scored = plan.redis_py_chunks, size == 32
        runs.append(Run(f"redis-py {size} MiB", script(
            "redis-py-bench.py", "--size-mb", size, "--num-chunks", rn), scored=scored))
        runs.append(Run(f"redis-py asyncio {size} MiB", script(
            "redis-py-bench.py", "--size-mb", size, "--num-chunks", rn, "--concurrent"),
            scored=scored))
        runs.append(Run(f"lmcache_redis {size} MiB", script(
            "lmcache_redis-bench.py", "--size-mb", size, "--num-chunks", n), default_config=True,
            scored=scored))
        runs.append(Run(f"lmcache_redis concurrent {size} MiB", script(
            "lmcache_redis-bench.py", "--size-mb", size, "--num-chunks", n, "--concurrent"),
            scored=scored))
    # The steady state of a full cache: values replace values, so the server
    # reuses their memory instead of faulting in fresh pages for each.
    for name, argv in (("redis-py", script("redis-py-bench.py", "--num-chunks", plan.redis_py_chunks)),
                       ("redis-py asyncio", script("redis-py-bench.py", "--num-chunks",
                                                   plan.redis_py_chunks, "--concurrent")),
                       ("lmcache_redis", script("lmcache_redis-bench.py", "--num-chunks", n)),
                       ("lmcache_redis concurrent", script("lmcache_redis-bench.py", "--num-chunks",
                                                           n, "--concurrent"))):
        runs.append(Run(f"{name} 32 MiB overwrite", argv + ["--size-mb", "32", "--overwrite"],
                        scored=True))
    for size in plan.resp_py_sizes_mb:
        # Same bytes moved at every size, so small values get more keys.
        chunks = max(n, n * 32 // size) if size < 32 else n
        runs.append(Run(f"resp-py {size} MiB", script(
            "resp-py-bench.py", "--size-mb", size, "--num-chunks", chunks, "--concurrent"),
            scored=True))
    if lmcache_python is not None:
        runs += lmcache_runs(plan, lmcache_python)
    for stripes in plan.stripe_sweep:
        if stripes != default_stripes:
            runs.append(Run(f"lmcache_redis stripes={stripes}", script(
                "lmcache_redis-bench.py", "--num-chunks", n, "--stripes", stripes,
                "--connections", min(default_conns, stripes))))
    for conns in plan.connection_sweep:
        if conns != default_conns:
            runs.append(Run(f"lmcache_redis connections={conns}", script(
                "lmcache_redis-bench.py", "--num-chunks", n, "--connections", conns)))
    for stripes in plan.null_stripe_sweep:
        runs.append(Run(f"null server stripes={stripes}", script(
            "lmcache_redis-bench.py", "--num-chunks", n, "--stripes", stripes,
            "--connections", min(default_conns, stripes), "--no-verify"), target="null"))
    # Two Python threads keep the client busy between calls: the client's
    # own ceiling, as a fraction of the transport's.
    runs.append(Run("null server concurrent", script(
        "lmcache_redis-bench.py", "--num-chunks", n, "--stripes", default_stripes,
        "--no-verify", "--concurrent", "--threads", 2), target="null"))
    return runs


class PeerFailed(Exception):
    """An optional peer's run failed or hung; str() says how, in one line."""


def run_json(run: Run, host: str, port: int) -> list[dict]:
    """The run's JSON rows. A failed run ends the comparison, unless the
    run is optional (a peer): then PeerFailed."""
    argv = [*run.argv, "--host", host, "--port", str(port), "--json"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=lmcache_venv.env(),
                             timeout=LMCACHE_RUN_TIMEOUT_S if run.optional else None)
    except subprocess.TimeoutExpired:
        raise PeerFailed(f"{run.label}: no result within {LMCACHE_RUN_TIMEOUT_S} s, "
                         "stopped") from None
    if out.returncode != 0:
        if run.optional:
            last = [line for line in (out.stderr + out.stdout).splitlines() if line.strip()]
            raise PeerFailed(f"{run.label} failed ({out.returncode}): "
                             f"{last[-1] if last else '(no output)'}")
        raise SystemExit(f"\n{run.label} failed ({out.returncode}):\n{out.stderr}{out.stdout}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        row["target"] = run.target
        row["default_config"] = run.default_config
        if row.get("overwrite"):
            row["variant"] += " overwrite"
    return rows


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    """One run's rows from each round (same runs, same order) -> per row the
    round with the median GB/s (its CPU and latency with it), and every
    round's figure in ``gb_per_s_rounds``."""
    merged = []
    for same in zip(*rounds):
        ranked = sorted(same, key=lambda r: r["gb_per_s"])
        row = dict(ranked[(len(ranked) - 1) // 2])
        row["gb_per_s_rounds"] = [r["gb_per_s"] for r in same]
        merged.append(row)
    return merged


def redis_benchmark_rows(host: str, port: int, size_mb: int, n: int) -> list[dict]:
    """redis-benchmark (Debian's redis-tools), 4 clients, no pipelining."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return []
    size = size_mb * MiB
    out = subprocess.run([exe, "-h", host, "-p", str(port), "-t", "set,get", "-d", str(size),
                          "-n", str(n), "-c", "4", "-P", "1", "--csv", "-q"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells[0] in ("SET", "GET"):
            rps = float(cells[1])
            rows.append(dict(client="redis-benchmark", variant="4 clients",
                             op=cells[0].lower(), size_bytes=size, num_chunks=n,
                             stripes=None, connections=4, gb_per_s=rps * size / GB,
                             cpu_s_per_gb=None, latency_median_s=None, target="redis"))
    return rows


def memtier_rows(host: str, port: int, size_mb: int, n: int) -> list[dict]:
    """memtier_benchmark, when on PATH (Debian 12 does not package it)."""
    exe = shutil.which("memtier_benchmark")
    if exe is None:
        return []
    size = size_mb * MiB
    rows = []
    for op, ratio in (("set", "1:0"), ("get", "0:1")):
        out = subprocess.run(
            [exe, "-s", host, "-p", str(port), f"--ratio={ratio}", "-n", str(n),
             f"--data-size={size}", "--key-minimum=1", f"--key-maximum={n}",
             "--key-pattern=P:P", "--clients=4", "--threads=1", "--hide-histogram"],
            capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            cells = line.split()
            if cells and cells[0] in ("Sets", "Gets") and cells[0].lower()[:3] == op:
                rows.append(dict(client="memtier_benchmark", variant="4 clients", op=op,
                                 size_bytes=size, num_chunks=n, stripes=None, connections=4,
                                 gb_per_s=float(cells[-1]) * 1000 / GB, cpu_s_per_gb=None,
                                 latency_median_s=None, target="redis"))
    return rows


def pump_rows(pump: Optional[Path]) -> list[dict]:
    """The loopback TCP limit, 1 MiB writes: raw (each receiver reuses one
    cache-hot 1 MiB buffer) over 1 and 2 streams, and over 2 streams landing
    in 32 MiB areas, as a client landing 32 MiB values in memory must.
    main() measures it at the start and at the end of the run and keeps the
    better figure of each: a limit is what the machine can do."""
    if pump is None:
        return []
    rows = []
    for streams, span in ((1, None), (2, None), (2, 32 * MiB)):
        argv = [str(pump), "--json", "--bytes", str(8 << 30), "--streams", str(streams)]
        if span:
            argv += ["--recv-span", str(span)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        variant = f"{streams} stream(s), {result['chunk'] // MiB} MiB writes"
        rows.append(dict(client="loopback TCP",
                         variant=variant + (f", into {span // MiB} MiB" if span else ""),
                         op="transfer", size_bytes=span, num_chunks=None, stripes=None,
                         connections=streams, gb_per_s=result["gb_per_s"], cpu_s_per_gb=None,
                         latency_median_s=None, target="limit" if span is None else "landing"))
    return rows


def add_ratios(rows: list[dict]) -> float:
    """Adds ``x_redis_py`` (throughput over redis-py's best mode, same op and
    size) and ``of_tcp`` (share of the best loopback figure). Returns that limit."""
    best: dict[tuple, float] = {}
    for r in rows:
        if r["client"] == "redis-py":
            k = (r["op"], r["size_bytes"], r.get("overwrite", False))
            best[k] = max(best.get(k, 0.0), r["gb_per_s"])
    limit = max((r["gb_per_s"] for r in rows if r["target"] == "limit"), default=None)
    for r in rows:
        base = best.get((r["op"], r["size_bytes"], r.get("overwrite", False)))
        r["x_redis_py"] = r["gb_per_s"] / base if base else None
        r["of_tcp"] = r["gb_per_s"] / limit if limit else None
    return limit


def scorecard(rows: list[dict]) -> list[dict]:
    """Issue 4's targets, each as a ratio of two rows of this run (32 MiB
    values). A metric whose rows are missing (a tool not built) is left out."""
    size = 32 * MiB

    def pick(**want: object) -> list[dict]:
        return [r for r in rows if all(r.get(k) == v for k, v in want.items())]

    def best(found: list[dict]) -> Optional[dict]:
        return max(found, key=lambda r: r["gb_per_s"], default=None)

    card: list[dict] = []

    def add(metric: str, target: float, at_least: bool, measured: dict[str, float],
            note: str = "") -> None:
        hits = [v >= target if at_least else v <= target for v in measured.values()]
        status = "met" if all(hits) else "partly met" if any(hits) else "missed"
        card.append(dict(metric=metric, target=("≥ " if at_least else "≤ ") + f"{target:g}×",
                         measured=measured, status=status, note=note))

    ours = {op: {mode: best(pick(client="lmcache_redis", target="redis", op=op, size_bytes=size,
                                 concurrent=conc, overwrite=False,
                                 **({"default_config": True} if not conc else {})))
                 for mode, conc in (("sequential", False), ("concurrent", True))}
            for op in ("get", "set")}
    redis_py = {op: best(pick(client="redis-py", op=op, size_bytes=size, overwrite=False))
                for op in ("get", "set")}
    raw = best(pick(target="limit"))
    landing = best(pick(target="landing"))
    server_best = best(pick(target="redis", op="get", size_bytes=size))

    if redis_py["get"] and all(ours["get"].values()):
        base = redis_py["get"]["gb_per_s"]
        note = f"redis-py's best: {base:.2f} GB/s"
        if server_best:
            note += f"; the best GET of any client from this server: {server_best['gb_per_s']:.2f}"
        add("GET vs redis-py's best mode", 25, True,
            {m: r["gb_per_s"] / base for m, r in ours["get"].items()}, note)
    if redis_py["set"] and all(ours["set"].values()):
        base = redis_py["set"]["gb_per_s"]
        measured = {m: r["gb_per_s"] / base for m, r in ours["set"].items()}
        steady_py = best(pick(client="redis-py", op="set", size_bytes=size, overwrite=True))
        steady_ours = best(pick(client="lmcache_redis", op="set", size_bytes=size, overwrite=True))
        if steady_py and steady_ours:
            measured["steady state (overwrite)"] = steady_ours["gb_per_s"] / steady_py["gb_per_s"]
        add("SET vs redis-py's best mode", 6, True, measured,
            "writes into an empty server wait on its page faults, whatever the client")
    resp_py = best(pick(client="resp-py", op="get", target="redis"))
    if resp_py and all(ours["get"].values()):
        add("GET vs pure-Python zero-copy at its best size", 1, True,
            {m: r["gb_per_s"] / resp_py["gb_per_s"] for m, r in ours["get"].items()},
            f"its best: {resp_py['size_bytes'] // MiB} MiB values, {resp_py['gb_per_s']:.2f} GB/s")
    null_get = best(pick(client="lmcache_redis", target="null", op="get"))
    if null_get and raw:
        measured = {"of the raw limit": null_get["gb_per_s"] / raw["gb_per_s"]}
        if landing:
            measured["of the limit landing in 32 MiB"] = null_get["gb_per_s"] / landing["gb_per_s"]
        add("null server GET, share of loopback TCP", 0.8, True, measured,
            f"{null_get['gb_per_s']:.2f} GB/s; raw {raw['gb_per_s']:.2f}"
            + (f", landing {landing['gb_per_s']:.2f}" if landing else ""))
    py_get, seq = redis_py["get"], ours["get"]["sequential"]
    if py_get and seq and py_get.get("cpu_s_per_gb") and seq.get("cpu_s_per_gb"):
        add("client CPU s/GB vs redis-py (GET)", 0.25, False,
            {"sequential": seq["cpu_s_per_gb"] / py_get["cpu_s_per_gb"]})
    py_seq = best(pick(client="redis-py", variant="single-pool", op="get", size_bytes=size))
    if py_seq and seq and py_seq.get("latency_median_s") and seq.get("latency_median_s"):
        add("median 32 MiB GET latency vs redis-py", 0.1, False,
            {"sequential": seq["latency_median_s"] / py_seq["latency_median_s"]},
            f"{seq['latency_median_s'] * 1e3:.1f} ms vs {py_seq['latency_median_s'] * 1e3:.1f} ms")
    return card


def lmcache_ratios(rows: list[dict]) -> list[dict]:
    """Ours over LMCache's C++ client (its default 8 workers), same run,
    same op and size: one at a time (our defaults, sequential, against one
    key per submit) and all keys in flight (our threads against one batch)."""
    def find(**want: object) -> Optional[dict]:
        found = [r for r in rows if r["target"] == "redis" and not r.get("overwrite")
                 and all(r.get(k) == v for k, v in want.items())]
        return max(found, key=lambda r: r["gb_per_s"], default=None)

    out = []
    sizes = sorted({r["size_bytes"] for r in rows if r["client"] == LMCACHE})
    for size in sizes:
        for op in ("get", "set"):
            for mode, ours_want, theirs_variant in (
                    ("one at a time", dict(concurrent=False, default_config=True),
                     "1 key per submit"),
                    ("all in flight", dict(concurrent=True), "all keys in one batch")):
                ours = find(client="lmcache_redis", op=op, size_bytes=size, **ours_want)
                theirs = find(client=LMCACHE, op=op, size_bytes=size, connections=8,
                              variant=theirs_variant)
                if ours and theirs:
                    out.append(dict(size_bytes=size, op=op, mode=mode,
                                    ours_gb_per_s=ours["gb_per_s"],
                                    lmcache_gb_per_s=theirs["gb_per_s"],
                                    ratio=ours["gb_per_s"] / theirs["gb_per_s"]))
    return out


def lmcache_summary_lines(ratios: list[dict]) -> list[str]:
    """The ratios as a few lines: one per size, GET then SET."""
    if not ratios:
        return []
    lines = ["\nours over LMCache's C++ client (0.5.6, 8 workers), this run, same server "
             "settings (>1: ours faster):"]
    for size in sorted({r["size_bytes"] for r in ratios}):
        parts = []
        for op in ("get", "set"):
            cells = [f"{r['ratio']:.2f}x {r['mode']} ({r['ours_gb_per_s']:.2f} vs "
                     f"{r['lmcache_gb_per_s']:.2f} GB/s)"
                     for r in ratios if r["size_bytes"] == size and r["op"] == op]
            if cells:
                parts.append(f"{op.upper()} " + ", ".join(cells))
        lines.append(f"  {size // MiB} MiB: " + "; ".join(parts))
    return lines


def print_scorecard(card: list[dict]) -> None:
    """The run's ratios in words (no pass/fail: a quick run is one round)."""
    print("\nin short, from this run (32 MiB values):")
    for c in card:
        measured = ", ".join(f"{v:.2f}x {k}" for k, v in c["measured"].items())
        print(f"  {c['metric']}: {measured}" + (f"  ({c['note']})" if c["note"] else ""))


# What the table's short labels mean; print_legend prints the entries for
# the labels a table uses.
LEGEND = {
    "client": {
        "lmcache_redis": "this library; >> marks its rows against redis-server",
        "redis-py": "redis-py with hiredis, what LMCache uses today",
        "resp-py": "a pure-Python zero-copy RESP client (benchmark/resp-py-bench.py): "
                   "sendmsg from / recv_into the pool, one value per key",
        "loopback TCP": "tools/tcp_pump.c moving bytes over loopback TCP: the transport's ceiling",
        "redis-benchmark": "Redis's own benchmark tool (redis-tools), 4 clients",
        "memtier_benchmark": "Redis Labs' load generator, 4 clients",
        LMCACHE: "LMCache 0.5.6's own C++ RESP client (lmcache.lmcache_redis."
                 "LMCacheRedisClient, what LMCache users run today; "
                 "benchmark/lmcache-cpp-bench.py in .venv-lmcache): conn = its num_workers, "
                 "one connection each; every value verbatim under its key",
    },
    "variant": {
        "buffer": "get/set into and from numpy views of the pool, one call after another",
        "buffer+threads": "the same from Python threads sharing one client",
        "ptr": "get_ptr/set_ptr on raw addresses",
        "single-pool": "one redis.Redis, one call after another",
        "asyncio": "redis.asyncio, 8 requests in flight",
        "multi-pool": "several redis.Redis used round-robin",
        "threads": "4 threads, each with its own socket",
        "sequential": "one socket, one call after another",
        "overwrite": "(suffix) the keys were written once untimed, the timed writes replace "
                     "them: a full cache's steady state",
        "4 clients": "4 connections, no pipelining",
        "1 key per submit": "(LMCache C++) submit_batch_get/set of one key, waiting for its "
                            "completion (event_fd, drain_completions) before the next: one "
                            "connection per value",
        "all keys in one batch": "(LMCache C++) one submit_batch_get/set of every key, tiled "
                                 "over min(num_workers, keys) connections",
        "N stream(s)": "sender/receiver thread pairs; 'into 32 MiB': each receiver fills a "
                       "32 MiB area, as a client landing values in memory does",
    },
    "server": {
        "redis": "a fresh throwaway redis-server (or --host)",
        "null": "tools/null_server.c, a server that does no work: the client's own ceiling",
        "limit": "no server: the raw loopback transport, a cache-hot 1 MiB receive buffer",
        "landing": "no server: loopback, landing in 32 MiB areas",
    },
    "columns": {
        "stripes": "parts each value is stored in (lmcache_redis only)",
        "conn": "connections (streams for loopback)",
        "GB/s": "10^9 bytes per second; * = median of the rounds",
        "x redis-py": "over redis-py's best mode at the same op and size",
        "of TCP": "share of the best raw loopback figure",
        "CPU s/GB": "client CPU seconds per GB moved",
        "median ms": "median latency of one op (sequential runs)",
    },
}

COLUMNS = ("client", "variant", "server", "op", "size", "stripes", "conn", "GB/s",
           "x redis-py", "of TCP", "CPU s/GB", "median ms")
LEFT = {"client", "variant", "server", "op"}


def table_cells(r: dict) -> list[str]:
    """One row's cells, in COLUMNS order."""
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    median = r.get("latency_median_s")
    mark = "*" if len(r.get("gb_per_s_rounds", ())) > 1 else ""  # a median of rounds
    return [r["client"], r["variant"], r["target"], r["op"],
            f"{r['size_bytes'] // MiB} MiB" if r.get("size_bytes") else "-",
            fmt(r.get("stripes"), "d"), fmt(r.get("connections"), "d"),
            f"{r['gb_per_s']:.2f}{mark}", fmt(r.get("x_redis_py"), ".1f"),
            fmt(r.get("of_tcp"), ".2f"), fmt(r.get("cpu_s_per_gb"), ".2f"),
            fmt(None if median is None else median * 1e3, ".1f")]


def is_ours(r: dict) -> bool:
    return r["client"] == "lmcache_redis" and r["target"] == "redis"


def format_table(rows: list[dict], bold: bool = False) -> list[str]:
    """The table as lines: every column as wide as its widest cell, our
    rows (lmcache_redis against Redis) marked '>>' (and bold if asked)."""
    cells = [table_cells(r) for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(COLUMNS)]

    def line(values: list[str]) -> str:
        return " ".join(v.ljust(w) if h in LEFT else v.rjust(w)
                        for h, v, w in zip(COLUMNS, values, widths)).rstrip()

    head = "   " + line(list(COLUMNS))
    out = [head, "-" * len(head)]
    for r, c in zip(rows, cells):
        text = (">> " if is_ours(r) else "   ") + line(c)
        out.append(f"\033[1m{text}\033[0m" if bold and is_ours(r) else text)
    return out


def legend_lines(rows: list[dict]) -> list[str]:
    """The legend entries for the labels ``rows`` use (and every column)."""
    used_variants = ({part for r in rows for part in r["variant"].split(" ")}
                     | {r["variant"] for r in rows})
    out = ["", "legend:"]
    for key, title in (("client", "client"), ("server", "server")):
        used = {r["client" if key == "client" else "target"] for r in rows}
        for label, text in LEGEND[key].items():
            if label in used:
                out.append(f"  {title} {label}: {text}")
    for label, text in LEGEND["variant"].items():
        if label in used_variants or (label == "N stream(s)" and "stream(s)," in used_variants):
            out.append(f"  variant {label}: {text}")
    for label, text in LEGEND["columns"].items():
        out.append(f"  {label}: {text}")
    return out


def print_table(rows: list[dict]) -> None:
    for line in format_table(rows, bold=sys.stdout.isatty()) + legend_lines(rows):
        print(line)


def plot(rows: list[dict], path: Path, context: str = "", default_stripes: Optional[int] = None) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, NullLocator
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.8))
    ours = [r for r in rows if r["client"] == "lmcache_redis" and not r["concurrent"]
            and not r.get("overwrite")]
    colors = {"get": "tab:blue", "set": "tab:orange"}
    for target, style in (("redis", "-o"), ("null", "--s")):
        for op in ("get", "set"):
            pts = sorted((r["stripes"], r["gb_per_s"]) for r in ours
                         if r["target"] == target and r["op"] == op
                         and r["size_bytes"] == 32 * MiB and r["connections"] == min(4, r["stripes"]))
            if pts:
                left.plot(*zip(*pts), style, color=colors[op],
                          label=f"{op.upper()} vs {'redis-server' if target == 'redis' else 'null server (no work)'}")
    stripe_ticks = sorted({x for line in left.get_lines() for x in line.get_xdata()})
    if default_stripes:
        left.axvline(default_stripes, color="gray", linestyle=":", linewidth=1.5,
                     label=f"the default for 32 MiB: {default_stripes} stripes")
        stripe_ticks = sorted(set(stripe_ticks) | {default_stripes})
    left.set(xlabel="stripes per value (32 MiB values, up to 4 connections)", ylabel="GB/s",
             title="lmcache_redis by stripe count")
    if stripe_ticks:
        left.set_xticks(stripe_ticks)
        left.set_xlim(min(stripe_ticks) - 1, max(stripe_ticks) + 1.5)
    styles = {"lmcache_redis": ("-o", 2.5), "redis-py": ("--^", 1.2), "resp-py": (":s", 1.2),
              LMCACHE: ("-.D", 1.2)}
    names = {"lmcache_redis": "lmcache_redis", "redis-py": "redis-py (one pool)",
             "resp-py": "pure-Python client (threads)",
             LMCACHE: "LMCache's C++ client (1 key per submit)"}
    sizes: set[float] = set()
    for client, variant in (("lmcache_redis", "buffer"), ("redis-py", "single-pool"),
                            ("resp-py", "threads"), (LMCACHE, "1 key per submit")):
        for op in ("get", "set"):
            pts = sorted((r["size_bytes"] / MiB, r["gb_per_s"]) for r in rows
                         if r["client"] == client and r["variant"] == variant and r["op"] == op
                         and r["target"] == "redis"
                         and (client != "lmcache_redis" or r.get("default_config")))
            if pts:
                sizes.update(x for x, _ in pts)
                style, width = styles[client]
                right.plot(*zip(*pts), style, color=colors[op], linewidth=width,
                           label=f"{names[client]} {op.upper()}")
    right.set(xlabel="value size (MiB)", ylabel="GB/s", title="clients by value size",
              xscale="log")
    if sizes:
        ticks = sorted(sizes)
        right.xaxis.set_major_locator(FixedLocator(ticks))
        right.xaxis.set_minor_locator(NullLocator())
        right.set_xticklabels([f"{t:g}" for t in ticks])
        right.set_xlim(min(ticks) / 1.3, max(ticks) * 1.3)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        # Below the plot, so it covers no point.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                  frameon=False)
    if context:
        import textwrap
        fig.suptitle(textwrap.fill(context, 140), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# The README's first-screen table: (label, client, variant) at 32 MiB.
HEADLINE = (
    ("**lmcache_redis**, one call at a time", "lmcache_redis", "buffer"),
    ("**lmcache_redis**, 4 Python threads", "lmcache_redis", "buffer+threads"),
    ("redis-py (hiredis), one call at a time", "redis-py", "single-pool"),
    ("redis-py asyncio, 8 in flight", "redis-py", "asyncio"),
    ("pure-Python zero-copy client, 4 threads", "resp-py", "threads"),
    ("redis-benchmark, 4 clients", "redis-benchmark", "4 clients"),
    ("memtier_benchmark, 4 clients", "memtier_benchmark", "4 clients"),
    ("LMCache's C++ client (0.5.6), 1 key per submit", LMCACHE, "1 key per submit"),
    ("LMCache's C++ client (0.5.6), all keys in one batch", LMCACHE, "all keys in one batch"),
)


def headline_markdown(rows: list[dict], context: str, size: int = 32 * MiB) -> str:
    """The README's first-screen table from this run: GB/s of each client
    against redis-server at ``size`` (lmcache_redis with its defaults),
    GET, SET into an empty server, SET replacing values."""
    def find(client: str, variant: str, op: str, overwrite: bool) -> str:
        for r in rows:
            if (r["client"] == client and r["op"] == op and r["target"] == "redis"
                    and r.get("size_bytes") == size and bool(r.get("overwrite")) == overwrite
                    and r["variant"] == variant + (" overwrite" if overwrite else "")
                    # lmcache_redis: the default settings, not a sweep's row
                    and (client != "lmcache_redis" or r.get("default_config")
                         or r.get("concurrent") or overwrite)):
                return f"{r['gb_per_s']:.2f}"
        return "-"

    lines = [f"| {size // MiB} MiB values, GB/s | GET | SET, empty server | SET, replacing values |",
             "|---|---:|---:|---:|"]
    for label, client, variant in HEADLINE:
        cells = [find(client, variant, "get", False), find(client, variant, "set", False),
                 find(client, variant, "set", True)]
        if cells != ["-", "-", "-"]:
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n({context})\n"


def short_version() -> str:
    """'redis-server 7.0.15' from `redis-server --version`."""
    text = local_redis.version()
    for word in text.split():
        if word.startswith("v="):
            return f"redis-server {word[2:]}"
    return text


def run_context(full: bool, plan: Plan, date: str, server: str,
                settings: Optional[str]) -> str:
    """One line saying what ran: mode, keys, rounds, sizes, server, date."""
    return (f"{'full' if full else 'quick'} run of benchmark/compare.py, {date}: "
            f"{plan.num_chunks} keys per client run (redis-py {plan.redis_py_chunks}), "
            f"{plan.rounds} round{'s' if plan.rounds > 1 else ''}"
            + (" (median)" if plan.rounds > 1 else "")
            + f", values {'/'.join(map(str, plan.sizes_mb))} MiB; server {server}"
            + (f" ({settings}; a fresh one per client run)" if settings else ""))


def find_tool(name: str) -> Optional[Path]:
    path = ROOT / "build" / "c" / name
    return path if path.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="50-key batches, 4/32/80 MiB, full sweeps")
    ap.add_argument("--host", help="benchmark this server instead of starting one "
                                   "(default: localhost when --port is given)")
    ap.add_argument("--port", type=int, help="its port (default 6379); --port alone: localhost")
    ap.add_argument("--malloc-conf", default=local_redis.MALLOC_CONF,
                    help="MALLOC_CONF for the throwaway servers' jemalloc ('none': jemalloc's "
                         f"defaults; default: the launcher's, {local_redis.MALLOC_CONF})")
    ap.add_argument("--no-lmcache", action="store_true",
                    help="leave out LMCache's own C++ RESP client (by default it runs from "
                         ".venv-lmcache, made when missing: python3.11, ~1 min, 1.5 GB)")
    ap.add_argument("--out", type=Path, default=BENCH / "results",
                    help="directory for the JSON and PNG (default benchmark/results)")
    batches = ap.add_argument_group(
        "batches", "the batch comparison (benchmark/batch_compare.py) that follows the one "
                   "above, quick or --full; these flags narrow it")
    batches.add_argument("--batches", action="store_true",
                         help="only the batch rows: GET/SET/EXISTS of 1-64 keys per call, ours "
                              "against LMCache's client and redis-py, on a stock and a tuned "
                              "server")
    batches.add_argument("--no-batches", action="store_true", help="leave the batch rows out")
    batch_compare.add_arguments(batches)
    cluster = ap.add_argument_group(
        "cluster", "the Redis Cluster rows (benchmark/cluster_compare.py), quick or --full")
    cluster.add_argument("--cluster", action="store_true",
                         help="only the Redis Cluster rows: 1, 2, 3 masters (and a single "
                              "server), 32 MiB GET/SET, ours against redis-py's RedisCluster")
    cluster.add_argument("--no-cluster", action="store_true",
                         help="leave the Redis Cluster rows out")
    ap.add_argument("--no-l2", action="store_true",
                    help="leave out the last section, LMCache's own `lmcache bench l2` with ours "
                         "and with LMCache's client (benchmark/lmcache_l2.py; quick: ~2 min)")
    args = ap.parse_args()
    if args.batches and args.no_batches:
        ap.error("--batches runs only the batch rows, --no-batches leaves them out: pick one")
    if args.cluster and args.no_cluster:
        ap.error("--cluster runs only the cluster rows, --no-cluster leaves them out: pick one")
    if args.cluster and args.batches:
        ap.error("--cluster and --batches each run one section alone: pick one")
    if args.cluster:
        if args.host or args.port:
            ap.error("--cluster starts its own clusters: no --host/--port")
        run_cluster(args)
        return
    if args.batches:
        if args.host or args.port:
            ap.error("--batches starts its own servers (it flushes them between rows): "
                     "no --host/--port")
        run_batches(args)
        return
    if args.port is not None and args.host is None:
        args.host = "localhost"
    if args.host is not None and args.port is None:
        args.port = 6379
    plan = FULL if args.full else QUICK
    malloc_conf = "" if args.malloc_conf == "none" else args.malloc_conf

    import lmcache_redis
    # The defaults' stripe count for 32 MiB, the size the sweeps run at.
    default_conns = 4
    default_stripes = lmcache_redis.stripe_count(32 * MiB, connections=default_conns)
    if args.no_lmcache:
        lmcache_python, lmcache_line = None, "LMCache C++ client: skipped (--no-lmcache)"
    else:
        lmcache_python, lmcache_line = lmcache_venv.ensure_or_none()
        if lmcache_python is not None:
            lmcache_line = (f"LMCache C++ client: lmcache 0.5.6's LMCacheRedisClient from "
                            f"{lmcache_python.parent.parent.name} (--no-lmcache skips it)")
    runs = plan_runs(plan, default_stripes, default_conns, lmcache_python)
    null_exe, pump = find_tool("lmr_null_server"), find_tool("lmr_tcp_pump")
    if null_exe is None or pump is None:
        print("build/c/lmr_null_server or lmr_tcp_pump missing (cmake --build build/c): "
              "their rows are left out", file=sys.stderr)
    if null_exe is None:
        runs = [r for r in runs if r.target != "null"]

    @contextlib.contextmanager
    def redis_server() -> Iterator[tuple[str, int]]:
        """--host/--port, or a fresh tuned server: each client then starts
        from the same empty server, not from memory an earlier client freed."""
        if args.host:
            yield args.host, args.port
            return
        with local_redis.running(malloc_conf=malloc_conf) as server:
            yield server.host, server.port

    # What will run, where, and the memory it needs, before it starts.
    biggest = max(plan.sizes_mb + plan.resp_py_sizes_mb) * MiB * plan.num_chunks
    if args.host:
        where = (f"server: {args.host}:{args.port}, not started by this script: "
                 f"{bench_common.describe_server(args.host, args.port)}")
    else:
        where = (f"server: {short_version()}, a fresh throwaway one on 127.0.0.1 for "
                 f"each client run, started by this script; settings: "
                 f"{local_redis.settings(malloc_conf) or 'none'}, save '', appendonly no")
    print(f"{'full' if args.full else 'quick'} run: {len(runs)} client runs"
          + (f" ({plan.rounds} rounds of the main ones)" if plan.rounds > 1 else "")
          + f", {plan.num_chunks} keys each (redis-py: {plan.redis_py_chunks}), values of "
          + ", ".join(f"{m}" for m in sorted(set(plan.sizes_mb))) + " MiB; "
          + ("about 1 min on 2 cores" if not args.full else "about 10 min on 2 cores"))
    print(where)
    print(f"memory: at most about {2 * biggest / GiB:.1f} GiB at once (the largest run's "
          f"values, {biggest / GiB:.1f} GiB, in its client and in the server)", flush=True)
    if shutil.which("memtier_benchmark") is None:
        print("memtier_benchmark: not installed, its rows are left out (Debian 12 has no "
              "package: build it from https://github.com/RedisLabs/memtier_benchmark, or "
              "install memtier-benchmark from Redis's apt repository, packages.redis.io)")
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark: not installed (Debian: redis-tools), its rows are left out")
    print(lmcache_line, flush=True)

    rows: list[dict] = []
    peer_failures: list[str] = []
    progress = Progress(len(runs) + (plan.rounds - 1) * sum(r.scored for r in runs) + 4)
    try:
        progress.step("loopback TCP limit")
        limits = pump_rows(pump)
        # The scorecard's rows run in every round, interleaved with the rest
        # (the first round runs everything), so that drift on a shared
        # machine hits all clients alike; each reports its median round.
        by_run: dict[int, list[list[dict]]] = {}
        for round_ in range(plan.rounds):
            for i, run in enumerate(runs):
                if round_ > 0 and not run.scored:
                    continue
                progress.step(run.label + (f" (round {round_ + 1})" if round_ else ""))
                if run.target == "null":
                    stripes = int(run.argv[run.argv.index("--stripes") + 1])
                    with local_redis.null_server(null_exe, 32 * MiB, stripes) as null_port:
                        got = run_json(run, "127.0.0.1", null_port)
                else:
                    with redis_server() as (host, port):
                        try:
                            got = run_json(run, host, port)
                        except PeerFailed as exc:
                            peer_failures.append(str(exc))
                            continue
                by_run.setdefault(i, []).append(got)
        for i in range(len(runs)):
            if i in by_run:  # an optional peer that failed every round has none
                rows += median_rows(by_run[i])
        progress.step("redis-benchmark / memtier_benchmark")
        with redis_server() as (host, port):
            rows += redis_benchmark_rows(host, port, 32, plan.num_chunks)
        with redis_server() as (host, port):
            rows += memtier_rows(host, port, 32, plan.num_chunks)
        progress.step("loopback TCP limit, again")
        for first, again in zip(limits, pump_rows(pump)):
            rows.append(max(first, again, key=lambda r: r["gb_per_s"]))
        progress.step("done")
    finally:
        progress.close()

    limit = add_ratios(rows)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    context = run_context(args.full, plan, time.strftime("%Y-%m-%d %H:%M"),
                          short_version() if not args.host
                          else f"{args.host}:{args.port}",
                          None if args.host else local_redis.settings(malloc_conf))
    print("\n" + context)
    if limit:
        print(f"best raw loopback TCP figure (the 'of TCP' base): {limit:.2f} GB/s")
    print_table(rows)
    card = scorecard(rows)
    print_scorecard(card)
    if not args.full:
        print("  (a quick run: one round, redis-py on 4 keys; `tools/run-demo --full` for "
              "50 keys and medians of 3 rounds)")
    ratios = lmcache_ratios(rows)
    for line in lmcache_summary_lines(ratios):
        print(line)
    for failure in peer_failures:
        print(f"LMCache C++ client: a run left out: {failure}")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"compare-{stamp}.json", args.out / f"compare-{stamp}.png"
    meta = dict(mode="full" if args.full else "quick", date=stamp, host=platform.node(),
                cpus=os.cpu_count(), python=platform.python_version(),
                redis_server=local_redis.version(),
                server_settings=None if args.host else local_redis.settings(malloc_conf),
                plan=plan.__dict__)
    json_path.write_text(json.dumps(dict(meta=meta, rows=rows, targets=card,
                                         lmcache_ratios=ratios, peer_failures=peer_failures),
                                    indent=1))
    md_path = args.out / f"compare-{stamp}-headline.md"
    md_path.write_text(headline_markdown(rows, context))
    print(f"\nwrote {json_path}\nwrote {md_path} (the README's first-screen table)")
    if plot(rows, png_path, context, default_stripes):
        print(f"wrote {png_path}")
    if not args.no_batches and not args.host:
        print("\nbatches: GET/SET/EXISTS of n keys per call (--no-batches leaves them out)",
              flush=True)
        run_batches(args)
    if not args.no_cluster and not args.host:
        print("\nRedis Cluster: 1, 2 and 3 masters, 32 MiB GET/SET, ours against redis-py's "
              "RedisCluster (--no-cluster leaves it out)", flush=True)
        run_cluster(args)
    if not args.no_l2 and not args.host:
        print("\nLMCache's own benchmark, `lmcache bench l2`: ours against LMCache's client "
              "(--no-l2 leaves it out)", flush=True)
        run_l2(args)


def run_batches(args: argparse.Namespace) -> None:
    """The batch comparison (benchmark/batch_compare.py), quick or --full."""
    clients = [c for c in args.clients if not (args.no_lmcache and c == "lmcache")]
    batch_compare.run(batch_compare.plan_from(args), args.servers, clients, args.out,
                      args.full, timeout=args.batch_timeout, lmcache_workers=args.lmcache_workers)


def run_cluster(args: argparse.Namespace) -> None:
    """The Redis Cluster rows (benchmark/cluster_compare.py), quick or --full."""
    cluster_compare.run([1, 2, 3], quick=not args.full, out=args.out)


def run_l2(args: argparse.Namespace) -> None:
    """`lmcache bench l2` (benchmark/lmcache_l2.py), quick or --full, with
    our default connections; one line and nothing more when it cannot run."""
    if args.no_lmcache:
        print("lmcache bench l2: skipped (--no-lmcache: it runs in LMCache's venv)")
        return
    lmcache_l2.run(lmcache_l2.FULL if args.full else lmcache_l2.QUICK, ["stock", "tuned"],
                   [lmcache_l2.DEFAULT_CONNECTIONS], args.out, args.full)


if __name__ == "__main__":
    main()
