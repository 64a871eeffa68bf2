"""A small RESP2 server whose replies a test controls: fault injection for
the client's reliability tests (tests/test_faults.py).

    with FaultServer() as server:
        client = RedisClient(server.host, server.port, timeout=1.0)
        server.mode = "stall"      # EXISTS/GET/SET/... now go unanswered
        ...
        server.mode = "healthy"    # a tiny Redis again, on the same port

Loopback only. One thread per connection, at most ``max_connections`` at
once (more are closed on accept). Every socket wait is short, so ``stop()``
(called by ``with``, and by a timer ``lifetime`` seconds after ``start()``)
ends every thread within a fraction of a second. All threads are daemons.

Requests are parsed properly: arrays of bulk strings, several per read,
split anywhere; large arguments that a fault mode does not need (a SET's
value) are read and dropped piece by piece, never held whole.

The handshake (PING, AUTH, SELECT) and CONFIG GET are always answered as
Redis would (AUTH accepts any password; SELECT any db in 0..15, all sharing
one store; CONFIG GET reports ``proto_max_bulk_len``, or is refused with an
error when that is None). The data commands EXISTS, STRLEN, GETRANGE, GET,
SET, PSETEX and DEL are answered per ``mode``, which may be switched at any
time; each command uses the mode in force when its name was read. A fault
hits only the commands named in ``fault_commands`` (default: all), where a
GETRANGE is ``GETRANGE_HEAD`` when the command before it on its connection
was STRLEN of the same key (the first round of lmcache_redis's read:
STRLEN, GETRANGE 0 F), else ``GETRANGE_PART`` (a part of an encoded
value); the other data commands get the reply a healthy server holding
the pretend value (below) would send.

healthy             a tiny Redis: strings in a dict; EXISTS, STRLEN,
                    GETRANGE, GET, SET (with EX/PX), PSETEX and DEL behave
                    as Redis's do.
close_header        the first bytes of the reply's header line, then close.
close_payload       a bulk reply's header and ``cut`` bytes of its payload
                    (default: half), then close. Replies without a payload:
                    as close_header.
stall               no reply, ever, on that connection (it keeps reading,
                    so it sees the client hang up).
blackhole           stops reading and replying on that connection as soon
                    as the command's name and key are read: a large SET
                    fills the socket buffers and its sender blocks. The
                    connection is closed when the mode changes.
drip                the whole reply, one byte every ``drip_interval`` s.
too_big             replies as if the value were ``big_len`` bytes long.
huge                bulk replies (GETRANGE, GET): ``$<proto_max_bulk_len
                    + 1>`` (512 MiB + 1 by default, or when
                    proto_max_bulk_len is None), then nothing.
negative            bulk replies: ``line`` (default ``$-2``), then nothing.
nan                 bulk replies: ``line`` (default ``$abc``), then nothing.
error               ``-<error_text>`` to every data command.
wrong_type_status   ``+OK`` (SET, PSETEX: the bulk string ``OK``).
wrong_type_integer  ``:1`` (EXISTS, STRLEN, DEL: the bulk string ``1``).
extra               a valid "nothing there" reply (:0 to EXISTS, STRLEN
                    and DEL, $0 to GETRANGE, $-1 to GET, +OK to SET and
                    PSETEX) followed, in the same write, by ``extra_bytes``
                    (default: a bulk reply, ``$6 POISON``).
bad_trailer         bulk replies: header and payload, then ``XY`` instead
                    of CRLF, then nothing.
bad_header          the pretend value with format version 3 in every
                    header (headers the client must not accept); a
                    verbatim pretend value has none, and reads whole.
other_write         the pretend value as another write left it: a write id
                    new for every command (the value replaced between two
                    reads of it).

In every mode but healthy, a key pretends to hold a value of ``value_len``
bytes (``big_len`` in too_big, for the commands the fault hits), whatever
the store holds: ``stripes`` parts of lmcache_redis's stored format 2
(header, part, header, part, ..., every header with ``write_id``), or the
value verbatim when ``stripes`` is 0; with ``stripes`` None (the default)
in the form of the value the store holds under the key (its part count when
it is encoded, else verbatim, also when the key is absent). The value's
bytes are a fixed pattern, so a client really places payload bytes in its
buffer before the fault hits. SET and PSETEX reply +OK (the store is left
as it was), EXISTS and DEL count every key, STRLEN is the pretend string's
length. (The replies of extra, huge, negative and nan to the commands they
hit do not come from the pretend value.)
"""

