"""Where rate-limit counts live: the ``limits`` storage a URI names, and its health.

``memory://`` and ``redis://`` are what users write; ``limits`` wants its async
schemes. One storage is shared by a limiter and every limiter derived from it
(per-route limits), so they share connections and one view of an outage.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from limits import storage as sync_storage
from limits.aio import storage as async_storage
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from bearerguard._flight import SingleFlight
from bearerguard._ratelimit_memory import MovingWindowMemory
from bearerguard._ratelimit_redis import RedisMovingWindow
from bearerguard._redis import ScriptBatch

__all__ = ["SharedStorage", "async_storage_uri", "redacted", "supports"]

log = logging.getLogger("bearerguard.ratelimit")


def async_storage_uri(uri: str) -> str:
    """Map what users write (``redis://``, ``memory://``) to the async scheme of ``limits``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme:
        raise ValueError("rate limit storage must be a URI such as memory:// or redis://host:port")
    scheme = scheme.lower()
    if not scheme.startswith("async+"):
        scheme = "async+" + scheme
    return f"{scheme}://{rest}"


def redacted(uri: str) -> str:
    """The storage URI without credentials, for error messages and reprs."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class SharedStorage:
    """One ``limits`` storage and its health, shared by a limiter and the limiters derived from it.

    ``memory://`` gets the synchronous ``limits.storage.MemoryStorage`` because the
    async one awaits an expiry task that walks every key on each hit (once the event
    loop runs between hits), while the sync one is pure in-process dict/deque work
    (expiry on a timer thread) that cannot block on I/O (figures in
    benchmarks/results/latest.md);
    networked storages (Redis) keep the async implementation.

    After a failure the storage is left alone for ``cooldown`` seconds, so an outage
    costs one failed round trip per cooldown instead of one per request, and the
    warning is logged once per cooldown instead of flooding the log.
    """

    __slots__ = (
        "__weakref__",
        "_connecting",
        "connected",
        "cooldown",
        "down_until",
        "moving_window",
        "script_batch",
        "storage",
        "uri",
    )

    def __init__(
        self, uri: str, *, timeout: float, cooldown: float, options: Mapping[str, Any]
    ) -> None:
        self.uri = async_storage_uri(uri)
        self.cooldown = cooldown
        self.down_until = 0.0
        scheme, _, rest = self.uri.partition("://")
        opts: dict[str, Any] = {}
        if scheme.startswith("async+redis"):
            # limits' default async Redis client (coredis) must be entered as an async
            # context manager since coredis 5, which limits 5.x does not do: use redis-py.
            opts = {
                "implementation": "redispy",
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            }
        opts.update(options)
        try:
            if scheme == "async+memory":
                # The reported URI stays async+memory://; the implementation behind it is
                # sync, with an O(1) moving window (limits' list grows with the window).
                storage: Any = MovingWindowMemory(f"memory://{rest}", wrap_exceptions=True)
            else:
                storage = storage_from_string(self.uri, wrap_exceptions=True, **opts)
        except ConfigurationError as exc:
            raise ValueError(f"rate limit storage {redacted(self.uri)!r}: {exc}") from None
        if not isinstance(storage, (async_storage.Storage, sync_storage.MemoryStorage)):
            raise ValueError(
                f"rate limit storage {redacted(self.uri)!r} has no async implementation"
            )
        self.storage: async_storage.Storage | sync_storage.MemoryStorage = storage
        #: A cluster client must learn the slot map before a burst of first requests: redis-py
        #: (8.1) discovering it from many concurrent commands at once can tear down sockets
        #: others are writing on (AttributeError on a None writer, seen with a real cluster).
        self.connected = not scheme.startswith(("async+redis+cluster", "async+valkey+cluster"))
        self._connecting: SingleFlight[bool] = SingleFlight()
        #: One Redis server or a sentinel's master: moving-window hits batched per loop
        #: iteration, one script call each (a cluster keeps limits' path).
        self.moving_window: RedisMovingWindow | None = None
        #: The pipeline those hits ride in, lent to token sharing on the same storage.
        self.script_batch: ScriptBatch | None = None
        bridge = getattr(storage, "bridge", None)
        if (
            scheme in ("async+redis", "async+rediss", "async+redis+sentinel", "async+unix")
            and bridge is not None
            and hasattr(bridge, "get_connection")
        ):
            self.script_batch = ScriptBatch(bridge.get_connection())
            self.moving_window = RedisMovingWindow(self.script_batch, bridge.key_prefix)

    def is_down(self, now: float) -> bool:
        return now < self.down_until

    async def connect(self) -> None:
        """Discover the cluster once (one PING through it), however many requests arrive first."""
        storage = self.storage
        assert isinstance(storage, async_storage.Storage)
        if not await self._connecting.run(storage.check):
            raise ConnectionError("the rate limit storage did not answer")
        self.connected = True

    async def aclose(self) -> None:
        """Release the redis-py pool or the memory expiry task (``limits`` has no close)."""
        await self._connecting.aclose()
        if self.script_batch is not None:
            await self.script_batch.aclose()
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        closer = getattr(client, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception as exc:  # closing a dead connection must not fail shutdown
                log.debug("bearerguard.ratelimit.close_failed error=%s", type(exc).__name__)
        timer = getattr(self.storage, "timer", None)
        if isinstance(timer, (threading.Timer, asyncio.Task)):  # sync memory / async memory
            timer.cancel()  # a no-op on a finished timer or task


def supports(storage: async_storage.Storage | sync_storage.Storage, strategy: str) -> bool:
    if strategy == "moving-window":
        return isinstance(
            storage, (async_storage.MovingWindowSupport, sync_storage.MovingWindowSupport)
        )
    if strategy == "sliding-window-counter":
        return isinstance(
            storage,
            (async_storage.SlidingWindowCounterSupport, sync_storage.SlidingWindowCounterSupport),
        )
    return True
