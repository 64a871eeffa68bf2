"""Throwaway ``redis-server`` processes for tests and demos, and the test
certificates for a TLS one.

Pure Python on purpose: it must not depend on the compiled core or on
redis-py, so it can check the server that the core is then tested against.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Optional, Union

__all__ = [
    "RedisServer",
    "RespError",
    "TestCertificates",
    "find_redis_server",
    "make_test_certificates",
    "resp_command",
]

_HOST = "127.0.0.1"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 20


class RespError(Exception):
    """An error reply (``-ERR ...``) from the server."""


Reply = Union[None, int, str, bytes, RespError, list]


def find_redis_server() -> str:
    """Return the path of the ``redis-server`` binary.

    Looks on ``PATH`` and then in /usr/bin and /usr/sbin, which a non-login
    shell's ``PATH`` may lack.

    Raises:
        RuntimeError: if no ``redis-server`` is installed.
    """
    path = shutil.which("redis-server")
    if path:
        return path
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "redis-server not found: install Debian's redis-server "
        "(apt-get install redis-server)"
    )


def _encode(args: Sequence[object]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(f: BinaryIO) -> Reply:
    """Decode one RESP2 reply; an error reply is returned, not raised, so
    that a nested error does not leave the rest of an array unread."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by the server")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        return RespError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("connection closed by the server")
        return data[:-2]
    if kind == b"*":
        n = int(body)
        if n < 0:
            return None
        return [_read_reply(f) for _ in range(n)]
    raise ConnectionError(f"not a RESP reply: {line!r}")


def resp_command(
    address: Union[tuple[str, int], str],
    *args: object,
    password: Optional[str] = None,
    timeout: float = 5.0,
) -> Reply:
    """Send one command over a fresh connection and return its decoded reply.

    Args:
        address: ``(host, port)`` for TCP or a path for a unix socket.
        *args: the command and its arguments; ``str`` and numbers are sent
            as their UTF-8 text, ``bytes`` as they are.
        password: if given, ``AUTH`` is sent first.
        timeout: seconds allowed for connecting and for each read.

    Returns:
        Simple strings as ``str``, bulk strings as ``bytes``, integers as
        ``int``, nulls as ``None``, arrays as ``list``. An error nested
        inside an array is returned as a ``RespError`` element.

    Raises:
        RespError: if the reply (or the AUTH reply) is an error.
        OSError: if the server cannot be reached.
    """
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        with sock.makefile("rb") as f:
            if password is not None:
                sock.sendall(_encode(("AUTH", password)))
                reply = _read_reply(f)
                if isinstance(reply, RespError):
                    raise reply
            sock.sendall(_encode(args))
            reply = _read_reply(f)
    if isinstance(reply, RespError):
        raise reply
    return reply


