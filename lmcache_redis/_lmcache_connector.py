"""The in-process (non-MP) LMCache plug-in: ``LMCacheRedisConnectorAdapter``
and the ``RemoteConnector`` it makes, ``LMCacheRedisConnector``.

LMCache 0.5.6 turns it on from configuration alone (README, "Using with
LMCache")::

    remote_storage_plugins: ["lmcache_redis"]
    extra_config:
      remote_storage_plugin.lmcache_redis.module_path: lmcache_redis.lmcache
      remote_storage_plugin.lmcache_redis.class_name: LMCacheRedisConnectorAdapter
      remote_storage_plugin.lmcache_redis.url: "redis://redis-host:6379"

This module subclasses LMCache's classes, so it imports lmcache (and
torch); ``lmcache_redis.lmcache`` hands its two classes out on first
access, so that importing the MP plug-in never does.

How LMCache drives a connector (shared/lmcache-integration.md §4), and so
why this one is built as it is:

- Every async method runs on LMCache's one event loop (thread
  ``storage-manager-event-loop``), shared by all its backends: a call that
  blocks there stalls all of them. So they use ``lmcache_redis.asyncio``
  (submitted batches, completions through an eventfd on that loop): no
  thread waits per call, and nothing here blocks the loop.
- ``exists_sync``, ``batched_contains`` and ``remove_sync`` come from other
  threads and expect an answer before they return: they use the blocking
  client underneath, which may be shared by threads.
- ``get`` and friends allocate the object they read into; LMCache owns a
  hit, the connector releases everything else. ``put`` never releases
  (LMCache's ``InstrumentedRemoteConnector`` does, once ``put`` returns).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, List, Optional

from lmcache.utils import CacheEngineKey
from lmcache.v1.memory_management import MemoryObj
from lmcache.v1.storage_backend.connector import (ConnectorAdapter, ConnectorContext,
                                                  extract_plugin_type)
from lmcache.v1.storage_backend.connector.base_connector import RemoteConnector

from lmcache_redis import asyncio as lmr_asyncio
from lmcache_redis.exceptions import BatchError
from lmcache_redis.lmcache import KeyFailures, _FailureLog, make_client, redacted

__all__ = ["LMCacheRedisConnectorAdapter", "LMCacheRedisConnector", "PLUGIN_TYPE"]

log = logging.getLogger(__name__)

# The plug-in's type: LMCache names a plug-in "<type>" or "<type>.<instance>"
# and asks every adapter it loaded whether it takes "plugin://<name>". The
# adapter is made with no arguments, so it cannot learn the name it was
# configured under: the type is fixed. It must not start with "redis":
# LMCache's own RedisConnectorAdapter, asked first, takes every
# "plugin://redis..." URL.
PLUGIN_TYPE = "lmcache_redis"
_PLUGIN_SCHEME = "plugin://"

# extra_config keys under our prefix that are LMCache's, not ours.
_LMCACHE_SETTINGS = ("module_path", "class_name")

# Seconds close() waits for the client's workers to stop. LMCache's
# RemoteBackend.close() waits on close() without a time limit, so ours has
# one; the client's own close is bounded well below it.
_CLOSE_WAIT_S = 10.0
_CLOSE_POLL_S = 0.005

# exists() of this key is the health check's ping: the asyncio client has
# no PING, and one EXISTS is the same round trip on the same connections
# that the data takes.
_PING_KEY = "lmcache_redis:ping"


def plugin_settings(extra_config: Optional[dict], plugin_name: str) -> dict:
    """Our settings for the plug-in named ``plugin_name``: the values of
    ``remote_storage_plugin.<plugin_name>.<setting>`` in ``extra_config``.

    LMCache's own two keys (module_path, class_name) are left out; so are
    keys with a dot after the prefix, which belong to another instance
    (``lmcache_redis.b``'s keys start with ``lmcache_redis``'s prefix).
    Everything else is ours, so that a misspelt setting is an error.
    """
    prefix = f"remote_storage_plugin.{plugin_name}."
    out = {}
    for key, value in (extra_config or {}).items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if "." in name or name in _LMCACHE_SETTINGS:
            continue
        out[name] = value
    return out


def _hit_prefix(found: list) -> int:
    """How many leading entries are True (an exception counts as absent)."""
    for i, hit in enumerate(found):
        if hit is not True:
            return i
    return len(found)


class LMCacheRedisConnectorAdapter(ConnectorAdapter):
    """The class LMCache loads (``remote_storage_plugin.<name>.class_name``).

    Takes ``plugin://lmcache_redis`` and ``plugin://lmcache_redis.<instance>``.
    LMCache makes one adapter per plug-in and backend, and any adapter it
    loaded may be asked about any plug-in's URL: it holds no state, and
    the connector reads its settings by the context's plug-in name.
    """

    def __init__(self) -> None:
        super().__init__(_PLUGIN_SCHEME + PLUGIN_TYPE)

    def can_parse(self, url: str) -> bool:
        # A prefix test would also take "plugin://lmcache_redis_other".
        if not isinstance(url, str) or not url.startswith(_PLUGIN_SCHEME):
            return False
        return extract_plugin_type(url[len(_PLUGIN_SCHEME):]) == PLUGIN_TYPE

    def create_connector(self, context: ConnectorContext) -> RemoteConnector:
        """Checks the settings and connects. Raises (ValueError, TypeError,
        ConnectionError) with a message naming the plug-in and the setting:
        LMCache logs it, leaves the backend without a connection (every
        lookup a miss) and retries from its health check."""
        return LMCacheRedisConnector(loop=context.loop,
                                     local_cpu_backend=context.local_cpu_backend,
                                     config=context.config, metadata=context.metadata,
                                     plugin_name=context.plugin_name)


class LMCacheRedisConnector(RemoteConnector):
    """LMCache's remote connector over ``lmcache_redis``: one Redis value per
    chunk, under ``key.to_string()``, holding the chunk's bytes as they are
    (``remote_serde: naive``; no metadata key, whatever ``save_chunk_meta``
    says), striped for large chunks by the client.

    Made by ``LMCacheRedisConnectorAdapter.create_connector``; connects
    here (a bad setting or an unreachable server raises).
    """

    def __init__(self, *, loop: asyncio.AbstractEventLoop, local_cpu_backend: Any,
                 config: Any, metadata: Any = None, plugin_name: Optional[str] = None) -> None:
        if plugin_name is None or metadata is None:
            # LMCache makes a bare RemoteConnector class named in
            # class_name with neither: the settings could not be found.
            raise TypeError("LMCacheRedisConnector is made by LMCacheRedisConnectorAdapter: "
                            "set remote_storage_plugin.<name>.class_name to "
                            "LMCacheRedisConnectorAdapter and list <name> in "
                            "remote_storage_plugins")
        where = f"lmcache_redis plug-in {plugin_name!r}"
        if extract_plugin_type(plugin_name) != PLUGIN_TYPE:
            raise ValueError(f"{where}: the plug-in's name must be {PLUGIN_TYPE!r} or "
                             f"'{PLUGIN_TYPE}.<instance>'")
        serde = getattr(config, "remote_serde", "naive")
        if serde != "naive":
            # Reads allocate a full chunk and take a shorter value as a
            # partial chunk: only raw chunk bytes can be read that way.
            raise ValueError(f"{where}: remote_serde must be 'naive' (chunks are stored as "
                             f"their raw bytes), got {serde!r}")
        super().__init__(config, metadata)
        self.loop = loop
        self.local_cpu_backend = local_cpu_backend
        self._plugin_name = plugin_name
        # Connects every connection now (it blocks, but this runs in
        # LMCache's start-up or health-check thread, not on the loop).
        settings = plugin_settings(getattr(config, "extra_config", None), plugin_name)
        self._client, self._ttl = make_client(
            lmr_asyncio.RedisClient.from_url, settings,
            f"{where} (extra_config remote_storage_plugin.{plugin_name}.<setting>)")
        self._url = redacted(settings["url"])
        self._sync = self._client.client
        self._failures = _FailureLog()
        self._close_lock = threading.Lock()
        self._close_done: Optional[threading.Event] = None
        log.info("%s: connected to %s (%d connections)", where, self._url,
                 self._sync.connections)

    def __repr__(self) -> str:
        state = "closed" if self._client.closed else "open"
        return f"<LMCacheRedisConnector {self._plugin_name} {self._url} {state}>"

    # ---- reads ---------------------------------------------------------------

    def _allocate(self, n: int) -> list:
        """Up to ``n`` full-chunk objects; fewer when memory runs out.

        ``busy_loop=False``: LMCache's default waits (sleeping 0.1 s at a
        time) for other requests to free memory, on the shared loop. A
        failed allocation is a miss, and so is every key after it: LMCache
        uses a read's leading hits only, and further allocations would
        evict its hot cache for reads it would drop.
        """
        objs: list = []
        try:
            for _ in range(n):
                obj = self.local_cpu_backend.allocate(self.meta_shapes, self.meta_dtypes,
                                                      self.meta_fmt, busy_loop=False)
                if obj is None:
                    break
                objs.append(obj)
        except BaseException:
            for obj in objs:
                obj.ref_count_down()
            raise
        return objs

    async def _read(self, keys: List[CacheEngineKey]) -> List[Optional[MemoryObj]]:
        """Reads each key into a new full-chunk object: the object (LMCache's
        from then on), or None for a miss, a failure or no memory, whose
        object is released here.

        A value shorter than a full chunk is a partial chunk (LMCache
        stores a prompt's last chunk as its ``get_size()`` bytes):
        ``reshape_partial_chunk`` narrows the object to the stored length,
        and a length it refuses (not whole tokens) is a miss.

        Releases happen only once no worker writes into the objects: after
        the batch's completion, or, when the awaiting task is cancelled
        (LMCache's timeouts cancel), once the asyncio client has cancelled
        the batch, which it does before CancelledError reaches us.
        """
        names = [key.to_string() for key in keys]
        objs = self._allocate(len(keys))
        if not objs:
            return [None] * len(keys)
        try:
            try:
                results = await self._client.get_many(names[:len(objs)],
                                                      [obj.byte_array for obj in objs])
            except BatchError as exc:  # some keys failed: per-key results
                results = exc.results
        except BaseException:
            for obj in objs:
                obj.ref_count_down()
            raise
        out: List[Optional[MemoryObj]] = []
        failures = KeyFailures()  # it says what a failure is (and a miss)
        for name, obj, result in zip(names, objs, results):
            got = None
            if isinstance(result, BaseException):
                failures.add(result, name)
            elif result is not None:
                try:
                    got = self.reshape_partial_chunk(obj, result)
                except ValueError:
                    log.debug("lmcache_redis: %s: a value of %d bytes is no whole number of "
                              "tokens (%d bytes each): a miss", name, result,
                              self.single_token_size)
            if got is None:
                obj.ref_count_down()
            out.append(got)
        if failures.failed:
            self._failures.note("get", failures, len(objs))
        out.extend([None] * (len(keys) - len(objs)))
        return out

    async def get(self, key: CacheEngineKey) -> Optional[MemoryObj]:
        return (await self._read([key]))[0]

    def support_batched_get(self) -> bool:
        return True

    async def batched_get(self, keys: List[CacheEngineKey]) -> List[Optional[MemoryObj]]:
        """One batch for all keys (their stripes spread over every
        connection); per key the object or None."""
        return await self._read(list(keys))

    def support_batched_get_non_blocking(self) -> bool:
        return True

    async def batched_get_non_blocking(self, lookup_id: str,
                                       keys: List[CacheEngineKey]) -> List[MemoryObj]:
        """The objects of the leading hits; hits after the first miss are
        released (LMCache can use a prefix only)."""
        got = await self._read(list(keys))
        n = next((i for i, obj in enumerate(got) if obj is None), len(got))
        for obj in got[n:]:
            if obj is not None:
                obj.ref_count_down()
        return got[:n]  # type: ignore[return-value]

    # ---- lookups -------------------------------------------------------------

    async def exists(self, key: CacheEngineKey) -> bool:
        return await self._client.exists(key.to_string())

    def exists_sync(self, key: CacheEngineKey) -> bool:
        # Called from LMCache's threads (extra_config use_exists_sync),
        # never on the loop: the blocking client is the direct way there.
        return self._sync.exists(key.to_string())

    def support_batched_async_contains(self) -> bool:
        return True

    async def batched_async_contains(self, lookup_id: str, keys: List[CacheEngineKey],
                                     pin: bool = False) -> int:
        """How many leading keys exist, from one pipelined batch; a key that
        failed counts as absent. ``pin`` means nothing to Redis."""
        if not keys:
            return 0
        try:
            found = await self._client.exists_many([key.to_string() for key in keys])
        except BatchError as exc:
            found = exc.results
        return _hit_prefix(found)

    def support_batched_contains(self) -> bool:
        return True

    def batched_contains(self, keys: List[CacheEngineKey]) -> int:
        """batched_async_contains for LMCache's threads (blocking)."""
        if not keys:
            return 0
        try:
            found = self._sync.exists_many([key.to_string() for key in keys])
        except BatchError as exc:
            found = exc.results
        return _hit_prefix(found)

    # ---- writes --------------------------------------------------------------

    async def put(self, key: CacheEngineKey, memory_obj: MemoryObj) -> None:
        """Stores the object's ``get_size()`` bytes (a partial chunk's
        too); returns once they have left its memory. Does not release the
        object: LMCache's wrapper does, as soon as this returns. A failure
        raises, for LMCache to log and count."""
        await self._client.set(key.to_string(), memory_obj.byte_array, ttl=self._ttl)

    def support_batched_put(self) -> bool:
        return True

    async def batched_put(self, keys: List[CacheEngineKey],
                          memory_objs: List[MemoryObj]) -> None:
        """put for many objects in one batch; BatchError names the keys not
        stored (LMCache logs it)."""
        if not keys:
            return
        await self._client.set_many([key.to_string() for key in keys],
                                    [obj.byte_array for obj in memory_objs], ttl=self._ttl)

    def remove_sync(self, key: CacheEngineKey) -> bool:
        return self._sync.delete(key.to_string())

    async def list(self) -> List[str]:
        # LMCache 0.5.6 calls list() only from its "load FS chunks" API,
        # which expects FSConnector's file names. Listing Redis means a
        # SCAN of the whole database, stripe keys included: refuse loudly
        # rather than answer [] ("nothing stored").
        raise NotImplementedError("lmcache_redis does not list the keys it stores")

    # ---- health and shutdown -------------------------------------------------

    def support_ping(self) -> bool:
        return True

    async def ping(self) -> int:
        """0 when the server answers; raises otherwise (LMCache's health
        check records a TimeoutError as its timeout code, anything else as
        its generic error code, and logs the message)."""
        await self._client.exists(_PING_KEY)
        return 0

    async def close(self) -> None:
        """Stops the client: batches in flight end (failed), then every
        connection closes. Idempotent.

        The client's close() joins its worker threads, so it runs on a
        thread of its own while the loop goes on serving the other
        backends; this waits for it at most _CLOSE_WAIT_S (LMCache waits
        on close() without a limit). Calls still awaiting then get their
        results as usual.
        """
        with self._close_lock:
            done = self._close_done
            if done is None:
                done = self._close_done = threading.Event()

                def close_client() -> None:
                    try:
                        self._sync.close()
                    finally:
                        done.set()

                threading.Thread(target=close_client, name="lmcache_redis-close",
                                 daemon=True).start()
        # Polled: closing is rare, and a poll needs no executor (the loop's
        # default one may be shut down by now) nor a cross-thread future.
        give_up = time.monotonic() + _CLOSE_WAIT_S
        while not done.is_set():
            if time.monotonic() > give_up:
                log.warning("lmcache_redis plug-in %r: the client did not close within %g s",
                            self._plugin_name, _CLOSE_WAIT_S)
                return
            await asyncio.sleep(_CLOSE_POLL_S)
        # Hands out what the closed client completed and detaches its
        # event fd from the loop.
        await self._client.aclose()
