"""The pytest plugin and the in-process transport, as a user of bearerguard would meet them.

The plugin tests run a small user test suite in a fresh pytest process (``pytester``),
so what is asserted is exactly what a user gets by enabling the plugin.
"""

from __future__ import annotations

import fastapi.testclient  # noqa: F401  (imported here so pytester's in-process runs share it)
import httpx
import pytest

import snippets
from bearerguard._config import Issuer
from bearerguard._errors import Unavailable
from bearerguard._validator import TokenValidator
from bearerguard.testing import TestIssuer

pytest_plugins = ["pytester", "bearerguard.pytest_plugin"]


@pytest.mark.anyio
async def test_transport_serves_discovery_and_keys_without_a_socket(
    bearer_issuer: TestIssuer,
) -> None:
    async with httpx.AsyncClient(transport=bearer_issuer.transport()) as client:
        validator = TokenValidator(
            [Issuer(bearer_issuer.issuer, bearer_issuer.audience)], client=client
        )
        token = await validator.validate(bearer_issuer.mint(scope="read:items"))
        await validator.aclose()
    assert token.scopes == {"read:items"}
    assert bearer_issuer.requests[bearer_issuer.discovery_path] == 1
    assert bearer_issuer.requests[bearer_issuer.jwks_path] == 1


@pytest.mark.anyio
async def test_transport_needs_no_listening_socket(bearer_issuer: TestIssuer) -> None:
    # Stop only the HTTP server: the issuer object (keys, switches) lives on.
    bearer_issuer._server.shutdown()
    bearer_issuer._server.server_close()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as plain:
            await plain.get(bearer_issuer.jwks_uri)
    async with httpx.AsyncClient(transport=bearer_issuer.transport()) as client:
        validator = TokenValidator(
            [Issuer(bearer_issuer.issuer, bearer_issuer.audience)], client=client
        )
        token = await validator.validate(bearer_issuer.mint(scope="read:items"))
        await validator.aclose()
    assert token.issuer == bearer_issuer.issuer


@pytest.mark.anyio
async def test_transport_sees_rotation(bearer_issuer: TestIssuer) -> None:
    async with httpx.AsyncClient(transport=bearer_issuer.transport()) as client:
        validator = TokenValidator(
            [Issuer(bearer_issuer.issuer, bearer_issuer.audience)], client=client
        )
        await validator.validate(bearer_issuer.mint())
        bearer_issuer.rotate()
        token = await validator.validate(bearer_issuer.mint())
        await validator.aclose()
    assert token.key_id == bearer_issuer.signing_kid
    assert bearer_issuer.requests[bearer_issuer.jwks_path] == 2


@pytest.mark.anyio
async def test_transport_outage_close_is_a_connect_error_and_a_503(
    bearer_issuer: TestIssuer,
) -> None:
    bearer_issuer.outage(mode="close")
    async with httpx.AsyncClient(transport=bearer_issuer.transport()) as client:
        validator = TokenValidator(
            [Issuer(bearer_issuer.issuer, bearer_issuer.audience)], client=client
        )
        with pytest.raises(Unavailable):
            await validator.validate(bearer_issuer.mint())
        await validator.aclose()


# -- the plugin, run as a user would run it ---------------------------------------------

USER_APP = """
from fastapi import Depends, FastAPI

from bearerguard import BearerAuthMiddleware, require_scopes


def create_app(issuer, audience, **options):
    app = FastAPI()
    app.add_middleware(BearerAuthMiddleware, issuer=issuer, audience=audience, **options)

    @app.get("/items", dependencies=[Depends(require_scopes("read:items"))])
    async def items():
        return ["apple", "pear"]

    return app
"""

#: The README's snippet: a user's test of their own protected route, under ten lines.
README_TEST = next(
    s.code
    for s in snippets.snippets(snippets.ROOT / "README.md")
    if s.heading == "Test your own API"
)


def _user_suite(pytester: pytest.Pytester, tests: str, *, conftest: bool = True) -> None:
    pytester.makepyfile(app=USER_APP, test_user=tests)
    if conftest:
        pytester.makeconftest('pytest_plugins = ["bearerguard.pytest_plugin"]\n')


