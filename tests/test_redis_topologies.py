"""Redis Cluster and Sentinel URIs, the ones ``limits`` takes, for rate limits and the shared cache.

A real 3-node cluster and a real sentinel (tests/redis_cluster.py) stand behind
each test; two limiters or two validators with their own connections stand for
two replicas of an application.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from limits._storage_scheme import parse_storage_uri

from bearerguard import FetchPolicy, Issuer, RateLimiter
from bearerguard._errors import RateLimited
from bearerguard._redis import redis_client, redis_locations
from bearerguard._tokens import AccessToken
from bearerguard._validator import TokenValidator
from bearerguard.testing import TestIssuer
from redis_cluster import RedisCluster, RedisSentinel, redis_cluster, redis_sentinel

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

__all__ = ["redis_cluster", "redis_sentinel"]  # fixtures, imported for pytest

STRATEGIES = ("moving-window", "fixed-window", "sliding-window-counter")


def token() -> AccessToken:
    return AccessToken(
        issuer="https://idp.example.com",
        subject="alice",
        client_id="app-1",
        scopes=frozenset(),
        audience=("https://api.example.com",),
        expires_at=None,
        token_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
    )


async def allowed_of(limiters: list[RateLimiter], tokens: list[AccessToken], n: int) -> list[int]:
    """``n`` concurrent hits per token, alternating between the replicas: the allowed counts."""

    async def attempt(limiter: RateLimiter, tok: AccessToken) -> bool:
        try:
            await limiter.hit(tok)
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(
        *(attempt(limiters[i % len(limiters)], tok) for tok in tokens for i in range(n))
    )
    return [sum(results[k * n : (k + 1) * n]) for k in range(len(tokens))]


@pytest.fixture
async def replicas() -> AsyncIterator[list[RateLimiter]]:
    made: list[RateLimiter] = []
    yield made
    for limiter in made:
        await limiter.aclose()


@pytest.mark.parametrize(
    "uri",
    [
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        "redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7000",
        "redis+sentinel://127.0.0.1:26379/mymaster",
        "redis+sentinel://:secret@h1:26379,h2:26380/svc",
    ],
)
def test_multi_host_uris_are_read_as_limits_reads_them(uri: str) -> None:
    ours = redis_locations(uri)
    theirs = parse_storage_uri(uri)
    assert ours[0] == theirs.locations
    assert ours[1] == (theirs.username or None)
    assert ours[2] == (theirs.password and theirs.password.replace("%40", "@"))
    assert ours[3] == (theirs.path or "")


@pytest.mark.parametrize("uri", ["redis+cluster://127.0.0.1", "redis+sentinel://h:1"])
def test_a_multi_host_uri_without_a_port_or_service_is_refused(uri: str) -> None:
    with pytest.raises(ValueError):
        redis_client(uri)


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_two_replicas_on_a_redis_cluster_let_nothing_past_the_budget(
    redis_cluster: RedisCluster, replicas: list[RateLimiter], strategy: Any
) -> None:
    for _ in range(2):
        replicas.append(
            RateLimiter(
                "20/minute", storage=redis_cluster.url, strategy=strategy, storage_timeout=30
            )
        )
    # Several tokens, so their keys land on different nodes of the cluster.
    tokens = [token() for _ in range(6)]
    assert await allowed_of(replicas, tokens, 60) == [20] * 6
    assert all(limiter.storage_errors == 0 for limiter in replicas)


async def test_two_replicas_through_a_sentinel_let_nothing_past_the_budget(
    redis_sentinel: RedisSentinel, replicas: list[RateLimiter]
) -> None:
    for _ in range(2):
        replicas.append(RateLimiter("20/minute", storage=redis_sentinel.url, storage_timeout=30))
    assert await allowed_of(replicas, [token(), token()], 60) == [20, 20]
    assert all(limiter.storage_errors == 0 for limiter in replicas)


def _config(issuer: TestIssuer, url: str) -> Issuer:
    client_id, client_secret = issuer.introspection_client
    return Issuer(
        issuer=issuer.issuer,
        audience=issuer.audience,
        jwks_uri=issuer.jwks_uri,
        introspection_endpoint=issuer.introspection_endpoint,
        client_id=client_id,
        client_secret=client_secret,
        cache_url=url,
        fetch=FetchPolicy(timeout=1.0),
    )


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
async def test_cache_url_shares_introspection_results_through_a_cluster_or_sentinel(
    test_issuer: TestIssuer,
    redis_cluster: RedisCluster,
    redis_sentinel: RedisSentinel,
    topology: str,
) -> None:
    url = redis_cluster.url if topology == "cluster" else redis_sentinel.url
    first = TokenValidator([_config(test_issuer, url)])
    second = TokenValidator([_config(test_issuer, url)])
    try:
        tokens = [test_issuer.mint_opaque(scope="read:items") for _ in range(4)]
        for tok in tokens:
            await first.validate(tok)
        for tok in tokens:
            assert (await second.validate(tok)).scopes == {"read:items"}
        assert test_issuer.requests[test_issuer.introspection_path] == len(tokens)
        shared = second.issuers[test_issuer.issuer].shared
        assert shared is not None and shared.hits == len(tokens) and shared.failures == 0
    finally:
        await first.aclose()
        await second.aclose()
