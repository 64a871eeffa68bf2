"""Importing the benchmark and tool scripts from tests: their file names
(lmcache_redis-bench.py, ...) are no module names, and they import their
neighbours (bench_common, local_redis) by plain name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmark"


def load(name: str, path: Path):
    """Imports the script at `path` as module `name` (once)."""
    for folder in (BENCH, ROOT / "tools"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