from __future__ import annotations

import collections
import fnmatch
import re
import socket
import threading
import time
from typing import Optional, Union

from selfcheck import HEADER, MAGIC, encode

__all__ = ["FaultServer", "MODES", "DATA_COMMANDS", "FAULT_TARGETS"]

MODES = (
    "healthy", "close_header", "close_payload", "stall", "blackhole", "drip",
    "too_big", "huge", "negative", "nan", "error", "wrong_type_status",
    "wrong_type_integer", "extra", "bad_trailer", "bad_header", "other_write",
)
DATA_COMMANDS = frozenset({"EXISTS", "STRLEN", "GETRANGE", "GET", "SET", "PSETEX", "DEL"})
# What fault_commands may name: the data commands, GETRANGE split in two.
FAULT_TARGETS = frozenset(DATA_COMMANDS - {"GETRANGE"} | {"GETRANGE_HEAD", "GETRANGE_PART"})

_HOST = "127.0.0.1"
_POLL = 0.05                   # longest blocking wait before the stop flag is checked
_CHUNK = 256 * 1024            # recv size
_MAX_LINE = 64 * 1024          # longest request header line
_MAX_ARGS = 1024
_MAX_BULK = 1 << 30            # longest request argument accepted at all
_KEEP_SMALL = 64 * 1024        # arguments up to this are always kept
_MAX_KEPT = 128 << 20          # longest value the healthy store keeps
_DEFAULT_MAX_BULK = 512 * 1024 * 1024   # Redis's default proto-max-bulk-len
_MAX_PARTS = 256
_INT = re.compile(rb"-?\d+")
_PATTERN = bytes(range(251))   # a prime length: parts don't line up with it
_MISS = {"EXISTS": b":0\r\n", "STRLEN": b":0\r\n", "GETRANGE": b"$0\r\n\r\n",
         "GET": b"$-1\r\n", "SET": b"+OK\r\n", "PSETEX": b"+OK\r\n", "DEL": b":0\r\n"}
_BULK_COMMANDS = ("GETRANGE", "GET")
_INTEGER_COMMANDS = ("EXISTS", "STRLEN", "DEL")
_SET_COMMANDS = ("SET", "PSETEX")


class _Stop(Exception):
    """The server is stopping."""


class _BadRequest(Exception):
    """Not a RESP request."""


class _Blackhole(Exception):
    """Stop reading: the command's name was read in blackhole mode."""


class Discarded:
    """Stands for an argument that was read and dropped; keeps its length."""

    def __init__(self, length: int) -> None:
        self.length = length


Arg = Union[bytes, Discarded]


def _pattern(n: int, offset: int = 0) -> bytes:
    reps = (offset + n) // len(_PATTERN) + 1
    return (_PATTERN * reps)[offset:offset + n]


def stored_parts(stored: Optional[bytes]) -> int:
    """The part count of a stored string in format 2, or 0 (verbatim, broken
    or absent)."""
    if stored is None or len(stored) < HEADER.size or stored[:4] != MAGIC:
        return 0
    magic, version, size, index, count, length, _ = HEADER.unpack_from(stored)
    if (version, size, index) != (2, HEADER.size, 0) or not 1 <= count <= _MAX_PARTS:
        return 0
    return count if len(stored) == length + HEADER.size * count else 0


