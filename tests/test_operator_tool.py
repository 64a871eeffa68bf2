"""The operator tool, ``python -m lmcache_redis`` (inspect, scan, gc), run in a
subprocess against a real redis-server of each test's own.

Every stored value is made here with redis-py, from README.md's format
description (encode_v2, format1_stripe below), not with the C core's
writer: the tool is checked against the spec, not against the library.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys

import pytest
import redis

from lmcache_redis import _admin
from lmcache_redis._resp_admin import AdminConnection
from lmcache_redis._stored_format import classify
from lmcache_redis._url import parse_url
from lmcache_redis._testing import make_test_certificates
from selfcheck import encode

# README "Stored format (version 2)": the 32-byte little-endian header.
HDR = struct.Struct("<4sHHIIQQ")
WRITE_ID = 0x0123456789ABCDEF


def encode_v2(value: bytes, count: int, write_id: int = WRITE_ID) -> bytes:
    """hdr(0) | part(0) | ... | hdr(C-1) | part(C-1), as README specifies."""
    return encode(value, count, write_id)


def format1_stripe(i: int, count: int, total: int, set_id: int = 7) -> bytes:
    """Format 1's sub-key K:stripe:i: magic LMRS, version 1, header size 32."""
    base, rem = divmod(total, count)
    return HDR.pack(b"LMRS", 1, 32, i, count, total, set_id) + b"s" * (base + (i < rem))


VALUE = bytes(range(256)) * 781 + b"x"  # 199937 bytes: 4 parts of unequal size
ENCODED = encode_v2(VALUE, 4)
NOT_WHOLE = bytearray(ENCODED)
NOT_WHOLE[2 * 49984 + 1 + 2 * 32 + 24] ^= 1  # hdr(2)'s write id: at off(2) + 32·2, +24

VERBATIM_KEYS = {b"plain:small": b"hello", b"plain:big": os.urandom(300_000),
                 b"plain:empty": b"", b"bin\xffkey": b"binary key",
                 # format-1 look-alikes that are a user's own values:
                 b"user:stripe:0": b"not a stripe header" * 3,
                 b"lmrs-bytes": format1_stripe(0, 3, 30)}
ENCODED_KEYS = {b"enc:four": ENCODED, b"enc:one": encode_v2(b"\x89LMR as data", 1),
                b"enc:notwhole": bytes(NOT_WHOLE)}
BROKEN_KEYS = {b"bad:cut": ENCODED[:-10], b"bad:appended": ENCODED + b"!",
               b"bad:version": HDR.pack(b"\x89LMR", 3, 32, 0, 1, 4, 1) + b"data",
               b"bad:count": HDR.pack(b"\x89LMR", 2, 32, 0, 0, 0, 1),
               b"bad:short": b"\x89LMR\x02\x00"}
DEBRIS_KEYS = {b"old:stripe:%d" % i: format1_stripe(i, 3, 3000) for i in range(3)}
OTHER_KEYS = {b"a-hash", b"a-list"}


@pytest.fixture
def server(own_server):
    """A server of the test's own holding one key of every class."""
    r = redis.Redis(own_server.host, own_server.port)
    for group in (VERBATIM_KEYS, ENCODED_KEYS, BROKEN_KEYS, DEBRIS_KEYS):
        for k, v in group.items():
            r.set(k, v)
    r.expire(b"enc:four", 1000)
    r.hset(b"a-hash", "f", "v")
    r.rpush(b"a-list", "x")
    own_server.r = r
    yield own_server
    r.close()


def tool(*args: str, check_rc: int | None = None) -> subprocess.CompletedProcess:
    # -P: import the installed package, not the source tree (tools/run-tests).
    proc = subprocess.run([sys.executable, "-P", "-m", "lmcache_redis", *args],
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.stdout, proc.stderr)
    return proc


def fields(stdout: str) -> dict:
    """inspect's "name: value" lines."""
    pairs = (line.partition(":") for line in stdout.splitlines())
    return {name: value.strip() for name, _, value in pairs}


def summary(stdout: str) -> dict:
    """scan's "<class>: N keys M bytes" lines: class -> (N, M)."""
    found = re.findall(r"^(.+?):\s+(\d+) keys\s+(\d+) bytes$", stdout, re.M)
    return {kind: (int(n), int(m)) for kind, n, m in found}


