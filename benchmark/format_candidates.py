"""Stored format 2 (issue #9): what each candidate layout of a striped value
costs the server, measured against a plain single SET/GET.

Designs (L-byte values, C = lmcache_redis.stripe_count(L) parts, 4 connections):

  plain   baseline: `SET key value` / `GET key`, whole value, one connection.
  hash    (a) `HSET key:tmp i part` per part, in parallel over the connections,
          committed by `RENAME key:tmp key`; read by parallel `HGET key i`.
  keys    (b) format 1: C string keys `key:stripe:i`, parallel `SET`s / `GET`s.
  string  (c) format 2 (README, "Stored format (version 2)"): one string
          `hdr(0) part(0) ... hdr(C-1) part(C-1)` written by ONE `SET` of
          L + 32*C bytes; read by C parallel `GETRANGE`s, one per part. (The
          library's first read round, a <=64 KiB probe, is left out here, as
          is any probe the other designs would need.)

For each design, on a STOCK server (redis-server, no persistence, jemalloc's
defaults) and on the TUNED one (tools/local_redis.py), each round starts a
fresh server and measures, for N keys of L bytes:

  write   N values into the empty server;
  over    the same N keys written again (overwrite steady state);
  read    the N values, checked byte for byte after the timed section;

as server CPU-seconds per GB of values (INFO cpu: used_cpu_user+used_cpu_sys,
all the server's threads), the primary figure because this machine's cores
are shared, and wall GB/s as a secondary one (the JSON adds the server's
minor page faults per MiB, which explain most of the differences); and the
server's memory per value (used_memory delta / N, and MEMORY USAGE of one
value's keys).

Then eviction: a fresh server with --maxmemory (256mb) and allkeys-lru, then
allkeys-lfu; 40 values written back to back with each design; how many are
still readable WHOLE (every part present, of the expected length and, for
format 2, of the same write).

The big transfers go over raw sockets: commands are sent with
socket.sendmsg() straight from the value's memory (iovecs, no client-side
copy) and bulk replies are read with recv_into() into their place, one
thread per connection, so the client is not what limits the server. redis-py
is only used for control commands (INFO, MEMORY USAGE, FLUSHALL).

    python benchmark/format_candidates.py --sizes 32,4,80 --rounds 7 \
        --out benchmark/results/format_candidates.json    # ~2.5 min

GB is 10**9 bytes of value payload (format 2's 32-byte headers not counted).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import socket
import statistics
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import redis

import lmcache_redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import local_redis  # noqa: E402  (tools/, put on the path above)

sys.path.insert(0, str(ROOT / "benchmark"))
import bench_common  # noqa: E402  (benchmark/, where this file is)

MiB = 1 << 20
GB = 10**9
CONNECTIONS = 4
DESIGNS = ("plain", "hash", "keys", "string")
LABELS = {"plain": "plain SET/GET (baseline)", "hash": "(a) hash HSET+RENAME / HGET",
          "keys": "(b) format 1: C keys SET / GET", "string": "(c) format 2: 1 SET / C GETRANGE"}
MAGIC = b"\x89LMR"
HDR = struct.Struct("<4sHHIIQQ")  # magic, version, header size, index, count, length, write id
assert HDR.size == 32


# --- raw RESP over sockets ----------------------------------------------------

def command_iov(*args) -> list:
    """One RESP command as a list of buffers: big arguments are passed as
    memoryviews and go to sendmsg() as they are, never joined into one bytes.
    An argument may be a list of buffers, sent as one bulk string (format 2's
    headers and parts)."""
    iov = [b"*%d\r\n" % len(args)]
    for arg in args:
        pieces = arg if isinstance(arg, list) else [arg]
        pieces = [p.encode() if isinstance(p, str) else p for p in pieces]
        iov.append(b"$%d\r\n" % sum(memoryview(p).nbytes for p in pieces))
        iov.extend(pieces)
        iov.append(b"\r\n")
    return iov


class Conn:
    """One TCP connection: pipelined sends by sendmsg(), replies read from a
    small buffered reader whose readinto() goes straight to the socket (and
    so straight into the destination) for anything bigger than its buffer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=64 * 1024)
        self.scratch = bytearray(1 * MiB)  # sink for bytes nobody asked for

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def send(self, iov: list) -> None:
        bufs = [memoryview(b).cast("B") for b in iov if len(b)]
        while bufs:
            n = self.sock.sendmsg(bufs[:512])  # under IOV_MAX (1024)
            # Drop what went; keep the rest of a partly sent buffer.
            i = 0
            while i < len(bufs) and n >= bufs[i].nbytes:
                n -= bufs[i].nbytes
                i += 1
            bufs = bufs[i:]
            if n:
                bufs[0] = bufs[0][n:]

    def _fill(self, view: memoryview) -> None:
        while view.nbytes:
            got = self.rfile.readinto(view)
            if not got:
                raise ConnectionError("server closed the connection")
            view = view[got:]

    def reply(self, sink: Optional[list] = None):
        """Reads one reply. A bulk reply goes into the memoryviews of sink, in
        order (what does not fit is read and dropped); returns its length, -1
        for nil. Other replies: the line's payload; an error is returned as an
        Exception object, not raised, so that the pipeline stays in step."""
        line = self.rfile.readline()
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b":"):
            return rest
        if kind == b"-":
            return RuntimeError(rest.decode(errors="replace"))
        if kind != b"$":
            raise ValueError(f"unexpected reply {line[:40]!r}")
        n = int(rest)
        if n < 0:
            return -1
        left = n + 2  # and the CRLF
        for view in sink or []:
            take = min(view.nbytes, left - 2) if left > 2 else 0
            if take:
                self._fill(view[:take])
                left -= take
        scratch = memoryview(self.scratch)
        while left:
            take = min(left, scratch.nbytes)
            self._fill(scratch[:take])
            left -= take
        return n


