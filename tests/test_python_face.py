"""The Python face a user meets on day one: the errors that name the
argument and the fix, get(key) without a buffer, the signature and
attribute docs, ping(), the type stub, the private test helpers, and Ctrl-C
during a call to a stalled server."""

from __future__ import annotations

import inspect
import os
import pickle
import pydoc
import signal
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import lmcache_redis
from lmcache_redis import (BufferTooSmallError, ClientClosedError, RedisClient,
                           stripe_count)
from lmcache_redis._testing import make_test_certificates

MiB = 1 << 20


@pytest.fixture
def client(redis_server):
    with RedisClient(redis_server.host, redis_server.port) as c:
        yield c


# ---- item 7: errors that name the argument and the fix ----------------------


def test_stripes_out_of_range_states_the_real_range(redis_server) -> None:
    with pytest.raises(ValueError) as info:
        RedisClient(redis_server.host, redis_server.port, stripes=300)
    message = str(info.value)
    assert "stripes" in message and "1..256" in message and "got 300" in message
    # Every value the message offers is accepted.
    for stripes in (1, 256, None, 0):
        RedisClient(redis_server.host, redis_server.port, stripes=stripes).close()
    with RedisClient(redis_server.host, redis_server.port, stripes=0) as c:
        assert c.stripes is None


@pytest.mark.parametrize("kwargs, words", [
    ({"stripes": -1}, ["stripes", "1..256", "got -1"]),
    ({"connections": 0}, ["connections", "1..64", "got 0"]),
    ({"connections": 65}, ["connections", "1..64", "got 65"]),
    ({"timeout": 0}, ["timeout", "positive"]),
    ({"connect_timeout": -1}, ["connect_timeout", "positive"]),
    ({"db": -1}, ["db", ">= 0"]),
    ({"port": 0}, ["port", "1..65535"]),
    ({"host": ""}, ["host", "empty"]),
    ({"stripe_size": 100}, ["stripe_size", "4096..", "got 100"]),
    ({"username": "u"}, ["username", "password"]),
    ({"ssl_ca_certs": "/ca.pem"}, ["ssl_ca_certs", "ssl=True"]),
    ({"ssl": True, "ssl_keyfile": "/k.pem"}, ["ssl_keyfile", "ssl_certfile"]),
    ({"ssl": True, "ssl_server_name": ""}, ["ssl_server_name", "empty"]),
    ({"ssl": True, "unix_socket_path": "/tmp/x.sock"}, ["ssl=True", "unix_socket_path"]),
], ids=lambda v: "-".join(f"{k}={v[k]!r}" for k in v) if isinstance(v, dict) else "")
def test_bad_options_name_the_argument(redis_server, kwargs, words) -> None:
    # One check, in the C core; its message names the Python argument.
    options = {"host": redis_server.host, "port": redis_server.port, **kwargs}
    with pytest.raises(ValueError) as info:
        RedisClient(**options)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_str_port_names_the_argument() -> None:
    with pytest.raises(TypeError) as info:
        RedisClient("localhost", "6379")
    assert "port" in str(info.value) and "port=6379" in str(info.value)


@pytest.mark.parametrize("name", ["connections", "db", "stripes"])
def test_wrong_type_names_the_argument(redis_server, name: str) -> None:
    with pytest.raises(TypeError, match=name):
        RedisClient(redis_server.host, redis_server.port, **{name: 1.5})
    with pytest.raises(TypeError, match=name):
        RedisClient(redis_server.host, redis_server.port, **{name: "4"})


@pytest.mark.parametrize("url", ["redis://localhost:6379", "rediss://h:6380/1", "unix:///r.sock"])
def test_url_as_host_points_to_from_url(url: str) -> None:
    with pytest.raises(ValueError) as info:
        RedisClient(url)
    assert "from_url" in str(info.value) and url in str(info.value)


def test_bad_url_option_names_it(redis_server) -> None:
    with pytest.raises(ValueError) as info:
        RedisClient.from_url(f"{redis_server.url}?connections=four")
    assert "connections" in str(info.value) and "'four'" in str(info.value)
    with pytest.raises(ValueError, match="timeout"):
        RedisClient.from_url(f"{redis_server.url}?timeout=soon")
    with pytest.raises(ValueError, match="port"):
        RedisClient.from_url("redis://user:secret@localhost:notaport")


def test_non_contiguous_buffer_names_the_fix(client) -> None:
    client.set("face:nc", b"abcdef")
    strided = np.zeros(64, dtype=np.uint8)[::2]
    for call, args in (("get", ("face:nc", strided)), ("set", ("face:nc", strided))):
        with pytest.raises(ValueError) as info:
            getattr(client, call)(*args)
        message = str(info.value)
        assert "buffer" in message and "np.ascontiguousarray" in message, message
        assert "C-contiguous" in message


