"""Fail closed at every edge (issue #10): one test per rule, through the public API.

Each test drives a real application through :class:`BearerAuthMiddleware` against a
real issuer on 127.0.0.1 (:class:`~bearerguard.testing.TestIssuer`) and, where the
rule is about sharing, a real ``redis-server``. Each asserts the answer a client
gets (status, RFC 6750 challenge and body), not only that something was refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from fastapi import Depends, FastAPI
from jwt.algorithms import ECAlgorithm
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from bearerguard import (
    AccessToken,
    AuthError,
    BearerAuthMiddleware,
    FetchPolicy,
    Issuer,
    Observer,
    current_token,
    optional_token,
    rate_limit,
    rate_limited,
    require_scopes,
    scopes_required,
    token_of,
)
from bearerguard._demo import create_demo_app
from bearerguard._keys import VerificationKey
from bearerguard.testing import RecordedRequest, Response, TestIssuer, generate_key, tamper
from redis_server import RedisServer

pytestmark = pytest.mark.anyio

AUD = "https://api.example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def whoami(request: Request) -> JSONResponse:
    token = token_of(request)
    return JSONResponse({"sub": token.subject if token else None})


def starlette_app(test_issuer: TestIssuer, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/me", whoami)])
    settings: dict[str, Any] = {
        "issuer": test_issuer.issuer,
        "audience": AUD,
        "fetch": FetchPolicy(timeout=2.0, cooldown=0.2),
    }
    settings.update(options)
    app.add_middleware(BearerAuthMiddleware, **settings)
    return app


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    encoded = [b64(json.dumps(part).encode()) for part in (header, claims)]
    return ".".join([*encoded, b64(signature)])


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free 127.0.0.1 port; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def answer(response: httpx.Response) -> tuple[int, str, bytes]:
    return response.status_code, response.headers["www-authenticate"], response.content


def bearer_challenge(response: httpx.Response) -> str:
    """The Bearer challenge alone (a DPoP challenge may follow it)."""
    return response.headers["www-authenticate"].split(", DPoP ")[0]


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="api", error="invalid_token"'
    )
    assert response.json()["error"] == "invalid_token"


# -- rule 1: a shared cache never crosses APIs --------------------------------------------


async def test_rule1_a_shared_cache_never_crosses_apis(
    test_issuer: TestIssuer, server: RedisServer
) -> None:
    """Two APIs on one Redis: each gets the verdict the authorization server gave *it*.

    The authorization server says ``active`` (without ``aud``) only to API A, which
    the token was issued for, and ``active: false`` to API B.
    """
    tokens = {secrets.token_urlsafe(24) for _ in range(2)}
    asked: list[str] = []

    def introspect(request: RecordedRequest) -> Response:
        credentials = request.headers["authorization"].partition(" ")[2]
        client = base64.b64decode(credentials).decode().partition(":")[0]
        token = dict(pair.split("=", 1) for pair in request.body.decode().split("&"))["token"]
        asked.append(client)
        if client == "api-a" and token in tokens:
            return Response(200, {"active": True, "sub": "ann", "scope": "read"})
        return Response(200, {"active": False})

    test_issuer.add_handler("POST", test_issuer.introspection_path, introspect)

    def api(name: str, **options: Any) -> httpx.AsyncClient:
        app = starlette_app(
            test_issuer,
            audience=f"https://{name}.example.com",
            introspection_endpoint=test_issuer.introspection_endpoint,
            client_id=name,
            client_secret="secret",
            cache_url=server.url,
            **options,
        )
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    first, second = sorted(tokens)
    async with (
        api("api-a") as a,
        api("api-a") as a_replica,
        api("api-a", introspection_cache_ttl=0) as a_uncached,
        api("api-a", introspection_cache_ttl=0.5) as a_brief,
        api("api-b") as b,
    ):
        # A's "active" (stored in Redis) never opens B...
        assert (await a.get("/me", headers=bearer(first))).json() == {"sub": "ann"}
        assert_invalid_token(await b.get("/me", headers=bearer(first)))
        assert asked == ["api-a", "api-b"]  # B asked for itself
        # ...and B's "active: false" (stored in Redis) never makes A refuse.
        assert_invalid_token(await b.get("/me", headers=bearer(second)))
        assert (await a.get("/me", headers=bearer(second))).is_success
        assert asked[2:] == ["api-b", "api-a"]
        # A replica of A does share A's verdict: no call.
        assert (await a_replica.get("/me", headers=bearer(first))).is_success
        assert len(asked) == 4
        # introspection_cache_ttl=0: asks the authorization server every time.
        for _ in range(2):
            assert (await a_uncached.get("/me", headers=bearer(first))).is_success
        assert len(asked) == 6
        # A replica never serves a shared entry longer than its own TTL allows.
        await asyncio.sleep(0.6)
        assert (await a_brief.get("/me", headers=bearer(first))).is_success
        assert len(asked) == 7


# -- rule 2: bound tokens are never accepted as plain bearer tokens --------------------


async def test_rule2_bound_tokens_are_never_accepted_as_plain_bearer_tokens(
    test_issuer: TestIssuer,
) -> None:
    client_id, client_secret = test_issuer.introspection_client
    app = starlette_app(
        test_issuer,
        introspection_endpoint=test_issuer.introspection_endpoint,
        client_id=client_id,
        client_secret=client_secret,
    )
    thumbprint = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    bound = [
        test_issuer.mint({"cnf": {"jkt": thumbprint}}, audience=AUD),  # DPoP (RFC 9449)
        test_issuer.mint({"cnf": {"x5t#S256": thumbprint}}, audience=AUD),  # mTLS (RFC 8705)
        test_issuer.mint({"cnf": {"kid": "a-key-we-cannot-check"}}, audience=AUD),  # unknown
        test_issuer.mint({"cnf": {}}, audience=AUD),  # binds to nothing provable
        test_issuer.mint({"cnf": "not-an-object"}, audience=AUD),
        test_issuer.mint_opaque({"cnf": {"x5t#S256": thumbprint}}, audience=AUD),  # RFC 7662
    ]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        for token in bound:
            for _ in range(2):  # the second answer comes from the cache: still refused
                assert_invalid_token(await c.get("/me", headers=bearer(token)))
        plain = await c.get("/me", headers=test_issuer.auth_header(audience=AUD))
        assert plain.status_code == 200


# -- rule 3: nothing a client sends causes a 5xx -----------------------------------------


async def test_rule3_nothing_a_client_sends_causes_a_5xx(test_issuer: TestIssuer) -> None:
    cooldown = 1.0
    app = starlette_app(test_issuer, fetch=FetchPolicy(timeout=2.0, cooldown=cooldown))
    jwks = test_issuer.jwks_path
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        assert (await c.get("/me", headers=test_issuer.auth_header(audience=AUD))).is_success
        bad_signature = answer(
            await c.get("/me", headers=bearer(tamper(test_issuer.mint(audience=AUD))))
        )
        assert bad_signature[0] == 401  # and that spent the cooldown on a re-check
        forged = test_issuer.mint(audience=AUD, kid="never-published", key=generate_key("RS256"))
        assert answer(await c.get("/me", headers=bearer(forged))) == bad_signature
        # A genuine rotation inside the cooldown: unknown, unchecked, the same 401...
        test_issuer.rotate()
        rotated = test_issuer.mint(audience=AUD)
        assert answer(await c.get("/me", headers=bearer(rotated))) == bad_signature
        fetches = test_issuer.requests[jwks]
        # ...and one refresh when the cooldown ends, with no request needed to start it.
        await asyncio.sleep(cooldown + 0.5)
        assert test_issuer.requests[jwks] == fetches + 1
        assert (await c.get("/me", headers=bearer(rotated))).is_success
        assert test_issuer.requests[jwks] == fetches + 1


async def test_rule3_a_token_without_kid_is_tried_against_a_bounded_number_of_keys(
    test_issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [
        {**ECAlgorithm.to_jwk(generate_key("ES256").public_key(), as_dict=True), "kid": f"k{i}"}
        for i in range(50)
    ]
    test_issuer.serve_jwks({"keys": keys})
    tried = 0
    verify = VerificationKey.verify

    def counting(self: VerificationKey, signing_input: bytes, signature: bytes) -> bool:
        nonlocal tried
        tried += 1
        return verify(self, signing_input, signature)

    monkeypatch.setattr(VerificationKey, "verify", counting)
    claims = test_issuer.claims(audience=AUD)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=starlette_app(test_issuer)), base_url="http://t"
    ) as c:
        for _ in range(3):
            token = forge({"alg": "ES256", "typ": "at+jwt"}, claims, secrets.token_bytes(64))
            assert_invalid_token(await c.get("/me", headers=bearer(token)))
    assert 0 < tried <= 3 * 4  # at most 4 keys per forged token, of the 50 published


async def test_rule3_a_forged_token_flood_on_the_demo_app_gets_no_5xx(
    test_issuer: TestIssuer,
) -> None:
    """1,000 forged tokens (random kids, no kid, bad signatures) within one cooldown (30 s)."""
    good = test_issuer.mint(audience=AUD, scope="read:items")
    claims = test_issuer.claims(audience=AUD, scope="read:items")
    forger = generate_key("RS256")
    forged = []
    for i in range(1000):
        kind = i % 3
        if kind == 0:  # a random kid, properly signed by a key the issuer never had
            forged.append(test_issuer.mint(claims, kid=secrets.token_hex(8), key=forger))
        elif kind == 1:  # no kid, random signature bytes
            forged.append(forge({"alg": "RS256", "typ": "at+jwt"}, claims, os.urandom(256)))
        else:  # the issuer's own kid, a signature that does not verify
            forged.append(tamper(test_issuer.mint(claims, audience=AUD)))
    statuses: dict[int, int] = {}
    async with (
        serve(create_demo_app(test_issuer.issuer)) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as c,
    ):
        assert (await c.get("/items", headers=bearer(good))).is_success
        fetches = test_issuer.requests[test_issuer.jwks_path]
        began = asyncio.get_running_loop().time()
        gate = asyncio.Semaphore(20)

        async def attack(token: str) -> None:
            async with gate:
                status = (await c.get("/items", headers=bearer(token))).status_code
            statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(attack(t) for t in forged))
        seconds = asyncio.get_running_loop().time() - began
        assert (await c.get("/items", headers=bearer(good))).is_success
    fivexx = sum(n for status, n in statuses.items() if status >= 500)
    extra = test_issuer.requests[test_issuer.jwks_path] - fetches
    print(
        f"\n[rule 3] 1,000 forged tokens in {seconds:.1f} s against the demo app: "
        f"{fivexx} 5xx, statuses {statuses}, {extra} JWKS fetch(es)"
    )
    assert fivexx == 0 and statuses == {401: 1000}
    # One forced refresh per cooldown (30 s), and the one it schedules: the flood is
    # meant to fit in one cooldown, but a slow machine must not turn that into a flake.
    assert extra <= 2 * (1 + int(seconds // 30))


# -- rule 4: WebSockets are refused, never crashed ------------------------------------------


async def talk(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text("hi")
    await ws.close()


def fastapi_websockets() -> FastAPI:
    app = FastAPI()

    @app.websocket("/scoped")
    async def scoped(ws: WebSocket, token: AccessToken = Depends(require_scopes("admin"))) -> None:
        await talk(ws)

    @app.websocket("/limited", dependencies=[Depends(rate_limit("1/minute"))])
    async def limited(ws: WebSocket) -> None:
        await talk(ws)

    @app.websocket("/me")
    async def me(ws: WebSocket, token: AccessToken = Depends(current_token)) -> None:
        await talk(ws)

    return app


def starlette_websockets() -> Starlette:
    @scopes_required("admin")
    async def scoped(websocket: WebSocket) -> None:
        await talk(websocket)

    @rate_limited("1/minute")
    async def limited(websocket: WebSocket) -> None:
        await talk(websocket)

    @scopes_required()
    async def me(websocket: WebSocket) -> None:  # no scope: "a token, please"
        await talk(websocket)

    routes = [("/scoped", scoped), ("/limited", limited), ("/me", me)]
    return Starlette(routes=[WebSocketRoute(path, endpoint) for path, endpoint in routes])


def websocket_apps(test_issuer: TestIssuer) -> list[Any]:
    """The same three refusing WebSocket routes, FastAPI and Starlette, mounted both ways."""
    options = {"issuer": test_issuer.issuer, "audience": AUD, "allow_anonymous": True}
    apps: list[Any] = []
    for make in (fastapi_websockets, starlette_websockets):
        inside = make()
        inside.add_middleware(BearerAuthMiddleware, **options)
        # Wrapped from outside, route errors meet Starlette's exception handling first.
        apps += [inside, BearerAuthMiddleware(make(), **options)]
    return apps


def test_rule4_websockets_are_refused_never_crashed(test_issuer: TestIssuer) -> None:
    reader = bearer(test_issuer.mint(audience=AUD, scope="read"))
    admin = bearer(test_issuer.mint(audience=AUD, scope="admin"))
    for app in websocket_apps(test_issuer):
        with TestClient(app, raise_server_exceptions=True) as tc:
            refusals = [
                ("/scoped", reader, 403, 'error="insufficient_scope"'),
                ("/me", {}, 401, 'Bearer realm="api"'),
            ]
            for path, headers, status, challenge in refusals:
                with (
                    pytest.raises(WebSocketDenialResponse) as denied,
                    tc.websocket_connect(path, headers=headers),
                ):
                    pass
                assert denied.value.status_code == status, (app, path)
                assert challenge in denied.value.headers["www-authenticate"]
            with tc.websocket_connect("/scoped", headers=admin) as ws:
                assert ws.receive_text() == "hi"
            with tc.websocket_connect("/limited", headers=reader) as ws:
                assert ws.receive_text() == "hi"
            with (
                pytest.raises(WebSocketDenialResponse) as denied,
                tc.websocket_connect("/limited", headers=reader),
            ):
                pass
            assert denied.value.status_code == 429 and "retry-after" in denied.value.headers

    # A server without the denial-response extension: close 1008 before accept, no crash.
    for app in websocket_apps(test_issuer):
        opened = asyncio.run(connect_without_denial_extension(app, "/limited", reader))
        assert opened[0]["type"] == "websocket.accept"  # and it spent the budget
        for path, headers, reason in (
            ("/scoped", reader, "forbidden"),
            ("/me", {}, "unauthorized"),
            ("/limited", reader, "rate_limited"),
        ):
            sent = asyncio.run(connect_without_denial_extension(app, path, headers))
            assert sent == [{"type": "websocket.close", "code": 1008, "reason": reason}], path


async def connect_without_denial_extension(
    app: Any, path: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected until told otherwise
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 50000),
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "subprotocols": [],
    }
    async with asyncio.timeout(5):  # a handshake left hanging fails here
        await app(scope, receive, send)
    return sent


# -- rule 5: one refusal path -----------------------------------------------------------------


class Refusals(Observer):
    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str] = []

    def refusal(self, error: AuthError) -> None:
        self.reasons.append(error.reason)


def test_rule5_one_refusal_path(test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture) -> None:
    """Route refusals (dependency, decorator; HTTP and WebSocket) are logged once, escaped,
    and counted once, by the middleware, however it is mounted."""
    caplog.set_level(logging.INFO, logger="bearerguard")

    def starlette() -> Starlette:
        @rate_limited("1/minute")
        async def limited(request: Request) -> JSONResponse:
            return JSONResponse({})

        @scopes_required("admin")
        async def admin(request: Request) -> JSONResponse:
            return JSONResponse({})

        return Starlette(
            routes=[
                Route("/limited/{rest}", limited),
                Route("/admin/{rest}", admin),
                *starlette_websockets().routes,
            ]
        )

    reader = test_issuer.mint(audience=AUD, scope="read")
    for mounted_inside in (True, False):
        observer = Refusals()
        options = {"issuer": test_issuer.issuer, "audience": AUD, "observer": observer}
        if mounted_inside:
            app: Any = starlette()
            app.add_middleware(BearerAuthMiddleware, **options)
        else:
            app = BearerAuthMiddleware(starlette(), **options)
        caplog.clear()
        with TestClient(app) as tc:
            assert tc.get("/limited/a%0Ab", headers=bearer(reader)).status_code == 200
            assert tc.get("/limited/a%0Ab", headers=bearer(reader)).status_code == 429
            assert tc.get("/admin/x%1b[31m", headers=bearer(reader)).status_code == 403
            with (
                pytest.raises(WebSocketDenialResponse) as denied,
                tc.websocket_connect("/scoped", headers=bearer(reader)),
            ):
                pass
            assert denied.value.status_code == 403
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("bearerguard")]
        refusals = [line for line in lines if "status=2" not in line and "outcome=" in line]
        exceeded = [line for line in lines if "bearerguard.ratelimit.exceeded" in line]
        assert len(exceeded) == 1 and exceeded[0].endswith("path=/limited/a\\nb"), exceeded
        assert all("\n" not in line and "\x1b" not in line for line in lines)
        assert [line.rsplit("path=", 1)[1] for line in refusals] == ["/admin/x\\x1b[31m", "/scoped"]
        assert observer.reasons == ["rate_limited", "insufficient_scope", "insufficient_scope"]


# -- rule 6: excluded paths are predictable -----------------------------------------------


def test_rule6_excluded_paths_are_predictable(test_issuer: TestIssuer) -> None:
    def api() -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/{path:path}")
        async def anything(
            path: str, token: AccessToken | None = Depends(optional_token)
        ) -> dict[str, Any]:
            return {"path": path, "sub": token.subject if token else None}

        return app

    def health_needing_a_token() -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health(token: AccessToken = Depends(current_token)) -> dict[str, str]:
            return {"sub": str(token.subject)}

        return app

    options = {
        "issuer": test_issuer.issuer,
        "audience": AUD,
        "exclude_paths": ["/health", "/status/", "/docs/*", "/static*"],
    }
    top = api()
    top.add_middleware(BearerAuthMiddleware, **options)
    inner = api()
    inner.add_middleware(BearerAuthMiddleware, **options)
    mounted = Starlette(routes=[Mount("/v1", app=inner)])
    public = ["/health", "/health/", "/status", "/status/", "/docs", "/docs/", "/docs/a/b"]
    public += ["/static", "/static/app.js"]
    protected = ["/docsadmin", "/staticfiles", "/healthz", "/health/x", "/", "/v1/health"]
    for app, prefix, root_path in ((top, "", ""), (top, "/api", "/api"), (mounted, "/v1", "")):
        with TestClient(app, root_path=root_path) as tc:
            for path in public:
                assert tc.get(prefix + path).status_code == 200, (prefix, path)
            for path in protected if prefix != "/v1" else [p for p in protected if p != "/"]:
                refused = tc.get(prefix + path)
                assert refused.status_code == 401, (prefix, path)
                assert bearer_challenge(refused) == 'Bearer realm="api"'

    # A route on an excluded path that asks for the token: the RFC 6750 401, never a 500,
    # also in an application mounted inside the one the middleware guards.
    guarded = health_needing_a_token()
    guarded.add_middleware(BearerAuthMiddleware, **options)
    outer = FastAPI()
    outer.mount("/v1", health_needing_a_token())
    outer.add_middleware(BearerAuthMiddleware, **{**options, "exclude_paths": ["/v1/health"]})
    for app, prefix in (
        (guarded, ""),
        (BearerAuthMiddleware(health_needing_a_token(), **options), ""),
        (outer, "/v1"),
    ):
        with TestClient(app, raise_server_exceptions=False) as tc:
            refused = tc.get(prefix + "/health", headers=bearer(test_issuer.mint(audience=AUD)))
            assert refused.status_code == 401, prefix
            assert bearer_challenge(refused) == 'Bearer realm="api"'

    # Starlette's common @requires("authenticated") works for every validated token.
    @requires("authenticated")
    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.user.display_name})

    starlette = Starlette(routes=[Route("/me", me), Route("/health", me)])
    starlette.add_middleware(BearerAuthMiddleware, **options)
    with TestClient(starlette) as tc:
        scopeless = bearer(test_issuer.mint({"sub": "ann"}, audience=AUD, drop=("scope",)))
        assert tc.get("/me", headers=scopeless).json() == {"sub": "ann"}
        assert tc.get("/health").status_code == 403  # excluded: not authenticated, no crash


# -- rule 7: strict headers and claims ----------------------------------------------------


def signed(header: dict[str, Any], claims: dict[str, Any], issuer: TestIssuer) -> str:
    """A token the issuer's own key really signed, whatever its header says."""
    encoded = [b64(json.dumps(part).encode()) for part in (header, claims)]
    signing_input = ".".join(encoded).encode()
    signature = issuer.signing_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(signature)}"


