"""LMCache plug-ins: an LMCache 0.5.6 user switches to this library with
configuration alone (README, "Using with LMCache").

- Multiprocess (MP) mode, an L2 adapter::

      lmcache server ... --l2-adapter '{"type": "native_plugin",
          "module_path": "lmcache_redis.lmcache",
          "class_name": "LMCacheRedisNativeClient",
          "adapter_params": {"url": "redis://redis-host:6379"}}'

  ``LMCacheRedisNativeClient`` (below) is the "native client" LMCache's
  ``NativeConnectorL2Adapter`` drives: submits from its controller
  threads, ``event_fd()`` polled and ``drain_completions()`` called by
  its demux thread.

- In-process (non-MP) mode, a remote storage plug-in:
  ``LMCacheRedisConnectorAdapter`` and its connector
  ``LMCacheRedisConnector``, in ``lmcache_redis._lmcache_connector``.
  They subclass LMCache's classes, so they import lmcache; this module
  does not (nor torch): it hands them out on first access (PEP 562), which
  is what LMCache's ``getattr(module, class_name)`` does.

Both take the same settings (``client_settings``): ``url`` and the
options in ``SETTINGS``, JSON types only.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

from lmcache_redis import _core
from lmcache_redis._core import RedisClient
from lmcache_redis._url import parse_url
from lmcache_redis.exceptions import BufferTooSmallError, ClientClosedError
from lmcache_redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["LMCacheRedisNativeClient", "LMCacheRedisConnectorAdapter", "LMCacheRedisConnector",
           "client_settings", "make_client", "SETTINGS"]

log = logging.getLogger(__name__)

# A batch (every key of it) must end well before LMCache's L1 locks on its
# buffers expire (300 s for the read locks stores hold, 600 s for loads):
# after that LMCache may hand the memory to someone else while we still
# write into it. The default leaves room for a 64 x 64 MiB batch at well
# under 1 GB/s.
DEFAULT_TIMEOUT = 20.0
MAX_TIMEOUT = 240.0
# LMCache's own RESP client uses 8 workers by default; so do we.
DEFAULT_CONNECTIONS = 8

_NUM = (int, float)
# name: (accepted JSON types, what it is). Every other RedisClient option
# can also go into the URL's query string (RedisClient.from_url).
SETTINGS: dict = {
    "url": ((str,), "redis://[user@]host:port[/db][?option=value...], rediss://, unix://, "
                    "or for a Redis Cluster redis-cluster://host1:port1,host2:port2[?...] "
                    "or rediss-cluster://"),
    "connections": ((int,), f"connections and worker threads (default {DEFAULT_CONNECTIONS})"),
    "stripe_size": ((int,), "bytes per stored part (default 2 MiB)"),
    "stripes": ((int, type(None)), "parts per value, or null: by stripe_size (default)"),
    "timeout": (_NUM, f"seconds a whole batch may take (default {DEFAULT_TIMEOUT:g}, "
                      f"at most {MAX_TIMEOUT:g})"),
    "connect_timeout": (_NUM + (type(None),), "seconds to connect and authenticate"),
    "ttl": (_NUM + (type(None),), "seconds each stored value lives (default: no expiry)"),
    "username": ((str, type(None)), "AUTH user name"),
    "password_env": ((str, type(None)), "name of the environment variable holding the password"),
    "db": ((int,), "database number"),
    "ssl_ca_certs": ((str, type(None)), "PEM file of the CAs to trust (rediss://)"),
    "ssl_certfile": ((str, type(None)), "client certificate (PEM)"),
    "ssl_keyfile": ((str, type(None)), "client certificate's key (PEM)"),
    "ssl_server_name": ((str, type(None)), "name the server's certificate must carry"),
    "ssl_verify": ((bool,), "false: accept any server certificate (tests only)"),
    "read_from_replicas": ((bool,), "true: a cluster's replicas may serve reads "
                                    "(redis-cluster:// and rediss-cluster:// URLs only)"),
}


def _type_names(types: tuple) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def client_settings(params: Mapping[str, Any], where: str) -> tuple[dict, Optional[float]]:
    """Checks a plug-in's settings (``params``: JSON values by name) and
    returns ``(RedisClient.from_url keyword arguments incl. "url", ttl)``.

    Raises TypeError for an unknown or ill-typed setting and ValueError for
    a bad value, each naming ``where`` and the setting. The password comes
    from the environment variable ``password_env`` names (LMCache logs every
    adapter parameter at INFO, so a password given in them would be
    logged); one in ``url`` is accepted, with a warning saying so.
    """
    unknown = sorted(set(params) - set(SETTINGS))
    if unknown:
        raise TypeError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                        f"known: {', '.join(SETTINGS)}")
    for name, value in params.items():
        types, what = SETTINGS[name]
        # JSON has no int/bool overlap; Python does (True is an int).
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise TypeError(f"{where}: setting {name!r} must be {_type_names(types)} "
                            f"({what}), not {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}: setting {name!r} must be a finite number, got {value!r}")
    if "url" not in params:
        raise TypeError(f"{where}: setting 'url' is required, e.g. \"redis://redis-host:6379\"")
    url = params["url"]
    # Parsed here for its errors and its password (RedisClient.from_url
    # parses it again when the client is made).
    try:
        from_url = parse_url(url)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: setting 'url': {exc}") from None
    kwargs: dict = {"url": url, "connections": DEFAULT_CONNECTIONS, "timeout": DEFAULT_TIMEOUT}
    for name in ("connections", "timeout"):
        if name in from_url:  # the URL's query string beats our defaults
            kwargs.pop(name)
    kwargs.update((k, v) for k, v in params.items() if k not in ("url", "ttl", "password_env"))
    if from_url.get("cluster") and params.get("db", 0) != 0:
        raise ValueError(f"{where}: setting 'db' must be 0 (or left out) with a "
                         f"{url.partition('://')[0]}:// URL: a Redis Cluster has only "
                         f"database 0, got {params['db']!r}")
    if params.get("read_from_replicas") and not from_url.get("cluster"):
        raise ValueError(f"{where}: setting 'read_from_replicas' is for a Redis Cluster: "
                         f"give a redis-cluster:// (or rediss-cluster://) 'url', e.g. "
                         f"\"redis-cluster://10.0.0.1:7000,10.0.0.2:7000\"")
    timeout = kwargs.get("timeout", from_url.get("timeout"))
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
        raise ValueError(f"{where}: setting 'timeout' must be in (0, {MAX_TIMEOUT:g}] seconds, "
                         f"got {timeout!r}: LMCache's locks on the buffers (300 s) must "
                         f"outlive every batch")
    ttl = params.get("ttl")
    if ttl is not None:
        # Checked now by the core's own rule, which every set applies: a
        # ttl it refuses would make every store's submit raise.
        try:
            _core._check_ttl(ttl)
        except ValueError as exc:
            raise ValueError(f"{where}: setting 'ttl' (seconds, or null: no expiry): {exc}") \
                from None
    stripes = params.get("stripes")
    if stripes is not None and stripes < 1:
        # The core reads 0 as "automatic" too; here that is null alone.
        raise ValueError(f"{where}: setting 'stripes' must be >= 1, or null to let "
                         f"stripe_size choose the count; got {stripes!r}")
    env_name = params.get("password_env")
    if env_name is not None:
        if from_url.get("password") is not None:
            raise ValueError(f"{where}: the password is given twice: in 'url' and by "
                             f"'password_env'; keep only password_env")
        password = os.environ.get(env_name)
        if password is None:
            raise ValueError(f"{where}: setting 'password_env' names the environment variable "
                             f"{env_name!r}, which is not set")
        kwargs["password"] = password
    elif from_url.get("password") is not None:
        log.warning("%s: the password in 'url' is logged by LMCache with the other parameters; "
                    "put it in an environment variable and name it with 'password_env'", where)
    return kwargs, None if ttl is None else float(ttl)


# The core's messages about its arguments start with the argument's name
# ("connections must be in 1..64 ...", "connections=... is out of range").
_ARGUMENT = re.compile(r"(\w+)[ =]")


def _setting_of(message: str, params: Mapping[str, Any]) -> str:
    """The setting a message of the core's is about: one in ``params``, or
    else ``url`` (every other argument comes from its query string)."""
    match = _ARGUMENT.match(message)
    name = match.group(1) if match else ""
    if name == "password" and "password_env" in params:
        return "password_env"
    return name if name in params and name != "password_env" else "url"


def make_client(from_url: Callable[..., Any], params: Mapping[str, Any],
                where: str) -> tuple[Any, Optional[float]]:
    """Both plug-ins' client: checks ``params`` (``client_settings``), then
    connects with ``from_url`` (a RedisClient class's). Returns ``(client,
    ttl)``.

    Every error names ``where``: TypeError and ValueError, for a setting
    refused here or by the client, also name the setting; anything else
    (unreachable server, wrong password) is a ConnectionError (the error's
    own class when it is one) naming the server.
    """
    kwargs, ttl = client_settings(params, where)
    url = kwargs.pop("url")
    try:
        return from_url(url, **kwargs), ttl
    except (TypeError, ValueError) as exc:  # a value the client refuses
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"{where}: setting {_setting_of(str(exc), params)!r}: {exc}") from None
    except Exception as exc:
        kind = type(exc) if isinstance(exc, RedisConnectionError) else RedisConnectionError
        raise kind(f"{where}: cannot connect to {redacted(url)}: "
                   f"{type(exc).__name__}: {exc}") from exc


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


class KeyFailures:
    """One batch's failed keys, as both plug-ins count them.

    A key's exception is a failure, except BufferTooSmallError: a value
    longer than the buffer is a miss, as a shorter one is. A key cut short
    by close() (ClientClosedError) failed too, but is no fault: a normal
    shutdown does it, so it is not logged as one (see _FailureLog)."""

    __slots__ = ("failed", "first", "faults", "first_fault")

    def __init__(self) -> None:
        self.failed = 0   # keys that failed, cut short by close() included
        self.first = ""   # the first of them, "Class: message"
        self.faults = 0   # those not cut short by close()
        self.first_fault = ""

    def add(self, exc: BaseException, name: str = "") -> None:
        """Counts a key's exception (a miss, if it is one, counts nothing)."""
        if isinstance(exc, BufferTooSmallError):
            return
        what = f"{name + ': ' if name else ''}{type(exc).__name__}: {exc}"
        self.failed += 1
        self.first = self.first or what
        if not isinstance(exc, ClientClosedError):
            self.faults += 1
            self.first_fault = self.first_fault or what