class Pool:
    """CONNECTIONS connections and one thread for each: run() sends each
    connection its commands pipelined, then reads their replies in order."""

    def __init__(self, port: int) -> None:
        self.conns = [Conn(port) for _ in range(CONNECTIONS)]
        self.threads = ThreadPoolExecutor(CONNECTIONS)

    def close(self) -> None:
        self.threads.shutdown()
        for c in self.conns:
            c.close()

    @staticmethod
    def _one(conn: Conn, jobs: list) -> list:
        iov = []
        for cmd, _ in jobs:
            iov.extend(cmd)
        conn.send(iov)
        return [conn.reply(sink) for _, sink in jobs]

    def run(self, jobs: list) -> list:
        """jobs: (connection index, command iov, sink or None); returns the
        replies in the order of jobs."""
        per = [[] for _ in self.conns]
        where = []
        for ci, cmd, sink in jobs:
            where.append((ci, len(per[ci])))
            per[ci].append((cmd, sink))
        busy = [i for i, p in enumerate(per) if p]
        if len(busy) == 1:  # one connection: no thread hand-off needed
            out = {busy[0]: self._one(self.conns[busy[0]], per[busy[0]])}
        else:
            futs = {i: self.threads.submit(self._one, self.conns[i], per[i]) for i in busy}
            out = {i: f.result() for i, f in futs.items()}
        return [out[ci][k] for ci, k in where]


# --- the designs ---------------------------------------------------------------

def parts(length: int, count: int) -> list:
    """(offset, length) of each part, as README's format 2 splits a value."""
    base, rem = divmod(length, count)
    return [(i * base + min(i, rem), base + (1 if i < rem else 0)) for i in range(count)]


def check(results: list) -> None:
    for r in results:
        if isinstance(r, Exception):
            raise r


