"""Benchmark a pure-Python zero-copy RESP client: the escape hatch to beat.

A few lines of Python on plain sockets (TCP_NODELAY): SET sends the value
straight from the pool object with one sendmsg of [header, value, CRLF];
GET reads the short "$<len>" header with a small recv, then recv_into the
pool object (a memoryview slice of it) until the value is complete. Each
value is stored verbatim under its key (no striping).

Sequential: one thread, one socket. --concurrent: --threads (default 4)
threads, each with its own socket, each working through its share of the
keys. Writes go from the objects of one paged pool and the reads land in
the same objects, zeroed in between. What was read is compared with what
was written outside the timing (a wrong byte exits with status 1). Run it at several --size-mb (alias
--value-size-mb) to find the value size it likes best.
"""

from __future__ import annotations

import socket
from typing import Optional

import bench_common

# A GET reply's header ("$33554432\r\n") fits in this; the few payload
# bytes that a recv of this size also takes are copied into place.
_HEADER_READ = 64


class RespError(Exception):
    """An error reply from the server."""


class RespClient:
    """One blocking socket speaking just enough RESP2 for SET, GET and DEL,
    the values sent from and received into the caller's memory."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending = b""  # bytes received beyond what was consumed

    def close(self) -> None:
        self._sock.close()

    def set(self, key: bytes, value: memoryview) -> None:
        """SET key value, the value sent from its own memory."""
        header = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, value.nbytes)
        self._send([header, value, b"\r\n"])
        reply = self._read_line()
        if reply != b"+OK":
            raise RespError(f"SET: unexpected reply {reply[:100]!r}")

    def get(self, key: bytes, dest: memoryview) -> Optional[int]:
        """GET key into ``dest``; the value's length, or None on a miss."""
        self._send([self._command(b"GET", key)])
        line = self._read_line()
        if line == b"$-1":
            return None
        if not line.startswith(b"$"):
            raise RespError(f"GET: unexpected reply {line[:100]!r}")
        length = int(line[1:])
        if length > dest.nbytes:
            raise ValueError(f"GET: a {length}-byte value does not fit in {dest.nbytes} bytes")
        got = min(length, len(self._pending))
        dest[:got] = self._pending[:got]
        self._pending = self._pending[got:]
        while got < length:
            received = self._sock.recv_into(dest[got:length])
            if not received:
                raise ConnectionError("connection closed by the server")
            got += received
        self._fill(2)
        if self._pending[:2] != b"\r\n":
            raise RespError("GET: value not followed by CRLF")
        self._pending = self._pending[2:]
        return length

    def delete(self, *keys: bytes) -> int:
        """DEL keys; how many existed."""
        self._send([self._command(b"DEL", *keys)])
        line = self._read_line()
        if not line.startswith(b":"):
            raise RespError(f"DEL: unexpected reply {line[:100]!r}")
        return int(line[1:])

    @staticmethod
    def _command(*parts: bytes) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(
            b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)

    def _send(self, parts: list) -> None:
        """sendmsg until every byte of ``parts`` is sent."""
        views = [memoryview(part).cast("B") for part in parts]
        while views:
            sent = self._sock.sendmsg(views)
            while views and sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            if sent:
                views[0] = views[0][sent:]

    def _fill(self, n: int) -> None:
        """Receive until at least ``n`` bytes are pending."""
        while len(self._pending) < n:
            data = self._sock.recv(_HEADER_READ)
            if not data:
                raise ConnectionError("connection closed by the server")
            self._pending += data

    def _read_line(self) -> bytes:
        """The next reply line, without its CRLF; an error reply raises."""
        while b"\r\n" not in self._pending:
            self._fill(len(self._pending) + 1)
        line, _, self._pending = self._pending.partition(b"\r\n")
        if line.startswith(b"-"):
            raise RespError(line[1:].decode("utf-8", "replace"))
        return line


def main() -> None:
    parser = bench_common.make_parser(__doc__)
    parser.add_argument("--threads", type=int, default=4,
                        help="threads (each with its own socket) with --concurrent "
                             "(default 4)")
    args = bench_common.parse_args(parser)
    threads = args.threads if args.concurrent else None
    count = threads or 1

    n = args.num_chunks
    pool = bench_common.make_pool(args)
    sources = targets = pool.objects
    keys = [key.encode() for key in bench_common.make_keys(args)]
    lengths: list[Optional[int]] = [None] * n

    with bench_common.redis_address(args) as (host, port):
        clients = [RespClient(host, port, args.timeout) for _ in range(count)]
        try:
            def put(i: int) -> None:
                clients[i % count].set(keys[i], memoryview(sources[i].view))

            def fetch(i: int) -> None:
                lengths[i] = clients[i % count].get(keys[i], memoryview(targets[i].view))

            def verify(i: int) -> None:
                bench_common.check_chunk(keys[i].decode(), bench_common.expected_chunk(args, i),
                                         targets[i].view, lengths[i])

            meta = dict(client="resp-py", variant="threads" if threads else "sequential",
                        stripes=None, connections=count, parser=None, parallelism=count,
                        pool_backend=pool.backend)
            bench_common.run(args, meta,
                             write=lambda bar: bench_common.time_ops(put, n, threads, bar),
                             read=lambda bar: bench_common.time_ops(fetch, n, threads, bar),
                             verify=verify, cleanup=lambda: clients[0].delete(*keys),
                             before_read=lambda: bench_common.zero_objects(args, targets))
        finally:
            for client in clients:
                client.close()


if __name__ == "__main__":
    main()
