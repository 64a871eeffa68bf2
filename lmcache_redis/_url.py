"""Parsing of redis://, rediss:// and unix:// URLs into RedisClient keyword
arguments."""

from urllib.parse import parse_qs, unquote, urlsplit

_INT_OPTIONS = ("stripes", "stripe_size", "connections", "db")
_FLOAT_OPTIONS = ("timeout", "connect_timeout")
_STR_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_server_name")
_BOOL_OPTIONS = ("ssl_verify",)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_url(url: str) -> dict:
    """Returns RedisClient keyword arguments for ``url``.

    ``redis://[[user]:password@]host[:port][/db][?option=value...]``,
    ``rediss://...`` (the same over TLS: ``ssl=True``) or
    ``unix://[[user]:password@]/path/to/socket[?db=N&option=value...]``.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be str, not {type(url).__name__}")
    parts = urlsplit(url)
    options: dict = {}
    if parts.scheme in ("redis", "rediss"):
        if parts.scheme == "rediss":
            options["ssl"] = True
        options["host"] = parts.hostname or "localhost"
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"the port in {parts.scheme}://{parts.netloc.rpartition('@')[2]} "
                             f"must be a number in 1..65535") from None
        if port is not None:
            options["port"] = port
        path = parts.path.lstrip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"the database in a {parts.scheme}:// URL must be a number, "
                                 f"got {path!r}")
            options["db"] = int(path)
    elif parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
        options["unix_socket_path"] = unquote(parts.path)
    else:
        raise ValueError(f"URL scheme must be redis://, rediss:// or unix://, "
                         f"got {url.split(':', 1)[0]!r}")
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    for name, values in parse_qs(parts.query, strict_parsing=False).items():
        value = values[-1]
        if name in _INT_OPTIONS:
            try:
                options[name] = int(value)
            except ValueError:
                raise ValueError(f"URL option {name} must be a whole number "
                                 f"(e.g. ?{name}=4), got {value!r}") from None
        elif name in _FLOAT_OPTIONS:
            try:
                options[name] = float(value)
            except ValueError:
                raise ValueError(f"URL option {name} must be a number of seconds "
                                 f"(e.g. ?{name}=2.5), got {value!r}") from None
        elif name in _STR_OPTIONS:
            options[name] = value
        elif name in _BOOL_OPTIONS:
            if value.lower() not in _TRUE + _FALSE:
                raise ValueError(f"URL option {name} must be true or false, got {value!r}")
            options[name] = value.lower() in _TRUE
        else:
            raise ValueError(f"unknown URL option {name!r}")
    return options