def write(design: str, pool: Pool, key: str, value: memoryview, count: int) -> bool:
    """Writes one value; False when the server refused part of it."""
    L = value.nbytes
    if design == "plain":
        res = pool.run([(0, command_iov("SET", key, value), None)])
    elif design == "keys":
        res = pool.run([(i % CONNECTIONS, command_iov("SET", f"{key}:stripe:{i}",
                                                      value[o:o + n]), None)
                        for i, (o, n) in enumerate(parts(L, count))])
    elif design == "hash":
        tmp = f"{key}:tmp"
        res = pool.run([(i % CONNECTIONS, command_iov("HSET", tmp, str(i), value[o:o + n]), None)
                        for i, (o, n) in enumerate(parts(L, count))])
        # The commit waits for every part: RENAME replaces any old hash whole.
        res += pool.run([(0, command_iov("RENAME", tmp, key), None)])
    elif design == "string":
        wid = int.from_bytes(secrets.token_bytes(8), "little")
        pieces = []
        for i, (o, n) in enumerate(parts(L, count)):
            pieces.append(HDR.pack(MAGIC, 2, 32, i, count, L, wid))
            pieces.append(value[o:o + n])
        res = pool.run([(0, command_iov("SET", key, pieces), None)])
    else:
        raise ValueError(design)
    return not any(isinstance(r, Exception) for r in res)


def read(design: str, pool: Pool, key: str, dst: memoryview, count: int) -> bool:
    """Reads one value into dst; True when it came back whole (every part
    there with its length; format 2: every header of the same write)."""
    L = dst.nbytes
    if design == "plain":
        return pool.run([(0, command_iov("GET", key), [dst])]) == [L]
    layout = parts(L, count)
    if design == "keys":
        res = pool.run([(i % CONNECTIONS, command_iov("GET", f"{key}:stripe:{i}"),
                         [dst[o:o + n]]) for i, (o, n) in enumerate(layout)])
        return res == [n for _, n in layout]
    if design == "hash":
        res = pool.run([(i % CONNECTIONS, command_iov("HGET", key, str(i)), [dst[o:o + n]])
                        for i, (o, n) in enumerate(layout)])
        return res == [n for _, n in layout]
    if design == "string":
        hdrs = [bytearray(32) for _ in layout]
        jobs = []
        for i, (o, n) in enumerate(layout):
            start = o + 32 * i  # hdr(i) precedes part(i) in the string
            jobs.append((i % CONNECTIONS, command_iov("GETRANGE", key, str(start),
                                                      str(start + 32 + n - 1)),
                         [memoryview(hdrs[i]), dst[o:o + n]]))
        res = pool.run(jobs)
        if res != [32 + n for _, n in layout]:
            return False
        first = HDR.unpack(hdrs[0])
        return all(HDR.unpack(h) == (MAGIC, 2, 32, i, count, L, first[6])
                   for i, h in enumerate(hdrs))
    raise ValueError(design)


def whole(design: str, pool: Pool, key: str, L: int, count: int) -> bool:
    """Is the value of key there whole? Asked with commands whose replies are
    small (STRLEN, HSTRLEN, format 2's 32-byte headers): under maxmemory a
    big reply buffer counts as used memory and makes the next command evict,
    so reading the values themselves would evict the ones not yet read."""
    layout = parts(L, count)
    if design == "plain":
        return pool.run([(0, command_iov("STRLEN", key), None)]) == [b"%d" % L]
    if design == "keys":
        res = pool.run([(0, command_iov("STRLEN", f"{key}:stripe:{i}"), None)
                        for i in range(count)])
        return res == [b"%d" % n for _, n in layout]
    if design == "hash":
        res = pool.run([(0, command_iov("HSTRLEN", key, str(i)), None) for i in range(count)])
        return res == [b"%d" % n for _, n in layout]
    if design == "string":
        hdrs = [bytearray(32) for _ in layout]
        jobs = [(0, command_iov("STRLEN", key), None)]
        for i, (o, n) in enumerate(layout):
            jobs.append((0, command_iov("GETRANGE", key, str(o + 32 * i), str(o + 32 * i + 31)),
                         [memoryview(hdrs[i])]))
        res = pool.run(jobs)
        if res[0] != b"%d" % (L + 32 * count) or res[1:] != [32] * count:
            return False
        first = HDR.unpack(hdrs[0])
        return all(HDR.unpack(h) == (MAGIC, 2, 32, i, count, L, first[6])
                   for i, h in enumerate(hdrs))
    raise ValueError(design)


def value_keys(design: str, key: str, count: int) -> list:
    """The Redis keys one value occupies."""
    if design == "keys":
        return [f"{key}:stripe:{i}" for i in range(count)]
    return [key]


# --- servers and measurements ----------------------------------------------------

