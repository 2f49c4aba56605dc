"""Where a token is parsed: strict JWS compact serialization (RFC 7515 §7.1) in one pass.

PyJWT's ``decode`` and ``get_unverified_header`` are correct but slow on the hot
path (they walk the token character by character in Python and decode every
segment more than once). This parser does the same checks with C-level
primitives: substring checks for the shape, strict base64url, and the one strict
JSON parser (:mod:`bearerguard._json`) fetched documents go through too.
"""

from __future__ import annotations

import binascii
from typing import Any

from bearerguard._errors import InvalidToken
from bearerguard._json import loads_object

__all__ = ["ParsedJWS", "looks_like_jws", "parse_jws"]

#: base64url to standard base64, so ``binascii``'s strict mode can judge the alphabet.
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


class ParsedJWS:
    """A token's three segments, decoded but not yet trusted."""

    __slots__ = ("claims", "header", "signature", "signing_input")

    def __init__(
        self, header: dict[str, Any], claims: dict[str, Any], signing_input: bytes, signature: bytes
    ) -> None:
        self.header = header
        self.claims = claims
        self.signing_input = signing_input
        self.signature = signature


def looks_like_jws(token: str) -> bool:
    """True for the shape of a JWS compact serialization; anything else may be opaque.

    Three non-empty segments, and none of the RFC 6750 b64token characters that
    base64url without padding (RFC 7515 §2) excludes. A character outside that
    grammar entirely (which the middleware never lets through) is caught by the
    strict decoding in :func:`parse_jws`. Substring tests instead of a regex: this
    runs on every uncached request.
    """
    return (
        token.count(".") == 2
        and "=" not in token
        and "+" not in token
        and "/" not in token
        and "~" not in token
        and ".." not in token
        and not token.startswith(".")
        and not token.endswith(".")
    )


#: The last character of a canonical segment whose length is 2 or 3 mod 4: its
#: unused low bits must be zero (RFC 4648 §3.5), or one value has 4 or 16 spellings.
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


def _b64decode(segment: str) -> bytes:
    """Strict, canonical base64url: unpadded, alphabet checked by binascii's strict mode.

    Canonical matters: the same signature spelled 16 ways would be 16 distinct
    tokens to every cache, rate limit and replay check keyed on the token.
    """
    rest = len(segment) % 4
    if rest == 1:
        raise ValueError("impossible base64url length")
    if rest and segment[-1] not in _CANONICAL_LAST[rest]:
        raise ValueError("non-canonical base64url")
    padded = (segment + "=" * (-len(segment) % 4)).encode("ascii").translate(_TO_STANDARD)
    return binascii.a2b_base64(padded, strict_mode=True)


def _json_object(segment: str) -> dict[str, Any]:
    return loads_object(_b64decode(segment))


#: How many distinct headers a header cache keeps before it starts over.
HEADER_CACHE_SIZE = 256


def parse_jws(
    token: str, header_cache: dict[str, dict[str, Any]] | None = None, *, claims: bool = True
) -> ParsedJWS:
    """Split and decode a compact JWS; every malformation is an ``InvalidToken``.

    The caller has already checked the size cap and that ``looks_like_jws`` holds.
    A JWE (five segments) never reaches here: it does not match the three-segment
    shape and is refused by the validator.

    ``header_cache`` maps an encoded header to its decoded form: every token one
    key signs carries the same header, so decoding it once saves about a tenth of
    a cold validation. The cached dicts are shared and must not be mutated; the
    cache starts over at :data:`HEADER_CACHE_SIZE` entries, so a stream of
    distinct headers cannot grow it.

    ``claims=False`` reads a JWS whose payload is not a JWT (the conformance
    suites' signatures over arbitrary bytes): the payload must still be strict
    base64url, but is not decoded as JSON, and ``claims`` is left empty.
    """
    header_b64, payload_b64, signature_b64 = token.split(".")
    try:
        header = header_cache.get(header_b64) if header_cache is not None else None
        if header is None:
            header = _json_object(header_b64)
            if header_cache is not None:
                if len(header_cache) >= HEADER_CACHE_SIZE:
                    header_cache.clear()
                header_cache[header_b64] = header
        if claims:
            body = _json_object(payload_b64)
        else:
            _b64decode(payload_b64)
            body = {}
        signature = _b64decode(signature_b64)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidToken("The access token is malformed", reason="malformed") from None
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    return ParsedJWS(header, body, signing_input, signature)
