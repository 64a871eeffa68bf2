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
}


def error_from_code(name: str, message: str, needed: int = 0) -> Exception:
    """Builds the exception for a C error code (by its name) and message."""
    if name == "ETOOBIG":
        return BufferTooSmallError(message, needed)
    return _BY_CODE.get(name, RedisError)(message)
