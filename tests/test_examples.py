"""The README's examples run as written, against a real development issuer."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bearerguard.testing import TestIssuer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["examples.fastapi_app", "examples.starlette_app"])
def test_example_app_guards_its_items(
    module: str, test_issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEARERGUARD_ISSUER", test_issuer.issuer)
    monkeypatch.setenv("BEARERGUARD_AUDIENCE", test_issuer.audience)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop(module, None)
    app = importlib.import_module(module).app
    with TestClient(app) as client:
        assert client.get("/items").status_code == 401
        ok = client.get("/items", headers=test_issuer.auth_header(scope="read:items"))
        assert ok.status_code == 200
        denied = client.get("/items", headers=test_issuer.auth_header(scope="other"))
        assert denied.status_code == 403


def test_fastapi_example_documents_its_scopes(
    test_issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEARERGUARD_ISSUER", test_issuer.issuer)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.fastapi_app", None)
    app = importlib.import_module("examples.fastapi_app").app
    with TestClient(app) as client:
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
    assert spec["paths"]["/items"]["get"]["security"] == [{"BearerAuth": ["read:items"]}]


def test_cognito_example_accepts_the_pools_access_tokens_and_refuses_its_id_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    import httpx

    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.cognito_app", None)
    create_app = importlib.import_module("examples.cognito_app").create_app
    pool = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz"
    now = int(time.time())
    access = {
        "iss": pool, "sub": "a1b2c3d4", "client_id": "7m1234abcdefghijklmnopqrst",
        "token_use": "access", "scope": "openid orders/read", "cognito:groups": ["admin"],
        "auth_time": now, "username": "jdoe",
    }  # fmt: skip
    id_token = {**access, "token_use": "id", "aud": "7m1234abcdefghijklmnopqrst"}
    del id_token["client_id"], id_token["scope"]
    with TestIssuer(issuer=pool, jwks_uri=pool + "/.well-known/jwks.json") as cognito:

        def bearer(claims: dict[str, object]) -> dict[str, str]:
            # Cognito's header has kid and alg only; the claims are exactly the token's.
            drop = {"jti", "client_id"} - claims.keys()  # none of TestIssuer's defaults
            token = cognito.mint(claims, audience=None, headers={"typ": None}, drop=drop)
            return {"Authorization": f"Bearer {token}"}

        app = create_app(http_client=httpx.AsyncClient(transport=cognito.transport()))
        with TestClient(app) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/orders").status_code == 401
            ok = client.get("/orders", headers=bearer(access))
            assert ok.status_code == 200
            assert ok.json() == {
                "user": "a1b2c3d4",
                "client": "7m1234abcdefghijklmnopqrst",
                "orders": [],
            }
            # cognito:groups count as scopes in this example: "admin" may cancel.
            assert client.delete("/orders/42", headers=bearer(access)).status_code == 200
            member = {**access, "cognito:groups": ["staff"]}
            assert client.delete("/orders/42", headers=bearer(member)).status_code == 403
            assert client.get("/orders", headers=bearer(id_token)).status_code == 401
