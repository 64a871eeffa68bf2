"""LMCache's own benchmark, ``lmcache bench l2``: ours against LMCache's client (issue #11).

The figure an LMCache user believes: LMCache 0.5.6's ``lmcache bench l2``
(from .venv-lmcache, made by benchmark/lmcache_venv.py when missing)
driving, through LMCache's own L2 adapter code, either

* ours: ``{"type": "native_plugin", "module_path": "lmcache_redis.lmcache",
  "class_name": "LMCacheRedisNativeClient", "adapter_params": {"url": ...,
  "connections": N}}`` (PYTHONPATH = this repo, so the venv imports the
  package built in place), or
* LMCache's own C++ RESP client: ``{"type": "resp", "host": ..., "port": ...,
  "num_workers": 8}`` (its default and LMCache's).

For each server kind (stock: Debian's redis-server, jemalloc's defaults;
tuned: tools/local_redis.py's settings; bench_common.SERVER_KINDS) one
server for the whole run, and on it, at each value size, the clients one
after the other (A/B, the order alternating from size to size and from
repeat to repeat), FLUSHALL before every run. Before the first run the
server is filled once, untimed, with as many bytes as a run leaves there,
then flushed: the first client does not alone pay for the server's first
page faults.

One run = one ``lmcache bench l2`` process: warm-up + measured rounds of
store (one submit of ``--mib-per-round`` MiB of keys per round: 128 x 4 MiB
... 8 x 64 MiB at 512, so LMCache's 8 workers all have a key), then lookup
(EXISTS of the same keys, all present), then load of exactly the keys
stored (LMCache's client hangs for good on a GET of a missing key), then
the bench's byte-for-byte check of the last round (``--no-skip-verify``).
Its JSON (``--format json --output``) gives MB/s (2^20 bytes/s, the mean
of the rounds) and lookups/s. A run is **invalid** (no figure from it is
reported) unless it exits 0 within ``--timeout`` seconds, every operation
has the rounds asked for and ``rounds_timed_out == 0``, store and load have
``total_success == total_keys``, lookup found every key, and the bench
printed ``[Verify] All N keys data verified OK.``. A store round of
LMCache's client that misses keys ends its run at once (its load would
hang). Server CPU seconds per GB (10^9 bytes) of store and of load:
``INFO cpu`` (bench_common.info_cpu_seconds) when the bench prints the
phase's first line and the next phase's.

Prints a markdown table per server (MB/s of each, ours / LMCache, server
CPU s/GB), lookups as a side table, issue #11's targets (load >= 1.5x and
store >= 1.0x LMCache's client at every size), the load average and how
much CPU other processes took during the run, and writes JSON and
markdown to benchmark/results/lmcache-l2-<date>.{json,md}.

    python benchmark/lmcache_l2.py                 # quick: 4/8/32/64 MiB, 2 rounds, ~2 min
    python benchmark/lmcache_l2.py --full          # 5 rounds, 3 repeats (medians), ~7 min
    python benchmark/lmcache_l2.py --full --connections 4 8   # ours with each
    python benchmark/lmcache_l2.py --sizes 32 --servers tuned
    python benchmark/lmcache_l2.py --table-from benchmark/results/lmcache-l2-<date>.json
    python benchmark/compare.py                    # runs the quick form last (--no-l2: not)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import select
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"
for _folder in (BENCH, ROOT / "tools"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import batch_compare  # noqa: E402
import bench_common  # noqa: E402
import lmcache_venv  # noqa: E402
import local_redis  # noqa: E402

MiB = 1 << 20
GB = 1e9

OURS, LMCACHE = "ours", "lmcache"
# The bench's operation names (its JSON's "operation") by our names.
OPERATIONS = {"store": "Store", "lookup": "Lookup", "load": "Load"}
MOVING = ("store", "load")  # the operations that move values (MB/s)

# Issue #11's targets: ours over LMCache's client, at every size.
TARGETS = {"load": 1.5, "store": 1.0}

# LMCache's client: its default and LMCache's number of workers.
LMCACHE_WORKERS = 8
# Ours: 8, the plug-in's own default (lmcache_redis.lmcache) and as many
# sockets as LMCache's 8 workers. Measured against 4 in two runs of
# `--full --connections 4 8` (both servers, every size; BENCHMARKS.md
# "LMCache's own benchmark"): load higher with 8 in 11 of the 16 cells,
# store within the noise either way.
DEFAULT_CONNECTIONS = 8

# Every run asks for all keys at lookup, so every one must be found.
LOOKUP_HIT_RATE = 1.0

# The bench prints these lines as each phase starts (and the check, and
# the clean-up, after the last): the server's CPU is read at each.
PHASE_MARKS = (("[Store] Running", "store"), ("[Lookup] Running", "lookup"),
               ("[Load] Running", "load"), ("[Verify] Checking", "verify"),
               ("[Cleanup] Closing", "cleanup"))
ROUND_LINE = re.compile(r"\[(Store|Lookup|Load)\] Round (\d+): (?:([\d.]+) ms|TIMEOUT)"
                        r".*?(?:success_keys|found|loaded)=(\d+)/(\d+)")
VERIFIED = re.compile(r"\[Verify\] All (\d+) keys data verified OK")


@dataclass
class Plan:
    """What one mode runs."""

    sizes_mib: list[int]
    mib_per_round: int       # bytes of values per round (one submit), so keys = this / size
    rounds: int              # measured rounds of each operation
    warmup_rounds: int
    repeats: int             # A/B pairs per size and server (medians when > 1)
    in_flight: int = 1       # submits per round (keys split between them)


QUICK = Plan(sizes_mib=[4, 8, 32, 64], mib_per_round=512, rounds=2, warmup_rounds=1, repeats=1)
FULL = Plan(sizes_mib=[4, 8, 32, 64], mib_per_round=512, rounds=5, warmup_rounds=1, repeats=3)


@dataclass(frozen=True)
class Client:
    """One adapter the bench drives."""

    kind: str                # OURS or LMCACHE
    param: int               # our connections or its num_workers

    @property
    def name(self) -> str:
        return (f"ours, {self.param} connections" if self.kind == OURS
                else f"LMCache resp, {self.param} workers")

    @property
    def hangs_on_missing_get(self) -> bool:
        """LMCache 0.5.6's client blocks forever on a GET of a missing key
        (shared/lmcache-integration.md section 7): its run must stop as
        soon as a store lost keys."""
        return self.kind == LMCACHE

    def adapter(self, host: str, port: int, **params: object) -> dict:
        """The --l2-adapter spec (``params``: more adapter_params for ours)."""
        if self.kind == OURS:
            return {"type": "native_plugin", "module_path": "lmcache_redis.lmcache",
                    "class_name": "LMCacheRedisNativeClient",
                    "adapter_params": {"url": f"redis://{host}:{port}",
                                       "connections": self.param, **params}}
        return {"type": "resp", "host": host, "port": port, "num_workers": self.param}


def clients_for(connections: list[int]) -> list[Client]:
    return [Client(OURS, c) for c in connections] + [Client(LMCACHE, LMCACHE_WORKERS)]


# ---- one `lmcache bench l2` run ----------------------------------------------

@dataclass
class Shape:
    """One run's keys: ``in_flight`` submits of ``num_keys`` keys of
    ``size`` bytes per round."""

    size: int
    num_keys: int
    in_flight: int
    rounds: int
    warmup_rounds: int

    @property
    def keys_per_round(self) -> int:
        return self.num_keys * self.in_flight

    @property
    def bytes_per_round(self) -> int:
        return self.keys_per_round * self.size

    @property
    def server_bytes(self) -> int:
        """What a run leaves on the server: every round stores keys of its own."""
        return (self.rounds + self.warmup_rounds) * self.bytes_per_round

    def expected_found(self) -> int:
        """Keys lookup must find over the measured rounds."""
        return math.floor(self.keys_per_round * LOOKUP_HIT_RATE) * self.rounds


def shape_for(plan: Plan, size_mib: int) -> Shape:
    keys = plan.mib_per_round // size_mib
    if keys < plan.in_flight or plan.mib_per_round % size_mib or keys % plan.in_flight:
        raise ValueError(f"{plan.mib_per_round} MiB per round is no whole number of "
                         f"{plan.in_flight} submit(s) of {size_mib} MiB values")
    return Shape(size=size_mib * MiB, num_keys=keys // plan.in_flight, in_flight=plan.in_flight,
                 rounds=plan.rounds, warmup_rounds=plan.warmup_rounds)


def bench_argv(lmcache_exe: str, adapter: dict, shape: Shape, output: Path) -> list[str]:
    """The `lmcache bench l2` command line (never --flamegraph: it clones a
    repository)."""
    if shape.size % 1024:
        raise ValueError(f"the bench takes sizes in KiB: {shape.size} bytes is none")
    return [lmcache_exe, "bench", "l2", "--l2-adapter", json.dumps(adapter, separators=(",", ":")),
            "--num-keys", str(shape.num_keys), "--in-flight", str(shape.in_flight),
            "--data-size-kb", str(shape.size // 1024), "--rounds", str(shape.rounds),
            "--warmup-rounds", str(shape.warmup_rounds),
            "--lookup-max-hit-rate", str(LOOKUP_HIT_RATE), "--no-skip-verify",
            "--format", "json", "--output", str(output)]


# The bench zeroes every load buffer with torch before each load round,
# one tensor at a time; with torch's default of one OpenMP thread per core,
# both threads then spin in libgomp into the timed round, taking a 2-core
# machine's CPU from the client and the server (perf: most of the bench
# process's samples during load; its CPU over the load phase 0.47-2.19 s/GB
# run to run, against 0.38-0.39 for either client with one thread). Neither
# client uses torch's threads.
BENCH_THREADS = {"OMP_NUM_THREADS": "1"}


def bench_env(base: Optional[dict] = None) -> dict:
    """The bench's environment: LMCache's telemetry off (nothing leaves
    the machine), this repo first on PYTHONPATH (the package built in
    place), unbuffered output (its phase lines as they happen), and
    BENCH_THREADS."""
    env = lmcache_venv.env(base)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(BENCH_THREADS)
    env.pop("PYTHONSAFEPATH", None)
    return env


@dataclass
class Outcome:
    """What one bench process did."""

    returncode: Optional[int]        # None: killed
    lines: list[str]                 # its stdout
    stderr_tail: str
    seconds: float
    stopped: str = ""                # why it was killed ("" if it was not)
    marks: list = field(default_factory=list)   # (phase, server CPU s, bench process CPU s)
    metrics: Optional[dict] = None   # the JSON's "metrics"


def run_bench(argv: list[str], env: dict, timeout: float,
              server_cpu: Callable[[], Optional[float]] = lambda: None,
              stop_on_lost_store: bool = False) -> Outcome:
    """Runs the bench; reads its stdout as it comes, reading the server's
    CPU (``server_cpu()``) and its own at each phase line; kills it after ``timeout``
    seconds, or (``stop_on_lost_store``) once a store round missed keys.
    Reads the JSON it wrote to the path after ``--output``."""
    output = Path(argv[argv.index("--output") + 1])
    output.unlink(missing_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                env=env)
        fd = proc.stdout.fileno()
        lines: list[str] = []
        marks: list = []
        pending, stopped = b"", ""
        try:
            while True:
                left = timeout - (time.monotonic() - start)
                if left <= 0:
                    stopped = f"no result within {timeout:.0f} s, stopped"
                    break
                ready, _, _ = select.select([fd], [], [], left)
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                pending += chunk
                *done, pending = pending.split(b"\n")
                for raw in done:
                    line = raw.decode("utf-8", "replace").rstrip()
                    lines.append(line)
                    text = line.strip()
                    for mark, phase in PHASE_MARKS:
                        if text.startswith(mark):
                            marks.append((phase, server_cpu(), cpu_seconds_of(proc.pid)))
                    m = ROUND_LINE.search(text)
                    if (stop_on_lost_store and m and m.group(1) == "Store"
                            and (m.group(3) is None or m.group(4) != m.group(5))):
                        stopped = (f"a store round lost keys ({text}): stopped before its "
                                   f"load, which would GET missing keys and hang")
                if stopped:
                    break
        finally:
            if stopped or proc.poll() is None:
                if stopped:
                    proc.kill()
                try:
                    proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    stopped = stopped or f"no exit within {timeout:.0f} s, stopped"
            proc.stdout.close()
        if pending:
            lines.append(pending.decode("utf-8", "replace").rstrip())
        err.seek(0)
        tail = [t.strip() for t in err.read().decode("utf-8", "replace").splitlines() if t.strip()]
    outcome = Outcome(returncode=None if stopped else proc.returncode, lines=lines,
                      stderr_tail=" | ".join(tail[-3:])[-600:], seconds=time.monotonic() - start,
                      stopped=stopped, marks=marks)
    if not stopped and output.exists():
        try:
            outcome.metrics = json.loads(output.read_text()).get("metrics")
        except (ValueError, AttributeError):
            outcome.metrics = None
    return outcome


def operations(metrics: Optional[dict]) -> dict[str, dict]:
    """The JSON's ``op_0``, ``op_1``... sections by our operation names
    ("store", "lookup", "load"), whatever their order."""
    by_bench_name = {v: k for k, v in OPERATIONS.items()}
    out = {}
    for key, section in (metrics or {}).items():
        if key.startswith("op_") and isinstance(section, dict):
            name = by_bench_name.get(section.get("operation"))
            if name is not None:
                out[name] = section
    return out


def problems(outcome: Outcome, shape: Shape, verify: bool = True,
             ops: tuple = tuple(OPERATIONS)) -> list[str]:
    """Why the run is invalid (empty: it is valid). The one place for the
    rules: no figure of a run with a problem is reported."""
    out = []
    if outcome.stopped:
        out.append(outcome.stopped)
    elif outcome.returncode != 0:
        out.append(f"exit status {outcome.returncode}"
                   + (f": {outcome.stderr_tail}" if outcome.stderr_tail else ""))
    if outcome.metrics is None:
        if not outcome.stopped:
            out.append("no JSON result")
        return out
    found = operations(outcome.metrics)
    for op in ops:
        section = found.get(op)
        if section is None:
            out.append(f"{op}: not in the result")
            continue
        if section.get("rounds") != shape.rounds:
            out.append(f"{op}: {section.get('rounds')} rounds, asked for {shape.rounds}")
        if section.get("rounds_timed_out") != 0:
            out.append(f"{op}: {section.get('rounds_timed_out')} round(s) timed out")
        total = section.get("total_keys")
        if total != shape.rounds * shape.keys_per_round:
            out.append(f"{op}: {total} keys, expected {shape.rounds * shape.keys_per_round}")
        want = shape.expected_found() if op == "lookup" else total
        if section.get("total_success") != want:
            out.append(f"{op}: {section.get('total_success')} of {want} keys "
                       + ("found" if op == "lookup" else "succeeded"))
    if verify and "store" in ops and "load" in ops and not any(
            VERIFIED.search(line) for line in outcome.lines):
        bad = [line.strip() for line in outcome.lines if "[Verify]" in line]
        out.append("no '[Verify] All N keys data verified OK.'"
                   + (f" ({bad[-1]})" if bad else ""))
    return out


def phase_cpu(marks: list) -> dict[str, dict[str, Optional[float]]]:
    """CPU seconds of each phase, from its line to the next phase's:
    ``{op: {"server": s, "client": s}}`` (client: the bench process, all
    its threads: LMCache's harness and the client under test)."""
    out: dict = {}
    for (phase, *before), (_, *after) in zip(marks, marks[1:]):
        if phase in OPERATIONS and phase not in out:
            out[phase] = {who: None if b is None or a is None else a - b
                          for who, b, a in zip(("server", "client"), before, after)}
    return out


def record(outcome: Outcome, shape: Shape, client: Client, server: str, repeat: int,
           order: int, other_cpu_share: Optional[float] = None) -> dict:
    """One run's row for the JSON: figures only when the run is valid."""
    bad = problems(outcome, shape)
    ops = operations(outcome.metrics)
    cpu = phase_cpu(outcome.marks)
    moved = (shape.rounds + shape.warmup_rounds) * shape.bytes_per_round  # in each phase
    row = dict(server=server, size=shape.size, client=client.kind, param=client.param,
               label=client.name, repeat=repeat, order=order, valid=not bad, problems=bad,
               seconds=outcome.seconds, keys_per_round=shape.keys_per_round,
               num_keys=shape.num_keys, in_flight=shape.in_flight, rounds=shape.rounds,
               warmup_rounds=shape.warmup_rounds, other_cpu_share=other_cpu_share,
               round_lines=[line.strip() for line in outcome.lines if ROUND_LINE.search(line)],
               metrics=outcome.metrics)
    if not bad:
        for op in MOVING:
            row[f"{op}_mbps"] = ops[op]["throughput_avg_mbps"]
            for who in ("server", "client"):
                used = cpu.get(op, {}).get(who)
                row[f"{op}_{who}_cpu_s_per_gb"] = None if used is None else used / (moved / GB)
        row["lookup_keys_per_s"] = ops["lookup"]["ops_per_sec_avg"]
    return row


# ---- summary: medians, ratios, tables -----------------------------------------

def median(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cell(rows: list[dict], server: str, size: int, client: Client, what: str) -> Optional[float]:
    """The median over the repeats' valid runs."""
    return median([r.get(what) for r in rows if r["server"] == server and r["size"] == size
                   and r["client"] == client.kind and r["param"] == client.param and r["valid"]])


def per_repeat_ratios(rows: list[dict], server: str, size: int, ours: Client, theirs: Client,
                      what: str) -> list[float]:
    """Ours over theirs within each repeat (their runs ran back to back)."""
    out = []
    for rep in sorted({r["repeat"] for r in rows}):
        a = cell([r for r in rows if r["repeat"] == rep], server, size, ours, what)
        b = cell([r for r in rows if r["repeat"] == rep], server, size, theirs, what)
        if a and b:
            out.append(a / b)
    return out


def fmt(value: Optional[float], spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def ratio_text(a: Optional[float], b: Optional[float], spread: list[float] = ()) -> str:
    if not a or not b:
        return "-"
    text = f"{a / b:.2f}x"
    if len(spread) > 1:
        text += f" ({min(spread):.2f}-{max(spread):.2f})"
    return text


def split_clients(rows: list[dict]) -> tuple[list[Client], Optional[Client]]:
    seen = sorted({(r["client"], r["param"]) for r in rows})
    ours = [Client(k, p) for k, p in seen if k == OURS]
    theirs = [Client(k, p) for k, p in seen if k == LMCACHE]
    return ours, theirs[0] if theirs else None


def tables(rows: list[dict]) -> list[str]:
    """The markdown: store and load MB/s with ratios, then CPU per GB,
    then lookups, then the invalid runs."""
    servers = [s for s in ("stock", "tuned") if any(r["server"] == s for r in rows)]
    sizes = sorted({r["size"] for r in rows})
    ours, theirs = split_clients(rows)
    if theirs is None:
        return ["(no LMCache client runs)"]
    repeats = len({r["repeat"] for r in rows})
    what = "median of the repeats; in brackets the range of the per-repeat ratios" \
        if repeats > 1 else "one run each"

    def others(server: str, size: int, o: Client) -> str:
        shares = [r.get("other_cpu_share") for r in rows if r["server"] == server
                  and r["size"] == size and (r["client"], r["param"]) in
                  ((o.kind, o.param), (theirs.kind, theirs.param))]
        shares = [x for x in shares if x is not None]
        return f"{max(shares):.0%}" if shares else "-"

    lines = [f"**Store and load, MB/s** (2^20 bytes/s, the bench's mean of the rounds; {what}), "
             "ours / LMCache's client, and the largest share of the machine other processes "
             "took during one of these runs.", "",
             "| server | value | keys/round | ours | STORE ours | STORE LMCache | ours/LMCache "
             "| LOAD ours | LOAD LMCache | ours/LMCache | others' CPU |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for server in servers:
        for size in sizes:
            kpr = next((r["keys_per_round"] for r in rows if r["size"] == size), None)
            for o in ours:
                cells = []
                for op in MOVING:
                    a = cell(rows, server, size, o, f"{op}_mbps")
                    b = cell(rows, server, size, theirs, f"{op}_mbps")
                    spread = per_repeat_ratios(rows, server, size, o, theirs, f"{op}_mbps")
                    cells += [fmt(a), fmt(b), ratio_text(a, b, spread)]
                lines.append(f"| {server} | {size // MiB} MiB | {kpr} | {o.param} conn | "
                             + " | ".join(cells) + f" | {others(server, size, o)} |")
    lines += ["", "**CPU seconds per GB** (10^9 bytes; medians), ours / LMCache's: the server "
              "(INFO cpu) and the bench process (all its threads: LMCache's harness and the "
              "client under test), over each phase (warm-up round included).", "",
              "| server | value | ours | server store | server load | bench store | "
              "bench load |", "|---|---:|---|---:|---:|---:|---:|"]
    for server in servers:
        for size in sizes:
            for o in ours:
                cpu = [" / ".join(fmt(cell(rows, server, size, c, f"{op}_{who}_cpu_s_per_gb"),
                                      ".2f") for c in (o, theirs))
                       for who in ("server", "client") for op in MOVING]
                lines.append(f"| {server} | {size // MiB} MiB | {o.param} conn | "
                             + " | ".join(cpu) + " |")
    lines += ["", "**Lookup** (EXISTS of every key of a round, all present), thousands of "
              "keys/s:", "",
              "| server | value | ours | lookups ours | lookups LMCache | ours/LMCache |",
              "|---|---:|---|---:|---:|---:|"]
    for server in servers:
        for size in sizes:
            for o in ours:
                a = cell(rows, server, size, o, "lookup_keys_per_s")
                b = cell(rows, server, size, theirs, "lookup_keys_per_s")
                lines.append(f"| {server} | {size // MiB} MiB | {o.param} conn | "
                             f"{fmt(a and a / 1e3, '.1f')} | {fmt(b and b / 1e3, '.1f')} | "
                             f"{ratio_text(a, b)} |")
    bad = [r for r in rows if not r["valid"]]
    if bad:
        lines += ["", f"**Invalid runs** ({len(bad)}; no figure of theirs is above):", ""]
        for r in bad:
            lines.append(f"- {r['server']} {r['size'] // MiB} MiB {r['label']} "
                         f"(repeat {r['repeat'] + 1}): " + "; ".join(r["problems"]))
    return lines


def target_lines(rows: list[dict]) -> list[str]:
    """Issue #11's targets per server and setting of ours: met only if every
    size has a valid figure of both clients at or above the target."""
    ours, theirs = split_clients(rows)
    if theirs is None:
        return []
    out = []
    sizes = sorted({r["size"] for r in rows})
    for server in [s for s in ("stock", "tuned") if any(r["server"] == s for r in rows)]:
        for o in ours:
            parts = []
            for op, want in TARGETS.items():
                got = {size: (cell(rows, server, size, o, f"{op}_mbps"),
                              cell(rows, server, size, theirs, f"{op}_mbps")) for size in sizes}
                misses = [f"{size // MiB} MiB " + (f"{a / b:.2f}x" if a and b else "no valid figure")
                          for size, (a, b) in got.items() if not (a and b and a / b >= want)]
                worst = min((a / b for a, b in got.values() if a and b), default=None)
                parts.append(f"{op} >= {want:g}x: "
                             + ("met" if not misses else "missed at " + ", ".join(misses))
                             + (f" (lowest {worst:.2f}x)" if worst is not None else ""))
            out.append(f"{server}, ours with {o.param} connections: " + "; ".join(parts))
    return out


# ---- the machine: load and other processes' CPU ------------------------------

def busy_cpu_seconds() -> Optional[float]:
    """CPU seconds all processes have used since boot (/proc/stat: user,
    nice, system, irq, softirq, steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(x) for x in fields]
    except (OSError, ValueError, IndexError):
        return None
    busy = ticks[0] + ticks[1] + ticks[2] + sum(ticks[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This process's CPU and that of its children waited for."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def _stat(pid: int) -> Optional[tuple[float, str]]:
    """(CPU seconds so far: utime + stime of all its threads, name) of a
    process, from /proc/<pid>/stat; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return ((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),
            stat[stat.index("(") + 1:stat.rindex(")")])


def cpu_seconds_of(pid: int) -> Optional[float]:
    found = _stat(pid)
    return None if found is None else found[0]


def process_cpu() -> dict[int, tuple[float, str]]:
    """CPU seconds and command line of every process now, by pid."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (found := _stat(int(entry.name))) is None:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = ""
        out[int(entry.name)] = (found[0], cmd.strip() or found[1])
    return out


def busiest_others(before: dict, after: dict, mine: set, top: int = 3) -> list[str]:
    """The ``top`` processes (not in ``mine``) that used most CPU between
    two ``process_cpu()`` snapshots, as 'command (N CPU s)'."""
    used = sorted(((cpu - before.get(pid, (0.0, ""))[0], cmd) for pid, (cpu, cmd) in after.items()
                   if pid not in mine), reverse=True)
    return [f"{cmd[:70]} ({cpu:.0f} CPU s)" for cpu, cmd in used[:top] if cpu >= 1]


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


# ---- the run ---------------------------------------------------------------------

def fill_once(server, nbytes: int, value: int = 32 * MiB) -> None:
    """Writes ``nbytes`` of values and flushes them (untimed): the server's
    first page faults paid before any client runs."""
    import numpy as np
    from lmcache_redis import RedisClient

    data = np.full(value, 7, dtype=np.uint8)
    with RedisClient(server.host, server.port, connections=4) as client:
        for i in range(max(1, nbytes // value)):
            client.set(f"lmcache-l2:fill:{i}", data)
    batch_compare.flush(server)


def maxmemory(plan: Plan) -> int:
    """Room for the largest run: its values in the allocator's size classes
    (a quarter more), the values in flight in query buffers, and 512 MiB.
    Over it a store is refused (noeviction), which fails the run loudly
    instead of swapping the machine."""
    biggest = max(shape_for(plan, s).server_bytes for s in plan.sizes_mib)
    return int(biggest * 1.25) + 2 * LMCACHE_WORKERS * max(plan.sizes_mib) * MiB + 512 * MiB


def server_cpu_reader(host: str, port: int) -> Callable[[], Optional[float]]:
    def read() -> Optional[float]:
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                return bench_common.info_cpu_seconds(sock)
        except OSError:
            return None
    return read


def run(plan: Plan, servers: list[str], connections: list[int], out_dir: Path, full: bool,
        timeout: float = 300, lmcache_exe: Optional[str] = None,
        say: Callable[[str], None] = print) -> Optional[Path]:
    """Runs the comparison, prints and writes its tables; returns the JSON's
    path, or None (said in one line) when LMCache's venv cannot be made."""
    if lmcache_exe is None:
        py, why = lmcache_venv.ensure_or_none()
        if py is None:
            say(why.replace("LMCache C++ client", "lmcache bench l2"))
            return None
        lmcache_exe = str(py.parent / "lmcache")
    # A MALLOC_CONF in this shell would reach the stock server and make it not stock.
    os.environ.pop("MALLOC_CONF", None)
    clients = clients_for(connections)
    shapes = {s: shape_for(plan, s) for s in plan.sizes_mib}
    limit = maxmemory(plan)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_text()
    header = (f"{started}: `lmcache bench l2` (LMCache 0.5.6), {'full' if full else 'quick'}; "
              f"{local_redis.version()}; "
              + "; ".join(f"{k}: {bench_common.SERVER_KINDS[k]}" for k in servers)
              + f"; both --maxmemory {limit // MiB}mb --maxmemory-policy noeviction, one server "
              f"of each kind for the run, FLUSHALL before every run; values "
              + "/".join(map(str, plan.sizes_mib))
              + f" MiB, {plan.mib_per_round} MiB per round in {plan.in_flight} submit(s), "
              f"{plan.warmup_rounds} warm-up + {plan.rounds} measured rounds, {plan.repeats} "
              f"repeat(s), the clients' order alternating; clients: "
              + ", ".join(c.name for c in clients))
    say(header)
    say(f"machine before: {load_before}")

    rows: list[dict] = []
    commands: list[str] = []
    t0, busy0, own0 = time.monotonic(), busy_cpu_seconds(), own_cpu_seconds()
    procs0, mine = process_cpu(), {os.getpid()}
    total = len(servers) * plan.repeats * len(plan.sizes_mib) * len(clients)
    done = 0
    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="lmcache-l2-") as tmp:
        output = Path(tmp) / "bench.json"
        for server_kind in servers:
            server = bench_common.start_server(
                server_kind, ["--maxmemory", str(limit), "--maxmemory-policy", "noeviction"])
            read_cpu = server_cpu_reader(server.host, server.port)
            mine.add(server.pid)
            try:
                fill_once(server, max(s.server_bytes for s in shapes.values()))
                for rep in range(plan.repeats):
                    for i, size_mib in enumerate(plan.sizes_mib):
                        order = clients if (rep + i) % 2 == 0 else clients[::-1]
                        for position, client in enumerate(order):
                            done += 1
                            sys.stderr.write(f"\r[{done}/{total}] {time.monotonic() - t0:4.0f}s "
                                             f"{server_kind} {size_mib} MiB {client.name:<28}")
                            sys.stderr.flush()
                            batch_compare.flush(server)
                            shape = shapes[size_mib]
                            argv = bench_argv(lmcache_exe, client.adapter(server.host, server.port),
                                              shape, output)
                            if not commands:
                                sys.stderr.write("\r")
                                say("the first run: " + command_text(argv))
                            commands.append(command_text(argv))
                            b0, o0, s0 = busy_cpu_seconds(), own_cpu_seconds(), read_cpu()
                            outcome = run_bench(argv, env, timeout, read_cpu,
                                                stop_on_lost_store=client.hangs_on_missing_get)
                            b1, o1, s1 = busy_cpu_seconds(), own_cpu_seconds(), read_cpu()
                            other = None
                            if None not in (b0, b1, s0, s1):
                                other = max(0.0, (b1 - b0) - (o1 - o0) - (s1 - s0)) / (
                                    outcome.seconds * (os.cpu_count() or 1))
                            row = record(outcome, shape, client, server_kind, rep, position,
                                         other)
                            row["command"] = commands[-1]
                            rows.append(row)
                            if not row["valid"]:
                                sys.stderr.write(f"\n  invalid: {'; '.join(row['problems'])}\n")
                batch_compare.flush(server)
            finally:
                server.stop()
    sys.stderr.write("\r" + " " * 80 + "\r")
    elapsed = time.monotonic() - t0
    busy1, own1 = busy_cpu_seconds(), own_cpu_seconds()
    machine = f"machine after: {load_text()}"
    if busy0 is not None and busy1 is not None:
        # The servers were children of this process: waited for, counted in own.
        other = max(0.0, (busy1 - busy0) - (own1 - own0))
        machine += (f"; other processes used {other:.0f} CPU s in the run's {elapsed:.0f} s "
                    f"({other / elapsed / (os.cpu_count() or 1):.0%} of the machine)")
    busiest = busiest_others(procs0, process_cpu(), mine)
    if busiest:
        machine += "; the busiest: " + ", ".join(busiest)
    lines = tables(rows)
    checks = target_lines(rows)
    say("")
    say("\n".join(lines))
    say("")
    for line in checks:
        say(line)
    say(machine)
    say(f"({elapsed / 60:.1f} min)")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"lmcache-l2-{stamp}.json"
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or None
    path.write_text(json.dumps(dict(
        header=header, date=started, commit=commit, mode="full" if full else "quick",
        plan=asdict(plan), servers={k: bench_common.SERVER_KINDS[k] for k in servers},
        maxmemory=limit, clients=[dataclasses.asdict(c) | {"name": c.name} for c in clients],
        command=commands[0] if commands else None, machine_before=load_before, machine_after=machine,
        minutes=elapsed / 60, tables=lines, targets=checks, rows=rows), indent=1))
    md = path.with_suffix(".md")
    md.write_text("\n".join([header, "", f"machine before: {load_before}; {machine}", ""]
                            + lines + [""] + [f"- {c}" for c in checks]) + "\n")
    say(f"wrote {path}\nwrote {md}")
    return path


def command_text(argv: list[str]) -> str:
    """The run's command as one shell line, its environment first."""
    env = " ".join(f"{k}={v}" for k, v in {**lmcache_venv.TELEMETRY_OFF, **BENCH_THREADS}.items())
    exe = Path(argv[0])
    shown = (str(exe.relative_to(ROOT)) if exe.is_absolute() and exe.is_relative_to(ROOT)
             else argv[0])
    return (f"{env} PYTHONPATH=. " + " ".join(shlex.quote(a) for a in [shown] + argv[1:]))


def table_from(path: Path) -> None:
    saved = json.loads(path.read_text())
    print(saved["header"])
    print(f"machine before: {saved['machine_before']}; {saved['machine_after']}\n")
    print("\n".join(tables(saved["rows"])))
    print()
    print("\n".join(target_lines(saved["rows"])))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags that narrow the run."""
    ap.add_argument("--sizes", type=int, nargs="+", metavar="MIB",
                    help="value sizes in MiB (default 4 8 32 64)")
    ap.add_argument("--servers", nargs="+", choices=("stock", "tuned"),
                    default=["stock", "tuned"], help="server kinds (default both)")
    ap.add_argument("--connections", type=int, nargs="+", metavar="N",
                    default=[DEFAULT_CONNECTIONS],
                    help=f"our connections; several: ours runs with each (default "
                         f"{DEFAULT_CONNECTIONS})")
    ap.add_argument("--mib-per-round", type=int, help="MiB of values per round (default 512)")
    ap.add_argument("--rounds", type=int, help="measured rounds per run (default: quick 2, full 5)")
    ap.add_argument("--repeats", type=int,
                    help="A/B pairs per size and server (default: quick 1, full 3)")
    ap.add_argument("--in-flight", type=int, help="submits per round (default 1)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds one bench run may take before it is stopped (default 300)")


def plan_from(args: argparse.Namespace) -> Plan:
    """The mode's plan (--full or quick) with the flags' changes; raises
    ValueError when a size does not divide a round into whole submits."""
    plan = dataclasses.replace(FULL if args.full else QUICK)
    for name, attr in (("sizes", "sizes_mib"), ("mib_per_round", "mib_per_round"),
                       ("rounds", "rounds"), ("repeats", "repeats"), ("in_flight", "in_flight")):
        if getattr(args, name, None):
            setattr(plan, attr, getattr(args, name))
    for size in plan.sizes_mib:
        shape_for(plan, size)
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="2 measured rounds, 1 repeat (the default; ~2 min)")
    mode.add_argument("--full", action="store_true", help="5 measured rounds, 3 repeats (~7 min)")
    ap.add_argument("--out", type=Path, default=BENCH / "results",
                    help="directory for the JSON and markdown (default benchmark/results)")
    ap.add_argument("--table-from", type=Path, metavar="JSON",
                    help="print the tables of an earlier run's JSON, run nothing")
    add_arguments(ap)
    args = ap.parse_args()
    if args.table_from:
        table_from(args.table_from)
        return
    try:
        plan = plan_from(args)
    except ValueError as exc:
        ap.error(str(exc))
    if run(plan, args.servers, args.connections, args.out, args.full, args.timeout) is None:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
