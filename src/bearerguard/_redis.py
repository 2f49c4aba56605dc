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

import urllib.parse
from typing import Any

__all__ = ["redis_client", "redis_locations"]


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
