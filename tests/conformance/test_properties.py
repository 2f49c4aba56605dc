"""For any input, the outcome is an AccessToken or an AuthError: never another exception.

Each property drives one place where outside input is read: the validator (the
token parser, then the header and claim rules, through ``validate``), the rules
called directly, credential extraction from a request, and introspection answers
(judged directly, and served over HTTP by a real issuer). ``validate`` turns an
unexpected exception into ``InvalidToken(reason="internal")`` so a bug is never a
500: that reason is a failure here, since it means such a bug was hit.

Example counts are sized so every Hypothesis test in the suite takes about 20 s
together on a CI machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bearerguard import (
    DEFAULT_ALGORITHMS,
    AccessToken,
    AuthError,
    InvalidToken,
    Issuer,
    TokenValidator,
)
from bearerguard._binding import confirmation_of
from bearerguard._claims import ClaimRules
from bearerguard._credentials import find_in_form, find_in_header, find_in_query
from bearerguard._introspection import Introspector
from bearerguard._keys import KeySet
from bearerguard.testing import ManualClock, RecordedRequest, Response, TestIssuer

from . import fuzz_target
from .strategies import claims, header_lists, headers, json_values, tokens

NOW = 1_800_000_000.0
AUDIENCE = "https://api.example.com"
SECRET = b"conformance-secret-" * 4
ISSUERS = {
    "plain": "https://plain.example",
    "strict": "https://rfc9068.example",
    "clients": "https://clients-only.example",
}


def configs() -> list[Issuer]:
    common: dict[str, Any] = {"algorithms": ("HS256",), "shared_secret": SECRET, "discovery": False}
    return [
        Issuer(ISSUERS["plain"], audience=AUDIENCE, **common),
        Issuer(ISSUERS["strict"], audience=AUDIENCE, rfc9068=True, **common),
        # Cognito-like: no audience, the client decides.
        Issuer(ISSUERS["clients"], audience=(), client_ids=("c1",), **common),
    ]


def some(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def accepted_or_refused(outcome: AccessToken | BaseException) -> None:
    """The property itself: an AccessToken, or an AuthError that is not a hidden crash."""
    if isinstance(outcome, AccessToken):
        return
    assert isinstance(outcome, AuthError), repr(outcome)
    assert outcome.reason != "internal"


async def outcome_of(validator: TokenValidator, token: str) -> AccessToken | BaseException:
    try:
        return await validator.validate(token)
    except Exception as error:
        return error


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for all of a test's examples (Hypothesis drives them synchronously)."""
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture
def validator(runner: asyncio.Runner) -> Iterator[TokenValidator]:
    made = TokenValidator(configs(), clock=ManualClock(NOW))
    yield made
    runner.run(made.aclose())


any_issuer = st.sampled_from(list(ISSUERS.values()))


@some(250)
@given(data=st.data())
def test_any_token_is_accepted_or_refused_never_a_crash(
    runner: asyncio.Runner, validator: TokenValidator, data: st.DataObject
) -> None:
    issuer = data.draw(any_issuer)
    token = data.draw(tokens(issuer, AUDIENCE, NOW, SECRET))
    accepted_or_refused(runner.run(outcome_of(validator, token)))


@some(200)
@given(header=headers, body=json_values, issuer=any_issuer)
def test_header_and_claim_rules_only_ever_refuse_with_invalid_token(
    header: dict[str, Any], body: Any, issuer: str
) -> None:
    for config in configs():
        rules = ClaimRules(config)
        checks: list[Callable[[], object]] = [
            partial(rules.check_header, header),
            partial(rules.check_claims, body if isinstance(body, dict) else {"x": body}, NOW),
            partial(rules.check_claims, {"iss": issuer, "aud": body}, NOW, introspected=True),
            partial(rules.scopes, {"scope": body, "scp": body}),
            partial(rules.client_id, {"client_id": body, "azp": body}),
            partial(confirmation_of, {"cnf": body}),
        ]
        for check in checks:
            with contextlib.suppress(InvalidToken):
                check()


@some(200)
@given(header=header_lists, query=st.binary(max_size=60), form=st.binary(max_size=60))
def test_credential_extraction_finds_a_token_or_refuses(
    header: list[tuple[bytes, bytes]], query: bytes, form: bytes
) -> None:
    for find, source in (
        (find_in_header, header),
        (find_in_query, query),
        (find_in_query, b"access_token=" + query),
        (find_in_form, form),
        (find_in_form, b"a=1&access_token=" + form),
    ):
        try:
            found = find(source, 64)  # type: ignore[operator]
        except AuthError:
            continue
        assert found is None or isinstance(found, str)


@pytest.fixture
def introspector(runner: asyncio.Runner) -> Iterator[Introspector]:
    config = Issuer(
        ISSUERS["plain"],
        audience=AUDIENCE,
        client_id="rs",
        client_secret="rs-secret",
        introspection_endpoint="http://127.0.0.1:9/introspect",
        discovery=False,
    )
    validator = TokenValidator([config], clock=ManualClock(NOW))
    introspector = validator.issuers[config.issuer].introspector
    assert introspector is not None
    yield introspector
    runner.run(validator.aclose())


