"""Tests of lmcache_redis._testing.RedisServer, which the other tests rely on."""

from __future__ import annotations

import os
import socket

import pytest

from lmcache_redis import _testing as testing
from lmcache_redis._testing import (
    RedisServer,
    RespError,
    find_redis_server,
    resp_command,
)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_find_redis_server() -> None:
    assert os.access(find_redis_server(), os.X_OK)


def test_start_answers_and_stop_frees_port() -> None:
    with RedisServer(unix_socket=True) as server:
        port, tmpdir = server.port, os.path.dirname(server.unix_path)
        assert server.url == f"redis://127.0.0.1:{port}"
        assert server.pid is not None
        assert server.command("PING") == "PONG"
        assert server.command("SET", "k", b"\x00\xff") == "OK"
        assert server.command("GET", "k") == b"\x00\xff"
        assert server.command("GET", "missing") is None
        assert server.command("INCRBY", "n", 5) == 5
        assert server.command("CONFIG", "GET", "save") == [b"save", b""]
        with pytest.raises(RespError, match="unknown command"):
            server.command("NOSUCHCOMMAND")
    assert server.pid is None
    assert _port_is_free(port)
    assert not os.path.exists(tmpdir)


def test_restart_keeps_port_and_drops_data() -> None:
    with RedisServer() as server:
        port, first_pid = server.port, server.pid
        server.command("SET", "k", "v")
        server.restart()
        assert (server.port, server.command("GET", "k")) == (port, None)
        assert server.pid != first_pid


def test_kill_then_restart() -> None:
    with RedisServer() as server:
        server.kill()
        assert server.pid is None
        with pytest.raises(OSError):
            resp_command((server.host, server.port), "PING")
        server.restart()
        assert server.command("PING") == "PONG"


def test_unix_socket_and_password() -> None:
    with RedisServer(["--requirepass", "sekret"], unix_socket=True) as server:
        assert server.unix_path is not None
        assert oct(os.stat(server.unix_path).st_mode & 0o777) == "0o700"
        with pytest.raises(RespError, match="NOAUTH"):
            resp_command(server.unix_path, "PING")
        assert resp_command(server.unix_path, "PING", password="sekret") == "PONG"
        assert server.command("PING") == "PONG"


def test_env_reaches_the_server() -> None:
    # Debian's redis-server uses the system jemalloc, which reads MALLOC_CONF:
    # its allocator report shows the option took effect.
    with RedisServer(env={"MALLOC_CONF": "dirty_decay_ms:-1"}) as server:
        stats = server.command("MEMORY", "MALLOC-STATS")
        assert isinstance(stats, bytes) and b"opt.dirty_decay_ms: -1" in stats


def test_start_failure_reports_log() -> None:
    expected = r"(?s)exited during start-up.*no-such-option"
    with pytest.raises(RuntimeError, match=expected):
        RedisServer(["--no-such-option", "1"]).start()


def test_start_retries_when_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        ports = iter([busy_port, testing._free_port()])
        monkeypatch.setattr(testing, "_free_port", lambda: next(ports))
        with RedisServer() as server:
            assert server.port != busy_port
            assert server.command("PING") == "PONG"


def test_session_fixture(redis_server, redis_url: str) -> None:
    assert redis_url == redis_server.url
    assert resp_command((redis_server.host, redis_server.port), "PING") == "PONG"
