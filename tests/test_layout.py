"""The stored layout, format 2 (README, "Stored format (version 2)"), seen
from the server with redis-py: one string per value under the user's key,
verbatim or encoded (32-byte headers at the documented offsets, parts in
order), readers and writers of different part counts, and how damaged,
mixed, foreign or format-1 values read (as misses)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from lmcache_redis import RedisClient, stripe_count
from lmcache_redis._testing import resp_command
from selfcheck import HEADER, MAGIC, decode, header_at, part

PAIR_STRIPES = (1, 2, 3, 8, 16)


def _data(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


@pytest.fixture(scope="module")
def rpy(redis_server) -> Iterator[redis.Redis]:
    r = redis.Redis(redis_server.host, redis_server.port)
    yield r
    r.close()


@pytest.fixture
def raw(redis_server):
    """One raw command over a fresh connection (works with an external server)."""
    return lambda *args: resp_command((redis_server.host, redis_server.port), *args)


def _keys(raw, key: str) -> set:
    """The keys whose names begin with ``key`` (format 1 sub-keys included)."""
    return set(raw("KEYS", key + "*"))


# ---- hits, misses, exists, delete ---------------------------------------------


@pytest.mark.parametrize("stripes", PAIR_STRIPES)
def test_miss_returns_none(clients, key, stripes: int) -> None:
    out = bytearray(b"\x55" * 64)
    assert clients(stripes).get(key, out) is None
    assert not clients(stripes).exists(key)


@pytest.mark.parametrize("stripes", [1, 8])
def test_exists_and_delete(clients, key, stripes: int) -> None:
    client = clients(stripes)
    assert not client.exists(key)
    assert client.delete(key) is False
    client.set(key, b"value")
    assert client.exists(key) is True
    assert client.delete(key) is True
    assert not client.exists(key)
    assert client.get(key, bytearray(5)) is None
    assert client.delete(key) is False


@pytest.mark.parametrize("stripes", [1, 8])
def test_exists_and_delete_empty_value(clients, key, stripes: int) -> None:
    client = clients(stripes)
    client.set(key, b"")
    assert client.exists(key)
    assert client.get(key, bytearray(0)) == 0
    assert client.delete(key) is True
    assert client.get(key, bytearray(0)) is None


@pytest.mark.parametrize("writer", [1, 8])
@pytest.mark.parametrize("reader", [1, 3, 8])
def test_exists_across_layouts(clients, key, writer: int, reader: int) -> None:
    clients(writer).set(key, b"value")
    assert clients(reader).exists(key)


# ---- readers and writers of different stripe counts ----------------------------


@pytest.mark.parametrize("size", [5, 100_003])
@pytest.mark.parametrize("reader", PAIR_STRIPES)
@pytest.mark.parametrize("writer", PAIR_STRIPES)
def test_any_reader_reads_any_writer(clients, key, writer: int, reader: int, size: int) -> None:
    data = _data(size, seed=writer * 100 + reader)
    clients(writer).set(key, data)
    out = bytearray(size)
    assert clients(reader).get(key, out) == size
    assert out == data
    clients(reader).delete(key)


# ---- stripes=1: verbatim, interoperable with other Redis clients ----------------


def test_plain_is_stored_verbatim(clients, key, rpy, raw) -> None:
    data = _data(10_000, seed=1)
    clients(1).set(key, data)
    assert rpy.get(key) == data
    assert raw("GET", key) == data
    assert _keys(raw, key) == {key.encode()}


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="no redis-cli")
def test_plain_is_readable_by_redis_cli(clients, key, redis_server) -> None:
    data = _data(10_000, seed=1)
    clients(1).set(key, data)
    out = subprocess.run(
        ["redis-cli", "-h", redis_server.host, "-p", str(redis_server.port), "--raw", "GET", key],
        capture_output=True, check=True, timeout=30).stdout
    assert out == data + b"\n"  # --raw writes the bytes as they are, then a newline


@pytest.mark.parametrize("data", [b"x", b"LMRS" + bytes(60), None],
                         ids=["one", "looks-like-header", "random"])
@pytest.mark.parametrize("reader", [1, 8])
def test_value_set_by_redis_py(clients, key, rpy, reader: int, data) -> None:
    if data is None:
        data = _data(1 << 20, seed=2)
    rpy.set(key, data)
    out = bytearray(len(data))
    assert clients(reader).get(key, out) == len(data)
    assert out == data


@pytest.mark.parametrize("reader", [1, 8])
def test_empty_string_set_by_redis_py_is_no_value(clients, key, rpy, reader: int) -> None:
    # This library stores the empty value encoded (a 32-byte header), so
    # that a read tells "no value" from "empty value" by one GETRANGE; an
    # empty string another client wrote reads as no value (README).
    rpy.set(key, b"")
    assert clients(reader).get(key, bytearray(0)) is None
    assert clients(reader).exists(key) is False
    clients(reader).set(key, b"")
    assert rpy.strlen(key) == 32  # one header, whatever the part count
    assert clients(reader).get(key, bytearray(0)) == 0


# ---- format 2: one string per value, verbatim or encoded ----------------------------


@pytest.mark.parametrize("stripes", [None, 1, 2, 3, 8])
@pytest.mark.parametrize("size", [0, 1000, 100_003, 3 << 20])
def test_one_key_per_value(clients, key, raw, stripes, size: int) -> None:
    clients(stripes).set(key, _data(size))
    assert _keys(raw, key) == {key.encode()}
    assert set(raw("SCAN", 0, "MATCH", key + "*", "COUNT", 10_000)[1]) == {key.encode()}


@pytest.mark.parametrize("size", [1000, 100_003])
@pytest.mark.parametrize("stripes", [2, 3, 8])
def test_encoded_layout(clients, key, rpy, stripes: int, size: int) -> None:
    data = _data(size, seed=3)
    clients(stripes).set(key, data)
    stored = rpy.get(key)
    assert len(stored) == size + 32 * stripes
    headers, value = decode(stored)  # every header at its documented offset
    assert len(headers) == stripes
    assert value == data  # parts in order, each the documented slice
    for i in range(stripes):
        off, n = part(size, stripes, i)
        at = header_at(size, stripes, i)
        assert stored[at + 32:at + 32 + n] == data[off:off + n]


def test_default_32_mib_is_one_encoded_string(redis_server, rpy, raw, key) -> None:
    # One SET of L + 32*C bytes.
    data = _data(32 << 20)
    count = stripe_count(32 << 20)
    with RedisClient(redis_server.host, redis_server.port) as client:
        assert client.stripes is None and client.stripe_size == 2 << 20
        client.set(key, data)
        assert _keys(raw, key) == {key.encode()}
        stored = rpy.get(key)
        assert len(stored) == len(data) + 32 * count
        headers, value = decode(stored)
        assert len(headers) == count and value == data
        # The server's memory for it is what a plain SET of the data takes.
        rpy.set(key + ":plain", data)
        plain = raw("MEMORY", "USAGE", key + ":plain")
        rpy.delete(key + ":plain")
        assert raw("MEMORY", "USAGE", key) <= 1.01 * plain
        out = bytearray(32 << 20)
        assert client.get(key, out) == len(data) and out == data


@pytest.mark.parametrize("size", [5, 1000, (2 << 20) - 64])
def test_values_up_to_the_threshold_are_verbatim(clients, key, rpy, size: int) -> None:
    data = _data(size, seed=4)
    clients(None).set(key, data)
    assert rpy.get(key) == data


def test_value_just_over_the_threshold_is_encoded(clients, key, rpy) -> None:
    size = (2 << 20) - 63
    data = _data(size, seed=4)
    clients(None).set(key, data)
    headers, value = decode(rpy.get(key))
    assert len(headers) == stripe_count(size) > 1 and value == data


def test_write_ids_differ_between_writes(clients, key, rpy) -> None:
    clients(4).set(key, _data(1000))
    first = HEADER.unpack(rpy.getrange(key, 0, 31))[6]
    clients(4).set(key, _data(1000))
    assert HEADER.unpack(rpy.getrange(key, 0, 31))[6] != first


@pytest.mark.parametrize("size", [4, 64, 100_003, 3 << 20])
@pytest.mark.parametrize("writer", [None, 1, 8])
def test_verbatim_value_that_begins_with_the_magic(clients, key, rpy, writer, size: int) -> None:
    # It could pass for an encoded value, so it is stored encoded (1 part
    # when it would otherwise be verbatim) and reads back as it was.
    data = MAGIC + _data(size - 4, seed=5)
    clients(writer).set(key, data)
    stored = rpy.get(key)
    headers, value = decode(stored)
    assert value == data
    if writer == 1 or (writer is None and size <= (2 << 20) - 64):
        assert len(headers) == 1 and len(stored) == size + 32
    for reader in (None, 1, 8):
        out = bytearray(size + 7)
        assert clients(reader).get(key, out) == size and out[:size] == data
        assert clients(reader).exists(key)


# ---- what is not a value of ours reads as a miss ----------------------------------


def _assert_miss(clients, key, size: int = 100_003, caps=(64,)) -> None:
    """Every reader, with buffers of ``caps`` and of the value's size and
    more, reads a miss."""
    for reader in (None, 1, 8):
        for cap in (*caps, size, 64 << 20):
            assert clients(reader).get(key, bytearray(cap)) is None, (reader, cap)


@pytest.mark.parametrize("count", [1, 4])
def test_format_1_leftover_is_a_miss(clients, key, rpy, count: int) -> None:
    # Sub-keys K:stripe:i with "LMRS" headers, as format 1 wrote them.
    size = 100_003
    data = _data(size, seed=6)
    for i in range(count):
        off, n = part(size, count, i)
        rpy.set(f"{key}:stripe:{i}",
                HEADER.pack(b"LMRS", 1, 32, i, count, size, 0x1234) + data[off:off + n])
    _assert_miss(clients, key)
    assert not clients(None).exists(key)
    assert clients(None).delete(key) is False
    # Never touched: the library removes no key but the one a call names.
    assert set(rpy.scan_iter(match=key + "*", count=10_000)) == {
        f"{key}:stripe:{i}".encode() for i in range(count)}


@pytest.mark.parametrize(
    "damage",
    ["cut-1", "cut-to-header", "cut-in-header", "appended", "magic-only", "bad-version",
     "bad-count", "bad-length"],
)
def test_broken_first_header_or_length_is_a_miss(clients, key, rpy, damage: str) -> None:
    clients(8).set(key, _data(100_003))
    stored = rpy.get(key)
    broken = {
        "cut-1": stored[:-1],
        "cut-to-header": stored[:32],
        "cut-in-header": stored[:20],
        "appended": stored + b"x",
        "magic-only": MAGIC,
        "bad-version": stored[:4] + struct.pack("<H", 1) + stored[6:],
        "bad-count": stored[:12] + struct.pack("<I", 9) + stored[16:],
        "bad-length": stored[:16] + struct.pack("<Q", 100_002) + stored[24:],
    }[damage]
    rpy.set(key, broken)
    _assert_miss(clients, key)
    for reader in (None, 1, 8):
        assert not clients(reader).exists(key)


def test_value_cut_by_setrange_of_another_client_is_a_miss(clients, key, rpy) -> None:
    clients(None).set(key, _data(3 << 20))
    rpy.setrange(key, rpy.strlen(key), b"tail")  # grows the string
    _assert_miss(clients, key, 3 << 20)
    assert not clients(None).exists(key)


@pytest.mark.parametrize("where", [1, 3, 7])
@pytest.mark.parametrize("field", ["magic", "index", "write-id"])
def test_damaged_inner_header_is_a_miss(clients, key, rpy, where: int, field: str) -> None:
    size = 100_003
    clients(8).set(key, _data(size))
    at = header_at(size, 8, where)
    offset, patch = {"magic": (0, b"XXXX"), "index": (8, struct.pack("<I", where + 1)),
                     "write-id": (24, struct.pack("<Q", 42))}[field]
    rpy.setrange(key, at + offset, patch)
    # hdr(0) is intact: a buffer too small for its length is told so
    # (BufferTooSmallError) before any part is read; those that hold it miss.
    _assert_miss(clients, key, size, caps=())


@pytest.mark.parametrize("reader", [None, 3, 8])
def test_parts_of_two_writes_are_a_miss(clients, key, rpy, reader) -> None:
    size = 100_000  # 8 parts of 12_500 bytes: part 3 of one write fits the other
    clients(8).set(key, _data(size, seed=1))
    stored_a = rpy.get(key)
    clients(8).set(key, _data(size, seed=2))
    at, end = header_at(size, 8, 3), header_at(size, 8, 4)
    rpy.setrange(key, at, stored_a[at:end])
    assert clients(reader).get(key, bytearray(size)) is None


def test_part_with_the_wrong_index_is_a_miss(clients, key, rpy) -> None:
    size = 1000  # 4 parts of 250 bytes
    clients(4).set(key, _data(size))
    stored = rpy.get(key)
    one, two, three = (header_at(size, 4, i) for i in (1, 2, 3))
    rpy.setrange(key, two, stored[one:two])  # part 1 again in part 2's place
    assert clients(4).get(key, bytearray(size)) is None


@pytest.mark.parametrize("kind", ["list", "hash", "set"])
def test_key_of_another_type_is_a_miss(clients, key, rpy, kind: str) -> None:
    {"list": lambda: rpy.rpush(key, b"x" * 100),
     "hash": lambda: rpy.hset(key, "f", b"\x89LMR" + bytes(60)),
     "set": lambda: rpy.sadd(key, b"m")}[kind]()
    _assert_miss(clients, key)
    for reader in (None, 1, 8):
        assert not clients(reader).exists(key)
    assert rpy.type(key) == kind.encode()  # left as it was


def test_miss_leaves_client_usable(clients, key, rpy) -> None:
    data = _data(100_003, seed=5)
    clients(8).set(key, data)
    rpy.setrange(key, header_at(100_003, 8, 3) + 24, b"\x00" * 8)
    assert clients(8).get(key, bytearray(100_003)) is None
    clients(8).set(key, data)
    out = bytearray(100_003)
    assert clients(8).get(key, out) == 100_003
    assert out == data


# ---- rewrites and deletes: still one key, and only it ------------------------------------


@pytest.mark.parametrize("first, second", [(16, 3), (8, 2), (3, 2), (2, 16), (16, 1), (1, 16),
                                           (None, 1), (1, None)])
def test_rewrite_with_another_width(clients, key, raw, first, second) -> None:
    clients(first).set(key, _data(100_003, seed=1))
    data = _data(100_003, seed=2)
    clients(second).set(key, data)
    assert _keys(raw, key) == {key.encode()}
    for reader in (first, second):
        out = bytearray(200_000)
        assert clients(reader).get(key, out) == 100_003
        assert out[:100_003] == data


@pytest.mark.parametrize("writer, deleter", [(16, 2), (16, 1), (2, 16), (1, 8), (8, 1), (3, 3),
                                             (None, 1)])
def test_delete_removes_the_value(clients, key, raw, writer, deleter) -> None:
    clients(writer).set(key, _data(100_003))
    assert clients(deleter).delete(key) is True
    assert _keys(raw, key) == set()
    assert clients(deleter).delete(key) is False


# ---- part count by value size (stripes=None) ------------------------------------


@pytest.mark.parametrize("stripe_size", [4096, 1 << 20])
@pytest.mark.parametrize("multiple", [0.5, 1, 1.5, 8, 20])
def test_part_count_follows_the_value_size(redis_server, raw, rpy, key, stripe_size: int,
                                           multiple: float) -> None:
    size = int(stripe_size * multiple)
    count = stripe_count(size, stripe_size)
    data = _data(size)
    with RedisClient(redis_server.host, redis_server.port, stripe_size=stripe_size) as client:
        client.set(key, data)
        assert _keys(raw, key) == {key.encode()}
        stored = rpy.get(key)
        if size <= stripe_size - 64:
            assert count == 1 and stored == data  # verbatim
        else:
            headers, value = decode(stored)
            assert len(headers) == count and value == data
            # Above the connection count (4) the count divides evenly among them.
            assert count <= 4 or count % 4 == 0
        # Any buffer that holds the value reads it.
        for cap in (size, size * 3 + 1):
            out = bytearray(cap)
            assert client.get(key, out) == size and bytes(out[:size]) == data
        if size:
            with pytest.raises(ValueError):
                client.get(key, bytearray(size - 1))


def test_stripe_count_arguments() -> None:
    assert stripe_count(80 << 20, connections=8) % 8 == 0
    assert stripe_count(10, stripe_size=4096, connections=1) == 1
    for bad in (dict(nbytes=-1), dict(nbytes=1, stripe_size=4095),
                dict(nbytes=1, connections=0), dict(nbytes=1, connections=65)):
        with pytest.raises(ValueError):
            stripe_count(**bad)


@pytest.mark.parametrize("stripe_size", [0, 4095, (256 << 20) + 1, -1])
def test_stripe_size_out_of_range(redis_server, stripe_size: int) -> None:
    with pytest.raises(ValueError, match="stripe_size"):
        RedisClient(redis_server.host, redis_server.port, stripe_size=stripe_size)
