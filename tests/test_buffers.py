"""What set and get accept as memory (buffer protocol objects, raw
addresses), and how they refuse what they cannot use."""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Iterator

import numpy as np
import pytest

import lmcache_redis
from lmcache_redis import MAX_KEY_LEN, BufferTooSmallError, RedisClient

N = 100_003  # not a multiple of any stripe count used here


def _data(size: int = N, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


@pytest.fixture(scope="module", params=[1, 8], ids=["plain", "striped"])
def client(request, redis_server) -> Iterator[RedisClient]:
    with RedisClient(redis_server.host, redis_server.port, stripes=request.param,
                     connections=4) as c:
        yield c


# ---- buffers that work ----------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [bytes, bytearray, memoryview,
     lambda d: np.frombuffer(d, dtype=np.uint8).copy(),
     lambda d: np.frombuffer(d[: len(d) // 2 * 2], dtype=np.float16).reshape(-1, 1)],
    ids=["bytes", "bytearray", "memoryview", "numpy-uint8", "numpy-float16"],
)
def test_set_from(client, key, make) -> None:
    source = make(_data())
    nbytes = memoryview(source).nbytes
    client.set(key, source)
    out = bytearray(N)
    assert client.get(key, out) == nbytes
    assert out[:nbytes] == memoryview(source).cast("B")


def test_get_into_bytearray(client, key) -> None:
    data = _data()
    client.set(key, data)
    out = bytearray(N)
    assert client.get(key, out) == N
    assert out == data


def test_numpy_uint8(client, key) -> None:
    data = np.random.default_rng(1).integers(0, 256, N, dtype=np.uint8)
    client.set(key, data)
    out = np.empty(N, dtype=np.uint8)
    assert client.get(key, out) == N
    np.testing.assert_array_equal(out, data)


def test_numpy_float16_2d(client, key) -> None:
    # What counts is nbytes (2 bytes per element), not the element count.
    data = np.random.default_rng(2).standard_normal((123, 77)).astype(np.float16)
    client.set(key, data)
    out = np.empty((123, 77), dtype=np.float16)
    assert client.get(key, out) == data.nbytes == 123 * 77 * 2
    assert out.tobytes() == data.tobytes()


def test_set_from_memoryview_slice(client, key) -> None:
    data = _data()
    client.set(key, memoryview(data)[1000:2001])
    out = bytearray(2000)
    assert client.get(key, out) == 1001
    assert out[:1001] == data[1000:2001]


def test_get_into_memoryview_slice(client, key) -> None:
    data = _data(1001)
    client.set(key, data)
    big = bytearray(b"\xaa" * 5000)
    assert client.get(key, memoryview(big)[2000:3001]) == 1001
    assert big[2000:3001] == data
    assert big[:2000] == b"\xaa" * 2000
    assert big[3001:] == b"\xaa" * 1999


def test_get_into_numpy_slice(client, key) -> None:
    data = _data(1001)
    client.set(key, data)
    big = np.full(5000, 0xAA, dtype=np.uint8)
    assert client.get(key, big[2000:3001]) == 1001
    assert big[2000:3001].tobytes() == data
    assert (big[:2000] == 0xAA).all() and (big[3001:] == 0xAA).all()


def test_mmap(client, key) -> None:
    data = _data()
    source = mmap.mmap(-1, N)
    source.write(data)
    client.set(key, source)
    out = mmap.mmap(-1, N)
    assert client.get(key, out) == N
    assert out[:] == data
    source.close()
    out.close()


def test_ptr_with_numpy(client, key) -> None:
    data = np.random.default_rng(3).integers(0, 256, N, dtype=np.uint8)
    client.set_ptr(key, data.ctypes.data, data.nbytes)
    out = np.zeros(N, dtype=np.uint8)
    assert client.get_ptr(key, out.ctypes.data, out.nbytes) == N
    np.testing.assert_array_equal(out, data)


def test_ptr_with_ctypes(client, key) -> None:
    data = _data()
    source = ctypes.create_string_buffer(data, N)
    client.set_ptr(key, ctypes.addressof(source), N)
    out = (ctypes.c_uint8 * N)()
    assert client.get_ptr(key, ctypes.addressof(out), N) == N
    assert bytes(out) == data
    # ctypes arrays are buffers too.
    out2 = (ctypes.c_uint8 * N)()
    assert client.get(key, out2) == N
    assert bytes(out2) == data


def test_ptr_get_into_the_middle(client, key) -> None:
    data = _data(1001)
    client.set(key, data)
    big = np.full(5000, 0xAA, dtype=np.uint8)
    assert client.get_ptr(key, big.ctypes.data + 2000, 1001) == 1001
    assert big[2000:3001].tobytes() == data
    assert (big[:2000] == 0xAA).all() and (big[3001:] == 0xAA).all()


def test_ptr_empty_value_at_null(client, key) -> None:
    client.set_ptr(key, 0, 0)
    assert client.get_ptr(key, 0, 0) == 0
    assert client.get(key, bytearray(10)) == 0


def test_ptr_miss(client, key) -> None:
    out = np.zeros(16, dtype=np.uint8)
    assert client.get_ptr(key, out.ctypes.data, 16) is None


# ---- buffer too small -------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, 1, N - 1])
def test_buffer_too_small(client, key, capacity: int) -> None:
    data = _data()
    client.set(key, data)
    with pytest.raises(BufferTooSmallError) as info:
        client.get(key, bytearray(capacity))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, lmcache_redis.RedisError)
    assert info.value.needed == N
    assert str(N) in str(info.value) and str(capacity) in str(info.value)
    # The same client (and its connections) still works: same key, then another.
    out = bytearray(N)
    assert client.get(key, out) == N
    assert out == data
    other = _data(5000, seed=9)
    client.set(key + ":other", other)
    assert client.get(key + ":other", bytearray(5000)) == 5000
    client.delete(key + ":other")


def test_buffer_too_small_ptr(client, key) -> None:
    data = _data()
    client.set(key, data)
    out = np.zeros(N, dtype=np.uint8)
    with pytest.raises(BufferTooSmallError) as info:
        client.get_ptr(key, out.ctypes.data, N - 1)
    assert info.value.needed == N
    assert client.get_ptr(key, out.ctypes.data, N) == N
    assert out.tobytes() == data


def test_many_too_small_in_a_row_keep_connections_in_step(client, key) -> None:
    # Every connection skips an unplaced payload at least once.
    data = _data()
    client.set(key, data)
    for _ in range(8):
        with pytest.raises(BufferTooSmallError):
            client.get(key, bytearray(100))
    out = bytearray(N)
    assert client.get(key, out) == N
    assert out == data


# ---- refused buffers --------------------------------------------------------


def _read_only_numpy() -> np.ndarray:
    a = np.zeros(N, dtype=np.uint8)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "make",
    [lambda: bytes(N), lambda: memoryview(bytearray(N)).toreadonly(), _read_only_numpy],
    ids=["bytes", "readonly-memoryview", "readonly-numpy"],
)
def test_get_into_read_only_buffer(client, key, make) -> None:
    client.set(key, b"abc")
    with pytest.raises(ValueError):
        client.get(key, make())