def test_rule7_strict_headers_and_claims(test_issuer: TestIssuer) -> None:
    claims = test_issuer.claims(audience=AUD, scope="read")
    header = {"alg": "RS256", "typ": "at+jwt", "kid": test_issuer.signing_kid}
    # 16384-bit RSA material (a random odd modulus): skipped, the rest of the set still works.
    huge = secrets.randbits(16384) | (1 << 16383) | 1
    big_key = {"kty": "RSA", "kid": "huge", "e": "AQAB", "n": b64(huge.to_bytes(2048, "big"))}
    test_issuer.serve_jwks({"keys": [big_key, *test_issuer.jwks()["keys"]]})
    app = starlette_app(test_issuer)
    strict = starlette_app(test_issuer, rfc9068=True)
    with TestClient(app) as tc, TestClient(strict) as strict_tc:
        assert tc.get("/me", headers=bearer(signed(header, claims, test_issuer))).is_success
        refused = [
            signed({**header, "kid": None}, claims, test_issuer),  # null is no string
            signed({**header, "kid": 7}, claims, test_issuer),
            signed({**header, "kid": [test_issuer.signing_kid]}, claims, test_issuer),
            signed({**header, "b64": True}, claims, test_issuer),  # RFC 7797 §7
            signed({**header, "b64": False}, claims, test_issuer),
            signed({**header, "kid": "huge"}, claims, test_issuer),
        ]
        for token in refused:
            assert_invalid_token(tc.get("/me", headers=bearer(token)))
        as_list = signed(header, {**claims, "scope": ["read"]}, test_issuer)
        assert tc.get("/me", headers=bearer(as_list)).is_success  # the lenient default
        assert_invalid_token(strict_tc.get("/me", headers=bearer(as_list)))
        as_string = signed(header, claims, test_issuer)
        assert strict_tc.get("/me", headers=bearer(as_string)).is_success


