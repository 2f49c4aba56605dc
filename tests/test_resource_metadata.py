"""Protected resource metadata (RFC 9728), served by the middleware and named by its challenges.

A client that gets a 401 must be able to find out, from the answer alone, which
authorization server issues tokens for this API: the challenge's
``resource_metadata`` points at the well-known document, which the middleware
serves without a token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from bearerguard import (
    BearerAuthMiddleware,
    ResourceMetadata,
    current_token,
    require_authentication,
    require_scopes,
    scopes_required,
)
from bearerguard._dpop import DEFAULT_DPOP_ALGORITHMS
from bearerguard.testing import TestIssuer

pytestmark = pytest.mark.anyio

RESOURCE = "https://api.example.com"
#: The DPoP challenge offered beside Bearer by default (RFC 9449 §7.2): it names the metadata too.
DPOP_ALGS = 'algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA Ed25519"'
WELL_KNOWN = "/.well-known/oauth-protected-resource"


def api(issuer: TestIssuer, metadata: ResourceMetadata | None = None, **options: Any) -> FastAPI:
    app = FastAPI()
    metadata = metadata or ResourceMetadata(RESOURCE, authorization_servers=[issuer.issuer])
    app.add_middleware(
        BearerAuthMiddleware,
        issuer=issuer.issuer,
        audience=issuer.audience,
        resource_metadata=metadata,
        **options,
    )

    @app.get("/items", dependencies=[Depends(require_scopes("read:items"))])
    async def items() -> list[str]:
        return []

    nested = APIRouter(dependencies=[Depends(require_scopes("admin"))])

    @nested.delete("/items/{name}")
    async def delete(name: str, token: Any = Depends(require_scopes("write:items"))) -> None:
        return None

    app.include_router(nested)

    @app.get("/me")
    async def me(token: Any = Depends(current_token)) -> dict[str, str]:
        return {"sub": token.subject}

    @app.get("/transfer", dependencies=[Depends(require_authentication(max_age=60))])
    async def transfer() -> None:
        return None

    return app


@pytest.fixture
async def client(test_issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api(test_issuer))
    async with httpx.AsyncClient(transport=transport, base_url=RESOURCE) as c:
        yield c


async def test_metadata_is_served_at_the_well_known_path_without_a_token(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    response = await client.get(WELL_KNOWN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.json() == {
        "resource": RESOURCE,
        "authorization_servers": [test_issuer.issuer],
        "scopes_supported": ["admin", "read:items", "write:items"],
        "bearer_methods_supported": ["header"],
        # dpop="allowed" by default: DPoP-bound tokens are taken, with these proof algs.
        "dpop_signing_alg_values_supported": list(DEFAULT_DPOP_ALGORITHMS),
    }


async def test_resource_with_a_path_is_served_at_its_suffixed_and_bare_well_known_paths(
    test_issuer: TestIssuer,
) -> None:
    metadata = ResourceMetadata(f"{RESOURCE}/mcp", authorization_servers=[test_issuer.issuer])
    assert metadata.url == f"{RESOURCE}{WELL_KNOWN}/mcp"
    app = api(test_issuer, metadata)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RESOURCE) as c:
        for path in (f"{WELL_KNOWN}/mcp", WELL_KNOWN):
            response = await c.get(path)
            assert response.status_code == 200, path
            assert response.json()["resource"] == f"{RESOURCE}/mcp"
        # Another suffix is not this resource's document: it needs a token like any path.
        assert (await c.get(f"{WELL_KNOWN}/other")).status_code == 401


async def test_scopes_supported_defaults_to_the_scopes_the_routes_require_starlette_too(
    test_issuer: TestIssuer,
) -> None:
    @scopes_required("read:reports")
    async def reports(request: Request) -> JSONResponse:
        return JSONResponse([])

    inner = Starlette(routes=[Mount("/v1", routes=[Route("/reports", reports)])])
    metadata = ResourceMetadata(RESOURCE, authorization_servers=[test_issuer.issuer])
    inner.add_middleware(
        BearerAuthMiddleware,
        issuer=test_issuer.issuer,
        audience=test_issuer.audience,
        resource_metadata=metadata,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=inner), base_url=RESOURCE) as c:
        assert (await c.get(WELL_KNOWN)).json()["scopes_supported"] == ["read:reports"]


async def test_scopes_supported_given_explicitly_is_published_as_given(
    test_issuer: TestIssuer,
) -> None:
    metadata = ResourceMetadata(RESOURCE, scopes_supported=["openid", "mcp"], resource_name="Demo")
    app = api(test_issuer, metadata)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RESOURCE) as c:
        document = (await c.get(WELL_KNOWN)).json()
    assert document["scopes_supported"] == ["openid", "mcp"]
    assert document["resource_name"] == "Demo"
    assert "authorization_servers" not in document


async def test_bearer_methods_supported_follow_the_token_locations_accepted(
    test_issuer: TestIssuer,
) -> None:
    app = api(test_issuer, token_in_query=True, token_in_form=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RESOURCE) as c:
        document = (await c.get(WELL_KNOWN)).json()
    assert document["bearer_methods_supported"] == ["header", "body", "query"]


async def test_certificate_bound_tokens_are_advertised_when_a_proxy_forwards_certificates(
    test_issuer: TestIssuer,
) -> None:
    app = api(test_issuer, client_cert_header="client-cert", trusted_proxies=["10.0.0.1"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RESOURCE) as c:
        document = (await c.get(WELL_KNOWN)).json()
    assert document["tls_client_certificate_bound_access_tokens"] is True


async def test_dpop_is_advertised_as_the_middleware_checks_it(test_issuer: TestIssuer) -> None:
    required = api(test_issuer, dpop="required", dpop_algorithms=["ES256", "EdDSA"])
    disabled = api(test_issuer, dpop="disabled")
    documents = []
    for app in (required, disabled):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=RESOURCE) as c:
            documents.append((await c.get(WELL_KNOWN)).json())
    assert documents[0]["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]
    assert documents[0]["dpop_bound_access_tokens_required"] is True
    assert "dpop_signing_alg_values_supported" not in documents[1]
    assert "dpop_bound_access_tokens_required" not in documents[1]


async def test_metadata_answers_head_and_a_cors_preflight_and_refuses_other_methods(
    client: httpx.AsyncClient,
) -> None:
    head = await client.head(WELL_KNOWN)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    preflight = await client.options(WELL_KNOWN, headers={"Origin": "https://app.example"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    post = await client.post(WELL_KNOWN)
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD, OPTIONS"


async def test_every_challenge_names_the_resource_metadata(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    named = f'resource_metadata="{RESOURCE}{WELL_KNOWN}"'
    missing = await client.get("/me")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == (
        f'Bearer realm="api", {named}, DPoP realm="api", {DPOP_ALGS}, {named}'
    )
    invalid = await client.get("/me", headers={"Authorization": "Bearer not.a.token"})
    assert invalid.status_code == 401 and named in invalid.headers["www-authenticate"]
    step_up = await client.get("/transfer", headers=test_issuer.auth_header())
    assert step_up.status_code == 401 and named in step_up.headers["www-authenticate"]
    scope = await client.get("/items", headers=test_issuer.auth_header(scope="other"))
    assert scope.status_code == 403 and named in scope.headers["www-authenticate"]


async def test_challenge_of_a_decorated_route_in_a_wrapped_app_names_the_metadata(
    test_issuer: TestIssuer,
) -> None:
    @scopes_required("admin")
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({})

    app = BearerAuthMiddleware(
        Starlette(routes=[Route("/admin", admin)]),
        issuer=test_issuer.issuer,
        audience=test_issuer.audience,
        resource_metadata=ResourceMetadata(RESOURCE),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RESOURCE) as c:
        denied = await c.get("/admin", headers=test_issuer.auth_header(scope="x"))
    assert denied.status_code == 403
    assert f'resource_metadata="{RESOURCE}{WELL_KNOWN}"' in denied.headers["www-authenticate"]


def test_websocket_refusal_names_the_resource_metadata(test_issuer: TestIssuer) -> None:
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()

    app = api(test_issuer)
    app.router.routes.append(WebSocketRoute("/ws", stream))
    with (
        TestClient(app) as client,
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/ws"),
    ):
        pass
    assert denied.value.status_code == 401
    assert "resource_metadata=" in denied.value.headers["www-authenticate"]


def test_a_resource_no_issuer_accepts_as_audience_is_warned_about_at_startup(
    test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bearerguard.middleware"):
        BearerAuthMiddleware(
            FastAPI(),
            issuer=test_issuer.issuer,
            audience=test_issuer.audience,
            resource_metadata=ResourceMetadata("https://api.example.com/mcp"),
        )
        BearerAuthMiddleware(
            FastAPI(),
            issuer=test_issuer.issuer,
            audience=[test_issuer.audience, "https://api.example.com/mcp"],
            resource_metadata=ResourceMetadata("https://api.example.com/mcp"),
        )
    warnings = [r for r in caplog.records if "resource_not_an_audience" in r.getMessage()]
    assert len(warnings) == 1
    assert "resource=https://api.example.com/mcp" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"resource": "http://api.example.com"}, "plain http"),
        ({"resource": "https://api.example.com/#x"}, "fragment"),
        ({"resource": "https://api.example.com/?tenant=1"}, "query"),
        ({"resource": RESOURCE, "authorization_servers": "https://idp"}, "list of issuer"),
        ({"resource": RESOURCE, "extra": {"resource": "https://x"}}, "extra may not set"),
        ({"resource": RESOURCE, "bearer_methods_supported": ["cookie"]}, "bearer_methods"),
    ],
)
def test_resource_metadata_refuses_what_it_could_not_publish_correctly(
    options: dict[str, Any], why: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=why):
        ResourceMetadata(**options)
