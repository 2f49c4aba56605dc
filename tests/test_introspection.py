"""RFC 7662 introspection against a real issuer on 127.0.0.1: one rule, one test.

The issuer is :class:`~bearerguard.testing.TestIssuer`; its request counter says
how many introspection calls bearerguard made, and its canned routes play every
hostile or broken answer an endpoint can give.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote_plus

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bearerguard import BearerAuthMiddleware, FetchPolicy, Issuer
from bearerguard._errors import InvalidToken, Unavailable
from bearerguard._validator import TokenValidator
from bearerguard.testing import RecordedRequest, Response, TestIssuer

pytestmark = pytest.mark.anyio

MakeValidator = Callable[..., TokenValidator]


def config(issuer: TestIssuer, **options: Any) -> Issuer:
    """An Issuer for ``issuer`` that may introspect, endpoints given (no discovery needed)."""
    client_id, client_secret = issuer.introspection_client
    settings: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": issuer.audience,
        "jwks_uri": issuer.jwks_uri,
        "introspection_endpoint": issuer.introspection_endpoint,
        "client_id": client_id,
        "client_secret": client_secret,
        "fetch": FetchPolicy(timeout=1.0, cooldown=0.1),
    }
    settings.update(options)
    return Issuer(**settings)


@pytest.fixture
async def make_validator() -> AsyncIterator[MakeValidator]:
    made: list[TokenValidator] = []

    def make(*issuers: Issuer, **options: Any) -> TokenValidator:
        validator = TokenValidator(list(issuers), **options)
        made.append(validator)
        return validator

    yield make
    for validator in made:
        await validator.aclose()


def calls(issuer: TestIssuer) -> int:
    return issuer.requests[issuer.introspection_path]


def last_introspection(issuer: TestIssuer) -> Any:
    return [r for r in issuer.received if r.path == issuer.introspection_path][-1]


def answer(issuer: TestIssuer, body: Any, *, status: int = 200, **headers: str) -> None:
    """Make the introspection endpoint answer this, whatever the token."""
    issuer.route(issuer.introspection_path, status=status, body=body, headers=headers)


async def refusal(validator: TokenValidator, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await validator.validate(token)
    return caught.value


async def outage(validator: TokenValidator, token: str) -> Unavailable:
    with pytest.raises(Unavailable) as caught:
        await validator.validate(token)
    return caught.value


# -- the happy path and what flows into AccessToken -------------------------------------


async def test_opaque_token_is_accepted_via_introspection(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque(
        {"username": "alice", "cnf": {"x5t#S256": "abc"}, "client_id": "app-1"},
        scope="read:items write:items",
    )
    access = await make_validator(config(test_issuer)).validate(token)
    assert access.kind == "opaque"
    assert access.scopes == {"read:items", "write:items"}
    assert access.client_id == "app-1"
    assert access.subject == "test-user"
    assert access.claims["username"] == "alice"
    assert access.claims["cnf"] == {"x5t#S256": "abc"}
    assert access.audience == (test_issuer.audience,)
    assert access.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(access)
    assert calls(test_issuer) == 1


async def test_token_is_sent_form_encoded_in_a_post_body_never_in_the_url(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    await make_validator(config(test_issuer)).validate(token)
    request = last_introspection(test_issuer)
    assert request.method == "POST"
    assert request.query == ""
    assert token not in request.path
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.body.decode())
    assert form == {"token": [token], "token_type_hint": ["access_token"]}


async def test_client_secret_basic_form_encodes_id_and_secret_first(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    test_issuer.introspection_client = ("rs:one/é", "p@ss word:+%")
    token = test_issuer.mint_opaque()
    await make_validator(config(test_issuer)).validate(token)
    header = last_introspection(test_issuer).headers["authorization"]
    expected = f"{quote_plus('rs:one/é')}:{quote_plus('p@ss word:+%')}".encode()
    assert header == "Basic " + base64.b64encode(expected).decode()


async def test_client_secret_post_sends_the_credentials_in_the_body(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer, introspection_auth="client_secret_post"))
    assert (await validator.validate(token)).kind == "opaque"
    request = last_introspection(test_issuer)
    assert "authorization" not in request.headers
    form = parse_qs(request.body.decode())
    assert form["client_id"] == ["resource-server"]
    assert form["client_secret"] == ["rs-secret"]


async def test_endpoint_is_taken_from_discovery_when_not_configured(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer, jwks_uri=None, introspection_endpoint=None))
    assert (await validator.validate(token)).kind == "opaque"
    assert calls(test_issuer) == 1


# -- which path a token takes -----------------------------------------------------------


async def test_opaque_token_without_introspection_configured_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer, client_id=None, client_secret=None))
    assert (await refusal(validator, token)).status == 401
    assert calls(test_issuer) == 0


async def test_opaque_reject_never_introspects(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer, opaque="reject"))
    assert (await refusal(validator, token)).reason == "malformed"
    assert calls(test_issuer) == 0


async def test_issuer_whose_metadata_names_no_endpoint_refuses_opaque_tokens(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    metadata = test_issuer.metadata()
    del metadata["introspection_endpoint"]
    test_issuer.serve_metadata(metadata)
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer, jwks_uri=None, introspection_endpoint=None))
    assert (await refusal(validator, token)).reason == "no_introspection"
    assert calls(test_issuer) == 0


async def test_failing_jwt_is_never_rescued_by_introspection(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, {"active": True})  # an endpoint that would say yes to anything
    validator = make_validator(config(test_issuer))
    assert (await refusal(validator, test_issuer.mint_tampered())).reason == "bad_signature"
    assert (await refusal(validator, test_issuer.mint_expired())).reason == "expired"
    assert (await refusal(validator, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")).status == 401
    assert calls(test_issuer) == 0


async def test_jwe_is_refused_not_introspected(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    validator = make_validator(config(test_issuer))
    assert (await refusal(validator, "a.b.c.d.e")).reason == "jwe"
    assert calls(test_issuer) == 0


async def test_introspect_all_checks_a_valid_jwt_with_the_issuer(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    good, revoked = test_issuer.mint(), test_issuer.mint()
    test_issuer.revoke(revoked)
    validator = make_validator(config(test_issuer, introspect_all=True))
    assert (await validator.validate(good)).kind == "jwt"
    assert (await refusal(validator, revoked)).reason == "inactive"
    assert calls(test_issuer) == 2


async def test_introspect_all_does_not_introspect_a_jwt_that_fails(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    validator = make_validator(config(test_issuer, introspect_all=True))
    assert (await refusal(validator, test_issuer.mint_tampered())).reason == "bad_signature"
    assert calls(test_issuer) == 0


async def test_introspect_all_without_credentials_is_a_configuration_error(
    test_issuer: TestIssuer,
) -> None:
    with pytest.raises(ValueError, match="introspect_all"):
        TokenValidator([config(test_issuer, introspect_all=True, client_secret=None)])


async def test_two_issuers_introspecting_opaque_tokens_is_a_configuration_error(
    test_issuer: TestIssuer,
) -> None:
    with TestIssuer() as other, pytest.raises(ValueError, match="opaque='reject'"):
        TokenValidator([config(test_issuer), config(other)])


async def test_opaque_token_goes_only_to_the_issuer_that_introspects(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    with TestIssuer() as other:
        token = other.mint_opaque()
        validator = make_validator(config(test_issuer, opaque="reject"), config(other))
        assert (await validator.validate(token)).issuer == other.issuer
        assert calls(test_issuer) == 0
        assert calls(other) == 1


# -- the answer: only JSON true is active, hostile shapes refused ---------------------------


async def test_inactive_token_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    test_issuer.revoke(token)
    refused = await refusal(make_validator(config(test_issuer)), token)
    assert (refused.status, refused.reason) == (401, "inactive")


async def test_active_string_true_is_not_active(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, {"active": "true", "scope": "read:items"})
    refused = await refusal(make_validator(config(test_issuer)), test_issuer.mint_opaque())
    assert refused.reason == "inactive"


async def test_active_number_one_is_not_active(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, {"active": 1})
    refused = await refusal(make_validator(config(test_issuer)), test_issuer.mint_opaque())
    assert refused.reason == "inactive"


async def test_missing_active_is_not_active(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque(drop=("active",))
    refused = await refusal(make_validator(config(test_issuer)), token)
    assert refused.reason == "inactive"


async def test_duplicate_keys_in_the_answer_are_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, b'{"active": false, "active": true}')
    validator = make_validator(config(test_issuer))
    failed = await outage(validator, test_issuer.mint_opaque())
    assert failed.status == 503


async def test_answer_that_is_not_a_json_object_is_an_outage(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, [True])
    failed = await outage(make_validator(config(test_issuer)), test_issuer.mint_opaque())
    assert failed.status == 503


async def test_non_json_answer_is_an_outage(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, b"active=true")
    failed = await outage(make_validator(config(test_issuer)), test_issuer.mint_opaque())
    assert failed.status == 503


async def test_html_answer_is_an_outage(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, b"<html>Sign in</html>", **{"Content-Type": "text/html"})
    failed = await outage(make_validator(config(test_issuer)), test_issuer.mint_opaque())
    assert failed.status == 503


async def test_server_error_is_an_outage_with_retry_after(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, {"error": "boom"}, status=500, **{"Retry-After": "7"})
    failed = await outage(make_validator(config(test_issuer)), test_issuer.mint_opaque())
    assert (failed.status, failed.retry_after) == (503, 7)


async def test_oversized_answer_is_an_outage(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, {"active": True, "padding": "x" * (100 * 1024)})
    failed = await outage(make_validator(config(test_issuer)), test_issuer.mint_opaque())
    assert failed.status == 503


async def test_slow_answer_times_out_as_an_outage(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer, fetch=FetchPolicy(timeout=0.3)))
    test_issuer.delay(1.0)
    try:
        assert (await outage(validator, token)).status == 503
    finally:
        test_issuer.delay(0)


async def test_endpoint_down_is_an_outage_not_a_401(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer))
    test_issuer.outage(mode="close")
    failed = await outage(validator, token)
    assert failed.status == 503
    assert failed.retry_after >= 1


async def test_bad_resource_server_credentials_are_an_outage_not_a_401(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer, client_secret="not-the-secret"))
    assert (await outage(validator, token)).status == 503


async def test_redirect_from_the_endpoint_is_not_followed(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, b"", status=307, Location=test_issuer.url("/elsewhere"))
    validator = make_validator(config(test_issuer))
    assert (await outage(validator, test_issuer.mint_opaque())).status == 503
    assert test_issuer.requests["/elsewhere"] == 0


# -- the answer's claims, judged like a JWT's ---------------------------------------------


async def test_answer_with_past_exp_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    answer(test_issuer, {"active": True, "exp": 1_000_000_000})
    refused = await refusal(make_validator(config(test_issuer)), test_issuer.mint_opaque())
    assert refused.reason == "expired"


async def test_answer_with_future_nbf_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque({"nbf": 4_000_000_000})
    refused = await refusal(make_validator(config(test_issuer)), token)
    assert refused.reason == "not_yet_valid"


async def test_answer_with_string_exp_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque({"exp": "4000000000"})
    assert (await refusal(make_validator(config(test_issuer)), token)).reason == "bad_exp"


async def test_answer_from_another_issuer_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque({"iss": "https://evil.example.com"})
    assert (await refusal(make_validator(config(test_issuer)), token)).reason == "bad_iss"


async def test_answer_for_another_audience_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque(audience=["https://other-api.example.com"])
    assert (await refusal(make_validator(config(test_issuer)), token)).reason == "bad_aud"


async def test_answer_without_iss_aud_or_exp_is_accepted(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque(drop=("iss", "aud", "exp"))
    access = await make_validator(config(test_issuer)).validate(token)
    assert (access.audience, access.expires_at) == ((), None)


async def test_introspection_answer_without_aud_refused_when_required(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    strict = make_validator(config(test_issuer, introspection_requires_audience=True))
    token = test_issuer.mint_opaque(drop=("aud",))
    refused = await refusal(strict, token)
    assert refused.reason == "bad_aud" and refused.status == 401
    assert (await strict.validate(test_issuer.mint_opaque())).kind == "opaque"  # aud present
    wrong = test_issuer.mint_opaque(audience="https://other-api.example.com")
    assert (await refusal(strict, wrong)).reason == "bad_aud"


async def test_answer_with_malformed_scope_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque({"scope": 42})
    assert (await refusal(make_validator(config(test_issuer)), token)).reason == "bad_scope"


async def test_answer_for_a_dpop_token_without_its_key_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque({"token_type": "DPoP"})
    refused = await refusal(make_validator(config(test_issuer)), token)
    assert refused.reason == "bad_token_type"


async def test_answer_for_a_dpop_token_carries_its_binding(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    # Accepted here with its cnf; the middleware then asks for the DPoP proof (test_dpop.py).
    token = test_issuer.mint_opaque({"token_type": "DPoP", "cnf": {"jkt": "abc"}})
    access = await make_validator(config(test_issuer)).validate(token)
    assert access.confirmation == {"jkt": "abc"}


async def test_answer_with_malformed_subject_is_refused(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque({"sub": ["alice"]})
    assert (await refusal(make_validator(config(test_issuer)), token)).reason == "bad_claim"


# -- concurrency, outages and the cache ---------------------------------------------------


async def test_concurrent_requests_with_one_new_token_cause_one_introspection(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer))
    test_issuer.delay(0.2)  # keep the first call in flight while the others arrive
    try:
        results = await asyncio.gather(*(validator.validate(token) for _ in range(500)))
    finally:
        test_issuer.delay(0)
    assert {r.token_hash for r in results} == {results[0].token_hash}
    assert calls(test_issuer) == 1


@pytest.fixture
def hanging_endpoint(test_issuer: TestIssuer) -> Iterator[threading.Event]:
    """The introspection endpoint holds every call until the event is set (set on teardown)."""
    release = threading.Event()

    def hang(request: RecordedRequest) -> Response:
        release.wait(30)  # bounded, should a test forget to release
        return Response(200, {"active": False})

    test_issuer.add_handler("POST", test_issuer.introspection_path, hang)
    yield release
    release.set()


async def _saturate(
    test_issuer: TestIssuer, validator: TokenValidator, junk: int, limit: int
) -> tuple[list[asyncio.Future[Any]], list[asyncio.Future[Any]]]:
    """Send ``junk`` distinct opaque tokens; wait until ``limit`` sit at the endpoint and the
    rest have been answered. Returns (held, answered)."""
    tasks = [
        asyncio.ensure_future(validator.validate(secrets.token_urlsafe(24))) for _ in range(junk)
    ]
    for _ in range(1500):  # bounded wait for the calls to arrive, not a speed assertion
        if calls(test_issuer) >= limit and sum(t.done() for t in tasks) >= junk - limit:
            break
        await asyncio.sleep(0.01)
    answered = [t for t in tasks if t.done()]
    held = [t for t in tasks if not t.done()]
    return held, answered


async def test_introspection_saturation_answers_503_after_a_short_wait(
    test_issuer: TestIssuer, make_validator: MakeValidator, hanging_endpoint: threading.Event
) -> None:
    # A generous timeout: the held calls must still be in flight when they are counted.
    policy = FetchPolicy(timeout=8.0, cooldown=0.1)
    validator = make_validator(config(test_issuer, introspection_concurrency=4, fetch=policy))
    introspector = validator.issuers[test_issuer.issuer].introspector
    assert introspector is not None
    held, answered = await _saturate(test_issuer, validator, junk=20, limit=4)
    assert len(held) == 4 and len(answered) == 16  # answered while four still hang
    for task in answered:
        error = task.exception()
        assert isinstance(error, Unavailable)
        assert error.reason == "introspection_saturated" and error.retry_after == 1
    assert calls(test_issuer) == 4 and introspector.in_flight == 4  # the line gave up
    hanging_endpoint.set()
    refused = await asyncio.gather(*held, return_exceptions=True)
    assert all(isinstance(r, InvalidToken) for r in refused)
    assert introspector.in_flight == 0
    test_issuer.clear_routes()
    test_issuer.add_handler(
        "POST", test_issuer.introspection_path, lambda r: Response(200, {"active": False})
    )
    assert (await refusal(validator, secrets.token_urlsafe(24))).reason == "inactive"


async def test_jwks_fetch_succeeds_while_introspection_is_saturated(
    test_issuer: TestIssuer, make_validator: MakeValidator, hanging_endpoint: threading.Event
) -> None:
    # More junk than the shared pool has connections (32): without the cap they would
    # hold them all and the JWKS fetch below would wait for a connection until its timeout.
    # (A cap of 4, not the default 16: the test server's listen backlog is small.)
    validator = make_validator(
        config(test_issuer, introspection_concurrency=4, fetch=FetchPolicy(timeout=8.0))
    )
    held, answered = await _saturate(test_issuer, validator, junk=40, limit=4)
    assert len(held) == 4
    assert all(isinstance(t.exception(), Unavailable) for t in answered)
    access = await validator.validate(test_issuer.mint())  # cold JWKS cache: one fetch
    assert access.kind == "jwt"
    hanging_endpoint.set()
    await asyncio.gather(*held, return_exceptions=True)


async def test_a_waiter_that_gives_up_does_not_cancel_the_shared_call(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer))
    test_issuer.delay(0.3)
    try:
        first = asyncio.ensure_future(validator.validate(token))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(validator.validate(token))
        await asyncio.sleep(0.05)
        first.cancel()
        assert (await second).kind == "opaque"
    finally:
        test_issuer.delay(0)
    assert calls(test_issuer) == 1


async def test_outage_is_503_for_new_tokens_while_cached_ones_keep_working(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    seen, unseen = test_issuer.mint_opaque(), test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer))
    await validator.validate(seen)
    test_issuer.outage()
    assert (await validator.validate(seen)).kind == "opaque"
    assert (await outage(validator, unseen)).status == 503


async def test_an_outage_is_never_cached(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer))
    test_issuer.outage()
    await outage(validator, token)
    test_issuer.outage(False)
    assert (await validator.validate(token)).kind == "opaque"
    assert calls(test_issuer) == 2


async def test_malformed_active_is_not_remembered(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer))
    answer(test_issuer, {"active": "true"})
    await refusal(validator, token)
    test_issuer.clear_routes()
    assert (await validator.validate(token)).kind == "opaque"


async def test_token_and_client_secret_are_never_logged(
    test_issuer: TestIssuer, make_validator: MakeValidator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    test_issuer.introspection_client = ("resource-server", "s3cr3t-never-logged")
    good, revoked, failing = (test_issuer.mint_opaque() for _ in range(3))
    test_issuer.revoke(revoked)
    validator = make_validator(config(test_issuer))
    await validator.validate(good)
    await refusal(validator, revoked)
    test_issuer.outage()
    await outage(validator, failing)
    assert caplog.records
    for secret in (good, revoked, failing, "s3cr3t-never-logged"):
        assert secret not in caplog.text
    assert hashlib.sha256(failing.encode()).hexdigest()[:12] in caplog.text


# -- end to end through the middleware: the RFC 6750 answers a client sees ----------------


@pytest.fixture
async def api(test_issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async def items(request: Request) -> JSONResponse:
        token = request.scope["user"].token
        return JSONResponse({"kind": token.kind, "scopes": sorted(token.scopes)})

    client_id, client_secret = test_issuer.introspection_client
    middleware = BearerAuthMiddleware(
        Starlette(routes=[Route("/items", items)]),
        issuer=test_issuer.issuer,
        audience=test_issuer.audience,
        jwks_uri=test_issuer.jwks_uri,
        introspection_endpoint=test_issuer.introspection_endpoint,
        client_id=client_id,
        client_secret=client_secret,
    )
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client
    await middleware.aclose()


async def test_middleware_accepts_an_opaque_token(
    test_issuer: TestIssuer, api: httpx.AsyncClient
) -> None:
    token = test_issuer.mint_opaque(scope="read:items")
    answer = await api.get("/items", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"kind": "opaque", "scopes": ["read:items"]}


async def test_middleware_answers_invalid_token_for_an_inactive_one(
    test_issuer: TestIssuer, api: httpx.AsyncClient
) -> None:
    token = test_issuer.mint_opaque()
    test_issuer.revoke(token)
    answer = await api.get("/items", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_middleware_answers_503_with_retry_after_when_introspection_is_down(
    test_issuer: TestIssuer, api: httpx.AsyncClient
) -> None:
    token = test_issuer.mint_opaque()
    test_issuer.outage()
    answer = await api.get("/items", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) >= 1
    assert "www-authenticate" not in answer.headers
