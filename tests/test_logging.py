"""Log events: stable names, a token only as a 12-hex SHA-256 prefix, no secret or signature."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bearerguard import BearerAuthMiddleware, FetchPolicy, rate_limited, require_scopes
from bearerguard._observability import LoggingObserver, Observer
from bearerguard.testing import TestIssuer

SECRET = "rs-secret"


def make_app(issuer: TestIssuer, **middleware: Any) -> FastAPI:
    client_id, client_secret = issuer.introspection_client
    assert client_secret == SECRET
    app = FastAPI()
    options: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": issuer.audience,
        "client_id": client_id,
        "client_secret": client_secret,
        "fetch": FetchPolicy(timeout=1.0, cooldown=0.1),
    }
    options.update(middleware)
    app.add_middleware(BearerAuthMiddleware, **options)

    @app.get("/items")
    async def items(token: Any = Depends(require_scopes("read:items"))) -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture
def client(test_issuer: TestIssuer) -> Iterator[TestClient]:
    with TestClient(make_app(test_issuer, rate_limit="3/minute")) as c:
        yield c


def short(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("bearerguard")]


def event(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [m for m in events(caplog) if m.split(" ", 1)[0] == name]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_rejected_token_is_logged_as_validation_with_outcome_reason_and_hash(
    client: TestClient, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard")
    bad = test_issuer.mint_tampered(scope="read:items")
    assert client.get("/items", headers=bearer(bad)).status_code == 401
    [line] = event(caplog, "bearerguard.validation")
    assert f"outcome=rejected reason=bad_signature status=401 token={short(bad)}" in line


def test_missing_token_is_logged_without_a_token_field_value(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard")
    client.get("/items")
    [line] = event(caplog, "bearerguard.validation")
    assert "outcome=rejected reason=missing_token status=401 token=- path=/items" in line


def test_issuer_outage_is_logged_as_unavailable_at_warning(
    test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard")
    test_issuer.outage()
    token = test_issuer.mint(scope="read:items")
    with TestClient(make_app(test_issuer)) as c:
        assert c.get("/items", headers=bearer(token)).status_code == 503
    [record] = [r for r in caplog.records if r.getMessage().startswith("bearerguard.validation ")]
    assert record.levelno == logging.WARNING
    assert "outcome=unavailable reason=jwks_unavailable status=503" in record.getMessage()


def test_missing_scope_is_logged_as_authorization_forbidden(
    client: TestClient, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard")
    token = test_issuer.mint(scope="other")
    assert client.get("/items", headers=bearer(token)).status_code == 403
    [line] = event(caplog, "bearerguard.authorization")
    assert "outcome=forbidden reason=insufficient_scope status=403" in line
    assert f"required='read:items' token={short(token)}" in line


def test_spent_budget_is_logged_as_ratelimit_exceeded(
    client: TestClient, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard")
    token = test_issuer.mint(scope="read:items")
    statuses = [client.get("/items", headers=bearer(token)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    [line] = event(caplog, "bearerguard.ratelimit.exceeded")
    assert f"token={short(token)} limit=3" in line


def test_introspection_call_is_logged_with_the_token_hash(
    client: TestClient, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bearerguard")
    opaque = test_issuer.mint_opaque(scope="read:items")
    assert client.get("/items", headers=bearer(opaque)).status_code == 200
    [line] = event(caplog, "bearerguard.introspection.call")
    assert f"token={short(opaque)}" in line


def test_jwks_fetch_is_logged(
    client: TestClient, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard")
    assert client.get("/items", headers=test_issuer.auth_header(scope="read:items")).status_code
    test_issuer.rotate()
    assert client.get("/items", headers=test_issuer.auth_header(scope="read:items")).status_code
    names = {m.split(" ", 1)[0] for m in events(caplog)}
    assert {"bearerguard.jwks.unknown_kid", "bearerguard.jwks.fetched"} <= names
    assert "bearerguard.jwks.rotated" in names


def test_accepted_tokens_are_logged_only_through_the_logging_observer(
    test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bearerguard")
    token = test_issuer.mint(scope="read:items")
    with TestClient(make_app(test_issuer)) as c:
        c.get("/items", headers=bearer(token))
    assert not [m for m in event(caplog, "bearerguard.validation") if "outcome=accepted" in m]
    with TestClient(make_app(test_issuer, observer=LoggingObserver())) as c:
        c.get("/items", headers=bearer(token))
    [line] = [m for m in event(caplog, "bearerguard.validation") if "outcome=accepted" in m]
    assert f"token={short(token)}" in line


def test_every_event_name_is_stable_and_dotted(
    client: TestClient, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bearerguard")
    for headers in ({}, bearer(test_issuer.mint_tampered()), bearer("opaque-value")):
        client.get("/items", headers=headers)
    for message in events(caplog):
        assert re.match(r"bearerguard(\.[a-z_]+)+( |$)", message), message


def test_no_token_secret_or_signature_is_ever_logged(
    test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = test_issuer.mint(scope="read:items")
    tampered = test_issuer.mint_tampered(scope="read:items")
    lacking = test_issuer.mint(scope="other")
    opaque = test_issuer.mint_opaque(scope="read:items")
    revoked = test_issuer.mint_opaque(scope="read:items")
    test_issuer.revoke(revoked)
    huge = "A" * 9000
    tokens = [good, tampered, lacking, opaque, revoked, "opaque-unknown", huge]
    with TestClient(make_app(test_issuer, rate_limit="2/minute", observer=LoggingObserver())) as c:
        for token in [*tokens, good, good]:  # the repeats are rate limited
            c.get("/items", headers=bearer(token))
    text = caplog.text + "\n".join(repr(r.__dict__) for r in caplog.records)
    assert "bearerguard.ratelimit.exceeded" in text
    assert "bearerguard.introspection.call" in text
    assert SECRET not in text
    for token in tokens:
        assert token not in text
        if token.count(".") == 2:
            assert token.split(".")[2] not in text


class Exploding(Observer):
    def validation(self, token: Any, error: Any, seconds: float) -> None:
        raise RuntimeError("observer bug")

    def refusal(self, error: Any) -> None:
        raise RuntimeError("observer bug")

    def introspection(self, issuer: str, seconds: float, error: Any) -> None:
        raise RuntimeError("observer bug")


def test_a_failing_observer_is_logged_and_never_fails_the_request(
    test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    opaque = test_issuer.mint_opaque(scope="read:items")
    with TestClient(make_app(test_issuer, observer=Exploding())) as c:
        assert (
            c.get("/items", headers=test_issuer.auth_header(scope="read:items")).status_code == 200
        )
        assert c.get("/items").status_code == 401
        assert c.get("/items", headers=bearer(opaque)).status_code == 200  # introspected
    failed = {line.split("method=")[1] for line in event(caplog, "bearerguard.observer.error")}
    assert failed == {"validation", "refusal", "introspection"}


def test_starlette_decorator_429_is_logged_as_ratelimit_exceeded(
    test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard")

    @rate_limited("1/minute")
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/limited", endpoint)])
    guarded = BearerAuthMiddleware(app, issuer=test_issuer.issuer, audience=test_issuer.audience)
    token = test_issuer.mint()
    with TestClient(guarded) as c:
        statuses = [c.get("/limited", headers=bearer(token)).status_code for _ in range(2)]
    assert statuses == [200, 429]
    [line] = event(caplog, "bearerguard.ratelimit.exceeded")
    assert f"token={short(token)} limit=1" in line
