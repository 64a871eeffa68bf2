"""LMCache's own C++ RESP client as a benchmark peer: what runs without its
venv (.venv-lmcache, 1.5 GB): making the venv and saying, in one line, why
it cannot be made; the peer script's arguments; and compare.py's runs,
failure handling, ratios, legend and headline for it. Nothing here imports
lmcache or needs .venv-lmcache."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import load

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"
MiB = 1 << 20




@pytest.fixture(scope="module")
def venv_mod():
    return load("lmcache_venv", BENCH / "lmcache_venv.py")


@pytest.fixture(scope="module")
def compare():
    return load("compare", BENCH / "compare.py")


def script_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}


# ---- benchmark/requirements-lmcache-cpu.txt and making the venv ------------

def test_requirements_are_exact_pins():
    lines = [line.strip() for line in (BENCH / "requirements-lmcache-cpu.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 80  # §9's 77, and pytest's 3 for tests/lmcache_itself
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]
    pins = dict(line.split("==") for line in lines)
    assert pins["lmcache"] == "0.5.6" and pins["torch"] == "2.13.0"
    assert pins["opentelemetry-sdk"] == "1.39.1"
    # The versions .venv tests with (tools/run-tests runs both).
    assert (pins["pytest"], pins["pluggy"], pins["iniconfig"]) == ("9.2.0", "1.7.0", "2.3.1")


def test_venv_is_git_ignored():
    assert ".venv-lmcache/" in (ROOT / ".gitignore").read_text().splitlines()


def test_no_python311_says_why_in_one_line(venv_mod, tmp_path, monkeypatch):
    monkeypatch.setattr(venv_mod.shutil, "which", lambda name: None)
    py, why = venv_mod.ensure_or_none(venv=tmp_path / ".venv-lmcache")
    assert py is None
    assert "\n" not in why
    assert why.startswith("LMCache C++ client: left out of this run: cannot install .venv-lmcache")
    assert "no python3.11" in why
    assert not (tmp_path / ".venv-lmcache").exists()


FAKE_PYTHON311 = """#!/bin/sh
# A stand-in for python3.11: `-m venv DIR` makes DIR/bin/python, which fails
# as pip does without network or without the torch CPU wheel.
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\necho "Looking in links: /opt/wheels"\\necho "ERROR: No matching distribution found for torch==2.13.0" >&2\\nexit 1\\n' > "$3/bin/python"
  chmod +x "$3/bin/python"
  exit 0