@dataclass(frozen=True)
class TestCertificates:
    """PEM files made by :func:`make_test_certificates` (paths as str).

    ``ca_cert`` signed ``server_cert`` (for ``IP:127.0.0.1`` and
    ``DNS:localhost``) and ``client_cert``; ``other_ca_cert`` is an
    unrelated CA that signed nothing here. The keys are unencrypted, except
    ``client_key_encrypted`` (passphrase ``"secret"``). ``client_combined``
    holds the client certificate followed by its key.
    """

    __test__ = False  # not a pytest test class, despite its name

    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    client_key_encrypted: str
    client_combined: str
    other_ca_cert: str


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is not installed (apt-get install openssl)")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def make_test_certificates(directory: Union[str, os.PathLike]) -> TestCertificates:
    """Make a test CA, certificates it signed and an unrelated CA, in
    ``directory``, with the ``openssl`` command (P-256 keys, valid 7 days).

    For tests and benchmarks only: the CA's key is left beside its
    certificate, unprotected.

    Raises:
        RuntimeError: if ``openssl`` is missing or fails.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name, cn in (("ca", "lmcache_redis test CA"), ("other-ca", "unrelated test CA")):
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-days", "7", "-subj", f"/CN={cn}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    leaves = {
        "server": ("localhost", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        "client": ("lmcache_redis test client", "clientAuth", ""),
    }
    for name, (cn, usage, san) in leaves.items():
        (d / f"{name}.ext").write_text(
            f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage={usage}\n{san}")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "7",
                 "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    _openssl("pkey", "-in", "client.key", "-aes256", "-passout", "pass:secret",
             "-out", "client-encrypted.key", cwd=d)
    (d / "client-combined.pem").write_bytes(
        (d / "client.pem").read_bytes() + (d / "client.key").read_bytes())
    return TestCertificates(
        ca_cert=str(d / "ca.pem"), ca_key=str(d / "ca.key"),
        server_cert=str(d / "server.pem"), server_key=str(d / "server.key"),
        client_cert=str(d / "client.pem"), client_key=str(d / "client.key"),
        client_key_encrypted=str(d / "client-encrypted.key"),
        client_combined=str(d / "client-combined.pem"),
        other_ca_cert=str(d / "other-ca.pem"))


def _free_port() -> int:
    # The port may be taken again between close() and redis binding it;
    # start() retries on "Address already in use" for that reason.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return sock.getsockname()[1]


class RedisServer:
    """A ``redis-server`` on 127.0.0.1, on a free port, in a fresh temp dir.

    Nothing is persisted, and the temp dir is removed by :meth:`stop`.
    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with RedisServer(extra_args=["--io-threads", "2"]) as server:
            server.command("SET", "k", "v")

    Args:
        extra_args: more ``redis-server`` arguments, e.g.
            ``["--requirepass", "secret"]``. A ``--requirepass`` given here
            is also used by :meth:`command` and the start-up check.
        unix_socket: also listen on ``<tempdir>/redis.sock`` (mode 700).
        tls: also listen for TLS on :attr:`tls_port` with these
            certificates (see :func:`make_test_certificates`); the plain
            port stays open (:meth:`command` and the start-up check use it).
        tls_auth_clients: with ``tls``, require a client certificate signed
            by the CA.
        env: environment variables to set for ``redis-server``, e.g.
            ``{"MALLOC_CONF": "dirty_decay_ms:-1"}`` for its jemalloc.
    """

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        unix_socket: bool = False,
        tls: Optional[TestCertificates] = None,
        tls_auth_clients: bool = False,
        env: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._extra_args = list(extra_args)
        self._env = dict(env or {})
        self._unix_socket = unix_socket
        self._tls = tls
        self._tls_auth_clients = tls_auth_clients
        self._password = _option_value(self._extra_args, "--requirepass")
        self._port: Optional[int] = None
        self._tls_port: Optional[int] = None
        self._dir: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None

    # -- properties -----------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on: always ``127.0.0.1``."""
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port; kept across :meth:`restart`."""
        if self._port is None:
            raise RuntimeError("RedisServer is not started")
        return self._port

    @property
    def tls_port(self) -> int:
        """The TLS port (only with ``tls=``); kept across :meth:`restart`."""
        if self._tls is None:
            raise RuntimeError("RedisServer was made without tls=")
        if self._tls_port is None:
            raise RuntimeError("RedisServer is not started")
        return self._tls_port

    @property
    def tls_url(self) -> str:
        """``rediss://127.0.0.1:TLS_PORT`` (no CA file in it)."""
        return f"rediss://{_HOST}:{self.tls_port}"

    @property
    def unix_path(self) -> Optional[str]:
        """The unix socket's path, or ``None`` without ``unix_socket=True``."""
        if not self._unix_socket or self._dir is None:
            return None
        return os.path.join(self._dir, "redis.sock")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (no password in it)."""
        return f"redis://{_HOST}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        """The server's process id, or ``None`` when not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    # -- life cycle -------------------------------------------------------

    def start(self) -> "RedisServer":
        """Start the server and wait until it answers.

        Returns:
            ``self``, for ``server = RedisServer().start()``.

        Raises:
            RuntimeError: if it does not answer within 10 s; the message
                ends with the server log's last lines.
        """
        if self._dir is not None:
            raise RuntimeError("RedisServer is already started")
        self._dir = tempfile.mkdtemp(prefix="lmcache-redis-")
        attempts_left = _PORT_ATTEMPTS
        try:
            while True:
                self._port = _free_port()
                if self._tls is not None:
                    self._tls_port = _free_port()
                    while self._tls_port == self._port:
                        self._tls_port = _free_port()
                try:
                    self._launch()
                    return self
                except RuntimeError as exc:
                    attempts_left -= 1
                    if not attempts_left or "Address already in use" not in str(exc):
                        raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its
        temp dir. Does nothing if it is not started."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; the temp dir is kept, so
        :meth:`restart` can bring it back on the same port."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        """Stop the server if it runs and start it again on the same port,
        with the same arguments and an empty data set."""
        if self._dir is None:
            raise RuntimeError("RedisServer is not started")
        self._terminate()
        self._launch()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # -- talking to it ------------------------------------------------------

    def command(self, *args: object) -> Reply:
        """Send one command over a fresh TCP connection; see
        :func:`resp_command` for how replies are decoded.

        Authenticates first if the server was started with
        ``--requirepass``.

        Raises:
            RespError: if the server replies with an error.
        """
        return resp_command((_HOST, self.port), *args, password=self._password)

    # -- internals ------------------------------------------------------------

    def _log_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "redis.log")

    def _launch(self) -> None:
        """Run redis-server on self._port in self._dir; wait for PING."""
        assert self._dir is not None and self._port is not None
        argv = [
            find_redis_server(),
            "--save", "",
            "--appendonly", "no",
            "--port", str(self._port),
            "--bind", _HOST,
            "--dir", self._dir,
            "--daemonize", "no",
        ]
        if self._unix_socket:
            argv += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self._tls is not None:
            argv += [
                "--tls-port", str(self._tls_port),
                "--tls-cert-file", self._tls.server_cert,
                "--tls-key-file", self._tls.server_key,
                "--tls-ca-cert-file", self._tls.ca_cert,
                "--tls-auth-clients", "yes" if self._tls_auth_clients else "no",
            ]
        argv += self._extra_args
        # Appending keeps the log of earlier runs for a failing restart.
        with open(self._log_path(), "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self._env} if self._env else None,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                self._fail("exited during start-up")
            try:
                # Any reply, even -NOAUTH (under --requirepass), means it
                # is up and serving.
                resp_command((_HOST, self._port), "PING", timeout=1.0)
                return
            except RespError:
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._terminate()
                self._fail(f"did not answer PING within {_START_TIMEOUT:g} s")
            time.sleep(0.02)

    def _fail(self, what: str) -> None:
        try:
            with open(self._log_path(), errors="replace") as log:
                tail = "".join(log.readlines()[-_LOG_TAIL_LINES:])
        except OSError:
            tail = "(no log)\n"
        raise RuntimeError(
            f"redis-server on port {self._port} {what}; log tail:\n{tail}"
        )

    def _terminate(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def _option_value(args: Sequence[str], option: str) -> Optional[str]:
    """The value after the last ``option`` in ``args``, or ``None``."""
    value = None
    for i, arg in enumerate(args[:-1]):
        if arg == option:
            value = args[i + 1]
    return value
