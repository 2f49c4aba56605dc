"""The suite's hostile-token corpus: every fault a token can have, and random junk besides.

Shared by the tests that must agree on all of it (``inspect`` and the middleware);
each entry is named so a disagreement says which token it was.
"""

from __future__ import annotations

import base64
import json
import random
import time
from typing import Any

from bearerguard.testing import TestIssuer

__all__ = ["hostile_tokens"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _forge(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(b"x" * 256)]
    )


def hostile_tokens(issuer: TestIssuer, *, seed: int = 1234) -> dict[str, str]:
    """Named tokens for ``issuer``: one per rule, some breaking several, and seeded junk."""
    now = int(time.time())
    good = issuer.mint(scope="read:items")
    revoked = issuer.mint_opaque()
    issuer.revoke(revoked)
    tokens = {
        "valid": good,
        "valid-opaque": issuer.mint_opaque(scope="read:items"),
        "revoked-opaque": revoked,
        "opaque-wrong-audience": issuer.mint_opaque(audience="https://other.example.com"),
        "expired": issuer.mint_expired(),
        "not-yet-valid": issuer.mint_not_yet_valid(),
        "iat-future": issuer.mint({"iat": now + 600}),
        "wrong-audience": issuer.mint_wrong_audience(),
        "wrong-issuer": issuer.mint_wrong_issuer(),
        "iss-trailing-slash": issuer.mint({"iss": issuer.issuer + "/"}),
        "alg-none": issuer.mint_alg_none(),
        "unknown-kid": issuer.mint_unknown_key(),
        "tampered": issuer.mint_tampered(),
        "typ-logout": issuer.mint(headers={"typ": "logout+jwt"}),
        "crit": issuer.mint(headers={"crit": ["b64"]}),
        "b64": issuer.mint(headers={"b64": False}),
        "no-exp": issuer.mint(expires_in=None),
        "exp-string": issuer.mint({"exp": str(now + 60)}),
        "kid-number": issuer.mint(kid=7),
        "kid-null": issuer.mint(headers={"kid": None}),
        "scope-number": issuer.mint({"scope": 5}),
        "sub-number": issuer.mint({"sub": 5}),
        "several": issuer.mint_expired({"aud": [], "iss": 1}),
        "auth-time-future": issuer.mint({"auth_time": now + 3600}),
        "jwe": "a.b.c.d.e",
        "bad-chars": "a+b.c/d.e=",
        "dots": "..",
        "empty-middle": "a..b",
        "four-dots": "....",
        "eyj": "eyJ.eyJ.eyJ",
        "header-array": _b64(b"[1]") + "." + _b64(b"{}") + ".c2ln",
        "exp-overflow": _b64(b'{"alg":"RS256"}') + "." + _b64(b'{"exp": 1e999}') + ".c2ln",
        "deep-nesting": _b64(b'{"alg":"RS256"}') + "." + _b64(b"[" * 5000 + b"]" * 5000) + ".c2ln",
        "not-utf8": _b64(b"\xff\xfe") + "." + _b64(b"{}") + ".c2ln",
        "oversized": "a" * 9000,
    }
    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/="
    for i in range(40):
        tokens[f"random-{i}"] = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
    for i in range(20):
        tokens[f"truncated-{i}"] = good[: rng.randint(1, len(good) - 1)]
    for k in ("", "x" * 500, "../../etc"):
        for e in ("1", None, 1e308, -1):
            tokens[f"forged-kid{len(k)}-exp{e}"] = _forge(
                {"alg": "RS256", "kid": k}, {"iss": issuer.issuer, "exp": e}
            )
    return tokens
