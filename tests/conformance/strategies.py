"""Hypothesis strategies for what a client or an authorization server may send.

Built to reach deep: JSON values of every type and size that matter (booleans
where numbers go, integers past 2**53, lone surrogates, nested objects), claim
sets drawn from the names the rules read, and tokens that are either noise,
well-formed JWS with arbitrary content, or signed with the configured secret so
that the claim rules, not the signature, decide.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "CLAIM_NAMES",
    "HEADER_NAMES",
    "b64url",
    "claims",
    "header_lists",
    "headers",
    "json_values",
    "sign_hs256",
    "tokens",
]

#: Claims the rules read (RFC 7519, 9068, 7662, 7800, 9470, providers'), and a stranger.
CLAIM_NAMES = (
    "iss", "aud", "exp", "nbf", "iat", "sub", "client_id", "azp", "cid", "appid", "jti",
    "scope", "scp", "cnf", "acr", "auth_time", "active", "token_type", "username", "x",
)  # fmt: skip
HEADER_NAMES = ("alg", "typ", "kid", "crit", "jku", "jwk", "x5c", "b64", "cty")

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53 - 2, max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "a b", "read:x", "at+jwt", "HS256", "RS256", "none", "\ud800"])
)

json_values = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=6,
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def sign_hs256(header: Any, body: Any, secret: bytes) -> str:
    signing_input = f"{encode(header)}.{encode(body)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _objects(names: tuple[str, ...], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(
        st.sampled_from(names) | st.text(max_size=4), values, max_size=len(names)
    )


def claims(issuer: str, audience: str, now: float) -> st.SearchStrategy[dict[str, Any]]:
    """A claim set every issuer configured here accepts, then up to three claims replaced.

    Starting from a passing set is what lets one broken claim reach the rule that
    judges it (and the code after the rules) instead of failing on ``iss`` first.
    """
    passing = {
        "iss": issuer,
        "aud": audience,
        "exp": int(now) + 300,
        "iat": int(now),
        "sub": "user",
        "client_id": "c1",
        "jti": "j1",
        "scope": "read",
    }
    near = st.integers(min_value=int(now) - 200, max_value=int(now) + 200)
    values = st.one_of(
        json_values, near, st.sampled_from([[audience], [audience, 1], {"jkt": "x"}])
    )
    broken = st.dictionaries(st.sampled_from(CLAIM_NAMES) | st.text(max_size=4), values, max_size=3)
    removed = st.sets(st.sampled_from(sorted(passing)), max_size=2)
    return st.builds(
        lambda extra, gone: {k: v for k, v in {**passing, **extra}.items() if k not in gone},
        broken,
        removed,
    )


headers = _objects(HEADER_NAMES, json_values | st.sampled_from(["HS256", "RS256", "at+jwt"]))


def tokens(issuer: str, audience: str, now: float, secret: bytes) -> st.SearchStrategy[str]:
    """Any string; a JWS of arbitrary JSON; or claims signed with ``secret`` (HS256)."""
    signed_header = st.builds(
        lambda extra: {**extra, "alg": "HS256"}, _objects(HEADER_NAMES, json_values)
    ) | st.just({"alg": "HS256", "typ": "at+jwt"})
    signed = st.builds(
        lambda h, b: sign_hs256(h, b, secret), signed_header, claims(issuer, audience, now)
    )
    return st.one_of(
        st.text(max_size=64),
        st.text(alphabet="abcXYZ019-_.=+/~", max_size=64),
        st.builds(
            lambda h, b, s: f"{encode(h)}.{encode(b)}.{b64url(s)}",
            json_values,
            json_values,
            st.binary(max_size=40),
        ),
        *[signed] * 3,  # most draws reach the claim rules
    )


#: ASGI-style header lists: lower-case names, latin-1 bytes values, Authorization often.
header_lists = st.lists(
    st.tuples(
        st.sampled_from([b"authorization", b"content-type", b"x-other"]),
        st.one_of(
            st.binary(max_size=40),
            st.builds(
                lambda t: b"Bearer " + t.encode("latin-1"),
                st.text(alphabet=st.characters(max_codepoint=255), max_size=40),
            ),
            st.sampled_from([b"Bearer", b"Bearer ", b"bearer  abc", b"Basic abc", b"Bearer a b"]),
        ),
    ),
    max_size=3,
)
