"""Rate limits on the in-memory storage: window arithmetic, keys, tiers, strategies, failures.

Values are checked against a known budget: with ``5/minute`` the n-th hit leaves
``5 - n`` and the reset is within the minute; past the budget comes a 429 whose
``Retry-After`` says when the window frees capacity.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import threading
from typing import Any

import jwt
import pytest

from bearerguard._errors import RateLimited, Unavailable
from bearerguard._ratelimit import RateLimiter
from bearerguard._ratelimit_decision import DECISION_SCOPE_KEY, PolicyState, RateLimitDecision
from bearerguard._ratelimit_routes import LIMITER_SCOPE_KEY, rate_limit, rate_limited
from bearerguard._ratelimit_storage import async_storage_uri
from bearerguard._tokens import AccessToken, TokenUser
from bearerguard.testing import TestIssuer

pytestmark = pytest.mark.anyio

STRATEGIES = ("moving-window", "fixed-window", "sliding-window-counter")
ISS = "https://idp.example.com"


def token(
    sub: str | None = "alice",
    client_id: str | None = "app-1",
    scopes: tuple[str, ...] = (),
    issuer: str = ISS,
) -> AccessToken:
    raw = secrets.token_urlsafe(24)
    return AccessToken(
        issuer=issuer,
        subject=sub,
        client_id=client_id,
        scopes=frozenset(scopes),
        audience=("https://api.example.com",),
        expires_at=None,
        token_hash=hashlib.sha256(raw.encode()).hexdigest(),
    )


def make(limiters: list[RateLimiter], limits: Any, **options: Any) -> RateLimiter:
    limiter = RateLimiter(limits, **options)
    limiters.append(limiter)
    return limiter


async def spend(limiter: RateLimiter, tok: AccessToken, n: int, scope: str = "") -> list[bool]:
    """Hit n times; True for each allowed hit, False for each 429."""
    out = []
    for _ in range(n):
        try:
            await limiter.hit(tok, scope=scope)
            out.append(True)
        except RateLimited:
            out.append(False)
    return out


# -- window arithmetic ------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_remaining_counts_down_from_the_budget(
    limiters: list[RateLimiter], strategy: str
) -> None:
    limiter = make(limiters, "5/minute", strategy=strategy)
    tok = token()
    for n in range(1, 6):
        decision = await limiter.hit(tok)
        assert decision.limit == 5
        assert decision.remaining == 5 - n
        assert 0 < decision.reset <= 60


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_hit_past_the_budget_is_429_with_retry_after(
    limiters: list[RateLimiter], strategy: str
) -> None:
    limiter = make(limiters, "5/minute", strategy=strategy)
    tok = token()
    assert await spend(limiter, tok, 5) == [True] * 5
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(tok)
    refused = caught.value
    assert refused.status == 429
    assert refused.limit == 5 and refused.remaining == 0
    assert 1 <= refused.retry_after <= 60
    assert refused.reset == refused.retry_after
    headers = dict(refused.headers)
    assert headers[b"ratelimit-limit"] == b"5"
    assert headers[b"ratelimit-remaining"] == b"0"
    assert headers[b"ratelimit-reset"] == str(refused.retry_after).encode()


async def test_moving_window_reset_is_when_the_oldest_hit_leaves(
    limiters: list[RateLimiter],
) -> None:
    limiter = make(limiters, "3/hour")
    tok = token()
    await spend(limiter, tok, 3)
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(tok)
    # The first of the three hits happened just now: capacity frees in (almost) an hour.
    assert 3590 <= caught.value.retry_after <= 3600


async def test_fixed_window_reset_is_the_end_of_the_window(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "3/hour", strategy="fixed-window")
    decision = await limiter.hit(token())
    assert 3590 <= decision.reset <= 3600


async def test_many_concurrent_hits_never_pass_the_budget(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "50/minute")
    tok = token()

    async def one() -> bool:
        try:
            await limiter.hit(tok)
            return True
        except RateLimited:
            return False

    results = await asyncio.gather(*(one() for _ in range(200)))
    assert results.count(True) == 50


# -- several limits -----------------------------------------------------------------------


async def test_most_restrictive_limit_leads_the_headers(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "100/hour;2/minute")
    tok = token()
    first = await limiter.hit(tok)
    assert (first.limit, first.remaining) == (2, 1)
    second = await limiter.hit(tok)
    assert (second.limit, second.remaining) == (2, 0)
    assert [(p.quota, p.window, p.remaining) for p in second.policies] == [
        (2, 60, 0),
        (100, 3600, 98),
    ]
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(tok)
    assert caught.value.limit == 2


async def test_refusal_by_a_short_window_does_not_spend_the_longer_one(
    limiters: list[RateLimiter],
) -> None:
    limiter = make(limiters, "1/minute;10/hour")
    tok = token()
    await limiter.hit(tok)
    assert await spend(limiter, tok, 5) == [False] * 5
    hour = (await limiter.peek(tok)).policies[1]
    assert (hour.quota, hour.remaining) == (10, 9)


async def test_the_longer_window_refuses_when_it_is_spent(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "10/minute;3/hour")
    tok = token()
    assert await spend(limiter, tok, 4) == [True, True, True, False]
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(tok)
    assert caught.value.limit == 3
    assert caught.value.retry_after > 60


async def test_peek_spends_nothing(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "3/minute")
    tok = token()
    for _ in range(5):
        assert (await limiter.peek(tok)).remaining == 3
    assert (await limiter.hit(tok)).remaining == 2


# -- keys ---------------------------------------------------------------------------------


async def test_key_token_gives_each_token_its_own_budget(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "2/minute")
    a, b = token(sub="alice"), token(sub="alice")
    assert await spend(limiter, a, 3) == [True, True, False]
    assert await spend(limiter, b, 2) == [True, True]


def _respelled(jws: str) -> str:
    """The same ES256 token with its signature's ``s`` replaced by ``n - s``: also valid."""
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    head, payload, signature = jws.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    s_value = n - int.from_bytes(raw[32:], "big")
    flipped = raw[:32] + s_value.to_bytes(32, "big")
    return f"{head}.{payload}.{base64.urlsafe_b64encode(flipped).rstrip(b'=').decode()}"


