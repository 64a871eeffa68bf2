"""Self-verifying values and the stored format 2 (README, "Stored format
(version 2)"), for the tests that look at what the server holds.

A value is named by a 64-bit tag: its 8-byte words are ``tag + i * M``
(little-endian, the last word cut to the value's length). The first word is
the tag itself, so a reader learns from the bytes alone which write it is
looking at and checks every other word against it: a value stitched
together from two writes, or a part placed at the wrong offset, differs
from both writes at every word of the foreign piece. Cheap to make and to
check, even at hundreds of MiB (checked in 8 MiB pieces).
"""

from __future__ import annotations

import struct
from typing import Optional

import numpy as np

MiB = 1 << 20
MAGIC = b"\x89LMR"
HEADER = struct.Struct("<4sHHIIQQ")  # magic, version, header size, index, count, length, write id
_M = np.uint64(0x9E3779B97F4A7C15)
_PIECE_WORDS = 1 << 20  # 8 MiB


def fresh_tag(rng: np.random.Generator) -> int:
    """A random tag whose value does not begin with the format's magic."""
    while True:
        tag = int(rng.integers(1, 2**63)) * 2 + 1
        if struct.pack("<Q", tag)[:4] != MAGIC:
            return tag


def _words(tag: int, start: int, stop: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        w = np.arange(start, stop, dtype=np.uint64)
        w *= _M
        w += np.uint64(tag)
    return w


def make(tag: int, nbytes: int) -> np.ndarray:
    """The value of ``nbytes`` bytes named by ``tag`` (a C-contiguous uint8 array)."""
    return _words(tag, 0, (nbytes + 7) // 8).view(np.uint8)[:nbytes]


def tag_of(buf, n: int) -> Optional[int]:
    """The tag of the whole value in ``buf[:n]``, or None when it is not one
    (torn, shifted, damaged)."""
    view = np.frombuffer(memoryview(buf).cast("B"), dtype=np.uint8)[:n]
    if n < 8:
        return None
    tag = int(view[:8].view(np.uint64)[0])
    nwords = (n + 7) // 8
    for start in range(0, nwords, _PIECE_WORDS):
        stop = min(nwords, start + _PIECE_WORDS)
        expected = _words(tag, start, stop).view(np.uint8)
        lo, hi = start * 8, min(n, stop * 8)
        if not np.array_equal(view[lo:hi], expected[:hi - lo]):
            return None
    return tag


# ---- format 2 -------------------------------------------------------------------


def part(length: int, count: int, i: int) -> tuple[int, int]:
    """(offset, length) of part i of a value of ``length`` bytes in ``count`` parts."""
    base, rem = divmod(length, count)
    return i * base + min(i, rem), base + (1 if i < rem else 0)


def header_at(length: int, count: int, i: int) -> int:
    """Where hdr(i) starts in the stored string."""
    return part(length, count, i)[0] + HEADER.size * i


def encode(value: bytes, count: int, write_id: int, version: int = 2) -> bytes:
    """The stored string of ``value`` in ``count`` parts (what the core
    writes), written from README's description; ``version`` other than 2
    makes headers a reader must refuse. The tests' one encoder (the fault
    server's pretend values and the operator tool's tests use it too)."""
    out = []
    for i in range(count):
        off, n = part(len(value), count, i)
        out.append(HEADER.pack(MAGIC, version, HEADER.size, i, count, len(value), write_id))
        out.append(value[off:off + n])
    return b"".join(out)


def decode(stored: bytes) -> tuple[list[tuple], bytes]:
    """The headers (as HEADER tuples) and the value of an encoded string;
    asserts every documented invariant on the way."""
    magic, version, hsize, index, count, length, write_id = HEADER.unpack_from(stored, 0)
    assert (magic, version, hsize, index) == (MAGIC, 2, 32, 0)
    assert 1 <= count <= 256
    assert len(stored) == length + 32 * count
    headers, value = [], []
    for i in range(count):
        at = header_at(length, count, i)
        h = HEADER.unpack_from(stored, at)
        assert h == (MAGIC, 2, 32, i, count, length, write_id), (i, h)
        headers.append(h)
        off, n = part(length, count, i)
        value.append(stored[at + 32:at + 32 + n])
    return headers, b"".join(value)