def test_read_only_buffer_names_the_fix(client) -> None:
    client.set("face:ro", b"abc")
    with pytest.raises(ValueError) as info:
        client.get("face:ro", b"xyz")
    assert "read-only" in str(info.value) and "get(key)" in str(info.value)


def test_not_a_buffer_names_the_argument(client) -> None:
    with pytest.raises(TypeError, match="buffer must support the buffer protocol"):
        client.get("face:x", [1, 2, 3])


# ---- get(key) without a buffer -----------------------------------------------


def test_get_without_buffer_returns_bytes(client) -> None:
    data = np.random.default_rng(7).integers(0, 256, 5 * MiB + 3, dtype=np.uint8)
    client.set("face:bytes", data)
    got = client.get("face:bytes")
    assert type(got) is bytes and got == data.tobytes()
    client.set("face:small", b"hi")
    assert client.get("face:small") == b"hi"
    assert client.get("face:missing") is None
    client.set("face:empty", b"")
    assert client.get("face:empty") == b""
    assert client.get("face:empty", None) == b""  # buffer=None is the same call


def test_get_without_buffer_allocates_once(client) -> None:
    n = 16 * MiB
    client.set("face:once", np.ones(n, dtype=np.uint8))
    client.get("face:once")  # warm up
    tracemalloc.start()
    try:
        got = client.get("face:once")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(got) == n
    assert peak < n + MiB, f"peak {peak} bytes for a {n}-byte value: more than one copy"


def test_get_without_buffer_follows_a_value_changing_size(redis_server) -> None:
    # A writer keeps replacing the value with ones of other lengths; every
    # read is one of them whole, or a miss, never a mix or a wrong length.
    values = [bytes([i]) * n for i, n in enumerate([10, 70_000, 3 * MiB, 5, 1 * MiB + 7], 1)]
    stop = threading.Event()
    with RedisClient(redis_server.host, redis_server.port) as writer, \
            RedisClient(redis_server.host, redis_server.port) as reader:
        writer.set("face:churn", values[0])

        def write() -> None:
            i = 0
            while not stop.is_set():
                writer.set("face:churn", values[i % len(values)])
                i += 1

        thread = threading.Thread(target=write)
        thread.start()
        try:
            hits = 0
            for _ in range(200):
                got = reader.get("face:churn")
                assert got is None or got in values
                hits += got is not None
        finally:
            stop.set()
            thread.join()
    assert hits > 0


def test_zero_length_hit_is_zero_not_none(client) -> None:
    client.set("face:zero", b"")
    n = client.get("face:zero", bytearray(8))
    assert n == 0 and n is not None  # a hit that reads as false: test `is None`
    assert client.get("face:zero-missing", bytearray(8)) is None
    assert "is None" in RedisClient.get.__doc__


def test_buffer_too_small_pickles(client) -> None:
    client.set("face:big", b"x" * 100)
    with pytest.raises(BufferTooSmallError) as info:
        client.get("face:big", bytearray(10))
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is BufferTooSmallError and again.needed == 100
    assert str(again) == str(info.value) and isinstance(again, ValueError)


# ---- credentials ---------------------------------------------------------------


@pytest.fixture
def password_server(make_own_server):
    server = make_own_server(extra_args=["--requirepass", "sésame"])
    server.command("AUTH", "sésame")
    server.command("ACL", "SETUSER", "bob", "on", ">pw\xff".encode("latin-1"),
                   "~*", "+@all")
    return server


def test_bytes_credentials(password_server) -> None:
    host, port = password_server.host, password_server.port
    for password in ("sésame", "sésame".encode("utf-8")):
        with RedisClient(host, port, password=password) as c:
            assert c.ping()
    # bytes pass as they are, even when not UTF-8.
    with RedisClient(host, port, username=b"bob", password=b"pw\xff") as c:
        assert c.ping() and c.username == b"bob"
    with pytest.raises(lmcache_redis.AuthenticationError):
        RedisClient(host, port, password=b"s\xc3\xa9sam")


@pytest.mark.parametrize("kwargs", [{"password": "pw\0x"}, {"password": b"pw\0x"},
                                    {"username": "u\0", "password": "pw"}])
def test_nul_in_credentials_is_refused(kwargs) -> None:
    name = "username" if "username" in kwargs else "password"
    with pytest.raises(ValueError) as info:
        RedisClient("localhost", 1, **kwargs)
    assert name in str(info.value) and "NUL" in str(info.value)


def test_credentials_of_another_type(redis_server) -> None:
    with pytest.raises(TypeError, match="password must be str or bytes"):
        RedisClient(redis_server.host, redis_server.port, password=1234)


