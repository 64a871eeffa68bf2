# cython: language_level=3, embedsignature=True, embedsignature.format=python
"""The RedisClient class: a thin face over the C core (csrc/)."""

from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_CheckBuffer, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uintptr_t

from lmcache_redis._lmr cimport *

import math
import operator
import os
import threading
import time

from lmcache_redis.exceptions import TimeoutError, error_from_code
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
    """The number of parts a client with stripes=None and these settings
    encodes a value of ``nbytes`` bytes in (1: the value verbatim).

    Each part is at most ``stripe_size`` bytes with its header; above
    ``connections`` parts the count is a multiple of it; among such counts,
    the one whose parts' reply buffers waste least in Redis's allocator
    (jemalloc size classes). For 32 MiB with the defaults: 20. The value is
    one key whatever the count (README, "Stored format")."""
    nbytes, connections = operator.index(nbytes), operator.index(connections)
    stripe_size = _checked_stripe_size(stripe_size)
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    if not 1 <= connections <= LMR_MAX_CONNECTIONS:
        raise ValueError(f"connections must be in 1..{LMR_MAX_CONNECTIONS}, got {connections}")
    return lmr_stripe_count(nbytes, stripe_size, connections, LMR_MAX_STRIPES)


cdef extern from "Python.h":
    # Declared here without an exception clause: called with the GIL held
    # from the cancel check, its error (KeyboardInterrupt) is left pending
    # for the call to raise once the C core has given up.
    int PyErr_CheckSignals_pending "PyErr_CheckSignals" () noexcept
    void *PyErr_Occurred_ptr "PyErr_Occurred" () noexcept


cdef int check_signals(void *ctx) noexcept nogil:
    """The C core's cancel check (lmr_thread_set_cancel_check): runs the
    Python signal handlers every LMR_CANCEL_POLL_MS while a call waits; one
    that raises (Ctrl-C: KeyboardInterrupt) cancels the call."""
    with gil:
        return PyErr_CheckSignals_pending() != 0


# Python runs signal handlers on the main thread only: there a waiting call
# checks for them (Ctrl-C); on any other thread the check would only take
# the GIL 20 times a second for nothing, so it is off.
_MAIN_THREAD = threading.main_thread().ident


cdef inline void arm_cancel():
    if threading.get_ident() == _MAIN_THREAD:
        lmr_thread_set_cancel_check(check_signals, NULL)
    else:
        lmr_thread_set_cancel_check(NULL, NULL)


cdef raise_error(const lmr_error *err):
    raise error_from_code(lmr_code_name(err.code).decode("ascii"),
                          err.msg.decode("utf-8", "replace"), err.needed)


cdef int check(int rc, lmr_error *err) except -1:
    """Raises for a failed call: the pending signal handler's exception
    (KeyboardInterrupt) for a cancelled one, else the error's."""
    if rc == LMR_OK:
        return 0
    if rc == LMR_ECANCELED and PyErr_Occurred_ptr() != NULL:
        return -1
    raise_error(err)


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


cdef get_view(object buffer, Py_buffer *view, bint writable, str call):
    if not PyObject_CheckBuffer(buffer):
        hint = ""
        if call == "get" and buffer is None:
            hint = f"; or call get(key) alone for a new bytes object"
        raise TypeError(f"{call}(key, buffer): buffer must support the buffer protocol "
                        f"(bytes, bytearray, memoryview, numpy array, ...), not "
                        f"{type(buffer).__name__}{hint}")
    try:
        PyObject_GetBuffer(buffer, view,
                           PyBUF_C_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0))
    except (BufferError, ValueError) as e:  # numpy raises ValueError
        raise ValueError(buffer_problem(buffer, writable, call, e)) from None


cdef str buffer_problem(object buffer, bint writable, str call, object e):
    """Says what is wrong with a buffer that PyObject_GetBuffer refused, and
    the fix."""
    name = type(buffer).__name__
    try:
        m = memoryview(buffer)
        readonly, contiguous = m.readonly, m.c_contiguous
        m.release()
    except Exception:
        return f"{call}(key, buffer): buffer ({name}) was refused: {e}"
    if writable and readonly:
        return (f"{call}(key, buffer): buffer ({name}) is read-only; pass a writable one "
                f"(bytearray, numpy array), or call get(key) alone for a new bytes object")
    if not contiguous:
        return (f"{call}(key, buffer): buffer ({name}) is not C-contiguous (a slice with "
                f"a step, a transposed array); pass a contiguous one, e.g. "
                f"np.ascontiguousarray(buffer)" + (" and copy the result back" if writable
                                                    else ""))
    return f"{call}(key, buffer): buffer ({name}) was refused: {e}"


