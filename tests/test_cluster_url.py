"""Redis Cluster's Python face, without a cluster: redis-cluster:// and
rediss-cluster:// URLs (parse_url), RedisClient's cluster, read_from_replicas
and cluster_seeds arguments and their checks, and the paths that take a URL
(from_url, the asyncio client, the LMCache plug-ins' settings, the operator
tool). A client that passes every check is made against a closed port: it
gets as far as connecting (ConnectionError), whatever the core then does
with a cluster."""

from __future__ import annotations

import socket

import pytest

import lmcache_redis
import lmcache_redis.asyncio as lmr_asyncio
from lmcache_redis import RedisClient
from lmcache_redis._url import cluster_seeds_text, parse_url
from lmcache_redis.lmcache import client_settings, redacted


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- parse_url: the cluster schemes ---------------------------------------------


@pytest.mark.parametrize("url, expected", [
    ("redis-cluster://10.0.0.1:7000",
     {"cluster": True, "host": "10.0.0.1", "port": 7000}),
    ("redis-cluster://10.0.0.1:7000,10.0.0.2:7001,node-3:7002",
     {"cluster": True, "host": "10.0.0.1", "port": 7000,
      "cluster_seeds": "10.0.0.2:7001,node-3:7002"}),
    ("redis-cluster://a,b", {"cluster": True, "host": "a", "port": 6379,
                             "cluster_seeds": "b:6379"}),
    ("redis-cluster://a:7000/", {"cluster": True, "host": "a", "port": 7000}),
    ("redis-cluster://a:7000/0", {"cluster": True, "host": "a", "port": 7000}),
    ("redis-cluster://a:7000,b:7001/?connections=2",
     {"cluster": True, "host": "a", "port": 7000, "cluster_seeds": "b:7001", "connections": 2}),
    ("redis-cluster://a:7000,b:7001?connections=2&timeout=2.5",
     {"cluster": True, "host": "a", "port": 7000, "cluster_seeds": "b:7001",
      "connections": 2, "timeout": 2.5}),
    ("REDIS-CLUSTER://a:7000", {"cluster": True, "host": "a", "port": 7000}),
    # IPv6: in brackets in the URL; host unbracketed, the seeds bracketed.
    ("redis-cluster://[::1]:7000,[fd00::2]:7001,[fd00::3]",
     {"cluster": True, "host": "::1", "port": 7000,
      "cluster_seeds": "[fd00::2]:7001,[fd00::3]:6379"}),
    ("redis-cluster://[fe80::1%25eth0]:7000",
     {"cluster": True, "host": "fe80::1%eth0", "port": 7000}),
])
def test_cluster_urls(url: str, expected: dict) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url, user, password", [
    ("redis-cluster://:secret@a:1,b:2", None, "secret"),
    ("redis-cluster://alice:secret@a:1,b:2", "alice", "secret"),
    ("redis-cluster://alice:p%40ss%3Aw@a:1", "alice", "p@ss:w"),
    ("redis-cluster://alice:p@ss@a:1,b:2", "alice", "p@ss"),  # the last '@' ends it
    ("redis-cluster://alice@a:1", "alice", None),  # refused later: needs a password
    ("redis-cluster://:@a:1", None, ""),
])
def test_cluster_url_credentials(url: str, user, password) -> None:
    options = parse_url(url)
    assert options.get("username") == user and options.get("password") == password
    assert (options["host"], options["port"]) == ("a", 1)


def test_rediss_cluster_is_tls() -> None:
    options = parse_url("rediss-cluster://u:pw@a:6380,b:6380?ssl_ca_certs=/ca.pem"
                        "&ssl_server_name=redis.internal&ssl_verify=false")
    assert options == {"cluster": True, "ssl": True, "host": "a", "port": 6380,
                       "cluster_seeds": "b:6380", "username": "u", "password": "pw",
                       "ssl_ca_certs": "/ca.pem", "ssl_server_name": "redis.internal",
                       "ssl_verify": False}
    assert "ssl" not in parse_url("redis-cluster://a:1")


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("on", True),
                                             ("false", False), ("no", False)])