def _access(jws: str, claims: dict[str, Any]) -> AccessToken:
    """What validation hands the limiter for ``jws``: its claims and the hash of its text."""
    return AccessToken(
        issuer=claims["iss"],
        subject=claims.get("sub"),
        client_id=claims.get("client_id"),
        scopes=frozenset(),
        audience=(claims["aud"],),
        expires_at=None,
        token_hash=hashlib.sha256(jws.encode()).hexdigest(),
        claims=claims,
    )


async def test_rate_limit_identity_survives_signature_respelling(
    limiters: list[RateLimiter],
) -> None:
    with TestIssuer(["ES256"]) as issuer:
        original = issuer.mint()
        twin = _respelled(original)
        public = issuer.signing_key.public_key()
        claims = jwt.decode(original, public, algorithms=["ES256"], audience=issuer.audience)
        assert twin != original  # a second, equally valid spelling of the same token
        assert jwt.decode(twin, public, algorithms=["ES256"], audience=issuer.audience) == claims
        other = issuer.mint()  # another token (another jti) from the same issuer
        other_claims = jwt.decode(other, public, algorithms=["ES256"], audience=issuer.audience)
    assert isinstance(claims["jti"], str)
    limiter = make(limiters, "2/minute")
    first, second = _access(original, claims), _access(twin, claims)
    assert first.token_hash != second.token_hash
    assert await spend(limiter, first, 2) == [True, True]
    assert await spend(limiter, second, 1) == [False]  # no second budget for the twin
    assert await spend(limiter, _access(other, other_claims), 2) == [True, True]
    no_jti = {k: v for k, v in claims.items() if k != "jti"}  # without jti: the text's hash
    assert await spend(limiter, _access(twin, no_jti), 2) == [True, True]


async def test_key_sub_shares_one_budget_between_tokens_of_a_subject(
    limiters: list[RateLimiter],
) -> None:
    limiter = make(limiters, "2/minute", key="sub")
    assert await spend(limiter, token(sub="alice"), 1) == [True]
    assert await spend(limiter, token(sub="alice"), 2) == [True, False]
    assert await spend(limiter, token(sub="bob"), 1) == [True]


async def test_key_sub_is_bound_to_the_issuer(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "1/minute", key="sub")
    assert await spend(limiter, token(sub="alice", issuer="https://a.example"), 1) == [True]
    assert await spend(limiter, token(sub="alice", issuer="https://b.example"), 1) == [True]


