"""Why a token is accepted or refused, check by check: the engine behind ``bearerguard inspect``.

The validator decides, once, with a :class:`~bearerguard._trace.Trace`: which keys
it had, which one verified, whether the same-kid re-check ran, what introspection
answered, why an upstream failed, and every header and claim rule the token broke
(the rules collect their failures instead of stopping at the first). This module
renders that trace in words: it re-implements no check, reads no log, and sends a
token to the introspection endpoint at most once, so its verdict is the
middleware's.

Keys and metadata come from the configured issuer only; a URL inside the token
(``jku``, ``x5u``) is reported and ignored. The token itself is never printed or
logged: it is named by the first 12 hex characters of its SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from jwt.algorithms import get_default_algorithms

from bearerguard._claims import ClaimRules
from bearerguard._config import HMAC_ALGORITHMS, TENANT_PLACEHOLDER, Issuer
from bearerguard._errors import AuthError, InvalidToken, Reason, Unavailable
from bearerguard._jws import _b64decode, _json_object, looks_like_jws, parse_jws
from bearerguard._keys import VerificationKey
from bearerguard._metadata import discovery_urls
from bearerguard._trace import Trace
from bearerguard._validator import DEFAULT_MAX_TOKEN_LENGTH, TokenValidator

__all__ = ["Check", "Diagnosis", "diagnose", "thumbprint"]

Status = Literal["pass", "fail", "info", "skip"]
Verdict = Literal["valid", "invalid", "unavailable"]

#: Header members that name a key or where to fetch one: never used (RFC 8725 §3.10).
_KEY_SOURCE_HEADERS = ("jku", "x5u", "jwk", "x5c")
#: What other ``typ`` values announce, so a refusal can say what the token really is.
_TYP_MEANING = {
    "dpop+jwt": "a DPoP proof (RFC 9449; it travels in the DPoP header, beside the token)",
    "logout+jwt": "an OpenID Connect back-channel logout token",
    "secevent+jwt": "a Security Event Token (RFC 8417)",
    "id_token+jwt": "an ID token (meant for the client, never for an API)",
    "jwt-bearer+jwt": "a JWT client assertion (RFC 7523)",
    "client-authentication+jwt": "a client authentication assertion",
    "token-introspection+jwt": "a signed introspection response (RFC 9701)",
}
_ACCEPTED_TYP = "none, JWT, application/jwt, at+jwt, application/at+jwt"
_STRICT_TYP = "at+jwt or application/at+jwt"
#: RFC 7638 §3.2: the members a thumbprint is computed over, per key type.
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
_MAX_SHOWN = 120
#: The reasons the header, iss and claim renderings below put in their own words.
_HEADER: tuple[Reason, ...] = ("bad_alg", "crit", "bad_typ", "bad_kid", "b64")
_ISS: tuple[Reason, ...] = ("bad_iss", "bad_tenant")
_CLAIMS: tuple[Reason, ...] = (
    "bad_aud",
    "bad_exp",
    "expired",
    "bad_nbf",
    "not_yet_valid",
    "bad_iat",
    "iat_future",
    "missing_claim",
    "bad_claim",
)


@dataclass(frozen=True, slots=True)
class Check:
    """One rule: its name, pass/fail/info/skip, why in words, and the library's reason code."""

    name: str
    status: Status
    detail: str
    reason: Reason | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Diagnosis:
    """Everything ``inspect`` found out about one token; the token itself is not kept."""

    token_sha256: str
    length: int
    shape: str
    verdict: Verdict = "invalid"
    #: The validator's reason code and client-facing description (``None`` when valid).
    reason: Reason | None = None
    description: str = ""
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    signature: str | None = None
    scopes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "description": self.description,
            "token": {"sha256_prefix": self.token_sha256, "length": self.length},
            "shape": self.shape,
            "header": self.header,
            "claims": self.claims,
            "signature": self.signature,
            "scopes": self.scopes,
            "checks": [c.to_json() for c in self.checks],
        }


# -- words for values ------------------------------------------------------------------


def show(value: Any, limit: int = _MAX_SHOWN) -> str:
    """A value as JSON, ASCII only (no terminal escapes from a hostile token), cut to ``limit``."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value).encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def when(timestamp: float) -> str:
    """A NumericDate as ISO 8601 UTC, or a note when it is out of any calendar's range."""
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{timestamp!r} (not a representable date)"


def span(seconds: float) -> str:
    """A duration in words: ``1d 2h``, ``3m 4s``, ``0.5s``."""
    seconds = abs(seconds)
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


