"""The operator tool's logic: look at keys (inspect), walk the database
(scan) and remove what no reader can use (gc), over an AdminConnection.

What a stored string is comes from _stored_format; how it is printed is
__main__'s business. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Callable, NamedTuple, Optional

from lmcache_redis._resp_admin import AdminConnection
from lmcache_redis._stored_format import (
    ENCODED,
    HEADER_SIZE,
    REMOVABLE,
    VERBATIM,
    Layout,
    classify,
    header_position,
    header_problem,
    parse_header,
)
from lmcache_redis.exceptions import ResponseError

_PROBE_ATTEMPTS = 3


class Seen(NamedTuple):
    """One key as a probe found it. ``strlen`` and ``head`` (its first
    HEADER_SIZE bytes) are 0 and b"" for other types; ``memory`` is MEMORY
    USAGE, None where the server refuses that command."""

    key: bytes
    redis_type: str
    layout: Layout
    strlen: int
    head: bytes
    memory: Optional[int]

    @property
    def fingerprint(self) -> tuple:
        # What gc compares before removing: a writer that replaced the key
        # changed one of these (a new write id or set id is in the head).
        return (self.redis_type, self.layout.kind, self.strlen, self.head)


class Inspection(NamedTuple):
    seen: Seen
    ttl_ms: int  # PTTL: -1 for no TTL
    whole: Optional[bool]  # None: not a value of this library's (other type)
    whole_detail: str


def probe(conn: AdminConnection, key: bytes) -> Optional[Seen]:
    """Classifies ``key`` in one round trip; None when it does not exist."""
    for _ in range(_PROBE_ATTEMPTS):
        redis_type, strlen, head, memory = conn.pipeline(
            ("TYPE", key), ("STRLEN", key), ("GETRANGE", key, 0, HEADER_SIZE - 1),
            ("MEMORY", "USAGE", key))
        if isinstance(redis_type, ResponseError):
            raise redis_type
        memory = memory if isinstance(memory, int) else None
        if redis_type == "none":
            return None
        if redis_type != "string":
            return Seen(key, redis_type, classify(key, redis_type, 0, b""), 0, b"", memory)
        if isinstance(strlen, int) and isinstance(head, bytes):
            return Seen(key, redis_type, classify(key, redis_type, strlen, head), strlen, head,
                        memory)
        # WRONGTYPE: the key became another type between TYPE and STRLEN.
    raise ResponseError(f"{key!r} keeps changing type; try again")


def inspect(conn: AdminConnection, key: bytes) -> Optional[Inspection]:
    """Everything about one key, with every part header checked for an
    encoded value; None when the key does not exist."""
    seen = probe(conn, key)
    if seen is None:
        return None
    ttl_ms = conn.command("PTTL", key)
    kind = seen.layout.kind
    if kind == VERBATIM:
        whole, detail = True, ""
    elif kind == ENCODED:
        whole, detail = _parts_whole(conn, seen)
    elif kind in REMOVABLE:
        whole, detail = False, "reads as a miss; gc removes it"
    else:
        whole, detail = None, "not a value of this library"
    return Inspection(seen, ttl_ms, whole, detail)


def _parts_whole(conn: AdminConnection, seen: Seen) -> tuple[bool, str]:
    """Reads hdr(0..C-1) in one MULTI/EXEC (one snapshot, one round trip) and
    checks each against hdr(0), as a reader does."""
    first = seen.layout.header
    assert first is not None
    reads = [("GETRANGE", seen.key, pos, pos + HEADER_SIZE - 1)
             for pos in (header_position(first.length, first.count, i)
                         for i in range(first.count))]
    replies = conn.pipeline(("MULTI",), *reads, ("EXEC",))
    heads = replies[-1]
    if not isinstance(heads, list) or any(not isinstance(h, bytes) for h in heads):
        return False, "the key changed while it was inspected; run again"
    if heads[0] != seen.head:
        return False, "the key was replaced while it was inspected; run again"
    for i, data in enumerate(heads[1:], start=1):
        problem = (f"{len(data)} bytes" if len(data) < HEADER_SIZE
                   else header_problem(parse_header(data), i, first))
        if problem:
            return False, f"hdr({i}): {problem}"
    return True, ""


def scan(conn: AdminConnection, match: Optional[bytes] = None, count: int = 100,
         on_batch: Optional[Callable[[int], None]] = None) -> Iterator[Seen]:
    """Every key SCAN returns (each once; keys gone by the time they are
    probed are skipped). ``on_batch(n)`` is called after each SCAN batch of
    n keys, for progress."""
    args: tuple = ("COUNT", count) if match is None else ("MATCH", match, "COUNT", count)
    cursor = b"0"
    done: set = set()  # SCAN may return a key more than once
    while True:
        cursor, keys = conn.command("SCAN", cursor, *args)
        for key in keys:
            if key in done:
                continue
            done.add(key)
            seen = probe(conn, key)
            if seen is not None:
                yield seen
        if on_batch is not None:
            on_batch(len(keys))
        if cursor == b"0":
            return


def remove_if_unchanged(conn: AdminConnection, seen: Seen,
                        _before_exec: Optional[Callable[[], None]] = None
                        ) -> tuple[bool, Optional[Seen]]:
    """Deletes ``seen.key`` only if it still holds what was seen (a broken
    value or format-1 debris), so that a value a writer stored since is
    never removed. Returns (removed, the key as it was found now).

    WATCH first, then look again: a key that changed before the WATCH fails
    the comparison, and one that changes after it makes EXEC abort, so the
    DEL runs only on the very value that was checked. ``_before_exec`` runs
    between the check and MULTI: tests use it to play a racing writer."""
    if seen.layout.kind not in REMOVABLE:
        raise ValueError(f"refusing to remove a {seen.layout.kind} value")
    conn.command("WATCH", seen.key)
    try:
        now = probe(conn, seen.key)
    except BaseException:
        conn.command("UNWATCH")  # or a later EXEC, for another key, would abort
        raise
    if now is None or now.fingerprint != seen.fingerprint:
        conn.command("UNWATCH")
        return False, now
    if _before_exec is not None:
        _before_exec()
    exec_reply = conn.pipeline(("MULTI",), ("DEL", seen.key), ("EXEC",))[-1]
    if isinstance(exec_reply, ResponseError):
        raise exec_reply
    # A null EXEC reply: the key was written after the WATCH; left alone.
    return exec_reply == [1], now
