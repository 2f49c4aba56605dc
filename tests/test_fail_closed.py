"""Fail closed at every edge (issue #10): one test per rule, through the public API.

Each test drives a real application through :class:`BearerAuthMiddleware` against a
real issuer on 127.0.0.1 (:class:`~bearerguard.testing.TestIssuer`) and, where the
rule is about sharing, a real ``redis-server``. Each asserts the answer a client
gets (status, RFC 6750 challenge and body), not only that something was refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bearerguard import BearerAuthMiddleware, FetchPolicy, token_of
from bearerguard.testing import TestIssuer

pytestmark = pytest.mark.anyio

AUD = "https://api.example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def whoami(request: Request) -> JSONResponse:
    token = token_of(request)
    return JSONResponse({"sub": token.subject if token else None})


def starlette_app(test_issuer: TestIssuer, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/me", whoami)])
    settings: dict[str, Any] = {
        "issuer": test_issuer.issuer,
        "audience": AUD,
        "fetch": FetchPolicy(timeout=2.0, cooldown=0.2),
    }
    settings.update(options)
    app.add_middleware(BearerAuthMiddleware, **settings)
    return app


@pytest.fixture
async def client(test_issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=starlette_app(test_issuer))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="api", error="invalid_token"'
    )
    assert response.json()["error"] == "invalid_token"


# -- rule 2: bound tokens are never accepted as plain bearer tokens --------------------


async def test_rule2_bound_tokens_are_never_accepted_as_plain_bearer_tokens(
    test_issuer: TestIssuer,
) -> None:
    client_id, client_secret = test_issuer.introspection_client
    app = starlette_app(
        test_issuer,
        introspection_endpoint=test_issuer.introspection_endpoint,
        client_id=client_id,
        client_secret=client_secret,
    )
    thumbprint = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    bound = [
        test_issuer.mint({"cnf": {"jkt": thumbprint}}, audience=AUD),  # DPoP (RFC 9449)
        test_issuer.mint({"cnf": {"x5t#S256": thumbprint}}, audience=AUD),  # mTLS (RFC 8705)
        test_issuer.mint({"cnf": {"kid": "a-key-we-cannot-check"}}, audience=AUD),  # unknown
        test_issuer.mint({"cnf": {}}, audience=AUD),  # binds to nothing provable
        test_issuer.mint({"cnf": "not-an-object"}, audience=AUD),
        test_issuer.mint_opaque({"cnf": {"x5t#S256": thumbprint}}, audience=AUD),  # RFC 7662
    ]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        for token in bound:
            for _ in range(2):  # the second answer comes from the cache: still refused
                assert_invalid_token(await c.get("/me", headers=bearer(token)))
        plain = await c.get("/me", headers=test_issuer.auth_header(audience=AUD))
        assert plain.status_code == 200
