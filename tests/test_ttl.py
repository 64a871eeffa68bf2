"""Expiry: set(..., ttl=seconds) puts the expiry on the one key a value
is stored under (format 2: no other key exists)."""

from __future__ import annotations

import time

import pytest

from lmcache_redis._testing import resp_command


@pytest.fixture
def raw(redis_server):
    return lambda *args: resp_command((redis_server.host, redis_server.port), *args)


def _stored_keys(raw, key: str) -> list:
    """The keys that hold the value: always exactly the user's key."""
    keys = raw("KEYS", key + "*")
    assert keys == [key.encode()], keys
    return keys


@pytest.mark.parametrize("stripes", [1, 8])
def test_value_expires(clients, key, raw, stripes: int) -> None:
    client = clients(stripes)
    client.set(key, b"x" * 10_000, ttl=0.2)
    for k in _stored_keys(raw, key):
        pttl = raw("PTTL", k)
        assert pttl != -1 and pttl <= 200, (k, pttl)  # -1 would be "no expiry"
    time.sleep(0.25)  # Redis checks expiry on access: gone once 200 ms passed
    assert client.get(key, bytearray(10_000)) is None
    assert not client.exists(key)


@pytest.mark.parametrize("ttl, ms", [(60, 60_000), (123.4567, 123_457), (3600, 3_600_000)])
@pytest.mark.parametrize("stripes", [1, 3, 8])
def test_every_key_gets_the_ttl(clients, key, raw, stripes: int, ttl, ms: int) -> None:
    # Seconds become milliseconds, rounded up; PTTL counts down from there.
    clients(stripes).set(key, b"y" * 1000, ttl=ttl)
    for k in _stored_keys(raw, key):
        pttl = raw("PTTL", k)
        assert ms - 30_000 < pttl <= ms, (k, pttl)


@pytest.mark.parametrize("stripes", [1, 8])
def test_value_with_long_ttl_reads(clients, key, stripes: int) -> None:
    client = clients(stripes)
    client.set(key, b"z" * 1000, ttl=3600)
    assert client.get(key, bytearray(1000)) == 1000


@pytest.mark.parametrize("stripes", [1, 8])
def test_no_ttl_means_no_expiry(clients, key, raw, stripes: int) -> None:
    clients(stripes).set(key, b"y" * 1000)
    for k in _stored_keys(raw, key):
        assert raw("PTTL", k) == -1


@pytest.mark.parametrize("stripes", [1, 8])
def test_overwrite_without_ttl_clears_it(clients, key, raw, stripes: int) -> None:
    clients(stripes).set(key, b"y" * 1000, ttl=60)
    clients(stripes).set(key, b"y" * 1000)
    for k in _stored_keys(raw, key):
        assert raw("PTTL", k) == -1


def test_ttl_on_stripes_of_a_value_rewritten_with_more_stripes(clients, key, raw) -> None:
    clients(2).set(key, b"y" * 1000)
    clients(8).set(key, b"y" * 1000, ttl=60)
    for k in _stored_keys(raw, key):
        assert 0 < raw("PTTL", k) <= 60_000
