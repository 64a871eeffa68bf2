"""benchmark/cluster_compare.py (the Redis Cluster rows of the comparison
command) runs end to end on a tiny plan, and compare.py / tools/run-demo
offer its section. Checks the rows' shape and the script's own read
checks, never a figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scripts import load

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"


def script_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}


def test_a_tiny_run_has_every_row_and_checks_its_reads(tmp_path) -> None:
    cc = load("cluster_compare", BENCH / "cluster_compare.py")
    path = cc.run([1, 2], quick=True, out=tmp_path, values=4, size_mb=3, limits=False)
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert not [r for r in rows if r.get("not_run")], rows
    setups = ["single server", "cluster, K = 1", "cluster, K = 2"]
    assert sorted({r["setup"] for r in rows}) == sorted(setups)
    for setup in setups:
        mine = [r for r in rows if r["setup"] == setup]
        assert len(mine) == 8  # 2 clients x (sequential, batched) x (SET, GET)
        shards = 2 if setup.endswith("K = 2") else 1
        for r in mine:
            assert r["gbps"] > 0 and len(r["per_shard_cpu_s_per_gb"]) == shards
            if r["op"] == "SET":
                assert len(r["keys_per_shard"]) == shards
            if r["client"] == "ours":
                assert r["x_redis_py"] > 0
    # Ours splits a 3 MiB value into parts, each a key: more keys than values
    # in a cluster, one key per value on a single server (and for redis-py).
    ours_set = {r["setup"]: r["keys_per_shard"] for r in rows
                if r["client"] == "ours" and r["op"] == "SET"}
    assert ours_set["single server"] == [4]
    assert sum(ours_set["cluster, K = 1"]) > 4
    assert all(n > 0 for n in ours_set["cluster, K = 2"])
    out = subprocess.run([sys.executable, str(BENCH / "cluster_compare.py"), "--table-from",
                          str(path)], capture_output=True, text=True, timeout=60,
                         env=script_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("| cluster, K = 2 |") == 8


def test_compare_offers_the_cluster_section() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--help"],
                         capture_output=True, text=True, timeout=60,
                         env=script_env())
    assert out.returncode == 0, out.stderr
    assert "--cluster" in out.stdout and "--no-cluster" in out.stdout
    bad = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--cluster", "--no-cluster"],
                         capture_output=True, text=True, timeout=60,
                         env=script_env())
    assert bad.returncode == 2 and "pick one" in bad.stderr
