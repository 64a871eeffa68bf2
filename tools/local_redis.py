"""A local redis-server tuned for huge values, and the null server beside it.

As a script it starts a throwaway server and keeps it until Ctrl-C:

    python tools/local_redis.py        # prints redis://127.0.0.1:<free port>
    python tools/local_redis.py --tls  # and a TLS port, with test certificates

The settings (TUNED_ARGS) and why each is there are in BENCHMARKS.md; they
are what benchmark/compare.py measures against.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from lmcache_redis.testing import (RedisServer, TestCertificates, find_redis_server,
                                   make_test_certificates)

# No persistence (RedisServer always adds --save '' --appendonly no): a
# cache must not fork to snapshot 80 MB values. One I/O thread: with two
# cores, extra I/O threads fight the clients for the CPU (BENCHMARKS.md).
TUNED_ARGS = ["--io-threads", "1"]


def start(extra_args: list[str] = (), unix_socket: bool = False,
          tls: Optional[TestCertificates] = None) -> RedisServer:
    """A started RedisServer on a free port (and a Unix socket, a TLS port
    with the tls certificates, if asked) with TUNED_ARGS, then extra_args;
    stop() it when done."""
    return RedisServer(extra_args=TUNED_ARGS + list(extra_args), unix_socket=unix_socket,
                       tls=tls).start()


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
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tls", action="store_true",
                        help="also listen for TLS, with a test CA and certificates made in a "
                             "temp dir (removed at exit)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        certs = None
        if args.tls:
            certs = make_test_certificates(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="lmcache-redis-certs-")))
        server = start(tls=certs)
        stack.callback(server.stop)
        print(f"{server.url}  (settings: {' '.join(TUNED_ARGS)}; Ctrl-C stops it)", flush=True)
        if certs is not None:
            bench = "python benchmark/lmcache_redis-bench.py --host 127.0.0.1"
            print(f"{server.tls_url}?ssl_ca_certs={certs.ca_cert}\n"
                  f"  TCP: {bench} --port {server.port}\n"
                  f"  TLS: {bench} --port {server.tls_port} --ssl-ca-certs {certs.ca_cert}",
                  flush=True)
        # SIGTERM too (a shell's background job ignores SIGINT): stop the
        # server and remove the certificates on the way out.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
