"""One redis-py asyncio client from one URI, for every Redis bearerguard talks to itself.

Rate limits go through ``limits``, which accepts single servers, Redis Cluster and
Sentinel URIs; the shared introspection cache and the token-sharing watch take the
same URIs, so one deployment is written down once:

* ``redis://``, ``rediss://``, ``unix://``: one server (redis-py's own ``from_url``);
* ``redis+cluster://[user:password@]host:port,host:port``: a cluster, found from
  any of the nodes;
* ``redis+sentinel://[user:password@]host:port,host:port/service_name``: the
  current master of ``service_name`` as the sentinels report it, so a failover
  is followed (credentials, as in ``limits``, are used for the sentinels too).

The ``async+`` prefix of ``limits``' notation is accepted as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Script", "ScriptBatch", "redis_client", "redis_locations"]


def redis_locations(uri: str) -> tuple[list[tuple[str, int]], str | None, str | None, str]:
    """(host, port) pairs, user, password and path of a multi-host URI, read as ``limits`` does."""
    parsed = urllib.parse.urlsplit(uri)
    hosts = parsed.netloc.rpartition("@")[2]
    locations: list[tuple[str, int]] = []
    for location in hosts.split(","):
        part = urllib.parse.urlsplit(f"//{location.strip()}")
        try:
            port = part.port
        except ValueError:
            port = None
        if not part.hostname or port is None:
            raise ValueError(f"Redis URI location {location.strip()!r} needs a host and a port")
        locations.append((part.hostname, port))
    username = urllib.parse.unquote(parsed.username) if parsed.username else None
    password = urllib.parse.unquote(parsed.password) if parsed.password else None
    return locations, username, password, parsed.path


def redis_client(uri: str, **options: Any) -> Any:
    """A ``redis.asyncio`` client (``Redis`` or ``RedisCluster``) for ``uri``, given ``options``."""
    try:
        from redis import asyncio as aioredis
    except ImportError:  # pragma: no cover - depends on the installation
        raise ValueError("Redis needs redis-py: pip install 'bearerguard[redis]'") from None
    uri = uri.removeprefix("async+")
    scheme = uri.partition("://")[0].lower()
    if scheme == "redis+cluster":
        locations, username, password, _ = redis_locations(uri)
        auth: dict[str, Any] = {
            k: v for k, v in (("username", username), ("password", password)) if v
        }
        nodes = [aioredis.cluster.ClusterNode(host, port) for host, port in locations]
        return aioredis.RedisCluster(startup_nodes=nodes, **auth, **options)
    if scheme == "redis+sentinel":
        locations, username, password, path = redis_locations(uri)
        service = path.strip("/")
        if not service:
            raise ValueError("a redis+sentinel:// URI names its service: .../service_name")
        auth = {k: v for k, v in (("username", username), ("password", password)) if v}
        sentinel = aioredis.Sentinel(  # type: ignore[no-untyped-call]
            locations, sentinel_kwargs=dict(auth), **auth, **options
        )
        return sentinel.master_for(service)
    return aioredis.Redis.from_url(uri, **options)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA-1, computed once (what ``EVALSHA`` names it by)."""

    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())  # noqa: S324


_Call = tuple[Script, list[str], list[Any], "asyncio.Future[Any]"]


class ScriptBatch:
    """Script calls made in one event-loop iteration, sent as one pipelined round trip.

    Rate-limit hits and token-sharing sightings of the same requests ride in the same
    pipeline (non-transactional: each script is atomic on its own), so a burst of
    requests costs one round trip rather than one per check. One Redis server or a
    sentinel's master only: a cluster pipeline would span nodes.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Pipelines sent and the script calls they carried (for tests and the benchmarks).
        self.round_trips = 0
        self.calls = 0

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` with ``keys`` and ``args`` in the next pipeline; its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, list(keys), list(args), future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        self.calls += len(batch)
        try:
            replies = await self._pipeline(batch)
            unknown = [i for i, reply in enumerate(replies) if _unknown_script(reply)]
            if unknown:
                # A restarted (or new) Redis has no script cache: load what it lacks once and
                # send those calls again (only those: the others already ran).
                for script in {batch[i][0] for i in unknown}:
                    await self._client.script_load(script.text)
                again = await self._pipeline([batch[i] for i in unknown])
                for i, reply in zip(unknown, again, strict=True):
                    replies[i] = reply
        except BaseException as exc:  # the connection failed: every call in it did
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError())
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller gave up (storage timeout)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        self.round_trips += 1
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def aclose(self) -> None:
        """Wait for pipelines in flight (their callers are owed an answer)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _unknown_script(reply: Any) -> bool:
    return type(reply).__name__ == "NoScriptError"  # redis-py's, for a script Redis lacks