def test_read_from_replicas_option(value: str, expected: bool) -> None:
    for scheme in ("redis-cluster", "rediss-cluster"):
        options = parse_url(f"{scheme}://a:1,b:2?read_from_replicas={value}")
        assert options["read_from_replicas"] is expected


@pytest.mark.parametrize("url", ["redis://a:1?read_from_replicas=true",
                                 "rediss://a:1?read_from_replicas=false",
                                 "unix:///r.sock?read_from_replicas=true"])
def test_read_from_replicas_is_for_cluster_urls_only(url: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_url(url)
    message = str(info.value)
    assert "read_from_replicas" in message and "redis-cluster://" in message
    assert url.split(":", 1)[0] + "://" in message


def test_the_single_node_schemes_are_unchanged() -> None:
    assert parse_url("redis://u:pw@h:1/2?stripes=3") == {
        "host": "h", "port": 1, "db": 2, "stripes": 3, "username": "u", "password": "pw"}
    assert parse_url("rediss://h") == {"ssl": True, "host": "h"}
    assert parse_url("unix:///r.sock?db=1") == {"unix_socket_path": "/r.sock", "db": 1}


@pytest.mark.parametrize("url, words", [
    ("redis-cluster://", ["redis-cluster://", "at least one seed", "host:port"]),
    ("rediss-cluster://", ["rediss-cluster://", "at least one seed"]),
    ("redis-cluster:///", ["at least one seed"]),
    ("redis-cluster://?connections=2", ["at least one seed"]),
    ("redis-cluster://u:pw@", ["at least one seed"]),
    ("redis-cluster://a:0", ["'a:0'", "1..65535"]),
    ("redis-cluster://a:65536", ["'a:65536'", "1..65535"]),
    ("redis-cluster://a:1,b:99999", ["'b:99999'", "1..65535"]),
    ("redis-cluster://a:port", ["'a:port'", "number"]),
    ("redis-cluster://a:-1", ["'a:-1'", "number"]),
    ("redis-cluster://a:1,,b:2", ["empty seed"]),
    ("redis-cluster://a:1,", ["empty seed"]),
    ("redis-cluster://,a:1", ["empty seed"]),
    ("redis-cluster://:7000", ["':7000'", "no host"]),
    ("redis-cluster://a:1,:7000", ["':7000'", "no host"]),
    ("redis-cluster://::1:7000", ["brackets", "[::1]:7000"]),
    ("redis-cluster://[::1:7000", ["no closing ']'"]),
    ("redis-cluster://[::1]7000", ["':port' after ']'"]),
    ("redis-cluster://[]:7000", ["no host"]),
    ("redis-cluster://[node]:7000", ["IPv6 addresses only"]),
    ("redis-cluster://[fd00::zz]:7000", ["not an IPv6 address"]),
    ("redis-cluster://a%20b:7000", ["'a b'"]),
    ("redis-cluster://a:1/1", ["only database 0", "/1", "redis-cluster://"]),
    ("rediss-cluster://a:1,b:2/3", ["only database 0", "/3", "rediss-cluster://"]),
    ("redis-cluster://a:1/db", ["only database 0"]),
    ("redis-cluster://a:1?bogus=1", ["unknown URL option 'bogus'"]),
    ("redis-cluster://a:1?cluster_seeds=b:2", ["unknown URL option 'cluster_seeds'"]),
    ("redis-cluster://a:1?read_from_replicas=maybe", ["read_from_replicas", "true or false"]),
    ("redis-cluster://a:1?connections=four", ["connections", "'four'"]),
    ("redis-clusters://a:1", ["URL scheme must be", "redis-cluster://", "rediss-cluster://"]),
    ("http://a:1", ["URL scheme must be", "redis-cluster://"]),
])
def test_bad_cluster_urls(url: str, words: list) -> None:
    with pytest.raises(ValueError) as info:
        parse_url(url)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_seed_errors_show_what_is_expected() -> None:
    with pytest.raises(ValueError) as info:
        parse_url("redis-cluster://a:1,b:x")
    message = str(info.value)
    assert message.startswith("in the redis-cluster:// URL") and "host:port" in message
    assert "[ipv6]:port" in message


# ---- cluster_seeds: its forms, normalised to the C string --------------------------


@pytest.mark.parametrize("value, expected", [
    (None, None),
    ("", None),
    ([], None),
    ((), None),
    ("b:7001", "b:7001"),
    ("b:7001,c:7002", "b:7001,c:7002"),
    (" b:7001 , c ", "b:7001,c:6379"),
    ("[fd00::2]:7001,[::1]", "[fd00::2]:7001,[::1]:6379"),
    ([("b", 7001), ("c", 7002)], "b:7001,c:7002"),
    ((("b", 7001),), "b:7001"),
    (["b:7001", ("c", 7002)], "b:7001,c:7002"),
    ([("fd00::2", 7001), ("[fd00::3]", 7002), "[fd00::4]:7003"],
     "[fd00::2]:7001,[fd00::3]:7002,[fd00::4]:7003"),
    (iter([("b", 1)]), "b:1"),
])
def test_cluster_seeds_forms(value, expected) -> None:
    assert cluster_seeds_text(value) == expected


@pytest.mark.parametrize("value, error, words", [
    ("b:0", ValueError, ["cluster_seeds", "'b:0'", "1..65535"]),
    ("b:70000", ValueError, ["cluster_seeds", "1..65535"]),
    ("b:1,,c:2", ValueError, ["cluster_seeds", "empty seed"]),
    ("fd00::2:7001", ValueError, ["cluster_seeds", "brackets"]),
    ([("b", 0)], ValueError, ["cluster_seeds[0]", "1..65535"]),
    ([("b", 1), ("c", 65536)], ValueError, ["cluster_seeds[1]", "1..65535"]),
    ([("", 7000)], ValueError, ["cluster_seeds[0]", "no host"]),
    ([("b,c", 7000)], ValueError, ["cluster_seeds[0]", "','"]),
    ([("fd00::zz", 7000)], ValueError, ["cluster_seeds[0]", "not an IPv6 address"]),
    ([("b", "7000")], TypeError, ["cluster_seeds[0]", "port must be an int"]),
    ([("b", True)], TypeError, ["cluster_seeds[0]", "port must be an int"]),
    ([("b", 7000.0)], TypeError, ["cluster_seeds[0]", "port must be an int"]),
    ([(b"b", 7000)], TypeError, ["cluster_seeds[0]", "host must be str"]),
    ([("b", 1, 2)], TypeError, ["cluster_seeds[0]", "(host, port) tuple"]),
    ([["b", 1]], TypeError, ["cluster_seeds[0]", "(host, port) tuple"]),
    (("b", 7000), TypeError, ["cluster_seeds[1]", "[(host, port)]"]),
    (b"b:1", TypeError, ["cluster_seeds", "bytes"]),
    (7000, TypeError, ["cluster_seeds", "int"]),
])
def test_bad_cluster_seeds(value, error, words) -> None:
    with pytest.raises(error) as info:
        cluster_seeds_text(value)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ---- RedisClient's arguments ------------------------------------------------------


def test_cluster_arguments_pass_the_checks() -> None:
    port = _closed_port()
    for kwargs in ({"cluster": True},
                   {"cluster": True, "read_from_replicas": True},
                   {"cluster": True, "cluster_seeds": [("127.0.0.1", _closed_port())]},
                   {"cluster": True, "cluster_seeds": "127.0.0.1:1,[::1]:2", "db": 0},
                   {"cluster": False, "read_from_replicas": False, "cluster_seeds": None}):
        with pytest.raises(lmcache_redis.ConnectionError):
            RedisClient("127.0.0.1", port, connect_timeout=2, **kwargs)


@pytest.mark.parametrize("name", ["cluster", "read_from_replicas"])
@pytest.mark.parametrize("value", [1, 0, "true", None, 1.0])
def test_cluster_bools_must_be_bools(name: str, value) -> None:
    with pytest.raises(TypeError) as info:
        RedisClient("127.0.0.1", 1, **{"cluster": True, name: value})
    assert name in str(info.value) and "True or False" in str(info.value)


@pytest.mark.parametrize("kwargs, name", [
    ({"read_from_replicas": True}, "read_from_replicas"),
    ({"cluster_seeds": "b:7001"}, "cluster_seeds"),
    ({"cluster_seeds": [("b", 7001)]}, "cluster_seeds"),
])
def test_cluster_options_need_cluster(kwargs: dict, name: str) -> None:
    # The core's check (client.c check_config), before any connection.
    with pytest.raises(ValueError) as info:
        RedisClient("127.0.0.1", _closed_port(), **kwargs)
    message = str(info.value)
    assert message.startswith(name) and "cluster=True" in message
    assert "redis-cluster://" in message


def test_cluster_refuses_a_unix_socket(tmp_path) -> None:
    with pytest.raises(ValueError) as info:
        RedisClient(cluster=True, unix_socket_path=str(tmp_path / "redis.sock"))
    assert "unix_socket_path" in str(info.value) and "cluster=True" in str(info.value)


@pytest.mark.parametrize("db", [1, 15])
def test_cluster_refuses_a_database(db: int) -> None:
    with pytest.raises(ValueError) as info:
        RedisClient("127.0.0.1", _closed_port(), cluster=True, db=db)
    assert "db" in str(info.value) and "database 0" in str(info.value)
    with pytest.raises(ValueError, match="database 0"):
        RedisClient.from_url(f"redis-cluster://127.0.0.1:{_closed_port()}?db={db}")


def test_bad_seeds_are_refused_by_the_client() -> None:
    with pytest.raises(ValueError, match=r"cluster_seeds\[0\].*1\.\.65535"):
        RedisClient("127.0.0.1", 1, cluster=True, cluster_seeds=[("b", 0)])
    with pytest.raises(TypeError, match="cluster_seeds"):
        RedisClient("127.0.0.1", 1, cluster=True, cluster_seeds=7000)


@pytest.mark.parametrize("url", ["redis-cluster://a:1,b:2", "rediss-cluster://a:1"])
def test_a_cluster_url_as_host_points_to_from_url(url: str) -> None:
    with pytest.raises(ValueError) as info:
        RedisClient(url)
    assert "from_url" in str(info.value) and url in str(info.value)


def test_cluster_settings_are_documented() -> None:
    import inspect

    # The docstring's signature line (inspect reads it as __text_signature__).
    assert str(inspect.signature(RedisClient)).endswith(
        "cluster=False, read_from_replicas=False, cluster_seeds=None)")
    doc = RedisClient.__doc__
    for word in ("cluster:", "read_from_replicas:", "cluster_seeds", "redis-cluster://"):
        assert word in doc, word
    assert "redis-cluster://" in RedisClient.from_url.__doc__
    assert "rediss-cluster://" in RedisClient.from_url.__doc__
    assert "redis-cluster://" in lmr_asyncio.RedisClient.from_url.__doc__
    assert "redis-cluster://" in parse_url.__doc__
    for name in ("cluster", "cluster_seeds", "read_from_replicas"):
        assert getattr(RedisClient, name).__doc__, name


def test_cluster_properties_on_a_client(redis_cluster) -> None:
    seed = redis_cluster.masters()[1]
    with RedisClient(redis_cluster.masters()[0].host, redis_cluster.masters()[0].port,
                     cluster=True, read_from_replicas=True,
                     cluster_seeds=[(seed.host, seed.port)], connect_timeout=2) as client:
        assert client.cluster is True and client.read_from_replicas is True
        assert client.cluster_seeds == f"{seed.host}:{seed.port}" and client.db == 0
        assert "cluster=True" in repr(client) and "read_from_replicas=True" in repr(client)


def test_cluster_true_on_a_plain_server_says_so(redis_server) -> None:
    with pytest.raises(ValueError, match="not a Redis Cluster node.*drop cluster=True"):
        RedisClient(redis_server.host, redis_server.port, cluster=True, connect_timeout=2)


# ---- everything that takes a URL -----------------------------------------------


class _Recorder(RedisClient):
    """Records the arguments from_url makes a client with, connecting nowhere."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


class _AsyncRecorder(lmr_asyncio.RedisClient):
    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


URL = "rediss-cluster://u:pw@a:7000,[fd00::2]:7001?read_from_replicas=true&connections=2"
KWARGS = {"cluster": True, "ssl": True, "host": "a", "port": 7000,
          "cluster_seeds": "[fd00::2]:7001", "username": "u", "password": "pw",
          "read_from_replicas": True, "connections": 2}


def test_from_url_takes_cluster_urls() -> None:
    assert _Recorder.from_url(URL).kwargs == KWARGS
    assert _Recorder.from_url(URL, connections=3).kwargs == {**KWARGS, "connections": 3}
    assert _AsyncRecorder.from_url(URL).kwargs == KWARGS


def test_from_url_reaches_the_core() -> None:
    port = _closed_port()
    for cls in (RedisClient, lmr_asyncio.RedisClient):
        with pytest.raises(lmcache_redis.ConnectionError):
            cls.from_url(f"redis-cluster://127.0.0.1:{port},127.0.0.1:{_closed_port()}"
                         f"?read_from_replicas=true&connect_timeout=2")


def test_lmcache_settings_take_cluster_urls(monkeypatch) -> None:
    kwargs, ttl = client_settings({"url": URL, "read_from_replicas": False}, "here")
    assert kwargs["url"] == URL and kwargs["read_from_replicas"] is False
    assert kwargs["connections"] == 2 if "connections" in kwargs else True
    monkeypatch.setenv("LMR_TEST_PW", "pw")
    kwargs, _ = client_settings({"url": "redis-cluster://a:1,b:2", "password_env": "LMR_TEST_PW",
                                 "read_from_replicas": True, "db": 0}, "here")
    assert kwargs["password"] == "pw" and kwargs["read_from_replicas"] is True


@pytest.mark.parametrize("params, error, words", [
    ({"url": "redis-cluster://"}, ValueError, ["'url'", "at least one seed"]),
    ({"url": "redis-cluster://a:1/2"}, ValueError, ["'url'", "only database 0"]),
    ({"url": "redis-cluster://a:1", "db": 1}, ValueError, ["'db'", "database 0"]),
    ({"url": "redis://a:1", "read_from_replicas": True}, ValueError,
     ["'read_from_replicas'", "redis-cluster://"]),
    ({"url": "redis-cluster://a:1", "read_from_replicas": "true"}, TypeError,
     ["'read_from_replicas'", "bool"]),
    ({"url": "redis-cluster://a:1", "read_from_replicas": 1}, TypeError,
     ["'read_from_replicas'", "bool"]),
])
def test_lmcache_settings_refuse_bad_cluster_settings(params, error, words) -> None:
    with pytest.raises(error) as info:
        client_settings(params, "here")
    for word in ("here:", *words):
        assert word in str(info.value), (word, str(info.value))


def test_lmcache_native_client_takes_a_cluster_url() -> None:
    from lmcache_redis.lmcache import LMCacheRedisNativeClient

    port = _closed_port()
    with pytest.raises(lmcache_redis.ConnectionError) as info:
        LMCacheRedisNativeClient(url=f"redis-cluster://127.0.0.1:{port},127.0.0.1:1",
                                 read_from_replicas=True, connect_timeout=2)
    assert "redis-cluster://127.0.0.1" in str(info.value)


def test_redacted_cluster_url() -> None:
    assert redacted("redis-cluster://u:secret@a:1,[::1]:2/?x=1") == \
        "redis-cluster://u:***@a:1,[::1]:2/?x=1"
    assert "secret" not in redacted("rediss-cluster://:secret@a:1,b:2")


def test_operator_tool_refuses_a_cluster_url(capsys) -> None:
    from lmcache_redis.__main__ import main

    for argv in (["scan", "redis-cluster://127.0.0.1:1,127.0.0.1:2"],
                 ["inspect", "rediss-cluster://127.0.0.1:1", "k"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "Redis Cluster" in capsys.readouterr().err
