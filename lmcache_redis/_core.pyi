import os
from collections.abc import Buffer
from typing import Any, Union

_Path = Union[str, os.PathLike[str]]

MAX_STRIPES: int
MAX_CONNECTIONS: int
MAX_KEY_LEN: int
DEFAULT_STRIPE_SIZE: int

def stripe_count(nbytes: int, stripe_size: int = ..., connections: int = 4) -> int: ...

class RedisClient:
    """A Redis client for huge values: striped, zero-copy, GIL released."""

    host: str
    port: int
    unix_socket_path: str | None
    username: str | None
    db: int
    stripes: int | None
    stripe_size: int
    connections: int
    timeout: float
    connect_timeout: float
    ssl: bool
    ssl_ca_certs: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_verify: bool
    ssl_server_name: str | None

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        *,
        stripes: int | None = None,
        stripe_size: int = 2097152,
        connections: int = 4,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        unix_socket_path: str | None = None,
        ssl: bool = False,
        ssl_ca_certs: _Path | None = None,
        ssl_certfile: _Path | None = None,
        ssl_keyfile: _Path | None = None,
        ssl_verify: bool = True,
        ssl_server_name: str | None = None,
    ) -> None: ...
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisClient: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> RedisClient: ...
    def __exit__(self, *exc_info: object) -> bool: ...
    def set(self, key: str | bytes, buffer: Buffer, *, ttl: float | None = None) -> None: ...
    def get(self, key: str | bytes, buffer: Buffer) -> int | None: ...
    def set_ptr(self, key: str | bytes, address: int, nbytes: int, *, ttl: float | None = None) -> None: ...
    def get_ptr(self, key: str | bytes, address: int, nbytes: int) -> int | None: ...
    def exists(self, key: str | bytes) -> bool: ...
    def delete(self, key: str | bytes) -> bool: ...
    def stats(self) -> dict[str, int]: ...
