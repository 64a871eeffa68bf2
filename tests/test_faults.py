"""Faults: a server that closes, stalls, drips, lies about lengths, sends
malformed or unexpected replies (tests/fault_server.py), and a real
redis-server that is killed, restarted, paused or drops its clients, and a
client closed under load.

For each fault the client must raise the right exception within its
timeout + 1 s, never write outside the destination buffer, never report a
hit, and the same client object must work again once the server is
healthy.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Optional

import numpy as np
import pytest

import lmcache_redis
from lmcache_redis import (BufferTooSmallError, ClientClosedError, ConnectionError,
                           ProtocolError, RedisClient, ResponseError, TimeoutError)
from lmcache_redis._testing import resp_command

from fault_server import FaultServer

MiB = 1 << 20
TIMEOUT = 1.0
BOUND = TIMEOUT + 1.0                 # hang guard, not a benchmark
VALUE_LEN = 65539                     # not a multiple of 8: uneven stripes
CANARY = 0xA5
MARGIN = 4096
LAYOUTS = [pytest.param(1, 1, id="stripes1-conn1"), pytest.param(8, 4, id="stripes8-conn4")]


# ---- helpers -----------------------------------------------------------------


def _canaried(cap: int) -> tuple[bytearray, memoryview]:
    """A bytearray of canary bytes and a writable slice of `cap` bytes in its
    middle, MARGIN canary bytes on either side."""
    buf = bytearray([CANARY]) * (cap + 2 * MARGIN)
    return buf, memoryview(buf)[MARGIN:MARGIN + cap]


def _assert_canary(buf: bytearray) -> None:
    fence = bytes([CANARY]) * MARGIN
    assert buf[:MARGIN] == fence, "wrote before the destination"
    assert buf[-MARGIN:] == fence, "wrote past the destination"


def _timed(call: Callable[[], object]) -> tuple[object, Optional[BaseException]]:
    """(result, exception) of call(), asserting it took at most BOUND."""
    start = time.monotonic()
    try:
        result, exc = call(), None
    except Exception as e:  # noqa: BLE001 - judged by the caller
        result, exc = None, e
    elapsed = time.monotonic() - start
    assert elapsed < BOUND, f"took {elapsed:.2f} s (timeout {TIMEOUT} s): {exc!r}"
    return result, exc


def _check(exc: Optional[BaseException], result: object, expected: Optional[type]) -> None:
    if expected is None:
        assert exc is None, f"raised {exc!r}"
        assert result is None or result is False, f"reported {result!r}"
    else:
        assert type(exc) is expected, f"expected {expected.__name__}, got {exc!r} / {result!r}"


def _round_trip(client: RedisClient, key: str, old: Optional[bytes] = None) -> None:
    """Reads `old` back (if given), then writes and reads a new value: each
    call must succeed, the first one after a fault included."""
    if old is not None:
        buf, view = _canaried(len(old))
        assert client.get(key, view) == len(old)
        assert view == old
        _assert_canary(buf)
        del view
    new = os.urandom(100_003)
    client.set(key, new)
    buf, view = _canaried(len(new))
    assert client.get(key, view) == len(new)
    assert view == new
    _assert_canary(buf)


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer(value_len=VALUE_LEN, lifetime=120) as server:
        yield server


@pytest.fixture(params=[pytest.param(p.values, id=p.id) for p in LAYOUTS])
def client(request, fault_server) -> Iterator[RedisClient]:
    stripes, connections = request.param
    c = RedisClient(fault_server.host, fault_server.port, stripes=stripes,
                    connections=connections, timeout=TIMEOUT)
    yield c
    c.close()


# ---- the fault server itself ------------------------------------------------------


def test_fault_server_parses_pipelined_requests(fault_server) -> None:
    def cmd(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    big = os.urandom(3 * MiB)
    requests = (cmd(b"PING") + cmd(b"SET", b"k", big) + cmd(b"GETRANGE", b"k", b"-3", b"-1")
                + cmd(b"STRLEN", b"k") + cmd(b"EXISTS", b"k", b"k", b"no")
                + cmd(b"PSETEX", b"p", b"100000", big) + cmd(b"STRLEN", b"p")
                + cmd(b"DEL", b"k", b"no") + cmd(b"GET", b"k")
                + cmd(b"CONFIG", b"GET", b"proto-max-bulk-len"))
    expected = (b"+PONG\r\n+OK\r\n$3\r\n" + big[-3:] + b"\r\n:%d\r\n:2\r\n+OK\r\n:%d\r\n"
                b":1\r\n$-1\r\n*2\r\n$18\r\nproto-max-bulk-len\r\n$9\r\n536870912\r\n"
                % (len(big), len(big)))
    with socket.create_connection((fault_server.host, fault_server.port), timeout=10) as s:
        for i in range(0, len(requests), 7777):  # split anywhere
            s.sendall(requests[i:i + 7777])
        got = b""
        while len(got) < len(expected):
            chunk = s.recv(65536)
            assert chunk
            got += chunk
    assert got == expected


def test_fault_server_matches_redis(fault_server, redis_server, key) -> None:
    # GETRANGE's arithmetic, STRLEN, EXISTS, TTLs (SET PX, PSETEX), CONFIG GET.
    value = b"0123456789"
    ranges = [(0, 31), (0, -1), (-3, -1), (5, 2), (-1, -5), (-100, 3), (8, 100), (3, 3)]
    fake, real = (fault_server.host, fault_server.port), (redis_server.host, redis_server.port)
    for address in (fake, real):
        assert resp_command(address, "SET", key, value, "PX", 100_000) == "OK"
        assert resp_command(address, "PSETEX", key + "-p", 100_000, value * 3) == "OK"
    for start, end in ranges + [(0, 31)]:
        assert (resp_command(fake, "GETRANGE", key, start, end)
                == resp_command(real, "GETRANGE", key, start, end)), (start, end)
    for args in [("STRLEN", key), ("STRLEN", key + "-p"), ("STRLEN", key + "-missing"),
                 ("EXISTS", key, key + "-p", key + "-missing"), ("GET", key + "-p"),
                 ("CONFIG", "GET", "proto-max-bulk-len"), ("CONFIG", "GET", "proto-max-bulk-*"),
                 ("CONFIG", "GET", "no-such-setting")]:
        assert resp_command(fake, *args) == resp_command(real, *args), args
    for address in (fake, real):
        assert resp_command(address, "GETRANGE", key + "-missing", 0, 31) == b""
        assert resp_command(address, "SET", key, value, "PX", 50) == "OK"
        assert resp_command(address, "PSETEX", key + "-p", 50, value) == "OK"
    time.sleep(0.1)
    for address in (fake, real):
        assert resp_command(address, "GET", key) is None
        assert resp_command(address, "EXISTS", key, key + "-p") == 0
        assert resp_command(address, "STRLEN", key + "-p") == 0


def test_fault_server_pretends_format_2(fault_server, key) -> None:
    # The pretend value, as lmcache_redis's reader sees it: a whole value of
    # value_len pattern bytes, encoded in `stripes` parts or verbatim.
    fault_server.fault_commands = set()  # the pretend value, no fault
    fault_server.mode = "drip"
    for stripes in (0, 1, 8):
        fault_server.stripes = stripes
        with RedisClient(fault_server.host, fault_server.port, timeout=TIMEOUT) as client:
            buf, view = _canaried(VALUE_LEN)
            assert client.get(key, view) == VALUE_LEN
            assert view == (bytes(range(251)) * (VALUE_LEN // 251 + 1))[:VALUE_LEN]
            del view
            _assert_canary(buf)
            assert client.exists(key)
    assert fault_server.commands["GETRANGE_PART"] == 1 + 8  # one per part
    assert fault_server.commands["GET"] == 1  # the verbatim value, longer than 64 KiB


def test_fault_server_stops_by_itself() -> None:
    server = FaultServer(lifetime=0.2).start()
    port = server.port
    time.sleep(0.6)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.stop()


# ---- GET against each fault --------------------------------------------------------

# Where in a get the fault hits (fault_server's fault_commands). A get is a
# first round on one connection (STRLEN, GETRANGE 0 F: F + 1 bytes; F = 64
# KiB here, less than VALUE_LEN), then one GETRANGE per part of an encoded value
# (stripes8: over four connections) or one GET of a verbatim one (stripes1).
# The commands the fault does not hit see the same pretend value, unharmed.
WHERE = {
    "first_round": {"STRLEN", "GETRANGE_HEAD"},
    "head_getrange": {"GETRANGE_HEAD"},  # the round's last reply: its bulk
    "parts_or_get": {"GETRANGE_PART", "GET"},
}

# (mode, server settings, expected exception or None, connection stays in step)
# per place; a place left out of a case is not tested with it.
#
# Why each exception:
# - close_*: the stream ended early; nothing malformed was seen, the server
#   went away: ConnectionError (exactly, not its ProtocolError subclass).
#   STRLEN has no payload: close_payload cuts its header.
# - stall, blackhole, drip: no reply within the call's deadline. The
#   deadline covers the whole call, so a server dripping bytes cannot stretch
#   it: TimeoutError.
# - too_big: a well-formed value that does not fit: BufferTooSmallError with
#   `needed`, so the caller can allocate and retry. The payload is skipped,
#   so the connection stays usable (no reconnect). Only the first round can
#   say how long the value is: a part or a GET of another length than the
#   first round promised is a value replaced between the rounds: the read
#   starts again, three times, then a miss.
# - huge (> proto-max-bulk-len, 512 MiB, the parser's limit), negative, not
#   a number, a bad type byte: the header is not a reply the client accepts:
#   ProtocolError. The server sends nothing after it, so a client that
#   trusted the length would time out instead. They hit bulk replies only.
# - error: the server's error reply: ResponseError carrying its text; the
#   stream is in step, so the connection is kept (an error to one command of
#   the first round still has the round's other replies read).
# - wrong types (+OK to GETRANGE, :1 to a GET, a bulk to STRLEN): valid RESP
#   but no possible reply to the command; where the stream stands is
#   unknown: ProtocolError, connection dropped.
# - bad_trailer: the payload arrived whole but the CRLF after it did not:
#   ProtocolError, not a hit.
# - extra: the reply itself is valid (nothing there), so the call returns
#   None; the bytes after it must not be taken as a later command's reply,
#   which the round trip afterwards checks. Within the first round they are
#   read as the next command's reply: after STRLEN's :0, GETRANGE takes
#   "$6 POISON" for its own, whose length STRLEN did not say, so the read
#   starts again (on a fresh connection: the real reply is still unread)
#   and, the fault staying, ends as a miss; "$-1" is no possible reply to
#   GETRANGE: ProtocolError.

def _get_case(id_: str, mode: str, settings: dict, expected: Optional[type], keeps: bool,
              **places: tuple) -> list:
    """One case per place: (expected, keeps), unless `places` overrides it
    (None: not tested there)."""
    out = []
    for where in WHERE:
        outcome = places.get(where, (expected, keeps))
        if outcome is None:
            continue
        marks = outcome[2:] if len(outcome) > 2 else ()
        out.append(pytest.param(mode, where, settings, outcome[0], outcome[1],
                                id=f"{id_}-{where}", marks=marks))
    return out


_REREAD = (None, True)  # a part / GET not the value the first round saw: a miss
GET_CASES = [
    *_get_case("close_header", "close_header", {}, ConnectionError, False),
    *_get_case("close_payload", "close_payload", {}, ConnectionError, False),
    *_get_case("close_payload-in_part_header", "close_payload", {"cut": 16}, ConnectionError,
               False),
    *_get_case("stall", "stall", {}, TimeoutError, False),
    *_get_case("blackhole", "blackhole", {}, TimeoutError, False),
    *_get_case("drip", "drip", {"drip_interval": 0.05}, TimeoutError, False),
    *_get_case("too_big-by_1", "too_big", {"big_len": VALUE_LEN + 1}, BufferTooSmallError,
               True, head_getrange=None, parts_or_get=_REREAD),
    *_get_case("too_big-3x", "too_big", {"big_len": 3 * VALUE_LEN}, BufferTooSmallError,
               True, head_getrange=None, parts_or_get=_REREAD),
    *_get_case("huge-512MiB+1", "huge", {}, ProtocolError, False),
    *_get_case("huge-int64_max", "huge", {"line": b"$9223372036854775807"}, ProtocolError,
               False),
    *_get_case("negative-2", "negative", {}, ProtocolError, False),
    *_get_case("negative-100", "negative", {"line": b"$-100"}, ProtocolError, False),
    *_get_case("negative-int64_min", "negative", {"line": b"$-9223372036854775808"},
               ProtocolError, False),
    *_get_case("nan-abc", "nan", {}, ProtocolError, False),
    *_get_case("nan-empty", "nan", {"line": b"$"}, ProtocolError, False),
    *_get_case("nan-12a", "nan", {"line": b"$12a"}, ProtocolError, False),
    *_get_case("nan-space", "nan", {"line": b"$ 12"}, ProtocolError, False),
    *_get_case("nan-plus", "nan", {"line": b"$+12"}, ProtocolError, False),
    *_get_case("nan-hex", "nan", {"line": b"$0x10"}, ProtocolError, False),
    *_get_case("nan-overflow", "nan", {"line": b"$99999999999999999999"}, ProtocolError,
               False),
    *_get_case("nan-long", "nan", {"line": b"$" + b"1" * 100}, ProtocolError, False),
    *_get_case("nan-bare_lf", "nan", {"line": b"$5\n"}, ProtocolError, False),
    *_get_case("bad_type_byte", "nan", {"line": b"HTTP/1.1 400 Bad Request"}, ProtocolError,
               False),
    *_get_case("error", "error", {}, ResponseError, True),
    *_get_case("error-100KB", "error", {"error_text": b"ERR " + b"x" * 100_000}, ResponseError,
               True),
    *_get_case("wrong_type_status", "wrong_type_status", {}, ProtocolError, False),
    *_get_case("wrong_type_integer", "wrong_type_integer", {}, ProtocolError, False),
    *_get_case("bad_trailer", "bad_trailer", {}, ProtocolError, False),
    *_get_case("extra", "extra", {}, None, False),
    *_get_case("extra-nils", "extra", {"extra_bytes": b"$-1\r\n$-1\r\n$-1\r\n$-1\r\n"}, None,
               False, first_round=(ProtocolError, False)),
]


@pytest.mark.parametrize("mode, where, settings, expected, keeps_connections", GET_CASES)
def test_get_fault(fault_server, client, key, mode, where, settings, expected,
                   keeps_connections) -> None:
    old = os.urandom(VALUE_LEN)
    client.set(key, old)  # stripes1: verbatim; stripes8: 8 parts (the pretend value's form)
    fault_server.fault_commands = WHERE[where]
    for name, value in settings.items():
        setattr(fault_server, name, value)
    reconnects = client.stats()["reconnects"]
    fault_server.mode = mode

    buf, view = _canaried(VALUE_LEN)
    result, exc = _timed(lambda: client.get(key, view))
    del view
    _assert_canary(buf)
    _check(exc, result, expected)
    if expected is BufferTooSmallError:
        assert exc.needed == fault_server.big_len and isinstance(exc, ValueError)
    if expected is ResponseError:
        assert fault_server.error_text.decode()[:100] in str(exc)

    fault_server.mode = "healthy"
    _round_trip(client, key, old)
    if keeps_connections:
        assert client.stats()["reconnects"] == reconnects


# The value replaced between the first round and the parts (format 2's
# torn read): each part's header must carry hdr(0)'s write id, index, count
# and length. A part that does not starts the read again (three reads in
# all), then the get is a miss; a broken hdr(0) is a miss at once. The
# stream stays in step throughout.
TORN_CASES = [
    pytest.param("other_write", "parts_or_get", 3, id="other_write-parts"),
    pytest.param("other_write", "head_getrange", 3, id="other_write-hdr0"),
    pytest.param("bad_header", "parts_or_get", 3, id="bad_header-parts"),
    pytest.param("bad_header", "head_getrange", 1, id="bad_header-hdr0"),
    pytest.param("too_big", "parts_or_get", 3, id="other_length-parts"),
]


@pytest.mark.parametrize("mode, where, reads", TORN_CASES)
def test_get_torn_value_is_a_miss(fault_server, key, mode, where, reads) -> None:
    with RedisClient(fault_server.host, fault_server.port, stripes=8, connections=4,
                     timeout=TIMEOUT) as client:
        old = os.urandom(VALUE_LEN)
        client.set(key, old)
        fault_server.fault_commands = WHERE[where]
        reconnects = client.stats()["reconnects"]
        reads_before = fault_server.commands["STRLEN"]
        fault_server.mode = mode
        buf, view = _canaried(VALUE_LEN)
        result, exc = _timed(lambda: client.get(key, view))
        del view
        _assert_canary(buf)
        _check(exc, result, None)
        assert fault_server.commands["STRLEN"] - reads_before == reads
        fault_server.mode = "healthy"
        _round_trip(client, key, old)
        assert client.stats()["reconnects"] == reconnects


def test_server_limit_from_config_get(key) -> None:
    # The client reads proto-max-bulk-len at open: a reply longer than it is
    # a ProtocolError; a value whose stored string exceeds it is refused
    # before any byte is sent. A server that refuses CONFIG: 512 MiB.
    with FaultServer(value_len=VALUE_LEN, lifetime=60) as server:
        server.proto_max_bulk_len = 1 * MiB
        with RedisClient(server.host, server.port, stripes=8, connections=4,
                         timeout=TIMEOUT) as client:
            with pytest.raises(ValueError, match="proto-max-bulk-len"):
                client.set(key, bytes(MiB))  # 1 MiB + 8 headers
            assert server.commands["SET"] == 0
            client.set(key, bytes(MiB - 8 * 32))
            server.mode = "huge"  # $1048577
            _, exc = _timed(lambda: client.get(key, bytearray(MiB)))
            assert type(exc) is ProtocolError, repr(exc)
            server.mode = "healthy"
            _round_trip(client, key)
        server.proto_max_bulk_len = None  # CONFIG answers an error
        with RedisClient(server.host, server.port, stripes=8, connections=4,
                         timeout=TIMEOUT) as client:
            client.set(key, bytes(2 * MiB))
            server.mode = "huge"  # $536870913
            _, exc = _timed(lambda: client.get(key, bytearray(2 * MiB)))
            assert type(exc) is ProtocolError, repr(exc)
            server.mode = "healthy"
            _round_trip(client, key)
    assert server.commands["CONFIG"] == 2  # once per client


@pytest.mark.parametrize("stripes, connections", LAYOUTS)
def test_get_ptr_fault_stays_in_bounds(fault_server, key, stripes, connections) -> None:
    # The same through get_ptr: a raw address in the middle of a numpy array.
    # The key is absent: the pretend value has the layout's form.
    fault_server.stripes = 0 if stripes == 1 else stripes
    with RedisClient(fault_server.host, fault_server.port, stripes=stripes,
                     connections=connections, timeout=TIMEOUT) as client:
        arena = np.full(VALUE_LEN + 2 * MARGIN, CANARY, dtype=np.uint8)
        for where, mode in [("first_round", "close_payload"), ("first_round", "bad_trailer"),
                            ("first_round", "too_big"), ("parts_or_get", "close_payload"),
                            ("parts_or_get", "bad_trailer"), ("parts_or_get", "drip")]:
            fault_server.fault_commands = WHERE[where]
            fault_server.mode = mode
            result, exc = _timed(lambda: client.get_ptr(key, arena.ctypes.data + MARGIN,
                                                        VALUE_LEN))
            assert exc is not None and result is None, (where, mode)
            assert (arena[:MARGIN] == CANARY).all() and (arena[-MARGIN:] == CANARY).all(), mode
        fault_server.mode = "healthy"
        _round_trip(client, key)


@pytest.mark.parametrize("stripes, connections", LAYOUTS)
def test_drip_within_the_timeout_is_assembled(fault_server, key, stripes,
                                              connections) -> None:
    # Every reply split into one-byte reads, finishing in time: the parser and
    # payload placement must put it together exactly (the handshake is
    # answered at once, only data commands drip). stripes1: a verbatim value
    # that the first round reads whole; stripes8: 8 parts of 125 bytes and
    # their headers, the first round's 1000 bytes (the buffer's size) not
    # the whole string.
    fault_server.value_len = 1000
    fault_server.stripes = 0 if stripes == 1 else stripes
    with RedisClient(fault_server.host, fault_server.port, stripes=stripes,
                     connections=connections, timeout=10) as client:
        fault_server.mode = "drip"
        fault_server.drip_interval = 0.0005
        buf, view = _canaried(1000)
        assert client.get(key, view) == 1000
        assert view == bytes(range(251)) * 3 + bytes(range(247))
        del view
        _assert_canary(buf)
    assert fault_server.commands["GETRANGE_PART"] == (0 if stripes == 1 else stripes)


# ---- SET, EXISTS, DELETE against faults ----------------------------------------------------

# A set is one command: SET, or PSETEX with a ttl. Only it faults, with a
# 16 MiB value (stripes8: encoded in 8 parts, stripes1: verbatim), so its
# payload is really sent; the server reads and drops it. blackhole stops
# reading after the key: the sender blocks until the deadline. drip at 0.4 s
# a byte needs 2 s for "+OK\r\n". extra: +OK, then bytes the next call's
# idle check must find.
SET_CASES = [
    pytest.param("close_header", {}, ConnectionError, id="close_header"),
    pytest.param("stall", {}, TimeoutError, id="stall"),
    pytest.param("blackhole", {}, TimeoutError, id="blackhole"),
    pytest.param("drip", {"drip_interval": 0.4}, TimeoutError, id="drip"),
    pytest.param("error", {}, ResponseError, id="error"),
    pytest.param("wrong_type_status", {}, ProtocolError, id="wrong_type_status"),
    pytest.param("wrong_type_integer", {}, ProtocolError, id="wrong_type_integer"),
    pytest.param("extra", {}, None, id="extra"),
]


@pytest.mark.parametrize("ttl", [pytest.param(None, id="SET"), pytest.param(60, id="PSETEX")])
@pytest.mark.parametrize("mode, settings, expected", SET_CASES)
def test_set_fault(fault_server, client, key, mode, settings, expected, ttl) -> None:
    value = np.random.default_rng(7).integers(0, 256, 16 * MiB, dtype=np.uint8)
    for name, v in settings.items():
        setattr(fault_server, name, v)
    command = "SET" if ttl is None else "PSETEX"
    fault_server.fault_commands = {command}
    sent = fault_server.commands[command]
    fault_server.mode = mode
    result, exc = _timed(lambda: client.set(key, value, ttl=ttl))
    _check(exc, result, expected)
    assert fault_server.commands[command] - sent == (0 if mode == "blackhole" else 1)
    fault_server.mode = "healthy"
    _round_trip(client, key)


# Every data command faulty. exists is a get's first round (STRLEN, GETRANGE
# 0 32: a bulk reply, so huge applies; extra's bytes after STRLEN's :0 are
# taken as GETRANGE's reply, which STRLEN contradicts: read again, then no
# value); delete is one DEL (no bulk reply: huge leaves it alone, and it
# reports the key gone).
_DONE = object()  # the call returns normally, whatever it reports
OTHER_CASES = [
    pytest.param("close_header", ConnectionError, ConnectionError, id="close_header"),
    pytest.param("stall", TimeoutError, TimeoutError, id="stall"),
    pytest.param("error", ResponseError, ResponseError, id="error"),
    pytest.param("huge", ProtocolError, _DONE, id="huge"),
    pytest.param("wrong_type_status", ProtocolError, ProtocolError, id="wrong_type_status"),
    pytest.param("wrong_type_integer", ProtocolError, ProtocolError, id="wrong_type_integer"),
    pytest.param("extra", _DONE, None, id="extra"),
]


@pytest.mark.parametrize("call", ["exists", "delete"])
@pytest.mark.parametrize("mode, exists_expected, delete_expected", OTHER_CASES)
def test_exists_delete_fault(fault_server, client, key, call, mode, exists_expected,
                             delete_expected) -> None:
    old = os.urandom(5000)
    client.set(key, old)
    fault_server.mode = mode
    result, exc = _timed(lambda: getattr(client, call)(key))
    expected = exists_expected if call == "exists" else delete_expected
    if expected is _DONE:
        assert exc is None, repr(exc)
    else:
        _check(exc, result, expected)
    fault_server.mode = "healthy"
    _round_trip(client, key, old)
    assert client.exists(key) and client.delete(key) and not client.exists(key)


_STORM_MODES = ["close_header", "close_payload", "too_big", "wrong_type_status", "nan",
                "extra", "bad_trailer", "other_write", "bad_header"]


@pytest.mark.parametrize("modes", [
    pytest.param(_STORM_MODES, id="no_errors"),
    pytest.param(_STORM_MODES + ["error"], id="with_errors"),
])
def test_fault_storm_from_threads(fault_server, key, modes) -> None:
    # Eight threads on one client while the mode keeps changing: every call
    # returns or raises a library error in time; none writes out of bounds.
    fault_server.stripes = 8  # the keys are absent: pretend values of 8 parts
    with RedisClient(fault_server.host, fault_server.port, stripes=8, connections=4,
                     timeout=TIMEOUT) as client:
        stop = threading.Event()
        problems: list = []

        def worker(t: int) -> None:
            buf, view = _canaried(VALUE_LEN)
            while not stop.is_set():
                try:
                    result, exc = _timed(lambda: client.get(f"{key}:{t}", view))
                    assert exc is None or isinstance(exc, lmcache_redis.RedisError), repr(exc)
                    assert result is None, result  # no mode serves a whole value
                    _assert_canary(buf)
                except AssertionError as e:
                    problems.append(e)
                    return

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for i in range(40):
            fault_server.mode = modes[i % len(modes)]
            time.sleep(0.02)
        fault_server.mode = "healthy"
        stop.set()
        for t in threads:
            t.join(BOUND + 5)
        assert not any(t.is_alive() for t in threads)
        assert not problems, problems[0]
        _round_trip(client, key)


def test_error_reply_in_first_round_keeps_the_stream_in_step() -> None:
    # A slow server (each data reply 0.2 s after the one before it) refuses
    # every command on key P. The first round of get(P) fails at STRLEN; its
    # GETRANGE reply is still on its way when the next calls
    # start, so no idle check can see them: the client must read them (or
    # drop the connection) itself, or a later get takes another key's
    # replies for its own.
    store = {b"A": b"value of key A", b"B": b"value of key B"}
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        sock = listener.accept()[0]
        replies: queue.Queue = queue.Queue()

        def sender() -> None:
            while (item := replies.get()) is not None:
                data, slow = item
                time.sleep(0.2 if slow else 0)
                with contextlib.suppress(OSError):  # the client went away
                    sock.sendall(data)

        sending = threading.Thread(target=sender, daemon=True)
        sending.start()
        with sock, sock.makefile("rb") as f:
            while (line := f.readline()).startswith(b"*"):
                args = [f.read(int(f.readline()[1:]) + 2)[:-2] for _ in range(int(line[1:]))]
                name, key = args[0].upper(), args[1] if len(args) > 1 else b""
                if name in (b"PING", b"CONFIG"):
                    replies.put((b"+PONG\r\n" if name == b"PING" else b"-ERR no\r\n", False))
                    continue
                value = store.get(key, b"")
                if key == b"P":
                    reply = b"-ERR refused\r\n"
                elif name == b"EXISTS":
                    reply = b":%d\r\n" % (key in store)
                elif name == b"STRLEN":
                    reply = b":%d\r\n" % len(value)
                else:  # GETRANGE key start end
                    reply = _bulk_reply(value[int(args[2]):int(args[3]) + 1])
                replies.put((reply, True))
            replies.put(None)
            sending.join()

    threading.Thread(target=serve, daemon=True).start()
    with listener, RedisClient("127.0.0.1", listener.getsockname()[1], connections=1,
                               timeout=5) as client:
        outcomes = []
        for key in ("P", "A", "B", "B"):
            buf = bytearray(64)
            try:
                n = client.get(key, buf)
                outcomes.append(bytes(buf[:n]) if n is not None else None)
            except ResponseError:
                outcomes.append(ResponseError)
        assert outcomes[0] is ResponseError
        for key, got in zip("ABB", outcomes[1:]):
            assert got in (ResponseError, store[key.encode()]), (key, got)


def _bulk_reply(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


# ---- a real redis-server: killed, restarted, dropping clients, paused ---------------------

STORM_THREADS = 8
STORM_SIZE = 32 * MiB
STORM_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def storm_value() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, STORM_SIZE, dtype=np.uint8)


class _Storm:
    """STORM_THREADS threads each alternating 32 MiB set and get of its own
    key on one client until stopped; records every call's outcome."""

    def __init__(self, client: RedisClient, src: np.ndarray, prefix: str, *,
                 stop_on_error: bool = False, limit: float = 30.0) -> None:
        self.client, self.src, self.prefix = client, src, prefix
        self.stop_on_error = stop_on_error
        self.end = time.monotonic() + limit
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.records: list[tuple[float, float, object]] = []  # start, end, outcome
        self.threads = [threading.Thread(target=self._run, args=(t,))
                        for t in range(STORM_THREADS)]

    def __enter__(self) -> "_Storm":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, t: int) -> None:
        key = f"{self.prefix}:{t}"
        dst = np.empty(STORM_SIZE, dtype=np.uint8)
        i = 0
        while not self.stop_event.is_set() and time.monotonic() < self.end:
            start = time.monotonic()
            outcome: object
            try:
                if i % 2 == 0:
                    self.client.set(key, self.src)
                    outcome = "set"
                else:
                    n = self.client.get(key, dst)
                    outcome = n
                    if n is not None and (n != STORM_SIZE or not np.array_equal(dst, self.src)):
                        outcome = AssertionError(f"get returned {n} and other bytes")
            except BaseException as e:  # noqa: BLE001 - judged by the test
                outcome = e
            i += 1
            with self.lock:
                self.records.append((start, time.monotonic(), outcome))
            if self.stop_on_error and isinstance(outcome, BaseException):
                return

    def hits(self) -> int:
        with self.lock:
            return sum(o == STORM_SIZE for _, _, o in self.records
                       if not isinstance(o, BaseException))

    def completed(self) -> int:
        with self.lock:
            return sum(not isinstance(o, BaseException) for _, _, o in self.records)

    def wait_for(self, predicate: Callable[[], bool], limit: float = 20.0) -> None:
        deadline = time.monotonic() + limit
        while not predicate():
            assert time.monotonic() < deadline, "the storm made no progress"
            time.sleep(0.01)

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(STORM_TIMEOUT + 10)
        assert not any(t.is_alive() for t in self.threads), "a storm thread hangs"

    def errors(self) -> list[BaseException]:
        return [o for _, _, o in self.records if isinstance(o, BaseException)]

    def check(self, allowed: tuple) -> None:
        """Every call took at most its timeout + 1 s; every error is allowed."""
        for start, end, outcome in self.records:
            assert end - start < STORM_TIMEOUT + 1, f"a call took {end - start:.1f} s"
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, allowed), repr(outcome)