# ---- a plain client on a TLS port ------------------------------------------------


def test_plain_client_on_tls_port_hints_at_tls(make_own_server, tmp_path) -> None:
    server = make_own_server(tls=make_test_certificates(tmp_path))
    with pytest.raises(lmcache_redis.ConnectionError) as info:
        RedisClient(server.host, server.tls_port, timeout=3)
    assert "TLS" in str(info.value) and "ssl=True" in str(info.value)


def _one_shot_server(reply: bytes) -> tuple[socket.socket, threading.Thread]:
    """Accepts connections and answers each with `reply`, then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_tls_record_in_reply_hints_at_tls() -> None:
    # A TLS alert record (0x15, TLS 1.2, length 2: fatal, protocol_version).
    listener, thread = _one_shot_server(b"\x15\x03\x03\x00\x02\x02\x46")
    try:
        with pytest.raises(lmcache_redis.ConnectionError) as info:
            RedisClient("127.0.0.1", listener.getsockname()[1], connections=1, timeout=3)
        assert "ssl=True" in str(info.value)
    finally:
        listener.close()
        thread.join(5)


def test_no_tls_hint_for_a_refused_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(lmcache_redis.ConnectionError) as info:
        RedisClient("127.0.0.1", port)
    assert "TLS" not in str(info.value)


# ---- item 8: the Python face ----------------------------------------------------


SETTINGS = ["host", "port", "unix_socket_path", "username", "db", "stripes", "stripe_size",
            "connections", "timeout", "connect_timeout", "ssl", "ssl_ca_certs",
            "ssl_certfile", "ssl_keyfile", "ssl_verify", "ssl_server_name", "cluster",
            "read_from_replicas", "cluster_seeds"]


def test_signature() -> None:
    sig = inspect.signature(RedisClient)
    assert list(sig.parameters) == SETTINGS[:2] + [
        "stripes", "stripe_size", "connections", "timeout", "connect_timeout", "username",
        "password", "db", "unix_socket_path", "ssl", "ssl_ca_certs", "ssl_certfile",
        "ssl_keyfile", "ssl_verify", "ssl_server_name", "cluster", "read_from_replicas",
        "cluster_seeds"]
    assert sig.parameters["cluster"].default is False
    assert sig.parameters["read_from_replicas"].default is False
    assert sig.parameters["cluster"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["host"].default == "localhost"
    assert sig.parameters["port"].default == 6379
    assert sig.parameters["stripe_size"].default == lmcache_redis.DEFAULT_STRIPE_SIZE
    assert sig.parameters["stripes"].kind is inspect.Parameter.KEYWORD_ONLY
    sig.bind("h", 1, stripes=4, ssl=True)  # binds like the real constructor
    assert list(inspect.signature(RedisClient.get).parameters) == ["self", "key", "buffer"]
    assert "ping" in dir(RedisClient)


def test_help_shows_the_real_signature() -> None:
    text = pydoc.render_doc(RedisClient, renderer=pydoc.plaintext)
    assert "RedisClient(host='localhost', port=6379, *, stripes=None" in text
    assert "__init__(self, /, *args, **kwargs)" not in text
    assert "__init__(self, host='localhost'" in text


def test_settings_are_documented_properties(redis_server) -> None:
    for name in SETTINGS:
        attr = inspect.getattr_static(RedisClient, name)
        assert attr.__doc__ and len(attr.__doc__) > 10, name
    with RedisClient(redis_server.host, redis_server.port, stripes=4, connections=2,
                     timeout=3) as c:
        assert (c.host, c.port, c.stripes, c.connections, c.timeout, c.connect_timeout) == (
            redis_server.host, redis_server.port, 4, 2, 3.0, 3.0)
        assert c.stripe_size == lmcache_redis.DEFAULT_STRIPE_SIZE and c.db == 0
        assert c.ssl is False and c.ssl_verify is True and c.unix_socket_path is None
        assert c.cluster is False and c.read_from_replicas is False
        assert c.cluster_seeds is None and "cluster" not in repr(c)
        with pytest.raises(AttributeError):
            c.host = "elsewhere"


def test_stub_runs_on_this_python() -> None:
    # The stub must not need collections.abc.Buffer (Python 3.12) on the
    # Pythons the package supports (>= 3.9): it is valid code here.
    stub = Path(lmcache_redis._core.__file__).with_name("_core.pyi")
    source = stub.read_text()
    namespace: dict = {}
    exec(compile(source, str(stub), "exec"), namespace)
    assert "RedisClient" in namespace
    unguarded = [line for line in source.splitlines() if line.startswith("from collections.abc")]
    assert not unguarded


def test_ping(client, redis_server) -> None:
    assert client.ping() is True
    before = client.stats()["commands"]
    calls = redis_server.command("INFO", "commandstats")
    assert client.ping() is True
    assert client.stats()["commands"] == before + 1  # PING alone
    after = redis_server.command("INFO", "commandstats")
    pings = [int(line.split("calls=")[1].split(",")[0])
             for text in (calls, after) for line in _text(text).splitlines()
             if line.startswith("cmdstat_ping:")]
    assert len(pings) == 2 and pings[1] >= pings[0] + 1
    client.close()
    with pytest.raises(ClientClosedError):
        client.ping()


def _text(reply) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def test_ping_reconnects_after_a_restart(own_server) -> None:
    with RedisClient(own_server.host, own_server.port, connections=1, timeout=3) as c:
        assert c.ping()
        own_server.restart()
        # The one connection was closed by the restart: seen dead, re-made.
        assert c.ping()
        assert c.stats()["reconnects"] >= 1
        own_server.kill()
        with pytest.raises(lmcache_redis.ConnectionError):
            c.ping()


def test_test_helpers_are_private() -> None:
    package = Path(lmcache_redis.__file__).parent
    assert not (package / "testing.py").exists()
    assert (package / "_testing.py").exists()
    assert "testing" not in lmcache_redis.__all__


def test_stripe_count_still_checks_its_arguments() -> None:
    assert stripe_count(32 * MiB) == 20
    with pytest.raises(ValueError, match="stripe_size"):
        stripe_count(1, stripe_size=1)


# ---- item 9: Ctrl-C --------------------------------------------------------------


def _interrupt_main_after(seconds: float) -> dict:
    """Sends SIGINT to the main thread after `seconds`; records when."""
    sent: dict = {}

    def fire() -> None:
        time.sleep(seconds)
        sent["at"] = time.monotonic()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=fire, daemon=True).start()
    return sent


@pytest.mark.parametrize("call", ["get", "get_no_buffer", "set", "exists", "ping"])
def test_ctrl_c_interrupts_a_call_to_a_stalled_server(make_own_server, call: str) -> None:
    assert threading.current_thread() is threading.main_thread()
    server = make_own_server()
    n = 8 * MiB
    data = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8)
    with RedisClient(server.host, server.port, timeout=10) as c:
        c.set("k", data)
        out = np.zeros(n, dtype=np.uint8)
        calls = {"get": lambda: c.get("k", out), "get_no_buffer": lambda: c.get("k"),
                 "set": lambda: c.set("k", data), "exists": lambda: c.exists("k"),
                 "ping": c.ping}
        os.kill(server.pid, signal.SIGSTOP)  # the server stalls: no replies
        try:
            sent = _interrupt_main_after(0.2)
            start = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                calls[call]()
            # Interrupted, not timed out: well under the 10 s timeout (the
            # bound is loose on purpose: sanitizer builds on 2 loaded cores;
            # here it takes ~15 ms).
            took = time.monotonic() - sent["at"]
            assert took < 5.0, f"KeyboardInterrupt {took:.3f} s after SIGINT"
            assert time.monotonic() - start < 6.0
            # After the call returned no worker writes to the caller's buffer.
            out[:] = 7
        finally:
            os.kill(server.pid, signal.SIGCONT)
        time.sleep(0.2)
        assert (out == 7).all()
        # The connections that were mid-reply were dropped, not reused: the
        # client works on, with the right bytes.
        assert c.get("k", out) == n and np.array_equal(out, data)
        assert c.get("k") == data.tobytes()
        assert c.ping()
        assert c.stats()["reconnects"] >= 1


def test_ctrl_c_leaves_other_threads_calls_alone(make_own_server, redis_server) -> None:
    # A KeyboardInterrupt in the main thread cancels only the main thread's
    # call; a call on another thread to a healthy server completes.
    server = make_own_server()
    value = b"v" * (4 * MiB)
    with RedisClient(server.host, server.port, timeout=10) as stalled, \
            RedisClient(redis_server.host, redis_server.port) as healthy:
        stalled.set("k", b"x")
        healthy.set("face:other", value)
        results = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                results.append(healthy.get("face:other") == value)

        thread = threading.Thread(target=loop)
        thread.start()
        os.kill(server.pid, signal.SIGSTOP)
        try:
            _interrupt_main_after(0.2)
            with pytest.raises(KeyboardInterrupt):
                stalled.get("k")
        finally:
            os.kill(server.pid, signal.SIGCONT)
            stop.set()
            thread.join()
        assert results and all(results)
        assert stalled.get("k") == b"x"


def test_no_interrupt_no_change(client) -> None:
    # Waiting in slices changes nothing for calls that just finish.
    client.set("face:slices", b"z" * MiB)
    for _ in range(20):
        assert client.get("face:slices") == b"z" * MiB
