"""Configuration as plain dataclasses: what to trust, and how hard to try upstream."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "DEFAULT_CLIENT_ID_CLAIMS",
    "HMAC_ALGORITHMS",
    "ClaimPath",
    "Expected",
    "FetchPolicy",
    "Issuer",
]

#: The default allowlist: every asymmetric algorithm, never ``none``, never HMAC.
DEFAULT_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA",
)  # fmt: skip
#: Asymmetric algorithms bearerguard knows how to verify (RFC 7518 §3, RFC 8037).
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(DEFAULT_ALGORITHMS)
#: HMAC is only accepted when a shared secret is configured on purpose (RFC 8725 §3.1).
HMAC_ALGORITHMS: frozenset[str] = frozenset({"HS256", "HS384", "HS512"})
#: Where providers put the client a token was issued to: RFC 9068 and Cognito
#: ``client_id``, OIDC ``azp`` (Auth0, Keycloak, Entra v2), Okta ``cid``, Entra v1 ``appid``.
DEFAULT_CLIENT_ID_CLAIMS: tuple[str, ...] = ("client_id", "azp", "cid", "appid")

#: A claim named by its name (``"scope"``), a dotted path into nested objects
#: (``"realm_access.roles"``; a top-level claim of that exact name wins), or a tuple
#: of names for a path whose parts hold dots themselves.
ClaimPath: TypeAlias = str | tuple[str, ...]
#: What an expected claim must be: a value, a collection of accepted values, or a
#: predicate called with the claim's value.
Expected: TypeAlias = Any | Collection[Any] | Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """How metadata and keys are fetched and kept; the defaults suit a production IdP.

    The floor stops an IdP that says ``max-age=0`` from turning every request into a
    fetch; the ceiling makes a rotation visible within a day even without an unknown
    ``kid``; ``max_stale`` bounds how long last-known-good keys outlive an outage.
    ``default_ttl`` applies when the JWKS says nothing about caching: ten minutes,
    so a key the issuer withdraws stops being trusted soon after.
    """

    min_ttl: float = 300.0
    max_ttl: float = 86_400.0
    default_ttl: float = 600.0
    cooldown: float = 30.0
    max_stale: float = 86_400.0
    timeout: float = 5.0
    max_bytes: int = 512 * 1024
    max_keys: int = 100
    #: Fraction of the lifetime after which a background refresh starts.
    refresh_ahead: float = 0.8


@dataclass(frozen=True, slots=True)
class Issuer:
    """One trusted authorization server and what its tokens must look like.

    ``issuer`` is compared to ``iss`` exactly, as RFC 8414 §3.3 and RFC 9068 §4 ask:
    no trimming of slashes, no prefix match.
    """

    issuer: str
    #: May be omitted only when ``client_ids`` is given (Cognito access tokens carry no ``aud``).
    audience: str | Sequence[str] | None = None
    jwks_uri: str | None = None
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS
    leeway: float = 60.0
    #: Strict RFC 9068 mode: ``typ`` must be ``at+jwt`` and sub/client_id/iat/jti present.
    rfc9068: bool = False
    required_claims: Sequence[str] = ()
    #: Claims scopes are read from (a space-delimited string or a list of strings);
    #: every one present counts, so roles and permissions can grant scopes too.
    scope_claims: Sequence[ClaimPath] = ("scope", "scp")
    #: Claims naming the client the token was issued to; the first present fills
    #: ``AccessToken.client_id``.
    client_id_claims: Sequence[str] = DEFAULT_CLIENT_ID_CLAIMS
    #: The clients this API accepts tokens of (``None``: any client).
    client_ids: Sequence[str] | None = None
    #: Claims that must hold a value: ``{"token_use": "access", "ver": ("1.0", "2.0")}``.
    expected_claims: Mapping[str, Expected] = field(default_factory=dict)
    #: A shared secret for HS* tokens; only with this set may HMAC be allowed.
    shared_secret: str | bytes | None = None
    #: RFC 7662 endpoint; taken from the metadata when not given.
    introspection_endpoint: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    introspection_auth: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    #: What to do with a token that is not a JWS: introspect it, or reject it.
    opaque: Literal["introspect", "reject"] = "introspect"
    #: Introspect every token, JWTs included (for IdPs that revoke JWTs).
    introspect_all: bool = False
    #: Longest a validated JWT is served from the cache (never past its ``exp``).
    jwt_cache_ttl: float = 300.0
    #: Longest an introspection answer is served from the cache (never past its ``exp``).
    introspection_cache_ttl: float = 60.0
    #: How long a refusal (bad signature, ``active: false``) is remembered.
    negative_cache_ttl: float = 10.0
    #: Most introspection calls in flight at once; more are answered 503 at once rather
    #: than queued, so junk opaque tokens cannot take the whole HTTP pool (32) from JWKS.
    introspection_concurrency: int = 16
    #: Refuse an introspection answer without ``aud`` (401 ``bad_aud``) instead of
    #: accepting it as RFC 7662 allows; for IdPs known to always send ``aud``.
    introspection_requires_audience: bool = False
    #: Share introspection results across replicas in Redis (``redis://...``); optional.
    cache_url: str | None = None
    #: Skip OIDC/RFC 8414 discovery entirely (then ``jwks_uri`` must be given).
    discovery: bool = True
    fetch: FetchPolicy = field(default_factory=FetchPolicy)

    @property
    def audiences(self) -> tuple[str, ...]:
        if self.audience is None:
            return ()
        if isinstance(self.audience, str):
            return (self.audience,)
        return tuple(self.audience)
