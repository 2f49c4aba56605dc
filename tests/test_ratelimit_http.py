"""Rate limits end to end: the real middleware in front of real FastAPI and Starlette apps.

Tokens are HS256 JWTs from a shared secret configured on purpose, so no key server
is needed; everything else (validation, limits, answers) is the production path.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bearerguard import RateLimitDecision, RateLimiter, rate_limit, rate_limited
from bearerguard._config import Issuer
from bearerguard._middleware import BearerAuthMiddleware
from redis_server import RedisServer

pytestmark = pytest.mark.anyio

ISS = "https://idp.example.com"
AUD = "https://api.example.com"
SECRET = "an-hmac-secret-configured-on-purpose-for-these-tests-0123456789"
ISSUER = Issuer(
    issuer=ISS, audience=AUD, algorithms=("HS256",), shared_secret=SECRET, discovery=False
)


def mint(sub: str = "alice", secret: str = SECRET, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "sub": sub, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fastapi_app(**options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BearerAuthMiddleware, issuers=[ISSUER], **options)

    @app.get("/items")
    async def items() -> dict[str, str]:
        return {"ok": "items"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "health"}

    @app.get("/export")
    async def export(
        decision: RateLimitDecision | None = Depends(rate_limit("1/minute")),
    ) -> dict[str, Any]:
        return {"remaining": decision.remaining if decision else None}

    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_over_budget_is_429_with_retry_after_headers_and_json_error() -> None:
    token = mint()
    async with client(fastapi_app(rate_limit="2/minute")) as http:
        assert [
            (await http.get("/items", headers=bearer(token))).status_code for _ in range(2)
        ] == [
            200,
            200,
        ]
        refused = await http.get("/items", headers=bearer(token))
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["ratelimit-limit"] == "2"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == str(retry_after)
    assert refused.headers["ratelimit-policy"] == '"2-per-60s";q=2;w=60'
    assert "www-authenticate" not in refused.headers


async def test_client_id_budget_counts_the_client_a_provider_names_in_azp() -> None:
    # Auth0, Keycloak and Entra v2 name the client in azp: two users of one client
    # share its budget, another client has its own.
    async with client(fastapi_app(rate_limit="2/minute", rate_limit_key="client_id")) as http:
        first = await http.get("/items", headers=bearer(mint("ann", azp="web-app")))
        second = await http.get("/items", headers=bearer(mint("bob", azp="web-app")))
        third = await http.get("/items", headers=bearer(mint("cid", azp="web-app")))
        other = await http.get("/items", headers=bearer(mint("dan", azp="cli-app")))
    assert [r.status_code for r in (first, second, third, other)] == [200, 200, 429, 200]


async def test_success_responses_carry_ratelimit_headers() -> None:
    token = mint()
    async with client(fastapi_app(rate_limit="3/minute;100/hour")) as http:
        answers = [await http.get("/items", headers=bearer(token)) for _ in range(3)]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0"]
    assert all(a.headers["ratelimit-limit"] == "3" for a in answers)
    assert all(0 < int(a.headers["ratelimit-reset"]) <= 60 for a in answers)
    assert (
        answers[0].headers["ratelimit-policy"]
        == '"3-per-60s";q=3;w=60, "100-per-3600s";q=100;w=3600'
    )
    assert answers[2].headers["ratelimit"].startswith('"3-per-60s";r=0;t=')


async def test_invalid_tokens_never_consume_a_valid_tokens_budget() -> None:
    forged = mint(sub="alice", secret="not-the-secret-but-long-enough-to-be-an-hmac-key-000000")
    async with client(fastapi_app(rate_limit="2/minute", rate_limit_key="sub")) as http:
        for _ in range(10):
            answer = await http.get("/items", headers=bearer(forged))
            assert answer.status_code == 401
            assert "ratelimit-limit" not in answer.headers
        allowed = [
            (await http.get("/items", headers=bearer(mint(sub="alice")))).status_code
            for _ in range(2)
        ]
    assert allowed == [200, 200]


async def test_excluded_paths_are_not_limited() -> None:
    async with client(fastapi_app(rate_limit="1/minute", exclude_paths=["/health"])) as http:
        answers = [await http.get("/health") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert all("ratelimit-limit" not in a.headers for a in answers)


async def test_fastapi_route_dependency_limits_only_its_route() -> None:
    token = mint()
    async with client(fastapi_app()) as http:
        first = await http.get("/export", headers=bearer(token))
        second = await http.get("/export", headers=bearer(token))
        others = [(await http.get("/items", headers=bearer(token))).status_code for _ in range(5)]
    assert first.status_code == 200 and first.json() == {"remaining": 0}
    assert first.headers["ratelimit-limit"] == "1"
    assert second.status_code == 429 and second.json()["error"] == "rate_limited"
    assert int(second.headers["retry-after"]) >= 1
    assert others == [200] * 5


async def test_route_limit_and_global_limit_report_the_tighter_one() -> None:
    token = mint()
    async with client(fastapi_app(rate_limit="100/minute")) as http:
        route = await http.get("/export", headers=bearer(token))
        plain = await http.get("/items", headers=bearer(token))
    assert route.headers["ratelimit-limit"] == "1" and route.headers["ratelimit-remaining"] == "0"
    assert route.headers["ratelimit-policy"] == '"100-per-60s";q=100;w=60, "1-per-60s";q=1;w=60'
    assert (
        plain.headers["ratelimit-limit"] == "100" and plain.headers["ratelimit-remaining"] == "98"
    )


async def test_starlette_decorated_endpoint_is_limited() -> None:
    @rate_limited("2/minute")
    async def report(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/report", report)])
    app.add_middleware(BearerAuthMiddleware, issuers=[ISSUER])
    token = mint()
    async with client(app) as http:
        answers = [await http.get("/report", headers=bearer(token)) for _ in range(3)]
    codes = [a.status_code for a in answers]
    assert answers[2].json()["error"] == "rate_limited"
    assert answers[2].headers.get_list("ratelimit-remaining") == ["0"]
    assert codes == [200, 200, 429]


async def test_decorated_endpoint_answers_429_when_the_middleware_wraps_the_app() -> None:
    @rate_limited("1/minute")
    async def report(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    guarded = BearerAuthMiddleware(Starlette(routes=[Route("/report", report)]), issuers=[ISSUER])
    token = mint()
    transport = httpx.ASGITransport(app=guarded, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answers = [await http.get("/report", headers=bearer(token)) for _ in range(2)]
    await guarded.aclose()
    assert [a.status_code for a in answers] == [200, 429]
    assert answers[1].json()["error"] == "rate_limited"
    assert answers[1].headers.get_list("ratelimit-limit") == ["1"]


async def test_tiers_from_a_callable_through_the_middleware() -> None:
    def tier(token: Any) -> str | None:
        return "3/minute" if "premium" in token.scopes else "1/minute"

    async with client(fastapi_app(rate_limit=tier)) as http:
        basic = mint(sub="bob")
        premium = mint(sub="carol", scope="premium")
        basic_codes = [
            (await http.get("/items", headers=bearer(basic))).status_code for _ in range(2)
        ]
        premium_codes = [
            (await http.get("/items", headers=bearer(premium))).status_code for _ in range(4)
        ]
    assert basic_codes == [200, 429]
    assert premium_codes == [200, 200, 200, 429]


# -- Redis: two app instances, one budget; Redis taken away ------------------------------------


@pytest.mark.redis
async def test_two_app_instances_share_one_redis_budget(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    apps = []
    for _ in range(2):
        limiter = RateLimiter("5/minute", storage=server.url)
        limiters.append(limiter)
        apps.append(client(fastapi_app(rate_limiter=limiter)))
    token = mint()
    codes = []
    for i in range(10):
        codes.append((await apps[i % 2].get("/items", headers=bearer(token))).status_code)
    for app in apps:
        await app.aclose()
    assert codes == [200] * 5 + [429] * 5


@pytest.mark.redis
async def test_redis_outage_through_the_middleware_fails_open(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    limiter = RateLimiter("1/minute", storage=server.url)
    limiters.append(limiter)
    token = mint()
    async with client(fastapi_app(rate_limiter=limiter)) as http:
        assert (await http.get("/items", headers=bearer(token))).status_code == 200
        server.kill()
        answers = [await http.get("/items", headers=bearer(token)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert all("ratelimit-limit" not in a.headers for a in answers)
    assert limiter.storage_errors == 3


@pytest.mark.redis
async def test_redis_outage_through_the_middleware_fails_closed_with_503(
    server: RedisServer, limiters: list[RateLimiter]
) -> None:
    limiter = RateLimiter("5/minute", storage=server.url, fail_closed=True)
    limiters.append(limiter)
    token = mint()
    async with client(fastapi_app(rate_limiter=limiter)) as http:
        assert (await http.get("/items", headers=bearer(token))).status_code == 200
        server.kill()
        answer = await http.get("/items", headers=bearer(token))
    assert answer.status_code == 503
    assert answer.json()["error"] == "temporarily_unavailable"
    assert int(answer.headers["retry-after"]) >= 1


@pytest.mark.redis
async def test_apis_sharing_one_redis_keep_separate_budgets_and_replicas_share_one(
    server: RedisServer,
) -> None:
    """A user's budget at one API is never spent by their requests to another API on the
    same Redis (the middleware's limiter is keyed by the API's identity)."""

    def api(audience: str) -> FastAPI:
        app = FastAPI()
        issuer = Issuer(
            issuer=ISS,
            audience=audience,
            algorithms=("HS256",),
            shared_secret=SECRET,
            discovery=False,
        )
        app.add_middleware(
            BearerAuthMiddleware,
            issuers=[issuer],
            rate_limit="1/minute",
            rate_limit_key="sub",
            rate_limit_storage=server.url,
        )

        @app.get("/items")
        async def items() -> dict[str, str]:
            return {"ok": "items"}

        return app

    orders, orders_replica, billing = api(AUD), api(AUD), api("https://billing.example.com")
    async with client(orders) as o, client(orders_replica) as r, client(billing) as b:
        assert (await o.get("/items", headers=bearer(mint()))).status_code == 200
        to_billing = bearer(mint(aud="https://billing.example.com"))
        assert (await b.get("/items", headers=to_billing)).status_code == 200
        assert (await r.get("/items", headers=bearer(mint()))).status_code == 429
