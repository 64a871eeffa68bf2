"""Batches side by side (issue #10): GET, SET and EXISTS of n keys per call.

For each server kind (stock: Debian's redis-server, jemalloc's defaults;
tuned: tools/local_redis.py's settings) one server, and on it, in one run,
each client in a process of its own (benchmark/batch_worker.py):

* ours sync: ``set_many`` / ``get_many`` / ``exists_many``;
* ours asyncio: ``await`` them on lmcache_redis.asyncio.RedisClient;
* LMCache's own C++ RESP client (lmcache 0.5.6, from .venv-lmcache, made
  when missing): ``submit_batch_set`` / ``_get`` / ``_exists`` of the n keys;
* redis-py: a pipeline of n commands; redis.asyncio: n calls gathered, at
  most 8 in flight (EXISTS: one pipeline).

(Until lmcache_redis has the batch API, ours run as labelled stand-ins: 4
threads on the single-key calls.)

Cells: n keys per batch x value size (quick: 1, 16 keys x 4, 32 MiB; full:
1, 4, 16, 64 x 4, 8, 32, 64 MiB), each SET (to keys not yet written), GET
(checked) and EXISTS; and EXISTS of a 1,000-key batch (64 KiB values).
A cell's batch is repeated (each repetition timed alone, then summed)
until it moved --min-mib, 128 MiB (EXISTS: at least 1,000 keys checked, 3
batches). Rounds: 3; in the full matrix batches of 1 GiB and more (16 x
64, 64 x 32, 64 x 64 MiB: each takes seconds, redis-py's up to 15) run 2
(their median is the mean). Before the rounds, the largest batch is
written once, untimed, and flushed.
In each round every client runs every cell, the clients' order rotating
from round to round; between cells the server is flushed and the client
frees its buffers, so that one batch of 64 x 64 MiB (4 GiB) is all a
process holds. Per row the median of the rounds: GB/s (EXISTS: keys/s),
client CPU s/GB (the worker's process_time), server CPU s/GB (INFO cpu
user + sys before and after each batch), and for the asyncio clients the
loop's worst lag during a call (a 1 ms ticker task's longest gap).

Prints markdown tables, ratios of ours against LMCache's client and
against redis-py's better mode in extra columns, and writes them and every
round's rows as JSON to benchmark/results/batch-compare-<date>.json.

    python benchmark/compare.py --batches          # quick (the README's demo), ~2 min
    python benchmark/compare.py --batches --full   # the whole matrix, ~13 min
    python benchmark/batch_compare.py --servers tuned --sizes 32 --keys 16 --rounds 1
    python benchmark/batch_compare.py --table-from benchmark/results/batch-compare-<date>.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"
sys.path[:0] = [str(BENCH), str(ROOT / "tools")]

import bench_common  # noqa: E402
import lmcache_venv  # noqa: E402
import local_redis  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
GB = 1e9

# Worker --client names, in the tables' order; which are ours, which peers.
OURS = ("ours-sync", "ours-asyncio")
PEERS = ("lmcache", "redis-py", "redis-py-asyncio")
REDIS_PY = ("redis-py", "redis-py-asyncio")
SHORT = {"ours-sync": "ours sync", "ours-asyncio": "ours asyncio", "lmcache": "LMCache C++",
         "redis-py": "redis-py pipeline", "redis-py-asyncio": "redis-py asyncio"}
OPS = ("get", "set")


@dataclass
class Plan:
    sizes_mib: list[int]
    keys: list[int]
    rounds: int
    min_mib: int = 128               # each cell's SET/GET repeated until it moved this much
    exists_keys: int = 1000          # the big EXISTS batch (0: none)
    exists_value_kib: int = 64
    min_exists_keys: int = 1000      # each EXISTS row checks at least this many keys
    min_exists_batches: int = 3
    big_mib: int = 1024              # cells whose batch moves this much or more ...
    big_rounds: Optional[int] = None  # ... run this many rounds (None: rounds)


QUICK = Plan(sizes_mib=[4, 32], keys=[1, 16], rounds=3)
# The batches of 1 GiB and more (16 x 64, 64 x 32, 64 x 64 MiB) are 2/3 of
# the bytes (redis-py moves them at 0.3 GB/s: 14 s for one 4 GiB SET), half
# the run's time per round: 2 rounds of them keep the full matrix near 13
# minutes on 2 cores (3 would take 18).
FULL = Plan(sizes_mib=[4, 8, 32, 64], keys=[1, 4, 16, 64], rounds=3, big_rounds=2)


def cells(plan: Plan) -> list[dict]:
    """The cells every client runs: dicts for batch_worker (size, n, reps
    per op), plus their name and how many rounds they run."""
    out = []
    for size_mib in plan.sizes_mib:
        for n in plan.keys:
            moved = n * size_mib * MiB
            reps = math.ceil(plan.min_mib * MiB / moved)
            big = moved >= plan.big_mib * MiB and plan.big_rounds is not None
            out.append(dict(name=f"{size_mib} MiB x {n}", size=size_mib * MiB, n=n,
                            rounds=plan.big_rounds if big else plan.rounds,
                            reps=dict(set=reps, get=reps, exists=max(
                                plan.min_exists_batches, math.ceil(plan.min_exists_keys / n)))))
    if plan.exists_keys:
        out.append(dict(name=f"EXISTS x {plan.exists_keys}", size=plan.exists_value_kib << 10,
                        n=plan.exists_keys, rounds=plan.rounds,
                        reps=dict(exists=plan.min_exists_batches)))
    return out


def server_bytes(cell: dict) -> int:
    """What a cell's keys hold on the server at most (every SET repetition
    writes keys of its own)."""
    return cell["n"] * cell["size"] * max(cell["reps"].get("set", 1), 1)


# Values a client may have in flight at once, each in a query buffer of the
# server's until its SET is done: LMCache's 8 workers, redis.asyncio's 8.
IN_FLIGHT = 8


def maxmemory(plan: Plan) -> int:
    """Room for the largest cell: its values in jemalloc's size classes
    (64 MiB and a few header bytes take 80 MiB), the values in flight in
    query buffers (as much again: the new value and the one being read),
    and 512 MiB more. Over it a SET is refused (noeviction), which fails
    the cell loudly instead of swapping the machine."""
    largest = max(plan.sizes_mib) * MiB
    return int((max(map(server_bytes, cells(plan))) + 2 * IN_FLIGHT * largest) * 1.25) \
        + 512 * MiB


class Worker:
    """One batch_worker.py process: one client, connected for the run."""

    def __init__(self, client: str, python: str, port: int, timeout: float,
                 lmcache_workers: int) -> None:
        self.client, self.timeout = client, timeout
        self.log = tempfile.TemporaryFile(mode="w+")
        argv = [python, str(BENCH / "batch_worker.py"), "--client", client, "--port", str(port),
                "--timeout", str(timeout), "--lmcache-workers", str(lmcache_workers)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=lmcache_venv.env())
        hello = self._reply(120)
        if "ready" not in hello:
            self.stop()
            raise RuntimeError(hello.get("error", "no reply"))
        self.label, self.variant = hello["label"], hello["variant"]

    def _reply(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            # Hung (LMCache's client has no timeouts) or gone: no quit to wait for.
            self.proc.kill()
            self.proc.wait()
            why = "no reply within %.0f s" % timeout if not ready else "it exited"
            return dict(error=f"{why}; its last words: {self.last_words()}")
        return json.loads(line)

    def last_words(self) -> str:
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().splitlines() if line.strip()]
        return " | ".join(lines[-3:])[-600:] or "(nothing)"

    def run(self, cell: dict) -> dict:
        batches = sum(cell["reps"].values()) + 1
        try:
            self.proc.stdin.write(json.dumps(cell) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            return dict(error=f"it is gone ({exc}); its last words: {self.last_words()}")
        return self._reply(self.timeout * batches + 120)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        if kill and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"quit": true}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def med(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


@dataclass
class Summary:
    """Per (server, cell, client, op) the medians of the rounds."""

    labels: dict = field(default_factory=dict)      # client -> label as run
    variants: dict = field(default_factory=dict)    # client -> what it ran, in words
    rows: dict = field(default_factory=dict)        # (server, cell, client, op) -> dict

    def add(self, raw: list[dict]) -> None:
        groups: dict[tuple, list[dict]] = {}
        for r in raw:
            groups.setdefault((r["server"], r["cell"], r["client"], r["op"]), []).append(r)
        for key, rs in groups.items():
            self.rows[key] = dict(
                rounds=len(rs),
                gb_per_s=med([r["bytes"] / r["seconds"] / GB if r["bytes"] else None for r in rs]),
                gb_per_s_rounds=[r["bytes"] / r["seconds"] / GB for r in rs if r["bytes"]],
                keys_per_s=med([r["keys"] / r["seconds"] for r in rs]),
                cpu_s_per_gb=med([r["cpu_seconds"] / (r["bytes"] / GB) if r["bytes"] else None
                                  for r in rs]),
                server_cpu_s_per_gb=med([
                    r["server_cpu_seconds"] / (r["bytes"] / GB)
                    if r["bytes"] and r["server_cpu_seconds"] is not None else None
                    for r in rs]),
                cpu_us_per_key=med([r["cpu_seconds"] / r["keys"] * 1e6 for r in rs]),
                server_cpu_us_per_key=med([r["server_cpu_seconds"] / r["keys"] * 1e6
                                           if r["server_cpu_seconds"] is not None else None
                                           for r in rs]),
                loop_lag_max_ms=med([r["loop_lag_max_s"] * 1e3
                                     if r["loop_lag_max_s"] is not None else None for r in rs]))

    def get(self, server: str, cell: str, client: str, op: str, what: str) -> Optional[float]:
        row = self.rows.get((server, cell, client, op))
        return None if row is None else row.get(what)


def fmt(value: Optional[float], spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def tables(summary: Summary, servers: list[str], plan_cells: list[dict],
           clients: list[str]) -> list[str]:
    """The markdown: throughput with ratios, CPU and loop lag, EXISTS."""
    ours = [c for c in OURS if c in clients]
    peers = [c for c in PEERS if c in clients]
    loops = [c for c in clients if "asyncio" in c]
    name = {c: summary.labels.get(c, SHORT[c]) for c in clients}
    big = [c for c in plan_cells if "set" in c["reps"]]

    def value(cell: dict) -> str:
        return (f"{cell['size'] // MiB} MiB" if cell["size"] >= MiB
                else f"{cell['size'] >> 10} KiB")

    def at(server: str, cell: dict, op: str, what: str, c: str) -> Optional[float]:
        return summary.get(server, cell["name"], c, op, what)

    head = ["server", "op", "value", "keys"]
    lines = ["**GET and SET, GB/s** (10^9 bytes/s; median of the rounds). Ratios: ours over "
             "LMCache's client, over redis-py's better mode, and the worse of ours over the "
             "best peer.", "",
             md_row(head + [name[c] for c in clients]
                    + [f"{SHORT[o]} / {peer}" for o in ours for peer in ("LMCache", "redis-py")]
                    + ["ours (worse) / best peer"]),
             md_row(["---"] * 2 + ["---:"] * (2 + len(clients) + 2 * len(ours) + 1))]
    for server in servers:
        for op in OPS:
            for cell in big:
                g = {c: at(server, cell, op, "gb_per_s", c) for c in clients}
                rp = max((g[c] for c in REDIS_PY if g.get(c)), default=None)
                best = max((g[c] for c in peers if g.get(c)), default=None)
                worse = min((g[c] for c in ours if g.get(c)), default=None)
                lines.append(md_row(
                    [server, op.upper(), value(cell), str(cell["n"])]
                    + [fmt(g[c]) for c in clients]
                    + [r for o in ours for r in (ratio(g[o], g.get("lmcache")), ratio(g[o], rp))]
                    + [ratio(worse, best)]))
    lines += ["", "**CPU per GB and the loop's lag** (medians of the rounds): client CPU "
              "(the client's whole process, all threads) and server CPU (INFO cpu) in s/GB, "
              "in the order " + " / ".join(name[c] for c in clients)
              + ("; the asyncio clients' worst loop lag during one call, ms" if loops else "")
              + ".", "",
              md_row(head + ["client CPU s/GB", "server CPU s/GB"]
                     + [f"{name[c]} lag ms" for c in loops]),
              md_row(["---", "---", "---:", "---:", "---", "---"] + ["---:"] * len(loops))]
    for server in servers:
        for op in OPS:
            for cell in big:
                def all_(what: str) -> str:
                    return " / ".join(fmt(at(server, cell, op, what, c)) for c in clients)
                lines.append(md_row(
                    [server, op.upper(), value(cell), str(cell["n"]),
                     all_("cpu_s_per_gb"), all_("server_cpu_s_per_gb")]
                    + [fmt(at(server, cell, op, "loop_lag_max_ms", c), ".1f") for c in loops]))
    lines += ["", "**EXISTS, thousands of keys/s** (every key present; median of the rounds), "
              "with ours over the best peer, the client's and the server's CPU µs per key "
              "(order as above)" + (" and the asyncio clients' worst loop lag, ms" if loops
                                    else "") + ".", "",
              md_row(["server", "batch"] + [name[c] for c in clients]
                     + [f"{SHORT[o]} / best peer" for o in ours]
                     + ["client CPU µs/key", "server CPU µs/key"]
                     + [f"{name[c]} lag ms" for c in loops]),
              md_row(["---", "---"] + ["---:"] * (len(clients) + len(ours)) + ["---", "---"]
                     + ["---:"] * len(loops))]
    for server in servers:
        for cell in plan_cells:
            k = {c: at(server, cell, "exists", "keys_per_s", c) for c in clients}
            best = max((k[c] for c in peers if k.get(c)), default=None)
            lines.append(md_row(
                [server, f"{cell['n']} x {value(cell)}"]
                + [fmt(None if k[c] is None else k[c] / 1e3, ".1f") for c in clients]
                + [ratio(k[o], best) for o in ours]
                + [" / ".join(fmt(at(server, cell, "exists", what, c), ".1f") for c in clients)
                   for what in ("cpu_us_per_key", "server_cpu_us_per_key")]
                + [fmt(at(server, cell, "exists", "loop_lag_max_ms", c), ".1f") for c in loops]))
    return lines


def targets(summary: Summary, servers: list[str], plan_cells: list[dict]) -> list[str]:
    """Issue #10's targets, each checked in this run."""
    out = []
    big = [c for c in plan_cells if "set" in c["reps"]]
    for server in servers:
        misses = []
        for op in OPS:
            for cell in big:
                g = {c: summary.get(server, cell["name"], c, op, "gb_per_s") for c in OURS + PEERS}
                best = max((g[c] for c in PEERS if g.get(c)), default=None)
                for o in OURS:
                    if g.get(o) and best and g[o] < best:
                        misses.append(f"{SHORT[o]} {op.upper()} {cell['name']} {g[o] / best:.3f}x")
        out.append(f"{server}: ours >= 1.0x the best peer at every size and batch: "
                   + ("met" if not misses else f"missed in {len(misses)} rows: "
                      + ", ".join(misses)))
        want = 2.0 if server == "stock" else 1.3
        for cell in big:
            if cell["size"] == 32 * MiB:
                theirs = summary.get(server, cell["name"], "lmcache", "get", "gb_per_s")
                for o in OURS:
                    mine = summary.get(server, cell["name"], o, "get", "gb_per_s")
                    if mine and theirs:
                        out.append(f"{server}: 32 MiB GET x {cell['n']}, {SHORT[o]} / LMCache "
                                   f"{mine / theirs:.2f}x (target >= {want}x): "
                                   + ("met" if mine / theirs >= want else "missed"))
        for cell in plan_cells:
            if "set" not in cell["reps"]:
                for o in OURS:
                    k = summary.get(server, cell["name"], o, "exists", "keys_per_s")
                    if k:
                        out.append(f"{server}: EXISTS of {cell['n']} keys, {SHORT[o]} "
                                   f"{k:,.0f} keys/s (target >= 100,000): "
                                   + ("met" if k >= 100_000 else "missed"))
    return out


