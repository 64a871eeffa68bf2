"""Round trips: what set stores, get returns, byte for byte, whatever the
size, stripe count and connection count."""

from __future__ import annotations


import numpy as np
import pytest

from lmcache_redis import RedisClient

MiB = 1 << 20
STRIPES = (1, 2, 4, 8)
CONNECTIONS = (1, 4, 8)


def _small_sizes(stripes: int) -> list[int]:
    """0, 1, every k*s-1, k*s, k*s+1 for a few k, and 4 MiB."""
    sizes = {0, 1, 4 * MiB}
    for k in (1, 2, 1000):
        sizes.update((k * stripes - 1, k * stripes, k * stripes + 1))
    return sorted(sizes)


def _data(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def _same(buffer: object, n: int, expected: bytes) -> bool:
    """The first n bytes of buffer equal expected (no copy of buffer)."""
    got = np.frombuffer(buffer, dtype=np.uint8, count=n)
    return n == len(expected) and bool(np.array_equal(got, np.frombuffer(expected, np.uint8)))


def _roundtrip(client: RedisClient, key: str, size: int, seed: int = 0) -> None:
    data = _data(size, seed)
    client.set(key, data)
    out = bytearray(size)
    try:
        assert client.get(key, out) == size
        assert _same(out, size, data)
    finally:
        client.delete(key)


@pytest.mark.parametrize(
    "stripes, connections, size",
    [(s, c, n) for s in STRIPES for c in CONNECTIONS for n in _small_sizes(s)],
)
def test_small_sizes(clients, key, stripes: int, connections: int, size: int) -> None:
    _roundtrip(clients(stripes, connections), key, size, seed=size)


@pytest.mark.parametrize(
    "stripes, connections",
    [(1, 1), (1, 8), (2, 4), (4, 1), (8, 4), (8, 8)],
)
def test_32_mib(clients, key, stripes: int, connections: int) -> None:
    _roundtrip(clients(stripes, connections), key, 32 * MiB, seed=32)


@pytest.mark.parametrize("stripes, connections", [(1, 4), (8, 8)])
def test_80_mib(clients, key, stripes: int, connections: int) -> None:
    _roundtrip(clients(stripes, connections), key, 80 * MiB, seed=80)


@pytest.mark.parametrize("size", [0, 5, 1000])
def test_get_returns_length_into_a_bigger_buffer(clients, key, size: int) -> None:
    client = clients(8, 4)
    data = _data(size, seed=7)
    client.set(key, data)
    out = bytearray(size + 100)
    assert client.get(key, out) == size
    assert _same(out, size, data)


@pytest.mark.parametrize("stripes", [1, 8])
@pytest.mark.parametrize("first, second", [(100_000, 1_000), (1_000, 100_000), (64, 0)])
def test_overwrite(clients, key, stripes: int, first: int, second: int) -> None:
    client = clients(stripes, 4)
    client.set(key, _data(first, seed=1))
    data = _data(second, seed=2)
    client.set(key, data)
    out = bytearray(max(first, second))
    assert client.get(key, out) == second
    assert _same(out, second, data)


@pytest.mark.parametrize(
    "suffix",
    [b"\x00", b"a\x00b", b"\r\n", b"line\r\nSET x y\r\n", b"\xff\xfe\x80",
     b"*1\r\n$4\r\nPING\r\n", b" ", b"$-1"],
    ids=["nul", "nul-inside", "crlf", "crlf-command", "not-utf8", "resp", "space", "resp-nil"],
)
@pytest.mark.parametrize("stripes", [1, 8])
def test_binary_keys(clients, key, stripes: int, suffix: bytes) -> None:
    client = clients(stripes, 4)
    binary_key = key.encode() + suffix
    data = _data(3000, seed=3)
    client.set(binary_key, data)
    out = bytearray(3000)
    assert client.get(binary_key, out) == 3000
    assert _same(out, 3000, data)
    assert client.get(key.encode(), out) is None  # not stored under the prefix
    assert client.delete(binary_key)


@pytest.mark.parametrize("text", ["ключ", "键🔑", "é\u0301", "tab\tand\nnewline"])
@pytest.mark.parametrize("stripes", [1, 8])
def test_unicode_str_keys(clients, key, stripes: int, text: str) -> None:
    client = clients(stripes, 4)
    str_key = key + text
    data = _data(2000, seed=4)
    client.set(str_key, data)
    out = bytearray(2000)
    assert client.get(str_key, out) == 2000
    assert _same(out, 2000, data)
    # A str key is its UTF-8 bytes.
    out2 = bytearray(2000)
    assert client.get(str_key.encode("utf-8"), out2) == 2000
    assert out2 == out