def _storm_round_trip(client: RedisClient, key: str, src: np.ndarray) -> None:
    client.set(key, src)
    dst = np.zeros_like(src)
    assert client.get(key, dst) == src.nbytes
    assert np.array_equal(dst, src)


def test_kill_9_during_storm(own_server, storm_value, key) -> None:
    client = RedisClient(own_server.host, own_server.port, stripes=8, connections=4,
                         timeout=STORM_TIMEOUT)
    with _Storm(client, storm_value, key) as storm:
        storm.wait_for(lambda: storm.hits() >= STORM_THREADS)
        fds = _fds()
        own_server.kill()
        killed = time.monotonic()
        storm.wait_for(lambda: len([1 for s, _, o in storm.records
                                    if s > killed and isinstance(o, BaseException)])
                       >= 2 * STORM_THREADS)
        assert _fds() <= fds, "failed reconnects leak sockets"
    storm.check((lmcache_redis.ConnectionError,))
    after = [o for s, _, o in storm.records if s > killed]
    assert after and all(isinstance(o, lmcache_redis.ConnectionError) for o in after), \
        "a call that started after the kill did not fail"
    own_server.restart()
    _storm_round_trip(client, key, storm_value)  # the same client object
    client.close()


def test_client_kill_idle(own_server, storm_value, key) -> None:
    with RedisClient(own_server.host, own_server.port, stripes=8, connections=4,
                     timeout=STORM_TIMEOUT) as client:
        _storm_round_trip(client, key, storm_value)
        own_server.command("CLIENT", "KILL", "TYPE", "normal")
        _storm_round_trip(client, key, storm_value)