async def test_key_sub_falls_back_to_the_token_hash(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "1/minute", key="sub")
    assert await spend(limiter, token(sub=None), 1) == [True]
    assert await spend(limiter, token(sub=None), 1) == [True]


async def test_key_client_id_shares_one_budget_per_client(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "2/minute", key="client_id")
    assert await spend(limiter, token(sub="alice", client_id="app-1"), 1) == [True]
    assert await spend(limiter, token(sub="bob", client_id="app-1"), 2) == [True, False]
    assert await spend(limiter, token(sub="bob", client_id="app-2"), 1) == [True]
    assert await spend(limiter, token(client_id=None), 1) == [True]


async def test_key_callable_groups_tokens_as_it_says(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "2/minute", key=lambda t: t.claims.get("tenant") or t.issuer)
    assert await spend(limiter, token(issuer="https://t1.example"), 1) == [True]
    assert await spend(limiter, token(issuer="https://t1.example"), 2) == [True, False]
    assert await spend(limiter, token(issuer="https://t2.example"), 1) == [True]


async def test_scope_keeps_route_budgets_apart(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "1/minute")
    tok = token()
    assert await spend(limiter, tok, 2, scope="GET /a") == [True, False]
    assert await spend(limiter, tok, 1, scope="GET /b") == [True]
    assert await spend(limiter, tok, 1) == [True]


# -- tiers --------------------------------------------------------------------------------


async def test_callable_limits_give_each_tier_its_budget(limiters: list[RateLimiter]) -> None:
    def tier(t: AccessToken) -> str | None:
        if "admin" in t.scopes:
            return None
        return "4/minute" if "premium" in t.scopes else "1/minute"

    limiter = make(limiters, tier)
    assert await spend(limiter, token(scopes=("basic",)), 2) == [True, False]
    premium = token(scopes=("premium",))
    assert await spend(limiter, premium, 5) == [True] * 4 + [False]
    admin = await limiter.hit(token(scopes=("admin",)))
    assert admin.headers() == [] and not admin.degraded


async def test_unlimited_token_is_never_refused(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, lambda t: "")
    assert await spend(limiter, token(), 20) == [True] * 20


async def test_broken_tier_callable_fails_open_by_default(
    limiters: list[RateLimiter], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(t: AccessToken) -> str:
        raise KeyError("tier")

    limiter = make(limiters, broken)
    tok = token()
    with caplog.at_level(logging.ERROR, logger="bearerguard.ratelimit"):
        decision = await limiter.hit(tok)
    assert decision.degraded and decision.headers() == []
    assert limiter.limit_errors == 1
    assert "bearerguard.ratelimit.limit_error" in caplog.text
    assert tok.short_hash in caplog.text and tok.token_hash not in caplog.text


async def test_invalid_tier_string_fails_closed_when_asked(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, lambda t: "lots per fortnight", fail_closed=True)
    with pytest.raises(Unavailable) as caught:
        await limiter.hit(token())
    assert caught.value.status == 503 and caught.value.retry_after >= 1


# -- headers ------------------------------------------------------------------------------


def test_headers_are_the_classic_three_and_the_draft_pair() -> None:
    decision = RateLimitDecision(
        10,
        3,
        7,
        (PolicyState("10-per-1s", 10, 1, 3, 1), PolicyState("1000-per-3600s", 1000, 3600, 900, 7)),
    )
    assert decision.headers() == [
        (b"ratelimit-limit", b"10"),
        (b"ratelimit-remaining", b"3"),
        (b"ratelimit-reset", b"7"),
        (b"ratelimit-policy", b'"10-per-1s";q=10;w=1, "1000-per-3600s";q=1000;w=3600'),
        (b"ratelimit", b'"10-per-1s";r=3;t=1, "1000-per-3600s";r=900;t=7'),
    ]


async def test_header_values_match_the_decision(limiters: list[RateLimiter]) -> None:
    limiter = make(limiters, "5/minute")
    decision = await limiter.hit(token())
    headers = dict(decision.headers())
    assert headers[b"ratelimit-limit"] == b"5"
    assert headers[b"ratelimit-remaining"] == b"4"
    assert headers[b"ratelimit-reset"] == str(decision.reset).encode()
    assert headers[b"ratelimit-policy"] == b'"5-per-60s";q=5;w=60'
    assert headers[b"ratelimit"] == f'"5-per-60s";r=4;t={decision.reset}'.encode()


def test_merge_keeps_the_tighter_decision_and_every_policy() -> None:
    wide = RateLimitDecision(100, 50, 30, (PolicyState("100-per-60s", 100, 60, 50, 30),))
    tight = RateLimitDecision(5, 1, 1, (PolicyState("5-per-1s", 5, 1, 1, 1),))
    merged = wide.merge(tight)
    assert (merged.limit, merged.remaining, merged.reset) == (5, 1, 1)
    assert [p.name for p in merged.policies] == ["100-per-60s", "5-per-1s"]
    same = wide.merge(wide)
    assert [p.name for p in same.policies] == ["100-per-60s", "100-per-60s-2"]
    unlimited = RateLimitDecision(0, 0, 0)
    assert unlimited.merge(tight) == tight and tight.merge(unlimited) == tight
    assert RateLimitDecision(0, 0, 0, degraded=True).merge(tight).degraded


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"limits": "ten per second"},
        {"limits": ""},
        {"limits": "5/minute", "strategy": "token-bucket"},
        {"limits": "5/minute", "key": "email"},
        {"limits": "5/minute", "storage": "nosuch://x"},
        {"limits": "5/minute", "storage": "localhost:6379"},
        {"limits": "5/minute", "storage_timeout": 0},
    ],
)
def test_bad_configuration_is_refused_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**options)