class _FailureLog:
    """Logs failed keys, at most one line per ``every`` seconds (the lines
    in between are counted and summed into the next). LMCache never logs a
    failed load's error string, so without this a fault shows only as
    ``loaded=0/N``. Keys cut short by close() are logged at DEBUG only."""

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._lock = threading.Lock()
        self._last = -math.inf
        self._held_keys = 0
        self._held_batches = 0

    def note(self, op: str, failures: KeyFailures, keys: int) -> None:
        if failures.failed > failures.faults:
            log.debug("lmcache_redis: %s: %d of %d key(s) cut short by close()",
                      op, failures.failed - failures.faults, keys)
        if not failures.faults:
            return
        failed, first = failures.faults, failures.first_fault
        with self._lock:
            now = time.monotonic()
            if now - self._last < self._every:
                self._held_keys += failed
                self._held_batches += 1
                return
            held = (f" (and {self._held_keys} key(s) in {self._held_batches} earlier batch(es) "
                    f"not logged)" if self._held_batches else "")
            self._last, self._held_keys, self._held_batches = now, 0, 0
        log.warning("lmcache_redis: %s: %d of %d key(s) failed, first: %s%s",
                    op, failed, keys, first, held)


_GET, _SET, _EXISTS, _DELETE = "get", "set", "exists", "delete"


