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
    "ClusterNode",
    "RedisCluster",
    "RedisServer",
    "RespError",
    "TestCertificates",
    "find_redis_server",
    "keyslot",
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

    def _argv(self) -> list[str]:
        """The redis-server command line for self._port and self._dir
        (:class:`RedisCluster`'s nodes add their cluster options)."""
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
        return argv + self._extra_args

    def _launch(self) -> None:
        """Run redis-server on self._port in self._dir; wait for PING."""
        argv = self._argv()
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


# ---- Redis Cluster ---------------------------------------------------------------

CLUSTER_SLOTS = 16384
_CLUSTER_START_TIMEOUT = 60.0  # redis-cli --cluster create polls once a second
_POLL_INTERVAL = 0.05


def _crc16_table() -> list[int]:
    # CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as Redis
    # Cluster's key hashing defines it (cluster spec, "Keys distribution model").
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16_TABLE = _crc16_table()


def keyslot(key: Union[str, bytes]) -> int:
    """The hash slot of ``key`` as Redis Cluster computes it: CRC16 of the
    key, or of the part between the first ``{`` and the next ``}`` when that
    part is not empty (a hash tag), modulo 16384."""
    data = key.encode() if isinstance(key, str) else bytes(key)
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc % CLUSTER_SLOTS


