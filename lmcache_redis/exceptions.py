"""The exceptions lmcache_redis raises, and the one table that maps the C
core's error codes onto them.

Connection failures are also builtins.ConnectionError and timeouts also
builtins.TimeoutError, so ordinary ``except OSError`` clauses catch them.
"""

import builtins

__all__ = [
    "RedisError",
    "ConnectionError",
    "TimeoutError",
    "AuthenticationError",
    "ResponseError",
    "ProtocolError",
    "BufferTooSmallError",
    "ClientClosedError",
    "OperationCancelledError",
    "BatchError",
]


class RedisError(Exception):
    """Base class of every error this library raises about Redis."""


class ConnectionError(RedisError, builtins.ConnectionError):
    """The server could not be reached, or a connection broke mid-operation.

    The client reconnects by itself on the next call."""


class TimeoutError(RedisError, builtins.TimeoutError):
    """An operation did not finish within the client's ``timeout``."""


class AuthenticationError(ConnectionError):
    """The server refused the username/password (or wants one)."""


class ResponseError(RedisError):
    """The server answered with an error reply; the message is its text."""


class ProtocolError(ConnectionError):
    """The server sent bytes that are not a valid reply; the connection was
    dropped and will be re-made."""


class BufferTooSmallError(RedisError, ValueError):
    """The stored value is longer than the buffer given to ``get``.

    ``needed`` is the value's length in bytes: allocate that and retry."""

    def __init__(self, message: str, needed: int):
        super().__init__(message)
        self.needed = needed

    def __reduce__(self):
        # Exceptions pickle as cls(*args); args holds the message alone.
        return (type(self), (str(self), self.needed))


class ClientClosedError(RedisError):
    """The client was closed before or during the operation."""


class OperationCancelledError(RedisError):
    """The operation was cancelled before it finished: a submitted batch's
    key cut short by ``cancel_batch`` (or by a cancelled asyncio await).
    A cancelled get left its buffer's contents unspecified; a cancelled set
    stored the old value or the new one, whole."""


class BatchError(RedisError):
    """Some keys of a batch (``get_many``, ``set_many``, ...) failed; the
    others succeeded.

    ``results``: one entry per key, in order: what that key would have
    returned (the length read or None for get_many, True for set_many, a
    bool for exists_many and delete_many), or the exception for that key
    (BufferTooSmallError with ``needed`` for a value longer than its
    buffer, ConnectionError, TimeoutError, ClientClosedError, ...).
    ``failures``: every failed entry, in order, as ``(index, key,
    exception)``: a key given more than once is there once per failure.
    ``errors``: the failed keys (as given) -> their exception, for the
    common case of distinct keys; a key given more than once maps to its
    first failure (``failures`` has them all; the message counts them all).
    ``stored``: for set_many, the keys that were stored, once per index
    stored (the others were not, or may have been: they are in
    ``failures``); None for the others.
    """

    def __init__(self, message: str, results: list, errors: dict,
                 stored: "list | None" = None, failures: "list | None" = None):
        super().__init__(message)
        self.results = results
        self.errors = errors
        self.stored = stored
        self.failures = [] if failures is None else failures

    def __reduce__(self):
        return (type(self), (str(self), self.results, self.errors, self.stored,
                             self.failures))


# How many failed keys a BatchError's message names.
_NAMED_KEYS = 3


def batch_error(call: str, keys: list, results: list, is_set: bool = False) -> "BatchError | None":
    """The BatchError for a finished batch whose per-key ``results`` hold an
    exception for each failed key, or None when none failed. ``call`` names
    the call ("get_many") in the message; ``keys``: the keys as given, a
    list (read once: the batch's own)."""
    failures = [(i, keys[i], r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    if not failures:
        return None
    errors: dict = {}
    for _, key, exc in failures:
        errors.setdefault(key, exc)
    stored = [k for k, r in zip(keys, results) if r is True] if is_set else None
    named = ", ".join(repr(key) for _, key, _ in failures[:_NAMED_KEYS])
    more = f" and {len(failures) - _NAMED_KEYS} more" if len(failures) > _NAMED_KEYS else ""
    first = failures[0][2]
    message = (f"{call}: {len(failures)} of {len(results)} keys failed ({named}{more}); "
               f"first error: {type(first).__name__}: {first}")
    if is_set:
        message += f"; {len(stored)} stored (see .stored)"
    return BatchError(message, results, errors, stored, failures)


# C error code name -> exception class; EINVAL and ENOMEM map to builtins.
_BY_CODE = {
    "EINVAL": ValueError,
    "ENOMEM": MemoryError,
    "ECONN": ConnectionError,
    "ETIMEDOUT": TimeoutError,
    "EPROTO": ProtocolError,
    "ERESPONSE": ResponseError,
    "EAUTH": AuthenticationError,
    "ECLOSED": ClientClosedError,
    "ECANCELED": OperationCancelledError,
}


def error_from_code(name: str, message: str, needed: int = 0) -> Exception:
    """Builds the exception for a C error code (by its name) and message."""
    if name == "ETOOBIG":
        return BufferTooSmallError(message, needed)
    return _BY_CODE.get(name, RedisError)(message)