def test_conftest_that_names_the_plugin_still_works(
    pytester: pytest.Pytester,
) -> None:
    assert len(README_TEST.strip().splitlines()) < 10
    _user_suite(pytester, README_TEST)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_plugin_is_registered_by_installing_bearerguard(pytester: pytest.Pytester) -> None:
    # No conftest line and no -p: the pytest11 entry point registers the fixtures.
    _user_suite(pytester, README_TEST, conftest=False)
    pytester.runpytest().assert_outcomes(passed=1)


def test_plugin_enabled_with_dash_p(pytester: pytest.Pytester) -> None:
    _user_suite(pytester, README_TEST, conftest=False)
    pytester.runpytest("-p", "bearerguard.pytest_plugin").assert_outcomes(passed=1)


def test_plugin_turned_off_with_dash_p_no(pytester: pytest.Pytester) -> None:
    _user_suite(pytester, README_TEST, conftest=False)
    result = pytester.runpytest("-p", "no:bearerguard.pytest_plugin")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'bearer_issuer' not found*"])


def test_marker_configures_the_issuer(pytester: pytest.Pytester) -> None:
    _user_suite(
        pytester,
        """
import pytest

@pytest.mark.bearer_issuer(algorithms=["ES256"], audience="https://orders.example.com")
def test_es256(bearer_issuer):
    assert bearer_issuer.signing_alg == "ES256"
    assert bearer_issuer.audience == "https://orders.example.com"

def test_default(bearer_issuer):
    assert bearer_issuer.signing_alg == "RS256"
""",
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=2)


def test_session_issuer_is_shared_and_function_issuer_is_fresh(pytester: pytest.Pytester) -> None:
    _user_suite(
        pytester,
        """
seen = []

def test_one(bearer_issuer_session, bearer_issuer):
    seen.append((bearer_issuer_session.issuer, bearer_issuer.issuer))

def test_two(bearer_issuer_session, bearer_issuer):
    assert bearer_issuer_session.issuer == seen[0][0]
    assert bearer_issuer.issuer != seen[0][1]
""",
    )
    pytester.runpytest().assert_outcomes(passed=2)


