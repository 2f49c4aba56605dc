"""bearerguard's signature layer, driven as the validator drives it, for JWS that are not JWTs.

The public suites sign arbitrary bytes (``foo``, an empty payload), never a JWT
claims set, so a whole :meth:`TokenValidator.validate` would refuse every one of
them for its payload before a key is looked at. This harness runs everything
else exactly as a request does: the shape check, the strict parser (with
``claims=False``), the issuer's header rules, its keys (a JWKS fetched over real
HTTP from a :class:`TestIssuer`, or a configured shared secret for HMAC) and the
validator's own signature check, refresh on an unknown ``kid`` included.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from bearerguard import DEFAULT_ALGORITHMS, AuthError, Issuer, TokenValidator
from bearerguard._config import HMAC_ALGORITHMS
from bearerguard._jws import looks_like_jws, parse_jws
from bearerguard.testing import TestIssuer

__all__ = ["Verdict", "b64url_decode", "signature_layer"]

#: ``None`` when the signature layer accepts a JWS, else the reason it refused.
Verdict = str | None


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignatureLayer:
    """One configured issuer's signature layer: ``await layer.judge(jws)``."""

    def __init__(self, validator: TokenValidator | None, refusal: str | None) -> None:
        self._validator = validator
        #: Why the configuration itself was refused (a key too short to configure, say).
        self.refusal = refusal

    async def judge(self, token: str) -> Verdict:
        if self._validator is None:
            return f"config:{self.refusal}"
        if not looks_like_jws(token):
            return "shape"
        state = next(iter(self._validator.issuers.values()))
        try:
            jws = parse_jws(token, claims=False)
            alg = state.rules.check_header(jws.header)
            await self._validator._verify_signature(state, jws, alg)
        except AuthError as error:
            return error.reason
        return None


@asynccontextmanager
async def signature_layer(
    server: TestIssuer,
    *,
    jwks: Mapping[str, Any] | None = None,
    secret: Mapping[str, Any] | None = None,
) -> AsyncIterator[SignatureLayer]:
    """A signature layer trusting a JWK Set (served by ``server``) or one ``oct`` JWK as a secret.

    The secret is configured as a user would: its bytes as ``shared_secret`` and the
    JWK's ``alg`` as the only algorithm; a key bearerguard refuses to configure (too
    short, or an ``alg`` that is not HMAC) gives a layer that refuses everything.
    """
    if secret is not None:
        alg = secret.get("alg")
        if alg not in HMAC_ALGORITHMS:
            yield SignatureLayer(None, "not_an_hmac_key")
            return
        config = Issuer(
            server.issuer,
            audience="conformance",
            algorithms=(alg,),
            shared_secret=b64url_decode(secret["k"]),
            discovery=False,
        )
    else:
        server.serve_jwks(dict(jwks or {"keys": []}))
        config = Issuer(
            server.issuer,
            audience="conformance",
            jwks_uri=server.jwks_uri,
            algorithms=DEFAULT_ALGORITHMS,
            discovery=False,
        )
    try:
        validator = TokenValidator([config])
    except ValueError as error:
        yield SignatureLayer(None, str(error).split(" ")[0])
        return
    try:
        yield SignatureLayer(validator, None)
    finally:
        await validator.aclose()