def test_plain_storage_uris_map_to_the_async_schemes() -> None:
    assert async_storage_uri("memory://") == "async+memory://"
    assert async_storage_uri("redis://h:6379/0") == "async+redis://h:6379/0"
    assert async_storage_uri("REDIS+CLUSTER://a:1,b:2") == "async+redis+cluster://a:1,b:2"
    assert async_storage_uri("async+redis://h:1") == "async+redis://h:1"


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_memory_storage_hits_without_awaiting_the_loop(
    limiters: list[RateLimiter], strategy: Any
) -> None:
    limiter = make(limiters, "1/minute", strategy=strategy)
    tok = token()
    # One step of the coroutine runs it to the end: a hit never suspends on the event loop.
    allowed = limiter.hit(tok)
    with pytest.raises(StopIteration) as done:
        allowed.send(None)
    assert done.value.value.remaining == 0
    refused = limiter.hit(tok)
    with pytest.raises(RateLimited):
        refused.send(None)


async def test_aclose_leaves_no_thread_of_the_memory_storage_running(
    limiters: list[RateLimiter],
) -> None:
    before = set(threading.enumerate())
    limiter = make(limiters, "5/minute")
    await limiter.hit(token())
    await limiter.aclose()
    for _ in range(100):  # a cancelled timer thread ends promptly, not at once
        if not set(threading.enumerate()) - before:
            break
        await asyncio.sleep(0.05)
    assert set(threading.enumerate()) - before == set()


def test_storage_credentials_never_appear_in_repr_or_errors() -> None:
    limiter = RateLimiter("5/minute", storage="redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(limiter)
    with pytest.raises(ValueError) as caught:
        RateLimiter("5/minute", storage="redis+sentinel://user:s3cret@127.0.0.1:1")
    assert "s3cret" not in str(caught.value)


# -- per-route limits -----------------------------------------------------------------------


def route_scope(
    tok: AccessToken | None, limiter: RateLimiter | None = None, **extra: Any
) -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "http", "path": "/items", "user": TokenUser(tok), **extra}
    if limiter is not None:
        scope[LIMITER_SCOPE_KEY] = limiter
    return scope


async def endpoint_a() -> None: ...


async def endpoint_b() -> None: ...


async def test_route_limit_uses_the_middleware_storage(limiters: list[RateLimiter]) -> None:
    parent = make(limiters, "100/minute")
    guard = rate_limit("2/minute")
    tok = token()
    for _ in range(2):
        await guard.check(route_scope(tok, parent, endpoint=endpoint_a))
    with pytest.raises(RateLimited):
        await guard.check(route_scope(tok, parent, endpoint=endpoint_a))
    derived = guard.limiter_for(parent)
    assert derived._shared is parent._shared
    assert guard.limiter_for(parent) is derived  # built once, not per request