def flush(server) -> None:
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        bench_common._resp_command(sock, "FLUSHALL")


def mem_available() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run(plan: Plan, servers: list[str], clients: list[str], out_dir: Path, full: bool,
        timeout: float = 120, lmcache_workers: int = 8) -> Path:
    """Runs the comparison; prints and writes the tables; returns the JSON's path."""
    # A MALLOC_CONF in this shell would reach the stock server and make it not stock.
    os.environ.pop("MALLOC_CONF", None)
    # SIGTERM (and SIGINT, which a shell's background job ignores) stop the
    # run through the finally blocks: the workers and the servers go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    clients = [c for c in OURS + PEERS if c in clients]  # the tables' order
    lmcache_line = ""
    pythons = {c: sys.executable for c in clients}
    if "lmcache" in clients:
        py, why = lmcache_venv.ensure_or_none()
        if py is None:
            clients = [c for c in clients if c != "lmcache"]
            lmcache_line = why
        else:
            pythons["lmcache"] = str(py)
            lmcache_line = (f"LMCache C++ client: lmcache 0.5.6's LMCacheRedisClient from "
                            f"{py.parent.parent.name}, {lmcache_workers} workers")
    plan_cells = cells(plan)
    limit = maxmemory(plan)
    biggest = max(c["n"] * c["size"] for c in plan_cells)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (f"{started}: batch comparison ({'full' if full else 'quick'}), "
              f"{local_redis.version()}; "
              + "; ".join(f"{k}: {bench_common.SERVER_KINDS[k]}" for k in servers)
              + f"; both with --maxmemory {limit // MiB}mb --maxmemory-policy noeviction; "
              f"{plan.rounds} rounds"
              + (f" ({plan.big_rounds} of batches of {plan.big_mib} MiB and more)"
                 if plan.big_rounds is not None else "")
              + ", the clients' order rotating; cells "
              + ", ".join(c["name"] for c in plan_cells))
    print(header)
    if lmcache_line:
        print(lmcache_line)
    avail = mem_available()
    need = 3 * int(biggest * 1.25)  # the client's batch, the server's values, its reply buffers
    print(f"memory: the largest batch is {bench_common.size_text(biggest)}: a client holds "
          f"about that, the server up to {bench_common.size_text(limit)} for the values and "
          "as much again in reply buffers (redis-py's pipelined GET)"
          + (f"; available now: {bench_common.size_text(avail)}" if avail else ""), flush=True)
    if avail is not None and avail < need:
        print(f"WARNING: less memory available than the largest cell may need "
              f"({bench_common.size_text(need)})", flush=True)

    raw: list[dict] = []
    failures: list[str] = []
    summary = Summary()
    t_start = time.monotonic()
    total = len(servers) * sum(c["rounds"] for c in plan_cells) * len(clients)
    done = 0
    for server_kind in servers:
        server = bench_common.start_server(
            server_kind, ["--maxmemory", str(limit), "--maxmemory-policy", "noeviction"])
        workers: dict[str, Optional[Worker]] = {}
        dropped: set[str] = set()
        failed: dict[str, int] = {}
        try:
            def worker(c: str) -> Optional[Worker]:
                if c in dropped:
                    return None
                w = workers.get(c)
                if w is not None and w.alive():
                    return w
                try:
                    workers[c] = Worker(c, pythons[c], server.port, timeout, lmcache_workers)
                except RuntimeError as exc:
                    failures.append(f"{server_kind}: {c} did not start: {exc}")
                    dropped.add(c)
                    return None
                summary.labels[c] = workers[c].label
                summary.variants[c] = workers[c].variant
                return workers[c]

            for c in clients:
                worker(c)
            # Untimed, once per server: the largest batch written and flushed,
            # so that the first client to run it does not alone pay for the
            # machine finding GiBs (reclaim) and the tuned server growing its
            # retained pages (seen: 0.7x in a one-round run, 1.15-1.5x after).
            warm = max((c for c in plan_cells if "set" in c["reps"]),
                       key=lambda c: c["n"] * c["size"])
            w = worker(clients[0]) if clients else None
            if w is not None:
                sys.stderr.write(f"\r{server_kind}: warming up with {warm['name']}\n")
                if "error" in w.run(dict(warm, reps=dict(set=1), prefix="batch:warm-up:")):
                    w.stop(kill=True)  # its cells will say what is wrong
                    flush(server)
            for round_ in range(max(c["rounds"] for c in plan_cells)):
                order = clients[round_ % len(clients):] + clients[:round_ % len(clients)]
                for cell in plan_cells:
                    if round_ >= cell["rounds"]:
                        continue
                    for c in order:
                        done += 1
                        sys.stderr.write(f"\r[{done}/{total}] {time.monotonic() - t_start:4.0f}s "
                                         f"{server_kind} round {round_ + 1} {cell['name']:<16} "
                                         f"{SHORT[c]:<20}")
                        sys.stderr.flush()
                        w = worker(c)
                        if w is None:
                            continue
                        reply = w.run(dict(cell, prefix=f"batch:{c}:"))
                        if "error" in reply:
                            failures.append(f"{server_kind} round {round_ + 1} {cell['name']} "
                                            f"{c}: {reply['error']}")
                            sys.stderr.write(f"\n  {failures[-1]}\n")
                            # A client that failed may be left in a bad state (LMCache's
                            # fails every batch after one error reply; redis.asyncio's
                            # pool keeps the connections of cancelled calls): the next
                            # cell gets a fresh process, and the server is flushed of
                            # what this one left.
                            w.stop(kill=True)
                            flush(server)
                            failed[c] = failed.get(c, 0) + 1
                            if failed[c] >= 3:  # not again on this server
                                dropped.add(c)
                            continue
                        for row in reply["rows"]:
                            raw.append(dict(row, server=server_kind, round=round_ + 1,
                                            cell=cell["name"], client=c, label=w.label,
                                            size=cell["size"], n=cell["n"]))
        finally:
            for w in workers.values():
                if w is not None:
                    w.stop()
            server.stop()
    sys.stderr.write("\n")
    summary.add(raw)
    lines = tables(summary, servers, plan_cells, clients)
    checks = targets(summary, servers, plan_cells)
    elapsed = time.monotonic() - t_start
    print()
    print("\n".join(lines))
    print()
    for line in checks:
        print(line)
    for f in failures:
        print(f"FAILED: {f}")
    print(f"\n({elapsed / 60:.1f} min)")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"batch-compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or None
    path.write_text(json.dumps(dict(
        header=header, date=started, commit=commit, mode="full" if full else "quick",
        redis_server=local_redis.version(), servers={k: bench_common.SERVER_KINDS[k]
                                                     for k in servers},
        maxmemory=limit, plan=asdict(plan), cells=plan_cells, clients=clients,
        labels=summary.labels, variants=summary.variants, lmcache=lmcache_line, minutes=elapsed / 60,
        tables=lines, targets=checks, failures=failures, raw=raw,
        summary=[dict(server=k[0], cell=k[1], client=k[2], op=k[3], **v)
                 for k, v in summary.rows.items()]), indent=1))
    print(f"wrote {path}")
    return path


