"""Every Python snippet of the README and the docs runs, and does what its text says.

Each snippet is executed against a real TestIssuer (see ``snippets.py``). Most get a
check written for what their section promises, found by the heading above them;
any other snippet must at least run and, if it builds an app with the middleware,
refuse a request without a token the RFC 6750 way. A check whose snippet is gone
fails, so a renamed section cannot quietly stop being tested.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

import snippets
import test_providers as shapes
from bearerguard import BearerAuthMiddleware
from bearerguard._config import issuer_field_names
from bearerguard.testing import TestIssuer, make_certificate
from redis_server import RedisServer

pytest_plugins = ["pytester"]

Check = Callable[..., None]
#: The DPoP challenge offered beside Bearer by default (RFC 9449 §7.2).
DPOP_ALGS = 'algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA Ed25519"'
#: (document, heading) -> the check for the snippets under that heading.
CHECKS: dict[tuple[str, str], Check] = {}

ALL = [s for path in snippets.documents() for s in snippets.snippets(path)]


def check(document: str, heading: str) -> Callable[[Check], Check]:
    def register(function: Check) -> Check:
        CHECKS[(document, heading)] = function
        return function

    return register


def _checked(snippet: snippets.Snippet) -> Check | None:
    """The check for the section a snippet is in, by heading: a section moved between the
    README and a docs page keeps its check."""
    for (_, heading), function in CHECKS.items():
        if heading == snippet.heading:
            return function
    return None


def _refuses_without_a_token(app: Any, path: str = "/snippet-check") -> None:
    with TestClient(app) as client:
        response = client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")


def _has_middleware(app: Any) -> bool:
    return any(m.cls is BearerAuthMiddleware for m in getattr(app, "user_middleware", ()))


# -- the README and the pages it sends readers to -------------------------------------


@check("README.md", "Use it")
def check_use_it(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    app = snippets.run(snippet, issuer.issuer)["app"]
    with TestClient(app) as client:
        assert client.get("/items").status_code == 401
        ok = client.get("/items", headers=issuer.auth_header({"sub": "ann"}, scope="read:items"))
        assert ok.status_code == 200
        assert ok.json() == {"owner": "ann", "scopes": ["read:items"]}
        assert client.get("/items", headers=issuer.auth_header(scope="other")).status_code == 403


@check("docs/configuration.md", "Public paths and optional tokens")
def check_public_paths(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    app = snippets.run(snippet, issuer.issuer)["app"]
    with TestClient(app) as client:
        for public in ("/health", "/health/", "/docs", "/docs/oauth2-redirect"):
            assert client.get(public).status_code != 401, public
        assert client.get("/greeting").json() == {"hello": "stranger"}
        ann = issuer.auth_header({"sub": "ann"})
        assert client.get("/greeting", headers=ann).json() == {"hello": "ann"}
        assert client.get("/greeting", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
        refused = client.get("/me")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith(
            "Bearer"
        )
        assert client.get("/me", headers=ann).json() == {"sub": "ann"}


@check("docs/configuration.md", "Several issuers, one route")
def check_several_issuers(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    with TestIssuer() as partner:
        partner_url = {"https://partner-idp.example.net": partner.issuer}
        app = snippets.run(snippet, issuer.issuer, **partner_url)["app"]
        with TestClient(app) as client:
            ours = client.get("/items", headers=issuer.auth_header(scope="read:items"))
            assert ours.status_code == 200
            theirs = partner.auth_header(scope="read:items", audience="https://api.example.com")
            refused = client.get("/items", headers=theirs)
            assert refused.status_code == 403
            assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]


@check("README.md", "Browsers (CORS)")
def check_cors(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    app = snippets.run(snippet, issuer.issuer)["app"]
    origin = {"Origin": "https://app.example.com"}
    with TestClient(app) as client:
        # A preflight carries no token: CORS must answer it before the middleware sees it.
        preflight = client.options(
            "/items",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        # A refusal carries the CORS headers, so the page's script can read the 401.
        refused = client.get("/items", headers=origin)
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://app.example.com"
        ok = client.get("/items", headers={**origin, **issuer.auth_header(scope="read:items")})
        assert ok.status_code == 200


@check("docs/opaque-tokens.md", "Opaque tokens (RFC 7662 introspection)")
def check_introspection(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    issuer.introspection_client = ("my-api", snippets.INTROSPECTION_SECRET)
    app = snippets.run(snippet, issuer.issuer)["app"]

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.user.token.subject})

    app.add_route("/whoami", whoami)

    opaque = issuer.mint_opaque({"sub": "carol"})
    with TestClient(app) as client:
        ok = client.get("/whoami", headers={"Authorization": f"Bearer {opaque}"})
        assert ok.status_code == 200 and ok.json() == {"sub": "carol"}
        issuer.revoke(issuer_token := issuer.mint_opaque())
        refused = client.get("/whoami", headers={"Authorization": f"Bearer {issuer_token}"})
        assert refused.status_code == 401
    assert issuer.requests[issuer.introspection_path] == 2


@check("docs/rate-limits.md", "Rate limits per token")
def check_rate_limits(snippet: snippets.Snippet, issuer: TestIssuer, server: RedisServer) -> None:
    import redis

    app = snippets.run(snippet, issuer.issuer, **{"redis://127.0.0.1:6379": server.url})["app"]
    headers = issuer.auth_header()
    with TestClient(app) as client:
        # No route exists (404), but each request spends budget first: 10 a second.
        for _ in range(30):
            response = client.get("/anything", headers=headers)
            if response.status_code != 404:
                break
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-limit"] == "10"
    with redis.Redis.from_url(server.url) as storage:
        assert storage.dbsize() > 0  # the budget lives in Redis, as the snippet says


@check("README.md", "Test your own API")
def check_test_your_api(
    snippet: snippets.Snippet, issuer: TestIssuer, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile(app=snippets.USER_APP, test_user=snippet.code)
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


@check("docs/openapi-and-metrics.md", "OpenAPI, logs and metrics")
def check_metrics(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    namespace = snippets.run(snippet, issuer.issuer)
    app = namespace["app"]

    async def items(request: Request) -> JSONResponse:
        return JSONResponse([])

    app.add_route("/items", items)

    with TestClient(app) as client:
        assert client.get("/items").status_code == 401
        assert client.get("/items", headers=issuer.auth_header()).status_code == 200
        metrics = client.get("/metrics")  # mounted: redirected to /metrics/, still public
        assert metrics.status_code == 200, metrics.headers.get("www-authenticate")
        assert 'bearerguard_validations_total{outcome="accepted",reason="ok"} 1.0' in metrics.text
        assert client.get("/docs").status_code == 200
    # An app factory's second app gets its own registry: no duplicate-metric error.
    second = snippets.run(snippet, issuer.issuer)
    assert second["registry"] is not namespace["registry"]


@check("docs/bound-tokens.md", "Step-up authentication (RFC 9470)")
def check_step_up(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    namespace = snippets.run(snippet, issuer.issuer)
    app = namespace["app"]
    app.add_route("/close", namespace["close_account"], methods=["POST"])
    now = int(time.time())
    with TestClient(app) as client:
        weak = client.post("/transfers", headers=issuer.auth_header({"auth_time": now}))
        assert weak.status_code == 401
        challenge = weak.headers["www-authenticate"]
        assert 'error="insufficient_user_authentication"' in challenge
        assert 'acr_values="urn:example:mfa", max_age="300"' in challenge
        stale = {"acr": "urn:example:mfa", "auth_time": now - 600}
        assert client.post("/transfers", headers=issuer.auth_header(stale)).status_code == 401
        strong = {"acr": "urn:example:mfa", "auth_time": now, "sub": "ann"}
        ok = client.post("/transfers", headers=issuer.auth_header(strong))
        assert ok.status_code == 200 and ok.json() == {"by": "ann"}
        assert client.post("/close", headers=issuer.auth_header()).status_code == 401
        assert client.post("/close", headers=issuer.auth_header(strong)).status_code == 200


@check("docs/bound-tokens.md", "Protected resource metadata (RFC 9728)")
def check_resource_metadata(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    app = snippets.run(snippet, issuer.issuer)["app"]
    with TestClient(app, base_url="https://api.example.com") as client:
        refused = client.get("/items")
        assert refused.status_code == 401
        url = "https://api.example.com/.well-known/oauth-protected-resource"
        named = f'resource_metadata="{url}"'
        assert refused.headers["www-authenticate"] == (
            f'Bearer realm="api", {named}, DPoP realm="api", {DPOP_ALGS}, {named}'
        )
        document = client.get(url).json()
        assert document["resource"] == "https://api.example.com"
        assert document["authorization_servers"] == [issuer.issuer]
        assert document["scopes_supported"] == ["read:items"]
        assert document["bearer_methods_supported"] == ["header"]
        assert "ES256" in document["dpop_signing_alg_values_supported"]
        assert (
            client.get("/items", headers=issuer.auth_header(scope="read:items")).status_code == 200
        )


@check("docs/bound-tokens.md", "Certificate-bound tokens (mTLS, RFC 8705)")
def check_mtls(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    namespace = snippets.run(snippet, issuer.issuer)  # the test snippet asserts as it runs
    app = namespace["app"]
    if not _has_middleware(app):
        return  # the test snippet: it made and checked its own app

    async def items(request: Request) -> JSONResponse:
        return JSONResponse([])

    app.add_route("/items", items)
    alice = make_certificate("alice")
    token = issuer.mint_certificate_bound(alice)
    headers = {"Authorization": f"Bearer {token}", "Client-Cert": alice.header_value()}
    with TestClient(app, client=("10.1.2.3", 44300)) as client:
        assert client.get("/items", headers=headers).status_code == 200
    with TestClient(app, client=("192.0.2.1", 44300)) as client:  # not a trusted proxy
        assert client.get("/items", headers=headers).status_code == 401


@check("docs/bound-tokens.md", "Sender-constrained tokens: DPoP (RFC 9449)")
def check_dpop(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    # The snippet asserts its own promises (a bound token with its proof is accepted,
    # the same token as Bearer is refused); here: its app also refuses a thief's proof.
    from bearerguard.testing import DPoPKey

    namespace = snippets.run(snippet, issuer.issuer)
    owner = namespace["key"]
    with TestIssuer() as other_issuer:
        app = namespace["Starlette"](routes=namespace["app"].routes)
        app.add_middleware(
            BearerAuthMiddleware,
            issuer=other_issuer.issuer,
            audience=other_issuer.audience,
            public_url="https://api.example.com",
        )
        url = "https://api.example.com/me"
        token = other_issuer.mint(dpop_key=owner)
        with TestClient(app) as client:
            assert client.get("/me", headers=owner.headers(token, "GET", url)).status_code == 200
            thief = client.get("/me", headers=DPoPKey().headers(token, "GET", url))
        assert thief.status_code == 401
        assert 'DPoP realm="api", error="invalid_token"' in thief.headers["www-authenticate"]


# -- identity providers: each one line accepts that provider's token, refuses a look-alike --


def _plays_provider(
    snippet: snippets.Snippet,
    played: TestIssuer,
    token: dict[str, Any],
    look_alike: dict[str, Any],
    expect: dict[str, Any],
    *,
    typ: str | None = "JWT",
) -> None:
    app = snippets.run(snippet, "https://unused.example.com")["app"]
    (middleware,) = [m for m in app.user_middleware if m.cls is BearerAuthMiddleware]
    middleware.kwargs["http_client"] = httpx.AsyncClient(transport=played.transport())

    @app.get("/snippet-check")
    async def who(request: Request) -> dict[str, Any]:
        seen = request.user.token
        return {"sub": seen.subject, "client": seen.client_id, "scopes": sorted(seen.scopes)}

    def bearer(claims: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Bearer {shapes.token(played, claims, typ=typ)}"}

    with TestClient(app) as client:
        assert client.get("/snippet-check").status_code == 401
        ok = client.get("/snippet-check", headers=bearer(token))
        assert (ok.status_code, ok.json()) == (200, expect)
        assert client.get("/snippet-check", headers=bearer(look_alike)).status_code == 401


@check("docs/providers.md", "Auth0")
def check_auth0(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    with TestIssuer(issuer=f"https://{shapes.AUTH0}/") as auth0:
        expect = {
            "sub": "auth0|64f0c9a1b2",
            "client": "wE3kq0Zy7mY2spaClient",
            "scopes": ["openid", "profile", "read:orders", "write:orders"],
        }
        other_api = shapes.auth0_access(aud="https://billing.example.com")
        _plays_provider(snippet, auth0, shapes.auth0_access(), other_api, expect)


@check("docs/providers.md", "Microsoft Entra ID")
def check_entra(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    with TestIssuer(issuer=f"{shapes.LOGIN}/{shapes.TENANT}/v2.0") as entra:
        expect = {
            "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
            "client": shapes.CLIENT_ID,
            "scopes": ["Orders.Read", "access_as_user"],
        }
        _plays_provider(snippet, entra, shapes.entra_v2(), shapes.entra_v1(), expect)


@check("docs/providers.md", "Amazon Cognito")
def check_cognito(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    with TestIssuer(issuer=shapes.COGNITO) as cognito:
        expect = {
            "sub": "a1b2c3d4-5678-90ab-cdef-1234567890ab",
            "client": shapes.APP,
            "scopes": ["aws.cognito.signin.user.admin", "openid", "orders/read"],
        }
        id_token = shapes.cognito_access(token_use="id", aud=shapes.APP)
        _plays_provider(snippet, cognito, shapes.cognito_access(), id_token, expect, typ=None)


@check("docs/providers.md", "Keycloak")
def check_keycloak(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    with TestIssuer(issuer=shapes.KEYCLOAK) as keycloak:
        expect = {
            "sub": "f1e2d3c4-b5a6-4789-8a9b-0c1d2e3f4a5b",
            "client": "web-app",
            "scopes": sorted(
                ["openid", "email", "profile", "default-roles-acme", "offline_access",
                 "orders-admin", "orders:read"]
            ),
        }  # fmt: skip
        refresh = shapes.keycloak_access(typ="Refresh")
        _plays_provider(snippet, keycloak, shapes.keycloak_access(), refresh, expect)


@check("docs/providers.md", "Okta")
def check_okta(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    with TestIssuer(issuer=shapes.OKTA_AS) as okta:
        expect = {
            "sub": "ada@example.com",
            "client": "0oa1b2c3d4e5f6g7h8i9",
            "scopes": ["openid", "orders:read"],
        }
        org = shapes.okta_access(iss=f"https://{shapes.OKTA}")
        _plays_provider(snippet, okta, shapes.okta_access(), org, expect, typ=None)


@check("docs/providers.md", "Firebase")
def check_firebase(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    with TestIssuer(
        issuer=f"https://securetoken.google.com/{shapes.PROJECT}",
        jwks_uri=shapes.providers.FIREBASE_JWKS_URI,
    ) as firebase:
        expect = {"sub": "Xk893u23H9SI893", "client": None, "scopes": []}
        session = shapes.firebase_id_token(
            iss=f"https://session.firebase.google.com/{shapes.PROJECT}"
        )
        _plays_provider(snippet, firebase, shapes.firebase_id_token(), session, expect)


# -- docs/deployment.md ------------------------------------------------------------------


@check("docs/deployment.md", "Replicas configured in code")
def check_replicas(snippet: snippets.Snippet, issuer: TestIssuer, server: RedisServer) -> None:
    issuer.introspection_client = ("my-api", snippets.INTROSPECTION_SECRET)
    local = {"redis://127.0.0.1:6379": server.url.rstrip("/")}
    replicas = [snippets.run(snippet, issuer.issuer, **local)["app"] for _ in range(2)]
    opaque = issuer.mint_opaque({"sub": "gus"})
    headers = {"Authorization": f"Bearer {opaque}"}
    for app in replicas:
        with TestClient(app) as client:
            answer = client.get("/anything", headers=headers)
            assert answer.status_code == 404  # past the middleware: no such route
            assert answer.headers["ratelimit-limit"] == "100"
    # The second replica found the first one's introspection result in Redis.
    assert issuer.requests[issuer.introspection_path] == 1


@check("docs/deployment.md", "CORS: the order of the middleware")
def check_cors_order(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    app = snippets.run(snippet, issuer.issuer)["app"]
    origin = {"Origin": "https://app.example.com"}
    with TestClient(app) as client:
        preflight = client.options(
            "/items",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        refused = client.get("/items", headers=origin)
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://app.example.com"


@check("docs/deployment.md", "Mounted applications and `root_path`")
def check_mounts(snippet: snippets.Snippet, issuer: TestIssuer) -> None:
    app = snippets.run(snippet, issuer.issuer)["app"]
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/items").status_code == 401
        ok = client.get("/api/items", headers=issuer.auth_header())
        assert ok.status_code == 200 and ok.json() == ["apple", "pear"]


@check("docs/bound-tokens.md", "DPoP from a browser")
def check_dpop_browser(
    snippet: snippets.Snippet, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bearerguard.testing import DPoPKey

    monkeypatch.setenv("DPOP_NONCE_SECRET", "a-nonce-secret-shared-by-every-replica-0123")
    app = snippets.run(snippet, issuer.issuer)["app"]

    async def items(request: Request) -> JSONResponse:
        return JSONResponse([])

    app.add_route("/items", items)
    origin = {"Origin": "https://app.example.com"}
    url = "https://api.example.com/items"
    key = DPoPKey()
    token = issuer.mint(dpop_key=key)
    with TestClient(app) as client:
        preflight = client.options(
            "/items",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, dpop",
            },
        )
        assert preflight.status_code == 200
        first = client.get("/items", headers={**origin, **key.headers(token, "GET", url)})
        assert first.status_code == 401
        assert 'error="use_dpop_nonce"' in first.headers["www-authenticate"]
        exposed = first.headers["access-control-expose-headers"].lower()
        assert "dpop-nonce" in exposed and "www-authenticate" in exposed
        nonce = first.headers["dpop-nonce"]
        retry = client.get(
            "/items", headers={**origin, **key.headers(token, "GET", url, nonce=nonce)}
        )
        assert retry.status_code == 200, retry.text


# -- the tests ---------------------------------------------------------------------------


def test_the_readme_has_snippets_and_each_check_finds_one() -> None:
    found = {s.heading for s in ALL}
    assert "Use it" in found
    assert sorted({heading for _, heading in CHECKS} - found) == []


@pytest.mark.parametrize("snippet", ALL, ids=[s.name for s in ALL])
def test_snippet_runs(
    snippet: snippets.Snippet, test_issuer: TestIssuer, request: pytest.FixtureRequest
) -> None:
    checker = _checked(snippet)
    if checker is None:
        if snippet.is_test:
            pytester: pytest.Pytester = request.getfixturevalue("pytester")
            pytester.makepyfile(app=snippets.USER_APP, test_user=snippet.code)
            result = pytester.runpytest("-p", "no:randomly")
            outcomes = result.parseoutcomes()
            assert result.ret == 0 and outcomes.get("passed", 0) >= 1, outcomes
            return
        namespace = snippets.run(snippet, test_issuer.issuer)
        app = namespace.get("app")
        if app is not None and _has_middleware(app):
            _refuses_without_a_token(app)
        return
    wanted = inspect.signature(checker).parameters
    extra = {
        name: request.getfixturevalue(name) for name in wanted if name not in ("snippet", "issuer")
    }
    checker(snippet, test_issuer, **extra)


def test_options_table_names_only_keywords_the_middleware_takes() -> None:
    page = next(
        text
        for text in (path.read_text() for path in snippets.documents())
        if re.search(r"^#+ Options$", text, re.M)
    )
    table = re.split(r"^#+ Options$", page, maxsplit=1, flags=re.M)[1].split("\n\n", 2)[1]
    named = {
        keyword
        for row in table.splitlines()[2:]
        for keyword in re.findall(r"`(\w+)`", row.split(" | ")[0])
    }
    taken = set(inspect.signature(BearerAuthMiddleware.__init__).parameters)
    taken |= issuer_field_names()  # the issuer=... shorthand takes Issuer's fields
    assert len(named) > 10
    assert sorted(named - taken) == []