# -- rule 8: introspection under a flood ----------------------------------------------------


async def test_rule8_introspection_under_a_flood(test_issuer: TestIssuer) -> None:
    """One client's junk opaque tokens cannot starve everyone else's introspection."""
    client_id, client_secret = test_issuer.introspection_client
    proxy = "10.0.0.1"  # every request comes through one load balancer

    def api(**options: Any) -> Starlette:
        return starlette_app(
            test_issuer,
            introspection_endpoint=test_issuer.introspection_endpoint,
            client_id=client_id,
            client_secret=client_secret,
            introspection_concurrency=8,  # and at most 4 waiting per client
            trusted_proxies=[proxy],
            **options,
        )

    async def flood(app: Starlette, junk: list[str]) -> tuple[dict[int, int], list[int], int]:
        """100 junk tokens from one client, 3 good ones from another, all at once."""
        good = [test_issuer.mint_opaque({"sub": f"user-{i}"}, audience=AUD) for i in range(3)]
        transport = httpx.ASGITransport(app=app, client=(proxy, 4000))
        before = test_issuer.requests[test_issuer.introspection_path]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:

            async def ask(token: str, address: str) -> int:
                headers = {**bearer(token), "X-Forwarded-For": address}
                return (await c.get("/me", headers=headers)).status_code

            flooder = [asyncio.ensure_future(ask(t, "203.0.113.66")) for t in junk]
            await asyncio.sleep(0.05)  # the flood is in full swing
            others = await asyncio.gather(*(ask(t, "198.51.100.7") for t in good))
            statuses: dict[int, int] = {}
            for status in await asyncio.gather(*flooder):
                statuses[status] = statuses.get(status, 0) + 1
        calls = test_issuer.requests[test_issuer.introspection_path] - before
        return statuses, others, calls

    junk = [secrets.token_urlsafe(24) for _ in range(100)]
    test_issuer.delay(0.2)  # a slow authorization server
    try:
        statuses, others, calls = await flood(api(), junk)
        shaped, shaped_others, shaped_calls = await flood(
            api(opaque_token_pattern=r"at_[A-Za-z0-9]{40}"), junk
        )
    finally:
        test_issuer.delay(0)
    print(
        f"\n[rule 8] 100 junk opaque tokens from one client + 3 good ones from another: "
        f"flooder {statuses}, others {others}, {calls} introspection calls; "
        f"with opaque_token_pattern: {shaped_calls} calls"
    )
    assert others == [200, 200, 200]  # everyone else is served, not starved
    assert not any(status >= 500 for status in statuses)  # the flood is the client's doing
    assert set(statuses) <= {401, 429} and statuses.get(429, 0) >= 100 - (8 + 4)
    assert calls <= 8 + 4 + 3  # the flooder's slots and its share of the line, and ours
    # opaque_token_pattern: junk the server could never have issued costs no call at all.
    assert shaped == {401: 100} and shaped_calls == 0
    assert shaped_others == [401, 401, 401]  # (the good ones do not match the pattern either)


