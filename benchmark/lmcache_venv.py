"""The venv that holds LMCache 0.5.6: its C++ RESP client is a benchmark
peer, and the tests that run LMCache itself run in it.

LMCache's own C++ RESP client (``lmcache.lmcache_redis.LMCacheRedisClient``)
lives in the ``lmcache==0.5.6`` wheel, which needs Python 3.11 and torch.
It gets a venv of its own, ``.venv-lmcache`` in the repo root (git-ignored,
about 1.5 GB), made when missing, by a benchmark or by tools/run-tests, which
runs tests/lmcache_itself with its python (the requirements pin pytest too)
and this source tree on PYTHONPATH::

    python3.11 -m venv .venv-lmcache
    .venv-lmcache/bin/pip install --no-deps -r benchmark/requirements-lmcache-cpu.txt

(``--no-deps``: the wheel's metadata pulls CUDA torch and CUDA wheels, several
GB, none needed on CPU; the pins are shared/lmcache-integration.md §9's,
and pytest's.)

``ensure()`` returns the venv's python, or None with one line saying why it
could not be made (no Python 3.11, no network, no torch CPU wheel...), so
that a benchmark goes on without that peer and says so (tools/run-tests
fails instead). It is made once and reused while the requirements file is
unchanged. As a script it makes the venv and prints that python or that
line (exit status 1)::

    python benchmark/lmcache_venv.py
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-lmcache"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements-lmcache-cpu.txt"
# Written once the install and the import check passed: the requirements' hash.
STAMP_NAME = ".lmr-requirements-sha256"

# LMCache sends anonymous usage reports unless one of these is set; nothing
# may leave the machine (shared/lmcache-integration.md §9).
TELEMETRY_OFF = {"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1",
                 "LMCACHE_DISABLE_BANNER": "1"}

IMPORT_CHECK = "from lmcache.lmcache_redis import LMCacheRedisClient"


class Unavailable(Exception):
    """The venv could not be made or does not work; str() is the reason."""


def env(base: Optional[dict] = None) -> dict:
    """``base`` (default os.environ) with LMCache's telemetry turned off."""
    return {**(os.environ if base is None else base), **TELEMETRY_OFF}


def python_path(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _requirements_hash(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def _tail(text: str, lines: int = 1) -> str:
    """The last non-empty line(s) of a command's output, for the one-line reason."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[:300] or "(no output)"


def _run(argv: list, what: str, timeout: float) -> None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{what} took over {timeout:.0f} s") from None
    except OSError as exc:
        raise Unavailable(f"{what}: {exc}") from None
    if out.returncode != 0:
        # pip's errors go to stderr, its progress to stdout: the last error line says most.
        raise Unavailable(f"{what} failed ({out.returncode}): "
                          f"{_tail(out.stderr if out.stderr.strip() else out.stdout)}")


def ensure(venv: Path = VENV, requirements: Path = REQUIREMENTS,
           python311: Optional[str] = None,
           say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
           timeout: float = 900) -> Path:
    """The venv's python, after making the venv if it is missing or
    incomplete (a stamp records a finished install of these requirements).

    Raises:
        Unavailable: it cannot be made or LMCache's client does not import
            in it; the message is the reason, in one line.
    """
    py = python_path(venv)
    stamp = venv / STAMP_NAME
    want = _requirements_hash(requirements)
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    # A venv left half-made (an interrupted run) is completed below; if that
    # fails, the line says how to start over.
    left_over = py.exists()
    if not py.exists():
        python311 = python311 or shutil.which("python3.11")
        if python311 is None:
            raise Unavailable("no python3.11 on PATH (the lmcache 0.5.6 wheel is cp311 only)")
        say(f"LMCache C++ client: making {venv} for lmcache 0.5.6 "
            f"(python3.11 -m venv; pip install --no-deps -r {requirements.name}; "
            "about 1 min and 1.5 GB, once)")
        _run([python311, "-m", "venv", str(venv)], "python3.11 -m venv", timeout=120)
    try:
        _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-r", str(requirements)],
             f"pip install --no-deps -r {requirements.name} (no network, or no torch 2.13.0 "
             "CPU wheel?)", timeout=timeout)
    except Unavailable as exc:
        if left_over:
            raise Unavailable(f"{exc}; `rm -rf {venv}` starts over") from None
        raise
    _run([str(py), "-W", "error", "-c", IMPORT_CHECK], f"`{IMPORT_CHECK}` in {venv.name}",
         timeout=120)
    stamp.write_text(want + "\n")
    return py


def ensure_or_none(**kwargs) -> tuple[Optional[Path], str]:
    """``(python, "")`` or ``(None, one line saying why the peer is left out)``."""
    try:
        return ensure(**kwargs), ""
    except Unavailable as exc:
        return None, (f"LMCache C++ client: left out of this run: cannot install "
                      f"{kwargs.get('venv', VENV).name} ({exc})")


def main() -> None:
    py, why = ensure_or_none()
    if py is None:
        print(why)
        raise SystemExit(1)
    print(py)


if __name__ == "__main__":
    main()
