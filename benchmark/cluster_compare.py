"""Redis Cluster throughput (issue #12): K = 1, 2, 3 masters (no replicas,
started here with lmcache_redis._testing.RedisCluster, one after another),
sequential and batched GET/SET of 32 MiB values, ours against redis-py's
``redis.cluster.RedisCluster``, with the client's and every server's CPU.
For reference, the same rows against one plain (non-cluster) redis-server
started the same way (ours and redis-py's ``redis.Redis``), and the
loopback TCP limit (tools/tcp_pump.c, as benchmark/compare.py measures it).

    python benchmark/cluster_compare.py            # full: 3 rounds, 24 values (~5 min)
    python benchmark/cluster_compare.py --quick    # 1 round, 8 values (~1 min)
    python benchmark/cluster_compare.py --shards 1 2 4 8   # on a bigger machine
    python benchmark/cluster_compare.py --table-from benchmark/results/cluster-compare-<date>.json

Every figure comes from this run: GB/s is bytes over wall seconds of the
timed section, CPU is seconds per GB moved (the client from
time.process_time, its C worker threads included; each server from
/proc/<pid>/stat utime+stime, summed over the shards and given per shard),
medians over rounds; the ``x redis-py`` column is ours over redis-py's row
of the same kind (sequential with sequential, batch with pipeline), op and
setup. The rounds interleave the clients. Every server is Debian's stock
redis-server (``save ''``, ``appendonly no``, jemalloc's defaults, as the
test suite's; no tuning), our client with its defaults (4 connections per
master).

Checked, untimed: every GET row's buffers against what was written (the
batched SET writes each key another value than the sequential one, so the
batched GET also checks that ``set_many`` replaced them), and after each
SET row the keys each shard holds (DBSIZE: ours spreads a value's parts
over the masters, redis-py keeps one key per value). Our GET buffers are
written once before timing (as LMCache's are: preallocated), so no row
pays the kernel's first-touch page faults for them; redis-py's ``get``
allocates a new bytes object per value, as its API must.

Output: a markdown table on stdout and benchmark/results/cluster-compare-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from bench_common import size_text  # noqa: E402

from lmcache_redis._testing import RedisCluster, RedisServer  # noqa: E402

MiB = 1 << 20
GB = 1e9
BATCH = 8  # keys per get_many/set_many call (and per redis-py pipeline)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SINGLE = "single server"


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass
class Setup:
    """What the clients run against: a cluster of K masters, or one plain
    server. ``servers`` are the processes whose CPU counts (the masters)."""

    label: str                       # "K = 2" / SINGLE
    shards: int
    url: str                         # ours: RedisClient.from_url
    servers: list = field(default_factory=list)   # RedisServer / ClusterNode
    cluster: Optional[RedisCluster] = None

    def server_cpu(self) -> list:
        return [process_cpu_seconds(s.pid) for s in self.servers]

    def dbsizes(self) -> list:
        return [int(s.command("DBSIZE")) for s in self.servers]

    def flush(self) -> None:
        for s in self.servers:
            s.command("FLUSHALL")

    def redis_py(self):
        seed = self.servers[0]
        if self.cluster is None:
            import redis
            return redis.Redis(host=seed.host, port=seed.port)
        from redis.cluster import RedisCluster as PyRedisCluster
        return PyRedisCluster(host=seed.host, port=seed.port)


def measure(section: Callable[[], None], setup: Setup, nbytes: int) -> dict:
    """Run ``section`` once, timed; GB/s and CPU s/GB of client and servers."""
    before = setup.server_cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    section()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    per_server = [b - a for a, b in zip(before, setup.server_cpu())]
    gb = nbytes / GB
    return {"gbps": gb / wall, "client_cpu_s_per_gb": cpu / gb,
            "server_cpu_s_per_gb": sum(per_server) / gb,
            "per_shard_cpu_s_per_gb": [s / gb for s in per_server]}


def batches(items: list) -> list:
    return [items[i:i + BATCH] for i in range(0, len(items), BATCH)]


def rotated(values: list) -> list:
    """What the batched SET writes: key i gets value i + 1 (so a GET after
    it tells whether the batch replaced the sequential SET's values)."""
    return values[1:] + values[:1]


# ---- the clients' rows: each yields (row name, op, section, check) --------------------------
# A check runs untimed after its section and returns extra fields for the row (or None).


def ours_rows(setup: Setup, keys: list, values: list, size: int):
    from lmcache_redis import RedisClient

    client = RedisClient.from_url(setup.url)
    out = [np.empty(size, dtype=np.uint8) for _ in keys]
    for b in out:
        b.fill(1)  # first-touch page faults here, not in the timed GET

    def check_get(want_values: list) -> Callable[[], None]:
        def check() -> None:
            for k, got, want in zip(keys, out, want_values):
                if not np.array_equal(got, want):
                    raise AssertionError(f"ours: {k} read back wrong")
                got.fill(1)
        return check

    def set_seq() -> None:
        for k, v in zip(keys, values):
            client.set(k, v)

    def get_seq() -> None:
        for k, b in zip(keys, out):
            if client.get(k, b) != size:
                raise AssertionError(f"ours: {k} missing")

    def set_batched() -> None:
        for ks, vs in zip(batches(keys), batches(rotated(values))):
            client.set_many(ks, vs)

    def get_batched() -> None:
        for ks, bs in zip(batches(keys), batches(out)):
            if client.get_many(ks, bs) != [size] * len(ks):
                raise AssertionError(f"ours: a key of {ks} missing")

    def spread() -> dict:
        return {"keys_per_shard": setup.dbsizes()}

    try:
        yield "ours, sequential", "SET", set_seq, spread
        yield "ours, sequential", "GET", get_seq, check_get(values)
        yield f"ours, get_many/set_many of {BATCH}", "SET", set_batched, spread
        yield f"ours, get_many/set_many of {BATCH}", "GET", get_batched, check_get(rotated(values))
    finally:
        client.close()


def redis_py_rows(setup: Setup, keys: list, values: list, size: int):
    client = setup.redis_py()
    name = "redis-py RedisCluster" if setup.cluster is not None else "redis-py"
    got: dict = {}
    # memoryviews: redis-py sends them as they are, without a copy.
    views = [memoryview(v) for v in values]

    def check_get(want_values: list) -> Callable[[], None]:
        def check() -> None:
            for k, want in zip(keys, want_values):
                g = got.get(k)
                if g is None or g != want.tobytes():
                    raise AssertionError(f"redis-py: {k} read back wrong")
            got.clear()
        return check

    def set_seq() -> None:
        for k, v in zip(keys, views):
            client.set(k, v)

    def get_seq() -> None:
        for k in keys:
            got[k] = client.get(k)

    # redis-py's cluster pipeline groups the commands by node and sends
    # each node's group in turn (not in parallel).
    def set_pipelined() -> None:
        for ks, vs in zip(batches(keys), batches(rotated(views))):
            pipe = client.pipeline(transaction=False)
            for k, v in zip(ks, vs):
                pipe.set(k, v)
            pipe.execute()

    def get_pipelined() -> None:
        for ks in batches(keys):
            pipe = client.pipeline(transaction=False)
            for k in ks:
                pipe.get(k)
            got.update(zip(ks, pipe.execute()))

    def spread() -> dict:
        return {"keys_per_shard": setup.dbsizes()}

    try:
        yield f"{name}, sequential", "SET", set_seq, spread
        yield f"{name}, sequential", "GET", get_seq, check_get(values)
        yield f"{name}, pipeline of {BATCH}", "SET", set_pipelined, spread
        yield f"{name}, pipeline of {BATCH}", "GET", get_pipelined, check_get(rotated(values))
    finally:
        client.close()


CLIENTS = {"ours": ours_rows, "redis-py": redis_py_rows}


# ---- running ----------------------------------------------------------------------------------


def run_setup(setup: Setup, clients: list, keys, values, size, rounds) -> list:
    """Every client's rows on ``setup``, ``rounds`` times, the clients
    interleaved in each round; medians per row. A client that fails is
    reported as not run (with why), the others go on."""
    results: dict = {}
    failed: dict = {}
    for _ in range(rounds):
        for name in clients:
            if name in failed:
                continue
            try:
                for row, op, section, check in CLIENTS[name](setup, keys, values, size):
                    m = measure(section, setup, size * len(keys))
                    extra = check() if check is not None else None  # untimed
                    results.setdefault((name, row, op), []).append({**m, **(extra or {})})
            except Exception as exc:  # a client's failure: say so, go on with the others
                why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
                print(f"  {setup.label}, {name}: not run: {why}", file=sys.stderr)
                failed[name] = why
            setup.flush()
    rows = []
    for (name, row, op), ms in results.items():
        if name in failed:
            continue
        med = {k: statistics.median(m[k] for m in ms)
               for k in ("gbps", "client_cpu_s_per_gb", "server_cpu_s_per_gb")}
        # per shard: each shard's median over the rounds
        med["per_shard_cpu_s_per_gb"] = [statistics.median(col) for col in
                                         zip(*(m["per_shard_cpu_s_per_gb"] for m in ms))]
        med["gbps_rounds"] = [m["gbps"] for m in ms]
        if "keys_per_shard" in ms[-1]:
            med["keys_per_shard"] = ms[-1]["keys_per_shard"]
        rows.append({"setup": setup.label, "shards": setup.shards, "client": name, "row": row,
                     "op": op, "rounds": len(ms), **med})
    for name, why in failed.items():
        rows.append({"setup": setup.label, "shards": setup.shards, "client": name, "row": None,
                     "not_run": why})
    return rows


def add_ratios(rows: list) -> None:
    """x_redis_py: ours / redis-py's row of the same kind (sequential with
    sequential, batch with pipeline), op and setup."""
    peer = {(r["setup"], r["op"], "sequential" in r["row"]): r["gbps"]
            for r in rows if r["client"] == "redis-py" and r.get("row")}
    for r in rows:
        if r["client"] == "ours" and r.get("row"):
            base = peer.get((r["setup"], r["op"], "sequential" in r["row"]))
            r["x_redis_py"] = r["gbps"] / base if base else None


def table(rows: list) -> str:
    lines = ["| setup | client | op | GB/s | rounds' range | x redis-py | client CPU s/GB | "
             "servers CPU s/GB (sum) | per shard | keys per shard |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if not r.get("row"):
            lines.append(f"| {r['setup']} | {r['client']} | not run: {r['not_run']} "
                         "| | | | | | | |")
            continue
        ratio = f"{r['x_redis_py']:.2f}x" if r.get("x_redis_py") else ""
        per = " / ".join(f"{c:.2f}" for c in r["per_shard_cpu_s_per_gb"])
        spread = " / ".join(map(str, r.get("keys_per_shard", []))) if r["op"] == "SET" else ""
        spread_gbps = r.get("gbps_rounds", [])
        span = (f"{min(spread_gbps):.2f}–{max(spread_gbps):.2f}" if len(spread_gbps) > 1 else "")
        lines.append(f"| {r['setup']} | {r['row']} | {r['op']} | {r['gbps']:.2f} | {span} | "
                     f"{ratio} | "
                     f"{r['client_cpu_s_per_gb']:.2f} | {r['server_cpu_s_per_gb']:.2f} | "
                     f"{per} | {spread} |")
    return "\n".join(lines)


def limits_text(limits: list) -> str:
    return "; ".join(f"{r['variant']} {r['gb_per_s']:.2f} GB/s" for r in limits)


def loopback_limits() -> list:
    """compare.py's loopback TCP rows (1 and 2 streams raw, 2 streams
    landing in 32 MiB areas); [] without build/c/lmr_tcp_pump."""
    import compare
    return compare.pump_rows(compare.find_tool("lmr_tcp_pump"))


def commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def print_report(data: dict) -> None:
    meta = data["meta"]
    print(f"\n{meta['mode']} run of benchmark/cluster_compare.py, {meta['date']} "
          f"(commit {meta.get('commit')}): {meta['values_per_round']} x "
          f"{size_text(meta['value_bytes'])} per row, {meta['rounds']} round(s)"
          + (" (median)" if meta["rounds"] > 1 else "")
          + f", {meta['cpus']} CPUs, load average {meta['load_average_before'][0]:.2f} before "
            f"and {meta['load_average_after'][0]:.2f} after; {meta.get('redis_server', '')}")
    if data.get("limits"):
        print(f"loopback TCP limit (tools/tcp_pump.c, better of start and end): "
              f"{limits_text(data['limits'])}")
    print(table(data["rows"]))


def run(shards: list, quick: bool, out: Path, *, values: Optional[int] = None,
        rounds: Optional[int] = None, size_mb: float = 32, clients: Optional[list] = None,
        single: bool = True, limits: bool = True) -> Path:
    """The whole comparison; prints the report, returns the JSON's path."""
    clients = clients or list(CLIENTS)
    count = values or (8 if quick else 24)
    rounds = rounds or (1 if quick else 3)
    size = int(size_mb * MiB)

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size + 8 * count, dtype=np.uint8)
    vals = [np.ascontiguousarray(base[8 * i:8 * i + size]) for i in range(count)]
    keys = [f"cluster-bench:{i}" for i in range(count)]
    print(f"cluster comparison: {count} x {size_text(size)} per row, {rounds} round(s), "
          f"shards {shards}" + (", and a single server" if single else "")
          + f", {os.cpu_count()} CPUs", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    start = time.monotonic()

    first_limits = loopback_limits() if limits else []
    rows: list = []
    # The values here are the servers' whole data set; no eviction, no
    # persistence (the test servers save nothing).
    if single:
        with RedisServer() as server:
            print(f"{SINGLE}: {server.url}", file=sys.stderr, flush=True)
            rows += run_setup(Setup(SINGLE, 1, server.url, [server]), clients, keys, vals,
                              size, rounds)
    for k in shards:
        with RedisCluster(masters=k, replicas=0) as cluster:
            print(f"K = {k}: {cluster.url}", file=sys.stderr, flush=True)
            setup = Setup(f"cluster, K = {k}", k, cluster.url, cluster.masters(), cluster)
            rows += run_setup(setup, clients, keys, vals, size, rounds)
    lims = ([max(a, b, key=lambda r: r["gb_per_s"]) for a, b in zip(first_limits, loopback_limits())]
            if first_limits else [])
    add_ratios(rows)

    from lmcache_redis._testing import find_redis_server
    version = subprocess.run([find_redis_server(), "--version"], capture_output=True,
                             text=True).stdout.strip()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {"mode": "quick" if quick else "full", "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "commit": commit(), "value_bytes": size, "values_per_round": count,
            "rounds": rounds, "batch": BATCH, "cpus": os.cpu_count(), "redis_server": version,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "seconds": round(time.monotonic() - start, 1)}
    data = {"meta": meta, "limits": lims, "rows": rows}
    print_report(data)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cluster-compare-{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    print(f"\nJSON: {path} ({meta['seconds']:.0f} s)", file=sys.stderr)
    return path


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
    parser.add_argument("--no-single-server", action="store_true",
                        help="leave out the reference rows against one plain redis-server")
    parser.add_argument("--no-limits", action="store_true",
                        help="leave out the loopback TCP limit (tools/tcp_pump.c)")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--table-from", type=Path, metavar="JSON",
                        help="print the report of an earlier run's JSON and stop")
    args = parser.parse_args(argv)
    if args.table_from:
        print_report(json.loads(args.table_from.read_text()))
        return 0
    if any(k < 1 for k in args.shards):
        parser.error("--shards: each cluster needs at least 1 master")
    run(args.shards, args.quick, args.out, values=args.values, rounds=args.rounds,
        size_mb=args.size_mb, clients=args.clients, single=not args.no_single_server,
        limits=not args.no_limits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
