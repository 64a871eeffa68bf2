# cython: language_level=3, embedsignature=True, embedsignature.format=python
"""The RedisClient class: a thin face over the C core (csrc/)."""

from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_CheckBuffer, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from posix.unistd cimport write
from libc.string cimport memset

from lmcache_redis._lmr cimport *

import math
import operator
import os
import threading
import time

from lmcache_redis.exceptions import (ClientClosedError, TimeoutError, batch_error,
                                      error_from_code)
from lmcache_redis._url import cluster_seeds_text, parse_url

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


cdef void rearm_event_fd(lmr_client *c) noexcept nogil:
    """Makes the client's event fd readable (an eventfd: add 1)."""
    cdef uint64_t one = 1
    cdef ssize_t k = write(lmr_event_fd(c), &one, sizeof(one))


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


def _check_ttl(ttl):
    """Raises as every set with this ``ttl`` would (TypeError, ValueError),
    so that a caller holding a ttl for later sets (the LMCache plug-ins)
    can refuse it up front by the same rule; returns its milliseconds."""
    return ttl_ms(ttl)


cdef get_view(object buffer, Py_buffer *view, bint writable, str call,
              str sig="key, buffer", str name="buffer"):
    """Takes a C-contiguous view of buffer (writable for reads); the errors
    name the call, its arguments (sig) and the argument (name: "buffer",
    "buffers[3]")."""
    if not PyObject_CheckBuffer(buffer):
        hint = ""
        if call == "get" and buffer is None:
            hint = f"; or call get(key) alone for a new bytes object"
        raise TypeError(f"{call}({sig}): {name} must support the buffer protocol "
                        f"(bytes, bytearray, memoryview, numpy array, ...), not "
                        f"{type(buffer).__name__}{hint}")
    try:
        PyObject_GetBuffer(buffer, view,
                           PyBUF_C_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0))
    except (BufferError, ValueError) as e:  # numpy raises ValueError
        raise ValueError(buffer_problem(buffer, writable, call, e, sig, name)) from None


cdef str buffer_problem(object buffer, bint writable, str call, object e,
                        str sig, str name):
    """Says what is wrong with a buffer that PyObject_GetBuffer refused, and
    the fix."""
    where = f"{call}({sig}): {name} ({type(buffer).__name__})"
    try:
        m = memoryview(buffer)
        readonly, contiguous = m.readonly, m.c_contiguous
        m.release()
    except Exception:
        return f"{where} was refused: {e}"
    if writable and readonly:
        return (f"{where} is read-only; pass a writable one (bytearray, numpy array)"
                + (", or call get(key) alone for a new bytes object" if call == "get"
                   else ""))
    if not contiguous:
        return (f"{where} is not C-contiguous (a slice with "
                f"a step, a transposed array); pass a contiguous one, e.g. "
                f"np.ascontiguousarray({name})" + (" and copy the result back" if writable
                                                   else ""))
    return f"{where} was refused: {e}"


cdef check_range(object address, object nbytes, str where="", str aname="address",
                 str nname="nbytes"):
    if nbytes < 0:
        raise ValueError(f"{where}{nname} must be >= 0, got {nbytes}")
    if address < 0 or address > <uintptr_t>-1:
        raise ValueError(f"{where}{aname} {address:#x} is not a valid pointer")
    if address == 0 and nbytes > 0:
        raise ValueError(f"{where}{aname} is NULL")


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


