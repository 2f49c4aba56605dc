"""Stolen-token detection: one token used from more networks at once than ``token_sharing`` allows.

Each "network" is a separate ASGI peer address (httpx's ASGITransport ``client=``), so
the requests go through the real middleware exactly as from different machines;
Redis tests use a real redis-server started by the fixtures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bearerguard import BearerAuthMiddleware, Issuer, TokenSharing, TokenValidator
from bearerguard.metrics import PrometheusObserver
from bearerguard.testing import ManualClock
from redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, used by the Redis tests below

pytestmark = pytest.mark.anyio

ISS = "https://idp.example.com"
AUD = "https://api.example.com"
SECRET = "an-hmac-secret-configured-on-purpose-for-these-tests-0123456789"


def issuer(audience: str = AUD) -> Issuer:
    return Issuer(
        issuer=ISS, audience=audience, algorithms=("HS256",), shared_secret=SECRET, discovery=False
    )


def mint(sub: str = "alice", audience: str = AUD, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": audience, "sub": sub, "iat": now, "exp": now + 3600, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.token.subject})


Factory = Callable[..., BearerAuthMiddleware]


@pytest.fixture
async def apps() -> AsyncIterator[Factory]:
    """Builds middlewares (one per replica) around a one-route app; closed afterwards."""
    made: list[BearerAuthMiddleware] = []

    def build(
        sharing: TokenSharing, *, clock: ManualClock | None = None, audience: str = AUD, **kw: Any
    ) -> BearerAuthMiddleware:
        validator = TokenValidator([issuer(audience)], clock=clock or ManualClock(time.time()))
        app = Starlette(routes=[Route("/hello", hello)])
        middleware = BearerAuthMiddleware(app, validator=validator, token_sharing=sharing, **kw)
        made.append(middleware)
        return middleware

    yield build
    for middleware in made:
        await middleware.aclose()


async def get(app: BearerAuthMiddleware, token: str, peer: str, **headers: str) -> httpx.Response:
    """One request from ``peer`` (the TCP client address the server sees)."""
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.get("/hello", headers={"Authorization": f"Bearer {token}", **headers})


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "bearerguard.token.shared" in r.getMessage()]


async def test_requests_from_one_network_are_never_flagged(apps: Factory) -> None:
    app = apps(TokenSharing(max_networks=3, action="refuse"))
    token = mint()
    # Ten hosts of one /24 (a carrier's NAT pool, an office): one network.
    answers = [await get(app, token, f"198.51.100.{host}") for host in range(1, 11)]
    assert [a.status_code for a in answers] == [200] * 10
    assert app.sharing is not None and app.sharing.flagged == 0


async def test_log_mode_reports_the_fourth_network_once_and_lets_it_through(
    apps: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    observer = PrometheusObserver()
    app = apps(TokenSharing(max_networks=3), observer=observer)
    token = mint()
    caplog.set_level(logging.INFO, logger="bearerguard")
    peers = ["198.51.100.7", "203.0.113.7", "192.0.2.7", "100.64.0.7", "100.65.0.7"]
    statuses = []
    for peer in peers:
        statuses.append((await get(app, token, peer)).status_code)
        if peer == "192.0.2.7":
            assert events(caplog) == []  # three networks: within the allowance
    assert statuses == [200] * 5
    [line] = events(caplog)  # once per token, not once per request
    assert "networks=4" in line and "window=300s" in line
    assert all(p.rsplit(".", 1)[0] not in line for p in peers)  # no addresses: personal data
    assert token not in caplog.text
    assert observer.snapshot().tokens_shared == 1


async def test_refuse_mode_refuses_the_token_everywhere_from_the_fourth_network(
    apps: Factory,
) -> None:
    app = apps(TokenSharing(max_networks=3, action="refuse"))
    token, other = mint(), mint(sub="bob")
    for peer in ("198.51.100.7", "203.0.113.7", "192.0.2.7"):
        assert (await get(app, token, peer)).status_code == 200
    fourth = await get(app, token, "100.64.0.7")
    assert fourth.status_code == 401
    assert fourth.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in fourth.headers["www-authenticate"]
    # The owner's own network is refused too now: the token is burnt, not the network.
    assert (await get(app, token, "198.51.100.7")).status_code == 401
    # Another token from the same networks is untouched.
    assert (await get(app, other, "100.64.0.7")).status_code == 200


async def test_networks_spread_beyond_the_window_are_not_flagged(apps: Factory) -> None:
    clock = ManualClock(time.time())
    app = apps(TokenSharing(max_networks=3, window=300, action="refuse"), clock=clock)
    token = mint()
    for peer in ("198.51.100.7", "203.0.113.7", "192.0.2.7", "100.64.0.7", "100.65.0.7"):
        assert (await get(app, token, peer)).status_code == 200
        clock.advance(101)  # each network is more than one window apart from the fourth before


async def test_a_refused_token_is_forgotten_after_a_quiet_window(apps: Factory) -> None:
    clock = ManualClock(time.time())
    app = apps(TokenSharing(max_networks=1, window=60, action="refuse"), clock=clock)
    token = mint()
    assert (await get(app, token, "198.51.100.7")).status_code == 200
    assert (await get(app, token, "203.0.113.7")).status_code == 401
    clock.advance(30)
    assert (await get(app, token, "198.51.100.7")).status_code == 401  # still in use: still burnt
    clock.advance(61)
    assert (await get(app, token, "198.51.100.7")).status_code == 200


async def test_a_forged_forwarded_header_from_an_untrusted_peer_changes_nothing(
    apps: Factory,
) -> None:
    # No trusted proxies: the header is the sender's word only.
    app = apps(TokenSharing(max_networks=1, action="refuse"))
    token = mint()
    for forged in ("203.0.113.1", "192.0.2.1", "100.64.0.1"):
        answer = await get(app, token, "198.51.100.7", **{"X-Forwarded-For": forged})
        assert answer.status_code == 200  # a thief cannot frame the owner with headers
    # A trusted proxy configured, but the header comes from someone else: still ignored.
    app = apps(TokenSharing(max_networks=1, action="refuse"), trusted_proxies=["10.0.0.0/8"])
    for forged in ("203.0.113.1", "192.0.2.1"):
        answer = await get(app, token, "198.51.100.7", Forwarded=f"for={forged}")
        assert answer.status_code == 200


async def test_behind_a_trusted_proxy_the_forwarded_client_network_counts(apps: Factory) -> None:
    app = apps(TokenSharing(max_networks=1, action="refuse"), trusted_proxies=["10.0.0.0/8"])
    token = mint()
    # The client put a decoy in front; the proxy appended the address it really saw.
    hop = "192.0.2.99, 198.51.100.7"
    assert (await get(app, token, "10.0.0.2", **{"X-Forwarded-For": hop})).status_code == 200
    hop = "198.51.100.7, 203.0.113.7"
    assert (await get(app, token, "10.0.0.2", **{"X-Forwarded-For": hop})).status_code == 401


async def test_a_thief_behind_a_proxy_cannot_hide_behind_a_forwarded_header_it_wrote(
    apps: Factory,
) -> None:
    app = apps(TokenSharing(max_networks=1, action="refuse"), trusted_proxies=["10.0.0.0/8"])
    token = mint()
    owner = {"X-Forwarded-For": "198.51.100.7"}
    assert (await get(app, token, "10.0.0.2", **owner)).status_code == 200
    # The proxy appended the thief's address to X-Forwarded-For, passed Forwarded through.
    for forged in ("for=unknown", "for=198.51.100.7"):
        thief = {"Forwarded": forged, "X-Forwarded-For": "203.0.113.7"}
        assert (await get(app, token, "10.0.0.2", **thief)).status_code == 401


async def test_ipv6_clients_are_grouped_by_their_48(apps: Factory) -> None:
    app = apps(TokenSharing(max_networks=1, action="refuse"))
    token = mint()
    assert (await get(app, token, "2001:db8:1:1::1")).status_code == 200
    assert (await get(app, token, "2001:db8:1:ffff::2")).status_code == 200  # same /48
    assert (await get(app, token, "2001:db8:2::1")).status_code == 401  # another /48


async def test_the_prefixes_are_configurable(apps: Factory) -> None:
    app = apps(TokenSharing(max_networks=1, action="refuse", prefix_v4=16))
    token = mint()
    assert (await get(app, token, "198.51.1.7")).status_code == 200
    assert (await get(app, token, "198.51.200.7")).status_code == 200  # same /16
    assert (await get(app, token, "198.52.0.7")).status_code == 401


async def test_in_process_memory_is_bounded_by_max_tokens(apps: Factory) -> None:
    app = apps(TokenSharing(max_networks=3, max_tokens=10))
    for n in range(50):
        assert (await get(app, mint(sub=f"user{n}"), "198.51.100.7")).status_code == 200
    assert app.sharing is not None and app.sharing._memory is not None
    assert len(app.sharing._memory) == 10


async def test_a_token_is_counted_by_its_jti_not_its_spelling(apps: Factory) -> None:
    app = apps(TokenSharing(max_networks=1, action="refuse"))
    first = mint(jti="one-token")
    second = mint(jti="one-token", extra="re-signed")  # another string, the same token id
    assert (await get(app, first, "198.51.100.7")).status_code == 200
    assert (await get(app, second, "203.0.113.7")).status_code == 401


@pytest.mark.parametrize(
    "bad",
    [
        {"max_networks": 0},
        {"window": 0},
        {"window": float("inf")},
        {"action": "block"},
        {"prefix_v4": 33},
        {"prefix_v6": -1},
        {"max_tokens": 0},
    ],
)
def test_a_bad_policy_is_a_startup_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="TokenSharing"):
        TokenSharing(**bad)


def test_state_in_an_unsupported_storage_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="token_sharing"):
        BearerAuthMiddleware(
            Starlette(),
            issuers=[issuer()],
            token_sharing=TokenSharing(),
            rate_limit_storage="memcached://localhost:11211",
        )


# -- across replicas: a real redis-server -------------------------------------------------


@pytest.mark.redis
async def test_replicas_on_one_redis_see_each_others_networks(
    apps: Factory, redis_server: RedisServer
) -> None:
    policy = TokenSharing(max_networks=3, action="refuse")
    one = apps(policy, rate_limit_storage=redis_server.url)
    two = apps(policy, rate_limit_storage=redis_server.url)
    token = mint()
    assert (await get(one, token, "198.51.100.7")).status_code == 200
    assert (await get(two, token, "203.0.113.7")).status_code == 200
    assert (await get(one, token, "192.0.2.7")).status_code == 200
    assert (await get(two, token, "100.64.0.7")).status_code == 401  # the fourth, across both
    assert (await get(one, token, "198.51.100.7")).status_code == 401  # refused on every replica


@pytest.mark.redis
async def test_two_apis_on_one_redis_keep_separate_books(
    apps: Factory, redis_server: RedisServer
) -> None:
    policy = TokenSharing(max_networks=1, action="refuse")
    orders = apps(policy, rate_limit_storage=redis_server.url, audience="https://orders")
    billing = apps(policy, rate_limit_storage=redis_server.url, audience="https://billing")
    for_orders = mint(audience="https://orders", jti="shared-jti")
    for_billing = mint(audience="https://billing", jti="shared-jti")
    assert (await get(orders, for_orders, "198.51.100.7")).status_code == 200
    assert (await get(billing, for_billing, "203.0.113.7")).status_code == 200


@pytest.mark.redis
async def test_a_redis_outage_fails_open_by_default_and_closed_when_asked(
    apps: Factory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    policy = TokenSharing(max_networks=1, action="refuse")
    open_app = apps(policy, rate_limit_storage=redis_server.url)
    closed_app = apps(policy, rate_limit_storage=redis_server.url, rate_limit_fail_closed=True)
    token = mint()
    assert (await get(open_app, token, "198.51.100.7")).status_code == 200
    redis_server.kill()
    caplog.set_level(logging.WARNING, logger="bearerguard")
    assert (await get(open_app, token, "203.0.113.7")).status_code == 200
    refused = await get(closed_app, token, "203.0.113.7")
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "bearerguard.token.sharing_storage_unavailable" in caplog.text
    assert open_app.sharing is not None and open_app.sharing.storage_errors == 1


@pytest.mark.redis
async def test_with_a_redis_rate_limit_a_sighting_and_a_hit_share_one_round_trip(
    apps: Factory, redis_server: RedisServer
) -> None:
    app = apps(
        TokenSharing(max_networks=1, action="refuse"),
        rate_limit="100/minute",
        rate_limit_storage=redis_server.url,
    )
    assert app.rate_limiter is not None and app.sharing is not None
    batch = app.rate_limiter.script_batch
    assert batch is not None
    token = mint()
    assert (await get(app, token, "198.51.100.7")).status_code == 200  # scripts loaded
    batch.round_trips = batch.calls = 0
    answer = await get(app, token, "198.51.100.8")
    assert answer.status_code == 200
    assert answer.headers["ratelimit-remaining"] == "98"
    assert (batch.calls, batch.round_trips) == (2, 1)  # the hit and the sighting, one pipeline
    # A burnt token is 401 (not 429), and the refusal still cost one round trip.
    burnt = await get(app, token, "203.0.113.7")
    assert burnt.status_code == 401
    assert (batch.calls, batch.round_trips) == (4, 2)


@pytest.mark.redis
async def test_a_script_redis_lacks_is_resent_alone_so_nothing_runs_twice(
    apps: Factory, redis_server: RedisServer
) -> None:
    app = apps(TokenSharing(), rate_limit="100/minute", rate_limit_storage=redis_server.url)
    assert app.rate_limiter is not None
    batch = app.rate_limiter.script_batch
    assert batch is not None
    token = mint()
    # Redis learns the rate-limit script only; the sighting's script is new to it.
    await get(app, mint(sub="warm-up"), "198.51.100.7")
    await redis_server_client_flush_sharing_script(redis_server)
    batch.round_trips = 0
    answer = await get(app, token, "198.51.100.7")
    assert answer.status_code == 200
    assert answer.headers["ratelimit-remaining"] == "99"  # the hit ran once, not again
    assert batch.round_trips == 2  # the pipeline, then the sighting alone once loaded


async def redis_server_client_flush_sharing_script(server: RedisServer) -> None:
    """Make Redis forget every script, then teach it the rate limiter's again."""
    from redis.asyncio import Redis

    from bearerguard._ratelimit_redis import _SCRIPT as LIMIT_SCRIPT

    client = Redis.from_url(server.url)
    try:
        await client.script_flush()
        await client.script_load(LIMIT_SCRIPT.text)
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_redis_outage_is_not_asked_again_until_its_cooldown_ends(
    apps: Factory,
) -> None:
    """A Redis that accepts connections and never answers (a network partition): the first
    request waits out the timeout, the next ones inside the cooldown do not ask it again."""
    received: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            received.append(chunk)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        app = apps(
            TokenSharing(max_networks=1, action="refuse"),
            rate_limit_storage=f"redis://127.0.0.1:{port}",
        )
        assert app.sharing is not None
        app.sharing.timeout = 0.2
        app.sharing.outage_cooldown = 60.0
        token = mint()
        assert (await get(app, token, "198.51.100.7")).status_code == 200
        asked = len(received)
        assert asked > 0 and app.sharing.storage_errors == 1
        for peer in ("203.0.113.7", "192.0.2.7"):
            assert (await get(app, token, peer)).status_code == 200
        assert len(received) == asked  # inside the cooldown: not asked again
        assert app.sharing.storage_errors == 3
    finally:
        server.close()
