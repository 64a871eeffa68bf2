"""The asyncio face: ``lmcache_redis.asyncio.RedisClient``.

It wraps one ``lmcache_redis.RedisClient`` and runs every call as a
submitted batch (``submit_batch_*``): the C workers move the bytes, and the
event loop learns of each finished batch through the client's event fd
(``loop.add_reader``), so no thread waits per call and the loop keeps
running while values of gigabytes move::

    import asyncio
    import numpy as np
    from lmcache_redis.asyncio import RedisClient

    async def main():
        async with RedisClient("localhost", 6379) as client:
            chunks = [np.random.bytes(32 << 20) for _ in range(4)]
            keys = [f"chunk-{i}" for i in range(4)]
            await client.set_many(keys, chunks)
            out = np.empty((4, 32 << 20), dtype=np.uint8)
            assert await client.get_many(keys, out) == [32 << 20] * 4

    asyncio.run(main())

Cancelling a task that awaits a call (``task.cancel()``,
``asyncio.wait_for``'s timeout) cancels the call's batch and waits until no
worker touches its buffers any more (milliseconds) before CancelledError
reaches the task: once the caller regains control, the library never
writes into its buffer again. What the batch did is then unknown: a
cancelled get left its buffer's contents unspecified, a cancelled set
stored the old value or the new one, whole.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional

from lmcache_redis import _core
from lmcache_redis._url import parse_url
from lmcache_redis.exceptions import (BufferTooSmallError, ClientClosedError, TimeoutError,
                                      batch_error)

__all__ = ["RedisClient"]

def _one(results: list) -> Any:
    """A batch of one key's result, or its exception raised."""
    result = results[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _settle(future: asyncio.Future, results: Any, error: Optional[BaseException]) -> None:
    """Runs on the future's loop: hands it the results (or the error)
    unless it is done already (cancelled)."""
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(results)


def _on_loop(loop: asyncio.AbstractEventLoop, fn, *args: Any) -> None:
    """Runs fn(*args) on ``loop``: at once when it is this thread's running
    loop, else through loop.call_soon_threadsafe (a loop is not
    thread-safe: aclose may run on another thread's loop); not at all once
    the loop is closed."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(*args)
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # closed meanwhile
        pass


# Seconds until the event fd's reader drains again after a drain raised
# (drain_completions keeps what it could not convert; the fd won't say so).
_DRAIN_RETRY_S = 0.01


def _keys_list(keys):
    # A copy, read once here: a generator's keys, for BatchError to name,
    # and a list that another task changes while the call awaits changes
    # nothing. One str or bytes (or None, or no sequence at all) goes
    # through as it is, for the core to refuse with its message.
    if keys is None or isinstance(keys, (str, bytes)):
        return keys
    try:
        return list(keys)
    except TypeError:
        return keys


class RedisClient:
    """RedisClient(host='localhost', port=6379, *, stripes=None, ...): the
    asyncio client, with the same arguments as ``lmcache_redis.RedisClient``
    (see its help), and ``RedisClient.from_url(url, **kwargs)``.

    Making it connects every connection before returning, as the sync
    client does (this blocks the loop for up to ``connect_timeout``; make
    it before the loop starts, or accept the wait once).

    Every call is a coroutine and takes the same arguments, returns the
    same results and raises the same exceptions as the sync client's call
    of that name: ``get(key, buffer=None)``, ``set(key, buffer, *,
    ttl=None)``, ``exists(key)``, ``delete(key)``, ``get_many``,
    ``set_many``, ``exists_many``, ``delete_many`` (BatchError when any key
    failed), ``get_many_ptr`` and ``set_many_ptr``. Buffers (and raw
    memory) must stay valid, and a set's unchanged, until the call returns.
    Many calls may be in flight at once (``asyncio.gather``); their keys
    share the client's connections.

    The client belongs to the event loop it is first used in; after that
    loop closes, another may use it. A call from another loop while that
    one is open raises RuntimeError (make one client per loop);
    ``aclose()`` may come from any thread or loop.

    Cancellation: cancelling a task that awaits a call cancels the call's
    batch (``cancel_batch``) and waits until no worker touches its buffers
    (milliseconds, on the loop's thread) before CancelledError propagates;
    so once the caller regains control, the library never writes into its
    buffer again. The buffer's contents are then unspecified; a cancelled
    set stored the old value or the new one, whole.

    ``async with`` closes it on exit; ``aclose()`` closes it explicitly.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client = _core.RedisClient(*args, **kwargs)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._fd: Optional[int] = None
        # Submitted batch id -> its future. (What a batch writes into is
        # held by the batch itself, until its completion is drained: the
        # caller's buffers, and the bytes a get(key) reads into.)
        self._pending: dict = {}
        # Guards _loop/_fd (attaching a loop: check, then act) and makes a
        # submission and its _pending entry one step for a drain on
        # another thread (aclose's): a drain never sees a completion
        # whose future is not in _pending yet.
        self._lock = threading.RLock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "RedisClient":
        """Makes a client from a ``redis://``, ``rediss://``, ``unix://``,
        ``redis-cluster://`` or ``rediss-cluster://`` URL, as
        ``lmcache_redis.RedisClient.from_url`` does; keyword arguments win
        over the URL's options."""
        options = parse_url(url)
        options.update(kwargs)
        return cls(**options)

    @property
    def client(self) -> "_core.RedisClient":
        """The synchronous RedisClient underneath (its settings, stats();
        calling it blocks the loop)."""
        return self._client

    @property
    def closed(self) -> bool:
        """True once aclose() was called."""
        return self._client.closed

    def __repr__(self) -> str:
        return f"lmcache_redis.asyncio.{self._client!r}"

    async def __aenter__(self) -> "RedisClient":
        return self

    async def __aexit__(self, *exc_info: object) -> bool:
        await self.aclose()
        return False

    async def aclose(self) -> None:
        """Closes the client: batches in flight are cut short and complete
        (their cut-short keys raise ClientClosedError, or BatchError holding
        it), the event fd's reader is removed. Idempotent; after the
        client was closed elsewhere (``client.close()``) it still hands
        the calls in flight their results. From another thread or loop
        than the one using the client, it hands them over on that loop."""
        if not self._client.closed:
            self._client.close()  # joins the workers: every batch has completed
        try:
            self._drain()
        finally:
            with self._lock:
                leftover, self._pending = self._pending, {}
                self._detach()
            for future in leftover.values():
                _on_loop(future.get_loop(), _settle, future, None,
                         ClientClosedError("the client was closed before the call completed"))

    def _detach(self) -> None:
        # With self._lock held.
        loop, fd = self._loop, self._fd
        self._loop = self._fd = None
        if loop is not None and fd is not None:
            _on_loop(loop, loop.remove_reader, fd)

    # ---- plumbing: submit, await, drain -----------------------------------------

    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return loop
        with self._lock:
            if self._loop is not loop:
                if self._loop is not None and not self._loop.is_closed():
                    raise RuntimeError("this lmcache_redis.asyncio.RedisClient is in use by "
                                       "another event loop; make one client per loop")
                if self._client.closed:
                    raise ClientClosedError("the client is closed")
                fd = self._client.event_fd()
                loop.add_reader(fd, self._drain)
                self._loop, self._fd = loop, fd
        return loop

    def _drain(self) -> None:
        """The event fd's reader (and aclose's last drain, on any thread):
        hands each finished batch's results to its future, on the future's
        loop."""
        try:
            with self._lock:
                done = [(self._pending.pop(batch_id, None), results)
                        for batch_id, results in self._client.drain_completions()]
        except BaseException:
            # What drain_completions could not convert it keeps for the
            # next call, which the event fd will not prompt: drain again.
            loop = self._loop
            if loop is not None:
                _on_loop(loop, loop.call_later, _DRAIN_RETRY_S, self._drain)
            raise
        for future, results in done:
            if future is not None:
                _on_loop(future.get_loop(), _settle, future, results, None)

    async def _run(self, submit, *args: Any, **kwargs: Any) -> list:
        """Submits a batch and awaits its per-key results. An await that
        ends otherwise (cancelled: CancelledError; the coroutine closed:
        GeneratorExit, when a task is destroyed pending after its loop
        closed) cancels the batch and waits until no worker touches its
        buffers before the exception propagates."""
        loop = self._attach()
        future = loop.create_future()
        with self._lock:
            batch_id = submit(*args, **kwargs)
            self._pending[batch_id] = future
        try:
            return await future
        except BaseException:
            # A cancelled task cancelled the future too: only a future
            # holding the results means the batch is over.
            if not future.done() or future.cancelled():
                self._client.cancel_batch(batch_id)
            raise

    async def _many(self, call: str, sig: str, submit, keys, *args: Any, **kwargs: Any) -> list:
        keys = _keys_list(keys)
        results = await self._run(submit, keys, *args, _call=(call, sig), **kwargs)
        error = batch_error(call, keys, results, is_set=call.startswith("set"))
        if error is not None:
            raise error
        return results

    # ---- one key -------------------------------------------------------------

    async def get(self, key, buffer=None):
        """Reads the value under ``key``: into ``buffer`` (returns its length,
        or None on a miss; BufferTooSmallError when it is longer), or with
        no buffer as a new ``bytes`` object (None on a miss), as the sync
        get. See the class's help for cancellation."""
        if buffer is None:
            return await self._get_new(key)
        return _one(await self._run(self._client.submit_batch_get, [key], [buffer],
                                    _call=("get", "key, buffer")))

    async def _get_new(self, key):
        # As the sync get(key): learn the length (a read into no memory),
        # read into a new bytes object of that length, again if the value
        # changed length meanwhile, at most _core._GET_ATTEMPTS times.
        if not isinstance(key, (str, bytes)):
            raise TypeError(f"get(key): key must be str or bytes, not {type(key).__name__}")
        give_up = time.monotonic() + self._client.timeout
        out, address, cap = None, 0, 0
        for attempt in range(_core._GET_ATTEMPTS):  # as the sync get(key)
            if attempt > 0 and time.monotonic() > give_up:
                raise TimeoutError(f"get({key!r}): the value kept changing length for "
                                   f"{self._client.timeout} s (the client's timeout)")
            # The batch holds `out` (_keep) until its completion is
            # drained: were this coroutine destroyed, a worker still
            # writes into live memory until the batch is cancelled.
            result = (await self._run(self._client.submit_batch_get_ptr, [key], [address],
                                      [cap], _keep=out, _call=("get", "key")))[0]
            if isinstance(result, BufferTooSmallError):
                cap = result.needed
                out, address = _core._uninitialized_bytes(cap)
                continue
            if isinstance(result, BaseException):
                raise result
            if result is None:
                return None
            if result == cap:
                return b"" if out is None else out
            # Shorter than learnt: the value was replaced; read it again.
            cap = result
            out, address = _core._uninitialized_bytes(cap)
        return None

    async def set(self, key, buffer, *, ttl: Optional[float] = None) -> None:
        """Stores ``buffer``'s bytes under ``key`` (``ttl``: seconds until it
        expires), as the sync set; keep the buffer unchanged until it
        returns."""
        _one(await self._run(self._client.submit_batch_set, [key], [buffer], ttl=ttl,
                             _call=("set", "key, buffer")))

    async def exists(self, key) -> bool:
        """True when a whole value is stored under ``key``."""
        return _one(await self._run(self._client.submit_batch_exists, [key],
                                    _call=("exists", "key")))

    async def delete(self, key) -> bool:
        """Deletes ``key``; True if it existed."""
        return _one(await self._run(self._client.submit_batch_delete, [key],
                                    _call=("delete", "key")))

    # ---- many keys -----------------------------------------------------------

    async def get_many(self, keys, buffers) -> list:
        """Reads each key's value into its buffer, in one batch; returns the
        lengths (None: a miss); BatchError when any key failed."""
        return await self._many("get_many", "keys, buffers", self._client.submit_batch_get,
                                keys, buffers)

    async def set_many(self, keys, buffers, *, ttl: Optional[float] = None) -> None:
        """Stores each buffer under its key, in one batch; BatchError (with
        ``stored``) when any key failed."""
        await self._many("set_many", "keys, buffers", self._client.submit_batch_set, keys,
                         buffers, ttl=ttl)

    async def exists_many(self, keys) -> list:
        """exists() for each key, in one batch: a list of bools."""
        return await self._many("exists_many", "keys", self._client.submit_batch_exists, keys)

    async def delete_many(self, keys) -> list:
        """delete() for each key, in one batch: a list of bools."""
        return await self._many("delete_many", "keys", self._client.submit_batch_delete, keys)

    async def get_many_ptr(self, keys, addresses, sizes) -> list:
        """get_many into raw memory (``sizes[i]`` bytes at ``addresses[i]``,
        valid and writable until it returns)."""
        return await self._many("get_many_ptr", "keys, addresses, sizes",
                                self._client.submit_batch_get_ptr, keys, addresses, sizes)

    async def set_many_ptr(self, keys, addresses, sizes, *,
                           ttl: Optional[float] = None) -> None:
        """set_many from raw memory (``sizes[i]`` bytes at ``addresses[i]``,
        valid and unchanged until it returns)."""
        await self._many("set_many_ptr", "keys, addresses, sizes",
                         self._client.submit_batch_set_ptr, keys, addresses, sizes, ttl=ttl)