@pytest.mark.parametrize(
    "make",
    [lambda: np.zeros(2 * N, dtype=np.uint8)[::2],
     lambda: np.zeros((100, 100), dtype=np.uint8).T,
     lambda: memoryview(bytearray(2 * N))[::2]],
    ids=["numpy-step", "numpy-transposed", "memoryview-step"],
)
@pytest.mark.parametrize("op", ["get", "set"])
def test_non_contiguous_buffer(client, key, op: str, make) -> None:
    client.set(key, b"abc")
    with pytest.raises(ValueError):
        if op == "get":
            client.get(key, make())
        else:
            client.set(key, make())


# get(key, None) is get(key), which returns a new bytes object
# (tests/test_python_face.py), so None is not a bad buffer for get.
@pytest.mark.parametrize("op, buffer", [
    (op, buffer) for op in ("get", "set") for buffer in (None, 5, "text", [1, 2, 3], object())
    if not (op == "get" and buffer is None)])
def test_not_a_buffer(client, key, op: str, buffer) -> None:
    with pytest.raises(TypeError):
        getattr(client, op)(key, buffer)


# ---- refused keys -----------------------------------------------------------


@pytest.mark.parametrize("bad_key", [None, 5, 1.5, bytearray(b"k"), memoryview(b"k"), ["k"]],
                         ids=["None", "int", "float", "bytearray", "memoryview", "list"])
