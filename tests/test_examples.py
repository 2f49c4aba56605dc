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