# ---- inspect -------------------------------------------------------------------


def test_inspect_encoded(server) -> None:
    f = fields(tool("inspect", server.url, "enc:four", check_rc=0).stdout)
    assert f["type"] == "string"
    assert f["layout"] == "encoded, 4 parts (1 × 49985 B + 3 × 49984 B)"
    assert f["value length"] == str(len(VALUE))
    assert f["stored length"] == str(len(VALUE) + 4 * 32)
    assert f["write id"] == "0123456789abcdef"
    assert 990 < float(f["ttl"].split()[0]) <= 1000
    assert int(f["memory usage"].split()[0]) >= len(ENCODED)
    assert f["whole"] == "yes"


def test_inspect_one_part_value_starting_with_the_magic(server) -> None:
    f = fields(tool("inspect", server.url, "enc:one", check_rc=0).stdout)
    assert f["layout"] == "encoded, 1 part (1 × 12 B)"
    assert (f["whole"], f["ttl"]) == ("yes", "none")


def test_inspect_encoded_with_a_foreign_part_is_not_whole(server) -> None:
    f = fields(tool("inspect", server.url, "enc:notwhole", check_rc=1).stdout)
    assert f["layout"].startswith("encoded, 4 parts")
    assert f["whole"].startswith("no: hdr(2): ")


def test_inspect_verbatim(server) -> None:
    f = fields(tool("inspect", server.url, "plain:big", check_rc=0).stdout)
    assert (f["layout"], f["value length"], f["stored length"]) == ("verbatim", "300000", "300000")
    assert "write id" not in f and f["whole"] == "yes"
    # a binary key, given as the bytes the shell passes
    f = fields(tool("inspect", server.url, os.fsdecode(b"bin\xffkey"), check_rc=0).stdout)
    assert f["key"] == "bin\\xffkey" and f["layout"] == "verbatim"


@pytest.mark.parametrize("key, reason", [
    ("bad:cut", "cut short: 200055 bytes, not L + 32·C = 200065"),
    ("bad:appended", "appended to: 200066 bytes"),
    ("bad:version", "hdr(0): format version 3, not 2"),
    ("bad:count", "hdr(0): part count 0, not in 1..256"),
    ("bad:short", "6 bytes, shorter than a header"),
])
def test_inspect_broken(server, key, reason) -> None:
    f = fields(tool("inspect", server.url, key, check_rc=1).stdout)
    assert f["layout"].startswith("broken value: " + reason)
    assert f["whole"].startswith("no")


def test_inspect_debris_and_other_types_and_missing(server) -> None:
    f = fields(tool("inspect", server.url, "old:stripe:1", check_rc=1).stdout)
    assert f["layout"] == "format-1 debris: stripe 1 of 3 of 'old'"
    assert (f["value length"], f["write id"]) == ("3000", "0000000000000007")
    f = fields(tool("inspect", server.url, "a-hash", check_rc=0).stdout)
    assert (f["type"], f["layout"]) == ("hash", "other type (hash)")
    assert "stored length" not in f
    proc = tool("inspect", server.url, "nope", check_rc=1)
    assert proc.stdout == "nope: no such key\n"


# ---- scan ----------------------------------------------------------------------


def test_scan_counts_every_class(server) -> None:
    proc = tool("scan", server.url, "--count", "3", check_rc=1)
    counts = summary(proc.stdout)
    assert {k: n for k, (n, _) in counts.items()} == {
        "verbatim": len(VERBATIM_KEYS), "encoded": len(ENCODED_KEYS),
        "broken": len(BROKEN_KEYS), "format-1 debris": len(DEBRIS_KEYS), "other type": 2}
    assert counts["encoded"][1] >= 2 * len(ENCODED)  # MEMORY USAGE summed
    listed = proc.stdout.split("broken values:\n", 1)[1]
    for key in [*BROKEN_KEYS, *DEBRIS_KEYS]:
        assert f"  {key.decode()}  (" in listed
    for key in [*VERBATIM_KEYS, *ENCODED_KEYS]:
        assert f"  {key.decode(errors='backslashreplace')}  (" not in listed
    assert proc.stderr == ""  # progress only on a terminal or with --progress


