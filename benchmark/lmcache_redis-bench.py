"""Benchmark lmcache_redis: SET and GET of KV-cache-sized chunks.

Writes go from the objects of a paged pool (see paged_pool.py: pinned
torch memory, CPU torch memory or numpy); the reads go into the same
objects, zeroed in between (one pool, --num-chunks values), which are then
compared byte for byte with what was written (outside the timing; a wrong
byte exits with status 1).

--client-type lmcache_redis: set(key, buffer) / get(key, buffer) on the
objects' byte views; ptr: set_ptr / get_ptr on their addresses, as a
caller holding only tensor.data_ptr() would.

--concurrent: --threads Python threads (default --connections) share one
client, each working through its share of the keys; the GIL is released
inside the calls, so they overlap.

--ssl-ca-certs: TLS, trusting that CA file, to the server at --host/--port
(its TLS port; `python tools/local_redis.py --tls` starts one and prints
the commands).

    python benchmark/lmcache_redis-bench.py --size-mb 32 --num-chunks 50 --concurrent
"""

from __future__ import annotations

import bench_common

import lmcache_redis


def main() -> None:
    parser = bench_common.make_parser(__doc__)
    parser.add_argument("--stripes", type=int,
                        help="sub-keys per value (default: as many as --stripe-size asks for)")
    parser.add_argument("--stripe-size-mb", type=float,
                        default=lmcache_redis.DEFAULT_STRIPE_SIZE / bench_common.MiB,
                        help="most MiB per stripe when --stripes is not given "
                             "(default: the library's, %(default)s)")
    parser.add_argument("--connections", type=int, default=4,
                        help="connections = C worker threads (default 4)")
    parser.add_argument("--client-type", choices=("lmcache_redis", "ptr"),
                        default="lmcache_redis",
                        help="buffer API (default) or the set_ptr/get_ptr address API")
    parser.add_argument("--unix-socket", help="connect over this Unix socket (with --host, "
                                              "which names the same server)")
    parser.add_argument("--threads", type=int,
                        help="Python threads with --concurrent (default: --connections)")
    parser.add_argument("--ssl-ca-certs", metavar="PATH",
                        help="connect with TLS (ssl=True), trusting the CAs in PATH; "
                             "--host/--port must name the server's TLS port")
    args = bench_common.parse_args(parser)
    if args.ssl_ca_certs is not None and args.host is None:
        parser.error("--ssl-ca-certs needs --host and --port of a TLS port "
                     "(python tools/local_redis.py --tls starts a server with one)")
    tls = {} if args.ssl_ca_certs is None else {"ssl": True, "ssl_ca_certs": args.ssl_ca_certs}
    threads = (args.threads or args.connections) if args.concurrent else None

    stripe_size = int(args.stripe_size_mb * bench_common.MiB)
    # The count actually used, reported so that rows compare like with like.
    stripes = args.stripes or lmcache_redis.stripe_count(args.size_bytes, stripe_size, args.connections)
    n = args.num_chunks
    pool = bench_common.make_pool(args)
    sources = targets = pool.objects
    keys = bench_common.make_keys(args)
    lengths: list[int | None] = [None] * n

    with bench_common.redis_address(args) as (host, port), lmcache_redis.RedisClient(
            host, port, stripes=args.stripes, stripe_size=stripe_size,
            connections=args.connections, timeout=args.timeout,
            unix_socket_path=args.unix_socket, **tls) as client:
        if args.client_type == "ptr":
            def put(i: int) -> None:
                client.set_ptr(keys[i], sources[i].address, sources[i].nbytes)

            def fetch(i: int) -> None:
                lengths[i] = client.get_ptr(keys[i], targets[i].address, targets[i].nbytes)
        else:
            def put(i: int) -> None:
                client.set(keys[i], sources[i].view)

            def fetch(i: int) -> None:
                lengths[i] = client.get(keys[i], targets[i].view)

        def verify(i: int) -> None:
            bench_common.check_chunk(keys[i], bench_common.expected_chunk(args, i),
                                     targets[i].view, lengths[i])

        def cleanup() -> None:
            for key in keys:
                client.delete(key)

        variant = ("buffer" if args.client_type == "lmcache_redis" else "ptr") + (
            "+threads" if args.concurrent else "") + ("+tls" if tls else "")
        meta = dict(client="lmcache_redis", variant=variant, stripes=stripes,
                    connections=args.connections, parser=None,
                    parallelism=threads or 1, pool_backend=pool.backend)
        bench_common.run(args, meta,
                         write=lambda bar: bench_common.time_ops(put, n, threads, bar),
                         read=lambda bar: bench_common.time_ops(fetch, n, threads, bar),
                         verify=verify, cleanup=cleanup,
                         before_read=lambda: bench_common.zero_objects(args, targets))


if __name__ == "__main__":
    main()