@some(200)
@given(
    document=st.one_of(
        claims(ISSUERS["plain"], AUDIENCE, NOW).map(lambda c: {"active": True, **c}),
        st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    )
)
def test_any_introspection_answer_is_judged_without_a_crash(
    introspector: Introspector, document: dict[str, Any]
) -> None:
    """The judgement of an RFC 7662 answer, for any JSON object an endpoint may send."""
    try:
        introspector.judge(document, NOW)
        access = introspector.access_token(document, "00")  # a malformed cnf refuses here
    except InvalidToken:
        return
    assert isinstance(access, AccessToken)


@pytest.fixture(scope="module")
def authorization_server() -> Iterator[TestIssuer]:
    with TestIssuer(algorithms=("ES256",)) as server:
        yield server


active_answers = claims("ISSUER", AUDIENCE, NOW).map(lambda c: {"active": True, **c})


@some(100)
@given(answer=st.one_of(json_values, active_answers))
def test_any_introspection_answer_over_http_is_accepted_or_refused(
    runner: asyncio.Runner, authorization_server: TestIssuer, answer: Any
) -> None:
    """The whole opaque-token path, with the endpoint answering ``answer`` (any JSON)."""
    server = authorization_server
    if isinstance(answer, dict) and answer.get("iss") == "ISSUER":
        answer["iss"] = server.issuer

    def respond(request: RecordedRequest) -> Response:
        return Response(200, answer)

    server.add_handler("POST", server.introspection_path, respond)
    config = Issuer(
        server.issuer,
        audience=AUDIENCE,
        client_id="rs",
        client_secret="rs-secret",
        introspection_endpoint=server.introspection_endpoint,
        discovery=False,
    )

    async def ask() -> AccessToken | BaseException:
        async with httpx.AsyncClient(transport=server.transport()) as client:
            validator = TokenValidator([config], client=client, clock=ManualClock(NOW))
            try:
                return await outcome_of(validator, f"opaque-{next(_serial)}")
            finally:
                await validator.aclose()

    accepted_or_refused(runner.run(ask()))


_serial = itertools.count()


@some(150)
@given(
    choice=st.integers(min_value=0, max_value=3),
    method=st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT"]),
    path=st.sampled_from(["/", "/items", "/public/x", "/public"]) | st.text(max_size=12),
    where=st.sampled_from(["header", "query", "form", "none", "twice", "scheme", "dpop"]),
    token=tokens(fuzz_target.ISSUER, fuzz_target.AUDIENCE, fuzz_target.NOW, fuzz_target.SECRET),
    extra=header_lists,
)
def test_any_request_is_answered_below_500(
    choice: int, method: str, path: str, where: str, token: str, extra: list[tuple[bytes, bytes]]
) -> None:
    """The middleware's request handling (HTTP and WebSocket, header, query and form tokens).

    Built into the fuzz target's input format and run by it, so the same checks
    apply: no exception, no 5xx, no internal error.
    """
    raw = token.encode("utf-8", "surrogateescape")
    headers = [name + b": " + value for name, value in extra if b"\n" not in name + value]
    query, body = b"", b""
    if where in ("header", "twice"):
        headers += [b"authorization: Bearer " + raw] * (2 if where == "twice" else 1)
    elif where == "scheme":
        headers.append(b"authorization: Basic " + raw)
    elif where == "dpop":  # RFC 9449: the token under the DPoP scheme, a JWT as its proof
        headers += [b"authorization: DPoP " + raw, b"dpop: " + raw]
    elif where == "query":
        query = b"access_token=" + raw
    elif where == "form":
        headers.append(b"content-type: application/x-www-form-urlencoded")
        body = b"access_token=" + raw
    lines = [
        bytes([choice]) + method.encode(),
        path.encode("utf-8", "surrogateescape"),
        query.replace(b"\n", b""),
        *[h for h in headers if b"\n" not in h],
        b"",
        body,
    ]
    fuzz_target.one_input(bytes([4]) + b"\n".join(lines))


_jwk_members = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.sampled_from(["RSA", "EC", "OKP", "oct"]) | json_values,
        "crv": st.sampled_from(["P-256", "P-384", "P-521", "Ed25519", "Ed448"]) | json_values,
        "alg": st.sampled_from(["RS256", "ES256", "EdDSA", "PS256"]) | json_values,
        "kid": st.text(max_size=4) | json_values,
        "use": st.sampled_from(["sig", "enc"]) | json_values,
        "key_ops": st.just(["verify"]) | json_values,
        "n": st.sampled_from(["AQAB", "A" * 400]) | json_values,
        "e": st.sampled_from(["AQAB", "Aw"]) | json_values,
        "x": st.sampled_from(["f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"]) | json_values,
        "y": st.sampled_from(["x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"]) | json_values,
    },
)


@some(200)
@given(keys=st.lists(_jwk_members | json_values, max_size=4))
def test_any_jwk_is_used_or_skipped_never_raises(keys: list[Any]) -> None:
    """RFC 7517 §5: one key a library cannot use is left out; the rest of the set still counts."""
    keyset = KeySet.from_jwks(
        {"keys": keys}, issuer=ISSUERS["plain"], algorithms=DEFAULT_ALGORITHMS
    )
    assert len(keyset.keys) >= 0 and keyset.skipped <= len(keys)
