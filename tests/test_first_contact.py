"""What a new user meets first: importing from the repo root, the seed
note's benchmark commands and their arguments, and the demo's report."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import load

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"




# ---- import from the repo root --------------------------------------------

README_EXAMPLE = """
import numpy as np
import lmcache_redis
print(lmcache_redis._core.__file__)
"""


def test_import_from_repo_root():
    """`python -c "import lmcache_redis"` in the clone's root, where the
    source folder comes first on sys.path, finds the compiled _core (the
    bootstrap builds it in place)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    out = subprocess.run([sys.executable, "-c", README_EXAMPLE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), out.stderr


def test_readme_usage_example_runs_from_repo_root(redis_server):
    """The README's usage example, pasted into python in the repo root, with
    its localhost:6379 replaced by the test server."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Usage", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert 'RedisClient("localhost", 6379)' in block
    code = block.replace('RedisClient("localhost", 6379)',
                         f'RedisClient("{redis_server.host}", {redis_server.port})')
    code = code.replace('"chunk-0"', '"first-contact-chunk-0"')
    code += '\n    client.delete("first-contact-chunk-0")\nprint("ok")\n'
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    out = subprocess.run([sys.executable, "-"], input=code, cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


# ---- the seed note's commands: argument handling ---------------------------

@pytest.fixture(scope="module")
def bench_common():
    return load("bench_common", BENCH / "bench_common.py")


def parse(bench_common, argv: list[str]) -> argparse.Namespace:
    parser = bench_common.make_parser("test")
    return bench_common.check_args(parser, parser.parse_args(argv))


def test_port_alone_means_localhost(bench_common):
    args = parse(bench_common, ["--port", "6380"])
    assert (args.host, args.port) == ("localhost", 6380)
    assert args.read and args.write


def test_no_host_no_port_starts_a_throwaway_server(bench_common):
    args = parse(bench_common, ["--size-mb", "32", "--num-chunks", "100", "--read"])
    assert args.host is None and args.port is None
    assert args.read and not args.write
    assert args.size_bytes == 32 << 20


def test_seed_redis_py_command_parses(bench_common):
    """python redis-py-bench.py --client-type single-pool --size-mb 32
    --num-chunks 100 --read --concurrent (the seed note)."""
    parser = bench_common.make_parser("test")
    parser.add_argument("--client-type", choices=("single-pool", "multi-pool"))
    args = bench_common.check_args(parser, parser.parse_args(
        ["--client-type", "single-pool", "--size-mb", "32", "--num-chunks", "100",
         "--read", "--concurrent"]))
    assert args.concurrent and args.read and not args.write


def test_resp_py_bench_old_name_maps_client_types():
    old = load("RESP_py_bench", BENCH / "RESP-py-bench.py")
    script, rest, _ = old.translate(["--size-mb", "32", "--num-chunks", "100", "--read",
                                     "--client-type", "custom"])
    assert script == "resp-py-bench.py"
    assert rest == ["--size-mb", "32", "--num-chunks", "100", "--read", "--concurrent"]
    script, rest, what = old.translate(["--read", "--client-type", "redis-py"])
    assert script == "redis-py-bench.py" and "--concurrent" in rest and "asyncio" in what
    assert old.translate([])[0] == "resp-py-bench.py"


def test_seed_commands_run_as_written(tmp_path):
    """The note's commands, run from benchmark/ (small sizes), each saying
    which server it measured and what memory it needs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    for argv in (["redis-py-bench.py", "--client-type", "single-pool"],
                 ["RESP-py-bench.py", "--client-type", "custom"],
                 ["RESP-py-bench.py", "--client-type", "redis-py"]):
        out = subprocess.run([sys.executable, *argv, "--size-mb", "1", "--num-chunks", "3",
                              "--read", "--no-progress"],
                             cwd=BENCH, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr + out.stdout
        assert "a throwaway one started by this script" in out.stdout
        assert "redis-server " in out.stdout
        assert "memory: this run holds about" in out.stdout
        assert "Read " in out.stdout


def test_port_alone_measures_the_server_on_localhost(redis_server):
    if redis_server.host not in ("127.0.0.1", "localhost"):
        pytest.skip("the test server is not on this machine")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    out = subprocess.run([sys.executable, "lmcache_redis-bench.py", "--port",
                          str(redis_server.port), "--size-mb", "1", "--num-chunks", "2",
                          "--key-prefix", "first-contact-bench:", "--no-progress"],
                         cwd=BENCH, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    assert f"server: localhost:{redis_server.port}, not started by this script" in out.stdout
    assert "redis-server " in out.stdout


def test_port_alone_without_a_server_says_so():
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    out = subprocess.run([sys.executable, "lmcache_redis-bench.py", "--port", str(port),
                          "--size-mb", "1", "--num-chunks", "1", "--no-progress"],
                         cwd=BENCH, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"no Redis server at localhost:{port}" in out.stderr


# ---- the demo's report -----------------------------------------------------

def sample_rows() -> list[dict]:
    MiB = 1 << 20
    base = dict(num_chunks=10, concurrent=False, overwrite=False, cpu_s_per_gb=0.1,
                latency_median_s=0.01, default_config=False)
    rows = [
        dict(base, client="redis-py", variant="single-pool", target="redis", op="get",
             size_bytes=32 * MiB, stripes=None, connections=1, gb_per_s=0.5),
        dict(base, client="lmcache_redis", variant="buffer", target="redis", op="get",
             size_bytes=32 * MiB, stripes=20, connections=4, gb_per_s=3.4,
             default_config=True, gb_per_s_rounds=[3.3, 3.4, 3.5]),
        dict(base, client="lmcache_redis", variant="buffer", target="null", op="get",
             size_bytes=32 * MiB, stripes=16, connections=4, gb_per_s=5.8),
        dict(base, client="resp-py", variant="threads", target="redis", op="get",
             size_bytes=4 * MiB, stripes=None, connections=4, gb_per_s=3.3),
        dict(base, client="loopback TCP", variant="2 stream(s), 1 MiB writes, into 32 MiB",
             target="landing", op="transfer", size_bytes=32 * MiB, stripes=None,
             connections=2, gb_per_s=6.01, cpu_s_per_gb=None, latency_median_s=None),
        dict(base, client="redis-benchmark", variant="4 clients", target="redis", op="set",
             size_bytes=32 * MiB, stripes=None, connections=4, gb_per_s=1.2,
             cpu_s_per_gb=None, latency_median_s=None),
    ]
    return rows


@pytest.fixture(scope="module")
def compare():
    sys.path.insert(0, str(ROOT / "tools"))
    return load("compare", BENCH / "compare.py")


def test_table_columns_align(compare):
    rows = sample_rows()
    compare.add_ratios(rows)
    lines = compare.format_table(rows)
    header = lines[0]
    # Every column's right edge (for right-aligned ones) or left edge is
    # the same on every line: cells end where the header's names end.
    for name in ("GB/s", "x redis-py", "of TCP", "median ms"):
        end = header.index(name) + len(name)
        for line in lines[2:]:
            assert line[end - 1] != " " and (len(line) == end or line[end] == " "), (name, line)
    assert max(len(line) for line in lines[2:]) <= len(header)
    left = header.index("variant")
    for line in lines[2:]:
        assert line[left - 1] == " " and line[left] != " "


def test_table_marks_our_rows(compare):
    rows = sample_rows()
    compare.add_ratios(rows)
    lines = compare.format_table(rows)[2:]
    for row, line in zip(rows, lines):
        ours = row["client"] == "lmcache_redis" and row["target"] == "redis"
        assert line.startswith(">> ") == ours, line
    bold = compare.format_table(rows, bold=True)[2:]
    assert bold[1].startswith("\033[1m>> ") and not bold[0].startswith("\033[1m")


def test_legend_explains_every_label(compare):
    rows = sample_rows()
    legend = "\n".join(compare.legend_lines(rows))
    for row in rows:
        assert f"client {row['client']}:" in legend
        assert f"server {row['target']}:" in legend
    for label in ("variant buffer:", "variant single-pool:", "variant threads:",
                  "variant 4 clients:", "variant N stream(s):", "stripes:", "x redis-py:",
                  "of TCP:", "CPU s/GB:", "median ms:", "GB/s:"):
        assert label in legend, label


def test_summary_has_no_jargon(compare, capsys):
    rows = sample_rows()
    compare.add_ratios(rows)
    compare.print_scorecard(compare.scorecard(rows))
    out = capsys.readouterr().out
    assert "issue" not in out and "target" not in out
    assert "missed" not in out and "met]" not in out


PLOT = """
import json, sys
sys.path[:0] = [sys.argv[1] + "/benchmark", sys.argv[1] + "/tools"]
import compare
from pathlib import Path
rows = json.load(open(sys.argv[2]))
assert compare.plot(rows, Path(sys.argv[3]), "quick run: test context", default_stripes=20)
"""


def test_plot_writes_a_png(tmp_path):
    """In a process of its own without LD_PRELOAD (nor PYTHONPATH, which
    points at the ASan build there): under tools/run-sanitizers'
    preloaded ASan runtime, matplotlib's C++ exceptions abort (ASan cannot
    intercept __cxa_throw there), which says nothing about this code."""
    import json
    rows_path, png = tmp_path / "rows.json", tmp_path / "plot.png"
    rows_path.write_text(json.dumps(sample_rows()))
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONPATH", "PYTHONSAFEPATH")}
    out = subprocess.run([sys.executable, "-c", PLOT, str(ROOT), str(rows_path), str(png)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert png.stat().st_size > 10_000


def test_headline_table(compare):
    rows = sample_rows()
    text = compare.headline_markdown(rows, "quick run, test")
    assert "| **lmcache_redis**, one call at a time | 3.40 | - | - |" in text
    assert "| redis-py (hiredis), one call at a time | 0.50 | - | - |" in text
    assert "| pure-Python zero-copy client, 4 threads | - |" not in text  # 4 MiB only
    assert text.rstrip().endswith("(quick run, test)")