def _getrange(value: bytes, start: int, end: int) -> bytes:
    """Redis's GETRANGE arithmetic (t_string.c)."""
    n = len(value)
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start += n
    if end < 0:
        end += n
    start, end = max(start, 0), max(end, 0)
    end = min(end, n - 1)
    if n == 0 or start > end:
        return b""
    return value[start:end + 1]


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _int_arg(arg: Arg) -> Optional[int]:
    if isinstance(arg, bytes) and _INT.fullmatch(arg):
        v = int(arg)
        if -(1 << 63) <= v < (1 << 63):
            return v
    return None


class _Reader:
    """Reads requests from one connection, waking often to check `stop`."""

    def __init__(self, sock: socket.socket, server: "FaultServer") -> None:
        self.sock = sock
        self.server = server
        self.buf = bytearray()
        self.pos = 0
        self.previous: tuple[str, Optional[Arg]] = ("", None)  # name and key

    def recv(self) -> bytes:
        while True:
            if self.server._stopping.is_set():
                raise _Stop
            try:
                data = self.sock.recv(_CHUNK)
            except socket.timeout:
                continue
            if not data:
                raise EOFError
            return data

    def _fill(self) -> None:
        data = self.recv()
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos:i])
                self.pos = i + 2
                return line
            if len(self.buf) - self.pos > _MAX_LINE:
                raise _BadRequest("header line too long")
            self._fill()

    def _take(self, n: int, keep: bool) -> bytes:
        """The next n bytes; dropped as they come unless `keep`."""
        parts: list[bytes] = []
        while n > 0:
            if self.pos == len(self.buf):
                self._fill()
            k = min(n, len(self.buf) - self.pos)
            if keep:
                parts.append(bytes(self.buf[self.pos:self.pos + k]))
            self.pos += k
            n -= k
        return b"".join(parts)

    def read_command(self) -> tuple[str, str, list[Arg]]:
        """(mode in force when the name was read, fault target, arguments).
        The target is the command's name, GETRANGE's split as FAULT_TARGETS
        says."""
        line = self._line()
        if line[:1] != b"*" or not _INT.fullmatch(line[1:]):
            raise _BadRequest(f"expected an array header, got {line[:40]!r}")
        argc = int(line[1:])
        if not 1 <= argc <= _MAX_ARGS:
            raise _BadRequest(f"bad argument count {argc}")
        args: list[Arg] = []
        mode = "healthy"
        name = target = ""
        for i in range(argc):
            head = self._line()
            if head[:1] != b"$" or not _INT.fullmatch(head[1:]):
                raise _BadRequest(f"expected a bulk header, got {head[:40]!r}")
            n = int(head[1:])
            if not 0 <= n <= _MAX_BULK:
                raise _BadRequest(f"bad argument length {n}")
            faulty = mode != "healthy" and target in self.server.fault_commands
            keep = i < 2 or n <= _KEEP_SMALL or (not faulty and n <= _MAX_KEPT)
            data = self._take(n, keep)
            if self._take(2, True) != b"\r\n":
                raise _BadRequest("argument not followed by CRLF")
            args.append(data if keep else Discarded(n))
            if i == 0:
                name = target = data.decode("latin-1").upper()
                mode = self.server.mode
            if i == min(1, argc - 1):  # the name and the key are in
                if name == "GETRANGE":
                    after_strlen = argc > 1 and self.previous == ("STRLEN", args[1])
                    target = "GETRANGE_HEAD" if after_strlen else "GETRANGE_PART"
                if mode == "blackhole" and target in self.server.fault_commands:
                    raise _Blackhole
        self.previous = (name, args[1] if argc > 1 else None)
        return mode, target, args


