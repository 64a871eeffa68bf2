# cython: language_level=3, embedsignature=True, embedsignature.format=python
"""The RedisClient class: a thin face over the C core (csrc/)."""

from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_CheckBuffer, PyObject_GetBuffer)
from libc.stdint cimport int64_t, uintptr_t

from lmcache_redis._lmr cimport *

import math
import operator
import os

from lmcache_redis.exceptions import error_from_code
from lmcache_redis._url import parse_url

MAX_STRIPES = LMR_MAX_STRIPES
MAX_CONNECTIONS = LMR_MAX_CONNECTIONS
MAX_KEY_LEN = LMR_MAX_KEY_LEN
DEFAULT_STRIPE_SIZE = LMR_DEFAULT_STRIPE_SIZE


def _checked_stripe_size(stripe_size):
    stripe_size = operator.index(stripe_size)
    if not LMR_MIN_STRIPE_SIZE <= stripe_size <= LMR_MAX_STRIPE_SIZE:
        raise ValueError(f"stripe_size must be in {LMR_MIN_STRIPE_SIZE}..{LMR_MAX_STRIPE_SIZE} "
                         f"bytes, got {stripe_size}")
    return stripe_size


def stripe_count(nbytes, stripe_size=LMR_DEFAULT_STRIPE_SIZE, connections=4):
    """The number of stripes a client with stripes=None and these settings
    stores a value of ``nbytes`` bytes in (1: the value verbatim).

    Each stripe takes at most ``stripe_size`` bytes of the server's memory;
    above ``connections`` stripes the count is a multiple of it; among such
    counts, the one whose stripes waste least in Redis's allocator (jemalloc
    size classes). For 32 MiB with the defaults: 20."""
    nbytes, connections = operator.index(nbytes), operator.index(connections)
    stripe_size = _checked_stripe_size(stripe_size)
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    if not 1 <= connections <= LMR_MAX_CONNECTIONS:
        raise ValueError(f"connections must be in 1..{LMR_MAX_CONNECTIONS}, got {connections}")
    return lmr_stripe_count(nbytes, stripe_size, connections, LMR_MAX_STRIPES)


cdef raise_error(const lmr_error *err):
    raise error_from_code(lmr_code_name(err.code).decode("ascii"),
                          err.msg.decode("utf-8", "replace"), err.needed)


cdef bytes key_bytes(object key):
    if isinstance(key, str):
        return (<str>key).encode("utf-8")
    if isinstance(key, bytes):
        return <bytes>key
    raise TypeError(f"key must be str or bytes, not {type(key).__name__}")


cdef int64_t ttl_ms(object ttl) except -2:
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    # The upper bound keeps milliseconds inside int64 (about 292 million years).
    if not ttl > 0 or not ttl < 9e15:
        raise ValueError(f"ttl must be a positive, finite number of seconds, got {ttl!r}")
    return max(1, <int64_t>math.ceil(ttl * 1000))


cdef get_view(object buffer, Py_buffer *view, bint writable):
    if not PyObject_CheckBuffer(buffer):
        raise TypeError(f"buffer must support the buffer protocol (bytearray, memoryview, "
                        f"numpy array, ...), not {type(buffer).__name__}")
    try:
        PyObject_GetBuffer(buffer, view,
                           PyBUF_C_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0))
    except BufferError as e:
        need = "writable, C-contiguous" if writable else "C-contiguous"
        raise ValueError(f"buffer must be a {need} buffer ({type(buffer).__name__}: {e})") from None


cdef check_range(object address, object nbytes):
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    if address < 0 or address > <uintptr_t>-1:
        raise ValueError(f"address {address:#x} is not a valid pointer")
    if address == 0 and nbytes > 0:
        raise ValueError("address is NULL")


cdef object path_or_none(object value, str name):
    if value is None:
        return None
    try:
        return os.fsdecode(os.fspath(value))
    except TypeError:
        raise TypeError(f"{name} must be a path (str or os.PathLike), "
                        f"not {type(value).__name__}") from None


cdef lmr_client *open_client(lmr_client *c) except NULL:
    if c == NULL:
        from lmcache_redis.exceptions import ClientClosedError
        raise ClientClosedError("client is not open (RedisClient.__init__ did not run or failed)")
    return c