def test_factory_makes_several_issuers_for_a_multi_issuer_app(pytester: pytest.Pytester) -> None:
    _user_suite(
        pytester,
        """
from fastapi.testclient import TestClient
from app import create_app

from bearerguard import Issuer

def test_two_issuers(make_bearer_issuer):
    a, b = make_bearer_issuer(), make_bearer_issuer(algorithms=["EdDSA"])
    issuers = [Issuer(a.issuer, a.audience), Issuer(b.issuer, b.audience)]
    with TestClient(create_app(None, None, issuers=issuers)) as client:
        for issuer in (a, b):
            headers = issuer.auth_header(scope="read:items")
            assert client.get("/items", headers=headers).status_code == 200
""",
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_rotation_and_outage_switches_from_a_user_test(pytester: pytest.Pytester) -> None:
    _user_suite(
        pytester,
        """
from fastapi.testclient import TestClient
from app import create_app

from bearerguard import FetchPolicy

def test_rotation_is_seen(bearer_issuer):
    app = create_app(bearer_issuer.issuer, bearer_issuer.audience, fetch=FetchPolicy(cooldown=0))
    with TestClient(app) as client:
        old = bearer_issuer.auth_header(scope="read:items")
        assert client.get("/items", headers=old).status_code == 200
        bearer_issuer.rotate()
        bearer_issuer.drop_old_keys()
        headers = bearer_issuer.auth_header(scope="read:items")
        assert client.get("/items", headers=headers).status_code == 200

def test_outage_keeps_known_keys(bearer_issuer):
    with TestClient(create_app(bearer_issuer.issuer, bearer_issuer.audience)) as client:
        headers = bearer_issuer.auth_header(scope="read:items")
        assert client.get("/items", headers=headers).status_code == 200
        bearer_issuer.outage()
        assert client.get("/items", headers=headers).status_code == 200

def test_outage_before_first_fetch_is_503(bearer_issuer):
    bearer_issuer.outage()
    with TestClient(create_app(bearer_issuer.issuer, bearer_issuer.audience)) as client:
        response = client.get("/items", headers=bearer_issuer.auth_header(scope="read:items"))
        assert response.status_code == 503
        assert "retry-after" in response.headers
""",
    )
    pytester.runpytest().assert_outcomes(passed=3)


def test_in_process_client_drives_the_middleware_without_a_socket(
    pytester: pytest.Pytester,
) -> None:
    _user_suite(
        pytester,
        """
from fastapi.testclient import TestClient
from app import create_app

from bearerguard import Issuer, TokenValidator

def test_no_socket(bearer_issuer, bearer_http_client):
    issuer = Issuer(bearer_issuer.issuer, bearer_issuer.audience)
    validator = TokenValidator([issuer], client=bearer_http_client)
    app = create_app(None, None, validator=validator)
    with TestClient(app) as client:
        headers = bearer_issuer.auth_header(scope="read:items")
        assert client.get("/items", headers=headers).status_code == 200
        assert client.get("/items", headers=bearer_issuer.auth_header(scope="x")).status_code == 403
""",
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_one_clock_moves_the_issuer_and_the_middleware(pytester: pytest.Pytester) -> None:
    _user_suite(
        pytester,
        """
from fastapi.testclient import TestClient
from app import create_app

def test_expiry_without_sleeping(bearer_issuer, bearer_clock):
    assert bearer_issuer.clock is bearer_clock
    app = create_app(bearer_issuer.issuer, bearer_issuer.audience, clock=bearer_clock)
    with TestClient(app) as client:
        headers = bearer_issuer.auth_header(scope="read:items", expires_in=300)
        assert client.get("/items", headers=headers).status_code == 200
        bearer_clock.advance(300 + 60)  # the lifetime and the leeway
        expired = client.get("/items", headers=headers)
        assert expired.status_code == 401
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]
        # Minted an hour later on the same clock: current for the middleware too.
        bearer_clock.advance(3600)
        fresh = bearer_issuer.auth_header(scope="read:items")
        assert client.get("/items", headers=fresh).status_code == 200
""",
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_dpop_key_fixture_tests_a_dpop_bound_route_in_a_few_lines(
    pytester: pytest.Pytester,
) -> None:
    _user_suite(
        pytester,
        """
from fastapi.testclient import TestClient
from app import create_app

def test_dpop(bearer_issuer, bearer_dpop_key, bearer_clock):
    app = create_app(bearer_issuer.issuer, bearer_issuer.audience, clock=bearer_clock)
    token = bearer_issuer.mint(scope="read:items", dpop_key=bearer_dpop_key)
    proved = lambda: bearer_dpop_key.headers(token, "GET", "http://testserver/items")
    with TestClient(app) as client:
        assert client.get("/items", headers=proved()).status_code == 200
        assert client.get("/items", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        bearer_clock.advance(120)  # proofs are dated on the same clock as the API
        assert client.get("/items", headers=proved()).status_code == 200
""",
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_issuer_without_the_clock_fixture_mints_on_the_real_time(bearer_issuer: TestIssuer) -> None:
    import time

    assert bearer_issuer.clock is time.time
    iat = bearer_issuer.claims()["iat"]
    assert abs(iat - time.time()) < 5


def test_plugin_costs_nothing_until_a_fixture_is_used(pytester: pytest.Pytester) -> None:
    # A fresh process, where the plugin is loaded by its entry point as for any user.
    pytester.makepyfile(
        test_cost="""
import sys

def test_collected_and_run_without_the_library():
    loaded = {m for m in sys.modules if m.startswith("bearerguard")}
    assert loaded <= {"bearerguard", "bearerguard.pytest_plugin"}, loaded
    for heavy in ("httpx", "starlette", "jwt", "cryptography", "limits"):
        assert heavy not in sys.modules, heavy

def test_a_fixture_brings_it(bearer_issuer):
    assert "bearerguard.testing" in sys.modules
    assert bearer_issuer.mint()
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*plugins:*bearerguard*"])
