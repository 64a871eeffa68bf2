"""A local redis-server tuned for huge values, and the null server beside it.

As a script it starts a throwaway server and keeps it until Ctrl-C:

    python tools/local_redis.py      # prints redis://127.0.0.1:<free port>

The settings (TUNED_ARGS) and why each is there are in BENCHMARKS.md; they
are what benchmark/compare.py measures against.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lmcache_redis.testing import RedisServer, find_redis_server

# No persistence (RedisServer always adds --save '' --appendonly no): a
# cache must not fork to snapshot 80 MB values. One I/O thread: with two
# cores, extra I/O threads fight the clients for the CPU (BENCHMARKS.md).
TUNED_ARGS = ["--io-threads", "1"]


def start(extra_args: list[str] = (), unix_socket: bool = False) -> RedisServer:
    """A started RedisServer on a free port (and a Unix socket if asked) with
    TUNED_ARGS, then extra_args; stop() it when done."""
    return RedisServer(extra_args=TUNED_ARGS + list(extra_args), unix_socket=unix_socket).start()


def version() -> str:
    out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


@contextlib.contextmanager
def null_server(exe: Path, value_size: int, stripes: int) -> Iterator[int]:
    """Runs tools/null_server.c serving values of value_size bytes as
    `stripes` stripes (1: plain values); yields its port."""
    proc = subprocess.Popen(
        [str(exe), "--port", "0", "--value-size", str(value_size),
         "--stripes", str(stripes if stripes > 1 else 0)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError(f"null server did not report its port: {line!r}")
        yield int(line[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def main() -> None:
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    server = start()
    print(f"{server.url}  (settings: {' '.join(TUNED_ARGS)}; Ctrl-C stops it)", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