def thumbprint(key: VerificationKey) -> str | None:
    """The key's RFC 7638 JWK thumbprint (SHA-256, base64url), the name a key keeps across kids."""
    members = _THUMBPRINT_MEMBERS.get(key.kty)
    if members is None:
        return None
    try:
        jwk: Any = get_default_algorithms()[key.alg].to_jwk(key._key, as_dict=True)
        canonical = {m: jwk[m] for m in members}
    except Exception:  # a key type pyjwt cannot export: no thumbprint, no failure
        return None
    digest = hashlib.sha256(
        json.dumps(canonical, separators=(",", ":"), sort_keys=True).encode()
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _describe_key(key: VerificationKey) -> str:
    tp = thumbprint(key)
    return f"kid {show(key.kid)} ({key.kty} key for {key.alg}" + (
        f", thumbprint {tp})" if tp else ")"
    )


def issuer_difference(found: Any, expected: str) -> str:
    """What differs between the token's ``iss`` and the configured issuer, in words."""
    if found is None:
        return "the token has no iss claim"
    if not isinstance(found, str):
        return f"iss is {_type_name(found)}, not a string"
    if found.rstrip("/") == expected.rstrip("/"):
        if found.endswith("/"):
            return "the token's iss ends with a slash and the configured issuer does not"
        return "the configured issuer ends with a slash and the token's iss does not"
    if found.lower() == expected.lower():
        return "they differ only in upper/lower case"
    a, b = urlsplit(found), urlsplit(expected)
    if a.scheme != b.scheme:
        return f"the scheme differs ({a.scheme or 'none'} vs {b.scheme or 'none'})"
    if a.netloc != b.netloc:
        return f"the host differs ({show(a.netloc)} vs {show(b.netloc)})"
    if a.path != b.path:
        return f"the path differs ({show(a.path)} vs {show(b.path)})"
    return "they are different strings"


# -- the inspection ------------------------------------------------------------------------


async def diagnose(
    token: str,
    issuer: Issuer,
    *,
    client: httpx.AsyncClient | None = None,
    max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH,
    required_scopes: tuple[str, ...] = (),
    clock: Callable[[], float] = time.time,
) -> Diagnosis:
    """Judge ``token`` as a middleware configured with ``issuer`` would, explaining each rule.

    Raises ``ValueError`` for a configuration the middleware would refuse too.
    """
    validator = TokenValidator(
        [issuer], client=client, max_token_length=max_token_length, cache_size=0, clock=clock
    )
    report = Diagnosis(
        token_sha256=hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:12],
        length=len(token),
        shape="unknown",
    )
    trace = Trace()
    try:
        with contextlib.suppress(AuthError):  # the trace holds the refusal
            await validator.validate(token, trace=trace)
        _verdict(report, trace, required_scopes)
        # The issuer's rules, compiled as the validator compiles them: for their words,
        # and to collect the faults of a token whose iss the validator did not accept.
        rules = ClaimRules(issuer)
        inspector = _Inspector(
            report, issuer, rules, trace, clock(), max_token_length, required_scopes
        )
        try:
            inspector.run(token)
        except Exception as exc:  # a bug in the words must not hide the verdict
            report.checks.append(
                Check(
                    "inspect",
                    "info",
                    f"the step-by-step explanation stopped early ({type(exc).__name__}); "
                    "the verdict below is still the validator's",
                )
            )
        _consistency(report)
    finally:
        await validator.aclose()
    return report


def _verdict(report: Diagnosis, trace: Trace, required: tuple[str, ...]) -> None:
    """The validator's own answer: the one the middleware would give."""
    error = trace.error
    if isinstance(error, Unavailable):
        report.verdict, report.reason = "unavailable", error.reason
        report.description = error.description
    elif error is not None:
        report.verdict, report.reason = "invalid", error.reason
        report.description = error.description
    elif trace.access is not None:
        report.verdict = "valid"
        report.scopes = sorted(trace.access.scopes)
        if any(s not in trace.access.scopes for s in required):
            report.verdict, report.reason = "invalid", "insufficient_scope"
            report.description = "The access token lacks a required scope"


def _consistency(report: Diagnosis) -> None:
    """The words must agree with the verdict; say so when they do not."""
    if report.verdict == "valid" and report.failed:
        report.checks.append(
            Check(
                "consistency",
                "info",
                "the validator accepted the token although a step above failed; "
                "trust the validator's verdict and please report this",
            )
        )
    elif report.verdict == "invalid" and not report.failed:
        report.checks.append(
            Check(
                "validator",
                "fail",
                f"the validator refused the token: {report.description}",
                report.reason,
            )
        )