def test_client_kill_during_storm(own_server, storm_value, key) -> None:
    with RedisClient(own_server.host, own_server.port, stripes=8, connections=4,
                     timeout=STORM_TIMEOUT) as client:
        with _Storm(client, storm_value, key) as storm:
            storm.wait_for(lambda: storm.hits() >= STORM_THREADS)
            for _ in range(3):
                own_server.command("CLIENT", "KILL", "TYPE", "normal")
                time.sleep(0.15)
            done = storm.completed()
            storm.wait_for(lambda: storm.completed() >= done + STORM_THREADS)  # recovered
        storm.check((lmcache_redis.ConnectionError,))
        _storm_round_trip(client, key, storm_value)


@pytest.fixture(scope="module")
def pause_value() -> np.ndarray:
    # Small enough that the healthy calls around a pause stay far inside the
    # 1 s timeout on a loaded machine.
    return np.random.default_rng(4).integers(0, 256, 8 * MiB, dtype=np.uint8)


def test_paused_server_times_out(own_server, pause_value, key) -> None:
    with RedisClient(own_server.host, own_server.port, stripes=8, connections=4,
                     timeout=TIMEOUT) as client:
        client.set(key, pause_value)
        dst = np.empty_like(pause_value)
        os.kill(own_server.pid, signal.SIGSTOP)
        try:
            # Replies stop; sends block once the socket buffers fill; new
            # connections are accepted by the kernel but never greeted.
            for call in (lambda: client.get(key, dst), lambda: client.set(key, pause_value),
                         lambda: client.exists(key), lambda: client.get(key, dst)):
                result, exc = _timed(call)
                assert type(exc) is TimeoutError, repr(exc)
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
        _storm_round_trip(client, key, pause_value)