# -- rule 9: several issuers, one route -----------------------------------------------------


def test_rule9_several_issuers_one_route(test_issuer: TestIssuer) -> None:
    with TestIssuer() as other:
        partners = other.issuer
        trusted = [Issuer(issuer=i.issuer, audience=AUD) for i in (test_issuer, other)]

        api = FastAPI()

        @api.get(
            "/ours", dependencies=[Depends(require_scopes("read", issuers=[test_issuer.issuer]))]
        )
        async def ours() -> dict[str, str]:
            return {}

        @api.get("/anyone", dependencies=[Depends(require_scopes("read"))])
        async def anyone() -> dict[str, str]:
            return {}

        @scopes_required("read", issuers=[partners])
        async def theirs(request: Request) -> JSONResponse:
            return JSONResponse({})

        api.add_route("/theirs", theirs)
        api.add_middleware(BearerAuthMiddleware, issuers=trusted)
        ours_token = bearer(test_issuer.mint(audience=AUD, scope="read"))
        their_token = bearer(other.mint(audience=AUD, scope="read"))
        with TestClient(api) as tc:
            assert tc.get("/ours", headers=ours_token).status_code == 200
            assert tc.get("/theirs", headers=their_token).status_code == 200
            for path, token in (("/ours", their_token), ("/theirs", ours_token)):
                refused = tc.get(path, headers=token)
                assert refused.status_code == 403, path
                assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
                assert refused.json()["error"] == "insufficient_scope"
            # Without issuers=, the same scope name from either issuer opens the route.
            assert tc.get("/anyone", headers=their_token).status_code == 200
        with pytest.raises(TypeError):
            require_scopes("read", issuers=test_issuer.issuer)  # one string is a mistake


