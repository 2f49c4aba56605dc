"""Step-up authentication (RFC 9470), end to end through the middleware and a real issuer.

A route that needs a stronger or fresher sign-in declares it with
``require_authentication`` (FastAPI) or ``authentication_required`` (Starlette);
a token that falls short gets 401 ``insufficient_user_authentication`` with the
requirements in the challenge, on HTTP and WebSocket routes alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from bearerguard import (
    AccessToken,
    BearerAuthMiddleware,
    authentication_required,
    require_authentication,
)
from bearerguard.testing import DPoPKey, ManualClock, TestIssuer

pytestmark = pytest.mark.anyio

MFA = "urn:example:mfa"


def fastapi_app(issuer: TestIssuer) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BearerAuthMiddleware, issuer=issuer.issuer, audience=issuer.audience)

    @app.get("/transfer")
    async def transfer(
        token: AccessToken = Depends(require_authentication(acr_values=[MFA, "urn:b"])),
    ) -> dict[str, Any]:
        return {"sub": token.subject}

    @app.get("/fresh", dependencies=[Depends(require_authentication(max_age=300))])
    async def fresh() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/both", dependencies=[Depends(require_authentication(acr_values=MFA, max_age=60))])
    async def both() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture
async def client(test_issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fastapi_app(test_issuer))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def challenge(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


def assert_step_up(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert challenge(response).startswith(
        'Bearer realm="api", error="insufficient_user_authentication"'
    )
    assert response.json()["error"] == "insufficient_user_authentication"


async def test_acr_among_acr_values_is_accepted(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    response = await client.get("/transfer", headers=test_issuer.auth_header({"acr": "urn:b"}))
    assert response.status_code == 200, response.text


async def test_acr_outside_acr_values_is_401_with_acr_values_in_the_challenge(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    response = await client.get("/transfer", headers=test_issuer.auth_header({"acr": "urn:pwd"}))
    assert_step_up(response)
    assert f'acr_values="{MFA} urn:b"' in challenge(response)
    assert "max_age" not in challenge(response)
    assert response.json()["acr_values"] == f"{MFA} urn:b"


async def test_token_without_acr_is_401_when_acr_values_are_required(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    assert_step_up(await client.get("/transfer", headers=test_issuer.auth_header()))


async def test_acr_that_is_not_a_string_is_401(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    response = await client.get("/transfer", headers=test_issuer.auth_header({"acr": [MFA]}))
    assert_step_up(response)


async def test_auth_time_within_max_age_is_accepted(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    recent = int(time.time()) - 200
    response = await client.get("/fresh", headers=test_issuer.auth_header({"auth_time": recent}))
    assert response.status_code == 200, response.text


async def test_auth_time_older_than_max_age_is_401_with_max_age_in_the_challenge(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    stale = int(time.time()) - 400
    response = await client.get("/fresh", headers=test_issuer.auth_header({"auth_time": stale}))
    assert_step_up(response)
    assert 'max_age="300"' in challenge(response)
    assert "acr_values" not in challenge(response)
    assert response.json()["max_age"] == 300


async def test_token_without_auth_time_is_401_when_max_age_is_required(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    assert_step_up(await client.get("/fresh", headers=test_issuer.auth_header()))


async def test_auth_time_that_is_not_a_number_is_an_invalid_token_before_any_step_up(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    # The claim rules refuse a malformed auth_time outright: asking the user to sign
    # in again would not fix a token the issuer got wrong.
    response = await client.get(
        "/fresh", headers=test_issuer.auth_header({"auth_time": str(int(time.time()))})
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)


async def test_max_age_is_judged_on_the_clock_the_guard_is_given() -> None:
    clock = ManualClock(time.time())
    with TestIssuer(clock=clock) as issuer:
        app = FastAPI()
        app.add_middleware(
            BearerAuthMiddleware, issuer=issuer.issuer, audience=issuer.audience, clock=clock
        )
        guard = require_authentication(max_age=60, clock=clock)

        @app.get("/fresh", dependencies=[Depends(guard)])
        async def fresh() -> None:
            return None

        headers = issuer.auth_header({"auth_time": int(clock())}, expires_in=3600)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            assert (await c.get("/fresh", headers=headers)).status_code == 200
            clock.advance(61)  # no sleeping: the sign-in is now older than max_age
            assert_step_up(await c.get("/fresh", headers=headers))


async def test_challenge_names_both_requirements_whichever_failed(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    # Right acr, stale sign-in: the client must get a token that meets both at once.
    stale = {"acr": MFA, "auth_time": int(time.time()) - 3600}
    response = await client.get("/both", headers=test_issuer.auth_header(stale))
    assert_step_up(response)
    assert f'acr_values="{MFA}", max_age="60"' in challenge(response)
    fresh = {"acr": MFA, "auth_time": int(time.time())}
    assert (await client.get("/both", headers=test_issuer.auth_header(fresh))).status_code == 200


async def test_step_up_of_a_dpop_request_is_answered_on_the_dpop_challenge(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    key = DPoPKey()
    token = test_issuer.mint({"acr": "urn:pwd"}, dpop_key=key)
    url = "http://testserver/transfer"
    response = await client.get("/transfer", headers=key.headers(token, "GET", url))
    assert response.status_code == 401
    # RFC 9470 with RFC 9449: the error goes on the scheme the client used.
    dpop = response.headers["www-authenticate"].split("DPoP ", 1)[1]
    assert 'error="insufficient_user_authentication"' in dpop
    assert f'acr_values="{MFA} urn:b"' in dpop
    strong = test_issuer.mint({"acr": MFA}, dpop_key=key)
    ok = await client.get("/transfer", headers=key.headers(strong, "GET", url))
    assert ok.status_code == 200, ok.text


async def test_introspected_token_is_judged_by_its_acr_too(test_issuer: TestIssuer) -> None:
    app = FastAPI()
    app.add_middleware(
        BearerAuthMiddleware,
        issuer=test_issuer.issuer,
        audience=test_issuer.audience,
        client_id=test_issuer.introspection_client[0],
        client_secret=test_issuer.introspection_client[1],
    )

    @app.get("/transfer", dependencies=[Depends(require_authentication(acr_values=[MFA]))])
    async def transfer() -> dict[str, str]:
        return {"ok": "yes"}

    weak = test_issuer.mint_opaque({"acr": "urn:pwd"})
    strong = test_issuer.mint_opaque({"acr": MFA})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert_step_up(await c.get("/transfer", headers={"Authorization": f"Bearer {weak}"}))
        ok = await c.get("/transfer", headers={"Authorization": f"Bearer {strong}"})
        assert ok.status_code == 200, ok.text


def starlette_app(issuer: TestIssuer, *, wrap: bool) -> Any:
    @authentication_required(acr_values=[MFA])
    async def transfer(request: Request) -> JSONResponse:
        return JSONResponse({"ok": "yes"})

    @authentication_required(max_age=60)
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    inner = Starlette(routes=[Route("/transfer", transfer), WebSocketRoute("/ws", stream)])
    if wrap:
        return BearerAuthMiddleware(inner, issuer=issuer.issuer, audience=issuer.audience)
    inner.add_middleware(BearerAuthMiddleware, issuer=issuer.issuer, audience=issuer.audience)
    return inner


@pytest.mark.parametrize("wrap", [False, True], ids=["add_middleware", "wrapped"])
async def test_starlette_decorator_refusal_is_answered_by_the_middleware(
    test_issuer: TestIssuer, wrap: bool
) -> None:
    app = starlette_app(test_issuer, wrap=wrap)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        weak = await c.get("/transfer", headers=test_issuer.auth_header({"acr": "urn:pwd"}))
        assert_step_up(weak)
        assert f'acr_values="{MFA}"' in challenge(weak)
        strong = await c.get("/transfer", headers=test_issuer.auth_header({"acr": MFA}))
        assert strong.status_code == 200


def test_websocket_route_with_a_stale_sign_in_is_refused_before_accept(
    test_issuer: TestIssuer,
) -> None:
    app = starlette_app(test_issuer, wrap=False)
    stale = test_issuer.auth_header({"auth_time": int(time.time()) - 600})
    fresh = test_issuer.auth_header({"auth_time": int(time.time())})
    with TestClient(app) as client:
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect("/ws", headers=stale),
        ):
            pass
        assert denied.value.status_code == 401
        assert (
            'error="insufficient_user_authentication"' in denied.value.headers["www-authenticate"]
        )
        assert 'max_age="60"' in denied.value.headers["www-authenticate"]
        with client.websocket_connect("/ws", headers=fresh) as ws:
            assert ws.receive_text() == "hello"


def test_openapi_marks_a_step_up_route_as_needing_the_bearer_token(
    test_issuer: TestIssuer,
) -> None:
    spec = fastapi_app(test_issuer).openapi()
    assert spec["paths"]["/transfer"]["get"]["security"] == [{"BearerAuth": []}]


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({}, "needs acr_values=, max_age= or both"),
        ({"acr_values": ["two words"]}, "cannot be sent in a challenge"),
        ({"acr_values": ['a"b']}, "cannot be sent in a challenge"),
        ({"acr_values": [""]}, "cannot be sent in a challenge"),
        ({"max_age": -1}, "whole number of seconds"),
        ({"max_age": 1.5}, "whole number of seconds"),
    ],
)
def test_require_authentication_refuses_requirements_it_cannot_state(
    options: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        require_authentication(**options)
