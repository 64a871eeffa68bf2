"""Parsing of redis:// and unix:// URLs into RedisClient keyword arguments."""

from urllib.parse import parse_qs, unquote, urlsplit

_INT_OPTIONS = ("stripes", "stripe_size", "connections", "db")
_FLOAT_OPTIONS = ("timeout", "connect_timeout")


def parse_url(url: str) -> dict:
    """Returns RedisClient keyword arguments for ``url``.

    ``redis://[[user]:password@]host[:port][/db][?option=value...]`` or
    ``unix://[[user]:password@]/path/to/socket[?db=N&option=value...]``.
    """
    parts = urlsplit(url)
    options: dict = {}
    if parts.scheme == "redis":
        options["host"] = parts.hostname or "localhost"
        if parts.port is not None:
            options["port"] = parts.port
        path = parts.path.lstrip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"the database in a redis:// URL must be a number, got {path!r}")
            options["db"] = int(path)
    elif parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
        options["unix_socket_path"] = unquote(parts.path)
    elif parts.scheme == "rediss":
        raise ValueError("rediss:// (TLS) is not supported yet; use redis:// or unix://")
    else:
        raise ValueError(f"URL scheme must be redis:// or unix://, got {url.split(':', 1)[0]!r}")
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    for name, values in parse_qs(parts.query, strict_parsing=False).items():
        value = values[-1]
        if name in _INT_OPTIONS:
            options[name] = int(value)
        elif name in _FLOAT_OPTIONS:
            options[name] = float(value)
        else:
            raise ValueError(f"unknown URL option {name!r}")
    return options
