"""Rate limits on a real redis-server: one budget across replicas, and Redis taken away mid-test.

Each test starts its own ``redis-server`` on a free loopback port (tests/redis_server.py);
two :class:`RateLimiter` instances with separate connection pools stand for two
replicas of an application.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import socket
from typing import Any

import pytest

from bearerguard import RateLimitDecision, RateLimiter, rate_limit
from bearerguard._errors import RateLimited, Unavailable
from bearerguard._ratelimit_routes import LIMITER_SCOPE_KEY
from bearerguard._tokens import AccessToken, TokenUser
from redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

STRATEGIES = ("moving-window", "fixed-window", "sliding-window-counter")


def make(limiters: list[RateLimiter], limits: Any, **options: Any) -> RateLimiter:
    limiter = RateLimiter(limits, **options)
    limiters.append(limiter)
    return limiter


def token(sub: str = "alice") -> AccessToken:
    return AccessToken(
        issuer="https://idp.example.com",
        subject=sub,
        client_id="app-1",
        scopes=frozenset(),
        audience=("https://api.example.com",),
        expires_at=None,
        token_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
    )


async def attempt(limiter: RateLimiter, tok: AccessToken, scope: str = "") -> bool:
    try:
        await limiter.hit(tok, scope=scope)
    except RateLimited:
        return False
    return True


def connected_clients(server: RedisServer) -> int:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
        s.sendall(b"INFO clients\r\n")
        data = b""
        while b"connected_clients:" not in data or not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    line = next(x for x in data.split(b"\r\n") if x.startswith(b"connected_clients:"))
    return int(line.split(b":")[1]) - 1  # minus this connection


# -- one budget across replicas ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_two_replicas_share_one_budget_under_concurrent_load(
    server: RedisServer, limiters: list[RateLimiter], strategy: str
) -> None:
    # A generous timeout: a slow machine must not turn a hit into a fail-open pass.
    options: dict[str, Any] = {"storage": server.url, "strategy": strategy, "storage_timeout": 30}
    replica_a = make(limiters, "50/minute", **options)
    replica_b = make(limiters, "50/minute", **options)
    tok = token()
    results = await asyncio.gather(
        *(attempt(replica_a if i % 2 else replica_b, tok) for i in range(200))
    )
    assert replica_a.storage_errors == replica_b.storage_errors == 0
    allowed = results.count(True)
    assert allowed == 50, f"{allowed - 50} requests beyond the budget"


async def test_replicas_see_each_others_hits(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    replica_a = make(limiters, "5/minute", storage=server.url)
    replica_b = make(limiters, "5/minute", storage=server.url)
    tok = token()
    seen = [(await (replica_a if i % 2 else replica_b).hit(tok)).remaining for i in range(5)]
    assert seen == [4, 3, 2, 1, 0]
    with pytest.raises(RateLimited) as caught:
        await replica_a.hit(tok)
    assert 1 <= caught.value.retry_after <= 60


async def test_replicas_on_different_strategies_do_not_break_each_other(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    # A rolling deploy that changes the strategy: each stores another Redis type per key.
    tok = token()
    for strategy in STRATEGIES:
        limiter = make(limiters, "5/minute", storage=server.url, strategy=strategy)
        assert (await limiter.hit(tok)).remaining == 4
        assert limiter.storage_errors == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_storage_keys_hold_no_subject_in_clear(
    server: RedisServer, limiters: list[RateLimiter], strategy: Any
) -> None:
    from redis.asyncio import Redis

    limiter = make(limiters, "5/minute", key="sub", storage=server.url, strategy=strategy)
    await limiter.hit(token(sub="alice@example.com"))
    redis = Redis.from_url(server.url)
    try:
        keys = [k.decode() for k in await redis.keys("*")]
    finally:
        await redis.aclose()
    assert keys and not any("alice" in k for k in keys)


async def test_route_limits_share_redis_across_replicas(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    async def endpoint() -> None: ...

    tok = token()
    replicas = [
        (make(limiters, "100/minute", storage=server.url), rate_limit("3/minute")) for _ in range(2)
    ]
    outcomes = []
    for i in range(6):
        parent, guard = replicas[i % 2]
        scope = {"type": "http", "user": TokenUser(tok), LIMITER_SCOPE_KEY: parent}
        scope["endpoint"] = endpoint
        try:
            await guard.check(scope)
            outcomes.append(True)
        except RateLimited:
            outcomes.append(False)
    assert outcomes == [True, True, True, False, False, False]


async def test_closing_a_limiter_releases_its_connections(server: RedisServer) -> None:
    limiter = RateLimiter("5/minute", storage=server.url)
    derived = limiter.derive("1/minute")
    await limiter.hit(token())
    await derived.hit(token())
    assert connected_clients(server) >= 1
    await derived.aclose()  # shares the parent's storage: closes nothing
    await limiter.hit(token())
    await limiter.aclose()
    assert connected_clients(server) == 0


# -- Redis taken away -------------------------------------------------------------------------


async def test_redis_outage_fails_open_with_a_warning_and_a_counter(
    server: RedisServer, limiters: list[RateLimiter], caplog: pytest.LogCaptureFixture
) -> None:
    limiter = make(limiters, "2/minute", storage=server.url, outage_cooldown=60)
    tok = token()
    assert await attempt(limiter, tok)
    server.kill()
    with caplog.at_level(logging.WARNING, logger="bearerguard.ratelimit"):
        decisions = [await limiter.hit(tok) for _ in range(5)]
    assert all(d.degraded and d.headers() == [] for d in decisions)
    assert limiter.storage_errors == 5
    warnings = [r for r in caplog.records if "storage_unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once per cooldown, not once per request
    assert tok.short_hash in warnings[0].getMessage()
    assert tok.token_hash not in caplog.text


async def test_redis_outage_fails_closed_with_503_when_asked(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    limiter = make(limiters, "2/minute", storage=server.url, fail_closed=True, outage_cooldown=3)
    tok = token()
    assert await attempt(limiter, tok)
    server.kill()
    for _ in range(3):
        with pytest.raises(Unavailable) as caught:
            await limiter.hit(tok)
        assert caught.value.status == 503
        assert caught.value.retry_after == 3
    assert limiter.storage_errors == 3


async def test_storage_down_from_the_start_is_not_a_500(server: RedisServer) -> None:
    server.kill()
    limiter = RateLimiter("2/minute", storage=server.url)
    try:
        decision = await limiter.hit(token())
        assert isinstance(decision, RateLimitDecision) and decision.degraded
    finally:
        await limiter.aclose()


async def test_limits_apply_again_once_redis_is_back(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    limiter = make(limiters, "2/minute", storage=server.url, outage_cooldown=0.05)
    tok = token()
    await limiter.hit(tok)
    server.kill()
    assert (await limiter.hit(tok)).degraded
    server.start()  # same port, empty: a fresh budget
    decision = await limiter.hit(tok)
    for _ in range(200):  # bounded: the cooldown is 50 ms
        if not decision.degraded:
            break
        await asyncio.sleep(0.01)
        decision = await limiter.hit(tok)
    assert not decision.degraded
    assert await attempt(limiter, tok) is True
    assert await attempt(limiter, tok) is False


async def test_hung_redis_times_out_instead_of_holding_requests(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    limiter = make(limiters, "2/minute", storage=server.url, storage_timeout=0.2)
    tok = token()
    await limiter.hit(tok)
    server.pause()
    try:
        decision = await limiter.hit(tok)
    finally:
        server.resume()
    assert decision.degraded
    assert limiter.storage_errors == 1


async def test_route_limit_fails_closed_with_the_middleware_limiter(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    parent = make(limiters, "100/minute", storage=server.url, fail_closed=True)
    guard = rate_limit("3/minute")
    scope = {"type": "http", "path": "/x", "user": TokenUser(token()), LIMITER_SCOPE_KEY: parent}
    await guard.check(scope)
    server.kill()
    with pytest.raises(Unavailable):
        await guard.check(scope)


# -- one round trip for what arrives together ---------------------------------------------


async def test_concurrent_hits_from_one_process_share_round_trips(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    limiter = make(limiters, "1000/minute;5000/hour", storage=server.url, storage_timeout=30)
    batched = limiter._shared.moving_window
    assert batched is not None
    await limiter.hit(token("warm-up"))  # a fresh Redis learns the script on the first batch
    batched.batch.calls = batched.batch.round_trips = 0
    tokens = [token(f"user{i}") for i in range(100)]
    decisions = await asyncio.gather(*(limiter.hit(t) for t in tokens))
    assert all(d.remaining == 999 for d in decisions)
    assert batched.batch.calls == 100
    assert batched.batch.round_trips == 1  # a hundred hits, both limits each: one pipeline


async def test_a_redis_that_lost_its_scripts_is_taught_them_again(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    limiter = make(limiters, "5/minute", storage=server.url, storage_timeout=30)
    tok = token()
    assert (await limiter.hit(tok)).remaining == 4
    server.kill()
    server.start()  # same port, empty: no scripts, no counts
    await limiter.hit(tok)  # may meet the pooled connection the restart closed: an outage
    errors = limiter.storage_errors
    limiter._shared.down_until = 0.0
    assert (await limiter.hit(tok)).remaining in (3, 4)  # counted afresh, script loaded again
    assert limiter.storage_errors == errors


async def test_batched_moving_window_shares_budgets_with_limits_own_code(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    """A replica on limits' own moving window (two scripts a hit) and one batched: one budget."""
    from limits import parse
    from limits.aio.strategies import MovingWindowRateLimiter
    from limits.storage import storage_from_string

    limiter = make(limiters, "10/minute", storage=server.url)
    theirs = MovingWindowRateLimiter(
        storage_from_string(f"async+{server.url}", implementation="redispy")
    )
    tok = token()
    assert (await limiter.hit(tok)).remaining == 9
    key = "/".join(("bearerguard", "mw", "", *limiter._identity(tok)))  # as the limiter keys it
    item = parse("10/minute")
    for _ in range(4):
        assert await theirs.hit(item, key)
    stats = await theirs.get_window_stats(item, key)
    decision = await limiter.hit(tok)
    assert decision.remaining == stats.remaining - 1 == 4
    assert await spend(limiter, tok, 5) == [True] * 4 + [False]
    assert not await theirs.hit(item, key)


async def spend(limiter: RateLimiter, tok: AccessToken, n: int) -> list[bool]:
    return [await attempt(limiter, tok) for _ in range(n)]