class FaultServer:
    """See the module docstring. ``port=0`` picks a free port. Attributes
    may be changed while the server runs; each command reads them once.

    Attributes:
        mode: one of MODES.
        fault_commands: the FAULT_TARGETS the mode applies to; the other
            data commands get the pretend value's replies, unharmed.
        value_len, big_len: the length of the value keys pretend to hold.
        stripes: its parts (0: verbatim; None: as the stored value's).
        cut: close_payload sends this many payload bytes (None: half).
        drip_interval: seconds between two dripped bytes.
        line: the header line of huge/negative/nan (None: their default).
        error_text: the error mode's reply text.
        extra_bytes: what the extra mode appends to a valid reply.
        handshake_extra: bytes sent right after every PING, AUTH and SELECT
            reply, whatever the mode (default: none).
        proto_max_bulk_len: what CONFIG GET proto-max-bulk-len reports
            (None: CONFIG is refused with an error, as where it is renamed
            or not permitted).
        write_id: the write id in the pretend value's headers.
        commands: how many of each command were received (by name;
            GETRANGE also as GETRANGE_HEAD or GETRANGE_PART).
        accepted: connections accepted.
    """

    def __init__(self, mode: str = "healthy", *, port: int = 0, value_len: int = 65536,
                 lifetime: float = 300.0, max_connections: int = 64) -> None:
        self.mode = mode
        self.fault_commands = set(FAULT_TARGETS)
        self.value_len = value_len
        self.big_len = value_len + 1
        self.stripes: Optional[int] = None
        self.cut: Optional[int] = None
        self.drip_interval = 0.05
        self.line: Optional[bytes] = None
        self.error_text = b"ERR fault injected by the test server"
        self.extra_bytes = _bulk(b"POISON")
        self.handshake_extra = b""
        self.proto_max_bulk_len: Optional[int] = _DEFAULT_MAX_BULK
        self.write_id = 0x5EED_F00D_0000_0001
        self.commands: collections.Counter = collections.Counter()
        self.accepted = 0
        self._port = port
        self._lifetime = lifetime
        self._max_connections = max_connections
        self._store: dict[bytes, tuple[bytes, Optional[float]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._threads: set[threading.Thread] = set()
        self._socks: set[socket.socket] = set()
        self._acceptor: Optional[threading.Thread] = None
        self._timer: Optional[threading.Timer] = None
        self._other_writes = 0

    # -- the mode ---------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; one of {MODES}")
        self._mode = value

    # -- life cycle -------------------------------------------------------

    @property
    def host(self) -> str:
        return _HOST

    @property
    def port(self) -> int:
        assert self._listener is not None, "FaultServer is not started"
        return self._listener.getsockname()[1]

    def start(self) -> "FaultServer":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((_HOST, self._port))
        listener.listen(128)
        listener.settimeout(_POLL)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="fault-server-accept")
        self._acceptor.start()
        self._timer = threading.Timer(self._lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Closes the listener and every connection; joins the threads
        (each within a second). Idempotent, callable from any thread."""
        self._stopping.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        me = threading.current_thread()
        if self._acceptor is not None and self._acceptor is not me:
            self._acceptor.join(1.0)
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            if t is not me:
                t.join(1.0)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def live_connections(self) -> int:
        with self._lock:
            return len(self._socks)

    # -- threads ----------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                full = len(self._socks) >= self._max_connections or self._stopping.is_set()
                if not full:
                    self.accepted += 1
                    self._socks.add(sock)
            if full:
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(_POLL)
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                 name="fault-server-conn")
            with self._lock:
                self._threads.add(t)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        reader = _Reader(sock, self)
        try:
            while True:
                try:
                    mode, target, args = reader.read_command()
                except _Blackhole:
                    self._blackhole()
                    return
                except _BadRequest as e:
                    self._send(sock, b"-ERR Protocol error: %s\r\n" % str(e).encode())
                    return
                name = args[0].decode("latin-1").upper()  # type: ignore[union-attr]
                with self._lock:
                    self.commands[name] += 1
                    if target != name:
                        self.commands[target] += 1
                if name in DATA_COMMANDS and mode != "healthy":
                    faulty = target in self.fault_commands
                    steps = self._fault(mode if faulty else "", name, args)
                else:
                    reply = self._healthy(name, args)
                    if name in ("PING", "AUTH", "SELECT"):
                        reply += self.handshake_extra
                    steps = [("send", reply)]
                for step in steps:
                    kind = step[0]
                    if kind == "send":
                        self._send(sock, step[1])
                    elif kind == "drip":
                        self._drip(sock, step[1])
                    elif kind == "close":
                        return
                    elif kind == "silent":
                        while True:  # read and drop until the client hangs up
                            reader.recv()
        except (_Stop, EOFError, OSError):
            pass
        finally:
            with self._lock:
                self._socks.discard(sock)
                self._threads.discard(threading.current_thread())
            sock.close()

    def _send(self, sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._stopping.is_set():
                raise _Stop
            try:
                k = sock.send(view)
            except socket.timeout:
                continue
            view = view[k:]

    def _drip(self, sock: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            self._send(sock, data[i:i + 1])
            if self._stopping.wait(self.drip_interval):
                raise _Stop

    def _blackhole(self) -> None:
        while self.mode == "blackhole":
            if self._stopping.wait(_POLL):
                return

    # -- replies ----------------------------------------------------------

    def _healthy(self, name: str, args: list[Arg]) -> bytes:
        argc = len(args)
        if any(isinstance(a, Discarded) for a in args):
            return b"-ERR argument too large for the test server\r\n"
        arity = {"GET": argc == 2, "SET": argc >= 3, "PSETEX": argc == 4,
                 "GETRANGE": argc == 4, "STRLEN": argc == 2, "EXISTS": argc >= 2,
                 "DEL": argc >= 2, "PING": argc <= 2, "AUTH": 2 <= argc <= 3,
                 "SELECT": argc == 2, "CONFIG": argc >= 2}
        if name not in arity or (name == "CONFIG" and self.proto_max_bulk_len is None):
            return b"-ERR unknown command '%s'\r\n" % name.encode()[:64]
        if not arity[name]:
            return b"-ERR wrong number of arguments for '%s' command\r\n" % name.lower().encode()
        a: list[bytes] = args  # type: ignore[assignment]
        if name == "PING":
            return b"+PONG\r\n" if argc == 1 else _bulk(a[1])
        if name == "AUTH":
            return b"+OK\r\n"
        if name == "SELECT":
            db = _int_arg(a[1])
            if db is None:
                return b"-ERR value is not an integer or out of range\r\n"
            return b"+OK\r\n" if 0 <= db < 16 else b"-ERR DB index is out of range\r\n"
        if name == "CONFIG":
            if a[1].upper() != b"GET" or argc < 3:
                return b"-ERR unknown subcommand or wrong number of arguments for 'CONFIG'\r\n"
            setting = b"proto-max-bulk-len"
            if any(fnmatch.fnmatchcase(setting.decode(), p.decode("latin-1").lower())
                   for p in a[2:]):
                return b"*2\r\n" + _bulk(setting) + _bulk(b"%d" % self.proto_max_bulk_len)
            return b"*0\r\n"
        with self._lock:
            if name == "GET":
                value = self._lookup(a[1])
                return b"$-1\r\n" if value is None else _bulk(value)
            if name == "GETRANGE":
                start, end = _int_arg(a[2]), _int_arg(a[3])
                if start is None or end is None:
                    return b"-ERR value is not an integer or out of range\r\n"
                return _bulk(_getrange(self._lookup(a[1]) or b"", start, end))
            if name == "STRLEN":
                return b":%d\r\n" % len(self._lookup(a[1]) or b"")
            if name == "EXISTS":
                return b":%d\r\n" % sum(self._lookup(k) is not None for k in a[1:])
            if name == "DEL":
                n = 0
                for k in a[1:]:
                    if self._lookup(k) is not None:
                        del self._store[k]
                        n += 1
                return b":%d\r\n" % n
            if name == "PSETEX":  # PSETEX key ms value
                ms = _int_arg(a[2])
                if ms is None:
                    return b"-ERR value is not an integer or out of range\r\n"
                if ms <= 0:
                    return b"-ERR invalid expire time in 'psetex' command\r\n"
                self._store[a[1]] = (a[3], time.monotonic() + ms / 1000)
                return b"+OK\r\n"
            # SET key value [EX s | PX ms]
            expires = None
            i = 3
            while i < argc:
                opt = a[i].upper()
                if opt in (b"EX", b"PX") and i + 1 < argc and expires is None:
                    t = _int_arg(a[i + 1])
                    if t is None:
                        return b"-ERR value is not an integer or out of range\r\n"
                    if t <= 0:
                        return b"-ERR invalid expire time in 'set' command\r\n"
                    expires = time.monotonic() + (t if opt == b"EX" else t / 1000)
                    i += 2
                else:
                    return b"-ERR syntax error\r\n"
            self._store[a[1]] = (a[2], expires)
            return b"+OK\r\n"

    def _lookup(self, key: bytes) -> Optional[bytes]:
        """The live value of key (caller holds the lock)."""
        item = self._store.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and time.monotonic() >= expires:
            del self._store[key]
            return None
        return value

    def _pretend_value(self, key: bytes, total: int, mode: str) -> bytes:
        """The string a key pretends to hold: `total` pattern bytes,
        encoded as `stripes` (or the stored value) says."""
        count = self.stripes
        if count is None:
            with self._lock:
                count = stored_parts(self._lookup(key))
        value = _pattern(total)
        if count == 0:
            return value
        write_id, version = self.write_id, 2
        if mode == "bad_header":
            version = 3
        elif mode == "other_write":
            with self._lock:
                self._other_writes += 1
                write_id = (self.write_id + self._other_writes) & ((1 << 64) - 1)
        return encode(value, count, write_id, version)

    def _pretend(self, mode: str, name: str, args: list[Arg]) -> tuple[bytes, int]:
        """The reply a server holding the pretend value would send, and
        the length of its first line (CRLF included)."""
        if name in _SET_COMMANDS:
            return b"+OK\r\n", 5
        if name in ("EXISTS", "DEL"):
            reply = b":%d\r\n" % (len(args) - 1)
            return reply, len(reply)
        total = self.big_len if mode == "too_big" else self.value_len
        value = self._pretend_value(args[1], total, mode)  # type: ignore[arg-type]
        if name == "STRLEN":
            reply = b":%d\r\n" % len(value)
            return reply, len(reply)
        if name == "GETRANGE":
            start, end = _int_arg(args[2]), _int_arg(args[3])
            value = _getrange(value, start or 0, end or 0)
        head = b"$%d\r\n" % len(value)
        return head + value + b"\r\n", len(head)

    def _fault(self, mode: str, name: str, args: list[Arg]) -> list[tuple]:
        """The steps answering a data command in `mode` ("" when the fault
        does not hit it: the pretend value's reply, unharmed)."""
        bulk = name in _BULK_COMMANDS
        if mode == "stall":
            return [("silent",)]
        if mode == "error":
            return [("send", b"-" + self.error_text + b"\r\n")]
        if mode == "wrong_type_status":
            return [("send", _bulk(b"OK") if name in _SET_COMMANDS else b"+OK\r\n")]
        if mode == "wrong_type_integer":
            return [("send", _bulk(b"1") if name in _INTEGER_COMMANDS else b":1\r\n")]
        if mode == "extra":
            return [("send", _MISS[name] + self.extra_bytes)]
        if bulk and mode in ("huge", "negative", "nan"):
            limit = self.proto_max_bulk_len or _DEFAULT_MAX_BULK
            default = {"huge": b"$%d" % (limit + 1), "negative": b"$-2", "nan": b"$abc"}[mode]
            line = self.line if self.line is not None else default
            return [("send", line + b"\r\n"), ("silent",)]
        reply, head = self._pretend(mode, name, args)
        payload = len(reply) - head - 2 if reply[:1] == b"$" else 0
        if mode == "close_payload" and payload > 0:
            cut = payload // 2 if self.cut is None else min(self.cut, payload - 1)
            return [("send", reply[:head + cut]), ("close",)]
        if mode in ("close_header", "close_payload"):
            return [("send", reply[:max(1, (head - 2) // 2)]), ("close",)]
        if mode == "drip":
            return [("drip", reply)]
        if mode == "bad_trailer" and payload > 0:
            return [("send", reply[:-2] + b"XY"), ("silent",)]
        return [("send", reply)]  # too_big, bad_header, other_write; commands left alone