class _Inspector:
    """One token's walk through the rules, in the validator's order, adding words to each."""

    def __init__(
        self,
        report: Diagnosis,
        config: Issuer,
        rules: ClaimRules,
        trace: Trace,
        now: float,
        max_token_length: int,
        required_scopes: tuple[str, ...] = (),
    ) -> None:
        self.required_scopes = required_scopes
        self.report = report
        self.config = config
        self.trace = trace
        self.rules = rules
        self.now = now
        self.max_token_length = max_token_length

    def add(self, name: str, status: Status, detail: str, reason: Reason | None = None) -> None:
        self.report.checks.append(Check(name, status, detail, reason))

    def run(self, token: str) -> None:
        if not self._size(token):
            return
        if not self._shape(token):
            if self.report.shape == "opaque" and self.trace.kind == "opaque":
                self._introspection()
            return
        decoded = self._decode(token)
        if decoded is None:
            return
        header, claims = decoded
        failures = self._failures(header, claims)
        alg = self._header(header, failures)
        self._iss(claims, failures)
        if alg is not None and self.report.shape == "JWS":
            self._signature(alg, header_refused=any(f.reason in _HEADER for f in failures))
        self._claims(claims, failures)
        self._scopes(claims)
        self._binding(claims)
        if self.trace.kind == "jwt" and self.trace.introspection_endpoint is not None:
            self._introspection_of_a_jwt()

    def _introspection_of_a_jwt(self) -> None:
        """``introspect_all``: what the endpoint said of a JWT that passed every other check."""
        trace, config = self.trace, self.config
        if trace.introspection is None:
            error = trace.error
            why = trace.upstream_error or (error.description if error is not None else "")
            self.add(
                "introspection",
                "fail",
                f"{trace.introspection_endpoint} gave no usable answer ({why}); with "
                "introspect_all the middleware answers 503 with Retry-After",
                error.reason if error is not None else None,
            )
            return
        self.add(
            "introspection",
            "pass",
            f"{trace.introspection_endpoint} answered (as client {show(config.client_id)}, "
            f"{config.introspection_auth}): every JWT is also asked about (introspect_all)",
        )
        if not trace.introspection_failures:
            self.add("active", "pass", "true: the issuer vouches for the token")
        for failure in trace.introspection_failures:
            if failure.reason == "inactive":
                detail = (
                    "the issuer says the token is not active: revoked, though its signature "
                    "and claims are fine (RFC 7662 §2.2)"
                )
                self.add("active", "fail", detail, "inactive")
            else:
                self.add(
                    "introspected " + (failure.claim or "claims"),
                    "fail",
                    _detail(failure),
                    failure.reason,
                )

    def _failures(self, header: dict[str, Any], claims: dict[str, Any]) -> list[InvalidToken]:
        """Every header and claim rule broken: the validator's, or (when it could not pick
        this issuer, say for a foreign ``iss``) the same rules run here in collect mode."""
        if self.trace.kind == "jwt":
            return self.trace.failures
        failures: list[InvalidToken] = []
        self.rules.check_header(header, failures)
        self.rules.check_claims(claims, self.now, failures=failures)
        return failures

    # -- before decoding -------------------------------------------------------------

    def _size(self, token: str) -> bool:
        limit = self.max_token_length
        if len(token) > limit:
            self.report.shape = "oversized"
            self.add(
                "size",
                "fail",
                f"the token is {len(token):,} characters; bearerguard refuses anything over "
                f"{limit:,} (max_token_length) before decoding it, so nothing else was checked",
                "too_large",
            )
            return False
        self.add("size", "pass", f"{len(token):,} characters (limit {limit:,})")
        return True

    def _shape(self, token: str) -> bool:
        parts = token.split(".")
        if looks_like_jws(token):
            self.report.shape = "JWS"
            self.add("shape", "pass", "three base64url parts: a signed JWT (JWS compact form)")
            return True
        if len(parts) == 5:
            self.report.shape = "JWE"
            try:
                header = _json_object(parts[0])
            except (ValueError, binascii.Error, UnicodeError, RecursionError):
                header = None
            self.report.header = header
            enc = (
                f" (alg {show(header.get('alg'))}, enc {show(header.get('enc'))})" if header else ""
            )
            self.add(
                "shape",
                "fail",
                f"five parts: an encrypted JWT (JWE){enc}. bearerguard accepts signed JWTs "
                "only; it holds no decryption key, so it cannot read, let alone verify, this "
                "token. Ask the authorization server for an unencrypted (JWS) access token "
                "for this API",
                "jwe",
            )
            return False
        if len(parts) == 3 and parts[0] and parts[1] and not parts[2]:
            self.report.shape = "unsigned JWT"
            self.add(
                "shape",
                "fail",
                "three parts but the signature part is empty: an unsigned JWT, which is never "
                "accepted (RFC 8725 §3.2)",
                "malformed",
            )
            return True  # decode it anyway, to show what it claims
        if len(parts) == 3:
            self.report.shape = "malformed"
            self.add("shape", "fail", _why_not_base64url(parts), "malformed")
            return False
        self.report.shape = "opaque"
        what = (
            f"not a JWT ({len(parts)} dot-separated part{'s' if len(parts) != 1 else ''}; a JWT "
            "has 3, a JWE 5): an opaque token, which only the authorization server can "
            "read (RFC 7662 introspection)"
        )
        if self.trace.kind == "opaque":
            self.add("shape", "info", what)
        else:
            self.add(
                "shape",
                "fail",
                f"{what}. Without introspection credentials (--client-id and "
                "--client-secret-env here, client_id and client_secret in the middleware) "
                "it is refused",
                "malformed",
            )
        return False

    def _decode(self, token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        head, payload, signature = token.split(".")
        decoded: list[dict[str, Any]] = []
        for name, segment in (("header", head), ("claims", payload)):
            try:
                decoded.append(_json_object(segment))
            except (ValueError, binascii.Error, UnicodeError, RecursionError) as exc:
                self.add("decode", "fail", f"the {name} part {_json_problem(exc)}", "malformed")
                if decoded:
                    self.report.header = decoded[0]
                return None
        header, claims = decoded
        self.report.header, self.report.claims = header, claims
        if self.report.shape == "JWS":
            try:
                raw = _b64decode(signature)
                parse_jws(token)  # the validator's own parser must agree
            except (ValueError, binascii.Error, InvalidToken) as exc:
                self.add("decode", "fail", f"the signature part {_json_problem(exc)}", "malformed")
                return None
            self.report.signature = f"{len(raw)} bytes, begins {signature[:6]}… (not shown)"
        self.add(
            "decode", "pass", "header and claims are strict JSON objects (decoded, not trusted)"
        )
        return header, claims

    # -- the header ------------------------------------------------------------------

    def _header(self, header: dict[str, Any], failures: list[InvalidToken]) -> str | None:
        """The header rules, in words; the alg when the signature could be judged."""
        found = _by_reason(failures, _HEADER)
        self._alg(header, found.get("bad_alg"))
        self._typ(header, found.get("bad_typ"))
        if found.get("crit"):
            self.add(
                "crit",
                "fail",
                f"crit {show(header.get('crit'))} lists extensions the recipient must understand; "
                "bearerguard understands none, so it must refuse the token (RFC 7515 §4.1.11)",
                "crit",
            )
        if found.get("b64"):
            self.add(
                "b64",
                "fail",
                f"b64 {show(header.get('b64'))}: the unencoded-payload option (RFC 7797) is not "
                "for JWTs, whatever its value (RFC 7797 §7)",
                "b64",
            )
        if found.get("bad_kid"):
            self.add(
                "kid",
                "fail",
                f"kid is {_type_name(header.get('kid'))} ({show(header.get('kid'))}); "
                "it must be a string",
                "bad_kid",
            )
        for name in _KEY_SOURCE_HEADERS:
            if name in header:
                self.add(
                    name,
                    "info",
                    f"ignored: {name} {show(header[name], 60)} names a key source, but keys "
                    "come only from the configured issuer's JWKS, never from the token "
                    "(RFC 8725 §3.10)",
                )
        alg = header.get("alg")
        return alg if "bad_alg" not in found and "bad_kid" not in found else None

    def _alg(self, header: dict[str, Any], failure: InvalidToken | None) -> None:
        alg = header.get("alg")
        allowed = ", ".join(self.config.algorithms)
        if failure is None:
            self.add("alg", "pass", f"{alg} is on the allowlist ({allowed})")
            return
        if alg is None:
            detail = "the header has no alg"
        elif not isinstance(alg, str):
            detail = f"alg is {_type_name(alg)}, not a string"
        elif alg.lower() == "none":
            detail = (
                f"alg {show(alg)} means the token is not signed at all: anyone could have "
                "written it. It is never accepted, whatever the configuration (RFC 8725 §3.1)"
            )
        elif alg in HMAC_ALGORITHMS:
            detail = (
                f"alg {alg} is HMAC, verified with a shared secret, but this API trusts the "
                f"issuer's public keys ({allowed}). Accepting it would let anyone who knows the "
                "public key forge tokens (algorithm confusion, RFC 8725 §2.1). HMAC is only "
                "allowed with a shared_secret configured on purpose"
            )
        else:
            detail = (
                f"alg {show(alg)} is not on this API's allowlist ({allowed}); add it "
                "(--algorithms, algorithms=) only if the issuer really signs with it"
            )
        self.add("alg", "fail", detail, "bad_alg")

    def _typ(self, header: dict[str, Any], failure: InvalidToken | None) -> None:
        strict = self.rules.strict_typ
        typ = header.get("typ")
        if failure is None:
            if typ is None:
                self.add("typ", "pass", "absent: accepted (--rfc9068 would require at+jwt)")
            else:
                self.add("typ", "pass", f"{show(typ)} names an access token")
            return
        if typ is None:
            detail = f"absent, but RFC 9068 mode (--rfc9068) requires {_STRICT_TYP}"
        elif not isinstance(typ, str):
            detail = f"typ is {_type_name(typ)}, not a string"
        else:
            meaning = _TYP_MEANING.get(typ.lower())
            detail = f"typ {show(typ)} " + (
                f"marks {meaning}, not an access token"
                if meaning
                else "names another kind of token"
            )
            detail += f"; accepted: {_STRICT_TYP if strict else _ACCEPTED_TYP}"
            if strict and typ.lower() in ("jwt", "application/jwt"):
                detail += " (RFC 9068 mode is on)"
        self.add("typ", "fail", detail, "bad_typ")

    # -- iss, before keys: the validator picks the issuer by it ------------------------

    def _iss(self, claims: dict[str, Any], failures: list[InvalidToken]) -> None:
        found = claims.get("iss")
        expected = self.rules.issuer
        refused = _by_reason(failures, ("bad_iss", "bad_tenant"))
        if self.rules.template is not None:
            self._iss_template(claims, next(iter(refused.values()), None))
            return
        if not refused:
            self.add("iss", "pass", f"{show(found)} equals the configured issuer exactly")
            return
        self.add(
            "iss",
            "fail",
            f"token iss {show(found)} vs configured issuer {show(expected)}: "
            f"{issuer_difference(found, expected)}. Issuers are compared exactly, no trimming "
            "(RFC 8414 §3.3, RFC 9068 §4): configure the value the issuer writes in iss (its "
            "discovery document's issuer)",
            "bad_iss",
        )

    def _iss_template(self, claims: dict[str, Any], error: InvalidToken | None) -> None:
        """An issuer template: ``tid`` fills it, the result must be ``iss``, the tenant allowed."""
        rules = self.rules
        found, tid = claims.get("iss"), claims.get("tid")
        tenants = (
            "any tenant" if rules.tenants is None else f"tenants {show(sorted(rules.tenants))}"
        )
        if error is not None:
            if error.reason == "bad_tenant":
                detail = f"tid {show(tid)} is not among the allowed {tenants}"
            elif not isinstance(tid, str):
                detail = f"the token has no usable tid ({show(tid)}) to fill {show(rules.issuer)}"
            else:
                filled = rules.issuer.replace(TENANT_PLACEHOLDER, tid)
                detail = (
                    f"the template {show(rules.issuer)} filled with tid {show(tid)} gives "
                    f"{show(filled)}, but the token's iss is {show(found)}"
                )
            self.add("iss", "fail", detail, error.reason)
            return
        self.add(
            "iss",
            "pass",
            f"{show(found)} is the template {show(rules.issuer)} filled with tid {show(tid)} "
            f"({tenants} accepted)",
        )

    # -- keys and the signature ----------------------------------------------------------

    def _signature(self, alg: str, *, header_refused: bool) -> None:
        """What the validator did with keys: which it had, which fitted, which verified."""
        trace = self.trace
        error = trace.error
        reason = error.reason if error is not None else None
        if trace.key is not None:
            self._metadata_check()
            self._keys_check()
            self.add("kid", "pass", f"found: {_describe_key(trace.key)}")
            again = (
                " after re-fetching the keys (the kid's key was replaced)"
                if trace.rechecked
                else ""
            )
            self.add("signature", "pass", f"verified with {_describe_key(trace.key)}{again}")
            if reason == "key_issuer":
                bound = trace.key.bound_issuer
                self.add(
                    "key issuer",
                    "fail",
                    f"the key's JWK says it signs for {show(bound)} only; the token's iss "
                    f"is {show((self.report.claims or {}).get('iss'))}",
                    "key_issuer",
                )
            return
        if header_refused or trace.kind != "jwt":
            self.add("signature", "skip", "not checked: the token was refused before its keys")
            return
        if alg in HMAC_ALGORITHMS and reason == "no_key":
            self.add("signature", "skip", "HMAC tokens need the shared secret; inspect has none")
            return
        if isinstance(error, Unavailable):
            self._upstream_failed(error)
            self.add("signature", "skip", "not checked: no keys to check it with")
            return
        self._metadata_check()
        self._keys_check()
        kid = trace.kid
        if reason == "unknown_kid":
            kids = sorted({str(k.kid) for k in trace.published})
            self.add(
                "kid",
                "fail",
                f"unknown kid {show(kid)}: the issuer publishes kids {show(kids, 400)} "
                "(asked again once, as the middleware does on a new kid). The token was "
                "signed with a key this issuer does not publish: another issuer or "
                "environment, or a key already removed",
                "unknown_kid",
            )
            self.add("signature", "skip", "not checked: no key to check it with")
            return
        if reason == "no_key" or not trace.candidates:
            self._no_fitting_key(kid, alg)
            return
        candidates = trace.candidates
        if kid is None:
            self.add("kid", "info", f"no kid: tried the {len(candidates)} key(s) for {alg}")
        else:
            self.add("kid", "pass", f"found: {_describe_key(candidates[0])}")
        tried = (
            f"any of the {len(candidates)} keys for {alg}"
            if len(candidates) > 1
            else _describe_key(candidates[0])
        )
        again = ", nor after re-fetching the keys once" if trace.rechecked else ""
        self.add(
            "signature",
            "fail",
            f"does not verify with {tried}{again}: the token was changed after it was "
            "signed, or signed by another key under the same kid",
            "bad_signature",
        )

    def _no_fitting_key(self, kid: str | None, alg: str) -> None:
        same_kid = [k for k in self.trace.published if k.kid == kid]
        if kid is not None and same_kid:
            fits = ", ".join(sorted({f"{k.kty} for {k.alg}" for k in same_kid}))
            detail = f"kid {show(kid)} is published, but as {fits}, not for {alg}"
        else:
            detail = f"the issuer publishes no key usable for {alg}"
        self.add("kid", "fail", detail, "no_key")
        self.add("signature", "skip", "not checked: no key fits the token's alg")

    def _metadata_check(self) -> None:
        config = self.config
        if config.jwks_uri is not None or not config.discovery:
            self.add("metadata", "skip", f"discovery skipped: jwks_uri {show(config.jwks_uri)}")
            return
        if self.trace.metadata_url is None:
            return
        self.add(
            "metadata",
            "pass",
            f"{self.trace.metadata_url}: issuer matches; jwks_uri {show(self.trace.jwks_uri)}",
        )

    def _keys_check(self) -> None:
        keys = self.trace.published
        if not keys:
            return
        by_kid: dict[str, set[str]] = {}
        for key in keys:
            by_kid.setdefault(str(key.kid), set()).add(f"{key.kty} {key.alg}")
        listing = "; ".join(f"{kid}: {', '.join(sorted(v))}" for kid, v in sorted(by_kid.items()))
        skipped = self.trace.skipped_keys
        unusable = f" ({skipped} unusable key(s) skipped)" if skipped else ""
        self.add("keys", "pass", f"{len(by_kid)} key(s) published{unusable}: {listing}")

    def _upstream_failed(self, error: Unavailable) -> None:
        """Say which fetch failed (metadata or JWKS), where, and why, in the upstream's words."""
        config = self.config
        why = self.trace.upstream_error or error.description
        answer = (
            f"The middleware answers 503 with Retry-After ({error.retry_after}s) here, not "
            "401: the token may well be fine"
        )
        if self.trace.jwks_uri is None and config.jwks_uri is None:
            where = config.metadata_url or " or ".join(discovery_urls(config.issuer))
            self.add(
                "metadata",
                "fail",
                f"could not get the issuer's metadata from {where}: {why}. {answer}",
                "metadata_unavailable",
            )
            self.add("keys", "skip", "not fetched: the metadata names where the keys are")
            return
        self._metadata_check()
        self.add(
            "keys",
            "fail",
            f"could not get the issuer's keys from {self.trace.jwks_uri}: {why}. {answer}",
            error.reason,
        )

    # -- opaque tokens: RFC 7662 ----------------------------------------------------------

    def _introspection(self) -> None:
        """What the introspection endpoint answered the validator (asked once), judged."""
        trace, error = self.trace, self.trace.error
        config = self.config
        endpoint = trace.introspection_endpoint
        if endpoint is None:
            if isinstance(error, Unavailable):
                self._upstream_failed(error)
            elif error is not None and error.reason == "no_introspection":
                self.add(
                    "introspection",
                    "fail",
                    "the issuer's metadata names no introspection_endpoint; give one with "
                    "--introspection-endpoint (introspection_endpoint= in the middleware)",
                    "no_introspection",
                )
            return
        document = trace.introspection
        if document is None:
            why = trace.upstream_error or (error.description if error is not None else "")
            self.add(
                "introspection",
                "fail",
                f"{endpoint} gave no usable answer ({why}); a 401 here means it refused the "
                f"credentials of client {show(config.client_id)}. The middleware answers 503 "
                "with Retry-After, not 401: the token may well be fine",
                error.reason if error is not None else None,
            )
            return
        claims = dict(document)
        self.report.claims = claims
        self.add(
            "introspection",
            "pass",
            f"{endpoint} answered (as client {show(config.client_id)}, "
            f"{config.introspection_auth})",
        )
        failures = trace.failures
        found = _by_reason(failures, ("inactive", "bad_token_type"))
        active = claims.get("active")
        if "inactive" in found:
            detail = (
                "the issuer says the token is not active: expired, revoked, or not one it "
                "issued (RFC 7662 §2.2)"
            )
            if "active" in claims and active is not False:
                detail = (
                    f"active is {_type_name(active)} ({show(active)}); only the JSON value "
                    "true means active (RFC 7662 §2.2)"
                )
            self.add("active", "fail", detail, "inactive")
            return
        self.add("active", "pass", "true: the issuer vouches for the token")
        token_type = claims.get("token_type")
        if "bad_token_type" in found:
            self.add(
                "token_type",
                "fail",
                f"token_type {show(token_type)}: not an access token this API takes (a "
                "refresh token, or DPoP without the cnf.jkt of its key)",
                "bad_token_type",
            )
        elif token_type is not None:
            dpop = str(token_type).lower() == "dpop"
            bound = " (bound to a DPoP key: taken only with its proof)" if dpop else ""
            self.add("token_type", "pass", f"{show(token_type)}{bound}")
        if "iss" in claims:
            self._iss(claims, failures)
        self._claims(claims, failures, introspected=True)
        self._scopes(claims)
        self._binding(claims)

    # -- claims --------------------------------------------------------------------------

    def _claims(
        self, claims: dict[str, Any], failures: list[InvalidToken], *, introspected: bool = False
    ) -> None:
        """Each claim rule, in words, from the failures the rules collected."""
        found = _by_reason(failures, _CLAIMS)
        self._aud(claims, found.get("bad_aud"))
        self._exp(claims, found.get("bad_exp") or found.get("expired"))
        self._date(claims, "nbf", found.get("bad_nbf") or found.get("not_yet_valid"))
        self._date(claims, "iat", found.get("bad_iat") or found.get("iat_future"))
        self._required(claims, found.get("missing_claim"), found.get("bad_claim"), introspected)
        for failure in failures:
            if failure.reason not in _CLAIMS and failure.reason not in _HEADER + _ISS:
                # A rule without words of its own: its description and structured detail.
                self.add(failure.claim or "claims", "fail", _detail(failure), failure.reason)

    def _aud(self, claims: dict[str, Any], failure: InvalidToken | None) -> None:
        configured = sorted(self.rules.audiences)
        aud = claims.get("aud")
        if failure is None:
            if "aud" in claims:
                self.add("aud", "pass", f"{show(aud)} contains a configured audience")
            else:
                self.add("aud", "pass", "absent (optional in an introspection answer)")
            return
        if "aud" not in claims:
            detail = (
                "the token has no aud claim, so it does not say which API it is for; "
                f"this API needs one of {show(configured)} (RFC 9068 §2.2)"
            )
        elif not isinstance(aud, str | list) or aud == []:
            detail = f"aud is {_type_name(aud)} {show(aud)}; it must be a string or non-empty array"
        else:
            detail = (
                f"token aud {show(aud)} contains none of the configured audiences "
                f"{show(configured)}"
            )
            values = [aud] if isinstance(aud, str) else aud
            near = [
                v
                for v in values
                if isinstance(v, str) and v.rstrip("/") in {c.rstrip("/") for c in configured}
            ]
            if near:
                detail += (
                    f" ({show(near[0])} differs only by a trailing slash; audiences are "
                    "compared exactly)"
                )
            detail += ". The token was issued for another API (RFC 7519 §4.1.3)"
        self.add("aud", "fail", detail, "bad_aud")

    def _clock_note(self) -> str:
        return f"local clock {when(self.now)}, leeway {self.rules.leeway:g} s"

    def _exp(self, claims: dict[str, Any], failure: InvalidToken | None) -> None:
        exp = claims.get("exp")
        if failure is None:
            if isinstance(exp, int | float) and not isinstance(exp, bool):
                left = exp - self.now
                when_text = (
                    f"expires in {span(left)}"
                    if left >= 0
                    else f"expired {span(left)} ago but within the leeway"
                )
                self.add("exp", "pass", f"{when_text}, at {when(exp)} ({self._clock_note()})")
            else:
                self.add("exp", "pass", "absent, and not required here")
            return
        if failure.reason == "bad_exp":
            if "exp" not in claims or exp is None:
                detail = (
                    "the token has no exp claim; bearerguard requires one, since a token "
                    "without an expiry would be valid forever (RFC 9068 §2.2)"
                )
            else:
                detail = (
                    f"exp is {_type_name(exp)} ({show(exp)}); it must be a JSON number of "
                    "seconds since 1970 (NumericDate, RFC 7519 §2)"
                )
            self.add("exp", "fail", detail, "bad_exp")
            return
        assert isinstance(exp, int | float)
        ago = self.now - exp
        self.add(
            "exp",
            "fail",
            f"expired {span(ago)} ago, at {when(exp)} ({self._clock_note()}). Get a new "
            "token; if it was issued just now, this machine's clock or the issuer's is wrong",
            "expired",
        )

    def _date(self, claims: dict[str, Any], name: str, failure: InvalidToken | None) -> None:
        value: Any = claims.get(name)
        if failure is None:
            if name not in claims:
                self.add(name, "pass", "absent (optional)")
            else:
                delta = value - self.now
                rel = (
                    f"{span(delta)} ago"
                    if delta <= 0
                    else f"{span(delta)} from now, within the leeway"
                )
                self.add(name, "pass", f"{when(value)}, {rel} ({self._clock_note()})")
            return
        if failure.reason in ("bad_nbf", "bad_iat"):
            self.add(
                name,
                "fail",
                f"{name} is {_type_name(value)} ({show(value)}); it must be a JSON number "
                "(NumericDate, RFC 7519 §2)",
                failure.reason,
            )
            return
        ahead = value - self.now
        if name == "nbf":
            detail = (
                f"not valid yet: nbf {when(value)} is {span(ahead)} from now "
                f"({self._clock_note()}). Wait, or check this machine's clock"
            )
        else:
            detail = (
                f"issued in the future: iat {when(value)} is {span(ahead)} ahead of the local "
                f"clock ({self._clock_note()}). The issuer's clock or this machine's is off "
                "by at least that much; check NTP on both"
            )
        self.add(name, "fail", detail, failure.reason)

    def _required(
        self,
        claims: dict[str, Any],
        missing: InvalidToken | None,
        bad: InvalidToken | None,
        introspected: bool = False,
    ) -> None:
        names = self.rules.required_configured if introspected else self.rules.required
        required = [n for n in names if n != "exp"]
        if missing is not None:
            absent = [n for n in names if claims.get(n) is None]
            why = " (RFC 9068 mode)" if self.rules.strict_typ and not introspected else ""
            self.add(
                "required",
                "fail",
                f"missing required claim(s) {show(absent)}{why}; required: {show(list(names))}",
                "missing_claim",
            )
        elif required:
            self.add("required", "pass", f"present: {', '.join(required)}")
        if bad is not None:
            wrong = [
                f"{n} is {_type_name(claims[n])}"
                for n in ("sub", "client_id", "jti")
                if n in claims and claims[n] is not None and not isinstance(claims[n], str)
            ]
            self.add(
                "claim types",
                "fail",
                f"{'; '.join(wrong)}; these claims must be strings",
                "bad_claim",
            )

    def _binding(self, claims: dict[str, Any]) -> None:
        """A token bound to a key (RFC 7800 ``cnf``) is taken only with its proof: say which."""
        cnf = claims.get("cnf")
        if type(cnf) is not dict or not cnf:
            return  # absent, or malformed (the validator's bad_cnf is reported above)
        needs = []
        for method, value in cnf.items():
            if method == "jkt":
                needs.append(
                    f"`Authorization: DPoP` with a DPoP proof signed by the key {show(value)} "
                    "(RFC 9449)"
                )
            elif method == "x5t#S256":
                needs.append(f"the client certificate of thumbprint {show(value)} (RFC 8705)")
            else:
                needs.append(f"a proof of {show(method)}, which bearerguard cannot check")
        self.add(
            "binding",
            "info",
            f"bound to a key (cnf): the API takes it only with {' and '.join(needs)}; "
            "sent as a plain Bearer token it is refused (401 invalid_token)",
        )

    def _scopes(self, claims: dict[str, Any]) -> None:
        names = self.rules.scope_claims
        try:
            scopes = self.rules.scopes(claims)
        except InvalidToken as error:
            self.add(
                "scopes",
                "fail",
                f"{error.description}: each of {', '.join(names)} must be a space-delimited "
                "string or an array of scope tokens where present",
                error.reason,
            )
            return
        if scopes:
            origin = [n for n in names if claims.get(n, claims.get(n.split(".")[0])) is not None]
            self.report.scopes = sorted(scopes)
            self.add(
                "scopes",
                "info",
                f"granted: {' '.join(sorted(scopes))} (from {', '.join(origin) or '?'})",
            )
        else:
            self.add("scopes", "info", f"none granted (looked in {', '.join(names)})")
        if not self.required_scopes:
            return
        missing = [s for s in self.required_scopes if s not in scopes]
        if missing:
            self.add(
                "required scopes",
                "fail",
                f"the route needs {' '.join(self.required_scopes)}; the token lacks "
                f"{' '.join(missing)}: a valid token, but the API answers 403 "
                "insufficient_scope (ask for the scope when requesting the token)",
                "insufficient_scope",
            )
        else:
            self.add("required scopes", "pass", f"all granted: {' '.join(self.required_scopes)}")


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, binascii.Error) or "base64" in str(exc):
        return f"is not valid base64url ({exc})"
    if isinstance(exc, UnicodeError):
        return "does not decode to UTF-8 text"
    if isinstance(exc, RecursionError):
        return "is JSON nested too deeply"
    if isinstance(exc, InvalidToken):
        return "is malformed"
    return f"is not a strict JSON object: {exc}"