def test_scan_match_and_progress(server) -> None:
    proc = tool("scan", server.url, "--match", "enc:*", "--progress", check_rc=0)
    assert summary(proc.stdout)["encoded"][0] == 3
    assert sum(n for n, _ in summary(proc.stdout).values()) == 3
    total = server.r.dbsize()
    assert proc.stderr.rstrip().endswith(f"scanned 3 / {total} keys")


# ---- gc ------------------------------------------------------------------------


def all_keys(r: redis.Redis) -> dict:
    return {k: (r.type(k), r.get(k) if r.type(k) == b"string" else None) for k in r.keys()}


def test_gc_is_a_dry_run_by_default(server) -> None:
    before = all_keys(server.r)
    for extra in ((), ("--dry-run",)):
        proc = tool("gc", server.url, *extra, check_rc=0)
        assert "dry run: would remove 8 keys, freeing " in proc.stdout
        assert "bad:cut" in proc.stdout and "old:stripe:2" in proc.stdout
        assert all_keys(server.r) == before


def test_gc_yes_removes_exactly_broken_values_and_debris(server) -> None:
    before = all_keys(server.r)
    proc = tool("gc", server.url, "--yes", check_rc=0)
    assert "removed 8 keys, freed " in proc.stdout
    assert "0 changed since the scan and were kept" in proc.stdout
    gone = {*BROKEN_KEYS, *DEBRIS_KEYS}
    assert all_keys(server.r) == {k: v for k, v in before.items() if k not in gone}
    tool("scan", server.url, check_rc=0)


def test_gc_match_limits_removal(server) -> None:
    tool("gc", server.url, "--match", "old:*", "--yes", check_rc=0)
    assert not server.r.exists(*DEBRIS_KEYS) and server.r.exists(*BROKEN_KEYS) == 5


def test_removal_spares_a_value_replaced_after_the_scan(server) -> None:
    options = parse_url(server.url)
    with AdminConnection.connect(options) as conn:
        seen = {s.key: s for s in _admin.scan(conn)}
        # replaced before the removal looks again: the check finds a value
        server.r.set(b"bad:cut", ENCODED)
        removed, now = _admin.remove_if_unchanged(conn, seen[b"bad:cut"])
        assert not removed and now.layout.kind == "encoded"
        # a format-1 writer still running rewrote a stripe (a new set id)
        server.r.set(b"old:stripe:0", format1_stripe(0, 3, 3000, set_id=8))
        assert not _admin.remove_if_unchanged(conn, seen[b"old:stripe:0"])[0]
        # replaced after the check, before MULTI/DEL/EXEC: WATCH aborts it
        removed, _ = _admin.remove_if_unchanged(
            conn, seen[b"bad:appended"],
            _before_exec=lambda: server.r.set(b"bad:appended", ENCODED))
        assert not removed and server.r.get(b"bad:appended") == ENCODED
        # the connection is still usable, unchanged keys go
        assert _admin.remove_if_unchanged(conn, seen[b"bad:short"])[0]
        assert _admin.remove_if_unchanged(conn, seen[b"old:stripe:1"])[0]
        assert not server.r.exists(b"bad:short", b"old:stripe:1")
        with pytest.raises(ValueError, match="refusing"):
            _admin.remove_if_unchanged(conn, seen[b"enc:four"])
    assert server.r.get(b"bad:cut") == ENCODED


def test_debris_needs_both_the_name_and_the_header() -> None:
    # a user's own key is never taken for debris, so gc never removes it
    def kind(key: bytes, value: bytes) -> str:
        return classify(key, "string", len(value), value[:32]).kind

    assert kind(b"k:stripe:1", format1_stripe(1, 3, 30)) == "format-1 debris"
    assert kind(b"k:stripe:2", format1_stripe(1, 3, 30)) == "verbatim"  # index differs
    assert kind(b"k:stripe:01", format1_stripe(1, 3, 30)) == "verbatim"  # not how i was written
    assert kind(b"k:stripe:1", format1_stripe(1, 3, 30)[:31]) == "verbatim"  # no whole header
    assert kind(b"k:stripe:1", HDR.pack(b"LMRS", 2, 32, 1, 3, 30, 7)) == "verbatim"  # version
    assert kind(b"\xff:stripe:0", format1_stripe(0, 1, 5)) == "format-1 debris"  # binary K


# ---- URLs, connections and errors ----------------------------------------------


