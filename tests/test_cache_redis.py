"""The shared introspection cache on a real redis-server: two replicas, and Redis taken away.

Each test starts its own ``redis-server`` on a free loopback port
(tests/redis_server.py); two :class:`TokenValidator` instances, each with its own
HTTP client and Redis connection pool, stand for two replicas of an API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from bearerguard import FetchPolicy, Issuer
from bearerguard._cache import SharedCache
from bearerguard._errors import InvalidToken
from bearerguard._validator import TokenValidator
from bearerguard.testing import TestIssuer
from redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MakeValidator = Callable[..., TokenValidator]


@pytest.fixture
async def inspect(server: RedisServer) -> AsyncIterator[Redis]:
    """A plain Redis client for looking at what bearerguard stored."""
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


def config(issuer: TestIssuer, url: str, **options: Any) -> Issuer:
    client_id, client_secret = issuer.introspection_client
    settings: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": issuer.audience,
        "jwks_uri": issuer.jwks_uri,
        "introspection_endpoint": issuer.introspection_endpoint,
        "client_id": client_id,
        "client_secret": client_secret,
        "cache_url": url,
        "fetch": FetchPolicy(timeout=1.0),
    }
    settings.update(options)
    return Issuer(**settings)


@pytest.fixture
async def replica(test_issuer: TestIssuer, server: RedisServer) -> AsyncIterator[MakeValidator]:
    made: list[TokenValidator] = []

    def make(**options: Any) -> TokenValidator:
        validator = TokenValidator([config(test_issuer, server.url, **options)])
        made.append(validator)
        return validator

    yield make
    for validator in made:
        await validator.aclose()


def calls(issuer: TestIssuer) -> int:
    return issuer.requests[issuer.introspection_path]


def redis_key(validator: TokenValidator, issuer: TestIssuer, token: str) -> str:
    namespace = validator.issuers[issuer.issuer].namespace
    return f"bearerguard:v2:introspection:{namespace}:{hashlib.sha256(token.encode()).hexdigest()}"


async def test_a_second_replica_uses_the_first_ones_introspection_result(
    test_issuer: TestIssuer, replica: MakeValidator
) -> None:
    token = test_issuer.mint_opaque(scope="read:items")
    first, second = replica(), replica()
    await first.validate(token)
    access = await second.validate(token)
    assert access.scopes == {"read:items"}
    assert access.kind == "opaque"
    assert calls(test_issuer) == 1


async def test_redis_holds_the_token_hash_and_claims_never_the_token(
    test_issuer: TestIssuer, replica: MakeValidator, inspect: Redis
) -> None:
    token = test_issuer.mint_opaque({"username": "alice"})
    validator = replica()
    await validator.validate(token)
    keys = [k.decode() async for k in inspect.scan_iter("*")]
    assert keys == [redis_key(validator, test_issuer, token)]
    raw = await inspect.get(keys[0])
    assert token.encode() not in raw
    value = json.loads(raw)
    assert value["active"] is True
    assert value["claims"]["username"] == "alice"


async def test_shared_entry_lives_at_most_the_introspection_cap(
    test_issuer: TestIssuer, replica: MakeValidator, inspect: Redis
) -> None:
    token = test_issuer.mint_opaque(expires_in=3600)
    validator = replica()
    await validator.validate(token)
    ttl_ms = await inspect.pttl(redis_key(validator, test_issuer, token))
    assert 0 < ttl_ms <= 60_000


async def test_shared_entry_never_outlives_the_answer_exp(
    test_issuer: TestIssuer, replica: MakeValidator, inspect: Redis
) -> None:
    token = test_issuer.mint_opaque(expires_in=20)
    validator = replica()
    await validator.validate(token)
    ttl_ms = await inspect.pttl(redis_key(validator, test_issuer, token))
    assert 0 < ttl_ms <= 20_000


async def test_an_inactive_answer_is_shared_briefly(
    test_issuer: TestIssuer, replica: MakeValidator, inspect: Redis
) -> None:
    token = test_issuer.mint_opaque()
    test_issuer.revoke(token)
    first, second = replica(), replica()
    for validator in (first, second):
        with pytest.raises(InvalidToken) as refused:
            await validator.validate(token)
        assert refused.value.reason == "inactive"
    assert calls(test_issuer) == 1
    ttl_ms = await inspect.pttl(redis_key(first, test_issuer, token))
    assert 0 < ttl_ms <= 10_000


async def test_another_replica_judges_shared_claims_with_its_own_rules(
    test_issuer: TestIssuer, replica: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    await replica().validate(token)
    stricter = replica(required_claims=("username",))
    with pytest.raises(InvalidToken) as refused:
        await stricter.validate(token)
    assert refused.value.reason == "missing_claim"
    assert calls(test_issuer) == 1


async def test_a_malformed_shared_value_is_ignored(
    test_issuer: TestIssuer, replica: MakeValidator, inspect: Redis
) -> None:
    token = test_issuer.mint_opaque()
    validator = replica()
    await inspect.set(redis_key(validator, test_issuer, token), b'{"active": "true"}')
    assert (await validator.validate(token)).kind == "opaque"
    assert calls(test_issuer) == 1


async def test_a_shared_value_without_an_active_answer_is_ignored(
    test_issuer: TestIssuer, replica: MakeValidator, inspect: Redis
) -> None:
    token = test_issuer.mint_opaque()
    validator = replica()
    value = {"active": True, "at": time.time(), "claims": {"sub": "x"}, "until": 4_000_000_000}
    await inspect.set(redis_key(validator, test_issuer, token), json.dumps(value))
    assert (await validator.validate(token)).subject == "test-user"
    assert calls(test_issuer) == 1


async def test_redis_killed_mid_test_degrades_to_the_in_process_cache(
    test_issuer: TestIssuer, replica: MakeValidator, server: RedisServer
) -> None:
    seen, unseen = test_issuer.mint_opaque(), test_issuer.mint_opaque()
    first, second = replica(), replica()
    await first.validate(seen)
    server.kill()
    assert (await first.validate(seen)).kind == "opaque"  # in-process hit
    assert (await first.validate(unseen)).kind == "opaque"  # introspected, Redis skipped
    assert (await second.validate(seen)).kind == "opaque"  # introspected itself
    assert calls(test_issuer) == 3
    shared = first.issuers[test_issuer.issuer].shared
    assert shared is not None and shared.failures >= 1


async def test_a_hung_redis_does_not_hang_requests(
    test_issuer: TestIssuer, replica: MakeValidator, server: RedisServer
) -> None:
    validator = replica()
    await validator.validate(test_issuer.mint_opaque())  # connection pool warmed up
    server.pause()
    try:
        async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
            access = await validator.validate(test_issuer.mint_opaque())
    finally:
        server.resume()
    assert access.kind == "opaque"


async def test_cache_url_on_an_issuer_that_does_not_introspect_is_a_configuration_error(
    test_issuer: TestIssuer, server: RedisServer
) -> None:
    with pytest.raises(ValueError, match="cache_url"):
        TokenValidator([config(test_issuer, server.url, client_id=None, client_secret=None)])


async def test_shared_cache_is_used_again_once_redis_is_back(server: RedisServer) -> None:
    clock = [0.0]
    shared = SharedCache(server.url, down_for=5.0, clock=lambda: clock[0])
    value = {"active": False, "at": 0, "until": 4_000_000_000}
    try:
        server.kill()
        await shared.put("ns", b"d" * 32, value, 10)
        assert (shared.failures, shared.available) == (1, False)
        server.start()
        assert await shared.get("ns", b"d" * 32) is None  # still skipped: no call made
        assert shared.failures == 1
        clock[0] += 5.0
        await shared.put("ns", b"d" * 32, value, 10)
        assert await shared.get("ns", b"d" * 32) == value
    finally:
        await shared.aclose()