# -- rule 10: nothing leaks, nothing is mutable -----------------------------------------------


async def test_rule10_nothing_leaks_nothing_is_mutable(test_issuer: TestIssuer) -> None:
    # Reprs hide secrets (and the password of a Redis URL).
    issuer = Issuer(
        issuer=test_issuer.issuer,
        audience=AUD,
        client_id="api",
        client_secret="introspection-s3cret",
        cache_url="redis://:redis-pa55word@127.0.0.1:6379/0",
        shared_secret="hmac-secret-" + "x" * 32,
        algorithms=["RS256", "HS256"],
        fetch=FetchPolicy(timeout=1.0),
    )
    shown = repr(issuer) + repr(issuer.fetch) + str(issuer)
    for secret in ("introspection-s3cret", "redis-pa55word", "hmac-secret-"):
        assert secret not in shown
    assert "client_id='api'" in shown and "127.0.0.1:6379" in shown

    # AccessToken.claims is immutable all the way down, as the cache serves it again.
    mutations: list[str] = []

    async def mutate(request: Request) -> JSONResponse:
        token = token_of(request)
        assert token is not None
        claims: Any = token.claims
        attempts = [
            lambda: claims.__setitem__("sub", "mallory"),
            lambda: claims["realm_access"].__setitem__("roles", ["admin"]),
            lambda: claims["realm_access"]["roles"].append("admin"),
            lambda: claims["groups"].append("admin"),
            lambda: claims["groups"][0].__setitem__("name", "admins"),
        ]
        for attempt in attempts:
            try:
                attempt()
                mutations.append("changed")
            except (TypeError, AttributeError):
                pass
        return JSONResponse({"roles": list(claims["realm_access"]["roles"])})

    nested = {"realm_access": {"roles": ["reader"]}, "groups": [{"name": "staff"}]}
    app = Starlette(routes=[Route("/me", mutate)])
    app.add_middleware(BearerAuthMiddleware, issuer=test_issuer.issuer, audience=AUD)
    token = test_issuer.mint(nested, audience=AUD)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for _ in range(2):  # the second request is served the cached AccessToken
            assert (await c.get("/me", headers=bearer(token))).json() == {"roles": ["reader"]}
    assert mutations == []

    # current_token without the middleware names it, rather than a silent 401.
    bare = FastAPI()

    @bare.get("/me")
    async def me(token: AccessToken = Depends(current_token)) -> dict[str, str]:
        return {}

    with TestClient(bare) as tc, pytest.raises(RuntimeError, match="BearerAuthMiddleware"):
        tc.get("/me", headers=bearer(token))

    # token_in_form=True: a token in the header means the body is never read by us.
    reads_before_app: list[int] = []
    reads = 0

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        reads_before_app.append(reads)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = BearerAuthMiddleware(
        raw_app, issuer=test_issuer.issuer, audience=AUD, token_in_form=True
    )

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            nonlocal reads
            reads += 1
            return await receive()

        await guarded(scope, counted, send)

    transport = httpx.ASGITransport(app=counting)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        form = {"note": "x" * 1000}
        assert (await c.post("/up", data=form, headers=bearer(token))).status_code == 200
        reads = 0
        in_body = await c.post("/up", data={**form, "access_token": token})
        assert in_body.status_code == 200
    # The header token: nothing read before the app; the form token: the body was read.
    assert reads_before_app[0] == 0 and reads_before_app[1] >= 1
