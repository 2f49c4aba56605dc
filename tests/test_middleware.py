"""The middleware end to end, through real apps and a real issuer on 127.0.0.1.

Every rejection rule of the core issue has its own test here (header rules and
claim rules are also unit-tested in test_claims.py); each asserts the RFC 6750
answer a client gets, not only the status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from bearerguard import (
    AccessToken,
    BearerAuthMiddleware,
    FetchPolicy,
    Issuer,
    current_token,
    require_scopes,
    scopes_required,
)
from bearerguard.testing import TestIssuer

pytestmark = pytest.mark.anyio
AUD = "https://api.example.com"
#: What the DPoP challenge offered beside Bearer by default says (RFC 9449 §7.2).
DPOP_ALGS = 'algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA Ed25519"'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"x" * 256) -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


def fastapi_app(**options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BearerAuthMiddleware, **options)

    @app.get("/items", dependencies=[Depends(require_scopes("read:items"))])
    async def items(token: AccessToken = Depends(current_token)) -> dict[str, Any]:
        return {"sub": token.subject, "scopes": sorted(token.scopes), "repr": repr(token)}

    @app.get("/admin")
    async def admin(
        token: AccessToken = Depends(require_scopes("admin", "read:items")),
    ) -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"body": body.decode()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def app_factory(test_issuer: TestIssuer) -> Callable[..., FastAPI]:
    def make(**options: Any) -> FastAPI:
        options.setdefault("issuer", test_issuer.issuer)
        options.setdefault("audience", AUD)
        return fastapi_app(**options)

    return make


@pytest.fixture
async def client(app_factory: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_factory())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


async def assert_invalid_token(client: httpx.AsyncClient, token: str) -> httpx.Response:
    response = await client.get("/items", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert challenge(response).startswith('Bearer realm="api", error="invalid_token"')
    body = response.json()
    assert body["error"] == "invalid_token"
    assert body["error_description"]
    return response


# -- acceptance -------------------------------------------------------------------


async def test_valid_token_reaches_the_route(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    response = await client.get(
        "/items", headers=test_issuer.auth_header(scope="read:items", audience=AUD)
    )
    assert response.status_code == 200
    assert "read:items" in response.json()["scopes"]


async def test_access_token_repr_never_holds_the_raw_token(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    token = test_issuer.mint(scope="read:items", audience=AUD)
    response = await client.get("/items", headers=bearer(token))
    assert token not in response.json()["repr"]
    assert token.split(".")[2] not in response.json()["repr"]


async def test_starlette_requires_works_unchanged(test_issuer: TestIssuer) -> None:
    @requires("read:items")
    async def items(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.user.display_name, "scopes": request.auth.scopes})

    @scopes_required("admin")
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/items", items), Route("/admin", admin)])
    app.add_middleware(BearerAuthMiddleware, issuer=test_issuer.issuer, audience=AUD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.get(
            "/items",
            headers=test_issuer.auth_header({"sub": "ann"}, scope="read:items", audience=AUD),
        )
        assert ok.status_code == 200 and ok.json()["user"] == "ann"
        denied = await c.get("/items", headers=test_issuer.auth_header(scope="other", audience=AUD))
        assert denied.status_code == 403
        rfc = await c.get("/admin", headers=test_issuer.auth_header(scope="other", audience=AUD))
        assert rfc.status_code == 403
        assert 'error="insufficient_scope"' in challenge(rfc) and 'scope="admin"' in challenge(rfc)


async def test_request_auth_is_shared_per_scope_set_and_cannot_be_changed(
    test_issuer: TestIssuer,
) -> None:
    seen: list[Any] = []

    async def items(request: Request) -> JSONResponse:
        seen.append(request.auth)
        with pytest.raises(AttributeError):
            request.auth.scopes = ["admin"]
        request.auth.scopes.append("admin")  # a copy: the next request never sees it
        return JSONResponse({"scopes": request.auth.scopes})

    app = Starlette(routes=[Route("/items", items)])
    app.add_middleware(BearerAuthMiddleware, issuer=test_issuer.issuer, audience=AUD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for name in ("ann", "bob"):
            headers = test_issuer.auth_header({"sub": name}, scope="b a", audience=AUD)
            response = await c.get("/items", headers=headers)
            assert response.json() == {"scopes": ["a", "authenticated", "b"]}
    assert seen[0] is seen[1]


# -- RFC 6750 answers -------------------------------------------------------------


async def test_no_credentials_get_a_challenge_without_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/items")
    assert response.status_code == 401
    assert challenge(response) == f'Bearer realm="api", DPoP realm="api", {DPOP_ALGS}'


async def test_other_auth_scheme_is_treated_as_no_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/items", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert "error=" not in challenge(response)


async def test_missing_scope_is_403_insufficient_scope_naming_the_scopes(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    response = await client.get(
        "/admin", headers=test_issuer.auth_header(scope="read:items", audience=AUD)
    )
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in challenge(response)
    assert 'scope="admin read:items"' in challenge(response)
    assert response.json()["error"] == "insufficient_scope"


async def test_two_authorization_headers_are_400_invalid_request(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    token = test_issuer.mint(scope="read:items", audience=AUD)
    response = await client.get(
        "/items",
        headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
    )
    assert response.status_code == 400
    assert 'error="invalid_request"' in challenge(response)


async def test_token_outside_grammar_is_400_invalid_request(client: httpx.AsyncClient) -> None:
    response = await client.get("/items", headers={"Authorization": 'Bearer "quoted"'})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_error_description_is_a_safe_quoted_string(client: httpx.AsyncClient) -> None:
    response = await assert_invalid_token(client, "not-a-jwt")
    description = challenge(response).split('error_description="', 1)[1].split('"', 1)[0]
    assert description == response.json()["error_description"]
    assert all(c not in description for c in '"\\\r\n')


# -- token shapes ---------------------------------------------------------------


async def test_oversized_token_is_rejected_before_decoding(client: httpx.AsyncClient) -> None:
    response = await assert_invalid_token(client, "a" * 9000)
    assert "too large" in response.json()["error_description"]


async def test_max_token_length_is_configurable(
    app_factory: Callable[..., FastAPI], test_issuer: TestIssuer
) -> None:
    app = app_factory(max_token_length=64)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get(
            "/items", headers=test_issuer.auth_header(scope="read:items", audience=AUD)
        )
    assert response.status_code == 401


async def test_jwe_is_rejected(client: httpx.AsyncClient) -> None:
    await assert_invalid_token(client, "a.b.c.d.e")


async def test_opaque_token_without_introspection_is_rejected(client: httpx.AsyncClient) -> None:
    await assert_invalid_token(client, "2YotnFZFEjr1zCsicMWpAA")


async def test_tampered_signature_is_rejected(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    head, payload, sig = test_issuer.mint(scope="read:items", audience=AUD).split(".")
    await assert_invalid_token(client, f"{head}.{payload}.{sig[::-1]}")


async def test_tampered_claims_are_rejected(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    head, _, sig = test_issuer.mint(scope="read:items", audience=AUD).split(".")
    forged = b64(
        json.dumps({"iss": test_issuer.issuer, "aud": AUD, "exp": 9e9, "scope": "admin"}).encode()
    )
    await assert_invalid_token(client, f"{head}.{forged}.{sig}")


async def test_alg_none_is_rejected(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    claims = {"iss": test_issuer.issuer, "aud": AUD, "exp": 9e9, "scope": "read:items"}
    token = forge({"alg": "none", "typ": "JWT"}, claims, b"") + "x"
    await assert_invalid_token(client, token)


async def test_hmac_signed_with_public_key_is_rejected(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    # The classic algorithm-confusion attack: HS256 keyed with the issuer's public key.
    public = test_issuer.signing_key.public_key()
    claims = {"iss": test_issuer.issuer, "aud": AUD, "exp": 9e9, "scope": "read:items"}
    header = {"alg": "HS256", "kid": test_issuer.signing_kid}
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(test_issuer.jwks()["keys"][0]).encode(),
    ):
        signing_input = forge(header, claims, b"").rsplit(".", 1)[0]
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await assert_invalid_token(client, f"{signing_input}.{b64(mac)}")


def _attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_embedded_jwk_header_is_never_used(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    key = _attacker_key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    claims = {"iss": test_issuer.issuer, "aud": AUD, "exp": 9e9, "scope": "read:items"}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"jwk": jwk})
    await assert_invalid_token(client, token)


async def test_jku_and_x5u_headers_are_never_fetched(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    with TestIssuer() as attacker:
        key = attacker.signing_key
        claims = {"iss": test_issuer.issuer, "aud": AUD, "exp": 9e9, "scope": "read:items"}
        headers = {"jku": attacker.jwks_uri, "x5u": attacker.url("/cert.pem"), "kid": "attacker"}
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        token = jwt.encode(claims, pem, algorithm="RS256", headers=headers)
        attacker.reset_counters()
        await assert_invalid_token(client, token)
        assert sum(attacker.requests.values()) == 0


async def test_token_from_untrusted_issuer_is_rejected_without_fetching(
    client: httpx.AsyncClient,
) -> None:
    with TestIssuer() as other:
        other.reset_counters()
        await assert_invalid_token(client, other.mint(scope="read:items", audience=AUD))
        assert sum(other.requests.values()) == 0


async def test_keys_are_bound_to_their_issuer(test_issuer: TestIssuer) -> None:
    # A token signed by issuer A's key but claiming issuer B must not verify.
    with TestIssuer() as other:
        app = fastapi_app(
            issuers=[
                Issuer(issuer=test_issuer.issuer, audience=AUD),
                Issuer(issuer=other.issuer, audience=AUD),
            ]
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            for issuer in (test_issuer, other):
                ok = await c.get(
                    "/items", headers=issuer.auth_header(scope="read:items", audience=AUD)
                )
                assert ok.status_code == 200
            cross = test_issuer.mint({"iss": other.issuer}, scope="read:items", audience=AUD)
            assert (await c.get("/items", headers=bearer(cross))).status_code == 401


async def test_token_without_kid_is_only_tried_with_keys_of_its_alg(
    test_issuer: TestIssuer,
) -> None:
    with TestIssuer(algorithms=("ES256", "RS256")) as issuer:
        app = fastapi_app(issuer=issuer.issuer, audience=AUD)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            es = issuer.mint(scope="read:items", audience=AUD, alg="ES256", kid=None)
            assert (await c.get("/items", headers=bearer(es))).status_code == 200
            rs = issuer.mint(scope="read:items", audience=AUD, alg="RS256", kid=None)
            assert (await c.get("/items", headers=bearer(rs))).status_code == 200


async def test_expired_token_is_rejected(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    response = await assert_invalid_token(
        client, test_issuer.mint(scope="read:items", audience=AUD, expires_in=-120)
    )
    assert "expired" in response.json()["error_description"]


async def test_wrong_audience_is_rejected(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    await assert_invalid_token(
        client, test_issuer.mint(scope="read:items", audience="https://other.example.com")
    )


async def test_other_token_kind_typ_is_rejected(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    await assert_invalid_token(
        client, test_issuer.mint(scope="read:items", audience=AUD, headers={"typ": "dpop+jwt"})
    )


async def test_rfc9068_mode_rejects_plain_jwt(
    app_factory: Callable[..., FastAPI], test_issuer: TestIssuer
) -> None:
    app = app_factory(rfc9068=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        plain = test_issuer.mint(scope="read:items", audience=AUD, headers={"typ": "JWT"})
        assert (await c.get("/items", headers=bearer(plain))).status_code == 401
        at = test_issuer.mint(scope="read:items", audience=AUD, headers={"typ": "at+jwt"})
        assert (await c.get("/items", headers=bearer(at))).status_code == 200


async def test_crit_header_is_rejected(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    await assert_invalid_token(
        client,
        test_issuer.mint(scope="read:items", audience=AUD, headers={"crit": ["exp"], "exp": 1}),
    )


async def test_hostile_inputs_never_produce_a_500(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    rng = random.Random(1234)
    good = test_issuer.mint(scope="read:items", audience=AUD)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/="
    samples = (
        ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400))) for _ in range(150)]
        + [good[: rng.randint(1, len(good))] for _ in range(50)]
        + [
            forge({"alg": "RS256", "kid": k}, {"iss": test_issuer.issuer, "exp": e})
            for k in ("", "x" * 500, "../../etc")
            for e in ("1", None, 1e308, -1)
        ]
    )
    for token in samples:
        response = await client.get("/items", headers=bearer(token))
        assert response.status_code in (400, 401, 503), (token, response.status_code)


# -- locations ------------------------------------------------------------------


async def test_query_token_is_ignored_unless_enabled(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    token = test_issuer.mint(scope="read:items", audience=AUD)
    assert (await client.get("/items", params={"access_token": token})).status_code == 401


async def test_query_token_accepted_when_enabled(
    app_factory: Callable[..., FastAPI], test_issuer: TestIssuer
) -> None:
    app = app_factory(token_in_query=True)
    token = test_issuer.mint(scope="read:items", audience=AUD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/items", params={"access_token": token})).status_code == 200
        both = await c.get("/items", params={"access_token": token}, headers=bearer(token))
        assert both.status_code == 400 and both.json()["error"] == "invalid_request"


async def test_form_token_accepted_when_enabled_and_body_still_readable(
    app_factory: Callable[..., FastAPI], test_issuer: TestIssuer
) -> None:
    app = app_factory(token_in_form=True)
    token = test_issuer.mint(scope="read:items", audience=AUD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post("/form", data={"access_token": token, "x": "1"})
        assert response.status_code == 200
        assert "x=1" in response.json()["body"]


# -- paths, websockets, startup, outage -------------------------------------------


async def test_excluded_paths_need_no_token(app_factory: Callable[..., FastAPI]) -> None:
    app = app_factory(exclude_paths=["/health", "/docs*"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/items")).status_code == 401


def _echo_app(test_issuer: TestIssuer) -> Starlette:
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hi")
        await ws.close()

    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    app.add_middleware(BearerAuthMiddleware, issuer=test_issuer.issuer, audience=AUD)
    return app


def test_websocket_without_token_gets_an_http_denial_before_accept(test_issuer: TestIssuer) -> None:
    with TestClient(_echo_app(test_issuer)) as tc:
        with pytest.raises(WebSocketDenialResponse) as info, tc.websocket_connect("/ws"):
            pass
        assert info.value.status_code == 401
        assert info.value.headers["www-authenticate"] == (
            f'Bearer realm="api", DPoP realm="api", {DPOP_ALGS}'
        )
        token = test_issuer.mint(scope="read:items", audience=AUD)
        with tc.websocket_connect("/ws", headers=bearer(token)) as ws:
            assert ws.receive_text() == "hi"


async def test_websocket_is_closed_1008_where_the_server_has_no_denial_response(
    test_issuer: TestIssuer,
) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    await _echo_app(test_issuer)(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "unauthorized"}]


async def test_issuer_down_before_first_fetch_is_503_with_retry_after(
    app_factory: Callable[..., FastAPI], test_issuer: TestIssuer
) -> None:
    token = test_issuer.mint(scope="read:items", audience=AUD)
    test_issuer.outage(True)
    app = app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/items", headers=bearer(token))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] == "temporarily_unavailable"


def test_startup_does_not_depend_on_the_issuer(test_issuer: TestIssuer) -> None:
    test_issuer.outage(True)
    app = fastapi_app(
        issuer=test_issuer.issuer,
        audience=AUD,
        exclude_paths=["/health"],
        fetch=FetchPolicy(cooldown=0),
    )
    token = test_issuer.mint(scope="read:items", audience=AUD)
    with TestClient(app) as tc:  # runs the lifespan, whose prefetch fails: startup must not
        assert tc.get("/health").status_code == 200
        assert tc.get("/items", headers=bearer(token)).status_code == 503
        test_issuer.outage(False)
        assert tc.get("/items", headers=bearer(token)).status_code == 200


async def test_known_keys_survive_an_outage(test_issuer: TestIssuer) -> None:
    app = fastapi_app(
        issuers=[
            Issuer(issuer=test_issuer.issuer, audience=AUD, fetch=FetchPolicy(min_ttl=0, max_ttl=0))
        ]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (
            await c.get("/items", headers=test_issuer.auth_header(scope="read:items", audience=AUD))
        ).status_code == 200
        test_issuer.outage(True)
        for _ in range(5):
            response = await c.get(
                "/items", headers=test_issuer.auth_header(scope="read:items", audience=AUD)
            )
            assert response.status_code == 200


# -- logs -----------------------------------------------------------------------


async def test_tokens_never_appear_in_logs(
    client: httpx.AsyncClient, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = test_issuer.mint(scope="read:items", audience=AUD)
    bad = good[:-4] + "AAAA"
    for token in (good, bad, "opaque-token-value", good + ".x.y"):
        await client.get("/items", headers=bearer(token))
    text = caplog.text
    for token in (good, bad, "opaque-token-value"):
        assert token not in text
        assert token.split(".")[-1] not in text


async def test_scopes_required_answers_403_even_when_the_middleware_wraps_the_app(
    test_issuer: TestIssuer,
) -> None:
    # Mounted around Starlette (not via add_middleware), the decorator's error meets
    # Starlette's error handling first: the middleware's handler answers it there.
    @scopes_required("admin")
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({})

    app = BearerAuthMiddleware(
        Starlette(routes=[Route("/admin", admin)]), issuer=test_issuer.issuer, audience=AUD
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/admin", headers=test_issuer.auth_header(scope="x", audience=AUD))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in challenge(response)
    assert response.json()["scope"] == "admin"


async def test_http_client_keyword_routes_fetches_through_the_given_client(
    test_issuer: TestIssuer,
) -> None:
    seen: list[str] = []
    inner = test_issuer.transport()

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.url.path)
            return await inner.handle_async_request(request)

    async with httpx.AsyncClient(transport=Counting()) as http_client:
        app = fastapi_app(issuer=test_issuer.issuer, audience=AUD, http_client=http_client)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            ok = await c.get(
                "/items", headers=test_issuer.auth_header(scope="read:items", audience=AUD)
            )
            assert ok.status_code == 200
        assert "/jwks" in seen
        assert not http_client.is_closed


async def test_key_replaced_under_the_same_kid_is_not_a_401(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    from jwt.algorithms import RSAAlgorithm

    from bearerguard.testing import generate_key

    assert (
        await client.get(
            "/items", headers=test_issuer.auth_header(scope="read:items", audience=AUD)
        )
    ).status_code == 200
    replacement = generate_key("RS256")
    jwk = RSAAlgorithm.to_jwk(replacement.public_key(), as_dict=True)
    test_issuer.serve_jwks({"keys": [{**jwk, "kid": test_issuer.signing_kid, "alg": "RS256"}]})
    token = test_issuer.mint(
        scope="read:items", audience=AUD, key=replacement, kid=test_issuer.signing_kid
    )
    assert (await client.get("/items", headers=bearer(token))).status_code == 200


async def test_opaque_token_is_introspected_with_the_middleware_keywords(
    app_factory: Callable[..., FastAPI], test_issuer: TestIssuer
) -> None:
    client_id, client_secret = test_issuer.introspection_client
    app = app_factory(
        client_id=client_id,
        client_secret=client_secret,
        introspection_auth="client_secret_post",
        introspection_cache_ttl=0,
    )
    opaque = test_issuer.mint_opaque(scope="read:items", audience=AUD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/items", headers=bearer(opaque))).status_code == 200
        test_issuer.revoke(opaque)
        assert (await c.get("/items", headers=bearer(opaque))).status_code == 401


async def test_route_errors_keep_their_answer_when_the_middleware_wraps_fastapi(
    test_issuer: TestIssuer,
) -> None:
    inner = FastAPI()

    @inner.get("/admin")
    async def admin(token: AccessToken = Depends(require_scopes("admin"))) -> dict[str, str]:
        return {}

    app = BearerAuthMiddleware(inner, issuer=test_issuer.issuer, audience=AUD, allow_anonymous=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        forbidden = await c.get("/admin", headers=test_issuer.auth_header(scope="x", audience=AUD))
        anonymous = await c.get("/admin")
    assert forbidden.status_code == 403 and 'scope="admin"' in challenge(forbidden)
    assert anonymous.status_code == 401
    assert challenge(anonymous) == f'Bearer realm="api", DPoP realm="api", {DPOP_ALGS}'


async def test_query_token_success_is_cache_control_private(
    app_factory: Callable[..., FastAPI], test_issuer: TestIssuer
) -> None:
    app = app_factory(token_in_query=True)
    token = test_issuer.mint(scope="read:items", audience=AUD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        in_url = await c.get("/items", params={"access_token": token})
        in_header = await c.get("/items", headers=bearer(token))
    assert in_url.status_code == 200 and in_url.headers["cache-control"] == "private"
    assert "cache-control" not in in_header.headers


async def test_percent_encoded_query_name_counts_as_a_second_location(
    app_factory: Callable[..., FastAPI], test_issuer: TestIssuer
) -> None:
    app = app_factory(token_in_query=True)
    token = test_issuer.mint(scope="read:items", audience=AUD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get(f"/items?access%5Ftoken={token}", headers=bearer(token))
    assert response.status_code == 400


async def test_refusal_log_escapes_path_control_chars(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard")
    await client.get("/items%0Abearerguard.validation outcome=accepted")
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert any("\\n" in r.getMessage() for r in caplog.records)


async def test_websocket_denial_tolerates_extensions_none(test_issuer: TestIssuer) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "extensions": None}
    await _echo_app(test_issuer)(scope, receive, send)
    assert sent[-1]["type"] == "websocket.close" and sent[-1]["code"] == 1008