def server_cpu(ctl: redis.Redis) -> float:
    info = ctl.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def minor_faults(pid: int) -> int:
    """The server's minor page faults so far (/proc/PID/stat, field 10): a
    page the allocator got fresh from the kernel is faulted in and zeroed,
    which is where much of a big value's server time goes."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[7])


def timed(ctl: redis.Redis, pid: int, fn) -> dict:
    """Runs fn(); the server's CPU seconds and minor faults, wall seconds and
    this process's CPU seconds (all its threads) it took."""
    c0, f0 = server_cpu(ctl), minor_faults(pid)
    w0, p0 = time.perf_counter(), time.process_time()
    fn()
    w1, p1 = time.perf_counter(), time.process_time()
    return {"server_cpu_s": server_cpu(ctl) - c0, "server_minflt": minor_faults(pid) - f0,
            "wall_s": w1 - w0, "client_cpu_s": p1 - p0}


def make_values(size: int, nkeys: int) -> list:
    """nkeys different values from one random buffer (offset by a page each),
    so that a read of the wrong value would not pass the check."""
    buf = np.random.default_rng(9).integers(0, 256, size + nkeys * 4096, dtype=np.uint8)
    mv = memoryview(buf).cast("B")
    return [mv[j * 4096:j * 4096 + size] for j in range(nkeys)]


def one_round(kind: str, design: str, size: int, count: int, values: list,
              dsts: list) -> dict:
    """A fresh server: write into it empty, overwrite, read; memory after the
    first write."""
    n = len(values)
    keys = [f"fmt:{j}" for j in range(n)]
    server = bench_common.start_server(kind)
    ctl = redis.Redis(port=server.port)
    pool = Pool(server.port)
    try:
        def write_all():
            for k, v in zip(keys, values):
                if not write(design, pool, k, v, count):
                    raise RuntimeError(f"{design}: write of {k} refused")

        mem0 = int(ctl.info("memory")["used_memory"])
        out = {"write": timed(ctl, server.pid, write_all)}
        # used_memory counts the clients' query buffers too (one of up to a
        # whole value per connection): closing the writers' connections frees
        # them, so that the delta is the values alone.
        pool.close()
        # The server sees the closes in its own time: wait for them.
        while int(ctl.info("clients")["connected_clients"]) > 1:
            time.sleep(0.01)
        mem1 = int(ctl.info("memory")["used_memory"])
        pool = Pool(server.port)
        usage = sum(int(ctl.memory_usage(k, samples=0))
                    for k in value_keys(design, keys[0], count))
        out["over"] = timed(ctl, server.pid, write_all)
        ok = []
        out["read"] = timed(ctl, server.pid, lambda: ok.extend(read(design, pool, k, d, count)
                                                   for k, d in zip(keys, dsts)))
        # Checked after the timed section: the client's compare is not the server's work.
        if not all(ok) or any(not np.array_equal(np.frombuffer(d, np.uint8),
                                                  np.frombuffer(v, np.uint8))
                              for d, v in zip(dsts, values)):
            raise RuntimeError(f"{design}: a value read back wrong")
        for phase in ("write", "over", "read"):
            m = out[phase]
            gb = n * size / GB
            m["cpu_s_per_gb"] = m["server_cpu_s"] / gb
            m["gb_per_s"] = gb / m["wall_s"]
            m["client_cpu_s_per_gb"] = m["client_cpu_s"] / gb
            m["minflt_per_mib"] = m["server_minflt"] / (n * size / MiB)
        out["mem_per_value"] = (mem1 - mem0) / n
        out["memory_usage"] = usage
        return out
    finally:
        pool.close()
        ctl.close()
        server.stop()