def test_pause_mid_operation_times_out(own_server, pause_value, key) -> None:
    with RedisClient(own_server.host, own_server.port, stripes=8, connections=4,
                     timeout=TIMEOUT) as client:
        client.set(key, pause_value)
        dst = np.empty_like(pause_value)
        outcomes: list = []

        def reader() -> None:
            while True:
                try:
                    result, exc = _timed(lambda: client.get(key, dst))
                except AssertionError as e:  # too slow
                    outcomes.append(e)
                    return
                outcomes.append(exc or result)
                if exc is not None or len(outcomes) > 200:
                    return

        thread = threading.Thread(target=reader)
        thread.start()
        while not outcomes:
            time.sleep(0.001)
        os.kill(own_server.pid, signal.SIGSTOP)  # most likely mid-get
        try:
            thread.join(BOUND + 1)
            assert not thread.is_alive()
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
        assert type(outcomes[-1]) is TimeoutError, outcomes[-1]
        _storm_round_trip(client, key, pause_value)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _settles_to(count: Callable[[], int], baseline: int) -> int:
    deadline = time.monotonic() + 3
    while count() != baseline and time.monotonic() < deadline:
        time.sleep(0.01)
    return count()


def test_close_during_storm(own_server, storm_value, key) -> None:
    gc.collect()
    fds, threads = _fds(), _threads()
    client = RedisClient(own_server.host, own_server.port, stripes=8, connections=4,
                         timeout=STORM_TIMEOUT)
    assert _threads() == threads + 4
    with _Storm(client, storm_value, key, stop_on_error=True) as storm:
        storm.wait_for(lambda: storm.completed() >= STORM_THREADS)
        result, exc = _timed(client.close)  # must not wait for the calls in flight
        assert exc is None
        for t in storm.threads:  # each thread stops at its first error
            t.join(BOUND + 5)
        assert not any(t.is_alive() for t in storm.threads)
    storm.check((ClientClosedError, lmcache_redis.ConnectionError))
    errors = storm.errors()
    assert len(errors) == STORM_THREADS
    assert any(isinstance(e, ClientClosedError) for e in errors)
    del errors  # their tracebacks reach the storm, and through it the client
    with pytest.raises(ClientClosedError):
        client.get(key, np.empty(1, dtype=np.uint8))
    del client, storm
    gc.collect()
    assert _settles_to(_fds, fds) == fds
    assert _settles_to(_threads, threads) == threads


