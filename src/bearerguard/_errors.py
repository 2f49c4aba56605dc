"""The answers bearerguard gives, as exceptions that carry their RFC 6750 shape.

Every rejection in the library is one of these, so the middleware has exactly one
place (:mod:`bearerguard._challenge`) that turns a failure into an HTTP answer and no
failure can escape as a 500.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias, get_args

__all__ = [
    "REASONS",
    "AuthError",
    "InsufficientScope",
    "InsufficientUserAuthentication",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "MissingToken",
    "RateLimited",
    "Reason",
    "Unavailable",
    "UseDPoPNonce",
    "signature_refused",
]

#: Every machine-readable reason a refusal can carry: a closed set, so a misspelled
#: reason in a raise, a metric label or a log filter fails ``mypy``, and dashboards
#: can list every value in advance. The last three are the defaults of a bare error
#: class (an application raising ``InvalidToken("...")`` from a route).
Reason: TypeAlias = Literal[
    # the request (400)
    "bad_token_syntax",
    "body_too_large",
    "duplicate_header",
    "duplicate_param",
    "empty_token",
    "two_locations",
    # no token (401 without an error code)
    "missing_token",
    # the token's form (401)
    "too_large",
    "malformed",
    "jwe",
    "bad_alg",
    "bad_kid",
    "bad_typ",
    "crit",
    "b64",
    # keys and signature (401)
    "unknown_kid",
    "no_key",
    "key_issuer",
    "bad_signature",
    # claims (401)
    "bad_iss",
    "bad_aud",
    "bad_exp",
    "expired",
    "bad_nbf",
    "not_yet_valid",
    "bad_iat",
    "iat_future",
    "bad_auth_time",
    "auth_time_future",
    "missing_claim",
    "bad_claim",
    "bad_scope",
    "bad_client",
    "bad_tenant",
    "unexpected_claim",
    # introspection (401)
    "no_introspection",
    "inactive",
    "bad_token_type",
    # sender-constrained tokens and stolen-token detection (401)
    "bad_cnf",
    "unproven_binding",
    "token_shared",
    # defence in depth: a bug in bearerguard judged as a refusal (401)
    "internal",
    # authorization (403), step-up (401, RFC 9470) and rate limits (429)
    "insufficient_scope",
    "issuer_not_accepted",
    "insufficient_user_authentication",
    "rate_limited",
    # our side cannot decide (503)
    "upstream_unavailable",
    "metadata_unavailable",
    "jwks_unavailable",
    "introspection_unavailable",
    "introspection_saturated",
    "ratelimit_unavailable",
    "sharing_unavailable",
    # DPoP (RFC 9449): the proof (401 invalid_dpop_proof), its nonce, its token, its store
    "dpop_missing",
    "dpop_duplicate",
    "dpop_too_large",
    "dpop_malformed",
    "dpop_bad_typ",
    "dpop_bad_alg",
    "dpop_crit",
    "dpop_no_jwk",
    "dpop_private_key",
    "dpop_bad_jwk",
    "dpop_bad_signature",
    "dpop_bad_jti",
    "dpop_bad_htm",
    "dpop_bad_htu",
    "dpop_bad_iat",
    "dpop_stale",
    "dpop_bad_ath",
    "dpop_replayed",
    "dpop_proof_flood",
    "use_dpop_nonce",
    "dpop_required",
    "dpop_unbound_token",
    "dpop_replay_unavailable",
    # a bare error class's default
    "invalid_request",
    "invalid_token",
    "error",
]
#: :data:`Reason` as a runtime set, for code that receives a reason from outside.
REASONS: frozenset[str] = frozenset(get_args(Reason))


class AuthError(Exception):
    """Base class: an HTTP status, an RFC 6750 error code and a short, safe description.

    ``reason`` is a stable machine-readable word for logs and metrics; the
    description is what a client may read, so it never carries internals.
    """

    status: int = 401
    error: str | None = None
    #: The reason when none is given: the error code, or ``"error"`` for the bare class.
    default_reason: Reason = "error"
    #: The challenge that carries the error: ``None`` is the scheme the request used.
    scheme: str | None = None

    def __init__(
        self,
        description: str = "",
        *,
        reason: Reason | None = None,
        claim: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.reason: Reason = reason or self.default_reason
        #: Which claim or header member broke the rule, what the rule wanted and what the
        #: token had: for explanations (``inspect``), never sent to the client or logged.
        self.claim = claim
        self.expected = expected
        self.found = found


class MissingToken(AuthError):
    """No credentials at all: RFC 6750 §3.1 says answer with the challenge and no error code."""

    status = 401
    error = None

    def __init__(self) -> None:
        super().__init__("", reason="missing_token")


class InvalidRequest(AuthError):
    """The request itself is malformed (RFC 6750 §3.1): 400."""

    status = 400
    error = "invalid_request"
    default_reason = "invalid_request"


class InvalidToken(AuthError):
    """The token is expired, revoked, malformed or not for us (RFC 6750 §3.1): 401."""

    status = 401
    error = "invalid_token"
    default_reason = "invalid_token"


def signature_refused(reason: Reason) -> InvalidToken:
    """The one answer for a signature we cannot verify: bad, unknown ``kid`` or no fitting key.

    Same status, challenge and body whatever the cause (only ``reason``, which is
    logged and never sent, differs), so a forger learns nothing about our keys.
    """
    return InvalidToken("The access token's signature is invalid", reason=reason)


class InsufficientScope(AuthError):
    """The token is good but lacks what the route needs (RFC 6750 §3.1): 403."""

    status = 403
    error = "insufficient_scope"
    default_reason = "insufficient_scope"

    def __init__(
        self,
        required: tuple[str, ...] | list[str],
        description: str = "",
        *,
        reason: Reason = "insufficient_scope",
    ) -> None:
        self.required = tuple(required)
        super().__init__(description or "The access token lacks a required scope", reason=reason)


class InsufficientUserAuthentication(AuthError):
    """The token is good but the user's sign-in was too weak or too long ago (RFC 9470 §3): 401.

    A 401 rather than a 403, so the client goes back to the authorization server
    for a new token, asking for ``acr_values`` and ``max_age`` as the challenge says.
    """

    status = 401
    error = "insufficient_user_authentication"

    def __init__(
        self,
        *,
        acr_values: tuple[str, ...] = (),
        max_age: int | None = None,
        description: str = "",
    ) -> None:
        self.acr_values = acr_values
        self.max_age = max_age
        super().__init__(
            description or "A different authentication level is required",
            reason="insufficient_user_authentication",
        )


class Unavailable(AuthError):
    """An upstream (JWKS, metadata, introspection) cannot answer: 503, never a false 401.

    Clients that saw a 401 would throw away a good token; a 503 with ``Retry-After``
    tells them to come back instead.
    """

    status = 503
    error = "temporarily_unavailable"
    default_reason = "upstream_unavailable"

    def __init__(
        self, description: str, *, retry_after: int = 5, reason: Reason | None = None
    ) -> None:
        super().__init__(description, reason=reason)
        self.retry_after = max(1, int(retry_after))


class RateLimited(AuthError):
    """The token spent its budget: 429 with ``Retry-After`` and RateLimit headers."""

    status = 429
    error = "rate_limited"
    default_reason = "rate_limited"

    def __init__(
        self,
        *,
        retry_after: int,
        limit: int,
        remaining: int = 0,
        reset: int | None = None,
        description: str = "Rate limit exceeded",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(description, reason="rate_limited")
        self.retry_after = max(1, int(retry_after))
        self.limit = limit
        self.remaining = remaining
        self.reset = self.retry_after if reset is None else reset
        #: The limiter's RateLimit-* headers for this answer (classic three and the
        #: draft RateLimit-Policy/RateLimit pair), ready to send; empty when built by hand.
        self.headers = headers


class InvalidDPoPProof(AuthError):
    """The request's DPoP proof is missing, malformed or wrong (RFC 9449 §7.1): 401."""

    status = 401
    error = "invalid_dpop_proof"
    default_reason = "dpop_malformed"
    scheme = "DPoP"


class UseDPoPNonce(AuthError):
    """The proof lacks the server's current nonce (RFC 9449 §8): 401 with ``DPoP-Nonce``.

    Not a failure of the client so much as a round trip: it retries with ``nonce``.
    """

    status = 401
    error = "use_dpop_nonce"
    default_reason = "use_dpop_nonce"
    scheme = "DPoP"

    def __init__(self, nonce: str, description: str = "") -> None:
        super().__init__(description or "Use the server's DPoP nonce", reason="use_dpop_nonce")
        self.nonce = nonce


def fail(failures: list[InvalidToken] | None, error: InvalidToken) -> None:
    """Raise ``error`` (the request path, fail-fast), or note it in ``failures`` and go on.

    One set of rules serves both: the middleware stops at the first broken rule, an
    explanation (``inspect``) collects every one of them from the same code.
    """
    if failures is None:
        raise error
    failures.append(error)