@pytest.mark.parametrize("op", ["get", "set", "exists", "delete", "set_ptr", "get_ptr"])
def test_wrong_key_type(client, op: str, bad_key) -> None:
    buf = bytearray(8)
    args = {"get": (buf,), "set": (buf,), "exists": (), "delete": (),
            "set_ptr": (0, 0), "get_ptr": (0, 0)}[op]
    with pytest.raises(TypeError):
        getattr(client, op)(bad_key, *args)


@pytest.mark.parametrize("empty", ["", b""], ids=["str", "bytes"])
@pytest.mark.parametrize("op", ["get", "set", "exists", "delete"])
def test_empty_key(client, op: str, empty) -> None:
    args = (bytearray(8),) if op in ("get", "set") else ()
    with pytest.raises(ValueError):
        getattr(client, op)(empty, *args)


def test_key_length_limit(client) -> None:
    longest = b"k" * MAX_KEY_LEN
    client.set(longest, b"value")
    assert client.get(longest, bytearray(5)) == 5
    assert client.delete(longest)
    with pytest.raises(ValueError):
        client.set(longest + b"k", b"value")
    with pytest.raises(ValueError):
        client.get(longest + b"k", bytearray(5))
    # The limit is in bytes, of the UTF-8 encoding for a str key.
    with pytest.raises(ValueError):
        client.set("é" * (MAX_KEY_LEN // 2 + 1), b"value")


# ---- refused ttl and raw-memory arguments -------------------------------------


@pytest.mark.parametrize("ttl", [0, 0.0, -1, -0.5, float("nan"), float("inf")])
def test_bad_ttl(client, key, ttl) -> None:
    with pytest.raises(ValueError):
        client.set(key, b"abc", ttl=ttl)
    with pytest.raises(ValueError):
        client.set_ptr(key, 0, 0, ttl=ttl)
    assert not client.exists(key)


@pytest.mark.parametrize("ttl", ["10", True, [1]])
def test_ttl_wrong_type(client, key, ttl) -> None:
    with pytest.raises(TypeError):
        client.set(key, b"abc", ttl=ttl)


@pytest.mark.parametrize("op", ["get_ptr", "set_ptr"])
def test_ptr_negative_nbytes(client, key, op: str) -> None:
    out = np.zeros(16, dtype=np.uint8)
    with pytest.raises(ValueError):
        getattr(client, op)(key, out.ctypes.data, -1)


@pytest.mark.parametrize("op", ["get_ptr", "set_ptr"])
@pytest.mark.parametrize("address, nbytes", [(-1, 16), (0, 16), (1 << 64, 16)],
                         ids=["negative", "null", "too-big"])
def test_ptr_bad_address(client, key, op: str, address: int, nbytes: int) -> None:
    with pytest.raises(ValueError):
        getattr(client, op)(key, address, nbytes)


@pytest.mark.parametrize("op", ["get_ptr", "set_ptr"])
@pytest.mark.parametrize("address, nbytes", [(1.0, 16), (None, 16), (4096, 16.0), (4096, "16")])
def test_ptr_non_integer(client, key, op: str, address, nbytes) -> None:
    with pytest.raises(TypeError):
        getattr(client, op)(key, address, nbytes)


def test_refusals_send_nothing(client, key) -> None:
    before = client.stats()["commands"]
    for call in (lambda: client.get(key, b"read-only"),
                 lambda: client.set(b"", b"x"),
                 lambda: client.set(key, b"x", ttl=0),
                 lambda: client.get_ptr(key, 0, -1)):
        with pytest.raises(ValueError):
            call()
    assert client.stats()["commands"] == before
