"""Done-when of issue 14: ``bearerguard inspect --json`` and the middleware agree on every token.

Both judge the suite's hostile-token corpus against the same real issuer on
127.0.0.1: the middleware over HTTP (its answer's status, and the reason its
observer was told), ``inspect`` through its JSON output. A token the middleware
refuses as a malformed *request* (400: it is not even a b64token) is one
``inspect`` must refuse too; otherwise verdict and reason must be the same.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bearerguard import BearerAuthMiddleware, Observer
from bearerguard._cli import inspect_main
from bearerguard._errors import AuthError
from bearerguard.testing import TestIssuer
from hostile_tokens import hostile_tokens

VERDICT = {200: "valid", 400: "invalid", 401: "invalid", 503: "unavailable"}


class Reasons(Observer):
    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def refusal(self, error: AuthError) -> None:
        self.last = error.reason


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def test_inspect_json_and_the_middleware_agree_on_every_hostile_token(
    test_issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, secret = test_issuer.introspection_client
    monkeypatch.setenv("BG_AGREE_SECRET", secret)
    reasons = Reasons()
    app = BearerAuthMiddleware(
        Starlette(routes=[Route("/items", ok)]),
        issuer=test_issuer.issuer,
        audience=test_issuer.audience,
        client_id=client_id,
        client_secret=secret,
        observer=reasons,
    )
    argv = [
        "-",
        "--json",
        *("--issuer", test_issuer.issuer, "--audience", test_issuer.audience),
        *("--client-id", client_id, "--client-secret-env", "BG_AGREE_SECRET"),
    ]
    disagreements: list[tuple[str, Any, Any]] = []
    seen: set[str] = set()
    corpus = hostile_tokens(test_issuer)
    with TestClient(app) as http:
        for name, token in corpus.items():
            reasons.last = None
            response = http.get("/items", headers={"Authorization": f"Bearer {token}"})
            middleware = (VERDICT[response.status_code], reasons.last)
            seen.add(middleware[0])
            out = io.StringIO()
            with monkeypatch.context() as patch:
                patch.setattr("sys.stdout", out)
                inspect_main(argv, stdin=io.StringIO(token))
            report = json.loads(out.getvalue())
            inspected = (report["verdict"], report["reason"])
            if response.status_code == 400:  # refused as a request: inspect must refuse too
                middleware, inspected = middleware[0], inspected[0]
            if middleware != inspected:
                disagreements.append((name, middleware, inspected))
    assert disagreements == []
    assert {"valid", "invalid"} <= seen  # the corpus holds tokens of both kinds
    assert len(corpus) > 100
