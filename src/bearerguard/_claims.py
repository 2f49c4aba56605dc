"""Where a JWT's header and claims are judged (RFC 7519 §4.1, RFC 8725 §3, RFC 9068 §4).

The rules for one issuer are compiled once into a :class:`ClaimRules`, so the
request path only compares values it already holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from bearerguard._config import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, Issuer
from bearerguard._errors import InvalidToken

__all__ = ["ClaimRules", "read_scopes"]

#: RFC 9068 §2.1: the media type of a JWT access token, with or without the prefix.
_AT_JWT = frozenset({"at+jwt", "application/at+jwt"})
#: What the default mode accepts besides RFC 9068's values: no ``typ``, or plain JWT.
_LENIENT_TYP = _AT_JWT | {"jwt", "application/jwt"}
#: RFC 9068 §2.2: claims an access token must carry in strict mode.
_RFC9068_REQUIRED = ("sub", "client_id", "iat", "jti")


#: RFC 7493 §2.2: an I-JSON number fits an IEEE 754 double exactly.
_MAX_SAFE_INT = 2**53


def _is_number(value: Any) -> TypeGuard[int | float]:
    # bool is an int in Python but never a NumericDate (RFC 7519 §2); the JSON
    # parser already refuses NaN and Infinity; an integer beyond 2**53 would
    # overflow float arithmetic, so it is no date either.
    if type(value) is int:
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    return type(value) is float


#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def read_scopes(claims: Mapping[str, Any], names: tuple[str, ...]) -> frozenset[str]:
    """Scopes from the first present claim: a string delimited by SP only, or a list.

    Only SP separates scopes (RFC 6749 §3.3): splitting on any whitespace would
    turn one scope the issuer granted (``"files:read\u2003admin"``) into two, one of
    them never granted. A list item is one scope, never split. Anything outside
    the scope-token grammar is refused.
    """
    for name in names:
        value = claims.get(name)
        if value is None:
            continue
        if type(value) is str:
            scopes = [s for s in value.split(" ") if s]
        elif type(value) is list and all(type(v) is str for v in value):
            scopes = value
        else:
            scopes = None
        if scopes is None or not all(_SCOPE_TOKEN.fullmatch(s) for s in scopes):
            raise InvalidToken("The access token's scope claim is malformed", reason="bad_scope")
        return frozenset(scopes)
    return frozenset()


class ClaimRules:
    """One issuer's header and claim checks, compiled from its :class:`Issuer`."""

    __slots__ = (
        "algorithms",
        "audiences",
        "issuer",
        "leeway",
        "required",
        "required_configured",
        "scope_claims",
        "scope_memo",
        "strict_typ",
    )

    def __init__(self, config: Issuer) -> None:
        algorithms = frozenset(config.algorithms)
        if "none" in algorithms or not algorithms:
            raise ValueError("the algorithm allowlist must be non-empty and never contain 'none'")
        unknown = algorithms - ASYMMETRIC_ALGORITHMS - HMAC_ALGORITHMS
        if unknown:
            raise ValueError(f"unsupported algorithms: {sorted(unknown)}")
        if algorithms & HMAC_ALGORITHMS and config.shared_secret is None:
            raise ValueError("HMAC algorithms need a shared_secret configured on purpose")
        if not config.audiences:
            raise ValueError("at least one audience is required")
        self.algorithms = algorithms
        self.issuer = config.issuer
        self.audiences = frozenset(config.audiences)
        self.leeway = float(config.leeway)
        self.strict_typ = config.rfc9068
        required = list(config.required_claims)
        if config.rfc9068:
            required += [c for c in _RFC9068_REQUIRED if c not in required]
        self.required = tuple(required)
        self.required_configured = tuple(config.required_claims)
        self.scope_claims = tuple(config.scope_claims)
        #: Scope strings already judged: an issuer's tokens repeat a handful of them.
        self.scope_memo: dict[str, frozenset[str]] = {}

    def scopes(self, claims: Mapping[str, Any]) -> frozenset[str]:
        """:func:`read_scopes` with this issuer's claim names, remembering string values.

        The memo is bounded (it starts over at 256 entries), so a stream of distinct
        scope strings cannot grow it; a malformed value is never remembered.
        """
        for name in self.scope_claims:
            value = claims.get(name)
            if value is None:
                continue
            if type(value) is not str:
                return read_scopes(claims, self.scope_claims)
            found = self.scope_memo.get(value)
            if found is None:
                found = read_scopes({name: value}, (name,))
                if len(self.scope_memo) >= 256:
                    self.scope_memo.clear()
                self.scope_memo[value] = found
            return found
        return frozenset()

    def check_header(self, header: Mapping[str, Any]) -> str:
        """Judge the protected header; return its ``alg``.

        ``jku``, ``x5u``, ``jwk`` and ``x5c`` are never read: keys come only from the
        issuer's own JWKS (RFC 8725 §3.10), so a token cannot name its own key.
        """
        alg = header.get("alg")
        if type(alg) is not str or alg not in self.algorithms:
            raise InvalidToken("The access token's algorithm is not allowed", reason="bad_alg")
        if "crit" in header:
            # RFC 7515 §4.1.11: we understand no extension, so any crit is fatal.
            raise InvalidToken("The access token uses an unsupported extension", reason="crit")
        typ = header.get("typ")
        if typ is None:
            if self.strict_typ:
                raise InvalidToken("The access token is not an RFC 9068 JWT", reason="bad_typ")
        elif type(typ) is not str or (
            typ.lower() not in (_AT_JWT if self.strict_typ else _LENIENT_TYP)
        ):
            raise InvalidToken("The token is not an access token", reason="bad_typ")
        kid = header.get("kid")
        if kid is not None and type(kid) is not str:
            raise InvalidToken("The access token is malformed", reason="bad_kid")
        return alg

    def check_claims(
        self, claims: Mapping[str, Any], now: float, *, introspected: bool = False
    ) -> None:
        """Judge ``iss``, ``aud``, the dates and the required claims, one leeway for all.

        ``introspected``: an RFC 7662 answer (§2.2), where ``iss``, ``aud`` and ``exp``
        are optional and judged only when present, and RFC 9068's required claims
        do not apply; one code path judges both kinds of token alike.
        """
        if (not introspected or "iss" in claims) and claims.get("iss") != self.issuer:
            raise InvalidToken(
                "The access token was not issued by a trusted issuer", reason="bad_iss"
            )
        aud = claims.get("aud")
        if introspected and "aud" not in claims:
            pass
        elif type(aud) is str:
            if aud not in self.audiences:
                raise InvalidToken("The access token is not for this audience", reason="bad_aud")
        elif type(aud) is list and aud and all(type(a) is str for a in aud):
            # RFC 7519 §4.1.3: each member is a StringOrURI; a list with anything
            # else is malformed, not a list to pick a match from.
            if not any(a in self.audiences for a in aud):
                raise InvalidToken("The access token is not for this audience", reason="bad_aud")
        else:
            raise InvalidToken("The access token is not for this audience", reason="bad_aud")
        leeway = self.leeway
        if not introspected or "exp" in claims:
            exp = claims.get("exp")
            if not _is_number(exp):
                raise InvalidToken("The access token has no valid expiry", reason="bad_exp")
            if now >= exp + leeway:
                raise InvalidToken("The access token expired", reason="expired")
        if "nbf" in claims:
            nbf = claims["nbf"]
            if not _is_number(nbf):
                raise InvalidToken("The access token's nbf is malformed", reason="bad_nbf")
            if nbf > now + leeway:
                raise InvalidToken("The access token is not valid yet", reason="not_yet_valid")
        if "iat" in claims:
            iat = claims["iat"]
            if not _is_number(iat):
                raise InvalidToken("The access token's iat is malformed", reason="bad_iat")
            if iat > now + leeway:
                raise InvalidToken("The access token was issued in the future", reason="iat_future")
        for name in self.required_configured if introspected else self.required:
            if claims.get(name) is None:
                raise InvalidToken(
                    f"The access token lacks the required claim {name!r}", reason="missing_claim"
                )
        for name in ("sub", "client_id", "jti"):
            value = claims.get(name)
            if value is not None and type(value) is not str:
                raise InvalidToken(f"The access token's {name} is malformed", reason="bad_claim")
