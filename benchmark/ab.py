"""Before/after of a change, measured in one run.

Builds two revisions of the library side by side (git worktrees, each
installed into its own directory), then runs benchmark/lmcache_redis-bench.py
alternately against each, on the same server, and prints the median of each
side. Alternating keeps the drift of a shared machine out of the comparison.

    python benchmark/ab.py --before a9ae6e2 --after e08f772 --runs 5 --null \\
        -- --stripes 1 --connections 2 --num-chunks 32 --read
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from compare import MiB, ROOT, find_tool, local_redis


def build(rev: str) -> Path:
    """Installs revision `rev` into build/ab/<its commit>/lib; returns that
    path. Keyed by the commit, not the name: a branch or HEAD moves."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    base = ROOT / "build" / "ab" / commit
    tree, lib = base / "tree", base / "lib"
    if not (lib / "lmcache_redis").exists():
        if not tree.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree),
                            commit], check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(lib), str(tree)], check=True)
    return lib


def run_once(lib: Path, bench_args: list[str], host: str, port: int) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(lib))
    out = subprocess.run([sys.executable, str(ROOT / "benchmark" / "lmcache_redis-bench.py"),
                          *bench_args, "--host", host, "--port", str(port), "--json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision before the change")
    ap.add_argument("--after", default="HEAD", help="git revision after it (default HEAD)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("--null", action="store_true", help="against the null server")
    ap.add_argument("--fresh-server", action="store_true",
                    help="a new tuned redis-server for every run, so that each side writes into "
                         "an empty server, not into memory the other side just freed")
    ap.add_argument("bench_args", nargs=argparse.REMAINDER,
                    help="after --: arguments for lmcache_redis-bench.py")
    args = ap.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    if args.null:
        bench_args.append("--no-verify")
    sides = {"before": build(args.before), "after": build(args.after)}
    results: dict[str, list[dict]] = {"before": [], "after": []}

    size_mb = 32
    if "--size-mb" in bench_args:
        size_mb = float(bench_args[bench_args.index("--size-mb") + 1])
    stripes = int(bench_args[bench_args.index("--stripes") + 1]) if "--stripes" in bench_args else 1
    if args.null:
        exe = find_tool("lmr_null_server")
        if exe is None:
            sys.exit("build/c/lmr_null_server is missing: cmake --build build/c --target lmr_null_server")
        server = local_redis.null_server(exe, int(size_mb * MiB), stripes)
        port = server.__enter__()
        host = "127.0.0.1"
    elif not args.fresh_server:
        server = local_redis.start()
        host, port = server.host, server.port
    try:
        for _ in range(args.runs):
            for side, lib in sides.items():
                if args.fresh_server and not args.null:
                    with local_redis.running() as fresh:
                        results[side] += run_once(lib, bench_args, fresh.host, fresh.port)
                else:
                    results[side] += run_once(lib, bench_args, host, port)
    finally:
        if args.null:
            server.__exit__(None, None, None)
        elif not args.fresh_server:
            server.stop()

    print(f"{args.runs} alternating runs each: before {args.before}, after {args.after}; "
          f"lmcache_redis-bench.py {' '.join(bench_args)}"
          + (" (null server)" if args.null else " (a fresh server each run)" if args.fresh_server
             else ""))
    for op in ("set", "get"):
        for side in ("before", "after"):
            rows = [r for r in results[side] if r["op"] == op]
            if rows:
                gbs = [r["gb_per_s"] for r in rows]
                cpu = [r["cpu_s_per_gb"] for r in rows]
                print(f"  {op.upper()} {side:<6}: median {statistics.median(gbs):.2f} GB/s "
                      f"(runs {', '.join(f'{g:.2f}' for g in gbs)}), "
                      f"client CPU {statistics.median(cpu):.2f} s/GB")


if __name__ == "__main__":
    main()
