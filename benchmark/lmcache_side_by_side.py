"""lmcache_redis beside LMCache's own C++ RESP client, on a stock and a tuned server.

For each server kind (stock: Debian's redis-server with its defaults besides
``--save '' --appendonly no``; tuned: tools/local_redis.py's settings) and
each value size, it runs, each client in a process of its own on a fresh
server of that kind:

* one at a time: ``lmcache_redis-bench.py`` (its defaults, one call after
  another) and ``lmcache-cpp-bench.py`` (one key per submit; 8 workers);
* all keys in flight: ``lmcache_redis-bench.py --concurrent --threads 4``
  and ``lmcache-cpp-bench.py --concurrent`` (all keys in one batch) with
  8 and with 4 workers.

Every run times SET then GET (``--server-cpu``: the server's INFO cpu before
and after each timed section). ``--rounds`` rounds, the clients' order
reversed every other round; per row the median of the rounds. Prints a
markdown table (absolute figures and ours/LMCache ratios) and writes every
run's rows as JSON to benchmark/results/.

    python benchmark/lmcache_side_by_side.py                 # 4 and 32 MiB, 3 rounds
    python benchmark/lmcache_side_by_side.py --rounds 1 --servers tuned --sizes 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"
sys.path[:0] = [str(BENCH), str(ROOT / "tools")]

import bench_common  # noqa: E402
import lmcache_venv  # noqa: E402
import local_redis  # noqa: E402

MiB = 1 << 20
OURS, THEIRS = "lmcache_redis", "LMCache C++ (resp)"

# (name, which client, extra arguments)
CLIENTS = (
    ("ours, one at a time", OURS, []),
    ("LMCache, 1 key per submit", THEIRS, ["--num-workers", "8"]),
    ("ours, --concurrent --threads 4", OURS, ["--concurrent", "--threads", "4"]),
    ("LMCache, one batch, 8 workers", THEIRS, ["--concurrent", "--num-workers", "8"]),
    ("LMCache, one batch, 4 workers", THEIRS, ["--concurrent", "--num-workers", "4"]),
)
# The table's pairs: (mode, our client, LMCache's client).
PAIRS = (
    ("one at a time", "ours, one at a time", "LMCache, 1 key per submit"),
    ("all in flight (LMCache 8 workers)", "ours, --concurrent --threads 4",
     "LMCache, one batch, 8 workers"),
    ("all in flight (LMCache 4 workers)", "ours, --concurrent --threads 4",
     "LMCache, one batch, 4 workers"),
)


def run_client(client: str, extra: list[str], python: Path, size: int, chunks: int,
               host: str, port: int, timeout: float) -> list[dict]:
    script = "lmcache_redis-bench.py" if client == OURS else "lmcache-cpp-bench.py"
    py = sys.executable if client == OURS else str(python)
    argv = [py, str(BENCH / script), "--size-mb", str(size), "--num-chunks", str(chunks),
            "--host", host, "--port", str(port), "--json", "--server-cpu", *extra]
    out = subprocess.run(argv, capture_output=True, text=True, env=lmcache_venv.env(),
                         timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def med(values: list[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value: Optional[float], spec: str = ".2f", scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def table(results: dict[tuple, list[dict]], servers: list[str], sizes: list[int]) -> list[str]:
    """The markdown table: per server, size, op and pair, the medians of the
    rounds, their ratio, and the range of the per-round ratios (each round's
    two runs ran next to each other)."""
    def rows(kind: str, size: int, name: str, op: str) -> list[dict]:
        return results.get((kind, size, name, op), [])

    def cell(kind: str, size: int, name: str, op: str, field: str) -> Optional[float]:
        return med([r.get(field) for r in rows(kind, size, name, op)])

    lines = ["| server | size | op | mode | ours GB/s | LMCache GB/s | ours / LMCache "
             "(per-round range) | median ms ours / LMCache | client CPU s/GB ours / LMCache | "
             "server CPU s/GB ours / LMCache |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for kind in servers:
        for size in sizes:
            for op in ("set", "get"):
                for mode, ours, theirs in PAIRS:
                    a = cell(kind, size, ours, op, "gb_per_s")
                    b = cell(kind, size, theirs, op, "gb_per_s")
                    per_round = [x["gb_per_s"] / y["gb_per_s"] for x, y in
                                 zip(rows(kind, size, ours, op), rows(kind, size, theirs, op))]
                    spread = (f" ({min(per_round):.2f}-{max(per_round):.2f})"
                              if len(per_round) > 1 else "")
                    lat = [cell(kind, size, n, op, "latency_median_s") for n in (ours, theirs)]
                    cpu = [cell(kind, size, n, op, "cpu_s_per_gb") for n in (ours, theirs)]
                    srv = [cell(kind, size, n, op, "server_cpu_s_per_gb") for n in (ours, theirs)]
                    lines.append(
                        f"| {kind} | {size} MiB | {op.upper()} | {mode} | {fmt(a)} | {fmt(b)} | "
                        f"{fmt(a / b if a and b else None)}x{spread} | "
                        + (f"{fmt(lat[0], '.1f', 1e3)} / {fmt(lat[1], '.1f', 1e3)}"
                           if lat[0] is not None else "-")
                        + f" | {fmt(cpu[0])} / {fmt(cpu[1])} | {fmt(srv[0])} / {fmt(srv[1])} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 32], help="MiB (default 4 32)")
    ap.add_argument("--servers", nargs="+", choices=("stock", "tuned"),
                    default=["stock", "tuned"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib-per-run", type=int, default=640,
                    help="MiB each run moves each way: keys = this / size, at least 10 "
                         "(default 640: 20 x 32 MiB, 160 x 4 MiB)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per client run")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--table-from", type=Path, metavar="JSON",
                    help="print the table of an earlier run's JSON, run nothing")
    args = ap.parse_args()
    if args.table_from:
        saved = json.loads(args.table_from.read_text())
        results = {(r["server"], r["size_mb"], r["client"], r["op"]): r["rows"]
                   for r in saved["runs"]}
        servers = [k for k in ("stock", "tuned") if any(key[0] == k for key in results)]
        sizes = sorted({key[1] for key in results})
        print("\n".join(table(results, servers, sizes)))
        return

    python, why = lmcache_venv.ensure_or_none()
    if python is None:
        raise SystemExit(why)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{started}: {local_redis.version()}; stock: --save '' --appendonly no, jemalloc's "
          f"defaults; tuned: {local_redis.settings()}; sizes {args.sizes} MiB, "
          f"{args.rounds} rounds, a fresh server per client run", flush=True)

    results: dict[tuple, list[dict]] = {}  # (server, size, client name, op) -> rows
    for round_ in range(args.rounds):
        order = CLIENTS if round_ % 2 == 0 else CLIENTS[::-1]
        for kind in args.servers:
            for size in args.sizes:
                chunks = max(10, args.mib_per_run // size)
                for name, client, extra in order:
                    server = bench_common.start_server(kind)
                    try:
                        rows = run_client(client, extra, python, size, chunks, server.host,
                                          server.port, args.timeout)
                    finally:
                        server.stop()
                    for row in rows:
                        results.setdefault((kind, size, name, row["op"]), []).append(row)
                        print(f"  round {round_ + 1} {kind:5} {size:2} MiB {name:32} "
                              f"{row['op']} {row['gb_per_s']:5.2f} GB/s", flush=True)

    lines = table(results, args.servers, args.sizes)
    print()
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"lmcache-side-by-side-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(dict(
        date=started, redis_server=local_redis.version(), tuned=local_redis.settings(),
        rounds=args.rounds, table=lines,
        runs=[dict(server=k[0], size_mb=k[1], client=k[2], op=k[3], rows=v)
              for k, v in results.items()]), indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