cdef class RedisClient:
    """RedisClient(host="localhost", port=6379, *, stripes=None,
    stripe_size=2 MiB, connections=4, timeout=10.0, connect_timeout=None,
    username=None, password=None, db=0, unix_socket_path=None,
    ssl=False, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None,
    ssl_verify=True, ssl_server_name=None)

    A Redis client for huge values (KV-cache chunks of 4-80 MB).

    Each value is split into stripes (sub-keys), written and read in
    parallel over ``connections`` connections by C worker threads. ``get``
    receives straight into your buffer and ``set`` sends straight from it:
    no copy in Python, and the GIL is released for the whole operation, so
    one client may be shared by many threads.

    All connections are made (and authenticated) here: a wrong address or
    password raises at once. A connection that breaks later is re-made on
    the next call.

    Parameters:
        host, port: the server's TCP address (ignored with unix_socket_path).
        stripes: sub-keys per value written, 1..256, or None (default): the
            count follows the value's size (``stripe_size``). A value
            written as one stripe is stored verbatim under its key, readable
            by any Redis client. Any client reads values written with any
            stripe count.
        stripe_size: with stripes=None, the most server memory one stripe
            may take, header and Redis's own overhead included (default
            2 MiB: Redis slows down on values of 8 MiB and more, and stripes
            of 1.5-2 MiB read fastest here, see BENCHMARKS.md). Within that,
            the count is a multiple of ``connections`` (each connection
            carries the same share) whose stripes fit Redis's allocator
            best: a 32 MiB value takes 20 stripes and 35 MiB of server
            memory, where 16 stripes would take 40 MiB.
            ``lmcache_redis.stripe_count()`` tells the count. A get guesses
            it from its buffer's size.
        connections: connections and worker threads, 1..64.
        timeout: seconds allowed for each whole operation.
        connect_timeout: seconds allowed to connect and authenticate
            (default: min(timeout, 5)).
        username, password: AUTH credentials (username needs a password).
        db: database number to SELECT.
        unix_socket_path: connect over a Unix socket instead of TCP.
        ssl: TLS (1.2 or later) on every connection (OpenSSL). The server's
            certificate is verified: it must chain to a trusted CA and name
            the host (a DNS name or an IP address in its subjectAltName);
            otherwise ConnectionError, with the reason.
        ssl_ca_certs: PEM file of the CAs to trust (default: the system's
            trust store, e.g. /etc/ssl/certs).
        ssl_certfile, ssl_keyfile: a client certificate (PEM, with its chain)
            and its unencrypted private key, for servers that require one
            (``tls-auth-clients yes``). ssl_keyfile=None: the key is in
            ssl_certfile.
        ssl_verify: False accepts any server certificate, unchecked: the
            traffic is encrypted, but anyone in the path can pose as the
            server. For tests only.
        ssl_server_name: the name the certificate must carry, also sent as
            SNI (default: host). For connecting by address to a server whose
            certificate names it by DNS name.
    """

    cdef lmr_client *_c
    cdef readonly str host
    cdef readonly int port
    cdef readonly object unix_socket_path
    cdef readonly object username
    cdef readonly int db
    cdef readonly object stripes
    cdef readonly unsigned long long stripe_size
    cdef readonly int connections
    cdef readonly double timeout
    cdef readonly double connect_timeout
    cdef readonly bint ssl
    cdef readonly object ssl_ca_certs
    cdef readonly object ssl_certfile
    cdef readonly object ssl_keyfile
    cdef readonly bint ssl_verify
    cdef readonly object ssl_server_name

    def __cinit__(self, *args, **kwargs):
        self._c = NULL

    def __init__(self, str host not None="localhost", int port=6379, *, stripes=None,
                 stripe_size=LMR_DEFAULT_STRIPE_SIZE, int connections=4, double timeout=10.0, connect_timeout=None,
                 username=None, password=None, int db=0, unix_socket_path=None,
                 bint ssl=False, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None,
                 bint ssl_verify=True, ssl_server_name=None):
        if self._c != NULL:
            raise RuntimeError("RedisClient is already initialised")
        ssl_ca_certs = path_or_none(ssl_ca_certs, "ssl_ca_certs")
        ssl_certfile = path_or_none(ssl_certfile, "ssl_certfile")
        ssl_keyfile = path_or_none(ssl_keyfile, "ssl_keyfile")
        if ssl_server_name is not None and not isinstance(ssl_server_name, str):
            raise TypeError(f"ssl_server_name must be str, not {type(ssl_server_name).__name__}")
        if not ssl:
            given = [name for name, value in (("ssl_ca_certs", ssl_ca_certs),
                                              ("ssl_certfile", ssl_certfile),
                                              ("ssl_keyfile", ssl_keyfile),
                                              ("ssl_server_name", ssl_server_name))
                     if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} given without ssl=True "
                                 f"(or a rediss:// URL)")
        elif unix_socket_path is not None:
            raise ValueError("ssl=True is for TCP connections, not unix_socket_path")
        if ssl_keyfile is not None and ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile (the certificate it belongs to)")
        if ssl_server_name == "":
            raise ValueError("ssl_server_name must not be empty")
        self.ssl = ssl
        self.ssl_ca_certs = ssl_ca_certs
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.ssl_verify = ssl_verify
        self.ssl_server_name = ssl_server_name
        self.host = host
        self.port = port
        self.unix_socket_path = None if unix_socket_path is None else str(unix_socket_path)
        self.username = username
        self.db = db
        if stripes is not None:
            stripes = operator.index(stripes)
            if stripes < 1:
                raise ValueError(f"stripes must be in 1..{LMR_MAX_STRIPES} or None, got {stripes}")
        stripe_size = _checked_stripe_size(stripe_size)
        self.stripes = stripes
        self.stripe_size = stripe_size
        self.connections = connections
        self.timeout = timeout
        self.connect_timeout = min(timeout, 5.0) if connect_timeout is None else connect_timeout

        cdef bytes b_host = host.encode("utf-8")
        cdef bytes b_unix = None if unix_socket_path is None else self.unix_socket_path.encode()
        cdef bytes b_user = None if username is None else str(username).encode("utf-8")
        cdef bytes b_pass = None if password is None else str(password).encode("utf-8")
        cdef bytes b_ca = None if ssl_ca_certs is None else os.fsencode(ssl_ca_certs)
        cdef bytes b_cert = None if ssl_certfile is None else os.fsencode(ssl_certfile)
        cdef bytes b_key = None if ssl_keyfile is None else os.fsencode(ssl_keyfile)
        cdef bytes b_sni = None if ssl_server_name is None else ssl_server_name.encode("utf-8")
        cdef lmr_config cfg
        lmr_config_init(&cfg)
        cfg.host = b_host
        cfg.port = port
        cfg.unix_path = NULL if b_unix is None else <const char *>b_unix
        cfg.username = NULL if b_user is None else <const char *>b_user
        cfg.password = NULL if b_pass is None else <const char *>b_pass
        cfg.db = db
        cfg.timeout = timeout
        cfg.connect_timeout = self.connect_timeout
        cfg.stripes = 0 if stripes is None else min(stripes, LMR_MAX_STRIPES + 1)
        cfg.stripe_size = stripe_size
        cfg.connections = connections
        cfg.tls = ssl
        cfg.tls_ca_file = NULL if b_ca is None else <const char *>b_ca
        cfg.tls_cert_file = NULL if b_cert is None else <const char *>b_cert
        cfg.tls_key_file = NULL if b_key is None else <const char *>b_key
        cfg.tls_server_name = NULL if b_sni is None else <const char *>b_sni
        cfg.tls_verify = ssl_verify
        cdef lmr_error err
        cdef int rc
        with nogil:
            rc = lmr_client_open(&self._c, &cfg, &err)
        if rc != LMR_OK:
            raise_error(&err)

    @classmethod
    def from_url(cls, url, **kwargs):
        """Makes a client from ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://...`` (the same with ssl=True: TLS, certificate verified)
        or ``unix:///path/to/redis.sock[?db=N]``. Query parameters
        (``stripes``, ``stripe_size``, ``connections``, ``timeout``,
        ``connect_timeout``, ``db``, and with rediss:// ``ssl_ca_certs``,
        ``ssl_certfile``, ``ssl_keyfile``, ``ssl_server_name``,
        ``ssl_verify=false``) and keyword arguments set the other options;
        keywords win.
        """
        options = parse_url(url)
        options.update(kwargs)
        return cls(**options)

    def __dealloc__(self):
        if self._c != NULL:
            lmr_client_free(self._c)
            self._c = NULL

    def close(self):
        """Stops the workers and closes every connection. Calls in flight on
        other threads fail with ClientClosedError; later calls too.
        Idempotent."""
        if self._c != NULL:
            with nogil:
                lmr_client_close(self._c)

    @property
    def closed(self):
        """True once close() was called."""
        return self._c == NULL or lmr_client_closed(self._c) != 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def __reduce__(self):
        raise TypeError("a RedisClient cannot be pickled: its connections belong to this "
                        "process; create a client in each process")

    def __repr__(self):
        where = (f"unix_socket_path={self.unix_socket_path!r}" if self.unix_socket_path
                 else f"host={self.host!r}, port={self.port}")
        user = f", username={self.username!r}" if self.username is not None else ""
        if self.ssl:
            user += ", ssl=True" + ("" if self.ssl_verify else ", ssl_verify=False")
        striping = (f"stripes={self.stripes}" if self.stripes is not None
                    else f"stripe_size={self.stripe_size}")
        return (f"RedisClient({where}, db={self.db}{user}, {striping}, "
                f"connections={self.connections}, timeout={self.timeout})")

    def set(self, key, buffer, *, ttl=None):
        """Stores the bytes of ``buffer`` (any C-contiguous buffer: bytes,
        bytearray, memoryview, numpy array, mmap) under ``key`` (str or
        bytes). ``ttl``: seconds until the value expires (None: never).
        The bytes are sent straight from ``buffer``; don't modify it while
        set runs. Overwrites any earlier value, whatever its stripe count."""
        cdef bytes k = key_bytes(key)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef int64_t ms = ttl_ms(ttl)
        cdef lmr_client *c = open_client(self._c)
        cdef Py_buffer view
        get_view(buffer, &view, False)
        cdef lmr_error err
        cdef int rc
        with nogil:
            rc = lmr_set(c, kp, klen, view.buf, view.len, ms, &err)
        PyBuffer_Release(&view)
        if rc != LMR_OK:
            raise_error(&err)

    def get(self, key, buffer):
        """Reads the value under ``key`` into ``buffer`` (writable,
        C-contiguous: bytearray, memoryview, numpy array, ...) and returns
        its length in bytes, or None on a miss. A miss is also what a value
        that expired, lost a stripe, or is being overwritten right now reads
        as; never a mix of two writes. On a miss the buffer's contents are
        unspecified. Raises BufferTooSmallError (a ValueError) when the
        value is longer than the buffer; its ``needed`` says how long."""
        cdef bytes k = key_bytes(key)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef lmr_client *c = open_client(self._c)
        cdef Py_buffer view
        get_view(buffer, &view, True)
        cdef lmr_error err
        cdef int rc, found
        cdef size_t n
        with nogil:
            rc = lmr_get(c, kp, klen, view.buf, view.len, &found, &n, &err)
        PyBuffer_Release(&view)
        if rc != LMR_OK:
            raise_error(&err)
        return n if found else None

    def set_ptr(self, key, address, nbytes, *, ttl=None):
        """Like set, from raw memory: ``nbytes`` bytes at integer ``address``
        (e.g. ``tensor.data_ptr()`` of pinned torch memory). The memory must
        stay valid and unchanged until set_ptr returns."""
        cdef bytes k = key_bytes(key)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef int64_t ms = ttl_ms(ttl)
        address, nbytes = operator.index(address), operator.index(nbytes)
        check_range(address, nbytes)
        cdef lmr_client *c = open_client(self._c)
        cdef const void *p = <const void *><uintptr_t>address
        cdef size_t n = nbytes
        cdef lmr_error err
        cdef int rc
        with nogil:
            rc = lmr_set(c, kp, klen, p, n, ms, &err)
        if rc != LMR_OK:
            raise_error(&err)

    def get_ptr(self, key, address, nbytes):
        """Like get, into raw memory: at most ``nbytes`` bytes at integer
        ``address``, which must stay valid and writable until get_ptr
        returns. Returns the value's length, or None on a miss."""
        cdef bytes k = key_bytes(key)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        address, nbytes = operator.index(address), operator.index(nbytes)
        check_range(address, nbytes)
        cdef lmr_client *c = open_client(self._c)
        cdef void *p = <void *><uintptr_t>address
        cdef size_t cap = nbytes
        cdef lmr_error err
        cdef int rc, found
        cdef size_t n
        with nogil:
            rc = lmr_get(c, kp, klen, p, cap, &found, &n, &err)
        if rc != LMR_OK:
            raise_error(&err)
        return n if found else None

    def exists(self, key):
        """True when a whole value is stored under ``key``: its plain key, or
        every stripe of one write (only the 32-byte stripe headers are read,
        not the data). A stripe that was evicted, expired or overwritten by
        a racing write makes it False, so a caller that skips storing
        existing values heals such a key by writing it again."""
        cdef bytes k = key_bytes(key)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef lmr_client *c = open_client(self._c)
        cdef lmr_error err
        cdef int rc, found
        with nogil:
            rc = lmr_exists(c, kp, klen, &found, &err)
        if rc != LMR_OK:
            raise_error(&err)
        return bool(found)

    def delete(self, key):
        """Deletes the value under ``key`` and all its stripes, whatever stripe
        count wrote it. True if anything was there."""
        cdef bytes k = key_bytes(key)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef lmr_client *c = open_client(self._c)
        cdef lmr_error err
        cdef int rc, found
        with nogil:
            rc = lmr_delete(c, kp, klen, &found, &err)
        if rc != LMR_OK:
            raise_error(&err)
        return bool(found)

    def stats(self):
        """Counters since the client was made: ``bytes_sent`` and
        ``bytes_received`` (value bytes moved from/to your memory),
        ``bytes_copied`` (of those received, the few that passed through a
        read-ahead buffer rather than landing directly), ``commands`` and
        ``reconnects``."""
        cdef lmr_stats s
        lmr_client_stats(open_client(self._c), &s)
        return {"bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
                "bytes_copied": s.bytes_copied, "commands": s.commands,
                "reconnects": s.reconnects}