def table_from(path: Path) -> None:
    saved = json.loads(path.read_text())
    summary = Summary(labels=saved["labels"])
    summary.add(saved["raw"])
    servers = [s for s in ("stock", "tuned") if s in saved["servers"]]
    print(saved["header"])
    print("\n".join(tables(summary, servers, saved["cells"], saved["clients"])))
    print()
    print("\n".join(targets(summary, servers, saved["cells"])))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--servers", nargs="+", choices=("stock", "tuned"),
                    default=["stock", "tuned"], help="server kinds (default both)")
    ap.add_argument("--clients", nargs="+", choices=OURS + PEERS, default=list(OURS + PEERS),
                    help="clients (default all five)")
    ap.add_argument("--sizes", type=int, nargs="+", metavar="MIB",
                    help="value sizes in MiB (default: the mode's)")
    ap.add_argument("--keys", type=int, nargs="+", metavar="N",
                    help="keys per batch (default: the mode's)")
    ap.add_argument("--rounds", type=int, help="rounds of every cell (default: the mode's: 3; --full: 2 for "
                         "batches of 1 GiB and more)")
    ap.add_argument("--min-mib", type=int,
                    help="repeat each cell's batch until it moved this many MiB (default 128)")
    ap.add_argument("--lmcache-workers", type=int, default=8,
                    help="LMCacheRedisClient's workers (default 8, its default and LMCache's)")
    ap.add_argument("--batch-timeout", type=float, default=120,
                    help="seconds one batch may take before its client is called hung")


def plan_from(args: argparse.Namespace) -> Plan:
    plan = FULL if args.full else QUICK
    plan = Plan(**asdict(plan))
    if args.sizes:
        plan.sizes_mib = args.sizes
    if args.keys:
        plan.keys = args.keys
    if args.rounds:
        plan.rounds, plan.big_rounds = args.rounds, None
    if args.min_mib:
        plan.min_mib = args.min_mib
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true",
                    help="1, 4, 16, 64 keys x 4, 8, 32, 64 MiB (default: quick, 1 and 16 x "
                         "4 and 32 MiB)")
    ap.add_argument("--no-lmcache", action="store_true", help="leave LMCache's client out")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--table-from", type=Path, metavar="JSON",
                    help="print the tables of an earlier run's JSON, run nothing")
    add_arguments(ap)
    args = ap.parse_args()
    if args.table_from:
        table_from(args.table_from)
        return
    clients = [c for c in args.clients if not (args.no_lmcache and c == "lmcache")]
    run(plan_from(args), args.servers, clients, args.out, args.full,
        timeout=args.batch_timeout, lmcache_workers=args.lmcache_workers)


if __name__ == "__main__":
    main()
