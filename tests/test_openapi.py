"""The OpenAPI document: the bearer scheme, each route's scopes, and OAuth2 flows from metadata."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from bearerguard import AccessToken, BearerAuthMiddleware, current_token, require_scopes
from bearerguard._demo import create_demo_app
from bearerguard.openapi import docs_paths, install, oauth2_flows
from bearerguard.testing import TestIssuer

AUD = "https://api.example.com"
ROOT = Path(__file__).resolve().parents[1]


def guarded_app(issuer: str, **middleware: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        BearerAuthMiddleware,
        issuer=issuer,
        audience=AUD,
        exclude_paths=["/health", *docs_paths(app)],
        **middleware,
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/items", dependencies=[Depends(require_scopes("read:items"))])
    async def items(token: AccessToken = Depends(current_token)) -> dict[str, Any]:
        return {"sub": token.subject}

    @app.delete("/items/{name}")
    async def delete(
        name: str, token: AccessToken = Depends(require_scopes("write:items", "admin"))
    ) -> dict[str, Any]:
        return {"deleted": name}

    @app.get("/me")
    async def me(token: AccessToken = Depends(current_token)) -> dict[str, Any]:
        return {"sub": token.subject}

    return app


def full_metadata(issuer: TestIssuer, **extra: Any) -> dict[str, Any]:
    return {
        **issuer.metadata(),
        "token_endpoint": issuer.issuer + "/token",
        "authorization_endpoint": issuer.issuer + "/authorize",
        "grant_types_supported": ["client_credentials", "authorization_code"],
        **extra,
    }


@pytest.fixture
def started() -> Iterator[Any]:
    """Start an app (lifespan on) and make one authenticated call, so metadata is in hand."""
    clients: list[TestClient] = []

    def start(app: FastAPI, issuer: TestIssuer) -> TestClient:
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        warm = client.get("/items", headers=issuer.auth_header(scope="read:items"))
        assert warm.status_code == 200, warm.text
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def security_of(schema: dict[str, Any], path: str, method: str) -> list[dict[str, list[str]]]:
    security: list[dict[str, list[str]]] = schema["paths"][path][method].get("security", [])
    return security


# -- without install(): FastAPI derives it from require_scopes -------------------------


def test_guarded_route_security_requirement_lists_its_scopes(test_issuer: TestIssuer) -> None:
    schema = guarded_app(test_issuer.issuer).openapi()
    assert security_of(schema, "/items", "get") == [{"BearerAuth": ["read:items"]}]
    assert security_of(schema, "/items/{name}", "delete") == [
        {"BearerAuth": ["write:items", "admin"]}
    ]


def test_security_scheme_is_http_bearer_when_no_flows_are_known(
    test_issuer: TestIssuer,
) -> None:
    schema = guarded_app(test_issuer.issuer).openapi()
    assert schema["components"]["securitySchemes"] == {
        "BearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An OAuth 2.0 access token, sent as `Authorization: Bearer <token>`.",
        }
    }


def test_unguarded_route_has_no_security_requirement(test_issuer: TestIssuer) -> None:
    schema = guarded_app(test_issuer.issuer).openapi()
    assert security_of(schema, "/health", "get") == []


def test_require_scopes_adds_no_parameters_to_the_operation(test_issuer: TestIssuer) -> None:
    schema = guarded_app(test_issuer.issuer).openapi()
    assert "parameters" not in schema["paths"]["/items"]["get"]
    assert "requestBody" not in schema["paths"]["/items"]["get"]


def test_require_scopes_keeps_its_runtime_answers(test_issuer: TestIssuer, started: Any) -> None:
    client = started(guarded_app(test_issuer.issuer), test_issuer)
    ok = client.delete("/items/x", headers=test_issuer.auth_header(scope="write:items admin"))
    assert ok.json() == {"deleted": "x"}
    refused = client.delete("/items/x", headers=test_issuer.auth_header(scope="write:items"))
    assert refused.status_code == 403
    assert 'scope="write:items admin"' in refused.headers["www-authenticate"]
    assert client.delete("/items/x").status_code == 401


def test_inspect_signature_still_works_on_the_require_scopes_class() -> None:
    assert "scopes" in inspect.signature(require_scopes).parameters


# -- install(): OAuth2 flows from the issuer's metadata --------------------------------


def test_oauth2_flows_come_from_the_issuers_metadata(test_issuer: TestIssuer, started: Any) -> None:
    test_issuer.serve_metadata(full_metadata(test_issuer))
    app = guarded_app(test_issuer.issuer)
    install(app)
    schema = started(app, test_issuer).get("/openapi.json").json()
    oauth2 = schema["components"]["securitySchemes"]["OAuth2"]
    scopes = {"read:items": "", "write:items": "", "admin": ""}
    assert oauth2["flows"] == {
        "clientCredentials": {"tokenUrl": test_issuer.issuer + "/token", "scopes": scopes},
        "authorizationCode": {
            "authorizationUrl": test_issuer.issuer + "/authorize",
            "tokenUrl": test_issuer.issuer + "/token",
            "scopes": scopes,
        },
    }


def test_each_guarded_route_offers_bearer_or_oauth2_with_its_scopes(
    test_issuer: TestIssuer, started: Any
) -> None:
    test_issuer.serve_metadata(full_metadata(test_issuer))
    app = guarded_app(test_issuer.issuer)
    install(app)
    schema = started(app, test_issuer).get("/openapi.json").json()
    assert security_of(schema, "/items", "get") == [
        {"BearerAuth": ["read:items"]},
        {"OAuth2": ["read:items"]},
    ]
    assert security_of(schema, "/health", "get") == []


def test_metadata_without_token_endpoint_leaves_only_the_bearer_scheme(
    test_issuer: TestIssuer, started: Any
) -> None:
    metadata = test_issuer.metadata()
    del metadata["token_endpoint"]
    test_issuer.serve_metadata(metadata)
    app = guarded_app(test_issuer.issuer)
    install(app)
    schema = started(app, test_issuer).get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"BearerAuth"}


def test_flows_appear_once_discovery_has_answered(test_issuer: TestIssuer, started: Any) -> None:
    test_issuer.serve_metadata(full_metadata(test_issuer))
    app = guarded_app(test_issuer.issuer)
    install(app)
    before = app.openapi()  # no middleware running yet: nothing discovered
    assert set(before["components"]["securitySchemes"]) == {"BearerAuth"}
    after = started(app, test_issuer).get("/openapi.json").json()
    assert "OAuth2" in after["components"]["securitySchemes"]


def test_explicit_metadata_needs_no_discovery(test_issuer: TestIssuer) -> None:
    app = guarded_app(test_issuer.issuer, jwks_uri=test_issuer.jwks_uri)
    install(app, metadata=full_metadata(test_issuer))
    schema = app.openapi()
    assert "clientCredentials" in schema["components"]["securitySchemes"]["OAuth2"]["flows"]


def test_scope_descriptions_are_used(test_issuer: TestIssuer) -> None:
    app = guarded_app(test_issuer.issuer)
    install(app, metadata=full_metadata(test_issuer), scopes={"read:items": "Read items"})
    flows = app.openapi()["components"]["securitySchemes"]["OAuth2"]["flows"]
    assert flows["clientCredentials"]["scopes"]["read:items"] == "Read items"


def test_client_id_prefills_swagger_ui_with_pkce(test_issuer: TestIssuer) -> None:
    app = guarded_app(test_issuer.issuer)
    install(app, client_id="docs-client")
    assert app.swagger_ui_init_oauth == {
        "clientId": "docs-client",
        "usePkceWithAuthorizationCodeGrant": True,
    }


def test_grant_types_supported_limits_the_flows() -> None:
    metadata = {
        "token_endpoint": "https://idp.example.com/token",
        "authorization_endpoint": "https://idp.example.com/authorize",
        "grant_types_supported": ["client_credentials"],
    }
    assert set(oauth2_flows(metadata, {})) == {"clientCredentials"}


def test_missing_grant_types_supported_means_authorization_code_only() -> None:
    metadata = {
        "token_endpoint": "https://idp.example.com/token",
        "authorization_endpoint": "https://idp.example.com/authorize",
    }
    assert set(oauth2_flows(metadata, {})) == {"authorizationCode"}


def test_plain_http_metadata_urls_off_loopback_are_not_offered() -> None:
    metadata = {
        "token_endpoint": "http://idp.example.com/token",
        "grant_types_supported": ["client_credentials"],
    }
    assert oauth2_flows(metadata, {}) == {}


def test_non_string_metadata_urls_are_ignored() -> None:
    metadata = {"token_endpoint": ["x"], "grant_types_supported": "client_credentials"}
    assert oauth2_flows(metadata, {}) == {}


def test_explicit_token_url_offers_client_credentials() -> None:
    flows = oauth2_flows({}, {"a": ""}, token_url="https://idp.example.com/oauth/token")
    assert flows == {
        "clientCredentials": {
            "tokenUrl": "https://idp.example.com/oauth/token",
            "scopes": {"a": ""},
        }
    }


# -- the demo and the example ---------------------------------------------------------


def test_demo_serves_docs_and_openapi_without_a_token(
    test_issuer: TestIssuer, started: Any
) -> None:
    client = started(create_demo_app(test_issuer.issuer), test_issuer)
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    schema = client.get("/openapi.json").json()
    assert security_of(schema, "/items", "get") == [
        {"BearerAuth": ["read:items"]},
        {"OAuth2": ["read:items"]},
    ]
    assert security_of(schema, "/items", "post") == [
        {"BearerAuth": ["write:items"]},
        {"OAuth2": ["write:items"]},
    ]
    assert client.get("/items").status_code == 401


def test_demo_offers_swagger_ui_the_issuers_client_credentials_flow(
    test_issuer: TestIssuer, started: Any
) -> None:
    app = create_demo_app(test_issuer.issuer, swagger_client_secret="demo-secret")
    client = started(app, test_issuer)
    flows = client.get("/openapi.json").json()["components"]["securitySchemes"]["OAuth2"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == test_issuer.token_endpoint
    assert flows["clientCredentials"]["scopes"]["read:items"] == "Read the inventory"
    docs = client.get("/docs").text
    assert '"clientId": "swagger-ui"' in docs and '"clientSecret": "demo-secret"' in docs


def test_fastapi_example_documents_its_scopes() -> None:
    spec = importlib.util.spec_from_file_location(
        "fastapi_example", ROOT / "examples/fastapi_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    schema = module.app.openapi()
    assert security_of(schema, "/items", "get") == [{"BearerAuth": ["read:items"]}]
    assert security_of(schema, "/items/{name}", "delete") == [{"BearerAuth": ["write:items"]}]
    assert "BearerAuth" in schema["components"]["securitySchemes"]


def test_route_using_only_current_token_is_marked_secured(test_issuer: TestIssuer) -> None:
    schema = guarded_app(test_issuer.issuer).openapi()
    assert security_of(schema, "/me", "get") == [{"BearerAuth": []}]
    # Next to require_scopes, the same scheme is listed once, with the route's scopes.
    assert security_of(schema, "/items", "get") == [{"BearerAuth": ["read:items"]}]


def test_current_token_keeps_its_runtime_answers(test_issuer: TestIssuer, started: Any) -> None:
    client = started(guarded_app(test_issuer.issuer), test_issuer)
    assert client.get("/me", headers=test_issuer.auth_header({"sub": "dora"})).json() == {
        "sub": "dora"
    }
    assert client.get("/me").status_code == 401
