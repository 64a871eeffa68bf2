"""Shows with strace where a 32 MiB get's bytes land.

Starts a throwaway redis-server, then runs one `get` into a numpy array under
`strace -f -e trace=recvfrom` and sorts every recvfrom by its destination: inside
the array (the payload, received in place) or elsewhere (the 512-byte header
reads into a connection's read-ahead). Needs strace (apt-get install strace).

    python tools/trace_zero_copy.py [--size-mb 32] [--stripes N] [--connections 4]
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from lmcache_redis import stripe_count
from lmcache_redis._testing import RedisServer

CHILD = r"""
import sys, numpy as np, lmcache_redis
port, size, stripes, conns = map(int, sys.argv[1:5])
c = lmcache_redis.RedisClient("127.0.0.1", port, stripes=stripes, connections=conns)
data = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8)
c.set("zero-copy", data)
out = np.zeros(size, dtype=np.uint8)
before = c.stats()["bytes_copied"]
print(f"ARRAY {out.ctypes.data} {out.nbytes}", flush=True)
n = c.get("zero-copy", out)
print(f"DONE {n} {int(np.array_equal(out, data))} {c.stats()['bytes_copied'] - before}", flush=True)
"""

CALL = re.compile(r"^recvfrom\(0x[0-9a-f]+, (0x[0-9a-f]+), 0x[0-9a-f]+,.*= (0x[0-9a-f]+)$")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=32)
    ap.add_argument("--stripes", type=int, default=None,
                    help="default: the library's count for the size (20 for 32 MiB)")
    ap.add_argument("--connections", type=int, default=4)
    args = ap.parse_args()
    if args.stripes is None:
        args.stripes = stripe_count(args.size_mb << 20, connections=args.connections)
    with RedisServer() as srv, tempfile.TemporaryDirectory() as tmp:
        # -ff: one trace file per thread, so no call is split across lines;
        # raw=recvfrom: the destination address in hex.
        out = subprocess.run(
            ["strace", "-f", "-ff", "-qq", "-e", "trace=recvfrom", "-e", "raw=recvfrom",
             "-e", "signal=none", "-o", f"{tmp}/t", sys.executable, "-P", "-c", CHILD,
             str(srv.port), str(args.size_mb << 20), str(args.stripes), str(args.connections)],
            check=True, capture_output=True, text=True).stdout.split()
        lo, size = int(out[1]), int(out[2])
        n, equal, copied = int(out[4]), int(out[5]), int(out[6])
        inside = elsewhere = inside_bytes = elsewhere_bytes = 0
        for path in Path(tmp).iterdir():
            for line in path.read_text().splitlines():
                m = CALL.match(line)
                if not m:
                    continue
                buf, got = int(m[1], 16), int(m[2], 16)
                if lo <= buf and buf + got <= lo + size:
                    inside, inside_bytes = inside + 1, inside_bytes + got
                else:
                    elsewhere, elsewhere_bytes = elsewhere + 1, elsewhere_bytes + got
    print(f"get returned {n} bytes, identical to what was set: {bool(equal)}")
    print(f"recvfrom straight into the array: {inside} calls, {inside_bytes} bytes "
          f"({inside_bytes / size:.4%} of the value)")
    print(f"recvfrom into read-ahead buffers: {elsewhere} calls, {elsewhere_bytes} bytes "
          f"(connection set-up, the set's replies, reply headers)")
    print(f"client's bytes_copied counter for the get: {copied} bytes")


if __name__ == "__main__":
    main()
