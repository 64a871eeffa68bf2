"""The seed note's RESP-py-bench.py, kept under its old name.

    python RESP-py-bench.py --size-mb 32 --num-chunks 100 --read --client-type custom
    python RESP-py-bench.py --size-mb 32 --num-chunks 100 --read --client-type redis-py

--client-type custom (default): the pure-Python zero-copy RESP client,
now resp-py-bench.py, with its threads (the old "threaded wrapper": adds
--concurrent). --client-type redis-py: redis-py's asyncio client, now
redis-py-bench.py --concurrent (the old "redis-py (Async)"). Every other
argument goes to that script unchanged (see its --help).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = {
    "custom": ("resp-py-bench.py", "the pure-Python zero-copy RESP client (threads)"),
    "redis-py": ("redis-py-bench.py", "redis-py (asyncio)"),
}


def translate(argv: list[str]) -> tuple[str, list[str], str]:
    """The script to run, its arguments and what it is, for the old
    command line ``argv`` (without the program name)."""
    parser = argparse.ArgumentParser(description=__doc__, add_help=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client-type", choices=sorted(TARGETS), default="custom")
    known, rest = parser.parse_known_args(argv)
    script, what = TARGETS[known.client_type]
    if "--concurrent" not in rest:
        rest = [*rest, "--concurrent"]
    return script, rest, what


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
    script, rest, what = translate(sys.argv[1:])
    if not any(a in ("-h", "--help") for a in rest) and "--json" not in rest:
        print(f"Using {what}: {script} {' '.join(rest)}", flush=True)
    sys.argv = [str(HERE / script), *rest]
    runpy.run_path(str(HERE / script), run_name="__main__")


if __name__ == "__main__":
    main()
