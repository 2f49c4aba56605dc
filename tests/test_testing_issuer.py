"""TestIssuer's token endpoint (RFC 6749 §4.4 client credentials), as Swagger UI uses it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from bearerguard import AccessToken, BearerAuthMiddleware, require_scopes
from bearerguard.testing import TestIssuer


def token_request(issuer: TestIssuer, **form: str) -> httpx.Response:
    auth = form.pop("auth", None)
    return httpx.post(
        issuer.token_endpoint,
        data=form,
        auth=tuple(auth.split(":")) if auth else None,  # type: ignore[arg-type]
    )


@pytest.fixture
def issuer(test_issuer: TestIssuer) -> TestIssuer:
    test_issuer.add_client("swagger-ui", "s3cret", scopes=["read:items", "write:items"])
    return test_issuer


def test_metadata_names_the_token_endpoint(issuer: TestIssuer) -> None:
    metadata = httpx.get(issuer.issuer + "/.well-known/openid-configuration").json()
    assert metadata["token_endpoint"] == issuer.token_endpoint
    assert "client_credentials" in metadata["grant_types_supported"]


def test_client_credentials_token_is_accepted_by_the_middleware(issuer: TestIssuer) -> None:
    answer = token_request(
        issuer, grant_type="client_credentials", scope="read:items", auth="swagger-ui:s3cret"
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "read:items"
    assert body["expires_in"] == 300
    assert answer.headers["cache-control"] == "no-store"
    app = FastAPI()
    app.add_middleware(BearerAuthMiddleware, issuer=issuer.issuer, audience=issuer.audience)

    @app.get("/items")
    async def items(token: AccessToken = Depends(require_scopes("read:items"))) -> Any:
        return {"client": token.client_id, "sub": token.subject}

    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        ok = client.get("/items", headers=headers)
    assert ok.status_code == 200
    assert ok.json() == {"client": "swagger-ui", "sub": "swagger-ui"}


def test_client_secret_post_is_accepted_too(issuer: TestIssuer) -> None:
    answer = token_request(
        issuer, grant_type="client_credentials", client_id="swagger-ui", client_secret="s3cret"
    )
    assert answer.status_code == 200
    # No scope asked for: every scope the client may have.
    assert answer.json()["scope"] == "read:items write:items"


def test_wrong_secret_is_invalid_client(issuer: TestIssuer) -> None:
    answer = token_request(issuer, grant_type="client_credentials", auth="swagger-ui:wrong")
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_client"}
    assert answer.headers["www-authenticate"].startswith("Basic")


def test_unknown_client_is_invalid_client(issuer: TestIssuer) -> None:
    answer = token_request(issuer, grant_type="client_credentials", auth="nobody:s3cret")
    assert answer.status_code == 401


def test_other_grant_types_are_unsupported(issuer: TestIssuer) -> None:
    answer = token_request(issuer, grant_type="password", auth="swagger-ui:s3cret")
    assert answer.status_code == 400
    assert answer.json() == {"error": "unsupported_grant_type"}


def test_scope_beyond_the_clients_is_invalid_scope(issuer: TestIssuer) -> None:
    answer = token_request(
        issuer, grant_type="client_credentials", scope="admin", auth="swagger-ui:s3cret"
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_scope"}


def test_token_endpoint_answers_a_browser_preflight(issuer: TestIssuer) -> None:
    preflight = httpx.options(
        issuer.token_endpoint,
        headers={
            "Origin": "http://127.0.0.1:8000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    answer = token_request(issuer, grant_type="client_credentials", auth="swagger-ui:s3cret")
    assert answer.headers["access-control-allow-origin"] == "*"
