"""Connecting: addresses, authentication, databases, URLs; and the
client's life: close, servers that die, stall or come back."""

from __future__ import annotations

import builtins
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis

import lmcache_redis
from lmcache_redis import (AuthenticationError, BatchError, ClientClosedError, RedisClient,
                           ResponseError)
from lmcache_redis._testing import RedisServer
from selfcheck import decode

PASSWORD = "s3cr3t:P@ss/word"  # needs quoting in a URL
STATS_KEYS = {"bytes_sent", "bytes_received", "bytes_copied", "commands", "reconnects",
              "redirections"}


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RedisServer]:
    with RedisServer(extra_args=["--requirepass", PASSWORD]) as server:
        yield server


@pytest.fixture(scope="module")
def unix_server() -> Iterator[RedisServer]:
    with RedisServer(unix_socket=True) as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _works(client: RedisClient, key: str) -> None:
    data = os.urandom(10_000)
    client.set(key, data)
    out = bytearray(10_000)
    assert client.get(key, out) == 10_000
    assert out == data


def _wait_for_commands(client: RedisClient, before: int) -> None:
    """Waits until the client has sent a command after `before` (a guard,
    not a timed assertion: the deadline only stops a hang)."""
    deadline = time.monotonic() + 30
    while client.stats()["commands"] == before:
        assert time.monotonic() < deadline, "the call never sent a command"
        time.sleep(0.001)


def _in_thread(call) -> tuple:
    """Starts call() on a thread; returns (thread, results list)."""
    results: list = []

    def run():
        try:
            results.append(call())
        except BaseException as e:  # noqa: BLE001 - handed to the test
            results.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


# ---- authentication -------------------------------------------------------------


