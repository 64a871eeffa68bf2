"""A local redis-server tuned for huge values, and the null server beside it.

As a script it starts a throwaway server and keeps it until Ctrl-C:

    python tools/local_redis.py        # prints redis://127.0.0.1:<free port>
    python tools/local_redis.py --tls  # and a TLS port, with test certificates

The settings (TUNED_ARGS, MALLOC_CONF) and why each is there are in BENCHMARKS.md; they
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

from lmcache_redis._testing import (RedisServer, TestCertificates, find_redis_server,
                                   make_test_certificates)

# No persistence (RedisServer always adds --save '' --appendonly no): a
# cache must not fork to snapshot 80 MB values. One I/O thread: with two
# cores, extra I/O threads fight the clients for the CPU (BENCHMARKS.md).
TUNED_ARGS = ["--io-threads", "1"]

# Debian's redis-server links the system jemalloc, which reads MALLOC_CONF.
# By default jemalloc hands freed pages back to the kernel (for blocks of
# 8 MiB and more at once, on free), so the next big value or reply buffer
# is faulted in and zeroed again: that zeroing is most of the server's time
# on such values. dirty_decay_ms:-1 keeps freed pages for reuse, which makes
# 8 MiB stripes and plain 32 MiB values read 2-3x faster and writes after
# deletes or evictions 2.5x faster (BENCHMARKS.md). The price: the server's
# RSS stays at its peak after keys go, which a cache bounded by maxmemory
# pays anyway. "" runs jemalloc's own defaults.
MALLOC_CONF = "dirty_decay_ms:-1"


def settings(malloc_conf: str = MALLOC_CONF) -> str:
    """The launcher's settings, as a line for a report."""
    return " ".join(TUNED_ARGS) + (f"; MALLOC_CONF={malloc_conf}" if malloc_conf else "")


def start(extra_args: list[str] = (), unix_socket: bool = False,
          tls: Optional[TestCertificates] = None,
          malloc_conf: str = MALLOC_CONF) -> RedisServer:
    """A started RedisServer on a free port (and a Unix socket, a TLS port
    with the tls certificates, if asked) with TUNED_ARGS, then extra_args,
    and malloc_conf as its jemalloc's MALLOC_CONF ("": jemalloc's defaults);
    stop() it when done."""
    env = {"MALLOC_CONF": malloc_conf} if malloc_conf else None
    return RedisServer(extra_args=TUNED_ARGS + list(extra_args), unix_socket=unix_socket,
                       tls=tls, env=env).start()


@contextlib.contextmanager
def running(extra_args: list[str] = (), unix_socket: bool = False,
            malloc_conf: str = MALLOC_CONF) -> Iterator[RedisServer]:
    """start(...) for a with-block: the server is stopped when it ends."""
    server = start(extra_args, unix_socket=unix_socket, malloc_conf=malloc_conf)
    try:
        yield server
    finally:
        server.stop()


def version() -> str:
    out = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


@contextlib.contextmanager
def null_server(exe: Path, value_size: int, stripes: int) -> Iterator[int]:
    """Runs tools/null_server.c serving values of value_size bytes as a
    client with `stripes` stores them (encoded in that many parts; 1:
    verbatim); yields its port."""
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
        print(f"{server.url}  (settings: {settings()}; Ctrl-C stops it)", flush=True)
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
