"""Bound tokens (RFC 7800 ``cnf``): a token tied to a key is never accepted as a plain bearer.

A token whose ``cnf`` names a confirmation method is only as good as the proof
that comes with it: ``jkt`` (RFC 9449, DPoP) needs a DPoP proof signed by that
key, ``x5t#S256`` (RFC 8705, mTLS) needs the client certificate with that
thumbprint. Accepting it without the proof would make a stolen bound token as
good as a bearer token, which is exactly what binding exists to prevent.

The decision is split in two so it costs nothing for the common, unbound token:

* :func:`confirmation_of` runs once per token, when the validator builds the
  :class:`~bearerguard._tokens.AccessToken` (and its result is cached with it):
  ``None`` for a token without ``cnf``, else the ``cnf`` object, checked for shape.
* :func:`check_binding` runs per request, only for tokens that have one: every
  method ``cnf`` names must be among what the request proved. A method this
  library does not understand is never proved, so such a token is refused.

What a request proved is a mapping from confirmation method to the value it
proved (``{"jkt": <JWK SHA-256 thumbprint>}`` after a verified DPoP proof,
``{"x5t#S256": <certificate thumbprint>}`` for a verified client certificate).
Proof verification adds its entry there; this module only compares.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from bearerguard._errors import InvalidToken

__all__ = ["NOTHING_PROVED", "Proved", "check_binding", "confirmation_of"]

#: Confirmation method -> the value the request proved for it.
Proved = Mapping[str, str]
#: What a plain bearer request proves: nothing.
NOTHING_PROVED: Proved = MappingProxyType({})


def confirmation_of(claims: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The token's ``cnf`` object, ``None`` when it has none; a malformed one is a refusal.

    RFC 7800 §3.1: ``cnf`` is a JSON object whose members are confirmation methods.
    Anything else (a string, a list, an empty object, ``null``) binds the token to
    nothing anyone could prove, so it is refused rather than ignored.
    """
    if "cnf" not in claims:
        return None
    cnf = claims["cnf"]
    if type(cnf) is not dict or not cnf:
        raise InvalidToken("The access token's cnf claim is malformed", reason="bad_cnf")
    return MappingProxyType(cnf)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def check_binding(confirmation: Mapping[str, Any], proved: Proved) -> None:
    """Refuse (401 ``invalid_token``) unless the request proved every method ``cnf`` names.

    Values are compared in constant time; a method the request did not prove, or
    proved for another key, is the same refusal.
    """
    for method, expected in confirmation.items():
        shown = proved.get(method)
        if (
            shown is None
            or type(expected) is not str
            or not hmac.compare_digest(_bytes(shown), _bytes(expected))
        ):
            raise InvalidToken(
                "The access token is bound to a key the request does not prove",
                reason="unproven_binding",
            )