# ---- close() and connects; bytes after the handshake ---------------------------------------


@contextlib.contextmanager
def _unanswered(port: int) -> Iterator[None]:
    """Listens on `port` but never accepts, with its queue full: the kernel
    drops further SYNs, so a connect() there hangs until its deadline."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(2):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        time.sleep(0.05)
        yield
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _syn_sent(port: int) -> int:
    """Sockets of this machine in SYN_SENT to 127.0.0.1:port."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[2] == f"0100007F:{port:04X}" and r[3] == "02")


def test_connect_that_hangs_times_out(key) -> None:
    # The server goes away and its port stops answering SYNs: a reconnect is
    # a connect() that never completes; the call's deadline still holds.
    server = FaultServer().start()
    port = server.port
    client = RedisClient(server.host, port, stripes=8, connections=4, timeout=TIMEOUT,
                         connect_timeout=5)
    server.stop()
    with _unanswered(port):
        result, exc = _timed(lambda: client.get(key, bytearray(10)))
        assert type(exc) is TimeoutError, repr(exc)
    with FaultServer(port=port) as server:  # back on the same port
        _round_trip(client, key)
    client.close()


def test_close_interrupts_a_connect_in_progress() -> None:
    server = FaultServer().start()
    port = server.port
    client = RedisClient(server.host, port, stripes=1, connections=1, timeout=10,
                         connect_timeout=3)
    server.stop()  # the connection is dropped; the next call reconnects
    with _unanswered(port):
        before = _syn_sent(port)
        thread, outcome = None, []

        def call() -> None:
            try:
                outcome.append(client.get("k", bytearray(1)))
            except Exception as e:  # noqa: BLE001 - judged below
                outcome.append(e)

        thread = threading.Thread(target=call)
        thread.start()
        deadline = time.monotonic() + 5
        while _syn_sent(port) == before:  # until the client is inside connect()
            assert time.monotonic() < deadline, "the call never connected"
            time.sleep(0.005)
        start = time.monotonic()
        client.close()
        closing = time.monotonic() - start
        thread.join(10)
    assert not thread.is_alive()
    assert closing < 1.0 and isinstance(outcome[0], ClientClosedError), (closing, outcome)


@pytest.mark.parametrize("stripes, connections", [
    pytest.param(1, 1, id="stripes1-conn1"),
    pytest.param(8, 4, id="stripes8-conn4"),
])
def test_bytes_after_the_handshake_are_not_a_reply(fault_server, key, stripes,
                                                   connections) -> None:
    with RedisClient(fault_server.host, fault_server.port, stripes=stripes,
                     connections=connections, timeout=TIMEOUT) as client:
        fault_server.handshake_extra = b"$6\r\nPOISON\r\n"
        fault_server.mode = "close_header"  # drops the connections: the next call reconnects
        _, exc = _timed(lambda: client.get(key, bytearray(10)))
        assert type(exc) is ConnectionError, repr(exc)
        fault_server.mode = "healthy"
        buf, view = _canaried(10)
        result, exc = _timed(lambda: client.get(key, view))  # no such key
        del view
        _assert_canary(buf)
        # A server that talks out of turn: ProtocolError (proposed), or a miss;
        # never its bytes as the value.
        assert result is None and (exc is None or isinstance(exc, ProtocolError)), \
            (result, exc)
        fault_server.handshake_extra = b""
        _round_trip(client, key)
