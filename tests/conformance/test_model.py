"""Model-based: random claims minted by TestIssuer are accepted exactly when a plain model says so.

:func:`model` is the rules written again from the RFCs, as plainly as possible and
without bearerguard's code: RFC 7519 §4.1 (iss, aud, exp, nbf, iat; NumericDate is
a JSON number, never a boolean, and never beyond 2**53 per RFC 7493 §2.2), RFC 9068
§2 (typ at+jwt and the required claims in strict mode), RFC 8725 §3.1/§3.11 (alg
allowlist, crit), RFC 6749 §3.3 (scope-token grammar, SP only), RFC 7800 §3.1
(cnf is a non-empty object; the binding itself is proved per request by the
middleware, not here). Each claim is drawn from values chosen at the edges of its
rule (a date one second either side of the leeway, a scope with an em space); the
validator must agree with the model on every draw, and on the AccessToken's
scopes, client and audience when it accepts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bearerguard import AccessToken, AuthError, Issuer, TokenValidator
from bearerguard.testing import ManualClock, TestIssuer

NOW = 1_800_000_000
LEEWAY = 60
AUD = "https://api.example.com"
SECRET = b"model-secret-" * 4
ABSENT: Any = object()
MODES = ("lenient", "strict", "clients")
CLIENT_IDS = ("abc",)

#: Each claim's candidate values, at the edges of the rules that judge it.
DATES = [NOW - 3600, NOW - 61, NOW - 60, NOW - 59, NOW, NOW + 59, NOW + 60, NOW + 61, NOW + 300]
EXP = [*DATES, NOW + 0.5, 2**53, 2**53 + 1, -(2**53) - 1, "1800000300", True, None, ABSENT]
NOT_BEFORE = [ABSENT, *DATES, 1e300, "0", None, False, [NOW]]
STRINGISH = [ABSENT, "abc", None, 5, ["abc"], ""]
AUDIENCES = [AUD, [AUD], ["x", AUD], ["x"], [], [AUD, 1], "x", 7, None, True, {"a": AUD}, ABSENT]
SCOPES = [
    ABSENT, None, "read write", "read  write", " read", "", "read\u2003write", 'a"b', "a\\b",
    ["read", "write"], [], ["read write"], ["a", 1], 5, {"read": True}, "r\u00e9ad",
]  # fmt: skip
CNF = [ABSENT, ABSENT, {"jkt": "abc"}, {}, "x", None, ["jkt"]]
TYP = ["at+jwt", "AT+JWT", "application/at+jwt", "JWT", "jwt", "application/jwt", "foo", 5, None]
KID = [ABSENT, "k1", 5, None]
CRIT = [ABSENT, ABSENT, ABSENT, ["exp"], []]

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def model(issuer: str, header: dict[str, Any], claims: dict[str, Any], mode: str) -> Any:
    """``None`` if the rules refuse the token, else (scopes, client_id, audience) it grants.

    ``mode``: ``lenient`` (the default rules), ``strict`` (RFC 9068), or ``clients``
    (no audience configured; ``client_ids`` says whose tokens are accepted, as for
    Cognito access tokens, which carry no ``aud``).
    """
    strict = mode == "strict"

    def number(value: Any) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53) or (
            isinstance(value, float)
        )

    typ = header.get("typ")
    typs = {"at+jwt", "application/at+jwt"} | (set() if strict else {"jwt", "application/jwt"})
    if typ is None and strict:
        return None
    if typ is not None and not (isinstance(typ, str) and typ.lower() in typs):
        return None
    if "crit" in header:
        return None
    if "kid" in header and not isinstance(header["kid"], str):  # null is no kid either
        return None
    if "b64" in header:  # RFC 7797 §7
        return None
    if claims.get("iss") != issuer:
        return None
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud
    if mode == "clients":
        # RFC 7519 §4.1.3: when there, aud is a StringOrURI or an array of them.
        if aud is not None and not (
            isinstance(auds, list) and all(isinstance(a, str) for a in auds)
        ):
            return None
        auds = auds or []
    elif not (isinstance(auds, list) and all(isinstance(a, str) for a in auds) and AUD in auds):
        return None
    exp = claims.get("exp")
    if not number(exp) or exp + LEEWAY <= NOW:
        return None
    for name in ("nbf", "iat"):
        if name in claims and (not number(claims[name]) or claims[name] > NOW + LEEWAY):
            return None
    if strict and any(claims.get(n) is None for n in ("sub", "client_id", "iat", "jti")):
        return None
    if strict and "scope" in claims and not isinstance(claims["scope"], str):
        return None  # RFC 9068 §2.2.3.1
    if any(claims.get(n) is not None and not isinstance(claims[n], str) for n in ("sub", "jti")):
        return None
    # The client is the first of client_id, azp present (RFC 9068 §2.2, then OIDC's azp);
    # a later one is not read at all.
    client = next((claims[n] for n in ("client_id", "azp") if claims.get(n) is not None), None)
    if client is not None and not isinstance(client, str):
        return None
    if mode == "clients" and client not in CLIENT_IDS:
        return None
    scopes: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        items = value.split(" ") if isinstance(value, str) else value
        if isinstance(value, str):
            items = [i for i in items if i]
        if not isinstance(items, list) or not all(
            isinstance(i, str) and _SCOPE_TOKEN.fullmatch(i) for i in items
        ):
            return None
        scopes |= set(items)
    if "cnf" in claims and not (isinstance(claims["cnf"], dict) and claims["cnf"]):
        return None
    return frozenset(scopes), client, tuple(auds)


#: Every field's candidates: the edges of its rule, valid and not.
EVERYTHING: dict[str, list[Any]] = {
    "iss": ["ISSUER", "ISSUER/", "other", 5, None, ABSENT],
    "aud": AUDIENCES,
    "exp": EXP,
    "nbf": NOT_BEFORE,
    "iat": NOT_BEFORE,
    "sub": STRINGISH,
    "client_id": STRINGISH,
    "azp": STRINGISH,
    "jti": STRINGISH,
    "scope": SCOPES,
    "scp": SCOPES,
    "cnf": CNF,
    "typ": TYP,
    "kid": KID,
    "crit": CRIT,
}
#: Values that pass in either mode: the baseline a draw then breaks in a few places.
PASSING: dict[str, list[Any]] = {
    "iss": ["ISSUER"],
    "aud": [AUD, [AUD], ["x", AUD]],
    "exp": [NOW - 59, NOW + 1, NOW + 300, NOW + 0.5, 2**53],
    "nbf": [ABSENT, NOW - 3600, NOW, NOW + 60],
    "iat": [NOW - 3600, NOW, NOW + 59],
    "sub": ["abc", ""],
    "client_id": ["abc"],
    "azp": [ABSENT, "xyz"],
    "jti": ["abc"],
    "scope": [ABSENT, "read write", "read  write", ["read", "write"], [], ""],
    "scp": [ABSENT, ["admin"]],
    "cnf": [ABSENT, {"jkt": "abc"}],
    "typ": ["at+jwt", "AT+JWT", "application/at+jwt"],
    "kid": [ABSENT, "k1", None],
    "crit": [ABSENT],
}
HEADER_FIELDS = ("typ", "kid", "crit")


@st.composite
def drawn(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A passing claim set and header, with up to three fields replaced by any candidate."""
    mode = draw(st.sampled_from(MODES))
    broken = draw(st.sets(st.sampled_from(sorted(EVERYTHING)), max_size=3))
    fields = {
        name: draw(st.sampled_from(EVERYTHING[name] if name in broken else PASSING[name]))
        for name in EVERYTHING
    }
    header = {name: fields.pop(name) for name in HEADER_FIELDS}
    return fields, header, mode


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    with TestIssuer(algorithms=("ES256",)) as server:
        yield server


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture
def validators(runner: asyncio.Runner, issuer: TestIssuer) -> Iterator[dict[str, TokenValidator]]:
    """One validator per mode (see :func:`model`), no result cache, a fixed clock."""
    made = {
        mode: TokenValidator(
            [
                Issuer(
                    issuer.issuer,
                    audience=() if mode == "clients" else AUD,
                    client_ids=CLIENT_IDS if mode == "clients" else None,
                    algorithms=("HS256",),
                    shared_secret=SECRET,
                    rfc9068=mode == "strict",
                    leeway=LEEWAY,
                    discovery=False,
                )
            ],
            clock=ManualClock(NOW),
            cache_size=0,
        )
        for mode in MODES
    }
    yield made
    for validator in made.values():
        runner.run(validator.aclose())


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=drawn())
def test_validator_accepts_exactly_what_the_model_accepts(
    runner: asyncio.Runner,
    issuer: TestIssuer,
    validators: dict[str, TokenValidator],
    case: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    values, header, mode = case
    values = {k: issuer.issuer if v == "ISSUER" else v for k, v in values.items()}
    values = {k: issuer.issuer + "/" if v == "ISSUER/" else v for k, v in values.items()}
    claims = {k: v for k, v in values.items() if v is not ABSENT}
    token = issuer.mint(
        claims,
        alg="HS256",
        key=SECRET,
        kid=header["kid"] if header["kid"] is not ABSENT else None,
        headers={
            "typ": header["typ"],
            **({"crit": header["crit"]} if header["crit"] is not ABSENT else {}),
        },
        drop=[k for k, v in values.items() if v is ABSENT],
    )
    sent_header = {k: v for k, v in header.items() if v is not ABSENT and v is not None}
    expected = model(issuer.issuer, sent_header, claims, mode)

    async def judge() -> AccessToken | AuthError:
        try:
            return await validators[mode].validate(token)
        except AuthError as error:
            return error

    outcome = runner.run(judge())
    event("accepted" if expected is not None else "refused")
    if expected is None:
        assert isinstance(outcome, AuthError), (claims, sent_header, mode)
        assert outcome.reason != "internal"
    else:
        assert isinstance(outcome, AccessToken), (claims, sent_header, mode, outcome.reason)
        assert (outcome.scopes, outcome.client_id, outcome.audience) == expected
