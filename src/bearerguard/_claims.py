"""Where a JWT's header and claims are judged (RFC 7519 §4.1, RFC 8725 §3, RFC 9068 §4).

The rules for one issuer are compiled once into a :class:`ClaimRules`, so the
request path only compares values it already holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeGuard

from bearerguard._config import (
    TENANT_ID,
    TENANT_PLACEHOLDER,
    ClaimPath,
    Issuer,
    claim_path_parts,
)
from bearerguard._errors import InvalidToken, Reason, fail

__all__ = ["ClaimRules", "read_scopes"]

#: RFC 9068 §2.1: the media type of a JWT access token, with or without the prefix.
_AT_JWT = frozenset({"at+jwt", "application/at+jwt"})
#: What the default mode accepts besides RFC 9068's values: no ``typ``, or plain JWT.
_LENIENT_TYP = _AT_JWT | {"jwt", "application/jwt"}
#: RFC 9068 §2.2: claims an access token must carry in strict mode.
_RFC9068_REQUIRED = ("sub", "client_id", "iat", "jti")


#: A date claim that is not a NumericDate: its reason and description.
_MALFORMED_DATE: dict[str, tuple[Reason, str]] = {
    "exp": ("bad_exp", "The access token has no valid expiry"),
    "nbf": ("bad_nbf", "The access token's nbf is malformed"),
    "iat": ("bad_iat", "The access token's iat is malformed"),
    # OIDC Core §2: when the user signed in (Firebase requires this check).
    "auth_time": ("bad_auth_time", "The access token's auth_time is malformed"),
}
#: A date claim that lies in the future: nbf (not valid yet), iat and auth_time (a
#: forgery or a broken clock, never a token to trust).
_FUTURE_DATE: dict[str, tuple[Reason, str]] = {
    "nbf": ("not_yet_valid", "The access token is not valid yet"),
    "iat": ("iat_future", "The access token was issued in the future"),
    "auth_time": ("auth_time_future", "The access token's sign-in lies in the future"),
}

#: RFC 7493 §2.2: an I-JSON number fits an IEEE 754 double exactly.
_MAX_SAFE_INT = 2**53


def _is_number(value: Any) -> TypeGuard[int | float]:
    # bool is an int in Python but never a NumericDate (RFC 7519 §2); the JSON
    # parser already refuses NaN and Infinity; an integer beyond 2**53 would
    # overflow float arithmetic, so it is no date either.
    if type(value) is int:
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    return type(value) is float


def _strings(value: Any) -> TypeGuard[list[str]]:
    """A JSON array of strings only (RFC 7519 §4.1.3: ``aud`` is StringOrURI values)."""
    return type(value) is list and all(type(v) is str for v in value)


#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


#: A claim that a path did not find (``None`` counts as absent, as for plain claims).
_ABSENT: Any = object()
#: A path whose way in crossed something that is not an object.
_UNUSABLE: Any = object()


class _ClaimPath:
    """Where one configured claim lives: a top-level name, or a path through objects.

    A string with dots is first looked up as it is (Auth0's namespaced claims such as
    ``"https://example.com/roles"`` are top-level names), then as a path.
    """

    __slots__ = ("name", "parts", "plain")

    def __init__(self, path: ClaimPath, setting: str) -> None:
        name, parts = claim_path_parts(path, setting)
        self.name = name
        self.parts = parts if len(parts) > 1 else None
        #: The name, when the path is one top-level claim: read with one ``dict.get``.
        self.plain = name if self.parts is None else None

    def find(self, claims: Mapping[str, Any]) -> Any:
        """The value, :data:`_ABSENT`, or :data:`_UNUSABLE` (a non-object on the way)."""
        name = self.name
        if name is not None:
            value = claims.get(name)
            if value is not None or self.parts is None:
                return _ABSENT if value is None else value
        value = claims
        for part in self.parts or ():
            if type(value) is not dict:
                return _UNUSABLE
            value = value.get(part)
            if value is None:
                return _ABSENT
        return value

    def __str__(self) -> str:
        return self.name if self.name is not None else ".".join(self.parts or ())


def _paths(paths: Sequence[ClaimPath], setting: str) -> tuple[_ClaimPath, ...]:
    if isinstance(paths, str):
        raise ValueError(f"{setting} takes a sequence of claim names, not one string: ({paths!r},)")
    return tuple(_ClaimPath(p, setting) for p in paths)


def _scope_set(value: Any) -> frozenset[str]:
    """One claim's scopes: a string delimited by SP only, or a list of strings.

    Only SP separates scopes (RFC 6749 §3.3): splitting on any whitespace would
    turn one scope the issuer granted (``"files:read\u2003admin"``) into two, one of
    them never granted. A list item is one scope, never split. Anything outside
    the scope-token grammar, or of another type, is refused.
    """
    if type(value) is str:
        scopes = [s for s in value.split(" ") if s]
    elif type(value) is list and all(type(v) is str for v in value):
        scopes = value
    else:
        scopes = None
    if scopes is None or not all(_SCOPE_TOKEN.fullmatch(s) for s in scopes):
        raise InvalidToken("The access token's scope claim is malformed", reason="bad_scope")
    return frozenset(scopes)


def read_scopes(claims: Mapping[str, Any], names: Sequence[ClaimPath]) -> frozenset[str]:
    """The union of the scopes in every named claim that is present (see :func:`_scope_set`).

    A named claim present with an unusable type (or a path through a non-object)
    is a refusal, not an empty set: the issuer meant to say something we cannot read.
    """
    found: frozenset[str] = frozenset()
    for path in _paths(names, "scope_claims"):
        value = path.find(claims)
        if value is _ABSENT:
            continue
        if value is _UNUSABLE:
            raise InvalidToken("The access token's scope claim is malformed", reason="bad_scope")
        found = found | _scope_set(value) if found else _scope_set(value)
    return found


def _expectation(name: str, expected: Any) -> Callable[[Any], bool]:
    """A predicate for one ``expected_claims`` entry; values compare with their JSON type.

    ``True`` is not ``1`` and ``"2.0"`` is not ``2.0``: a claim of the wrong type is a
    different claim, whatever Python's ``==`` says.
    """
    if callable(expected):
        predicate: Callable[[Any], bool] = expected
        return predicate
    if isinstance(expected, str | bytes | Mapping) or not isinstance(expected, Collection):
        options: tuple[Any, ...] = (expected,)
    else:
        options = tuple(expected)
    if not options:
        raise ValueError(f"expected_claims[{name!r}] accepts no value at all")

    def accepts(value: Any) -> bool:
        return any(type(value) is type(o) and value == o for o in options)

    return accepts


class ClaimRules:
    """One issuer's header and claim checks, compiled from its :class:`Issuer`."""

    __slots__ = (
        "_client_id_claims",
        "_expected",
        "_scope_paths",
        "algorithms",
        "audiences",
        "client_ids",
        "issuer",
        "leeway",
        "required",
        "required_configured",
        "scope_claims",
        "scope_memo",
        "strict_typ",
        "template",
        "tenants",
    )

    def __init__(self, config: Issuer) -> None:
        # The Issuer checked its fields when made; claim paths and expectations are
        # compiled (and an impossible one refused) below.
        self.algorithms = frozenset(config.algorithms)
        self.issuer = config.issuer
        #: An issuer template's text before and after ``{tenantid}``; ``None`` otherwise.
        self.template: tuple[str, str] | None = None
        #: The tenants a template accepts; ``None`` for any (``tenants="*"``).
        self.tenants: frozenset[str] | None = None
        if config.tenants is not None:  # the Issuer checked the template is well formed
            before, _, after = config.issuer.partition(TENANT_PLACEHOLDER)
            self.template = (before, after)
            self.tenants = None if config.tenants == "*" else frozenset(config.tenants)
        self.audiences = frozenset(config.audiences)
        self.leeway = float(config.leeway)
        self.strict_typ = config.rfc9068
        required = list(config.required_claims)
        if config.rfc9068:
            required += [c for c in _RFC9068_REQUIRED if c not in required]
        self.required = tuple(required)
        self.required_configured = tuple(config.required_claims)
        self._scope_paths = _paths(config.scope_claims, "scope_claims")
        #: The scope claims as people read them (``inspect``, logs).
        self.scope_claims = tuple(str(p) for p in self._scope_paths)
        #: Scope strings already judged: an issuer's tokens repeat a handful of them.
        self.scope_memo: dict[str, frozenset[str]] = {}
        self._client_id_claims = tuple(config.client_id_claims)
        self.client_ids = frozenset(config.client_ids) if config.client_ids is not None else None
        expected = []
        for name, value in config.expected_claims.items():
            path = _ClaimPath(name, "expected_claims")
            expected.append((path, _expectation(name, value)))
        self._expected = tuple(expected)

    def scopes(self, claims: Mapping[str, Any]) -> frozenset[str]:
        """:func:`read_scopes` with this issuer's claims, remembering string values.

        The memo is bounded (it starts over at 256 entries), so a stream of distinct
        scope strings cannot grow it; a malformed value is never remembered. One
        claim present (the common case) gives its set as it is, with no union made.
        """
        found: frozenset[str] | None = None
        for path in self._scope_paths:
            # A plain name (nearly every issuer's) is one dict lookup, no method call.
            name = path.plain
            value = path.find(claims) if name is None else claims.get(name, _ABSENT)
            if value is _ABSENT or value is None:
                continue
            if type(value) is str:
                scopes = self.scope_memo.get(value)
                if scopes is None:
                    scopes = _scope_set(value)
                    if len(self.scope_memo) >= 256:
                        self.scope_memo.clear()
                    self.scope_memo[value] = scopes
            elif value is _UNUSABLE:
                raise InvalidToken(
                    f"The access token's {path} claim is malformed", reason="bad_scope"
                )
            else:
                scopes = _scope_set(value)
            found = scopes if found is None else found | scopes
        return found if found is not None else frozenset()

    def client_id(self, claims: Mapping[str, Any]) -> str | None:
        """The client the token was issued to: the first of ``client_id_claims`` present."""
        for name in self._client_id_claims:
            value = claims.get(name)
            if value is None:
                continue
            if type(value) is not str:
                raise InvalidToken(f"The access token's {name} is malformed", reason="bad_claim")
            return value
        return None

    def frames(self, iss: str) -> bool:
        """True when ``iss`` has this issuer template's shape (which tenant is judged later)."""
        template = self.template
        return (
            template is not None
            and len(iss) > len(template[0]) + len(template[1])
            and iss.startswith(template[0])
            and iss.endswith(template[1])
        )

    def _bad_iss(self, found: Any) -> InvalidToken:
        """The one refusal for an ``iss`` this issuer (or its template) does not name."""
        return InvalidToken(
            "The access token was not issued by a trusted issuer",
            reason="bad_iss",
            claim="iss",
            expected=self.issuer,
            found=found,
        )

    def check_tenant(
        self, claims: Mapping[str, Any], failures: list[InvalidToken] | None = None
    ) -> None:
        """A template's rule: ``tid`` fills it, the result is ``iss``, and the tenant is allowed."""
        assert self.template is not None
        tid = claims.get("tid")
        iss = claims.get("iss")
        if (
            type(tid) is not str
            or not TENANT_ID.fullmatch(tid)
            or iss != f"{self.template[0]}{tid}{self.template[1]}"
        ):
            fail(failures, self._bad_iss(iss))
        elif self.tenants is not None and tid not in self.tenants:
            fail(
                failures,
                InvalidToken(
                    "The access token's tenant is not allowed",
                    reason="bad_tenant",
                    claim="tid",
                    expected=sorted(self.tenants),
                    found=tid,
                ),
            )

    def key_allows(self, bound_issuer: str, claims: Mapping[str, Any]) -> bool:
        """Whether a key whose JWK names ``bound_issuer`` may sign this (judged) token.

        Entra ID's tenant-independent key set marks each key with the issuer it signs
        for: a template (any tenant, filled from ``tid``) or one issuer exactly (the
        consumer accounts' keys). A key is never used for another issuer's tokens.
        """
        iss = claims.get("iss")
        if TENANT_PLACEHOLDER not in bound_issuer:
            return iss == bound_issuer
        tid = claims.get("tid")
        return (
            type(tid) is str
            and TENANT_ID.fullmatch(tid) is not None
            and bound_issuer.replace(TENANT_PLACEHOLDER, tid) == iss
        )

    def check_header(
        self, header: Mapping[str, Any], failures: list[InvalidToken] | None = None
    ) -> str:
        """Judge the protected header; return its ``alg``.

        ``jku``, ``x5u``, ``jwk`` and ``x5c`` are never read: keys come only from the
        issuer's own JWKS (RFC 8725 §3.10), so a token cannot name its own key.
        With ``failures`` every broken rule is appended there instead of raised.
        """
        alg = header.get("alg")
        if type(alg) is not str or alg not in self.algorithms:
            fail(
                failures,
                InvalidToken(
                    "The access token's algorithm is not allowed",
                    reason="bad_alg",
                    claim="alg",
                    expected=sorted(self.algorithms),
                    found=alg,
                ),
            )
        if "crit" in header:
            # RFC 7515 §4.1.11: we understand no extension, so any crit is fatal.
            fail(
                failures,
                InvalidToken(
                    "The access token uses an unsupported extension",
                    reason="crit",
                    claim="crit",
                    expected=None,
                    found=header["crit"],
                ),
            )
        typ = header.get("typ")
        accepted = _AT_JWT if self.strict_typ else _LENIENT_TYP
        if typ is None:
            if self.strict_typ:
                fail(
                    failures,
                    InvalidToken(
                        "The access token is not an RFC 9068 JWT",
                        reason="bad_typ",
                        claim="typ",
                        expected=sorted(accepted),
                        found=None,
                    ),
                )
        elif type(typ) is not str or typ.lower() not in accepted:
            fail(
                failures,
                InvalidToken(
                    "The token is not an access token",
                    reason="bad_typ",
                    claim="typ",
                    expected=sorted(accepted),
                    found=typ,
                ),
            )
        if "kid" in header and type(header["kid"]) is not str:  # null included: no kid is absent
            fail(
                failures,
                InvalidToken(
                    "The access token is malformed",
                    reason="bad_kid",
                    claim="kid",
                    expected="a string",
                    found=header["kid"],
                ),
            )
        if "b64" in header:
            # RFC 7797 §7: the unencoded-payload option is not for JWTs, whatever its value.
            fail(
                failures,
                InvalidToken(
                    "The access token uses an unsupported extension",
                    reason="b64",
                    claim="b64",
                    expected=None,
                    found=header["b64"],
                ),
            )
        return alg if type(alg) is str else ""  # "" only when collecting

    def check_claims(
        self,
        claims: Mapping[str, Any],
        now: float,
        *,
        introspected: bool = False,
        failures: list[InvalidToken] | None = None,
    ) -> None:
        """Judge ``iss``, ``aud``, the dates and the required claims, one leeway for all.

        ``introspected``: an RFC 7662 answer (§2.2), where ``iss``, ``aud`` and ``exp``
        are optional and judged only when present, and RFC 9068's required claims
        do not apply; one code path judges both kinds of token alike.

        The first broken rule raises (the request path). With ``failures`` every
        broken rule is appended there instead, in the same order, so an explanation
        lists them all from the same code; each carries the claim, what was expected
        and what was found.
        """
        if self.template is not None:
            self.check_tenant(claims, failures)
        elif (not introspected or "iss" in claims) and claims.get("iss") != self.issuer:
            fail(failures, self._bad_iss(claims.get("iss")))
        aud = claims.get("aud")
        bad_aud: str | None = None
        if introspected and "aud" not in claims:
            pass
        elif not self.audiences:
            # No audience configured: client_ids decides who the token is for, but an
            # aud that is there must still be a StringOrURI or an array of them.
            if aud is not None and type(aud) is not str and not _strings(aud):
                bad_aud = "The access token's aud is malformed"
        elif type(aud) is str:
            if aud not in self.audiences:
                bad_aud = "The access token is not for this audience"
        elif _strings(aud) and aud:
            # RFC 7519 §4.1.3: each member is a StringOrURI; a list with anything
            # else is malformed, not a list to pick a match from.
            if not any(a in self.audiences for a in aud):
                bad_aud = "The access token is not for this audience"
        else:
            bad_aud = "The access token is not for this audience"
        if bad_aud is not None:
            fail(
                failures,
                InvalidToken(
                    bad_aud,
                    reason="bad_aud",
                    claim="aud",
                    expected=sorted(self.audiences),
                    found=aud,
                ),
            )
        leeway = self.leeway
        if not introspected or "exp" in claims:
            self._check_date(claims, "exp", now, leeway, failures)
        for name in ("nbf", "iat", "auth_time"):
            if name in claims:
                self._check_date(claims, name, now, leeway, failures)
        for name in self.required_configured if introspected else self.required:
            if claims.get(name) is None:
                fail(
                    failures,
                    InvalidToken(
                        f"The access token lacks the required claim {name!r}",
                        reason="missing_claim",
                        claim=name,
                        expected="present",
                        found=None,
                    ),
                )
        for name in ("sub", "client_id", "jti"):
            value = claims.get(name)
            if value is not None and type(value) is not str:
                fail(
                    failures,
                    InvalidToken(
                        f"The access token's {name} is malformed",
                        reason="bad_claim",
                        claim=name,
                        expected="a string",
                        found=value,
                    ),
                )
        if self.strict_typ and not introspected and type(claims.get("scope", "")) is not str:
            # RFC 9068 §2.2.3.1: scope is a space-delimited string, never a list.
            fail(
                failures,
                InvalidToken(
                    "The access token's scope claim is malformed",
                    reason="bad_scope",
                    claim="scope",
                    expected="a space-delimited string (RFC 9068 §2.2.3.1)",
                    found=claims.get("scope"),
                ),
            )
        client = self.client_id(claims)
        if self.client_ids is not None and client not in self.client_ids:
            fail(
                failures,
                InvalidToken(
                    "The access token was issued to a client this API does not accept",
                    reason="bad_client",
                    claim=" / ".join(self._client_id_claims),
                    expected=sorted(self.client_ids),
                    found=client,
                ),
            )
        for path, accepts in self._expected:
            value = path.find(claims)
            if value is _ABSENT:
                fail(
                    failures,
                    InvalidToken(
                        f"The access token lacks the required claim {str(path)!r}",
                        reason="missing_claim",
                        claim=str(path),
                        expected="present",
                        found=None,
                    ),
                )
                continue
            try:
                ok = value is not _UNUSABLE and accepts(value) is True
            except Exception:  # a predicate that cannot judge the value refuses it
                ok = False
            if not ok:
                fail(
                    failures,
                    InvalidToken(
                        f"The access token's {path} claim has a value this API does not accept",
                        reason="unexpected_claim",
                        claim=str(path),
                        expected="a value expected_claims accepts",
                        found=None if value is _UNUSABLE else value,
                    ),
                )

    @staticmethod
    def _check_date(
        claims: Mapping[str, Any],
        name: str,
        now: float,
        leeway: float,
        failures: list[InvalidToken] | None,
    ) -> None:
        """One NumericDate (RFC 7519 §2): a JSON number, and on the right side of now."""
        value = claims.get(name)
        if not _is_number(value):
            reason, description = _MALFORMED_DATE[name]
            fail(
                failures,
                InvalidToken(
                    description,
                    reason=reason,
                    claim=name,
                    expected="a NumericDate (a JSON number of seconds)",
                    found=value,
                ),
            )
        elif name == "exp":
            if now >= value + leeway:
                fail(
                    failures,
                    InvalidToken(
                        "The access token expired",
                        reason="expired",
                        claim="exp",
                        expected=f"later than {now - leeway:.0f} (now less the leeway)",
                        found=value,
                    ),
                )
        elif value > now + leeway:
            reason, description = _FUTURE_DATE[name]
            fail(
                failures,
                InvalidToken(
                    description,
                    reason=reason,
                    claim=name,
                    expected=f"at most {now + leeway:.0f} (now plus the leeway)",
                    found=value,
                ),
            )