cdef check_range(object address, object nbytes):
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    if address < 0 or address > <uintptr_t>-1:
        raise ValueError(f"address {address:#x} is not a valid pointer")
    if address == 0 and nbytes > 0:
        raise ValueError("address is NULL")


# ---- converting the constructor's arguments to the C configuration ----------
# Only types are converted here; the values are checked once, by the C core
# (client.c's check_config), whose messages name these arguments.

cdef int c_int(object value, str name, str example) except? -1:
    if isinstance(value, str):
        raise TypeError(f"{name} must be an int, not str {value!r}: pass {name}={example}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__} "
                        f"(e.g. {name}={example})") from None
    if not -2**31 <= value < 2**31:
        raise ValueError(f"{name}={value} is out of range")
    return value


cdef double c_seconds(object value, str name) except? -1:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    return value


cdef bytes c_text(object value, str name):
    """A str (encoded as UTF-8) or bytes, for a C string: no NUL inside."""
    if value is None:
        return None
    if isinstance(value, str):
        b = (<str>value).encode("utf-8")
    elif isinstance(value, bytes):
        b = <bytes>value
    else:
        raise TypeError(f"{name} must be str or bytes, not {type(value).__name__}")
    if b"\0" in b:
        raise ValueError(f"{name} must not contain a NUL character (\\x00)")
    return b


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


_URL_SCHEMES = ("redis://", "rediss://", "unix://")
# How many times get(key) without a buffer reads again when the value's
# length changed between learning it and reading it.
_GET_ATTEMPTS = 4


