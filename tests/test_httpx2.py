"""httpx2 (httpx's successor, the same API) as the caller's client: ``http_client=``.

httpx stays bearerguard's default client; these tests hand the middleware an
``httpx2.AsyncClient`` and check that keys, introspection and failures behave as
they do with httpx, with the issuer seeing httpx2's requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bearerguard import BearerAuthMiddleware, FetchPolicy, token_of
from bearerguard.testing import TestIssuer


async def whoami(request: Request) -> JSONResponse:
    token = token_of(request)
    return JSONResponse({"sub": token.subject if token else None})


@pytest.fixture
def make_client() -> Iterator[Any]:
    """Starts the app with ``http_client=httpx2.AsyncClient()``; the client is the caller's."""
    clients: list[TestClient] = []

    def make(issuer: TestIssuer, **options: Any) -> TestClient:
        app = BearerAuthMiddleware(
            Starlette(routes=[Route("/me", whoami)]),
            issuer=issuer.issuer,
            audience=issuer.audience,
            http_client=httpx2.AsyncClient(),
            **options,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_httpx2_client_fetches_metadata_and_keys(test_issuer: TestIssuer, make_client: Any) -> None:
    client = make_client(test_issuer)
    ok = client.get("/me", headers=test_issuer.auth_header({"sub": "erin"}))
    assert ok.status_code == 200 and ok.json() == {"sub": "erin"}
    agents = {r.headers.get("user-agent", "") for r in test_issuer.received}
    assert agents and all(agent.startswith("python-httpx2/") for agent in agents)


def test_httpx2_client_introspects_opaque_tokens(test_issuer: TestIssuer, make_client: Any) -> None:
    client = make_client(test_issuer, client_id="resource-server", client_secret="rs-secret")
    opaque = test_issuer.mint_opaque({"sub": "finn"})
    ok = client.get("/me", headers={"Authorization": f"Bearer {opaque}"})
    assert ok.status_code == 200 and ok.json() == {"sub": "finn"}
    assert test_issuer.requests[test_issuer.introspection_path] == 1


def test_httpx2_connection_failure_is_a_503_not_a_crash(
    test_issuer: TestIssuer, make_client: Any
) -> None:
    test_issuer.outage(mode="close")
    client = make_client(test_issuer)
    refused = client.get("/me", headers=test_issuer.auth_header())
    assert refused.status_code == 503
    assert "retry-after" in refused.headers


def test_httpx2_timeout_is_a_503_not_a_crash(test_issuer: TestIssuer, make_client: Any) -> None:
    test_issuer.delay(2.0)
    client = make_client(test_issuer, fetch=FetchPolicy(timeout=0.2))
    refused = client.get("/me", headers=test_issuer.auth_header())
    assert refused.status_code == 503


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "said"),
    [(httpx2.ReadTimeout, "timed out"), (httpx2.ConnectError, "network error: ConnectError")],
)
async def test_httpx2_errors_are_upstream_errors(error: type[Exception], said: str) -> None:
    from typing import cast

    import httpx

    from bearerguard._fetch import UpstreamError, fetch_json

    def fail(request: httpx2.Request) -> httpx2.Response:
        raise error("refused", request=request)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(fail)) as client:
        with pytest.raises(UpstreamError, match=said):
            await fetch_json(
                cast(httpx.AsyncClient, client),
                "https://idp.example.com/jwks",
                policy=FetchPolicy(),
            )
