"""The stripe sweep behind lmcache_redis's defaults (BENCHMARKS.md).

For each value size, runs benchmark/lmcache_redis-bench.py (sequential SET
then GET of --num-chunks values) over a grid of stripe sizes and connection
counts, against one throwaway tuned redis-server (tools/local_redis.py) and,
with --null, against the null server too. Prints a Markdown table per size
and target (GB/s, GET / SET) and writes every row as JSON.

    python benchmark/sweep.py                          # 4, 32, 80 MiB; real server
    python benchmark/sweep.py --sizes 32 --null --connections 1 2 4
    python benchmark/sweep.py --server-args --io-threads 2   # other server settings
    python benchmark/sweep.py --malloc-conf none dirty_decay_ms:-1  # jemalloc settings
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from compare import BENCH, MiB, Progress, find_tool, local_redis, run_json, Run, script


def sweep_grid(args: argparse.Namespace, grid: list[tuple], target: str, conf: str,
               server, null_exe, progress: Progress) -> list[dict]:
    """Runs every cell of the grid against one target (server: the running
    redis-server, or None for the null server, started per cell)."""
    rows: list[dict] = []
    for size, ss, conns in grid:
        count = max(1, -(-size * MiB // int(ss * MiB)))
        progress.step(f"{target} {size} MiB, {count} stripes, {conns} connections")
        argv = script("lmcache_redis-bench.py", "--size-mb", size, "--num-chunks",
                      args.num_chunks, "--stripes", count, "--connections", conns)
        if target == "null":
            with local_redis.null_server(null_exe, size * MiB, count) as port:
                got = run_json(Run("", argv + ["--no-verify"], "null"), "127.0.0.1", port)
        else:
            unix = ["--unix-socket", server.unix_path] if args.unix else []
            got = run_json(Run("", argv + unix), server.host, server.port)
        for row in got:
            row["stripe_size"] = ss * MiB
            row["malloc_conf"] = conf
        rows += got
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 32, 80], help="value sizes, MiB")
    ap.add_argument("--stripe-sizes", type=float, nargs="+", default=[0.5, 1, 2, 4, 8, 16],
                    help="stripe sizes to try, MiB (count = ceil(value / stripe size))")
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--num-chunks", type=int, default=16)
    ap.add_argument("--null", action="store_true", help="also against the null server")
    ap.add_argument("--unix", action="store_true", help="connect over a Unix socket")
    ap.add_argument("--malloc-conf", nargs="+", default=[local_redis.MALLOC_CONF],
                    help="MALLOC_CONF settings for the server's jemalloc, one server each in "
                         "turn ('none': jemalloc's defaults); default: the launcher's, "
                         f"{local_redis.MALLOC_CONF}")
    ap.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                    help="extra redis-server arguments (after TUNED_ARGS)")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    args = ap.parse_args()

    grid = [(size, ss, conns) for size in args.sizes for ss in args.stripe_sizes
            for conns in args.connections if ss <= size or ss == args.stripe_sizes[0]]
    targets = ["redis"] + (["null"] if args.null else [])
    null_exe = find_tool("lmr_null_server")
    if args.null and null_exe is None:
        sys.exit("build/c/lmr_null_server is missing: cmake --build build/c --target lmr_null_server")
    confs = ["" if c == "none" else c for c in args.malloc_conf]
    servers = [(target, conf) for target in targets for conf in (confs if target == "redis" else [""])]
    rows: list[dict] = []
    progress = Progress(len(grid) * len(servers))
    try:
        for target, conf in servers:
            with (local_redis.running(list(args.server_args), unix_socket=args.unix,
                                      malloc_conf=conf)
                  if target == "redis" else contextlib.nullcontext()) as server:
                rows += sweep_grid(args, grid, target, conf, server, null_exe, progress)
    finally:
        progress.close()

    settings = " ".join(local_redis.TUNED_ARGS + list(args.server_args))
    print(f"server: {local_redis.version()}; settings: {settings}; "
          f"{args.num_chunks} values per cell, sequential; GB/s as GET / SET"
          + ("; Unix socket" if args.unix else ""))
    for target, conf in servers:
        for size in args.sizes:
            cells = {(r["stripes"], r["connections"], r["op"]): r["gb_per_s"] for r in rows
                     if r["target"] == target and r["malloc_conf"] == conf
                     and r["size_bytes"] == size * MiB}
            counts = sorted({c for c, _, _ in cells})
            print(f"\n{size} MiB values, {target} server"
                  + (f", MALLOC_CONF={conf or 'none'}" if target == "redis" else "") + "\n")
            print("| stripes (size) | " + " | ".join(f"{c} conn" for c in args.connections) + " |")
            print("|---" * (len(args.connections) + 1) + "|")
            for count in counts:
                line = [f"{cells.get((count, c, 'get'), 0):.2f} / {cells.get((count, c, 'set'), 0):.2f}"
                        if (count, c, "get") in cells else "-" for c in args.connections]
                print(f"| {count} ({size / count:.3g} MiB) | " + " | ".join(line) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(dict(settings=settings, rows=rows), indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