def eviction(kind: str, design: str, policy: str, maxmemory: str, size: int, count: int,
             value: memoryview, nvalues: int) -> dict:
    """nvalues writes back to back into a server capped at maxmemory; then
    how many values are still whole, and how many keys are left at all."""
    server = bench_common.start_server(kind, ["--maxmemory", maxmemory, "--maxmemory-policy", policy])
    ctl = redis.Redis(port=server.port)
    pool = Pool(server.port)
    try:
        keys = [f"ev:{j}" for j in range(nvalues)]
        refused = sum(not write(design, pool, k, value, count) for k in keys)
        left, evicted = int(ctl.dbsize()), int(ctl.info("stats")["evicted_keys"])
        n_whole = sum(whole(design, pool, k, size, count) for k in keys)
        # Should stay put: the checks' replies are small.
        evicted_after = int(ctl.info("stats")["evicted_keys"])
        return {"whole": n_whole, "refused": refused, "keys_left": left,
                "evicted_keys": evicted, "evicted_during_check": evicted_after - evicted}
    finally:
        pool.close()
        ctl.close()
        server.stop()


# --- report ------------------------------------------------------------------

def median_of(rounds: list, phase: str, field: str) -> float:
    return statistics.median(r[phase][field] for r in rounds)


def summarise(results: dict) -> list:
    """One row per size, server and design: medians over rounds, and ratios
    against plain in the same run."""
    rows = []
    for size_mb, per_kind in results["throughput"].items():
        for kind, per_design in per_kind.items():
            base = per_design["plain"]["rounds"]
            for design, res in per_design.items():
                rounds = res["rounds"]
                row = {"size_mib": float(size_mb), "server": kind, "design": design,
                       "parts": res["parts"], "keys": res["keys"]}
                for phase in ("write", "over", "read"):
                    cpu = median_of(rounds, phase, "cpu_s_per_gb")
                    row[f"{phase}_cpu_s_per_gb"] = cpu
                    row[f"{phase}_cpu_x"] = cpu / median_of(base, phase, "cpu_s_per_gb")
                    row[f"{phase}_cpu_range"] = [min(r[phase]["cpu_s_per_gb"] for r in rounds),
                                                 max(r[phase]["cpu_s_per_gb"] for r in rounds)]
                    row[f"{phase}_gb_per_s"] = median_of(rounds, phase, "gb_per_s")
                    row[f"{phase}_client_cpu_s_per_gb"] = median_of(rounds, phase,
                                                                    "client_cpu_s_per_gb")
                    row[f"{phase}_minflt_per_mib"] = median_of(rounds, phase, "minflt_per_mib")
                row["mem_per_value_mib"] = statistics.median(
                    r["mem_per_value"] for r in rounds) / MiB
                row["memory_usage_mib"] = statistics.median(
                    r["memory_usage"] for r in rounds) / MiB
                rows.append(row)
    return rows


