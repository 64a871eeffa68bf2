"""benchmark/lmcache_l2.py, without LMCache: the `lmcache bench l2` command
it builds, how it reads the bench's output (JSON, phase lines), the rules
that make a run invalid, the ratio table and the targets, stopping a run
that hangs, and compare.py's flag for it. A stand-in for the `lmcache`
command (FAKE_LMCACHE, below) plays the bench; tests/lmcache_itself/
runs the real one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import load

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"
MiB = 1 << 20


@pytest.fixture(scope="module")
def l2():
    return load("lmcache_l2", BENCH / "lmcache_l2.py")


def script_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}


# A stand-in for `lmcache bench l2`: prints the bench's phase and round lines
# and writes its JSON, from its own arguments. FAKE_MODE: "ok"; "hang" (never
# ends); "lost" (a store round misses a key, then it hangs, as LMCache's
# client would on the load); "fail-load" (load misses a key, exit 0);
# "timeout" (a load round timed out); "mismatch" (the check fails, exit 1).
# Its MB/s: FAKE_MBPS_<OP> (default 1000).
FAKE_LMCACHE = r'''
import json, os, sys, time
args = sys.argv[1:]
def arg(name):
    return args[args.index(name) + 1]
mode = os.environ.get("FAKE_MODE", "ok")
if mode == "hang":
    time.sleep(600)
keys, inflight = int(arg("--num-keys")), int(arg("--in-flight"))
rounds, warm = int(arg("--rounds")), int(arg("--warmup-rounds"))
per_round = keys * inflight
metrics = {"config": {"l2_adapter_json": arg("--l2-adapter")}}
for i, op in enumerate(("Store", "Lookup", "Load")):
    print(f"[{op}] Running {warm} warmup + {rounds} measurement rounds...", flush=True)
    word = {"Store": "success_keys", "Lookup": "found", "Load": "loaded"}[op]
    success, timed_out = 0, 0
    for r in range(warm + rounds):
        got = per_round
        if (mode == "lost" and op == "Store") or (mode == "fail-load" and op == "Load"):
            got -= 1
        if mode == "timeout" and op == "Load" and r == warm:
            print(f"  [Load] Round {r + 1}: TIMEOUT (0/{inflight} tasks completed, "
                  f"loaded=0/{per_round})", flush=True)
            timed_out += 1
            continue
        print(f"  [{op}] Round {r + 1}: 1.00 ms, {word}={got}/{per_round}", flush=True)
        if r >= warm:
            success += got
        if mode == "lost" and op == "Store":
            time.sleep(600)
    done = rounds - timed_out
    metrics[f"op_{i}"] = {
        "operation": op, "rounds": rounds, "rounds_timed_out": timed_out,
        "keys_per_round": per_round, "total_keys": per_round * rounds,
        "total_success": success,
        "throughput_avg_mbps": 0.0 if op == "Lookup" else float(
            os.environ.get("FAKE_MBPS_" + op.upper(), "1000")),
        "ops_per_sec_avg": float(os.environ.get("FAKE_OPS", "50000")) if done else 0.0}
    print()
print("[Verify] Checking store -> load data integrity for last measured round...")
if mode == "mismatch":
    print(f"  [Verify] 1/{per_round} keys have data mismatches!")
else:
    print(f"  [Verify] All {per_round} keys data verified OK.")
with open(arg("--output"), "w") as f:
    json.dump({"title": "L2 Adapter Benchmark Result", "metrics": metrics}, f)
print("[Cleanup] Closing adapter...")
print("[Cleanup] Done.")
sys.exit(1 if mode == "mismatch" else 0)
'''


@pytest.fixture
def fake_lmcache(tmp_path) -> str:
    path = tmp_path / "lmcache"
    path.write_text(f"#!{sys.executable}\n" + FAKE_LMCACHE)
    path.chmod(0o755)
    return str(path)


def shape(l2, size_mib: int = 4):
    return l2.shape_for(l2.Plan(sizes_mib=[size_mib], mib_per_round=16, rounds=2,
                                warmup_rounds=1, repeats=1), size_mib)


def fake_run(l2, fake_lmcache, tmp_path, mode="ok", client=None, timeout=60, sh=None, **env):
    sh = sh or shape(l2)
    client = client or l2.Client(l2.OURS, 4)
    argv = l2.bench_argv(fake_lmcache, client.adapter("127.0.0.1", 1), sh, tmp_path / "out.json")
    cpu = iter(range(100))
    outcome = l2.run_bench(argv, {**script_env(), "FAKE_MODE": mode, **env}, timeout,
                           server_cpu=lambda: float(next(cpu)),
                           stop_on_lost_store=client.hangs_on_missing_get)
    return outcome, sh


# ---- the command ----------------------------------------------------------

def test_the_command_is_the_bench_with_verification_and_json(l2, tmp_path):
    sh = shape(l2, 4)
    argv = l2.bench_argv("/venv/bin/lmcache", l2.Client(l2.OURS, 8).adapter("h", 7), sh,
                         tmp_path / "o.json")
    assert argv[:3] == ["/venv/bin/lmcache", "bench", "l2"]
    flags = {name: argv[i + 1] for i, name in enumerate(argv)
             if name.startswith("--") and name != "--no-skip-verify"}
    assert json.loads(flags["--l2-adapter"]) == {
        "type": "native_plugin", "module_path": "lmcache_redis.lmcache",
        "class_name": "LMCacheRedisNativeClient",
        "adapter_params": {"url": "redis://h:7", "connections": 8}}
    assert int(flags["--data-size-kb"]) * 1024 == 4 * MiB
    assert int(flags["--num-keys"]) * int(flags["--in-flight"]) == 16 // 4
    assert flags["--format"] == "json" and flags["--output"] == str(tmp_path / "o.json")
    assert float(flags["--lookup-max-hit-rate"]) == l2.LOOKUP_HIT_RATE
    assert "--no-skip-verify" in argv
    assert not any("flamegraph" in a for a in argv)


def test_lmcaches_client_is_its_resp_adapter_with_8_workers(l2):
    theirs = [c for c in l2.clients_for([4, 8]) if c.kind == l2.LMCACHE]
    assert len(theirs) == 1 and theirs[0].param == l2.LMCACHE_WORKERS == 8
    assert theirs[0].adapter("h", 7) == {"type": "resp", "host": "h", "port": 7, "num_workers": 8}
    assert theirs[0].hangs_on_missing_get
    assert [c.param for c in l2.clients_for([4, 8]) if c.kind == l2.OURS] == [4, 8]
    assert not l2.Client(l2.OURS, 4).hangs_on_missing_get


def test_sizes_the_bench_cannot_take_are_refused(l2):
    plan = l2.Plan(sizes_mib=[3], mib_per_round=16, rounds=1, warmup_rounds=1, repeats=1)
    with pytest.raises(ValueError, match="no whole number"):
        l2.shape_for(plan, 3)
    odd = l2.Shape(size=MiB + 1, num_keys=1, in_flight=1, rounds=1, warmup_rounds=1)
    with pytest.raises(ValueError, match="KiB"):
        l2.bench_argv("lmcache", {}, odd, Path("o.json"))


def test_plans_move_the_same_bytes_at_every_size(l2):
    for plan in (l2.QUICK, l2.FULL):
        shapes = [l2.shape_for(plan, s) for s in plan.sizes_mib]
        assert len({s.bytes_per_round for s in shapes}) == 1
        assert sorted(plan.sizes_mib) == [4, 8, 32, 64]
        # every LMCache worker gets a key at every size
        assert min(s.keys_per_round for s in shapes) >= l2.LMCACHE_WORKERS
    assert l2.FULL.repeats > 1 and l2.FULL.rounds > l2.QUICK.rounds


def test_the_environment_keeps_everything_on_the_machine(l2):
    env = l2.bench_env({"PATH": "/bin", "PYTHONPATH": "/x", "PYTHONSAFEPATH": "1"})
    assert env["LMCACHE_TRACK_USAGE"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert env["LMCACHE_DISABLE_BANNER"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/x"]
    assert env["PYTHONUNBUFFERED"] == "1" and "PYTHONSAFEPATH" not in env
    assert env["OMP_NUM_THREADS"] == "1"  # the bench's torch threads do not spin


# ---- reading a run; the validity rules -------------------------------------

def test_a_good_run_is_valid_and_its_figures_are_read(l2, fake_lmcache, tmp_path):
    outcome, sh = fake_run(l2, fake_lmcache, tmp_path, FAKE_MBPS_STORE="700", FAKE_MBPS_LOAD="2100")
    assert outcome.returncode == 0 and not outcome.stopped
    assert l2.problems(outcome, sh) == []
    assert set(l2.operations(outcome.metrics)) == {"store", "lookup", "load"}
    # the server's CPU, read at each phase line: store, lookup, load, verify, cleanup
    assert [m[0] for m in outcome.marks] == ["store", "lookup", "load", "verify", "cleanup"]
    cpu = l2.phase_cpu(outcome.marks)
    assert {op: v["server"] for op, v in cpu.items()} == {"store": 1.0, "lookup": 1.0, "load": 1.0}
    # and the bench process's own (the stand-in's, read from /proc)
    assert all(v["client"] is not None and v["client"] >= 0 for v in cpu.values())
    row = l2.record(outcome, sh, l2.Client(l2.OURS, 4), "tuned", 0, 0)
    assert row["valid"] and row["store_mbps"] == 700 and row["load_mbps"] == 2100
    moved = (sh.rounds + sh.warmup_rounds) * sh.bytes_per_round
    assert row["store_server_cpu_s_per_gb"] == pytest.approx(1.0 / (moved / 1e9))
    assert row["load_client_cpu_s_per_gb"] == pytest.approx(cpu["load"]["client"] / (moved / 1e9))
    assert len(row["round_lines"]) == 3 * (sh.rounds + sh.warmup_rounds)


def test_operations_are_found_by_name_not_place(l2):
    metrics = {"config": {}, "op_0": {"operation": "Load"}, "op_1": {"operation": "Store"}}
    assert {k: v["operation"] for k, v in l2.operations(metrics).items()} == {
        "load": "Load", "store": "Store"}
    assert l2.operations(None) == {}


@pytest.mark.parametrize("mode, reason", [
    ("fail-load", "keys succeeded"),
    ("timeout", "load: 1 round(s) timed out"),
    ("mismatch", "exit status 1"),
])
def test_a_run_with_a_failure_is_invalid(l2, fake_lmcache, tmp_path, mode, reason):
    outcome, sh = fake_run(l2, fake_lmcache, tmp_path, mode)
    found = l2.problems(outcome, sh)
    assert any(reason in p for p in found), found
    row = l2.record(outcome, sh, l2.Client(l2.OURS, 4), "stock", 0, 0)
    assert not row["valid"] and "store_mbps" not in row and "load_mbps" not in row


def test_a_mismatch_is_invalid_even_when_the_bench_exits_0(l2, fake_lmcache, tmp_path):
    outcome, sh = fake_run(l2, fake_lmcache, tmp_path)
    outcome.lines = [line for line in outcome.lines if "verified OK" not in line]
    assert any("verified OK" in p for p in l2.problems(outcome, sh))


def test_every_rule_on_the_json(l2, fake_lmcache, tmp_path):
    outcome, sh = fake_run(l2, fake_lmcache, tmp_path)
    ops = l2.operations(outcome.metrics)
    ops["lookup"]["total_success"] -= 1                # a key not found
    ops["store"]["rounds"] = sh.rounds - 1             # fewer rounds than asked
    ops["load"]["total_keys"] += sh.keys_per_round     # more keys than asked
    del outcome.metrics["op_0"]                        # store gone
    found = l2.problems(outcome, sh)
    assert any(p.startswith("store: not in the result") for p in found), found
    assert any(p.startswith("lookup:") and "found" in p for p in found), found
    assert any(p.startswith("load:") and "keys, expected" in p for p in found), found
    outcome.metrics = None
    assert l2.problems(outcome, sh) == ["no JSON result"]


def test_a_hanging_run_is_stopped(l2, fake_lmcache, tmp_path):
    outcome, sh = fake_run(l2, fake_lmcache, tmp_path, "hang", timeout=2)
    assert outcome.returncode is None and outcome.seconds < 30
    assert l2.problems(outcome, sh) == ["no result within 2 s, stopped"]


def test_lmcaches_client_is_stopped_once_a_store_lost_keys(l2, fake_lmcache, tmp_path):
    """Its load would GET the missing key and hang for good: stopped at once."""
    theirs = l2.Client(l2.LMCACHE, 8)
    outcome, sh = fake_run(l2, fake_lmcache, tmp_path, "lost", client=theirs, timeout=60)
    assert outcome.seconds < 30
    assert "a store round lost keys" in l2.problems(outcome, sh)[0]
    # ours is not stopped for it: it reports the misses (here: the stand-in hangs)
    outcome, _ = fake_run(l2, fake_lmcache, tmp_path, "lost", timeout=2)
    assert outcome.stopped.startswith("no result within")


# ---- the tables and the targets ------------------------------------------

def rows_for(l2, figures: dict, server="tuned", valid=True) -> list[dict]:
    """Rows as record() makes them: figures[(kind, param, size_mib)] = (store, load, lookup)."""
    out = []
    for (kind, param, size), (store, load, lookup) in figures.items():
        for rep, scale in enumerate((1.0, 1.1, 0.9)):
            out.append(dict(server=server, size=size * MiB, client=kind, param=param,
                            label=l2.Client(kind, param).name, repeat=rep, order=0,
                            valid=valid, problems=[] if valid else ["exit status 1"],
                            keys_per_round=512 // size, store_mbps=store * scale,
                            load_mbps=load * scale, lookup_keys_per_s=lookup,
                            store_server_cpu_s_per_gb=0.5, load_server_cpu_s_per_gb=0.25,
                            store_client_cpu_s_per_gb=0.125, load_client_cpu_s_per_gb=0.0625,
                            other_cpu_share=rep / 10))
    return out


def test_the_table_has_ratios_of_the_medians(l2):
    ours, theirs = l2.Client(l2.OURS, 4), l2.Client(l2.LMCACHE, 8)
    store_o, load_o, store_t, load_t = 900.0, 3000.0, 1000.0, 1500.0
    rows = rows_for(l2, {(ours.kind, 4, 32): (store_o, load_o, 60e3),
                         (theirs.kind, 8, 32): (store_t, load_t, 30e3)})
    text = "\n".join(l2.tables(rows))
    line = next(t for t in text.splitlines() if t.startswith("| tuned | 32 MiB |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "4 conn"
    assert cells[4:6] == [f"{store_o:.0f}", f"{store_t:.0f}"]
    # the per-repeat ratios are equal here (both scaled alike): no spread
    assert cells[6] == f"{store_o / store_t:.2f}x ({store_o / store_t:.2f}-{store_o / store_t:.2f})"
    assert cells[7:9] == [f"{load_o:.0f}", f"{load_t:.0f}"]
    assert cells[9].startswith(f"{load_o / load_t:.2f}x")
    assert cells[10] == "20%"   # the largest share of the machine others took
    assert ("| tuned | 32 MiB | 4 conn | 0.50 / 0.50 | 0.25 / 0.25 | 0.12 / 0.12 "
            "| 0.06 / 0.06 |") in text
    assert f"| tuned | 32 MiB | 4 conn | 60.0 | 30.0 | {2:.2f}x |" in text
    targets = l2.target_lines(rows)
    assert targets == [f"tuned, ours with 4 connections: load >= {l2.TARGETS['load']:g}x: met "
                       f"(lowest {load_o / load_t:.2f}x); store >= {l2.TARGETS['store']:g}x: "
                       f"missed at 32 MiB {store_o / store_t:.2f}x "
                       f"(lowest {store_o / store_t:.2f}x)"]


def test_invalid_runs_give_no_figure_and_are_listed(l2):
    rows = (rows_for(l2, {(l2.OURS, 4, 8): (1.0, 1.0, 1.0)}, valid=False)
            + rows_for(l2, {(l2.LMCACHE, 8, 8): (1.0, 1.0, 1.0)}))
    text = "\n".join(l2.tables(rows))
    line = next(t for t in text.splitlines() if t.startswith("| tuned | 8 MiB | 64 | 4 conn"))
    assert "| - | 1 | - |" in line
    assert "**Invalid runs** (3;" in text
    assert "- tuned 8 MiB ours, 4 connections (repeat 1): exit status 1" in text
    assert "missed at 8 MiB no valid figure" in l2.target_lines(rows)[0]


def test_a_table_from_a_saved_run(l2, tmp_path, capsys):
    rows = rows_for(l2, {(l2.OURS, 4, 4): (2.0, 2.0, 1.0), (l2.LMCACHE, 8, 4): (1.0, 1.0, 1.0)})
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(dict(header="h", machine_before="b", machine_after="a",
                                    rows=rows)))
    l2.table_from(path)
    out = capsys.readouterr().out
    assert "| tuned | 4 MiB | 128 | 4 conn | 2 | 1 | 2.00x" in out
    assert "store >= 1x: met" in out


# ---- the whole run, with the stand-in, on a real server ------------------

def test_a_whole_run_writes_its_tables(l2, fake_lmcache, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MBPS_LOAD", "2000")
    plan = l2.Plan(sizes_mib=[4], mib_per_round=8, rounds=1, warmup_rounds=1, repeats=1)
    said: list[str] = []
    path = l2.run(plan, ["tuned"], [4], tmp_path, False, timeout=60, lmcache_exe=fake_lmcache,
                  say=said.append)
    saved = json.loads(path.read_text())
    assert [r["valid"] for r in saved["rows"]] == [True, True]
    assert [r["client"] for r in saved["rows"]] == [l2.OURS, l2.LMCACHE]
    assert saved["rows"][0]["command"].startswith(
        "LMCACHE_TRACK_USAGE=false DO_NOT_TRACK=1 LMCACHE_DISABLE_BANNER=1 OMP_NUM_THREADS=1 "
        "PYTHONPATH=. ")
    text = "\n".join(said)
    assert "| tuned | 4 MiB | 2 | 4 conn | 1000 | 1000 | 1.00x |" in text
    assert "load average" in text and "machine after:" in text
    assert path.with_suffix(".md").read_text().count("| tuned | 4 MiB |") == 3  # 3 tables


def test_no_lmcache_venv_is_one_line(l2, monkeypatch, tmp_path):
    venv = load("lmcache_venv", BENCH / "lmcache_venv.py")
    monkeypatch.setattr(venv, "ensure_or_none", lambda **kw: (
        None, "LMCache C++ client: left out of this run: cannot install .venv-lmcache (no "
              "python3.11 on PATH)"))
    said: list[str] = []
    assert l2.run(l2.QUICK, ["tuned"], [4], tmp_path, False, say=said.append) is None
    assert said == ["lmcache bench l2: left out of this run: cannot install .venv-lmcache "
                    "(no python3.11 on PATH)"]
    assert not list(tmp_path.iterdir())


def test_compare_runs_it_last_and_can_leave_it_out():
    out = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--help"], env=script_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--no-l2" in out.stdout and "lmcache bench l2" in out.stdout
    out = subprocess.run([sys.executable, str(BENCH / "lmcache_l2.py"), "--help"],
                         env=script_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--quick", "--full", "--sizes", "--servers", "--connections", "--table-from"):
        assert flag in out.stdout, flag
