"""End to end in LMCache's multiprocess mode, on CPU: `lmcache server` with
our native_plugin L2 adapter, fed by `lmcache bench server` (LMCache's own
client of its server). The KV cache stored on a first run must come back
from Redis, byte for byte (same checksum), after `lmcache server` restarts
with an empty L1."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lmcache")

BIN = Path(sys.executable).parent
HANG = 120
# The subprocesses inherit tests/conftest.py's telemetry switches: no usage
# report may leave the machine.


def free_ports(n: int) -> list:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Server:
    """`lmcache server` on free ports, with our plug-in as its only L2."""

    def __init__(self, redis_url: str, log: Path) -> None:
        self.rpc, self.http, prom = free_ports(3)
        spec = {"type": "native_plugin", "module_path": "lmcache_redis.lmcache",
                "class_name": "LMCacheRedisNativeClient",
                "adapter_params": {"url": redis_url, "connections": 2}}
        self.log = log
        with log.open("w") as out:  # the child holds its own copy
            self.proc = subprocess.Popen(
                [str(BIN / "lmcache"), "server", "--host", "127.0.0.1", "--port", str(self.rpc),
                 "--http-host", "127.0.0.1", "--http-port", str(self.http),
                 "--prometheus-port", str(prom), "--l1-size-gb", "0.25",
                 "--eviction-policy", "LRU", "--chunk-size", "256",
                 "--l2-adapter", json.dumps(spec)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + HANG
        while "Application startup complete" not in log.read_text():
            assert self.proc.poll() is None, f"lmcache server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "lmcache server did not start"
            time.sleep(0.2)

    def bench(self) -> str:
        out = subprocess.run(
            [str(BIN / "lmcache"), "bench", "server", "--mode", "cpu",
             "--transfer-mode", "lmcache_driven", "--rpc-url", f"tcp://127.0.0.1:{self.rpc}",
             "--url", f"http://127.0.0.1:{self.http}",
             "--kvcache-shape-spec", "(2,64,16,2,64):float16:4", "--num-blocks", "64",
             "--block-size", "16", "--num-tokens", "512", "--start", "0", "--end", "2",
             "--interval", "0.1"],
            capture_output=True, text=True, timeout=HANG)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout + out.stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def checksums(output: str) -> set:
    return set(re.findall(r"CHECKSUM: ([0-9a-f]+)", output))


def test_kv_cache_comes_back_from_redis_after_a_restart(redis_server, tmp_path):
    redis_server.command("FLUSHALL")
    first = Server(redis_server.url, tmp_path / "server1.log")
    try:
        cold = first.bench()
    finally:
        first.stop()
    sums = checksums(cold)
    assert len(sums) == 1, cold[-3000:]
    stored = redis_server.command("DBSIZE")
    assert stored > 0  # LMCache stored its chunks through our client

    second = Server(redis_server.url, tmp_path / "server2.log")
    try:
        warm = second.bench()
    finally:
        second.stop()
    assert checksums(warm) == sums, warm[-3000:]
    log = (tmp_path / "server2.log").read_text()
    # Served from L2 (Redis), not recomputed: "2/2 retained keys (0 L1, 2 L2)".
    assert re.search(r"retained keys \(0 L1, [1-9]\d* L2\)", log), log[-3000:]
    assert "Traceback" not in log and "LMCache ERROR" not in log, log[-3000:]