cdef bint c_bool(object value, str name) except -1:
    """A bool option: True or False only (not 1, "yes" or None)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__} {value!r}")
    return value


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
        raise ClientClosedError("client is not open (RedisClient.__init__ did not run or failed)")
    return c


_URL_SCHEMES = ("redis://", "rediss://", "unix://", "redis-cluster://", "rediss-cluster://")
# How many times get(key) without a buffer reads again when the value's
# length changed between learning it and reading it.
_GET_ATTEMPTS = 4


# ---- batches: the C items, and the Python objects they point into ------------
#
# A batch's items live in C memory (one PyMem_Malloc block: a batch_rec header,
# then the n items, then for buffer forms the n Py_buffer views), and point
# into the keys' bytes objects (held by one list, rec.keys) and the views.
# A synchronous batch frees its block when lmr_batch_run returns. A submitted
# one is linked into its client's list of outstanding batches (rec.prev/next)
# until its completion is drained, which finds the block again from the
# completion's items pointer. drain_completions moves it from that list to
# the client's list of taken completions (rec.next, oldest first), converts
# its results to Python objects and only then frees it: a conversion that
# raises (MemoryError, KeyboardInterrupt) leaves it, and the ones after it,
# taken for the next call, and loses none. The client's __dealloc__ frees the
# blocks of completions never drained or converted, after lmr_client_free
# has joined the workers.
# The views and key objects are held through C references only, so no
# garbage collection (of a cycle holding the client) can release a view while
# a worker may still write into it.

cdef struct batch_rec:
    uint64_t magic       # BATCH_MAGIC while the block is allocated
    batch_rec *prev      # the client's outstanding batches (submitted ones)
    batch_rec *next
    lmr_item *items      # the n items, just after this header
    Py_buffer *views     # buffer forms: n views after the items; else NULL
    size_t nviews        # views held: views[0..nviews)
    size_t n
    PyObject *keys       # a list of the keys' bytes (a reference), or NULL;
                         # also holds the objects a submission keeps (_keep)
    int op               # lmr_batch_op
    uint64_t done_id     # a taken completion's batch id

cdef enum:
    BATCH_MAGIC = 0x6c6d7262  # "lmrb"
    DRAIN_CHUNK = 64          # completions taken from the C queue per lmr_drain


cdef batch_rec *rec_alloc(int op, size_t n, bint with_views) except NULL:
    cdef size_t size = sizeof(batch_rec) + n * sizeof(lmr_item)
    if with_views:
        size += n * sizeof(Py_buffer)
    cdef batch_rec *rec = <batch_rec *>PyMem_Malloc(size)
    if rec == NULL:
        raise MemoryError(f"no memory for a batch of {n} keys")
    memset(rec, 0, sizeof(batch_rec) + n * sizeof(lmr_item))
    rec.magic = BATCH_MAGIC
    rec.items = <lmr_item *>(rec + 1)
    rec.views = <Py_buffer *>(rec.items + n) if with_views else NULL
    rec.n = n
    rec.op = op
    return rec


cdef void rec_free(batch_rec *rec) noexcept:
    """Releases the views, drops the keys and frees the block. The GIL is
    held; no worker may touch the batch any more."""
    cdef size_t i
    for i in range(rec.nviews):
        PyBuffer_Release(&rec.views[i])
    cdef PyObject *keys = rec.keys
    rec.magic = 0
    PyMem_Free(rec)
    Py_XDECREF(keys)


cdef batch_rec *rec_of(lmr_item *items) noexcept:
    """The block whose items these are (a completion's), or NULL when they
    are not one of ours."""
    if items == NULL:
        return NULL
    cdef batch_rec *rec = (<batch_rec *>items) - 1
    if rec.magic != BATCH_MAGIC or rec.items != items:
        return NULL
    return rec


# What each sequence argument of a batch holds, for its error messages.
_SEQUENCE_OF = {"keys": "keys", "buffers": "buffers", "memoryviews": "buffers",
                "addresses": "ints", "sizes": "ints"}


cdef list as_list(object seq, str name, str call, str sig):
    """The sequence argument `name` as a new list (so that a generator is
    read once, and a list changed meanwhile by another thread changes
    nothing); None, one key or one buffer given where a sequence of them
    belongs is refused."""
    what = _SEQUENCE_OF[name]
    if seq is None:
        raise TypeError(f"{call}({sig}): {name} must be a sequence of {what}, not NoneType")
    if name == "keys" and isinstance(seq, (str, bytes)):
        raise TypeError(f"{call}({sig}): keys must be a sequence of keys (list, tuple), "
                        f"not one {type(seq).__name__}")
    if what == "buffers" and PyObject_CheckBuffer(seq):
        m = memoryview(seq)
        ndim = m.ndim
        m.release()
        if ndim <= 1:
            raise TypeError(f"{call}({sig}): {name} must be a sequence of buffers, one per "
                            f"key, not one {type(seq).__name__}")
    try:
        return list(seq)
    except TypeError:
        raise TypeError(f"{call}({sig}): {name} must be a sequence of {what}, not "
                        f"{type(seq).__name__}") from None


cdef enum:
    # A batch's form: which arguments it takes besides its keys. Passed
    # explicitly, never inferred from which arguments are None (a None
    # buffers argument would make a set of empty values).
    FORM_KEYS = 0     # keys only: exists, delete
    FORM_BUFFERS = 1  # one buffer per key
    FORM_MEMORY = 2   # raw memory: an address and a size per key


cdef str nth(str name, size_t i, bint one):
    """How an error names item i of the sequence argument ``name``: keys[3];
    or key, for a one-key call."""
    return name[:-1] if one else f"{name}[{i}]"


cdef batch_rec *new_batch(int op, int form, list k, object buffers, object addresses,
                          object sizes, str call, str sig) except NULL:
    """Checks a batch's arguments and builds its block. ``k``: the keys,
    as_list'ed by the caller (which names them in a BatchError). ``form``:
    keys only, buffers (a view of each, writable for get), or raw memory
    (addresses and sizes); the arguments the form does not take are
    ignored. Raises for the first bad argument, naming it."""
    cdef list b = None, a = None, z = None
    cdef size_t n = len(k)
    # A one-key call's batch (the asyncio get(key, buffer)) names its
    # arguments as that call does: key, buffer (not keys[0], buffers[0]).
    cdef bint one = not sig.startswith("keys")
    # The buffers as the signature names them: "buffers", or "memoryviews"
    # (lmcache_redis.lmcache, whose signatures are LMCache's).
    cdef str bname = "buffers" if one or form != FORM_BUFFERS else sig.partition(", ")[2]
    if form == FORM_BUFFERS:
        b = as_list(buffers, bname, call, sig)
        if len(b) != n:
            raise ValueError(f"{call}({sig}): keys and {bname} differ in length: "
                             f"{n} keys, {len(b)} {bname}")
    elif form == FORM_MEMORY:
        a = as_list(addresses, "addresses", call, sig)
        z = as_list(sizes, "sizes", call, sig)
        if len(a) != n or len(z) != n:
            raise ValueError(f"{call}({sig}): keys, addresses and sizes differ in length: "
                             f"{n} keys, {len(a)} addresses, {len(z)} sizes")
    if n > LMR_MAX_BATCH:
        raise ValueError(f"{call}({sig}): at most {LMR_MAX_BATCH} keys per batch, got {n}")
    cdef batch_rec *rec = rec_alloc(op, n, b is not None)
    cdef list kept = []
    cdef bytes kb
    cdef size_t i
    cdef str where = f"{call}({sig}): "
    try:
        rec.keys = <PyObject *>kept
        Py_INCREF(kept)
        for i in range(n):
            key = k[i]
            if isinstance(key, str):
                kb = (<str>key).encode("utf-8")
            elif isinstance(key, bytes):
                kb = <bytes>key
            else:
                raise TypeError(f"{where}{nth('keys', i, one)} must be str or bytes, not "
                                f"{type(key).__name__}")
            kept.append(kb)
            rec.items[i].key = PyBytes_AS_STRING(kb)
            rec.items[i].key_len = len(kb)
        if b is not None:
            for i in range(n):
                get_view(b[i], &rec.views[i], op == LMR_BATCH_GET, call, sig,
                         nth(bname, i, one))
                rec.nviews = i + 1
                rec.items[i].buf = rec.views[i].buf
                rec.items[i].len = rec.views[i].len
        elif a is not None:
            for i in range(n):
                try:
                    address = operator.index(a[i])
                except TypeError:
                    raise TypeError(f"{where}addresses[{i}] must be an int, not "
                                    f"{type(a[i]).__name__}") from None
                try:
                    nbytes = operator.index(z[i])
                except TypeError:
                    raise TypeError(f"{where}sizes[{i}] must be an int, not "
                                    f"{type(z[i]).__name__}") from None
                check_range(address, nbytes, where, f"addresses[{i}]", f"sizes[{i}]")
                if nbytes > <size_t>-1:
                    raise ValueError(f"{where}sizes[{i}] = {nbytes} is out of range")
                rec.items[i].buf = <void *><uintptr_t>address
                rec.items[i].len = <size_t>nbytes
    except BaseException:
        rec_free(rec)
        raise
    return rec


cdef object item_result(int op, lmr_item *it):
    """One key's result: what the single-key call returns, or the exception
    it would raise."""
    if it.status == LMR_OK:
        if op == LMR_BATCH_GET:
            return it.value_len if it.found else None
        if op == LMR_BATCH_SET:
            return True
        return it.found != 0
    message = (it.err.msg.decode("utf-8", "replace") if it.err.msg[0] != 0
               else lmr_strerror(it.status).decode("ascii"))
    needed = 0
    if it.status == LMR_ETOOBIG:
        needed = it.value_len if it.value_len != 0 else it.err.needed
    return error_from_code(lmr_code_name(it.status).decode("ascii"), message, needed)


cdef list rec_results(batch_rec *rec):
    cdef size_t i
    return [item_result(rec.op, &rec.items[i]) for i in range(rec.n)]


cdef int pending_error() except -1:
    """Raises the exception already set (KeyboardInterrupt from the cancel
    check), if any."""
    if PyErr_Occurred_ptr() != NULL:
        return -1
    return 0


def _uninitialized_bytes(Py_ssize_t n):
    """Private, for lmcache_redis.asyncio's get(key): a new bytes object of
    n bytes, not yet filled, and its address. The caller fills it (a get
    into that address) before sharing it, as bytes objects are built."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    return out, <uintptr_t>PyBytes_AS_STRING(out)


cdef class RedisClient:
    """RedisClient(host='localhost', port=6379, *, stripes=None, stripe_size=2097152, connections=4, timeout=10.0, connect_timeout=None, username=None, password=None, db=0, unix_socket_path=None, ssl=False, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None, ssl_verify=True, ssl_server_name=None, cluster=False, read_from_replicas=False, cluster_seeds=None)
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

    Many keys go as one batch: ``get_many``, ``set_many``, ``exists_many``,
    ``delete_many`` (and ``get_many_ptr``, ``set_many_ptr``) spread the
    keys over every connection and give each key its own result
    (BatchError when some failed). Or submit a batch without waiting
    (``submit_batch_get`` ... returns an id) and collect it later with
    ``drain_completions()`` when ``event_fd()`` is readable;
    ``lmcache_redis.asyncio.RedisClient`` does so for an event loop.

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
        connect_timeout: seconds allowed to look the host name up,
            connect and authenticate (default: min(timeout, 5)).
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
        cluster: True: the server is a Redis Cluster and host:port one of
            its nodes (a seed: the slot map is read from it). Each master
            gets ``connections`` connections; a value's parts are spread
            over the masters. TCP only, database 0 (no unix_socket_path, no
            db). More seeds, tried when host:port does not answer: use
            ``RedisClient.from_url("redis-cluster://h1:p1,h2:p2,...")``
            (``rediss-cluster://`` with TLS).
        read_from_replicas: with cluster=True, reads may be served by
            replicas (which may lag behind their master; a stale or partial
            value reads as a miss, never as wrong data).

    ``cluster_seeds`` (keyword, mostly for from_url): the seeds beyond
    host:port, a str "host:port,host:port" or a list of (host, port)
    tuples or "host:port" strs; ports default to 6379, an IPv6 address
    in a str goes in brackets ("[fd00::2]:7000"). Needs cluster=True.
    """

    cdef lmr_client *_c
    cdef batch_rec *_batches  # submitted, not yet drained (see batch_rec)
    cdef batch_rec *_taken    # drained from the C queue, not yet converted,
    cdef batch_rec *_taken_last  # oldest first (linked by rec.next)
    cdef list _ready          # converted (id, results), not yet returned
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
    cdef bint _cluster
    cdef object _cluster_seeds
    cdef bytes _b_cluster_seeds  # the C string cluster_seeds, kept for the client's life
    cdef bint _read_from_replicas

    def __cinit__(self, *args, **kwargs):
        self._c = NULL
        self._batches = NULL
        self._taken = self._taken_last = NULL
        self._ready = []

    def __init__(self, host="localhost", port=6379, *, stripes=None,
                 stripe_size=LMR_DEFAULT_STRIPE_SIZE, connections=4, timeout=10.0,
                 connect_timeout=None, username=None, password=None, db=0,
                 unix_socket_path=None, ssl=False, ssl_ca_certs=None, ssl_certfile=None,
                 ssl_keyfile=None, ssl_verify=True, ssl_server_name=None, cluster=False,
                 read_from_replicas=False, cluster_seeds=None):
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
        cdef bint c_cluster = c_bool(cluster, "cluster")
        cdef bint c_replicas = c_bool(read_from_replicas, "read_from_replicas")
        seeds = cluster_seeds_text(cluster_seeds)
        cdef bytes b_seeds = None if seeds is None else (<str>seeds).encode("utf-8")
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
        cfg.cluster = c_cluster
        cfg.cluster_seeds = NULL if b_seeds is None else <const char *>b_seeds
        cfg.read_from_replicas = c_replicas
        # Kept for the client's life, not only for lmr_client_open: the C
        # config points into it (the core copies host and the other strings;
        # this holds whether or not it copies cluster_seeds too).
        self._b_cluster_seeds = b_seeds
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
        self._cluster = c_cluster
        self._cluster_seeds = seeds
        self._read_from_replicas = c_replicas

    @classmethod
    def from_url(cls, url, **kwargs):
        """Makes a client from ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://...`` (the same with ssl=True: TLS, certificate verified),
        ``unix:///path/to/redis.sock[?db=N]``, or for a Redis Cluster
        ``redis-cluster://[[user]:password@]host1[:port1][,host2[:port2]...]``
        (cluster=True; host:port is the first seed node, the others go to
        cluster_seeds; ports default to 6379, IPv6 as ``[fd00::1]:7000``; no
        database path but ``/0``) or ``rediss-cluster://...`` (with TLS).
        Query parameters (``stripes``, ``stripe_size``, ``connections``,
        ``timeout``, ``connect_timeout``, ``db``, with rediss:// and
        rediss-cluster:// ``ssl_ca_certs``, ``ssl_certfile``,
        ``ssl_keyfile``, ``ssl_server_name``, ``ssl_verify=false``, and with
        the cluster schemes ``read_from_replicas=true``) and keyword
        arguments set the other options; keywords win.
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

    @property
    def cluster(self):
        """True when the server is a Redis Cluster (host:port: a seed node)."""
        return self._cluster

    @property
    def cluster_seeds(self):
        """The seed nodes beyond host:port, as "host:port,host:port" (every
        port given, IPv6 in brackets), or None."""
        return self._cluster_seeds

    @property
    def read_from_replicas(self):
        """True when a cluster's replicas may serve reads."""
        return self._read_from_replicas

    def __dealloc__(self):
        # lmr_client_free joins the workers first: only then are the views
        # of batches whose completions were never drained released.
        if self._c != NULL:
            lmr_client_free(self._c)
            self._c = NULL
        cdef batch_rec *rec
        cdef batch_rec *next_rec
        cdef int which
        for which in range(2):
            rec = self._batches if which == 0 else self._taken
            while rec != NULL:
                next_rec = rec.next
                rec_free(rec)
                rec = next_rec
        self._batches = self._taken = self._taken_last = NULL

    def close(self):
        """Stops the workers and closes every connection. Calls in flight on
        other threads fail with ClientClosedError; later calls too.
        Submitted batches still in flight complete (their cut-short keys with
        ClientClosedError): once close() returns no worker touches any
        caller's buffer, and drain_completions() still collects them.
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
        if self._cluster:
            user += ", cluster=True"
            if self._cluster_seeds is not None:
                user += f", cluster_seeds={self._cluster_seeds!r}"
            if self._read_from_replicas:
                user += ", read_from_replicas=True"
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
        read-ahead buffer rather than landing directly), ``commands``,
        ``reconnects`` and, on a cluster, ``redirections`` (commands a node
        sent elsewhere, MOVED or ASK, or asked to send again later,
        TRYAGAIN or CLUSTERDOWN, that the client followed)."""
        cdef lmr_stats s
        lmr_client_stats(open_client(self._c), &s)
        return {"bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
                "bytes_copied": s.bytes_copied, "commands": s.commands,
                "reconnects": s.reconnects, "redirections": s.redirections}

    # ---- batches: many keys per call ------------------------------------------

    cdef list _run(self, batch_rec *rec, int64_t ms, str call, object keys):
        """Runs a batch and waits for it (GIL released, Ctrl-C cancels it on
        the main thread); frees rec. Returns the per-key results, or raises
        BatchError when a key failed."""
        cdef lmr_client *c = self._c
        cdef lmr_error err
        cdef int rc = LMR_OK
        cdef list results
        cdef int op = rec.op
        try:
            if c == NULL or lmr_client_closed(c):
                open_client(c)
                raise ClientClosedError(f"{call}: the client is closed")
            arm_cancel()
            with nogil:
                rc = lmr_batch_run(c, <lmr_batch_op>op, rec.items, rec.n, ms, &err)
            if rc == LMR_ECANCELED:
                pending_error()  # KeyboardInterrupt
            results = rec_results(rec)
        finally:
            rec_free(rec)
        if rc != LMR_OK:
            error = batch_error(call, keys, results, op == LMR_BATCH_SET)
            if error is None:  # the batch failed without a failed key
                raise_error(&err)
            raise error
        return results

    cdef uint64_t _submit(self, batch_rec *rec, int64_t ms) except 0:
        """Submits a batch and returns its id; its block stays in the
        outstanding list until drain_completions takes its completion, or
        is freed here when the submission failed (no completion follows)."""
        cdef lmr_client *c = self._c
        cdef lmr_error err
        cdef uint64_t batch_id = 0
        cdef int rc
        cdef int op = rec.op
        if c == NULL:
            rec_free(rec)
            open_client(c)
        # Linked before the submission: once submitted, another thread's
        # drain may take (and free) it before lmr_batch_submit returns here,
        # so it is not touched after.
        rec.prev = NULL
        rec.next = self._batches
        if self._batches != NULL:
            self._batches.prev = rec
        self._batches = rec
        with nogil:
            rc = lmr_batch_submit(c, <lmr_batch_op>op, rec.items, rec.n, ms, &batch_id, &err)
        if rc != LMR_OK:
            self._unlink(rec)
            rec_free(rec)
            raise_error(&err)
        return batch_id

    cdef void _unlink(self, batch_rec *rec) noexcept:
        if rec.prev != NULL:
            rec.prev.next = rec.next
        else:
            self._batches = rec.next
        if rec.next != NULL:
            rec.next.prev = rec.prev
        rec.prev = rec.next = NULL

    cdef list _many(self, int op, int form, object keys, object buffers, object addresses,
                    object sizes, int64_t ms, str call, str sig):
        """A synchronous batch of any form (see new_batch): the keys read
        once into a list, which names them in a BatchError."""
        cdef list k = as_list(keys, "keys", call, sig)
        cdef batch_rec *rec = new_batch(op, form, k, buffers, addresses, sizes, call, sig)
        return self._run(rec, ms, call, k)

    cdef uint64_t _submit_many(self, int op, int form, object keys, object buffers,
                               object addresses, object sizes, int64_t ms, str call,
                               str sig, object as_call, object keep=None) except 0:
        """A submitted batch of any form (see new_batch); returns its id.
        ``as_call``: None, or the (call, signature) that the errors name
        instead of the submit call's: for lmcache_redis.asyncio, whose
        calls submit batches (("get_many", "keys, buffers"); ("get", "key,
        buffer") names the arguments key and buffer). ``keep``: None, or an
        object the batch holds until its completion is converted (or the
        client is freed): the memory a worker writes into."""
        if as_call is not None:
            call, sig = as_call
        cdef batch_rec *rec = new_batch(op, form, as_list(keys, "keys", call, sig), buffers,
                                        addresses, sizes, call, sig)
        if keep is not None:
            try:
                (<list><object>rec.keys).append(keep)
            except BaseException:
                rec_free(rec)
                raise
        return self._submit(rec, ms)

    def get_many(self, keys, buffers):
        """Reads the values under ``keys`` (str or bytes each) into
        ``buffers`` (one writable C-contiguous buffer per key, as for
        get(key, buffer)), all in one batch: the keys' reads spread over
        every connection and run together, the GIL released throughout.

        Returns a list with one entry per key: the value's length in bytes,
        or None on a miss (whose buffer's contents are unspecified).
        Raises BatchError when any key failed (e.g. a value longer than its
        buffer: BufferTooSmallError with ``needed`` in ``results`` at its
        index); the other keys were read, and their results are in its
        ``results``. Ctrl-C cancels the whole batch (KeyboardInterrupt)."""
        return self._many(LMR_BATCH_GET, FORM_BUFFERS, keys, buffers, None, None, 0,
                          "get_many", "keys, buffers")

    def set_many(self, keys, buffers, *, ttl=None):
        """Stores each of ``buffers`` (any C-contiguous buffer) under its key
        of ``keys``, all in one batch, sent straight from the buffers (don't
        modify them while set_many runs). ``ttl``: seconds until every value
        expires (None: never). Returns None.

        Raises BatchError when any key failed: its ``stored`` lists the keys
        that were stored, ``errors`` the others (not stored, or possibly
        stored: a cut-short set stores the old value or the new one,
        whole)."""
        self._many(LMR_BATCH_SET, FORM_BUFFERS, keys, buffers, None, None, ttl_ms(ttl),
                   "set_many", "keys, buffers")

    def exists_many(self, keys):
        """exists() for each of ``keys`` in one batch (pipelined: a round
        trip carries many keys). Returns a list of bools; raises BatchError
        when any key failed."""
        return self._many(LMR_BATCH_EXISTS, FORM_KEYS, keys, None, None, None, 0,
                          "exists_many", "keys")

    def delete_many(self, keys):
        """delete() for each of ``keys`` in one batch. Returns a list of
        bools (True: the key existed); raises BatchError when any key
        failed."""
        return self._many(LMR_BATCH_DELETE, FORM_KEYS, keys, None, None, None, 0,
                          "delete_many", "keys")

    def get_many_ptr(self, keys, addresses, sizes):
        """get_many into raw memory: key i's value goes to ``sizes[i]``
        bytes at integer ``addresses[i]`` (e.g. ``tensor.data_ptr()``),
        which must stay valid and writable until get_many_ptr returns.
        Returns and raises as get_many."""
        return self._many(LMR_BATCH_GET, FORM_MEMORY, keys, None, addresses, sizes, 0,
                          "get_many_ptr", "keys, addresses, sizes")

    def set_many_ptr(self, keys, addresses, sizes, *, ttl=None):
        """set_many from raw memory: key i's value is the ``sizes[i]`` bytes
        at integer ``addresses[i]``, which must stay valid and unchanged
        until set_many_ptr returns. Returns and raises as set_many."""
        self._many(LMR_BATCH_SET, FORM_MEMORY, keys, None, addresses, sizes, ttl_ms(ttl),
                   "set_many_ptr", "keys, addresses, sizes")

    # ---- submit / drain: batches nobody waits for -----------------------------

    def event_fd(self):
        """The file descriptor (an eventfd, owned by the client) that is
        readable while completed batches wait for drain_completions(): poll
        it (select, epoll, ``loop.add_reader``), never read or close it. It
        stays readable until every waiting completion was drained, so no
        wake-up is lost."""
        cdef int fd = lmr_event_fd(open_client(self._c))
        if fd < 0:
            raise OSError(f"the client has no event fd ({fd})")
        return fd

    def submit_batch_get(self, keys, buffers, *, _call=None):
        """Starts get_many(keys, buffers) and returns its id (an int > 0) at
        once: submitting never waits for the network, and raises only for
        its own arguments or a closed client. The client keeps the buffers
        (their views) until the batch's completion is drained; don't touch
        them before. Exactly one completion per id follows, whatever
        happens; drain_completions() returns it, with per key the length
        read, None (a miss) or the exception.

        ``_call`` (every submit_batch_* call takes it) is private, for
        lmcache_redis.asyncio: the (call, signature) its argument errors
        name, e.g. ("get_many", "keys, buffers")."""
        return self._submit_many(LMR_BATCH_GET, FORM_BUFFERS, keys, buffers, None, None, 0,
                                 "submit_batch_get", "keys, buffers", _call)

    def submit_batch_set(self, keys, buffers, *, ttl=None, _call=None):
        """Starts set_many(keys, buffers, ttl=ttl) and returns its id (see
        submit_batch_get). Keep the buffers unchanged until it is drained;
        its results: True (stored) or the exception, per key."""
        return self._submit_many(LMR_BATCH_SET, FORM_BUFFERS, keys, buffers, None, None,
                                 ttl_ms(ttl), "submit_batch_set", "keys, buffers", _call)

    def submit_batch_exists(self, keys, *, _call=None):
        """Starts exists_many(keys) and returns its id (see
        submit_batch_get); its results: a bool or the exception, per key."""
        return self._submit_many(LMR_BATCH_EXISTS, FORM_KEYS, keys, None, None, None, 0,
                                 "submit_batch_exists", "keys", _call)

    def submit_batch_delete(self, keys, *, _call=None):
        """Starts delete_many(keys) and returns its id (see
        submit_batch_get); its results: a bool (the key existed) or the
        exception, per key."""
        return self._submit_many(LMR_BATCH_DELETE, FORM_KEYS, keys, None, None, None, 0,
                                 "submit_batch_delete", "keys", _call)

    def submit_batch_get_ptr(self, keys, addresses, sizes, *, _call=None, _keep=None):
        """Starts get_many_ptr(keys, addresses, sizes) and returns its id
        (see submit_batch_get). The memory must stay valid and writable
        until the completion is drained (or cancel_batch returned).

        ``_keep`` is private, for lmcache_redis.asyncio's get(key): an
        object (the bytes read into) that the batch holds until its
        completion is drained, or the client freed, whoever else drops it."""
        return self._submit_many(LMR_BATCH_GET, FORM_MEMORY, keys, None, addresses, sizes, 0,
                                 "submit_batch_get_ptr", "keys, addresses, sizes", _call,
                                 _keep)

    def submit_batch_set_ptr(self, keys, addresses, sizes, *, ttl=None, _call=None):
        """Starts set_many_ptr(keys, addresses, sizes, ttl=ttl) and returns
        its id (see submit_batch_get). The memory must stay valid and
        unchanged until the completion is drained."""
        return self._submit_many(LMR_BATCH_SET, FORM_MEMORY, keys, None, addresses, sizes,
                                 ttl_ms(ttl), "submit_batch_set_ptr", "keys, addresses, sizes",
                                 _call)

    def drain_completions(self):
        """Takes every completed batch waiting (never blocks) and returns a
        list of ``(id, results)``, oldest first, with one result per key:
        get: the length read, None (a miss) or an exception; set: True or
        an exception; exists and delete: a bool or an exception
        (BufferTooSmallError with ``needed``, ConnectionError,
        TimeoutError, ClientClosedError, OperationCancelledError, ...).
        The batches' buffers are released here. Works after close() too,
        for the completions close() left.

        When converting the results raises (MemoryError; KeyboardInterrupt
        from a signal handler), the completions not yet returned are kept,
        the event fd stays readable, and the next call returns them."""
        cdef lmr_client *c = open_client(self._c)
        cdef lmr_completion out[DRAIN_CHUNK]
        cdef size_t got, i
        cdef batch_rec *rec
        cdef uint64_t foreign = 0
        cdef bint has_foreign = False
        # Taken from the C queue into self._taken first: nothing here calls
        # Python, so nothing can raise between a completion leaving the
        # queue and its block being on a list of this client's.
        while True:
            got = lmr_drain(c, out, DRAIN_CHUNK)
            for i in range(got):
                rec = rec_of(out[i].items)
                if rec == NULL:
                    if not has_foreign:
                        has_foreign, foreign = True, out[i].id
                    continue
                self._unlink(rec)
                rec.done_id = out[i].id
                if self._taken_last != NULL:
                    self._taken_last.next = rec
                else:
                    self._taken = rec
                self._taken_last = rec
            if got < DRAIN_CHUNK:
                break
        # Then converted, oldest first. A block is unlinked before its
        # conversion (which may run Python code, and so let another thread
        # drain too) and put back first when the conversion raises; its
        # results go to self._ready whole, with no Python code between
        # taking the list and appending to it.
        while self._taken != NULL:
            rec = self._taken
            self._taken = rec.next
            if self._taken == NULL:
                self._taken_last = NULL
            rec.next = NULL
            try:
                item = (rec.done_id, rec_results(rec))
            except BaseException:
                rec.next = self._taken
                self._taken = rec
                if self._taken_last == NULL:
                    self._taken_last = rec
                # The C queue's drain quietened the fd, yet these wait:
                # made readable again (the next drain quietens it once the
                # C queue is empty), or a poller that drains only when it
                # is readable (LMCache) would never come back for them.
                rearm_event_fd(c)
                raise
            self._ready.append(item)
            rec_free(rec)
        if has_foreign:
            raise SystemError(f"drain_completions: completion {foreign} carries items that "
                              f"no submitted batch of this client owns")
        done, self._ready = self._ready, []
        return done

    def cancel_batch(self, batch_id):
        """Cancels the submitted batch ``batch_id``: its keys not yet sent
        never are, those in flight are cut short (their connections
        re-made). Returns True once no worker touches the batch's buffers
        any more (within milliseconds), False when it had already completed
        (or never existed). Its completion is still drained later, its
        cut-short keys failed with OperationCancelledError: a cancelled get
        left its buffer's contents unspecified, a cancelled set stored the
        old value or the new one, whole."""
        try:
            if isinstance(batch_id, bool):  # True is no batch id
                raise TypeError
            batch_id = operator.index(batch_id)
        except TypeError:
            raise TypeError(f"cancel_batch(batch_id): batch_id must be an int, not "
                            f"{type(batch_id).__name__}") from None
        cdef lmr_client *c = open_client(self._c)
        if not 0 < batch_id < 2**64:
            return False
        cdef uint64_t b = batch_id
        cdef int r
        with nogil:
            r = lmr_batch_cancel(c, b)
        return r == 1
