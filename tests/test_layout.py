"""The stored layout (csrc/stripe.h), seen from the server: sub-key names,
stripe headers, verbatim plain values, readers and writers of different
stripe counts, and how damaged or mixed stripes read (as misses)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from lmcache_redis import RedisClient, stripe_count
from lmcache_redis.testing import resp_command

HEADER = struct.Struct("<4sHHIIQQ")  # magic, version, header size, index, count, length, set id
PAIR_STRIPES = (1, 2, 3, 8, 16)


def _data(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def _offset(length: int, count: int, i: int) -> int:
    base, rem = divmod(length, count)
    return i * base + min(i, rem)


def _length(length: int, count: int, i: int) -> int:
    base, rem = divmod(length, count)
    return base + (i < rem)


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
    """The key and its sub-keys that exist on the server."""
    return set(raw("KEYS", key + "*"))


def _sub_keys(key: str, count: int) -> set:
    return {f"{key}:stripe:{i}".encode() for i in range(count)}


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


@pytest.mark.parametrize("data", [b"", b"x", b"LMRS" + bytes(60), None],
                         ids=["empty", "one", "looks-like-header", "random"])
@pytest.mark.parametrize("reader", [1, 8])
def test_value_set_by_redis_py(clients, key, rpy, reader: int, data) -> None:
    if data is None:
        data = _data(1 << 20, seed=2)
    rpy.set(key, data)
    out = bytearray(len(data))
    assert clients(reader).get(key, out) == len(data)
    assert out == data


# ---- stripes > 1: sub-keys and their headers -------------------------------------


@pytest.mark.parametrize("stripes", [2, 3, 8])
def test_sub_key_names(clients, key, raw, stripes: int) -> None:
    clients(stripes).set(key, _data(1000))
    assert _keys(raw, key) == _sub_keys(key, stripes)
    assert set(raw("SCAN", 0, "MATCH", key + "*", "COUNT", 10_000)[1]) <= _sub_keys(key, stripes)


@pytest.mark.parametrize("size", [0, 5, 1000, 100_003])
@pytest.mark.parametrize("stripes", [2, 3, 8])
def test_stripe_headers(clients, key, rpy, stripes: int, size: int) -> None:
    data = _data(size, seed=3)
    clients(stripes).set(key, data)
    set_ids = set()
    for i in range(stripes):
        sub = f"{key}:stripe:{i}"
        magic, version, header_size, index, count, length, set_id = HEADER.unpack(
            rpy.getrange(sub, 0, 31))
        assert (magic, version, header_size) == (b"LMRS", 1, 32)
        assert (index, count, length) == (i, stripes, size)
        set_ids.add(set_id)
        # The payload is the documented slice of the value.
        assert rpy.strlen(sub) == 32 + _length(size, stripes, i)
        off = _offset(size, stripes, i)
        assert rpy.get(sub)[32:] == data[off:off + _length(size, stripes, i)]
    assert len(set_ids) == 1  # one write, one set id


def test_set_ids_differ_between_writes(clients, key, rpy) -> None:
    clients(4).set(key, b"abcd")
    first = HEADER.unpack(rpy.getrange(f"{key}:stripe:0", 0, 31))[6]
    clients(4).set(key, b"abcd")
    assert HEADER.unpack(rpy.getrange(f"{key}:stripe:0", 0, 31))[6] != first


# ---- damaged values read as misses -------------------------------------------------


@pytest.mark.parametrize("reader", [1, 3, 8, 16])
@pytest.mark.parametrize("lost", [0, 3, 7])
def test_lost_stripe_is_a_miss(clients, key, raw, lost: int, reader: int) -> None:
    clients(8).set(key, _data(100_003))
    assert raw("DEL", f"{key}:stripe:{lost}") == 1
    out = bytearray(100_003)
    assert clients(reader).get(key, out) is None
    assert not clients(reader).exists(key)


@pytest.mark.parametrize("same_length", [True, False])
@pytest.mark.parametrize("reader", [3, 8])
def test_stripes_of_two_writes_are_a_miss(clients, key, rpy, reader: int,
                                          same_length: bool) -> None:
    writer = clients(8)
    writer.set(key, _data(100_003, seed=1))
    stripe3_of_a = rpy.get(f"{key}:stripe:3")
    writer.set(key, _data(100_003 if same_length else 99_999, seed=2))
    rpy.set(f"{key}:stripe:3", stripe3_of_a)
    assert clients(reader).get(key, bytearray(100_003)) is None
    # exists() reads every stripe header, so a torn value does not exist:
    # a caller that stores only what does not exist repairs it.
    assert not clients(reader).exists(key)


@pytest.mark.parametrize(
    "damage",
    [b"", b"short", b"XXXX" + bytes(60)],
    ids=["empty", "shorter-than-header", "bad-magic"],
)
def test_garbage_stripe_is_a_miss(clients, key, rpy, damage: bytes) -> None:
    clients(8).set(key, _data(1000))
    rpy.set(f"{key}:stripe:5", damage)
    assert clients(8).get(key, bytearray(1000)) is None


def test_stripe_with_wrong_index_is_a_miss(clients, key, rpy) -> None:
    clients(4).set(key, _data(1000))  # 4 stripes of 250 bytes
    rpy.set(f"{key}:stripe:2", rpy.get(f"{key}:stripe:1"))
    assert clients(4).get(key, bytearray(1000)) is None


def test_miss_leaves_client_usable(clients, key, raw) -> None:
    data = _data(100_003, seed=5)
    clients(8).set(key, data)
    raw("DEL", f"{key}:stripe:3")
    assert clients(8).get(key, bytearray(100_003)) is None
    clients(8).set(key, data)
    out = bytearray(100_003)
    assert clients(8).get(key, out) == 100_003
    assert out == data


# ---- rewrites leave only the new layout's keys ------------------------------------------


@pytest.mark.parametrize("first, second", [(16, 3), (8, 2), (3, 2)])
def test_fewer_stripes_leave_no_surplus(clients, key, raw, first: int, second: int) -> None:
    clients(first).set(key, _data(1000, seed=1))
    data = _data(1000, seed=2)
    clients(second).set(key, data)
    assert _keys(raw, key) == _sub_keys(key, second)
    out = bytearray(1000)
    assert clients(first).get(key, out) == 1000
    assert out == data


@pytest.mark.parametrize("striped", [2, 8, 16])
def test_plain_after_striped(clients, key, raw, striped: int) -> None:
    clients(striped).set(key, _data(1000, seed=1))
    data = _data(1000, seed=2)
    clients(1).set(key, data)
    assert _keys(raw, key) == {key.encode()}
    out = bytearray(1000)
    assert clients(striped).get(key, out) == 1000
    assert out == data


@pytest.mark.parametrize("striped", [2, 8, 16])
def test_striped_after_plain(clients, key, raw, striped: int) -> None:
    clients(1).set(key, _data(1000, seed=1))
    data = _data(1000, seed=2)
    clients(striped).set(key, data)
    assert _keys(raw, key) == _sub_keys(key, striped)
    out = bytearray(1000)
    assert clients(1).get(key, out) == 1000
    assert out == data


@pytest.mark.parametrize("writer, deleter", [(16, 2), (16, 1), (2, 16), (1, 8), (8, 1), (3, 3)])
def test_delete_removes_every_sub_key(clients, key, raw, writer: int, deleter: int) -> None:
    clients(writer).set(key, _data(1000))
    assert clients(deleter).delete(key) is True
    assert _keys(raw, key) == set()


def test_delete_sweeps_stripes_after_stripe_0_is_gone(clients, key, raw) -> None:
    # Stripe 0 expired or was evicted: the deleter's own stripe count still
    # reaches the rest.
    clients(8).set(key, _data(1000))
    raw("DEL", f"{key}:stripe:0")
    assert clients(8).delete(key) is True
    assert _keys(raw, key) == set()


# ---- stripe count by value size (stripes=None) ------------------------------------


@pytest.mark.parametrize("stripe_size", [4096, 1 << 20])
@pytest.mark.parametrize("multiple", [0.5, 1, 1.5, 8, 20])
def test_stripe_count_follows_the_value_size(redis_server, raw, key, stripe_size: int,
                                             multiple: float) -> None:
    size = int(stripe_size * multiple)
    count = stripe_count(size, stripe_size)
    data = _data(size)
    with RedisClient(redis_server.host, redis_server.port, stripe_size=stripe_size) as client:
        client.set(key, data)
        expected = {key.encode()} if count == 1 else _sub_keys(key, count)
        assert _keys(raw, key) == expected
        # Each stored string, with Redis's own few bytes, fits the budget;
        # above the connection count (4) the count divides evenly among them.
        for sub_key in expected:
            assert raw("STRLEN", sub_key) + 64 <= stripe_size
        assert count <= 4 or count % 4 == 0
        # The reader guesses the count from its buffer: right, too small and too big.
        for cap in (size, size * 3 + 1):
            out = bytearray(cap)
            assert client.get(key, out) == size and bytes(out[:size]) == data
        if count > 1:
            with pytest.raises(ValueError):
                client.get(key, bytearray(size - 1))


def test_default_layout_of_32_mib_fits_the_servers_allocator(redis_server, raw, key) -> None:
    # 16 stripes of 2 MiB + header would each take a 2.5 MiB block of
    # Redis's jemalloc (40 MiB in all); 20 stripes of 1.6 MiB take 1.75 MiB.
    data = _data(32 << 20)
    with RedisClient(redis_server.host, redis_server.port) as client:
        assert client.stripes is None and client.stripe_size == 2 << 20
        assert stripe_count(32 << 20) == 20
        client.set(key, data)
        assert _keys(raw, key) == _sub_keys(key, 20)
        used = sum(raw("MEMORY", "USAGE", k) for k in _sub_keys(key, 20))
        assert used <= 1.1 * len(data)
        out = bytearray(32 << 20)
        assert client.get(key, out) == len(data) and out == data


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
