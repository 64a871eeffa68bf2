"""A small blocking RESP2 connection for the operator tool
(``python -m lmcache_redis``), written from the RESP spec.

The package has no runtime dependencies, and the tool sends a few commands
at a time, one after the other, so one socket (TCP, TLS through the standard
``ssl`` module, or a unix socket) with AUTH and SELECT is all it needs. It
takes the options ``lmcache_redis._url.parse_url`` returns, so it connects
to whatever ``RedisClient.from_url`` does; the striping options
(``stripes``, ``stripe_size``, ``connections``) mean nothing here.
"""

from __future__ import annotations

import socket
import ssl
from typing import Optional, Union

from lmcache_redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    ProtocolError,
    ResponseError,
    TimeoutError,
)

Reply = Union[None, int, str, bytes, list, ResponseError]

_DEFAULT_TIMEOUT = 10.0  # RedisClient's defaults: timeout, and connect_timeout
_MAX_CONNECT_TIMEOUT = 5.0  # = min(timeout, 5)
_SSL_ONLY = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_server_name")


def _encode(args: tuple) -> bytes:
    """A command as a RESP array of bulk strings; str as UTF-8, int as text."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class AdminConnection:
    """One connection. ``command(*args)`` sends a command and returns its
    reply: simple strings as ``str``, bulk strings as ``bytes``, integers as
    ``int``, nulls as ``None``, arrays as ``list`` (an error inside an array
    is left there as a ``ResponseError``). A top-level error reply raises
    ``ResponseError``; a broken connection ``ConnectionError``, a silent
    server ``TimeoutError`` (lmcache_redis.exceptions, as the client's)."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self.where = where  # for messages; never includes the password

    @classmethod
    def connect(cls, options: dict) -> "AdminConnection":
        """Connects, authenticates and selects the database, from
        ``parse_url``'s options. Raises ValueError for options that
        RedisClient would refuse too, and for a Redis Cluster (cluster
        URLs), which this tool does not handle yet: it would scan one node,
        and take the parts a cluster stores under their own keys for broken
        values."""
        if options.get("cluster"):
            raise ValueError("the operator tool does not handle a Redis Cluster yet "
                             "(redis-cluster:// and rediss-cluster:// URLs): it reads one "
                             "server, and a cluster stores a value's parts under several keys")
        timeout = float(options.get("timeout", _DEFAULT_TIMEOUT))
        connect_timeout = options.get("connect_timeout")
        if connect_timeout is None:
            connect_timeout = min(timeout, _MAX_CONNECT_TIMEOUT)
        use_ssl = options.get("ssl", False)
        given = [name for name in _SSL_ONLY if options.get(name) is not None]
        if given and not use_ssl:
            raise ValueError(f"{', '.join(given)} given without a rediss:// URL")
        if options.get("ssl_keyfile") and not options.get("ssl_certfile"):
            raise ValueError("ssl_keyfile needs ssl_certfile (the certificate it belongs to)")

        path = options.get("unix_socket_path")
        host, port = options.get("host", "localhost"), options.get("port", 6379)
        where = path if path is not None else f"{host}:{port}"
        try:
            if path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(connect_timeout)
                try:
                    sock.connect(path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((host, port), timeout=connect_timeout)
            if use_ssl:
                sock = _wrap_tls(sock, host, options)
        except socket.timeout:
            raise TimeoutError(f"{where}: no connection within {connect_timeout:g} s") from None
        except ssl.SSLError as exc:
            raise ConnectionError(f"{where}: TLS failed: {_reason(exc)}") from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {where}: {_reason(exc)}") from None

        conn = cls(sock, where)
        try:
            conn._handshake(options)
            conn._refuse_a_cluster_node()
        except BaseException:
            conn.close()
            raise
        sock.settimeout(timeout)
        return conn

    def _handshake(self, options: dict) -> None:
        # As the C core: AUTH only with a password (username optional), then
        # SELECT, then PING, which reports NOAUTH when a password is needed.
        password = options.get("password")
        if password is not None:
            username = options.get("username")
            args = ("AUTH", username, password) if username is not None else ("AUTH", password)
            try:
                self.command(*args)
            except ResponseError as exc:
                raise AuthenticationError(f"{self.where}: authentication failed: {exc}") from None
        db = int(options.get("db", 0))
        try:
            if db:
                self.command("SELECT", db)
            self.command("PING")
        except ResponseError as exc:
            if str(exc).startswith("NOAUTH"):
                raise AuthenticationError(f"{self.where}: the server wants a password "
                                          f"({exc})") from None
            raise

    def _refuse_a_cluster_node(self) -> None:
        """ValueError when the server is a node of a Redis Cluster (INFO
        says ``cluster_enabled:1``), reached by a plain URL: the tool would
        see only that node's keys, and take the part keys (``K#lmr:<id>{tag}``) a
        cluster stores a value's parts under, and keys whose other parts
        live on other nodes, for broken values, which ``gc --yes`` would
        delete. A server that refuses INFO (an ACL without it) is taken for
        a single server, as before this check."""
        try:
            info = self.command("INFO", "cluster")
        except ResponseError:
            return
        if isinstance(info, bytes):
            info = info.decode("utf-8", "replace")
        if isinstance(info, str) and any(line.strip() == "cluster_enabled:1"
                                          for line in info.splitlines()):
            raise ValueError(
                f"{self.where} is a node of a Redis Cluster (INFO: cluster_enabled:1): the "
                "operator tool does not handle a Redis Cluster yet. It reads one server, and "
                "a cluster stores a value's parts under several keys on several nodes, which "
                "it would take for broken values (and gc --yes would delete)")

    def command(self, *args: Union[str, bytes, int]) -> Reply:
        """Sends one command; its reply (an error reply raised)."""
        reply = self.pipeline(args)[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def pipeline(self, *commands: tuple) -> list:
        """Sends the commands at once and returns their replies in order,
        error replies left in the list as ResponseError: one round trip
        for the few commands that look at one key."""
        try:
            self._sock.sendall(b"".join(_encode(args) for args in commands))
            return [self._read() for _ in commands]
        except socket.timeout:
            raise TimeoutError(f"{self.where}: no reply to {commands[0][0]} in time") from None
        except ConnectionError:
            raise
        except OSError as exc:
            raise ConnectionError(f"{self.where}: connection lost: {_reason(exc)}") from None

    def _read(self) -> Reply:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"{self.where}: connection closed by the server")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode("utf-8", "replace")
        if kind == b"-":
            return ResponseError(body.decode("utf-8", "replace"))
        try:
            n = int(body)
        except ValueError:
            raise ProtocolError(f"{self.where}: not a RESP2 reply: {line[:64]!r}") from None
        if kind == b":":
            return n
        if kind == b"$":
            if n < 0:
                return None
            data = self._file.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError(f"{self.where}: connection closed by the server")
            return data[:-2]
        if kind == b"*":
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ProtocolError(f"{self.where}: not a RESP2 reply: {line[:64]!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> "AdminConnection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _wrap_tls(sock: socket.socket, host: str, options: dict) -> ssl.SSLSocket:
    """TLS 1.2+ as RedisClient does it: the server verified against
    ssl_ca_certs (default: the system's store) and its name (host, or
    ssl_server_name) unless ssl_verify is false."""
    ctx = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not options.get("ssl_verify", True):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    certfile: Optional[str] = options.get("ssl_certfile")
    if certfile:
        ctx.load_cert_chain(certfile, options.get("ssl_keyfile"))
    try:
        return ctx.wrap_socket(sock, server_hostname=options.get("ssl_server_name") or host)
    except BaseException:
        sock.close()
        raise


def _reason(exc: OSError) -> str:
    """An OSError in a few words, without Python's "[Errno N]" prefix."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    text = exc.strerror or str(exc)
    return f"{text}: {exc.filename}" if exc.filename else text
