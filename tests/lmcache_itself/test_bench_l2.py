"""LMCache 0.5.6's own benchmark, `lmcache bench l2`, driving
LMCacheRedisNativeClient as its native_plugin L2 adapter against the
session's server (tests/conftest.py's redis_url): store, lookup and load
with the bench's byte-for-byte check, a value stored verbatim and a
striped one, in-flight submits; a fault_inject adapter around ours, whose
dropped loads are reported, not hung; and a load of keys never stored,
reported as misses (LMCache's own client would hang on it). The command
and the validity rules are benchmark/lmcache_l2.py's, run as its
comparison runs them. Each bench run is a process with a deadline.

    PYTHONPATH=$PWD LMCACHE_TRACK_USAGE=false DO_NOT_TRACK=1 \\
        .venv-lmcache/bin/python -m pytest tests/lmcache_itself/test_bench_l2.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("lmcache")

from scripts import load  # noqa: E402  (tests/, on the path by its conftest)

ROOT = Path(__file__).resolve().parents[2]
KiB = 1 << 10
MiB = 1 << 20
# Seconds one bench run may take before it counts as hung (each takes ~5 s).
DEADLINE = 90
# The keys `lmcache bench l2` makes (its model name is fixed).
BENCH_KEYS = "bench-model@*"


@pytest.fixture(scope="module")
def l2():
    return load("lmcache_l2", ROOT / "benchmark" / "lmcache_l2.py")


@pytest.fixture
def server(redis_url):
    """(host, port) of the session's server, without the bench's keys
    before and after the test (every run of the bench uses the same keys)."""
    bench_common = load("bench_common", ROOT / "benchmark" / "bench_common.py")
    parts = urlsplit(redis_url)
    address = (parts.hostname, parts.port)

    def clear() -> None:
        import socket
        with socket.create_connection(address, timeout=10) as sock:
            keys = bench_common._resp_command(sock, "KEYS", BENCH_KEYS)
            if keys:
                bench_common._resp_command(sock, "DEL", *keys)

    clear()
    yield address
    clear()


def lmcache_exe() -> str:
    return str(Path(sys.executable).parent / "lmcache")


def bench(l2, adapter: dict, shape, tmp_path: Path, only: str | None = None):
    argv = l2.bench_argv(lmcache_exe(), adapter, shape, tmp_path / "bench.json")
    if only:
        argv.append(f"--only={only}")
    outcome = l2.run_bench(argv, l2.bench_env(), DEADLINE)
    assert not outcome.stopped, outcome.stopped
    return outcome


def shape(l2, size: int, num_keys: int = 3, in_flight: int = 2):
    return l2.Shape(size=size, num_keys=num_keys, in_flight=in_flight, rounds=2, warmup_rounds=1)


@pytest.mark.parametrize("size, striped", [
    (2 * MiB - KiB, False),   # the largest value the bench makes (whole KiB) stored verbatim
    (3 * MiB + KiB, True),    # striped, its last stripe short
], ids=["2MiB-1KiB-verbatim", "3MiB+1KiB-striped"])
def test_store_lookup_load_verified(l2, server, tmp_path, size, striped):
    import lmcache_redis

    connections = l2.DEFAULT_CONNECTIONS
    assert (lmcache_redis.stripe_count(size, connections=connections) > 1) == striped
    sh = shape(l2, size)
    outcome = bench(l2, l2.Client(l2.OURS, connections).adapter(*server), sh, tmp_path)
    assert outcome.returncode == 0, outcome.stderr_tail
    assert any(f"[Verify] All {sh.keys_per_round} keys data verified OK." in line
               for line in outcome.lines), outcome.lines[-8:]
    ops = l2.operations(outcome.metrics)
    assert set(ops) == {"store", "lookup", "load"}
    for op, section in ops.items():
        assert section["rounds_timed_out"] == 0, (op, section)
        assert section["total_keys"] == sh.rounds * sh.keys_per_round, (op, section)
        assert section["total_success"] == section["total_keys"], (op, section)
    assert l2.problems(outcome, sh) == []


def test_fault_inject_drops_are_reported_not_hung(l2, server, tmp_path):
    sh = shape(l2, 1 * MiB, num_keys=16, in_flight=1)
    ours = l2.Client(l2.OURS, l2.DEFAULT_CONNECTIONS).adapter(*server)
    outcome = bench(l2, {"type": "fault_inject", "rate": 0.25, "seed": 1, "inner": ours}, sh,
                    tmp_path)
    assert outcome.returncode == 0, outcome.stderr_tail
    ops = l2.operations(outcome.metrics)
    for op in ("store", "lookup", "load"):
        assert ops[op]["rounds_timed_out"] == 0, ops[op]
    # only loads are faulted: stores and lookups all succeed, some loads fail
    assert ops["store"]["total_success"] == ops["store"]["total_keys"]
    assert ops["lookup"]["total_success"] == ops["lookup"]["total_keys"]
    assert 0 < ops["load"]["total_success"] < ops["load"]["total_keys"], ops["load"]
    # and the comparison would not report a figure of such a run
    assert any(p.startswith("load:") for p in l2.problems(outcome, sh))


def test_loading_keys_never_stored_reports_misses(l2, server, tmp_path):
    """LMCache 0.5.6's own client blocks for good on such a GET; ours
    answers every key with a miss within the round."""
    sh = shape(l2, 4 * MiB, num_keys=4, in_flight=2)
    outcome = bench(l2, l2.Client(l2.OURS, l2.DEFAULT_CONNECTIONS).adapter(*server), sh,
                    tmp_path, only="load")
    assert outcome.returncode == 0, outcome.stderr_tail
    load_ = l2.operations(outcome.metrics)["load"]
    assert load_["rounds_timed_out"] == 0 and load_["rounds"] == sh.rounds
    assert load_["total_success"] == 0 and load_["total_keys"] == sh.rounds * sh.keys_per_round
    assert outcome.seconds < DEADLINE / 2