async def test_route_limits_are_separate_per_endpoint(limiters: list[RateLimiter]) -> None:
    parent = make(limiters, "100/minute")
    guard = rate_limit("1/minute")
    tok = token()
    await guard.check(route_scope(tok, parent, endpoint=endpoint_a))
    await guard.check(route_scope(tok, parent, endpoint=endpoint_b))
    with pytest.raises(RateLimited):
        await guard.check(route_scope(tok, parent, endpoint=endpoint_a))


async def test_route_limit_without_middleware_limiter_uses_memory() -> None:
    guard = rate_limit("1/minute", scope="shared-group")
    tok = token()
    try:
        await guard.check(route_scope(tok))
        with pytest.raises(RateLimited):
            await guard.check(route_scope(tok, endpoint=endpoint_b))
        assert guard.limiter_for(None).storage_uri == "async+memory://"
    finally:
        await guard.aclose()


async def test_route_limit_ignores_requests_without_a_token() -> None:
    guard = rate_limit("1/minute")
    try:
        for _ in range(3):
            assert await guard.check(route_scope(None)) is None
        assert await guard.check({"type": "http", "path": "/"}) is None
    finally:
        await guard.aclose()


async def test_route_decision_is_merged_into_the_scope(limiters: list[RateLimiter]) -> None:
    parent = make(limiters, "100/minute")
    guard = rate_limit("3/minute")
    tok = token()
    scope = route_scope(tok, parent, endpoint=endpoint_a)
    scope[DECISION_SCOPE_KEY] = await parent.hit(tok)
    await guard.check(scope)
    merged = scope[DECISION_SCOPE_KEY]
    assert (merged.limit, merged.remaining) == (3, 2)
    assert [p.quota for p in merged.policies] == [100, 3]


async def test_route_limit_follows_the_middleware_fail_mode(limiters: list[RateLimiter]) -> None:
    parent = make(limiters, "100/minute", fail_closed=True, strategy="fixed-window")
    derived = rate_limit("1/minute").limiter_for(parent)
    assert derived.fail_closed and derived.strategy == "fixed-window"
    own = rate_limit("1/minute", fail_closed=False, strategy="moving-window").limiter_for(parent)
    assert not own.fail_closed and own.strategy == "moving-window"


async def test_decorated_starlette_endpoint_raises_429_for_the_middleware() -> None:
    from starlette.requests import Request

    calls = []

    @rate_limited("2/minute")
    async def endpoint(request: Request) -> str:
        calls.append(1)
        return "ok"

    tok = token()
    scope = route_scope(tok, method="GET", headers=[], query_string=b"")
    assert await endpoint(Request(scope)) == "ok"
    assert await endpoint(Request(scope)) == "ok"
    with pytest.raises(RateLimited) as refused:
        await endpoint(Request(scope))
    assert refused.value.remaining == 0 and refused.value.retry_after >= 1
    assert (b"ratelimit-remaining", b"0") in refused.value.headers
    assert len(calls) == 2
    await endpoint.rate_limit.aclose()  # type: ignore[attr-defined]


async def test_decorated_sync_endpoint_runs_in_the_threadpool() -> None:
    from starlette.requests import Request

    @rate_limited("1/minute")
    def endpoint(request: Request) -> str:
        return "ok"

    scope = route_scope(token(), method="GET", headers=[], query_string=b"")
    assert await endpoint(Request(scope)) == "ok"
    with pytest.raises(RateLimited):
        await endpoint(Request(scope))


async def test_decorated_websocket_endpoint_raises_for_the_middleware() -> None:
    from starlette.websockets import WebSocket

    @rate_limited("1/minute")
    async def endpoint(websocket: WebSocket) -> None: ...

    scope = route_scope(token(), headers=[], query_string=b"")
    scope["type"] = "websocket"

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None: ...

    await endpoint(WebSocket(scope, receive, send))
    with pytest.raises(RateLimited):
        await endpoint(WebSocket(scope, receive, send))


def test_decorator_refuses_an_endpoint_without_the_request() -> None:
    with pytest.raises(TypeError):
        rate_limited("1/minute")(endpoint_a)


def test_route_limit_string_is_checked_at_import_time() -> None:
    with pytest.raises(ValueError):
        rate_limit("fast")
