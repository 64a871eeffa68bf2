"""The stored formats, as the operator tool sees them: README.md's "Stored
format (version 2)" and format 1's leftover sub-keys (debris).

The one place in the tool's Python that parses headers and classifies a
stored string. It does no I/O: callers hand it a key, the Redis type, the
string's length and its first HEADER_SIZE bytes, which is all it takes to
classify any key (both formats put a 32-byte header first).
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple, Optional

# Format 2 (README: "Stored format (version 2)").
MAGIC = b"\x89LMR"
FORMAT_VERSION = 2
HEADER_SIZE = 32
MAX_PART_COUNT = 256

# Format 1: sub-keys K:stripe:i (i in decimal), each a 32-byte header, then
# the stripe (csrc/stripe.h before format 2). Only ever recognised, to remove.
FORMAT1_MAGIC = b"LMRS"
FORMAT1_VERSION = 1
FORMAT1_SUBKEY = re.compile(rb"(.*):stripe:(0|[1-9][0-9]{0,9})", re.DOTALL)

# Both formats' headers: magic, u16 version, u16 header size, u32 index,
# u32 count, u64 value length, u64 write (format 1: set) id; little-endian.
_HEADER = struct.Struct("<4sHHIIQQ")
assert _HEADER.size == HEADER_SIZE

# Layout kinds (the classes scan counts).
VERBATIM = "verbatim"
ENCODED = "encoded"
BROKEN = "broken"
DEBRIS = "format-1 debris"
OTHER = "other type"
KINDS = (VERBATIM, ENCODED, BROKEN, DEBRIS, OTHER)
# What gc removes: nothing a reader can use.
REMOVABLE = (BROKEN, DEBRIS)


class Header(NamedTuple):
    """One decoded 32-byte header (either format; check .magic/.version)."""

    magic: bytes
    version: int
    header_size: int
    index: int
    count: int
    length: int
    write_id: int


class Layout(NamedTuple):
    """How one key is stored. ``header`` is hdr(0) for an encoded value,
    the stripe header for debris, else None; ``reason`` says why a value is
    broken; ``base_key`` is the format-1 value a debris sub-key belonged to."""

    kind: str
    header: Optional[Header] = None
    reason: str = ""
    base_key: Optional[bytes] = None


def parse_header(data: bytes) -> Header:
    """Decodes the first HEADER_SIZE bytes of ``data`` (which must be that
    long), checking nothing."""
    return Header(*_HEADER.unpack_from(data))


def part_length(length: int, count: int, i: int) -> int:
    """len(i): the payload bytes of part i."""
    base, rem = divmod(length, count)
    return base + (1 if i < rem else 0)


def header_position(length: int, count: int, i: int) -> int:
    """Where hdr(i) starts in the stored string: off(i) + 32·i."""
    base, rem = divmod(length, count)
    return i * base + min(i, rem) + HEADER_SIZE * i


def stored_length(length: int, count: int) -> int:
    """L + 32·C: the stored string's length for an encoded value."""
    return length + HEADER_SIZE * count


def header_problem(h: Header, index: int, first: Optional[Header] = None) -> str:
    """Why ``h`` is not a well-formed format-2 hdr(index) (matching hdr(0)
    ``first`` when given), or "" when it is."""
    if h.magic != MAGIC:
        return f"no magic (starts {h.magic!r})"
    if h.version != FORMAT_VERSION:
        return f"format version {h.version}, not {FORMAT_VERSION}"
    if h.header_size != HEADER_SIZE:
        return f"header size {h.header_size}, not {HEADER_SIZE}"
    if h.index != index:
        return f"part index {h.index}, not {index}"
    if first is None:
        if not 1 <= h.count <= MAX_PART_COUNT:
            return f"part count {h.count}, not in 1..{MAX_PART_COUNT}"
        return ""
    if (h.count, h.length, h.write_id) != (first.count, first.length, first.write_id):
        return "count, length or write id differ from hdr(0) (another write's part)"
    return ""


def classify(key: bytes, redis_type: str, strlen: int, head: bytes) -> Layout:
    """Classifies one key from its TYPE, STRLEN and first HEADER_SIZE bytes
    (GETRANGE 0 31; shorter when the string is)."""
    if redis_type != "string":
        return Layout(OTHER, reason=redis_type)
    if head.startswith(MAGIC):
        # README: encoded iff hdr(0) is well formed and the length is
        # exactly L + 32·C; anything else starting with the magic is broken.
        if strlen < HEADER_SIZE:
            return Layout(BROKEN, reason=f"{strlen} bytes, shorter than a header")
        h = parse_header(head)
        problem = header_problem(h, 0)
        if problem:
            return Layout(BROKEN, h, f"hdr(0): {problem}")
        expected = stored_length(h.length, h.count)
        if strlen != expected:
            how = "cut short" if strlen < expected else "appended to"
            return Layout(BROKEN, h, f"{how}: {strlen} bytes, not L + 32·C = {expected}")
        return Layout(ENCODED, h)
    debris = _format1_debris(key, strlen, head)
    if debris is not None:
        return debris
    return Layout(VERBATIM)


def _format1_debris(key: bytes, strlen: int, head: bytes) -> Optional[Layout]:
    """A format-1 sub-key: named K:stripe:i AND holding a format-1 header for
    stripe i. Both are required, so that a user's own key that merely has
    such a name (or such bytes) is never taken for debris and removed."""
    match = FORMAT1_SUBKEY.fullmatch(key)
    if match is None or strlen < HEADER_SIZE or not head.startswith(FORMAT1_MAGIC):
        return None
    h = parse_header(head)
    if (h.version != FORMAT1_VERSION or h.header_size != HEADER_SIZE
            or h.index != int(match.group(2)) or not h.index < h.count <= MAX_PART_COUNT):
        return None
    return Layout(DEBRIS, h, base_key=match.group(1))
