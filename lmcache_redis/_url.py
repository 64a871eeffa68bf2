"""Parsing of redis://, rediss://, unix://, redis-cluster:// and
rediss-cluster:// URLs into RedisClient keyword arguments, and of Redis
Cluster seed lists (``cluster_seeds``)."""

import ipaddress
from urllib.parse import parse_qs, unquote, urlsplit

_INT_OPTIONS = ("stripes", "stripe_size", "connections", "db")
_FLOAT_OPTIONS = ("timeout", "connect_timeout")
_STR_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_server_name")
_BOOL_OPTIONS = ("ssl_verify", "read_from_replicas")
_CLUSTER_ONLY_OPTIONS = ("read_from_replicas",)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

_CLUSTER_SCHEMES = ("redis-cluster", "rediss-cluster")
_SCHEMES = "redis://, rediss://, unix://, redis-cluster:// or rediss-cluster://"
_CLUSTER_EXAMPLE = "redis-cluster://10.0.0.1:7000,10.0.0.2:7000"
DEFAULT_PORT = 6379
# Not in a host name (the resolver gets it as it is): URL and list syntax,
# and whitespace.
_NOT_IN_HOST = frozenset(",/?#@[]\\ \t\r\n\v\f\0")


def parse_url(url: str) -> dict:
    """Returns RedisClient keyword arguments for ``url``.

    - ``redis://[[user]:password@]host[:port][/db][?option=value...]``;
    - ``rediss://...``: the same over TLS (``ssl=True``);
    - ``unix://[[user]:password@]/path/to/socket[?db=N&option=value...]``;
    - ``redis-cluster://[[user]:password@]host1[:port1][,host2[:port2]...][/][?option=value...]``:
      a Redis Cluster (``cluster=True``) reached through these seed nodes
      (any one that answers will do): host and port are the first,
      ``cluster_seeds`` the others ("host2:port2,..."). Ports default to
      6379; an IPv6 address goes in brackets, ``[::1]:7000``. No database
      (a cluster has only database 0: the path is empty, ``/`` or ``/0``);
    - ``rediss-cluster://...``: the same over TLS (``ssl=True``).

    Options: ``stripes``, ``stripe_size``, ``connections``, ``db``,
    ``timeout``, ``connect_timeout``, ``ssl_ca_certs``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_server_name``, ``ssl_verify`` (true/false) and,
    for the cluster schemes only, ``read_from_replicas`` (true/false).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be str, not {type(url).__name__}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in _CLUSTER_SCHEMES:
        options, username, password, query = _parse_cluster_url(url, scheme)
    else:
        options, username, password, query = _parse_single_url(url)
        scheme = urlsplit(url).scheme
    if username:
        options["username"] = unquote(username)
    if password is not None:
        options["password"] = unquote(password)
    for name, values in parse_qs(query, strict_parsing=False).items():
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
            if name in _CLUSTER_ONLY_OPTIONS and scheme not in _CLUSTER_SCHEMES:
                raise ValueError(f"URL option {name} is for a Redis Cluster, not a "
                                 f"{scheme}:// URL: use a redis-cluster:// (or "
                                 f"rediss-cluster://) URL, e.g. {_CLUSTER_EXAMPLE}?{name}=true")
            if value.lower() not in _TRUE + _FALSE:
                raise ValueError(f"URL option {name} must be true or false, got {value!r}")
            options[name] = value.lower() in _TRUE
        else:
            raise ValueError(f"unknown URL option {name!r}")
    return options


def _parse_single_url(url: str) -> tuple:
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
        raise ValueError(f"URL scheme must be {_SCHEMES}, got {url.split(':', 1)[0]!r}")
    return options, parts.username, parts.password, parts.query


def _parse_cluster_url(url: str, scheme: str) -> tuple:
    # urlsplit cannot take a netloc of several host:port (its .port fails),
    # so the URL is cut here: scheme://netloc[/path][?query][#fragment], the
    # netloc ending at the first '/', '?' or '#' as urlsplit's does.
    rest = url.partition("://")[2]
    rest = rest.partition("#")[0]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        username, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    if not hosts:
        raise ValueError(f"a {scheme}:// URL needs at least one seed node host:port, "
                         f"e.g. {scheme}://10.0.0.1:7000,10.0.0.2:7000")
    where = f"in the {scheme}:// URL"
    # Percent-escapes are decoded in each seed (an IPv6 zone: [fe80::1%25eth0]).
    seeds = [_parse_seed(unquote(item), where) for item in hosts.split(",")]
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0: drop the /{path} from the "
                         f"{scheme}:// URL (e.g. {scheme}://10.0.0.1:7000,10.0.0.2:7000)")
    options: dict = {"cluster": True}
    if scheme == "rediss-cluster":
        options["ssl"] = True
    options["host"], options["port"] = seeds[0]
    if len(seeds) > 1:
        options["cluster_seeds"] = _seeds_text(seeds[1:])
    return options, username, password, query


def _seed_error(where: str, what: str) -> ValueError:
    return ValueError(f"{where}: {what}; expected host:port or [ipv6]:port "
                      f"(e.g. 10.0.0.2:7000 or [fd00::2]:7000)")


def _check_host(host: str, where: str, shown: str) -> str:
    """A host name or address from a seed, unbracketed; IPv6 only in
    brackets in ``shown`` (the text it came from)."""
    if not host:
        raise _seed_error(where, f"seed {shown!r} has no host")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _seed_error(where, f"seed {shown!r}: {host!r} is not an IPv6 address") \
                from None
        return host
    bad = sorted(set(host) & _NOT_IN_HOST)
    if bad or not host.isprintable():
        raise _seed_error(where, f"seed {shown!r}: the host {host!r} contains "
                                 f"{''.join(bad) or 'a control character'!r}")
    return host


def _check_port(port, where: str, shown: str) -> int:
    if isinstance(port, str):
        if not (port.isascii() and port.isdigit()):
            raise _seed_error(where, f"seed {shown!r}: the port must be a number in "
                                     f"1..65535, got {port!r}")
        port = int(port)
    if not 1 <= port <= 65535:
        raise _seed_error(where, f"seed {shown!r}: the port must be in 1..65535, got {port}")
    return port


def _parse_seed(text: str, where: str) -> tuple:
    """``host[:port]`` or ``[ipv6][:port]`` (port default 6379) ->
    ``(host, port)``, the host unbracketed."""
    item = text.strip()
    if not item:
        raise _seed_error(where, f"an empty seed in {text!r} (two commas, or one at an end)"
                          if text else "an empty seed (two commas, or one at an end)")
    if item.startswith("["):
        host, bracket, after = item[1:].partition("]")
        if not bracket:
            raise _seed_error(where, f"seed {item!r} has no closing ']'")
        if not host:
            raise _seed_error(where, f"seed {item!r} has no host")
        if ":" not in host:
            raise _seed_error(where, f"seed {item!r}: brackets are for IPv6 addresses only")
        if after and not after.startswith(":"):
            raise _seed_error(where, f"seed {item!r}: expected ':port' after ']', "
                                     f"got {after!r}")
        port_text = after[1:]
    else:
        if item.count(":") > 1:
            raise _seed_error(where, f"seed {item!r}: an IPv6 address goes in brackets, "
                                     f"as [{item.rpartition(':')[0]}]:{item.rpartition(':')[2]}")
        host, _, port_text = item.partition(":")
    host = _check_host(host, where, item)
    port = _check_port(port_text, where, item) if port_text else DEFAULT_PORT
    return host, port


def _seeds_text(seeds) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in seeds)


def cluster_seeds_text(value):
    """RedisClient's ``cluster_seeds`` as the C core takes it: None, or
    "host:port,host:port" (IPv6 as "[::1]:7000", every port explicit).

    ``value``: None; a str "host:port,host:port" (ports default to 6379,
    IPv6 in brackets); or a sequence of ``(host, port)`` tuples and
    "host:port" strings (a tuple's IPv6 host with or without brackets).
    An empty str or sequence is None: no more seeds.
    """
    where = "cluster_seeds"
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        return _seeds_text(_parse_seed(item, where) for item in value.split(","))
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"cluster_seeds must be a str \"host:port,host:port\" or a list of "
                        f"(host, port) tuples, not {type(value).__name__}")
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"cluster_seeds must be a str \"host:port,host:port\" or a list of "
                        f"(host, port) tuples, not {type(value).__name__}") from None
    seeds = []
    for i, item in enumerate(items):
        at = f"cluster_seeds[{i}]"
        if isinstance(item, str):
            seeds.append(_parse_seed(item, at))
            continue
        if not isinstance(item, tuple) or len(item) != 2:
            hint = (" (one seed still goes in a list: [(host, port)])"
                    if isinstance(value, tuple) and len(value) == 2
                    and isinstance(value[0], str) else "")
            raise TypeError(f"{at} must be a (host, port) tuple or a \"host:port\" str, "
                            f"not {type(item).__name__} {item!r}{hint}")
        host, port = item
        if not isinstance(host, str):
            raise TypeError(f"{at}: the host must be str, not {type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"{at}: the port must be an int, not {type(port).__name__} "
                            f"{port!r}")
        shown = f"({host!r}, {port!r})"
        if host.startswith("[") and host.endswith("]") and ":" in host:
            host = host[1:-1]
        seeds.append((_check_host(host, at, shown), _check_port(port, at, shown)))
    return _seeds_text(seeds) if seeds else None