class ClusterNode(RedisServer):
    """One node of a :class:`RedisCluster`: a :class:`RedisServer` with
    cluster mode on. Its port, bus port and ``nodes-<port>.conf`` (in its
    temp dir) survive :meth:`kill` and :meth:`restart`, so a restarted node
    rejoins the cluster as the same node (with an empty data set).

    With ``tls``, as a TLS deployment runs: clients may use :attr:`tls_port`
    (the plain port stays open for :meth:`command`), and the cluster bus
    and replication are TLS too (``tls-cluster``, ``tls-replication``), so
    the node announces its TLS port to the others. Bus peers always
    present a client certificate (whatever ``tls-auth-clients`` says), and
    the test server certificate is for serverAuth only: outgoing links use
    the test client certificate (``tls-client-cert-file``).
    """

    def __init__(self, node_timeout_ms: int, extra_args: Sequence[str] = (),
                 tls: Optional[TestCertificates] = None) -> None:
        super().__init__(extra_args=extra_args, tls=tls)
        self._node_timeout_ms = node_timeout_ms
        self._bus_port: Optional[int] = None
        self._node_id: Optional[str] = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as redis-cli and cluster URLs name a node."""
        return f"{_HOST}:{self.port}"

    @property
    def tls_address(self) -> str:
        """``127.0.0.1:TLS_PORT`` (only with ``tls=``)."""
        return f"{_HOST}:{self.tls_port}"

    @property
    def node_id(self) -> str:
        """The node's 40-character cluster id (CLUSTER MYID; kept across
        restarts, in its nodes-<port>.conf)."""
        if self._node_id is None:
            reply = self.command("CLUSTER", "MYID")
            self._node_id = reply.decode() if isinstance(reply, bytes) else str(reply)
        return self._node_id

    def __repr__(self) -> str:
        state = "running" if self.pid is not None else "down"
        return f"<ClusterNode {_HOST}:{self._port} {state}>"

    def _argv(self) -> list[str]:
        assert self._port is not None
        if self._bus_port is None:
            # Redis's default bus port is port + 10000, past 65535 for most
            # of the kernel's ephemeral ports: pick a free one instead.
            self._bus_port = _free_port()
            while self._bus_port == self._port:
                self._bus_port = _free_port()
        cluster_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{self._port}.conf",
            "--cluster-node-timeout", str(self._node_timeout_ms),
            "--cluster-port", str(self._bus_port),
        ]
        if self._tls is not None:
            cluster_args += [
                "--tls-cluster", "yes",
                "--tls-replication", "yes",
                "--tls-client-cert-file", self._tls.client_cert,
                "--tls-client-key-file", self._tls.client_key,
            ]
        argv = super()._argv()
        # Before the caller's extra_args, which come last so they win.
        at = len(argv) - len(self._extra_args)
        return argv[:at] + cluster_args + argv[at:]

    def _launch(self) -> None:
        try:
            super()._launch()
        except RuntimeError as exc:
            if "Address already in use" in str(exc):
                self._bus_port = None  # start() retries with fresh ports
            raise


@dataclass(frozen=True)
class _NodeView:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset
    master_id: Optional[str]
    slots: tuple  # (first, last) ranges owned
    open_slots: bool  # a slot of it is migrating or importing

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def _parse_cluster_nodes(text: str) -> list[_NodeView]:
    views = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        # ip:port@cport[,hostname]
        port = int(fields[1].split("@", 1)[0].rsplit(":", 1)[1])
        slots = []
        open_slots = False
        for item in fields[8:]:
            if item.startswith("["):
                open_slots = True  # "[slot->-id]" / "[slot-<-id]": a migration under way
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        views.append(_NodeView(
            node_id=fields[0], port=port, flags=frozenset(fields[2].split(",")),
            master_id=None if fields[3] == "-" else fields[3], slots=tuple(sorted(slots)),
            open_slots=open_slots))
    return views


def _info_fields(text: Union[str, bytes]) -> dict[str, str]:
    if isinstance(text, bytes):
        text = text.decode()
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[name.strip()] = value.strip()
    return fields


class RedisCluster:
    """A throwaway Redis Cluster on 127.0.0.1: ``masters`` masters with
    ``replicas`` replicas each, every node a :class:`ClusterNode` on free
    ports in a temp dir of its own, joined by ``redis-cli --cluster create``.

    :meth:`start` returns once every running node says ``cluster_state:ok``,
    all of them agree on who owns every slot, each one knows every other
    running node as healthy, and every replica's link to its master is up
    (a replica that is not synced cannot be promoted). :meth:`stop` kills
    every node and removes their temp dirs; a failed start stops what it
    started. Use as a context manager::

        with RedisCluster(masters=3, replicas=1) as cluster:
            url = cluster.url           # redis-cluster://127.0.0.1:p1,...
            cluster.kill_master(0)      # SIGKILL; returns once a replica took over

    Args:
        masters: how many masters (the slots are split evenly among them).
        replicas: replicas per master (0: none).
        node_timeout_ms: ``cluster-node-timeout``; a failed master's
            replica takes over about this long (plus up to ~1 s) after it
            stopped answering. Raise it for a test that stops a node
            without wanting a failover.
        extra_args: more ``redis-server`` arguments for every node, after
            the cluster's own (so they win), e.g.
            ``["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]``.
        wait_timeout: seconds each wait (start, reshard, failover) may take
            before it raises RuntimeError saying what it last saw.
        tls: TLS on every node (see :class:`ClusterNode`): the nodes talk
            TLS among themselves and announce their TLS ports; clients use
            :attr:`tls_url`. redis-cli (create, reshard, add-node) goes
            over TLS, as it must: with ``tls-cluster`` a node's MIGRATE
            connects with TLS to the port redis-cli names. The fixture's
            own queries (:meth:`ClusterNode.command`, CLUSTER NODES) use
            the plain ports, where the nodes name each other's plain ports.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        extra_args: Sequence[str] = (),
        wait_timeout: float = _CLUSTER_START_TIMEOUT,
        tls: Optional[TestCertificates] = None,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs masters >= 1 and replicas >= 0")
        self._masters = masters
        self._replicas = replicas
        self._node_timeout_ms = node_timeout_ms
        # Defaults a test cluster wants, before the caller's own:
        # - validity factor 0: a replica may always be promoted, however long
        #   its link was down (a busy 2-core test machine delays pings);
        # - no limit on the replicas' output buffers: tests write hundreds of
        #   MiB in bursts, and a replica dropped for a full resync would not
        #   be ready to take over when a test kills its master.
        # - no 5 s wait before a diskless full sync for more replicas to
        #   come: each master has its own, and start() waits for them.
        self._extra_args = [
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync-delay", "0",
            "--client-output-buffer-limit", "replica 0 0 0",
            *extra_args,
        ]
        self._wait_timeout = wait_timeout
        self._tls = tls
        self._nodes: list[ClusterNode] = []
        self._stopped: set[int] = set()  # ports of SIGSTOPped nodes

    # -- properties ---------------------------------------------------------

    @property
    def nodes(self) -> list[ClusterNode]:
        """Every node, masters and replicas, in start order (which roles
        they hold now: :meth:`masters`, :meth:`replicas_of`)."""
        return list(self._nodes)

    @property
    def node_timeout(self) -> float:
        """``cluster-node-timeout`` in seconds."""
        return self._node_timeout_ms / 1000

    @property
    def url(self) -> str:
        """``redis-cluster://127.0.0.1:p1,127.0.0.1:p2,...``: every node as
        a seed, in start order."""
        if not self._nodes:
            raise RuntimeError("RedisCluster is not started")
        return "redis-cluster://" + ",".join(n.address for n in self._nodes)

    @property
    def tls_url(self) -> str:
        """``rediss-cluster://127.0.0.1:t1,127.0.0.1:t2,...``: every node's
        TLS port as a seed, in start order (only with ``tls=``; no CA file
        in it)."""
        if self._tls is None:
            raise RuntimeError("RedisCluster was made without tls=")
        if not self._nodes:
            raise RuntimeError("RedisCluster is not started")
        return "rediss-cluster://" + ",".join(n.tls_address for n in self._nodes)

    @property
    def tls(self) -> Optional[TestCertificates]:
        """The certificates given as ``tls=``, or None."""
        return self._tls

    def live_nodes(self) -> list[ClusterNode]:
        """The nodes that run and are not stopped (SIGSTOP)."""
        return [n for n in self._nodes if n.pid is not None and n.port not in self._stopped]

    # -- life cycle -------------------------------------------------------------

    def start(self) -> "RedisCluster":
        """Start the nodes, join them into a cluster and wait until it is
        settled (see the class). Returns ``self``.

        Raises:
            RuntimeError: a node did not start, ``redis-cli --cluster
                create`` failed, or the cluster did not settle in time;
                every node started is stopped first.
        """
        if self._nodes:
            raise RuntimeError("RedisCluster is already started")
        try:
            for _ in range(self._masters * (1 + self._replicas)):
                node = ClusterNode(self._node_timeout_ms, self._extra_args, tls=self._tls)
                self._nodes.append(node)
                node.start()
            if self._masters >= 3:
                self._redis_cli(
                    "--cluster", "create", *(self._cli_address(n) for n in self._nodes),
                    "--cluster-replicas", str(self._replicas), "--cluster-yes",
                    timeout=self._wait_timeout)
            else:
                self._create_by_hand()
            self.wait_settled("the new cluster")
            return self
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every node (SIGCONT first for a stopped one) and remove the
        temp dirs. Nothing is persisted, so SIGKILL loses nothing, and it
        spares a SIGTERMed master waiting for its replicas to catch up."""
        for node in self._nodes:
            if node.pid is not None and node.port in self._stopped:
                os.kill(node.pid, signal.SIGCONT)
            node.kill()
            node.stop()
        self._nodes = []
        self._stopped = set()

    def __enter__(self) -> "RedisCluster":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # -- topology ----------------------------------------------------------------

    def node_by_port(self, port: int) -> ClusterNode:
        for node in self._nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node of this cluster listens on port {port}")

    def _views(self, asked: Optional[ClusterNode] = None) -> list[_NodeView]:
        """CLUSTER NODES as ``asked`` (default: the first live node) sees it."""
        if asked is None:
            live = self.live_nodes()
            if not live:
                raise RuntimeError("no node of the cluster is running")
            asked = live[0]
        reply = asked.command("CLUSTER", "NODES")
        return _parse_cluster_nodes(reply.decode() if isinstance(reply, bytes) else reply)

    def masters(self) -> list[ClusterNode]:
        """The masters that own slots and are not marked failed, ordered by
        their lowest slot (CLUSTER NODES, as a live node sees it)."""
        views = [v for v in self._views() if v.is_master and v.slots and not v.failing]
        views.sort(key=lambda v: v.slots[0][0])
        return [self.node_by_port(v.port) for v in views]

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        """The nodes replicating ``master`` (failed ones included)."""
        master_id = master.node_id
        return [self.node_by_port(v.port) for v in self._views()
                if not v.is_master and v.master_id == master_id]

    def slot_owners(self, asked: Optional[ClusterNode] = None) -> dict[int, int]:
        """Slot -> port of the master owning it, as ``asked`` sees it."""
        owners = {}
        for view in self._views(asked):
            if view.is_master:
                for first, last in view.slots:
                    for slot in range(first, last + 1):
                        owners[slot] = view.port
        return owners

    def slots_of(self, master: ClusterNode) -> list[int]:
        """The slots ``master`` owns, ascending."""
        return sorted(s for s, port in self.slot_owners().items() if port == master.port)

    def node_for_slot(self, slot: int) -> ClusterNode:
        port = self.slot_owners().get(slot)
        if port is None:
            raise RuntimeError(f"no master owns slot {slot}")
        return self.node_by_port(port)

    def node_for_key(self, key: Union[str, bytes]) -> ClusterNode:
        """The master that owns ``key``'s slot (see :func:`keyslot`)."""
        return self.node_for_slot(keyslot(key))

    def dbsize(self, node: ClusterNode) -> int:
        """How many keys ``node`` holds (DBSIZE)."""
        reply = node.command("DBSIZE")
        assert isinstance(reply, int)
        return reply

    def keys_on(self, node: ClusterNode, pattern: str = "*") -> list[bytes]:
        """The keys on ``node`` matching ``pattern`` (SCAN, so a big node
        is not blocked)."""
        keys: list[bytes] = []
        cursor = b"0"
        while True:
            reply = node.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            assert isinstance(reply, list)
            cursor, batch = reply
            keys += batch
            if cursor == b"0":
                return keys

    def error_replies(self) -> dict[str, int]:
        """Error replies the live nodes sent, by their first word, summed
        (INFO errorstats): "MOVED" and "ASK" count the redirections clients
        were given, "TRYAGAIN", "CLUSTERDOWN", "OOM", ... the rest."""
        totals: dict[str, int] = {}
        for node in self.live_nodes():
            for name, value in _info_fields(node.command("INFO", "errorstats")).items():
                if name.startswith("errorstat_"):
                    count = int(value.split(",")[0].split("=")[1])
                    kind = name[len("errorstat_"):]
                    totals[kind] = totals.get(kind, 0) + count
        return totals

    # -- waiting ---------------------------------------------------------------------

    def _unsettled(self) -> Optional[str]:
        """None when the cluster is settled, else what is not yet."""
        live = self.live_nodes()
        if not live:
            return "no node is running"
        live_ports = {n.port for n in live}
        owners_seen = None
        roles_seen = None
        for node in live:
            try:
                state = _info_fields(node.command("CLUSTER", "INFO")).get("cluster_state")
                if state != "ok":
                    return f"{node.address} says cluster_state:{state}"
                views = self._views(node)
                owners = self.slot_owners(node)
                if len(owners) != CLUSTER_SLOTS:
                    return f"{node.address} sees {CLUSTER_SLOTS - len(owners)} slots unowned"
                if owners_seen is None:
                    owners_seen = owners
                elif owners != owners_seen:
                    moved = sum(1 for s in owners if owners[s] != owners_seen[s])
                    return f"{node.address} disagrees with {live[0].address} on {moved} slots"
                # Who follows whom, as every node sees it: a failover is
                # over only once the news reached them all.
                roles = {(v.port, v.is_master, v.master_id) for v in views
                         if v.port in live_ports}
                if roles_seen is None:
                    roles_seen = roles
                elif roles != roles_seen:
                    return f"{node.address} disagrees with {live[0].address} on the roles"
                healthy = {v.port for v in views if not v.failing}
                if not live_ports <= healthy:
                    return (f"{node.address} does not yet see "
                            f"{sorted(live_ports - healthy)} as healthy")
                me = next(v for v in views if "myself" in v.flags)
                if me.open_slots:
                    return f"{node.address} has a slot still migrating or importing"
                if not me.is_master:
                    link = _info_fields(node.command("INFO", "replication")).get(
                        "master_link_status")
                    if link != "up":
                        return f"replica {node.address}'s link to its master is {link}"
            except (OSError, RespError) as exc:
                return f"{node.address} did not answer: {exc}"
        return None

    def wait_settled(self, what: str = "the cluster", timeout: Optional[float] = None) -> float:
        """Wait until the cluster is settled (see the class); returns the
        seconds waited.

        Raises:
            RuntimeError: naming ``what`` and the last thing not settled.
        """
        return self._wait(self._unsettled, what, timeout)

    def _wait(self, problem, what: str, timeout: Optional[float] = None) -> float:
        """Poll ``problem()`` (None when done, else a description) until it
        is None; returns the seconds taken."""
        begun = time.monotonic()
        deadline = begun + (self._wait_timeout if timeout is None else timeout)
        while True:
            last = problem()
            if last is None:
                return time.monotonic() - begun
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} did not settle within {deadline - begun:g} s: {last}")
            time.sleep(_POLL_INTERVAL)

    # -- changing it -------------------------------------------------------------------

    def reshard(self, src: ClusterNode, dst: ClusterNode, slots: int,
                pipeline: int = 10, timeout_ms: int = 60000) -> list[int]:
        """Move ``slots`` slots (the lowest ``src`` owns) from ``src`` to
        ``dst`` with ``redis-cli --cluster reshard``, key by key with
        MIGRATE, as an operator would: while a slot moves its keys are on
        both sides and clients get ASK; once it moved, MOVED. Returns the
        slots moved once every node agrees on their new owner."""
        before = set(self.slots_of(src))
        self._redis_cli(
            "--cluster", "reshard", self._cli_address(src),
            "--cluster-from", src.node_id, "--cluster-to", dst.node_id,
            "--cluster-slots", str(slots), "--cluster-yes",
            "--cluster-pipeline", str(pipeline), "--cluster-timeout", str(timeout_ms),
            timeout=self._wait_timeout + slots * 0.1)
        self.wait_settled(f"resharding {slots} slots from {src.address} to {dst.address}")
        moved = sorted(before - set(self.slots_of(src)))
        if len(moved) != slots:
            raise RuntimeError(f"reshard moved {len(moved)} slots, not {slots}")
        return moved

    def kill_master(self, i: int) -> tuple[ClusterNode, ClusterNode, float]:
        """SIGKILL ``masters()[i]`` and wait until one of its replicas owns
        its slots and the cluster is settled again (the dead node marked
        failed). Returns (the killed node, the promoted one, seconds from
        the kill until settled). :meth:`restart_node` brings the killed
        one back (as a replica)."""
        victim = self.masters()[i]
        replicas = self.replicas_of(victim)
        if not replicas:
            raise RuntimeError(f"{victim.address} has no replica to take over")
        victim_slots = set(self.slots_of(victim))
        killed_at = time.monotonic()
        victim.kill()
        replica_ports = {r.port for r in replicas}

        def problem() -> Optional[str]:
            try:
                for node in self.live_nodes():
                    owners = self.slot_owners(node)
                    new_owners = {owners.get(s) for s in victim_slots}
                    if len(new_owners) != 1 or not new_owners <= replica_ports:
                        return f"{node.address} does not see a replica owning the slots yet"
            except (OSError, RespError) as exc:
                return str(exc)
            return self._unsettled()

        self._wait(problem, f"failover of killed master {victim.address}")
        promoted = self.node_for_slot(min(victim_slots))
        return victim, promoted, time.monotonic() - killed_at

    def manual_failover(self, replica: ClusterNode) -> float:
        """CLUSTER FAILOVER on ``replica`` (no data loss: its master stops
        writes until the replica caught up) and wait until it is the master
        and the cluster settled. Returns the seconds it took."""
        slots = set(self.slots_of(self._master_of(replica)))
        begun = time.monotonic()
        replica.command("CLUSTER", "FAILOVER")

        def problem() -> Optional[str]:
            try:
                for node in self.live_nodes():
                    owners = self.slot_owners(node)
                    if {owners.get(s) for s in slots} != {replica.port}:
                        return f"{node.address} does not see {replica.address} as master yet"
            except (OSError, RespError) as exc:
                return str(exc)
            return self._unsettled()

        self._wait(problem, f"manual failover to {replica.address}")
        return time.monotonic() - begun

    def _master_of(self, replica: ClusterNode) -> ClusterNode:
        me = next(v for v in self._views() if v.port == replica.port)
        if me.is_master or me.master_id is None:
            raise RuntimeError(f"{replica.address} is not a replica")
        return next(self.node_by_port(v.port) for v in self._views() if v.node_id == me.master_id)

    def restart_node(self, node: ClusterNode) -> float:
        """Start a killed node again (same port and node id, no data) and
        wait until the cluster settled with it; returns the seconds taken."""
        begun = time.monotonic()
        node.restart()
        self.wait_settled(f"restarted node {node.address}")
        return time.monotonic() - begun

    def add_master(self) -> ClusterNode:
        """Start one more node and join it as a master with no slots
        (``redis-cli --cluster add-node``), as an operator growing the
        cluster does before resharding slots to it; returns it once every
        node knows it."""
        node = ClusterNode(self._node_timeout_ms, self._extra_args, tls=self._tls)
        self._nodes.append(node)
        node.start()
        self._redis_cli("--cluster", "add-node", self._cli_address(node),
                        self._cli_address(self.masters()[0]),
                        timeout=self._wait_timeout)
        self.wait_settled(f"the new master {node.address}")
        return node

    def remove_node(self, node: ClusterNode) -> None:
        """Take a node that serves no slots out of the cluster
        (``redis-cli --cluster del-node``, which also shuts it down)."""
        if self.slots_of(node):
            raise RuntimeError(f"{node.address} still serves slots: reshard them away first")
        self._redis_cli("--cluster", "del-node", self._cli_address(self.masters()[0]), node.node_id,
                        timeout=self._wait_timeout)
        node.kill()
        node.stop()
        self._nodes.remove(node)
        self.wait_settled(f"the cluster without {node.address}")

    def stop_node(self, node: ClusterNode) -> None:
        """SIGSTOP ``node``: it stays connected but answers nothing, like a
        stalled host. Past ``node_timeout`` the others mark it failed (and
        promote its replica, if it is a master with one)."""
        if node.pid is None:
            raise RuntimeError(f"{node.address} is not running")
        os.kill(node.pid, signal.SIGSTOP)
        self._stopped.add(node.port)

    def cont_node(self, node: ClusterNode, wait: bool = True) -> None:
        """SIGCONT a node :meth:`stop_node` stopped; with ``wait``, wait
        until the cluster settled again."""
        if node.pid is not None:
            os.kill(node.pid, signal.SIGCONT)
        self._stopped.discard(node.port)
        if wait:
            self.wait_settled(f"continued node {node.address}")

    # -- internals ------------------------------------------------------------------------

    def _create_by_hand(self) -> None:
        """What ``redis-cli --cluster create`` does, for the 1- and 2-master
        clusters it refuses to make (the benchmark compares 1, 2 and 3
        shards): even slot ranges, distinct config epochs, MEET, then each
        replica told whom to follow once it knows that node."""
        masters = self._nodes[:self._masters]
        for i, node in enumerate(masters):
            first = i * CLUSTER_SLOTS // self._masters
            last = (i + 1) * CLUSTER_SLOTS // self._masters - 1
            node.command("CLUSTER", "ADDSLOTSRANGE", first, last)
            node.command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for node in self._nodes[1:]:
            # The client port a node is met by is replaced by the one it
            # announces (its TLS port under tls-cluster) at its first PING.
            self._nodes[0].command("CLUSTER", "MEET", _HOST, node.port, node._bus_port)

        def strangers() -> Optional[str]:
            for node in self._nodes:
                known = _info_fields(node.command("CLUSTER", "INFO")).get("cluster_known_nodes")
                if known != str(len(self._nodes)):
                    return f"{node.address} knows {known} of {len(self._nodes)} nodes"
            return None

        self._wait(strangers, "the nodes meeting")
        replicas = self._nodes[self._masters:]
        for i, replica in enumerate(replicas):
            replica.command("CLUSTER", "REPLICATE", masters[i % self._masters].node_id)

    def _cli_address(self, node: ClusterNode) -> str:
        """How redis-cli names ``node``: its TLS address on a TLS cluster
        (redis-cli then connects with TLS, and tells the nodes TLS ports:
        with tls-cluster, MIGRATE to a plain port would fail)."""
        return node.tls_address if self._tls is not None else node.address

    def _redis_cli(self, *args: str, timeout: float) -> str:
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        if self._tls is not None:
            args = ("--tls", "--cacert", self._tls.ca_cert, "--cert", self._tls.client_cert,
                    "--key", self._tls.client_key, *args)
        try:
            proc = subprocess.run([cli, *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"redis-cli {' '.join(args[:2])} did not finish within {timeout:g} s; "
                f"output:\n{exc.stdout or ''}") from None
        # redis-cli --cluster reports some failures ("[ERR] ...") with exit 0.
        if proc.returncode != 0 or "[ERR]" in proc.stdout:
            raise RuntimeError(
                f"redis-cli {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-4000:]}{proc.stderr[-2000:]}")
        return proc.stdout