cdef class RedisClient:
    """RedisClient(host='localhost', port=6379, *, stripes=None, stripe_size=2097152, connections=4, timeout=10.0, connect_timeout=None, username=None, password=None, db=0, unix_socket_path=None, ssl=False, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None, ssl_verify=True, ssl_server_name=None)
--

    A Redis client for huge values (KV-cache chunks of 4-80 MB).

    Each value is one Redis string under its key, written by one command
    and read in parts (stripes) in parallel over ``connections``
    connections by C worker threads. ``get``
    receives straight into your buffer and ``set`` sends straight from it:
    no copy in Python, and the GIL is released for the whole operation, so
    one client may be shared by many threads. Ctrl-C interrupts a call
    within about 50 ms (KeyboardInterrupt); the connections it was using
    are dropped and re-made on their next use.

    All connections are made (and authenticated) here: a wrong address or
    password raises at once. A connection that breaks later is re-made on
    the next call.

    Parameters:
        host, port: the server's TCP address (ignored with unix_socket_path).
            For a URL, use ``RedisClient.from_url``.
        stripes: parts per value written, 1..256, or None (default; 0
            too): the count follows the value's size (``stripe_size``). A
            value written as one part is stored verbatim under its key,
            readable by any Redis client. Any client reads values written
            with any part count.
        stripe_size: with stripes=None, the most bytes one part may take,
            header and Redis's own overhead included (default 2 MiB: Redis
            slows down on replies of 8 MiB and more, and parts of 1.5-2 MiB
            read fastest here, see BENCHMARKS.md). A value up to that size
            less 64 bytes is stored verbatim; a larger one in a multiple of
            ``connections`` parts (each connection reads the same share):
            a 32 MiB value has 20. ``lmcache_redis.stripe_count()`` tells
            the count.
        connections: connections and worker threads, 1..64.
        timeout: seconds allowed for each whole operation.
        connect_timeout: seconds allowed to connect and authenticate
            (default: min(timeout, 5)).
        username, password: AUTH credentials, str (sent as UTF-8) or bytes
            (sent as they are); no NUL characters. A username needs a
            password.
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
    cdef str _host
    cdef int _port
    cdef object _unix_socket_path
    cdef object _username
    cdef int _db
    cdef object _stripes
    cdef unsigned long long _stripe_size
    cdef int _connections
    cdef double _timeout
    cdef double _connect_timeout
    cdef bint _ssl
    cdef object _ssl_ca_certs
    cdef object _ssl_certfile
    cdef object _ssl_keyfile
    cdef bint _ssl_verify
    cdef object _ssl_server_name

    def __cinit__(self, *args, **kwargs):
        self._c = NULL

    def __init__(self, host="localhost", port=6379, *, stripes=None,
                 stripe_size=LMR_DEFAULT_STRIPE_SIZE, connections=4, timeout=10.0,
                 connect_timeout=None, username=None, password=None, db=0,
                 unix_socket_path=None, ssl=False, ssl_ca_certs=None, ssl_certfile=None,
                 ssl_keyfile=None, ssl_verify=True, ssl_server_name=None):
        """Connects every connection; see help(RedisClient) for the arguments."""
        if self._c != NULL:
            raise RuntimeError("RedisClient is already initialised")
        if not isinstance(host, str):
            raise TypeError(f"host must be str, not {type(host).__name__}")
        if host.startswith(_URL_SCHEMES):
            raise ValueError(f"host={host!r} is a URL: use RedisClient.from_url({host!r})")
        cdef bytes b_host = c_text(host, "host")
        cdef int c_port = c_int(port, "port", "6379")
        cdef int c_stripes = 0 if stripes is None else c_int(stripes, "stripes", "20")
        if isinstance(stripe_size, str):
            raise TypeError(f"stripe_size must be an int number of bytes, not str {stripe_size!r}")
        try:
            n_stripe_size = operator.index(stripe_size)
        except TypeError:
            raise TypeError(f"stripe_size must be an int number of bytes, not "
                            f"{type(stripe_size).__name__}") from None
        if not 0 <= n_stripe_size < 2**64:
            raise ValueError(f"stripe_size={n_stripe_size} is out of range")
        cdef int c_connections = c_int(connections, "connections", "4")
        cdef double c_timeout = c_seconds(timeout, "timeout")
        cdef double c_connect_timeout = (min(c_timeout, 5.0) if connect_timeout is None
                                         else c_seconds(connect_timeout, "connect_timeout"))
        cdef int c_db = c_int(db, "db", "0")
        ssl_ca_certs = path_or_none(ssl_ca_certs, "ssl_ca_certs")
        ssl_certfile = path_or_none(ssl_certfile, "ssl_certfile")
        ssl_keyfile = path_or_none(ssl_keyfile, "ssl_keyfile")
        unix_socket_path = path_or_none(unix_socket_path, "unix_socket_path")
        if ssl_server_name is not None and not isinstance(ssl_server_name, str):
            raise TypeError(f"ssl_server_name must be str, not {type(ssl_server_name).__name__}")
        cdef bytes b_unix = None if unix_socket_path is None else os.fsencode(unix_socket_path)
        cdef bytes b_user = c_text(username, "username")
        cdef bytes b_pass = c_text(password, "password")
        cdef bytes b_ca = None if ssl_ca_certs is None else os.fsencode(ssl_ca_certs)
        cdef bytes b_cert = None if ssl_certfile is None else os.fsencode(ssl_certfile)
        cdef bytes b_key = None if ssl_keyfile is None else os.fsencode(ssl_keyfile)
        cdef bytes b_sni = c_text(ssl_server_name, "ssl_server_name")
        for name, b in (("unix_socket_path", b_unix), ("ssl_ca_certs", b_ca),
                        ("ssl_certfile", b_cert), ("ssl_keyfile", b_key)):
            if b is not None and b"\0" in b:
                raise ValueError(f"{name} must not contain a NUL character (\\x00)")
        cdef lmr_config cfg
        lmr_config_init(&cfg)
        cfg.host = b_host
        cfg.port = c_port
        cfg.unix_path = NULL if b_unix is None else <const char *>b_unix
        cfg.username = NULL if b_user is None else <const char *>b_user
        cfg.password = NULL if b_pass is None else <const char *>b_pass
        cfg.db = c_db
        cfg.timeout = c_timeout
        cfg.connect_timeout = c_connect_timeout
        cfg.stripes = c_stripes
        cfg.stripe_size = n_stripe_size
        cfg.connections = c_connections
        cfg.tls = bool(ssl)
        cfg.tls_ca_file = NULL if b_ca is None else <const char *>b_ca
        cfg.tls_cert_file = NULL if b_cert is None else <const char *>b_cert
        cfg.tls_key_file = NULL if b_key is None else <const char *>b_key
        cfg.tls_server_name = NULL if b_sni is None else <const char *>b_sni
        cfg.tls_verify = bool(ssl_verify)
        cdef lmr_error err
        cdef int rc
        with nogil:
            rc = lmr_client_open(&self._c, &cfg, &err)
        if rc != LMR_OK:
            raise_error(&err)
        self._host = host
        self._port = c_port
        self._unix_socket_path = unix_socket_path
        self._username = username
        self._db = c_db
        self._stripes = None if c_stripes == 0 else c_stripes
        self._stripe_size = cfg.stripe_size
        self._connections = c_connections
        self._timeout = c_timeout
        self._connect_timeout = c_connect_timeout
        self._ssl = bool(ssl)
        self._ssl_ca_certs = ssl_ca_certs
        self._ssl_certfile = ssl_certfile
        self._ssl_keyfile = ssl_keyfile
        self._ssl_verify = bool(ssl_verify)
        self._ssl_server_name = ssl_server_name

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

    # ---- the settings, read-only -------------------------------------------

    @property
    def host(self):
        """The server's host name or address (str); unused with
        unix_socket_path."""
        return self._host

    @property
    def port(self):
        """The server's TCP port (int); unused with unix_socket_path."""
        return self._port

    @property
    def unix_socket_path(self):
        """The Unix socket path (str), or None for TCP."""
        return self._unix_socket_path

    @property
    def username(self):
        """The ACL user name given (str or bytes), or None (default user).
        The password is never kept where Python can read it."""
        return self._username

    @property
    def db(self):
        """The database number SELECTed on every connection (0: none)."""
        return self._db

    @property
    def stripes(self):
        """The fixed number of stripes per value written (1..256), or None:
        the count follows each value's size and ``stripe_size``."""
        return self._stripes

    @property
    def stripe_size(self):
        """With stripes=None, the most server memory one stripe may take, in
        bytes."""
        return self._stripe_size

    @property
    def connections(self):
        """The number of connections, and of C worker threads (1..64)."""
        return self._connections

    @property
    def timeout(self):
        """Seconds allowed for each whole operation (float)."""
        return self._timeout

    @property
    def connect_timeout(self):
        """Seconds allowed to connect, handshake and authenticate (float)."""
        return self._connect_timeout

    @property
    def ssl(self):
        """True when every connection runs over TLS."""
        return self._ssl

    @property
    def ssl_ca_certs(self):
        """The PEM file of trusted CAs (str), or None: the system's."""
        return self._ssl_ca_certs

    @property
    def ssl_certfile(self):
        """The client certificate file (str), or None."""
        return self._ssl_certfile

    @property
    def ssl_keyfile(self):
        """The client certificate's key file (str), or None."""
        return self._ssl_keyfile

    @property
    def ssl_verify(self):
        """False when the server's certificate is not verified (tests only)."""
        return self._ssl_verify

    @property
    def ssl_server_name(self):
        """The name the server's certificate must carry (str), or None: host."""
        return self._ssl_server_name

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
        where = (f"unix_socket_path={self._unix_socket_path!r}" if self._unix_socket_path
                 else f"host={self._host!r}, port={self._port}")
        user = f", username={self._username!r}" if self._username is not None else ""
        if self._ssl:
            user += ", ssl=True" + ("" if self._ssl_verify else ", ssl_verify=False")
        striping = (f"stripes={self._stripes}" if self._stripes is not None
                    else f"stripe_size={self._stripe_size}")
        return (f"RedisClient({where}, db={self._db}{user}, {striping}, "
                f"connections={self._connections}, timeout={self._timeout})")

    def ping(self):
        """Sends PING over one connection (re-made first if it broke) and
        returns True when the server answers PONG; raises as any call does
        otherwise (ConnectionError, TimeoutError, AuthenticationError...)."""
        cdef lmr_client *c = open_client(self._c)
        cdef lmr_error err
        cdef int rc
        arm_cancel()
        with nogil:
            rc = lmr_ping(c, &err)
        check(rc, &err)
        return True

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
        get_view(buffer, &view, False, "set")
        cdef lmr_error err
        cdef int rc
        arm_cancel()
        with nogil:
            rc = lmr_set(c, kp, klen, view.buf, view.len, ms, &err)
        PyBuffer_Release(&view)
        check(rc, &err)

    def get(self, key, buffer=None):
        """Reads the value under ``key``.

        ``get(key, buffer)``, the zero-copy path: the value lands straight
        in ``buffer`` (writable, C-contiguous: bytearray, memoryview, numpy
        array, ...); returns its length in bytes, or None on a miss. A hit
        on an empty value returns 0, which is false: test ``is None`` for a
        miss, not truthiness. On a miss the buffer's contents are
        unspecified. Raises BufferTooSmallError (a ValueError) when the
        value is longer than the buffer; its ``needed`` says how long.

        ``get(key)``, as in redis-py: returns the value as a new ``bytes``
        object of its length (b"" for an empty value), or None on a miss.
        It takes one more round trip (to learn the length) and one
        allocation, no extra copy.

        A read racing writers returns the old value or the new one, whole,
        never a mix of two writes; a value replaced under each of its few
        reads (README, "Stored format") reads as a miss."""
        cdef bytes k = key_bytes(key)
        if buffer is None:
            return self._get_new(k)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef lmr_client *c = open_client(self._c)
        cdef Py_buffer view
        get_view(buffer, &view, True, "get")
        cdef lmr_error err
        cdef int rc, found
        cdef size_t n
        arm_cancel()
        with nogil:
            rc = lmr_get(c, kp, klen, view.buf, view.len, &found, &n, &err)
        PyBuffer_Release(&view)
        check(rc, &err)
        return n if found else None

    cdef object _get_new(self, bytes k):
        """get(key): learns the length (a read into no buffer), then reads
        into a new bytes object of that length. A value that changed length
        in between is read again, at most _GET_ATTEMPTS times; then, as a
        reader racing writers always does here, a miss. No new read starts
        once the client's timeout has passed since the first."""
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef lmr_client *c = open_client(self._c)
        cdef lmr_error err
        cdef int rc, found
        cdef size_t n, cap = 0
        cdef bytes out = None
        cdef char *dst = NULL
        arm_cancel()
        cdef double give_up = time.monotonic() + self.timeout
        for attempt in range(_GET_ATTEMPTS):
            if attempt > 0 and time.monotonic() > give_up:
                raise TimeoutError(f"get({k!r}): the value kept changing length for "
                                   f"{self.timeout} s (the client's timeout)")
            with nogil:
                rc = lmr_get(c, kp, klen, dst, cap, &found, &n, &err)
            if rc == LMR_ETOOBIG:
                # Not shared yet: filled in place, as bytes objects are built.
                out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>err.needed)
                dst, cap = PyBytes_AS_STRING(out), err.needed
                continue
            check(rc, &err)
            if not found:
                return None
            if n == cap:
                return b"" if out is None else out
            # Shorter than learnt: the value was replaced; read it again.
            out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
            dst, cap = PyBytes_AS_STRING(out), n
        return None

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
        arm_cancel()
        with nogil:
            rc = lmr_set(c, kp, klen, p, n, ms, &err)
        check(rc, &err)

    def get_ptr(self, key, address, nbytes):
        """Like get, into raw memory: at most ``nbytes`` bytes at integer
        ``address``, which must stay valid and writable until get_ptr
        returns. Returns the value's length (0 for an empty value: test
        ``is None`` for a miss), or None on a miss."""
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
        arm_cancel()
        with nogil:
            rc = lmr_get(c, kp, klen, p, cap, &found, &n, &err)
        check(rc, &err)
        return n if found else None

    def exists(self, key):
        """True when a whole value is stored under ``key``: a string that
        ``get`` would read (one round trip; the value itself is not read). A
        key of another type, or a string that begins like an encoded value
        but is not a whole one (cut or appended to by another client), makes
        it False, so a caller that skips storing existing values heals such
        a key by writing it again."""
        cdef bytes k = key_bytes(key)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef lmr_client *c = open_client(self._c)
        cdef lmr_error err
        cdef int rc, found
        arm_cancel()
        with nogil:
            rc = lmr_exists(c, kp, klen, &found, &err)
        check(rc, &err)
        return bool(found)

    def delete(self, key):
        """Deletes ``key`` (one DEL: the whole value, whatever its part
        count, or whatever else the key holds). True if it existed."""
        cdef bytes k = key_bytes(key)
        cdef const char *kp = k
        cdef size_t klen = len(k)
        cdef lmr_client *c = open_client(self._c)
        cdef lmr_error err
        cdef int rc, found
        arm_cancel()
        with nogil:
            rc = lmr_delete(c, kp, klen, &found, &err)
        check(rc, &err)
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