@pytest.mark.parametrize("password", ["wrong", PASSWORD + "x", ""])
def test_wrong_password(auth_server, password: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        RedisClient(auth_server.host, auth_server.port, password=password)
    assert isinstance(info.value, lmcache_redis.ConnectionError)
    assert isinstance(info.value, builtins.ConnectionError)
    assert isinstance(info.value, OSError)
    if password:
        assert password not in str(info.value) and password not in repr(info.value)


def test_no_password_to_protected_server(auth_server) -> None:
    with pytest.raises(AuthenticationError):
        RedisClient(auth_server.host, auth_server.port)


def test_password_to_unprotected_server(redis_server) -> None:
    with pytest.raises(AuthenticationError):
        RedisClient(redis_server.host, redis_server.port, password="unneeded")


def test_correct_password(auth_server, key) -> None:
    with RedisClient(auth_server.host, auth_server.port, password=PASSWORD) as client:
        _works(client, key)
        assert PASSWORD not in repr(client)


def test_acl_user(auth_server, key) -> None:
    auth_server.command("ACL", "SETUSER", "alice", "reset", "on", ">alice-pw", "~*", "+@all")
    with RedisClient(auth_server.host, auth_server.port, username="alice",
                     password="alice-pw") as client:
        _works(client, key)
        assert "alice" in repr(client) and "alice-pw" not in repr(client)
    with pytest.raises(AuthenticationError) as info:
        RedisClient(auth_server.host, auth_server.port, username="alice", password="bob-pw")
    assert "bob-pw" not in str(info.value)
    with pytest.raises(AuthenticationError):
        RedisClient(auth_server.host, auth_server.port, username="nobody", password="alice-pw")


def test_acl_user_without_the_rights(auth_server, key) -> None:
    auth_server.command("ACL", "SETUSER", "reader", "reset", "on", ">reader-pw", "~*",
                        "+@read", "+ping")
    with RedisClient(auth_server.host, auth_server.port, username="reader",
                     password="reader-pw") as client:
        with pytest.raises(ResponseError) as info:
            client.set(key, b"value")
        assert "NOPERM" in str(info.value)
        assert client.get(key, bytearray(5)) is None  # still usable


def test_acl_key_pattern(auth_server, key) -> None:
    # A user restricted to keys under "allowed:": writes elsewhere surface the
    # server's NOPERM error, for the plain key and for sub-keys alike.
    auth_server.command("ACL", "SETUSER", "scoped", "reset", "on", ">scoped-pw",
                        "~allowed:*", "+@all")
    with RedisClient(auth_server.host, auth_server.port, username="scoped",
                     password="scoped-pw") as client:
        for stripes_data in (b"x" * 10, b"y" * (5 << 20)):  # one stripe, then three
            client.set(f"allowed:{key}", stripes_data)
            assert client.get(f"allowed:{key}", bytearray(len(stripes_data))) == len(stripes_data)
            with pytest.raises(ResponseError, match="NOPERM") as info:
                client.set(key, stripes_data)
            assert "scoped-pw" not in str(info.value)


def test_username_needs_a_password(redis_server) -> None:
    with pytest.raises(ValueError):
        RedisClient(redis_server.host, redis_server.port, username="alice")


# ---- databases, addresses, URLs ----------------------------------------------------


def test_db_selects_a_database(redis_server, key) -> None:
    with RedisClient(redis_server.host, redis_server.port, db=3, stripes=1) as in_3, \
            RedisClient(redis_server.host, redis_server.port, db=0) as in_0:
        in_3.set(key, b"in db 3")
        assert in_0.get(key, bytearray(7)) is None
        assert not in_0.exists(key)
        assert in_3.get(key, bytearray(7)) == 7
        with redis.Redis(redis_server.host, redis_server.port, db=3) as r:
            assert r.get(key) == b"in db 3"
        in_3.delete(key)


def test_db_out_of_range(redis_server) -> None:
    with pytest.raises(ResponseError):
        RedisClient(redis_server.host, redis_server.port, db=10_000)


def test_unix_socket(unix_server, key) -> None:
    with RedisClient(unix_socket_path=unix_server.unix_path) as client:
        _works(client, key)
        assert unix_server.unix_path in repr(client)


def test_unix_socket_missing(tmp_path) -> None:
    with pytest.raises(lmcache_redis.ConnectionError):
        RedisClient(unix_socket_path=str(tmp_path / "no.sock"))


def _fill_backlog(path: str) -> list[socket.socket]:
    """Connects to the unix socket at ``path`` until its listen backlog is
    full (a non-blocking connect fails with EAGAIN); returns the connections,
    to be closed."""
    filler: list[socket.socket] = []
    while True:
        sock = socket.socket(socket.AF_UNIX)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            return filler
        filler.append(sock)


def _stopped_unix_server(make_own_server) -> RedisServer:
    """A server that accepts no connection (stopped) on a unix socket whose
    backlog is small: Redis gives it tcp-backlog's, here 0 (one waiting
    connection)."""
    server = make_own_server(unix_socket=True, extra_args=["--tcp-backlog", "0"])
    os.kill(server.pid, signal.SIGSTOP)
    return server


def test_unix_socket_with_a_full_backlog_is_retried(make_own_server, key) -> None:
    # A unix connect that finds the backlog full fails at once with EAGAIN
    # (nothing is in progress, unlike TCP's EINPROGRESS): the client tries
    # again until the server accepts, within connect_timeout.
    server = _stopped_unix_server(make_own_server)
    filler = _fill_backlog(server.unix_path)
    resume = threading.Timer(0.5, os.kill, (server.pid, signal.SIGCONT))
    resume.start()
    try:
        started = time.monotonic()
        with RedisClient(unix_socket_path=server.unix_path, connections=2,
                         connect_timeout=10) as client:
            assert time.monotonic() - started >= 0.4  # it waited for the server
            _works(client, key)
    finally:
        resume.join()
        for sock in filler:
            sock.close()


def test_unix_socket_with_a_backlog_that_stays_full_times_out(make_own_server) -> None:
    server = _stopped_unix_server(make_own_server)
    filler = _fill_backlog(server.unix_path)
    try:
        started = time.monotonic()
        with pytest.raises(lmcache_redis.TimeoutError) as info:
            RedisClient(unix_socket_path=server.unix_path, connect_timeout=0.3)
        took = time.monotonic() - started
        assert 0.25 <= took < 1.5, took
        assert server.unix_path in str(info.value) and "backlog" in str(info.value)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        for sock in filler:
            sock.close()


def test_close_interrupts_a_unix_connect_waiting_for_the_backlog(make_own_server) -> None:
    server = make_own_server(unix_socket=True, extra_args=["--tcp-backlog", "0"])
    client = RedisClient(unix_socket_path=server.unix_path, connections=1, timeout=30,
                         connect_timeout=30)
    server.command("CLIENT", "KILL", "TYPE", "normal")  # the next call reconnects
    os.kill(server.pid, signal.SIGSTOP)
    filler = _fill_backlog(server.unix_path)
    try:
        thread, results = _in_thread(lambda: client.exists("k"))
        time.sleep(0.3)  # the call is trying its connect again and again
        assert not results, results
        started = time.monotonic()
        client.close()
        closing = time.monotonic() - started
        thread.join(10)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        for sock in filler:
            sock.close()
    assert closing < 0.5 and isinstance(results[0], ClientClosedError), (closing, results)


def test_from_url_with_password_and_db(auth_server, key) -> None:
    url = f"redis://:{quote(PASSWORD, safe='')}@{auth_server.host}:{auth_server.port}/2"
    with RedisClient.from_url(url, stripes=1) as client:
        assert (client.host, client.port, client.db) == (auth_server.host, auth_server.port, 2)
        client.set(key, b"in db 2")
        assert PASSWORD not in repr(client)
    with redis.Redis(auth_server.host, auth_server.port, db=2, password=PASSWORD) as r:
        assert r.get(key) == b"in db 2"
        r.delete(key)


def test_from_url_with_user(auth_server, key) -> None:
    auth_server.command("ACL", "SETUSER", "carol", "reset", "on", ">carol-pw", "~*", "+@all")
    with RedisClient.from_url(f"redis://carol:carol-pw@{auth_server.host}:{auth_server.port}"
                              ) as client:
        assert client.username == "carol"
        _works(client, key)


def test_from_url_unix(unix_server, key) -> None:
    for url in (f"unix://{unix_server.unix_path}?db=1",
                f"unix://{quote(unix_server.unix_path)}?db=1&stripes=3"):
        with RedisClient.from_url(url) as client:
            assert client.unix_socket_path == unix_server.unix_path
            assert client.db == 1
            client.set(key, b"in db 1")
    with redis.Redis(unix_socket_path=unix_server.unix_path, db=1) as r:
        headers, value = decode(r.get(key))  # one key, encoded: the last write had 3 parts
        assert len(headers) == 3 and value == b"in db 1"


def test_from_url_options(redis_server) -> None:
    url = f"{redis_server.url}?stripes=3&connections=2&timeout=7.5&connect_timeout=1.5"
    with RedisClient.from_url(url) as client:
        assert (client.stripes, client.connections) == (3, 2)
        assert (client.timeout, client.connect_timeout) == (7.5, 1.5)
    with RedisClient.from_url(url, stripes=5) as client:  # keywords win
        assert (client.stripes, client.connections) == (5, 2)


@pytest.mark.parametrize("url", [
    "http://localhost:6379",
    "localhost:6379",
    "",
    "redis://localhost:6379/abc",
    "redis://localhost:6379/-1",
    "redis://localhost:notaport",
    "redis://localhost:99999",
    "redis://localhost?bogus=1",
    "redis://localhost?stripes=many",
    "unix://",
])
def test_bad_url(url: str) -> None:
    with pytest.raises(ValueError):
        RedisClient.from_url(url)


@pytest.mark.parametrize("kwargs", [
    {"stripes": -1}, {"stripes": lmcache_redis.MAX_STRIPES + 1},
    {"connections": 0}, {"connections": lmcache_redis.MAX_CONNECTIONS + 1},
    {"timeout": 0}, {"timeout": -1}, {"connect_timeout": 0},
    {"db": -1}, {"port": 0}, {"port": 65536}, {"host": ""},
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_bad_options(redis_server, kwargs) -> None:
    options = {"host": redis_server.host, "port": redis_server.port, **kwargs}
    with pytest.raises(ValueError):
        RedisClient(**options)


def test_connection_refused() -> None:
    port = _closed_port()
    with pytest.raises(lmcache_redis.ConnectionError) as info:
        RedisClient("127.0.0.1", port, password="hunter2")
    assert isinstance(info.value, builtins.ConnectionError)
    assert isinstance(info.value, OSError)
    assert not isinstance(info.value, AuthenticationError)
    assert "hunter2" not in str(info.value)
    assert str(port) in str(info.value)


def test_unresolvable_host() -> None:
    with pytest.raises(lmcache_redis.ConnectionError):
        RedisClient("no-such-host.invalid", 6379)


def test_repr_never_shows_the_password(auth_server) -> None:
    with RedisClient(auth_server.host, auth_server.port, password=PASSWORD) as client:
        text = repr(client)
        assert PASSWORD not in text
        assert str(auth_server.port) in text and auth_server.host in text
        assert not hasattr(client, "password")


# ---- close ---------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda c: c.set("k", b"v"),
    lambda c: c.get("k", bytearray(1)),
    lambda c: c.set_ptr("k", 0, 0),
    lambda c: c.get_ptr("k", 0, 0),
    lambda c: c.exists("k"),
    lambda c: c.delete("k"),
], ids=["set", "get", "set_ptr", "get_ptr", "exists", "delete"])
def test_calls_after_close(redis_server, call) -> None:
    client = RedisClient(redis_server.host, redis_server.port)
    assert client.closed is False
    client.close()
    assert client.closed is True
    with pytest.raises(ClientClosedError) as info:
        call(client)
    assert isinstance(info.value, lmcache_redis.RedisError)
    client.close()  # idempotent
    assert set(client.stats()) == STATS_KEYS


def test_context_manager_closes(redis_server, key) -> None:
    with RedisClient(redis_server.host, redis_server.port) as client:
        assert not client.closed
        _works(client, key)
    assert client.closed
    with pytest.raises(ClientClosedError):
        client.exists(key)


def test_context_manager_closes_on_error(redis_server) -> None:
    with pytest.raises(KeyError):
        with RedisClient(redis_server.host, redis_server.port) as client:
            raise KeyError("boom")
    assert client.closed


def test_close_fails_a_call_in_flight(own_server, key) -> None:
    client = RedisClient(own_server.host, own_server.port, timeout=30)
    client.set(key, b"value")
    os.kill(own_server.pid, signal.SIGSTOP)  # the server stops answering
    before = client.stats()["commands"]
    thread, results = _in_thread(lambda: client.get(key, bytearray(5)))
    _wait_for_commands(client, before)  # the get is waiting for replies
    client.close()
    thread.join()
    assert len(results) == 1 and isinstance(results[0], ClientClosedError)


def test_uninitialised_client_raises_not_crashes() -> None:
    # RedisClient.__new__ without __init__ (e.g. a subclass that forgot
    # super().__init__) has no C client: calls must raise, not segfault.
    code = (
        "from lmcache_redis import RedisClient\n"
        "for call in (lambda c: c.stats(), lambda c: c.get('k', bytearray(1)),\n"
        "             lambda c: c.set('k', b'v'), lambda c: c.exists('k'),\n"
        "             lambda c: c.delete('k'), lambda c: c.get_ptr('k', 0, 0)):\n"
        "    c = RedisClient.__new__(RedisClient)\n"
        "    try:\n"
        "        call(c)\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert len(proc.stdout.split()) == 6


# ---- servers that die, stall, come back -------------------------------------------


def test_stats_keys(redis_server, key) -> None:
    with RedisClient(redis_server.host, redis_server.port) as client:
        stats = client.stats()
        assert set(stats) == STATS_KEYS
        assert all(isinstance(v, int) and v >= 0 for v in stats.values())
        _works(client, key)
        after = client.stats()
        assert after["bytes_sent"] >= stats["bytes_sent"] + 10_000
        assert after["bytes_received"] >= stats["bytes_received"] + 10_000
        assert after["commands"] > stats["commands"]
        assert after["reconnects"] == 0


def test_killed_server_raises_connection_error(own_server, key) -> None:
    client = RedisClient(own_server.host, own_server.port, timeout=5)
    client.set(key, b"value")
    own_server.kill()
    for call in (lambda: client.get(key, bytearray(5)), lambda: client.set(key, b"v"),
                 lambda: client.exists(key), lambda: client.delete(key)):
        with pytest.raises(lmcache_redis.ConnectionError) as info:
            call()
        assert not isinstance(info.value, lmcache_redis.TimeoutError)
    client.close()


def test_reconnects_after_restart(own_server, key) -> None:
    # One connection: the failed call during the outage found its
    # connection dead and dropped it; after the restart it is re-made.
    client = RedisClient(own_server.host, own_server.port, connections=1, timeout=5)
    client.set(key, b"value")
    own_server.kill()
    with pytest.raises(lmcache_redis.ConnectionError):
        client.get(key, bytearray(5))
    own_server.restart()  # same port, empty data set
    assert client.get(key, bytearray(5)) is None
    _works(client, key)
    assert client.stats()["reconnects"] >= 1
    client.close()


@pytest.mark.parametrize("connections", [1, 4])
def test_idle_connections_survive_a_restart(own_server, key, connections: int) -> None:
    # The server restarts while the client is idle (or drops idle clients:
    # redis' `timeout` setting, CLIENT KILL): the first call afterwards must
    # not fail on the connections the server closed in the meantime. Which
    # connections the calls after the restart use depends on which workers
    # wake first (a set is one command on one connection), so at least one
    # reconnects, not necessarily every one.
    client = RedisClient(own_server.host, own_server.port, stripes=8, connections=connections,
                         timeout=5)
    _works(client, key)
    own_server.restart()
    _works(client, key)
    assert client.stats()["reconnects"] >= 1
    client.close()


def test_client_kill_is_survived(own_server, key) -> None:
    client = RedisClient(own_server.host, own_server.port, connections=2, timeout=5)
    _works(client, key)
    own_server.command("CLIENT", "KILL", "TYPE", "normal")
    _works(client, key)
    client.close()


def test_protocol_error_drops_the_connection(own_server, key) -> None:
    # Redis answers a request it cannot parse with "-ERR Protocol error: ..."
    # and closes the connection right after. Here: values longer than the
    # server's proto-max-bulk-len, lowered after the client read it. Each
    # job after such a reply must go on a new connection: in a batch on one
    # connection it follows at once, and on the old one it would meet the
    # server's close ("Connection reset by peer"), a race that a few
    # thousand tries lose at least once.
    with RedisClient(own_server.host, own_server.port, stripes=1, connections=1,
                     timeout=10) as client:
        own_server.command("CONFIG", "SET", "proto-max-bulk-len", str(1 << 20))
        big = bytes((1 << 20) + 1)
        protocol_errors = 0
        for batch in range(40):
            keys = [f"{key}:{batch}:{i}:{size}" for i in range(50) for size in ("big", "small")]
            with pytest.raises(BatchError) as info:
                client.set_many(keys, [big, b"small"] * 50)
            # Only the big values fail: with the protocol error, or (when the
            # socket buffers hold less than one) with the close while sending.
            assert len(info.value.failures) == 50
            for _, failed, error in info.value.failures:
                assert failed.endswith(":big"), (failed, error)
                protocol_errors += "Protocol error" in str(error)
        assert protocol_errors > 0
        assert client.stats()["reconnects"] >= 40 * 50


def test_stalled_server_times_out(own_server, key) -> None:
    client = RedisClient(own_server.host, own_server.port, timeout=0.3)
    client.set(key, b"value")
    os.kill(own_server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(lmcache_redis.TimeoutError) as info:
            client.get(key, bytearray(5))
        assert isinstance(info.value, builtins.TimeoutError)
    finally:
        os.kill(own_server.pid, signal.SIGCONT)
    assert client.get(key, bytearray(5)) == 5  # the timed-out connections are re-made
    client.close()
