"""TLS: round trips over rediss://, certificate verification (on by default),
client certificates, and the connection behaviours (deadlines, close,
reconnects) with TLS under them. The CA and certificates are made per test
module with the openssl command (lmcache_redis._testing.make_test_certificates)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import numpy as np
import pytest
import redis

import lmcache_redis
from lmcache_redis import ClientClosedError, RedisClient, stripe_count
from lmcache_redis._testing import RedisServer, TestCertificates, make_test_certificates

MiB = 1 << 20
LMR_HEADER_READ = 512  # csrc/conn.h: the largest read while looking for a reply header


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TestCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(certs) -> Iterator[RedisServer]:
    with RedisServer(tls=certs) as server:
        yield server


@pytest.fixture(scope="module")
def auth_clients_server(certs) -> Iterator[RedisServer]:
    with RedisServer(tls=certs, tls_auth_clients=True) as server:
        yield server


@pytest.fixture
def own_tls_server(certs, make_own_server) -> RedisServer:
    return make_own_server(tls=certs)


@pytest.fixture(scope="module")
def data_32_mib() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, 32 * MiB, dtype=np.uint8)


def _tls_client(server: RedisServer, certs: TestCertificates, **kwargs) -> RedisClient:
    options = {"ssl": True, "ssl_ca_certs": certs.ca_cert, **kwargs}
    return RedisClient(server.host, server.tls_port, **options)


def _works(client: RedisClient, key: str, size: int = 10_000) -> None:
    data = os.urandom(size)
    client.set(key, data)
    out = bytearray(size)
    assert client.get(key, out) == size
    assert out == data


def test_redis_server_helper_with_tls(certs) -> None:
    with RedisServer(tls=certs) as server:
        port, tls_port = server.port, server.tls_port
        assert tls_port != port
        assert server.tls_url == f"rediss://127.0.0.1:{tls_port}"
        server.restart()
        assert (server.port, server.tls_port) == (port, tls_port)
        assert server.command("PING") == "PONG"  # the plain port stays open
    with RedisServer() as plain, pytest.raises(RuntimeError, match="without tls="):
        plain.tls_port


# ---- round trips --------------------------------------------------------------


@pytest.mark.parametrize("stripes", [1, None], ids=["plain", "striped"])
def test_round_trip_32_mib(tls_server, certs, key, data_32_mib, stripes) -> None:
    with _tls_client(tls_server, certs, stripes=stripes) as client:
        assert client.ssl and client.ssl_verify
        client.set(key, data_32_mib)
        out = np.empty_like(data_32_mib)
        assert client.get(key, out) == data_32_mib.nbytes
        np.testing.assert_array_equal(out, data_32_mib)
        assert client.exists(key)
        # The same bytes through the plain port: TLS changes the wire only.
        with RedisClient(tls_server.host, tls_server.port) as plain:
            out[:] = 0
            assert plain.get(key, out) == data_32_mib.nbytes
            np.testing.assert_array_equal(out, data_32_mib)
        assert client.delete(key)
        assert client.get(key, out) is None


def test_small_values_and_ttl(tls_server, certs, key) -> None:
    with _tls_client(tls_server, certs, connections=2) as client:
        for size in (0, 1, 100, 16384, 16385, 3 * MiB + 1):
            _works(client, key, size)
        client.set(key, b"expires", ttl=60)
        assert 0 < tls_server.command("PTTL", key) <= 60_000


def test_threads_share_a_tls_client(tls_server, certs, key) -> None:
    errors: list = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                _works(client, f"{key}:{n}:{i}", 3 * MiB + n)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)

    with _tls_client(tls_server, certs) as client:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_get_receives_in_place_over_tls(tls_server, certs, key, data_32_mib) -> None:
    # As on plain TCP, this library copies only the value bytes that arrive
    # with a reply's header (at most LMR_HEADER_READ per stripe); the rest is
    # read straight into the caller's memory. With TLS the bytes are read by
    # SSL_read_ex into that memory: OpenSSL decrypts each record in its own
    # buffer and copies the plaintext out, an unavoidable copy of TLS in user
    # space that bytes_copied (our copies) does not count.
    with _tls_client(tls_server, certs) as client:
        client.set(key, data_32_mib)
        out = np.empty_like(data_32_mib)
        before = client.stats()
        assert client.get(key, out) == data_32_mib.nbytes
        after = client.stats()
        np.testing.assert_array_equal(out, data_32_mib)
        stripes = stripe_count(data_32_mib.nbytes)  # the default layout
        assert after["bytes_copied"] - before["bytes_copied"] <= stripes * LMR_HEADER_READ
        assert after["bytes_received"] - before["bytes_received"] >= data_32_mib.nbytes
        client.delete(key)


# ---- URLs and options ----------------------------------------------------------


def test_from_url_rediss(tls_server, certs, key) -> None:
    url = f"{tls_server.tls_url}?ssl_ca_certs={quote(certs.ca_cert)}&connections=2"
    with RedisClient.from_url(url) as client:
        assert client.ssl and client.ssl_verify and client.connections == 2
        assert client.ssl_ca_certs == certs.ca_cert
        assert "ssl=True" in repr(client)
        _works(client, key)
    # A DNS name is checked against the certificate's DNS entries.
    url = f"rediss://localhost:{tls_server.tls_port}?ssl_ca_certs={quote(certs.ca_cert)}"
    with RedisClient.from_url(url) as client:
        _works(client, key)


def test_from_url_options(tls_server, certs) -> None:
    url = (f"{tls_server.tls_url}/1?ssl_ca_certs={quote(certs.other_ca_cert)}"
           f"&ssl_verify=false&ssl_server_name=redis.example")
    with RedisClient.from_url(url) as client:
        assert (client.ssl, client.ssl_verify, client.db) == (True, False, 1)
        assert client.ssl_server_name == "redis.example"
        assert "ssl_verify=False" in repr(client)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379?ssl_ca_certs=/ca.pem",  # TLS options need rediss://
    "rediss://127.0.0.1:6379?ssl_verify=maybe",
    "rediss://127.0.0.1:6379?ssl_cert_reqs=none",
    "rediss://127.0.0.1:6379/x",
])
def test_bad_tls_url(url: str) -> None:
    with pytest.raises(ValueError):
        RedisClient.from_url(url)


def test_bad_tls_options(tls_server, certs, tmp_path) -> None:
    host, port = tls_server.host, tls_server.tls_port
    with pytest.raises(ValueError, match="without ssl=True"):
        RedisClient(host, port, ssl_ca_certs=certs.ca_cert)
    with pytest.raises(ValueError, match="unix_socket_path"):
        RedisClient(unix_socket_path=str(tmp_path / "s.sock"), ssl=True)
    with pytest.raises(ValueError, match="ssl_certfile"):
        RedisClient(host, port, ssl=True, ssl_keyfile=certs.client_key)
    with pytest.raises(ValueError, match="empty"):
        RedisClient(host, port, ssl=True, ssl_server_name="")
    with pytest.raises(TypeError):
        RedisClient(host, port, ssl=True, ssl_ca_certs=1234)
    missing = str(tmp_path / "no-such-ca.pem")
    with pytest.raises(ValueError, match="CA file.*no-such-ca.pem.*No such file"):
        RedisClient(host, port, ssl=True, ssl_ca_certs=missing)
    with pytest.raises(ValueError, match="CA file"):
        RedisClient(host, port, ssl=True, ssl_ca_certs=certs.client_key)  # not a certificate
    with pytest.raises(ValueError, match="key file"):
        RedisClient(host, port, ssl=True, ssl_ca_certs=certs.ca_cert,
                    ssl_certfile=certs.client_cert, ssl_keyfile=certs.server_key)  # not its key


def test_encrypted_key_fails_without_prompting(tls_server, certs) -> None:
    # OpenSSL's default would ask for the passphrase on the terminal.
    with pytest.raises(ValueError, match="encrypted"):
        _tls_client(tls_server, certs, ssl_certfile=certs.client_cert,
                    ssl_keyfile=certs.client_key_encrypted)


def test_paths_may_be_pathlike(tls_server, certs, key, tmp_path) -> None:
    from pathlib import Path
    with _tls_client(tls_server, certs, ssl_ca_certs=Path(certs.ca_cert)) as client:
        assert client.ssl_ca_certs == certs.ca_cert
        _works(client, key)


# ---- verification ---------------------------------------------------------------


def _connect_error(server: RedisServer, **kwargs) -> str:
    with pytest.raises(lmcache_redis.ConnectionError) as info:
        RedisClient(server.host, server.tls_port, ssl=True, **kwargs)
    assert not isinstance(info.value, lmcache_redis.AuthenticationError)
    return str(info.value)


def test_untrusted_ca_is_refused(tls_server, certs) -> None:
    message = _connect_error(tls_server, ssl_ca_certs=certs.other_ca_cert)
    assert "certificate verify failed" in message
    assert f"127.0.0.1:{tls_server.tls_port}" in message
    assert "not among the trusted" in message


def test_verification_is_on_by_default(tls_server) -> None:
    # No CA file: the system's trust store, which does not know the test CA.
    message = _connect_error(tls_server)
    assert "certificate verify failed" in message


@pytest.mark.parametrize("name, reason", [
    ("wrong.example", "hostname mismatch"),
    ("127.0.0.2", "IP address mismatch"),
])
def test_name_mismatch_is_refused(tls_server, certs, name: str, reason: str) -> None:
    message = _connect_error(tls_server, ssl_ca_certs=certs.ca_cert, ssl_server_name=name)
    assert "certificate verify failed" in message and reason in message


def test_server_name_matches_a_dns_entry(tls_server, certs, key) -> None:
    # Connected by address, verified by the name the certificate carries.
    with _tls_client(tls_server, certs, ssl_server_name="localhost") as client:
        _works(client, key)


def test_verify_off_accepts_any_certificate(tls_server, certs, key) -> None:
    for options in ({"ssl_ca_certs": certs.other_ca_cert}, {},
                    {"ssl_ca_certs": certs.ca_cert, "ssl_server_name": "wrong.example"}):
        with RedisClient(tls_server.host, tls_server.tls_port, ssl=True, ssl_verify=False,
                         **options) as client:
            _works(client, key)


# ---- client certificates ----------------------------------------------------------


def test_client_certificate_required(auth_clients_server, certs) -> None:
    message = _connect_error(auth_clients_server, ssl_ca_certs=certs.ca_cert)
    assert "certificate required" in message


@pytest.mark.parametrize("files", ["separate", "combined"])
def test_client_certificate(auth_clients_server, certs, key, files: str) -> None:
    if files == "separate":
        options = {"ssl_certfile": certs.client_cert, "ssl_keyfile": certs.client_key}
    else:  # certificate and key in one file, as Python's ssl module allows
        options = {"ssl_certfile": certs.client_combined}
    with _tls_client(auth_clients_server, certs, **options) as client:
        _works(client, key)


def test_server_certificate_is_no_client_certificate(auth_clients_server, certs) -> None:
    # Signed by the right CA, but for servers only (extendedKeyUsage
    # serverAuth): the server refuses it.
    with pytest.raises(lmcache_redis.ConnectionError):
        _tls_client(auth_clients_server, certs, ssl_certfile=certs.server_cert,
                    ssl_keyfile=certs.server_key)


# ---- wrong ports, deadlines, close, reconnects --------------------------------------


def test_tls_client_on_the_plain_port(tls_server, certs) -> None:
    # The plain port takes the ClientHello for an inline command: it answers
    # with an error (not TLS) or waits for a newline; either way the client
    # gives up by its connect timeout, with a hint.
    start = time.monotonic()
    with pytest.raises((lmcache_redis.ConnectionError, lmcache_redis.TimeoutError)) as info:
        RedisClient(tls_server.host, tls_server.port, ssl=True, ssl_ca_certs=certs.ca_cert,
                    connect_timeout=1.0)
    assert time.monotonic() - start < 5
    assert "TLS" in str(info.value)


def test_plain_client_on_the_tls_port(tls_server) -> None:
    start = time.monotonic()
    with pytest.raises((lmcache_redis.ConnectionError, lmcache_redis.TimeoutError)):
        RedisClient(tls_server.host, tls_server.tls_port, connect_timeout=1.0)
    assert time.monotonic() - start < 5


def test_stalled_tls_server_times_out(own_tls_server, certs, key) -> None:
    client = _tls_client(own_tls_server, certs, timeout=0.3)
    client.set(key, b"value")
    os.kill(own_tls_server.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(lmcache_redis.TimeoutError):
            client.get(key, bytearray(5))
        assert time.monotonic() - start < 3
        # A handshake that gets no answer times out too.
        with pytest.raises(lmcache_redis.TimeoutError, match="TLS handshake"):
            _tls_client(own_tls_server, certs, connect_timeout=0.3)
    finally:
        os.kill(own_tls_server.pid, signal.SIGCONT)
    assert client.get(key, bytearray(5)) == 5  # the timed-out connections are re-made
    client.close()


def test_close_fails_a_tls_call_in_flight(own_tls_server, certs, key) -> None:
    client = _tls_client(own_tls_server, certs, timeout=30)
    client.set(key, b"value")
    os.kill(own_tls_server.pid, signal.SIGSTOP)  # the server stops answering
    before = client.stats()["commands"]
    results: list = []

    def get() -> None:
        try:
            results.append(client.get(key, bytearray(5)))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            results.append(e)

    thread = threading.Thread(target=get)
    thread.start()
    deadline = time.monotonic() + 30
    while client.stats()["commands"] == before:  # until the get waits for its reply
        assert time.monotonic() < deadline
        time.sleep(0.001)
    start = time.monotonic()
    client.close()
    thread.join()
    assert time.monotonic() - start < 5
    assert len(results) == 1 and isinstance(results[0], ClientClosedError)


def test_tls_client_recovers_after_a_restart(own_tls_server, certs, key) -> None:
    client = _tls_client(own_tls_server, certs, connections=2, timeout=5)
    _works(client, key)
    own_tls_server.kill()
    with pytest.raises(lmcache_redis.ConnectionError):
        client.get(key, bytearray(5))
    own_tls_server.restart()  # same ports, empty data set
    assert client.get(key, bytearray(5)) is None
    _works(client, key, 5 * MiB)
    assert client.stats()["reconnects"] >= 1
    client.close()


def test_idle_tls_connections_survive_client_kill(own_tls_server, certs, key) -> None:
    # The server closes idle TLS connections (close_notify, then FIN): the
    # next call must see them dead before using them, not fail on them.
    client = _tls_client(own_tls_server, certs, stripes=4, connections=4, timeout=5)
    _works(client, key)
    own_tls_server.command("CLIENT", "KILL", "TYPE", "normal")
    time.sleep(0.1)  # let the close reach the client's sockets
    # Format 2: a set uses one connection, a get one and then one per part,
    # so which connections a call uses varies; every call must work, and
    # each dead connection is re-made once, when it is next used.
    for _ in range(4):
        _works(client, key)
    assert 1 <= client.stats()["reconnects"] <= 4
    client.close()


def test_redis_py_reads_what_tls_wrote(tls_server, certs, key) -> None:
    # Cross-check against another TLS client: redis-py over the same port.
    with _tls_client(tls_server, certs, stripes=1) as client:
        client.set(key, b"over TLS")
    with redis.Redis(tls_server.host, tls_server.tls_port, ssl=True,
                     ssl_ca_certs=certs.ca_cert) as r:
        assert r.get(key) == b"over TLS"
        r.delete(key)