def markdown(rows: list, evictions: list, nvalues: int, maxmemory: str) -> str:
    out = ["| MiB | server | design | parts | write empty: server CPU s/GB (x plain) "
           "| overwrite: s/GB (x) | read: s/GB (x) | wall GB/s write / over / read "
           "| used_memory per value MiB | MEMORY USAGE MiB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r['size_mib']:g}", r["server"], LABELS[r["design"]], str(r["parts"])]
        for phase in ("write", "over", "read"):
            cells.append(f"{r[f'{phase}_cpu_s_per_gb']:.3f} ({r[f'{phase}_cpu_x']:.2f}x)")
        cells.append(" / ".join(f"{r[f'{p}_gb_per_s']:.2f}" for p in ("write", "over", "read")))
        cells.append(f"{r['mem_per_value_mib']:.2f}")
        cells.append(f"{r['memory_usage_mib']:.2f}")
        out.append("| " + " | ".join(cells) + " |")
    if evictions:
        out += ["", f"Eviction: maxmemory {maxmemory}, {nvalues} values written back to back.",
                "",
                "| server | policy | design | values whole | keys left | evicted keys "
                "| writes refused | evicted while checking |",
                "|---|---|---|---|---|---|---|---|"]
        for e in evictions:
            out.append(f"| {e['server']} | {e['policy']} | {LABELS[e['design']]} | "
                       f"{e['whole']} / {nvalues} | {e['keys_left']} | {e['evicted_keys']} "
                       f"| {e['refused']} | {e['evicted_during_check']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32", help="value sizes in MiB, comma-separated "
                    "(default 32; the issue also names 4 and 80)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="fresh-server rounds per size, server and design; medians are "
                         "reported (default 3)")
    ap.add_argument("--data-mib", type=int, default=256,
                    help="values per phase: this many MiB worth, at least 4 values "
                         "(default 256: 8 values of 32 MiB)")
    ap.add_argument("--servers", default="stock,tuned",
                    help="which servers, comma-separated: stock, tuned (default both)")
    ap.add_argument("--designs", default=",".join(DESIGNS),
                    help=f"comma-separated, of {', '.join(DESIGNS)} (default all; plain is "
                         "always added, the ratios need it)")
    ap.add_argument("--maxmemory", default="256mb", help="the eviction test's cap (256mb)")
    ap.add_argument("--eviction-values", type=int, default=40,
                    help="values written in the eviction burst (default 40; 0 skips it)")
    ap.add_argument("--eviction-size", type=float, default=32,
                    help="their size in MiB (default 32)")
    ap.add_argument("--policies", default="allkeys-lru,allkeys-lfu",
                    help="eviction policies tried, in order (default allkeys-lru,allkeys-lfu)")
    ap.add_argument("--out", type=Path, help="write the results (rounds, rows, evictions) "
                    "here as JSON")
    args = ap.parse_args()

    # A MALLOC_CONF in this shell would reach the stock server (RedisServer
    # passes the environment on) and make it not stock.
    os.environ.pop("MALLOC_CONF", None)
    kinds = args.servers.split(",")
    designs = ["plain"] + [d for d in args.designs.split(",") if d != "plain"]
    for d in designs:
        if d not in DESIGNS:
            ap.error(f"unknown design {d!r}")

    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "argv": sys.argv, "redis": local_redis.version(),
               "tuned_settings": local_redis.settings(), "connections": CONNECTIONS,
               "throughput": {}, "eviction": []}
    t_start = time.monotonic()
    for size_mb in (float(s) for s in args.sizes.split(",")):
        size = int(size_mb * MiB)
        count = lmcache_redis.stripe_count(size)
        nkeys = max(4, round(args.data_mib / size_mb))
        values = make_values(size, nkeys)
        dsts = [memoryview(bytearray(size)) for _ in range(nkeys)]  # faulted in once, here
        per_kind = results["throughput"].setdefault(f"{size_mb:g}", {})
        for rnd in range(args.rounds):
            for kind in kinds:
                # Rotating the order spreads any drift in the shared machine
                # over all designs instead of one.
                order = designs[rnd % len(designs):] + designs[:rnd % len(designs)]
                for design in order:
                    res = one_round(kind, design, size, count, values, dsts)
                    slot = per_kind.setdefault(kind, {}).setdefault(
                        design, {"parts": 1 if design == "plain" else count, "keys": nkeys,
                                 "rounds": []})
                    slot["rounds"].append(res)
                    print(f"# {size_mb:g} MiB {kind} {design} round {rnd + 1}: " + ", ".join(
                        f"{p} {res[p]['cpu_s_per_gb']:.3f} s/GB {res[p]['gb_per_s']:.2f} GB/s"
                        for p in ("write", "over", "read")), file=sys.stderr, flush=True)
        # Keep the plain baseline first, then the designs in the order.
        for kind in per_kind:
            per_kind[kind] = {d: per_kind[kind][d] for d in designs}

    if args.eviction_values:
        size = int(args.eviction_size * MiB)
        count = lmcache_redis.stripe_count(size)
        value = make_values(size, 1)[0]
        for kind in kinds:
            for policy in args.policies.split(","):
                for design in designs:
                    e = eviction(kind, design, policy, args.maxmemory, size, count, value,
                                 args.eviction_values)
                    e.update(server=kind, policy=policy, design=design)
                    results["eviction"].append(e)
                    print(f"# eviction {kind} {policy} {design}: {e}", file=sys.stderr,
                          flush=True)

    results["rows"] = summarise(results)
    results["seconds"] = time.monotonic() - t_start
    table = markdown(results["rows"], results["eviction"], args.eviction_values, args.maxmemory)
    print(f"{results['date']}  {results['redis']}  tuned: {results['tuned_settings']}  "
          f"stock: no MALLOC_CONF; {CONNECTIONS} connections; medians of {args.rounds} rounds; "
          f"{results['seconds']:.0f} s\n")
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