def test_unix_socket_password_and_db(make_own_server) -> None:
    srv = make_own_server(unix_socket=True, extra_args=["--requirepass", "hunter2"])
    r = redis.Redis(unix_socket_path=srv.unix_path, password="hunter2", db=2)
    r.set("in-db-2", encode_v2(b"abc" * 100, 2)[:-1])
    f = fields(tool("inspect", f"unix://:hunter2@{srv.unix_path}?db=2", "in-db-2",
                    check_rc=1).stdout)
    assert f["layout"].startswith("broken value: cut short")
    tool("scan", f"redis://:hunter2@127.0.0.1:{srv.port}/0", check_rc=0)  # db 0 is empty
    proc = tool("scan", f"redis://127.0.0.1:{srv.port}/2", check_rc=3)
    assert proc.stderr.startswith("lmcache_redis: error: ") and proc.stderr.count("\n") == 1
    assert "password" in proc.stderr
    proc = tool("scan", f"redis://:hunter3@127.0.0.1:{srv.port}", check_rc=3)
    assert "authentication failed" in proc.stderr and "hunter" not in proc.stderr
    r.close()


def test_tls(tmp_path, make_own_server) -> None:
    certs = make_test_certificates(tmp_path)
    srv = make_own_server(tls=certs)
    redis.Redis(srv.host, srv.port).set("k", ENCODED)
    url = f"rediss://127.0.0.1:{srv.tls_port}"
    tool("inspect", f"{url}?ssl_ca_certs={certs.ca_cert}", "k", check_rc=0)
    tool("inspect", f"{url}?ssl_verify=false", "k", check_rc=0)
    proc = tool("inspect", f"{url}?ssl_ca_certs={certs.other_ca_cert}", "k", check_rc=3)
    assert "certificate verify failed" in proc.stderr


def test_errors_are_one_line(own_server) -> None:
    port = own_server.port
    own_server.stop()
    proc = tool("scan", f"redis://127.0.0.1:{port}", check_rc=3)
    assert proc.stderr == f"lmcache_redis: error: cannot connect to 127.0.0.1:{port}: " \
                          "Connection refused\n"
    for args in (("scan", "http://x"), ("scan", "redis://h/notadb"),
                 ("scan", "redis://h?ssl_ca_certs=/ca.pem"),
                 ("gc", "redis://h", "--yes", "--dry-run"), ("inspect", "redis://h")):
        proc = tool(*args, check_rc=2)
        assert "usage:" in proc.stderr


def test_help_documents_exit_codes() -> None:
    out = tool("--help", check_rc=0).stdout
    assert "exit status:" in out and "usage error" in out
    assert "dry run by default" in out


def test_a_cluster_node_reached_by_a_plain_url_is_refused(redis_cluster) -> None:
    """A plain redis:// URL that reaches a node of a Redis Cluster is refused
    with the usage exit code before anything is read or removed: the tool
    would take a split value's part keys (K#lmr:<id>{tag}) and the keys whose
    parts live on other nodes for broken values, and gc --yes would delete
    them."""
    import numpy as np

    from lmcache_redis import RedisClient

    key = "optool:split"
    value = np.random.default_rng(12).integers(0, 256, 8 << 20, dtype=np.uint8)

    def stored() -> dict:
        # Masters only: a replica may still be catching up with the set.
        return {n.port: sorted(redis_cluster.keys_on(n, key + "*"))
                for n in redis_cluster.masters()}

    with RedisClient.from_url(redis_cluster.url) as client:
        client.set(key, value)
        before = stored()
        # Split: the value's parts are keys of their own, on more than one master.
        masters = [n for n in redis_cluster.masters() if before[n.port]]
        assert len(masters) >= 2
        assert any(b"#lmr:" in k for keys in before.values() for k in keys)
        first = f"redis://{redis_cluster.masters()[0].address}"
        for args in [("scan", first), ("inspect", first, key), ("gc", first)] + \
                [("gc", f"redis://{n.address}", "--yes") for n in redis_cluster.nodes]:
            proc = tool(*args, check_rc=2)
            assert "usage:" in proc.stderr, proc.stderr
            assert "Redis Cluster" in proc.stderr and "cluster_enabled:1" in proc.stderr
            assert proc.stdout == ""
        assert stored() == before
        out = np.empty_like(value)
        assert client.get(key, out) == value.nbytes and np.array_equal(out, value)
        client.delete(key)