def _why_not_base64url(parts: list[str]) -> str:
    empty = [n for n, p in zip(("header", "claims", "signature"), parts, strict=True) if not p]
    if empty:
        return f"three parts, but the {' and '.join(empty)} part is empty"
    odd = sorted({c for c in "".join(parts) if not (c.isascii() and (c.isalnum() or c in "-_"))})
    if odd:
        return (
            f"three parts, but with characters base64url does not use ({show(''.join(odd), 40)}): "
            "padding '=' or the '+' '/' of plain base64 are not allowed in a JWS"
        )
    return "three parts, but not a well-formed JWS"


def _by_reason(
    failures: list[InvalidToken], reasons: tuple[Reason, ...]
) -> dict[Reason, InvalidToken]:
    """The first failure of each of ``reasons``, by reason."""
    found: dict[Reason, InvalidToken] = {}
    for failure in failures:
        if failure.reason in reasons:
            found.setdefault(failure.reason, failure)
    return found


def _detail(failure: InvalidToken) -> str:
    """A refusal in words from its structured detail: the claim, what was expected, found."""
    text = failure.description
    if failure.claim is not None:
        text += f": {failure.claim} is {show(failure.found)}"
        if failure.expected is not None:
            text += f", expected {show(failure.expected)}"
    return text