fi
exit 2
"""


def fake_python311(tmp_path: Path) -> Path:
    path = tmp_path / "python3.11"
    path.write_text(FAKE_PYTHON311)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_pip_failure_says_why_in_one_line(venv_mod, tmp_path):
    venv = tmp_path / ".venv-lmcache"
    messages = []
    py, why = venv_mod.ensure_or_none(venv=venv, python311=str(fake_python311(tmp_path)),
                                      say=messages.append)
    assert py is None
    assert "\n" not in why
    assert "cannot install .venv-lmcache" in why
    assert "pip install --no-deps -r requirements-lmcache-cpu.txt" in why
    assert "No matching distribution found for torch==2.13.0" in why
    # it said what it was about to do before doing it, and left no stamp
    assert len(messages) == 1 and "python3.11 -m venv" in messages[0]
    assert not (venv / venv_mod.STAMP_NAME).exists()
    assert "starts over" not in why  # it made this venv itself


def test_a_finished_venv_is_used_as_it_is(venv_mod, tmp_path):
    """The stamp of a finished install of these requirements: nothing runs."""
    venv = tmp_path / ".venv-lmcache"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # would fail if run
    (venv / venv_mod.STAMP_NAME).write_text(
        venv_mod._requirements_hash(venv_mod.REQUIREMENTS) + "\n")
    assert venv_mod.ensure(venv=venv, python311="/nonexistent") == venv / "bin" / "python"


def test_a_stale_stamp_reinstalls(venv_mod, tmp_path):
    venv = tmp_path / ".venv-lmcache"
    (venv / "bin").mkdir(parents=True)
    fail = venv / "bin" / "python"
    fail.write_text("#!/bin/sh\necho 'ERROR: network unreachable' >&2\nexit 1\n")
    fail.chmod(0o755)
    (venv / venv_mod.STAMP_NAME).write_text("an older requirements list\n")
    with pytest.raises(venv_mod.Unavailable, match="network unreachable") as raised:
        venv_mod.ensure(venv=venv, say=lambda line: None)
    # a venv this call did not make: how to start over
    assert f"`rm -rf {venv}` starts over" in str(raised.value)


def test_telemetry_is_off_in_the_peer_environment(venv_mod):
    env = venv_mod.env({"PATH": "/bin"})
    assert env["LMCACHE_TRACK_USAGE"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert env["PATH"] == "/bin"


# ---- benchmark/lmcache-cpp-bench.py's arguments (lmcache is imported later) -

def run_peer_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "lmcache-cpp-bench.py"), *args],
                          env=script_env(), capture_output=True, text=True, timeout=60)


def test_peer_script_help_has_the_common_flags():
    out = run_peer_script("--help")
    assert out.returncode == 0, out.stderr
    for flag in ("--size-mb", "--num-chunks", "--read", "--write", "--concurrent", "--host",
                 "--port", "--json", "--num-workers", "--timeout", "--no-progress"):
        assert flag in out.stdout, flag
    assert "default 8" in out.stdout


def test_peer_script_rejects_zero_workers_before_importing_lmcache():
    out = run_peer_script("--num-workers", "0", "--port", "1")
    assert out.returncode == 2
    assert "--num-workers must be at least 1" in out.stderr


# ---- compare.py ------------------------------------------------------------

def test_compare_runs_lmcache_at_its_sizes_in_both_modes(compare):
    py = Path("/venv/bin/python")
    runs = compare.plan_runs(compare.QUICK, 20, 4, lmcache_python=py)
    peer = [r for r in runs if r.argv[0] == str(py)]
    assert len(peer) == 2 * len(compare.QUICK.sizes_mb)
    assert all(r.optional and r.scored and r.target == "redis" for r in peer)
    assert all(r.argv[1].endswith("lmcache-cpp-bench.py") for r in peer)
    assert sum("--concurrent" in r.argv for r in peer) == len(compare.QUICK.sizes_mb)
    sizes = {int(r.argv[r.argv.index("--size-mb") + 1]) for r in peer}
    assert sizes == set(compare.QUICK.sizes_mb)
    assert {r.argv[r.argv.index("--num-workers") + 1] for r in peer} == {"8"}
    # --no-lmcache (no python): none
    assert not [r for r in compare.plan_runs(compare.QUICK, 20, 4) if "lmcache-cpp" in " ".join(r.argv)]


def test_full_compare_also_runs_4_workers(compare):
    peer = compare.lmcache_runs(compare.FULL, Path("/venv/bin/python"))
    workers = [r.argv[r.argv.index("--num-workers") + 1] for r in peer]
    assert workers.count("4") == workers.count("8") == 2 * len(compare.FULL.sizes_mb)
    assert len({r.label for r in peer}) == len(peer)


def test_compare_has_the_no_lmcache_flag():
    out = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--help"], env=script_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--no-lmcache" in out.stdout


def test_a_failing_peer_run_is_reported_not_fatal(compare):
    run = compare.Run("LMCache C++ (resp), 1 key per submit 4 MiB",
                      [sys.executable, "-c", "import sys; print('FAIL: GET k: did not complete', "
                                             "file=sys.stderr); sys.exit(3)"],
                      optional=True)
    with pytest.raises(compare.PeerFailed, match=r"failed \(3\): FAIL: GET k: did not complete"):
        compare.run_json(run, "127.0.0.1", 1)
    fatal = compare.Run("lmcache_redis 4 MiB", run.argv)
    with pytest.raises(SystemExit):
        compare.run_json(fatal, "127.0.0.1", 1)


def test_a_hanging_peer_run_is_stopped(compare, monkeypatch):
    monkeypatch.setattr(compare, "LMCACHE_RUN_TIMEOUT_S", 1)
    run = compare.Run("LMCache C++ (resp), all keys in one batch 4 MiB",
                      [sys.executable, "-c", "import time; time.sleep(30)"], optional=True)
    with pytest.raises(compare.PeerFailed, match="no result within 1 s"):
        compare.run_json(run, "127.0.0.1", 1)


def rows() -> list[dict]:
    base = dict(num_chunks=10, overwrite=False, cpu_s_per_gb=0.1, latency_median_s=0.01,
                target="redis", stripes=None, parser=None)
    out = []
    for size, ours, theirs in ((4, (2.0, 3.0), (1.0, 2.0)), (32, (2.4, 3.2), (1.2, 1.6))):
        for op in ("get", "set"):
            out += [
                dict(base, client="lmcache_redis", variant="buffer", op=op, size_bytes=size * MiB,
                     concurrent=False, default_config=True, connections=4, gb_per_s=ours[0]),
                dict(base, client="lmcache_redis", variant="buffer+threads", op=op,
                     size_bytes=size * MiB, concurrent=True, default_config=False,
                     connections=4, gb_per_s=ours[1], latency_median_s=None),
                dict(base, client="LMCache C++ (resp)", variant="1 key per submit", op=op,
                     size_bytes=size * MiB, concurrent=False, default_config=False,
                     connections=8, gb_per_s=theirs[0]),
                dict(base, client="LMCache C++ (resp)", variant="all keys in one batch", op=op,
                     size_bytes=size * MiB, concurrent=True, default_config=False,
                     connections=8, gb_per_s=theirs[1], latency_median_s=None),
            ]
    return out


def test_ratios_pair_like_with_like(compare):
    ratios = compare.lmcache_ratios(rows())
    assert len(ratios) == 8
    get4 = {r["mode"]: r["ratio"] for r in ratios if r["op"] == "get" and r["size_bytes"] == 4 * MiB}
    assert get4 == {"one at a time": pytest.approx(2.0), "all in flight": pytest.approx(1.5)}
    lines = compare.lmcache_summary_lines(ratios)
    assert "LMCache's C++ client" in lines[0]
    assert lines[1].startswith("  4 MiB: GET 2.00x one at a time (2.00 vs 1.00 GB/s)")
    assert "SET 2.00x one at a time" in lines[1]
    assert lines[2].startswith("  32 MiB: GET 2.00x one at a time")
    # no LMCache rows (--no-lmcache, or it could not be installed): no summary
    assert compare.lmcache_summary_lines(compare.lmcache_ratios(
        [r for r in rows() if r["client"] != "LMCache C++ (resp)"])) == []


def test_legend_and_headline_name_the_peer(compare):
    sample = rows()
    compare.add_ratios(sample)
    legend = "\n".join(compare.legend_lines(sample))
    assert "client LMCache C++ (resp): LMCache 0.5.6's own C++ RESP client" in legend
    assert "variant 1 key per submit:" in legend
    assert "variant all keys in one batch:" in legend
    table = "\n".join(compare.format_table(sample))
    assert "LMCache C++ (resp)" in table
    text = compare.headline_markdown(sample, "quick run, test")
    assert "| LMCache's C++ client (0.5.6), 1 key per submit | 1.20 | 1.20 | - |" in text
    assert "| LMCache's C++ client (0.5.6), all keys in one batch | 1.60 | 1.60 | - |" in text


# ---- --server-cpu (bench_common), which the side-by-side reports ----------

def test_server_cpu_per_gb_is_reported(tmp_path):
    import json
    from lmcache_redis._testing import RedisServer
    with RedisServer() as server:
        out = subprocess.run([sys.executable, str(BENCH / "lmcache_redis-bench.py"),
                              "--host", server.host, "--port", str(server.port), "--size-mb", "1",
                              "--num-chunks", "4", "--json", "--server-cpu"],
                             env=script_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["op"] for r in rows] == ["set", "get"]
    assert all(r["server_cpu_s_per_gb"] is not None and r["server_cpu_s_per_gb"] >= 0
               for r in rows)


def test_server_cpu_is_off_by_default():
    import argparse
    bench_common = load("bench_common", BENCH / "bench_common.py")
    args = argparse.Namespace(server_cpu=False, server_address=("127.0.0.1", 1))
    assert bench_common.server_cpu_seconds(args) is None
    # a server that does not answer (nothing listens on port 1): None, not an error
    args.server_cpu = True
    assert bench_common.server_cpu_seconds(args) is None
