"""lmcache_redis: a Redis client for huge values.

Values (KV-cache chunks of 4-80 MB) are split into stripes that C worker
threads move in parallel, straight between Redis and your buffers::

    import numpy as np
    import lmcache_redis

    with lmcache_redis.RedisClient("localhost", 6379) as client:
        chunk = np.random.bytes(32 << 20)
        client.set("chunk-0", chunk)
        out = np.empty(32 << 20, dtype=np.uint8)
        assert client.get("chunk-0", out) == len(chunk)
"""

try:
    from lmcache_redis._core import (
        DEFAULT_STRIPE_SIZE,
        MAX_CONNECTIONS,
        MAX_KEY_LEN,
        MAX_STRIPES,
        RedisClient,
        stripe_count,
    )
except ModuleNotFoundError as _exc:  # a source tree without the built extension
    if _exc.name != "lmcache_redis._core":
        raise
    import os as _os

    raise ImportError(
        "lmcache_redis._core, the compiled extension, is not built in "
        f"{_os.path.dirname(__file__)} (a source tree, which comes first on sys.path "
        "when Python runs in the repo root). In the repo root, run "
        "`. tools/bootstrap.sh` (builds it in place and activates .venv) or "
        "`pip install -e .`; or run Python from another directory to use an "
        "installed lmcache_redis.",
        name="lmcache_redis._core") from _exc
from lmcache_redis.exceptions import (
    AuthenticationError,
    BatchError,
    BufferTooSmallError,
    ClientClosedError,
    ConnectionError,
    OperationCancelledError,
    ProtocolError,
    RedisError,
    ResponseError,
    TimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "RedisClient",
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
    "MAX_STRIPES",
    "MAX_CONNECTIONS",
    "MAX_KEY_LEN",
    "DEFAULT_STRIPE_SIZE",
    "stripe_count",
]
