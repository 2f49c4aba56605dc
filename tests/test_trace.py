"""A validator's trace of one run: what inspect explains is what the validator did."""

from __future__ import annotations

import contextlib

import pytest

from bearerguard import Issuer, TokenValidator
from bearerguard._errors import AuthError
from bearerguard._trace import Trace
from bearerguard.testing import TestIssuer

pytestmark = pytest.mark.anyio


async def traced(validator: TokenValidator, token: str) -> Trace:
    trace = Trace()
    with contextlib.suppress(AuthError):
        await validator.validate(token, trace=trace)
    return trace


async def test_a_trace_names_the_metadata_the_keys_and_the_key_that_verified(
    test_issuer: TestIssuer,
) -> None:
    validator = TokenValidator([Issuer(test_issuer.issuer, test_issuer.audience)])
    try:
        trace = await traced(validator, test_issuer.mint())
    finally:
        await validator.aclose()
    assert trace.access is not None and trace.error is None
    assert trace.metadata_url == test_issuer.metadata_url
    assert trace.jwks_uri == test_issuer.jwks_uri
    assert trace.kid == test_issuer.signing_kid
    assert trace.key is not None and trace.key.kid == test_issuer.signing_kid
    assert [k.kid for k in trace.published] == test_issuer.kids
    assert not trace.rechecked and trace.failures == []


async def test_a_bad_signature_is_rechecked_once_and_traced(test_issuer: TestIssuer) -> None:
    validator = TokenValidator([Issuer(test_issuer.issuer, test_issuer.audience)])
    try:
        trace = await traced(validator, test_issuer.mint_tampered())
    finally:
        await validator.aclose()
    assert trace.error is not None and trace.error.reason == "bad_signature"
    assert trace.rechecked and trace.key is None and len(trace.candidates) == 1


async def test_a_trace_keeps_the_introspection_answer_of_its_one_call(
    test_issuer: TestIssuer,
) -> None:
    client_id, secret = test_issuer.introspection_client
    config = Issuer(
        test_issuer.issuer, test_issuer.audience, client_id=client_id, client_secret=secret
    )
    validator = TokenValidator([config])
    try:
        trace = await traced(validator, test_issuer.mint_opaque(scope="read"))
    finally:
        await validator.aclose()
    assert trace.kind == "opaque" and trace.access is not None
    assert trace.introspection is not None and trace.introspection["active"] is True
    assert test_issuer.requests[test_issuer.introspection_path] == 1


async def test_an_upstream_failure_is_traced_in_its_own_words(test_issuer: TestIssuer) -> None:
    test_issuer.route("/jwks", status=500)
    validator = TokenValidator([Issuer(test_issuer.issuer, test_issuer.audience)])
    try:
        trace = await traced(validator, test_issuer.mint())
    finally:
        await validator.aclose()
    assert trace.error is not None and trace.error.status == 503
    assert trace.upstream_error == "HTTP 500"


async def test_tracing_leaves_the_cache_alone(test_issuer: TestIssuer) -> None:
    validator = TokenValidator([Issuer(test_issuer.issuer, test_issuer.audience)])
    try:
        token = test_issuer.mint()
        await traced(validator, token)
        assert (validator.cache.hits, validator.cache.misses) == (0, 0)  # never looked up
        await validator.validate(token)
        assert validator.cache.misses == 1  # and nothing was stored for the token
    finally:
        await validator.aclose()


async def test_introspect_all_traces_the_answer_about_a_jwt(test_issuer: TestIssuer) -> None:
    from bearerguard._diagnose import diagnose

    client_id, secret = test_issuer.introspection_client
    config = Issuer(
        test_issuer.issuer,
        test_issuer.audience,
        client_id=client_id,
        client_secret=secret,
        introspect_all=True,
    )
    token = test_issuer.mint()
    test_issuer.revoke(token)
    report = await diagnose(token, config)
    assert (report.verdict, report.reason) == ("invalid", "inactive")
    checks = {c.name: c.status for c in report.checks}
    assert checks["signature"] == "pass" and checks["active"] == "fail"
    assert test_issuer.requests[test_issuer.introspection_path] == 1
