"""``python -m lmcache_redis``: the operator tool. The command line and
what it prints; the work is done by lmcache_redis._admin."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, TextIO

from lmcache_redis import _admin
from lmcache_redis._resp_admin import AdminConnection
from lmcache_redis._stored_format import (
    BROKEN,
    DEBRIS,
    ENCODED,
    KINDS,
    OTHER,
    REMOVABLE,
    part_length,
)
from lmcache_redis._url import parse_url
from lmcache_redis.exceptions import RedisError

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_USAGE = 2  # argparse's own
EXIT_ERROR = 3

_DESCRIPTION = """\
Operator tool for values stored by lmcache_redis (README: "Stored format
(version 2)" and "Operator tool"). URL: what RedisClient.from_url accepts,
e.g. redis://[[user]:password@]host[:port][/db], rediss://host:port?ssl_ca_certs=/ca.pem,
unix:///run/redis.sock?db=1. Not for a Redis Cluster yet: it refuses
redis-cluster:// URLs, and a plain URL that reaches a cluster's node."""

_EPILOG = """\
exit status:
  0  ok: scan found no broken value and no debris; inspect found a readable
     value or a key of another type; gc finished (also as a dry run)
  1  scan found broken values or format-1 debris; inspect: the key is
     missing, broken, format-1 debris, or an encoded value that is not whole
  2  usage error (bad arguments or URL; a Redis Cluster, which it refuses)
  3  the server could not be used: unreachable, authentication, error reply"""


def main(argv: Optional[list] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        options = parse_url(args.url)
    except ValueError as exc:
        parser.error(f"bad URL: {exc}")
    try:
        with AdminConnection.connect(options) as conn:
            return args.run(conn, args, sys.stdout)
    except ValueError as exc:  # options RedisClient refuses as well
        parser.error(str(exc))
    except BrokenPipeError:
        # The reader went away (`... | head`): quietly, and without Python
        # failing once more when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # as if killed by SIGPIPE, as other commands in a pipe are
    except (RedisError, OSError) as exc:
        print(f"lmcache_redis: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nlmcache_redis: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lmcache_redis", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "inspect", help="show how one key is stored",
        description="Type, layout, value and stored length, write id, TTL, MEMORY USAGE "
                    "and whether the value is whole (every part header checked).")
    p.add_argument("url", metavar="URL")
    p.add_argument("key", metavar="KEY", type=os.fsencode)
    p.set_defaults(run=_run_inspect)

    def walk_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("url", metavar="URL")
        p.add_argument("--match", metavar="PATTERN", type=os.fsencode,
                       help="only keys matching this SCAN MATCH pattern")
        p.add_argument("--count", metavar="N", type=_positive, default=100,
                       help="SCAN COUNT hint (default 100)")
        p.add_argument("--progress", action="store_true",
                       help="show progress on stderr even when it is not a terminal")

    p = commands.add_parser(
        "scan", help="classify every key and summarize",
        description="SCAN the database and classify every key: verbatim value, encoded value, "
                    "broken value, format-1 debris, other type. Prints keys and MEMORY USAGE "
                    "per class, then the broken values and debris. Part headers after hdr(0) "
                    "are not read (inspect does).")
    walk_options(p)
    p.set_defaults(run=_run_scan)

    p = commands.add_parser(
        "gc", help="remove broken values and format-1 debris (dry run by default)",
        description="Remove broken values and format-1 debris. Without --yes nothing is "
                    "removed: it prints what would be and the memory that would be freed. "
                    "A key is removed only if it still holds what the scan saw (WATCH, "
                    "check, MULTI/DEL/EXEC), never a value a writer has stored since.")
    walk_options(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="yes", action="store_false",
                      help="only print what would be removed (the default)")
    mode.add_argument("--yes", dest="yes", action="store_true", help="remove them")
    p.set_defaults(run=_run_gc, yes=False)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def show_key(key: bytes) -> str:
    """A key for printing: UTF-8, other bytes as \\xNN."""
    return key.decode("utf-8", "backslashreplace")


# ---- inspect -------------------------------------------------------------------


def _run_inspect(conn: AdminConnection, args: argparse.Namespace, out: TextIO) -> int:
    found = _admin.inspect(conn, args.key)
    if found is None:
        print(f"{show_key(args.key)}: no such key", file=out)
        return EXIT_FOUND
    seen = found.seen
    layout, h = seen.layout, seen.layout.header
    rows = [("key", show_key(seen.key)), ("type", seen.redis_type), ("layout", describe(seen))]
    if seen.redis_type == "string":
        if layout.kind in (ENCODED, DEBRIS):
            rows.append(("value length", str(h.length)))
        elif layout.kind != BROKEN:
            rows.append(("value length", str(seen.strlen)))
        rows.append(("stored length", str(seen.strlen)))
        if layout.kind in (ENCODED, DEBRIS):
            rows.append(("write id", f"{h.write_id:016x}"))
    rows.append(("ttl", "none" if found.ttl_ms < 0 else f"{found.ttl_ms / 1000:.3f} s"))
    rows.append(("memory usage", _bytes(seen.memory)))
    if found.whole is None:
        rows.append(("whole", f"n/a ({found.whole_detail})"))
    else:
        rows.append(("whole", "yes" if found.whole else f"no: {found.whole_detail}"))
    width = max(len(name) for name, _ in rows) + 1
    for name, value in rows:
        print(f"{name + ':':<{width}} {value}", file=out)
    readable = found.whole or found.whole is None
    return EXIT_OK if readable else EXIT_FOUND


def describe(seen: _admin.Seen) -> str:
    """The layout in one line."""
    layout, h = seen.layout, seen.layout.header
    if layout.kind == ENCODED:
        sizes: dict = {}
        for i in range(h.count):
            n = part_length(h.length, h.count, i)
            sizes[n] = sizes.get(n, 0) + 1
        parts = " + ".join(f"{c} × {n} B" for n, c in sizes.items())
        return f"encoded, {h.count} part{'s' if h.count > 1 else ''} ({parts})"
    if layout.kind == BROKEN:
        return f"broken value: {layout.reason}"
    if layout.kind == DEBRIS:
        return (f"format-1 debris: stripe {h.index} of {h.count} "
                f"of {show_key(layout.base_key)!r}")
    return f"{OTHER} ({seen.redis_type})" if layout.kind == OTHER else layout.kind


def _bytes(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n} bytes"


# ---- scan and gc ---------------------------------------------------------------


class _Progress:
    """keys scanned / DBSIZE on stderr, rewritten in place at most 5 times
    a second; only when stderr is a terminal or --progress asks."""

    def __init__(self, conn: AdminConnection, wanted: bool) -> None:
        self.enabled = wanted or sys.stderr.isatty()
        self.total = conn.command("DBSIZE") if self.enabled else 0
        self.scanned = 0
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.scanned += n
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.2:
            self.last = now
            # With --match SCAN returns only matching keys, so this
            # undercounts the way through the database.
            print(f"\rscanned {self.scanned} / {self.total} keys", end="",
                  file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled:
            print(f"\rscanned {self.scanned} / {self.total} keys", file=sys.stderr, flush=True)


def _run_scan(conn: AdminConnection, args: argparse.Namespace, out: TextIO) -> int:
    progress = _Progress(conn, args.progress)
    keys = {kind: 0 for kind in KINDS}
    memory = {kind: 0 for kind in KINDS}
    unknown_memory = False
    removable: list = []
    for seen in _admin.scan(conn, args.match, args.count, progress):
        kind = seen.layout.kind
        keys[kind] += 1
        memory[kind] += seen.memory or 0
        unknown_memory |= seen.memory is None
        if kind in REMOVABLE:
            removable.append(seen)
    progress.finish()
    print(f"{sum(keys.values())} keys", file=out)
    width = max(len(kind) for kind in KINDS) + 1
    for kind in KINDS:
        print(f"{kind + ':':<{width}} {keys[kind]:>9} keys {memory[kind]:>15} bytes", file=out)
    if unknown_memory:
        print("(MEMORY USAGE refused for some keys: their memory is not counted)", file=out)
    _list(removable, out)
    return EXIT_FOUND if removable else EXIT_OK


def _list(found: list, out: TextIO) -> None:
    for kind, title in ((BROKEN, "broken values"), (DEBRIS, "format-1 debris")):
        of_kind = [seen for seen in found if seen.layout.kind == kind]
        if of_kind:
            print(f"{title}:", file=out)
            for seen in of_kind:
                print(f"  {show_key(seen.key)}  ({describe(seen)})", file=out)


def _run_gc(conn: AdminConnection, args: argparse.Namespace, out: TextIO) -> int:
    progress = _Progress(conn, args.progress)
    found = [seen for seen in _admin.scan(conn, args.match, args.count, progress)
             if seen.layout.kind in REMOVABLE]
    progress.finish()
    freed = sum(seen.memory or 0 for seen in found)
    if not args.yes:
        _list(found, out)
        print(f"dry run: would remove {len(found)} keys, freeing {freed} bytes; "
              f"nothing removed (--yes removes them)", file=out)
        return EXIT_OK
    removed, freed = 0, 0
    for seen in found:
        ok, now = _admin.remove_if_unchanged(conn, seen)
        if ok:
            removed += 1
            freed += seen.memory or 0
            print(f"removed {show_key(seen.key)}  ({describe(seen)})", file=out)
        else:
            if now is None:
                what = "gone"
            elif now.fingerprint == seen.fingerprint:
                what = "written to while it was being removed"
            else:
                what = f"now {describe(now)}"
            print(f"kept {show_key(seen.key)}: changed since the scan ({what})", file=out)
    print(f"removed {removed} keys, freed {freed} bytes; "
          f"{len(found) - removed} changed since the scan and were kept", file=out)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
