"""A quick demo of lmcache_redis against redis-py on the same throwaway server.

Starts its own redis-server on a free port (or uses --host/--port), writes and
reads --num-chunks values of --size-mb MiB with each client, checks every byte
read back, and prints GB/s and the ratio to redis-py measured in this run.

    python benchmark/demo.py [--size-mb 32] [--num-chunks 20]
"""

import argparse
import contextlib
import time

import numpy as np

import lmcache_redis
from lmcache_redis.testing import RedisServer

try:
    import redis
except ImportError:  # the demo still runs; the comparison column stays empty
    redis = None


def timed(op, check, chunks):
    """Seconds spent in op(key, chunk) over all chunks; check(key, chunk, result)
    verifies each result outside the timed part."""
    total = 0.0
    for i, chunk in enumerate(chunks):
        start = time.perf_counter()
        result = op(f"demo:{i}", chunk)
        total += time.perf_counter() - start
        check(f"demo:{i}", chunk, result)
    return total


def no_check(key, chunk, result):
    pass


def run_ours(host, port, chunks, out, stripes, connections):
    with lmcache_redis.RedisClient(host, port, stripes=stripes, connections=connections) as c:
        t_set = timed(c.set, no_check, chunks)
        def check(key, chunk, n):
            assert n == chunk.nbytes and np.array_equal(out, chunk), key
        t_get = timed(lambda key, chunk: c.get(key, out), check, chunks)
        for i in range(len(chunks)):
            c.delete(f"demo:{i}")
    return t_set, t_get


def run_redis_py(host, port, chunks):
    r = redis.Redis(host, port)
    # redis-py needs bytes: the conversion is made before timing starts.
    blobs = [chunk.tobytes() for chunk in chunks]
    t_set = timed(lambda key, chunk: r.set(key, blobs[int(key[5:])]), no_check, chunks)
    def check(key, chunk, value):
        assert value == blobs[int(key[5:])], key
    t_get = timed(lambda key, chunk: r.get(key), check, chunks)
    r.delete(*[f"demo:{i}" for i in range(len(chunks))])
    r.close()
    return t_set, t_get


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=32, help="value size in MiB (default 32)")
    ap.add_argument("--num-chunks", type=int, default=20, help="values per client (default 20)")
    ap.add_argument("--host", help="use this server instead of starting one")
    ap.add_argument("--port", type=int, default=6379)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    size = args.size_mb << 20
    chunks = [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(args.num_chunks)]
    out = np.zeros(size, dtype=np.uint8)  # reused, so every get lands in touched memory
    total_gb = size * len(chunks) / 1e9

    server = contextlib.nullcontext() if args.host else RedisServer()
    with server as srv:
        host, port = (args.host, args.port) if args.host else (srv.host, srv.port)
        rows = []
        if redis is not None:
            rows.append(("redis-py", "-", "-", *run_redis_py(host, port, chunks)))
        for stripes, connections in ((1, 1), (8, 4)):
            rows.append(("lmcache_redis", stripes, connections,
                         *run_ours(host, port, chunks, out, stripes, connections)))

    base = rows[0] if redis is not None else None
    print(f"{args.num_chunks} values of {args.size_mb} MiB, every byte read back and checked")
    print(f"{'client':<14} {'stripes':>7} {'conns':>5} {'SET GB/s':>9} {'GET GB/s':>9} "
          f"{'SET vs redis-py':>16} {'GET vs redis-py':>16}")
    for name, stripes, conns, t_set, t_get in rows:
        ratio = (f"{base[3] / t_set:>15.1f}x {base[4] / t_get:>15.1f}x" if base else "")
        print(f"{name:<14} {stripes:>7} {conns:>5} {total_gb / t_set:>9.2f} "
              f"{total_gb / t_get:>9.2f} {ratio}")


if __name__ == "__main__":
    main()
