"""Where a token is parsed: strict JWS compact serialization (RFC 7515 §7.1) in one pass.

PyJWT's ``decode`` and ``get_unverified_header`` are correct but slow on the hot
path (they walk the token character by character in Python and decode every
segment more than once). This parser does the same checks with C-level
primitives: one regex for the alphabet, strict base64url, strict JSON.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from base64 import urlsafe_b64decode
from typing import Any

from bearerguard.errors import InvalidToken

__all__ = ["ParsedJWS", "looks_like_jws", "parse_jws"]

#: Three base64url segments without padding (RFC 7515 §2 "Base64url Encoding").
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


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
    """True for the shape of a JWS compact serialization; anything else may be opaque."""
    return _JWS.fullmatch(token) is not None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §5.2 and RFC 8725 §3.? : a JSON object with duplicate member names
    # could be read differently by two parsers, so it is refused.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


_decoder = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def _b64decode(segment: str) -> bytes:
    if len(segment) % 4 == 1:
        raise ValueError("impossible base64url length")
    return urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(segment: str) -> dict[str, Any]:
    value = _decoder.decode(_b64decode(segment).decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def parse_jws(token: str) -> ParsedJWS:
    """Split and decode a compact JWS; every malformation is an ``InvalidToken``.

    The caller has already checked the size cap and that ``looks_like_jws`` holds.
    A JWE (five segments) never reaches here: it does not match the three-segment
    shape and is refused by the validator.
    """
    header_b64, payload_b64, signature_b64 = token.split(".")
    try:
        header = _json_object(header_b64)
        claims = _json_object(payload_b64)
        signature = _b64decode(signature_b64)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidToken("The access token is malformed", reason="malformed") from None
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    return ParsedJWS(header, claims, signing_input, signature)