class LMCacheRedisNativeClient:
    """The client LMCache's ``native_plugin`` L2 adapter loads (MP mode):
    ``LMCacheRedisNativeClient(**adapter_params)``.

    Settings (``adapter_params``, JSON): ``url`` (required) and the others
    in ``SETTINGS``, e.g. ``{"url": "redis://h:6379", "connections": 8,
    "timeout": 20, "ttl": 86400, "password_env": "REDIS_PASSWORD"}``.
    The client connects here: a server that cannot be reached, or a wrong
    password, raises (LMCache then does not start, and says why).

    The contract LMCache relies on (shared/lmcache-integration.md §2):

    - ``submit_batch_*`` return an id at once (no network I/O: they run
      under LMCache's adapter lock) and raise only for the caller's bugs
      (keys and views of different lengths, a non-buffer, a read-only view
      to get into, use after ``close()``). Anything the server or the
      network does to a key comes back in the completion.
    - Exactly one completion per id, whatever happens (server killed,
      deadline, ``close()``), and only once no worker touches that batch's
      buffers again: ``(id, ok, error, mask)``.
    - get: ``mask[i]`` is True only if the value exists and is exactly as
      long as ``memoryviews[i]`` and all of it landed there (a value of
      another size is a miss); ``ok`` is False only when a key failed (not
      for misses), ``error`` names the first failure. exists: presence;
      delete: the keys deleted. set: ``ok`` False if any key was not
      stored, mask None.
    - A batch ends within ``timeout`` seconds of its submission.
    - ``event_fd()`` is readable exactly while completions wait.
    """

    def __init__(self, **params: Any) -> None:
        self._client, self._ttl = make_client(RedisClient.from_url, params,
                                              "LMCacheRedisNativeClient")
        self._url = redacted(params["url"])
        # Held while submitting and recording an id, and while draining and
        # looking ids up: a completion can be drained (on LMCache's demux
        # thread) before submit returns its id to us.
        self._lock = threading.Lock()
        self._pending: dict = {}  # id -> (op, number of keys, sizes for get)
        self._failures = _FailureLog()

    def __repr__(self) -> str:
        state = "closed" if self._client.closed else "open"
        return (f"LMCacheRedisNativeClient({self._url!r}, connections="
                f"{self._client.connections}, {state})")

    def event_fd(self) -> int:
        """An eventfd (EFD_NONBLOCK | EFD_CLOEXEC), readable exactly while
        completions wait to be drained. Owned by the client."""
        return self._client.event_fd()

    def _submit(self, op: str, submit, keys, views, call: str, sig: str, **kw: Any) -> int:
        with self._lock:
            if views is None:
                batch_id = submit(keys, _call=(call, sig), **kw)
                sizes = None
            else:
                batch_id = submit(keys, views, _call=(call, sig), **kw)
                # Every view is a buffer by now (submit checked them all).
                sizes = [memoryview(v).nbytes for v in views] if op == _GET else None
            self._pending[batch_id] = (op, len(keys), sizes)
            return batch_id

    def submit_batch_get(self, keys: list, memoryviews: list) -> int:
        """Starts reading ``keys[i]`` into ``memoryviews[i]`` (writable);
        returns the batch's id."""
        return self._submit(_GET, self._client.submit_batch_get, keys, memoryviews,
                            "submit_batch_get", "keys, memoryviews")

    def submit_batch_set(self, keys: list, memoryviews: list) -> int:
        """Starts storing ``memoryviews[i]`` under ``keys[i]`` (with the
        ``ttl`` setting); returns the batch's id. LMCache keeps the memory
        unchanged until the completion is drained."""
        return self._submit(_SET, self._client.submit_batch_set, keys, memoryviews,
                            "submit_batch_set", "keys, memoryviews", ttl=self._ttl)

    def submit_batch_exists(self, keys: list) -> int:
        """Starts checking which of ``keys`` exist; returns the batch's id."""
        return self._submit(_EXISTS, self._client.submit_batch_exists, keys, None,
                            "submit_batch_exists", "keys")

    def submit_batch_delete(self, keys: list) -> int:
        """Starts deleting ``keys``; returns the batch's id."""
        return self._submit(_DELETE, self._client.submit_batch_delete, keys, None,
                            "submit_batch_delete", "keys")

    def drain_completions(self) -> list:
        """Every completion waiting, as ``(id, ok, error, mask)``; never
        blocks and never raises (a failure to drain is logged, and what
        could not be handed out now is handed out by the next call)."""
        # The lock (which submits, under LMCache's adapter lock, wait for)
        # is held to take the completions and their records only: turning
        # them into tuples, and logging, come after.
        try:
            with self._lock:
                drained = [(batch_id, results, self._pending.pop(batch_id, None))
                           for batch_id, results in self._client.drain_completions()]
        except Exception as exc:  # noqa: BLE001 - LMCache loses anything a raising drain took
            log.error("lmcache_redis: drain_completions failed: %s: %s",
                      type(exc).__name__, exc)
            return []
        out: list = []
        for batch_id, results, record in drained:
            try:
                if record is None or len(results) != record[1]:
                    # Every id is recorded, under the lock, before its
                    # completion can be drained, with its key count.
                    raise RuntimeError(f"batch {batch_id} ({len(results)} result(s)) does not "
                                       f"match what was submitted ({record!r})")
                out.append(self._completion(batch_id, *record, results))
            except Exception as exc:  # noqa: BLE001 - still exactly one completion per id
                log.error("lmcache_redis: internal error completing batch %d: %s: %s",
                          batch_id, type(exc).__name__, exc)
                out.append((batch_id, False, f"lmcache_redis: internal error: {exc}", None))
        return out

    def _completion(self, batch_id: int, op: str, n: int, sizes, results: list) -> tuple:
        """LMCache's ``(id, ok, error, mask)`` for one batch's results."""
        mask: list = []
        failures = KeyFailures()
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                hit = False
                failures.add(r)
            elif op == _GET:
                hit = r is not None and r == sizes[i]
            else:
                hit = r is True
            mask.append(hit)
        if failures.failed:
            self._failures.note(op, failures, n)
        ok = failures.failed == 0
        return (batch_id, ok, failures.first, None if op == _SET else mask)

    def close(self) -> None:
        """Closes the client: returns once no worker is left (bounded, with
        a dead server too). Batches still running complete with failures,
        which ``drain_completions()`` still hands out; later submits raise
        ClientClosedError. Idempotent, from any thread."""
        self._client.close()


def __getattr__(name: str) -> Any:
    # The non-MP classes subclass LMCache's: imported on first use only.
    if name in ("LMCacheRedisConnectorAdapter", "LMCacheRedisConnector"):
        from lmcache_redis import _lmcache_connector

        return getattr(_lmcache_connector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
