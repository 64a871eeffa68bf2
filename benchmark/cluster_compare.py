"""Redis Cluster throughput (issue #12): K = 1, 2, 3 masters (no replicas,
started here with lmcache_redis._testing.RedisCluster, one after another),
sequential and batched GET/SET of 32 MiB values, ours against redis-py's
``redis.cluster.RedisCluster``, with the client's and every server's CPU.

    python benchmark/cluster_compare.py            # full: 3 rounds, 24 values
    python benchmark/cluster_compare.py --quick    # 1 round, 8 values
    python benchmark/cluster_compare.py --shards 1 2 4 8   # on a bigger machine

Every figure comes from this run: GB/s is bytes over wall seconds of the
timed section, CPU is seconds per GB moved (the client from
time.process_time, each server from /proc/<pid>/stat utime+stime, summed
over the shards), medians over rounds; the ``x_redis_py`` column is ours
over redis-py's same row of the same K. Each read is checked against what
was written (untimed). Our rows need the cluster client
(``RedisClient(..., cluster=True)``); where it does not work yet they are
reported as not run, with why, and the redis-py rows still run.

Output: a markdown table on stdout and benchmark/results/cluster-compare-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import size_text  # noqa: E402

from lmcache_redis._testing import RedisCluster  # noqa: E402

MiB = 1 << 20
GB = 1e9
BATCH = 8  # keys per get_many/set_many call (and per redis-py pipeline)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def servers_cpu_seconds(cluster: RedisCluster) -> float:
    return sum(process_cpu_seconds(n.pid) for n in cluster.nodes if n.pid is not None)


def measure(section: Callable[[], None], cluster: RedisCluster, nbytes: int) -> dict:
    """Run ``section`` once, timed; GB/s and CPU s/GB of client and servers."""
    server_cpu = servers_cpu_seconds(cluster)
    wall, cpu = time.perf_counter(), time.process_time()
    section()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server_cpu = servers_cpu_seconds(cluster) - server_cpu
    gb = nbytes / GB
    return {"gbps": gb / wall, "client_cpu_s_per_gb": cpu / gb,
            "server_cpu_s_per_gb": server_cpu / gb}


def batches(items: list) -> list:
    return [items[i:i + BATCH] for i in range(0, len(items), BATCH)]


# ---- the clients' rows: each yields (row name, op, section, check) --------------------------


def ours_rows(cluster: RedisCluster, keys: list, values: list, size: int):
    from lmcache_redis import RedisClient

    client = RedisClient.from_url(cluster.url)
    out = [np.zeros(size, dtype=np.uint8) for _ in keys]

    def check() -> None:
        for k, got, want in zip(keys, out, values):
            if not np.array_equal(got, want):
                raise AssertionError(f"ours: {k} read back wrong")
            got.fill(0)

    def set_seq() -> None:
        for k, v in zip(keys, values):
            client.set(k, v)

    def get_seq() -> None:
        for k, b in zip(keys, out):
            client.get(k, b)

    def set_batched() -> None:
        for ks, vs in zip(batches(keys), batches(values)):
            client.set_many(ks, vs)

    def get_batched() -> None:
        for ks, bs in zip(batches(keys), batches(out)):
            client.get_many(ks, bs)

    try:
        yield "ours, sequential", "SET", set_seq, None
        yield "ours, sequential", "GET", get_seq, check
        yield f"ours, get_many/set_many of {BATCH}", "SET", set_batched, None
        yield f"ours, get_many/set_many of {BATCH}", "GET", get_batched, check
    finally:
        client.close()


def redis_py_rows(cluster: RedisCluster, keys: list, values: list, size: int):
    from redis.cluster import RedisCluster as PyRedisCluster

    seed = cluster.nodes[0]
    client = PyRedisCluster(host=seed.host, port=seed.port)
    got: dict = {}

    def check() -> None:
        for k, want in zip(keys, values):
            if got.get(k) != want.tobytes():
                raise AssertionError(f"redis-py: {k} read back wrong")
        got.clear()

    def set_seq() -> None:
        for k, v in zip(keys, values):
            client.set(k, v.tobytes())

    def get_seq() -> None:
        for k in keys:
            got[k] = client.get(k)

    # redis-py's cluster pipeline groups the commands by node and sends
    # each node's group in turn (not in parallel).
    def set_pipelined() -> None:
        for ks, vs in zip(batches(keys), batches(values)):
            pipe = client.pipeline(transaction=False)
            for k, v in zip(ks, vs):
                pipe.set(k, v.tobytes())
            pipe.execute()

    def get_pipelined() -> None:
        for ks in batches(keys):
            pipe = client.pipeline(transaction=False)
            for k in ks:
                pipe.get(k)
            got.update(zip(ks, pipe.execute()))

    try:
        yield "redis-py RedisCluster, sequential", "SET", set_seq, None
        yield "redis-py RedisCluster, sequential", "GET", get_seq, check
        yield f"redis-py RedisCluster, pipeline of {BATCH}", "SET", set_pipelined, None
        yield f"redis-py RedisCluster, pipeline of {BATCH}", "GET", get_pipelined, check
    finally:
        client.close()


CLIENTS = {"ours": ours_rows, "redis-py": redis_py_rows}


# ---- running ----------------------------------------------------------------------------------


def run_client(name: str, rows, cluster: RedisCluster, keys, values, size, rounds) -> list:
    results: dict = {}
    try:
        for _ in range(rounds):
            for row, op, section, check in rows(cluster, keys, values, size):
                m = measure(section, cluster, size * len(keys))
                if check is not None:
                    check()  # untimed
                results.setdefault((row, op), []).append(m)
            for master in cluster.masters():
                master.command("FLUSHALL")
    except Exception as exc:  # ours before the cluster client works, a peer's failure
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        print(f"  {name}: not run: {why}", file=sys.stderr)
        return [{"client": name, "row": None, "not_run": why}]
    return [{"client": name, "row": row, "op": op, "rounds": len(ms),
             **{k: statistics.median(m[k] for m in ms) for k in ms[0]}}
            for (row, op), ms in results.items()]


def add_ratios(rows: list) -> None:
    """x_redis_py: ours / redis-py's row of the same kind (sequential with
    sequential, batch with pipeline), op and K."""
    peer = {(r["shards"], r["op"], "sequential" in r["row"]): r["gbps"]
            for r in rows if r["client"] == "redis-py" and r.get("row")}
    for r in rows:
        if r["client"] == "ours" and r.get("row"):
            base = peer.get((r["shards"], r["op"], "sequential" in r["row"]))
            r["x_redis_py"] = r["gbps"] / base if base else None


def table(rows: list) -> str:
    lines = ["| shards | client | op | GB/s | x redis-py | client CPU s/GB | servers CPU s/GB |",
             "|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if not r.get("row"):
            lines.append(f"| {r['shards']} | {r['client']} | not run: {r['not_run']} | | | | |")
            continue
        ratio = f"{r['x_redis_py']:.2f}x" if r.get("x_redis_py") else ""
        lines.append(f"| {r['shards']} | {r['row']} | {r['op']} | {r['gbps']:.2f} | {ratio} | "
                     f"{r['client_cpu_s_per_gb']:.2f} | {r['server_cpu_s_per_gb']:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round of 8 values (~1 min)")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 3],
                        help="cluster sizes to measure, in masters (default 1 2 3)")
    parser.add_argument("--size-mb", type=float, default=32, help="value size (default 32)")
    parser.add_argument("--values", type=int, help="values per round (default 24; --quick 8)")
    parser.add_argument("--rounds", type=int, help="rounds, medians taken (default 3; --quick 1)")
    parser.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    count = args.values or (8 if args.quick else 24)
    rounds = args.rounds or (1 if args.quick else 3)
    size = int(args.size_mb * MiB)

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size + 8 * count, dtype=np.uint8)
    values = [np.ascontiguousarray(base[8 * i:8 * i + size]) for i in range(count)]
    keys = [f"cluster-bench:{i}" for i in range(count)]
    print(f"{count} x {size_text(size)} per round, {rounds} round(s), shards {args.shards}, "
          f"{os.cpu_count()} CPUs", file=sys.stderr)

    rows: list = []
    for k in args.shards:
        # The values here are the cluster's whole data set; no eviction,
        # no persistence (RedisCluster's nodes save nothing).
        with RedisCluster(masters=k, replicas=0) as cluster:
            print(f"K = {k}: {cluster.url}", file=sys.stderr)
            for name in args.clients:
                for r in run_client(name, CLIENTS[name], cluster, keys, values, size, rounds):
                    rows.append({"shards": k, **r})
    add_ratios(rows)

    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cluster-compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {"value_bytes": size, "values_per_round": count, "rounds": rounds, "batch": BATCH,
            "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\nJSON: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
