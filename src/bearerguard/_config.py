"""Configuration as plain dataclasses: what to trust, and how hard to try upstream.

Each default is written once, here, and each check runs here, when the object is
made: a mistake in configuration fails at startup with the field's name, never on
the first request. The middleware's issuer keywords are :class:`IssuerOptions`,
forwarded to :class:`Issuer` unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias, TypedDict
from urllib.parse import urlsplit, urlunsplit

from bearerguard._urls import check_url

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "DEFAULT_CLIENT_ID_CLAIMS",
    "HMAC_ALGORITHMS",
    "TENANT_ID",
    "TENANT_PLACEHOLDER",
    "ClaimPath",
    "Expected",
    "FetchPolicy",
    "Issuer",
    "IssuerOptions",
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

#: Where an issuer template takes the token's tenant (``tid``), as in Entra ID's
#: tenant-independent metadata: ``https://login.microsoftonline.com/{tenantid}/v2.0``.
TENANT_PLACEHOLDER = "{tenantid}"
#: A tenant id fills one path segment of an issuer template, nothing more.
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

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

    def __post_init__(self) -> None:
        for name in ("min_ttl", "max_ttl", "default_ttl", "cooldown", "max_stale"):
            _non_negative(self, name)
        for name in ("timeout", "max_bytes", "max_keys"):
            if not _number(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"FetchPolicy.{name} must be positive")
        for name in ("max_bytes", "max_keys"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"FetchPolicy.{name} must be an integer")
        if not 0 < self.refresh_ahead <= 1:
            raise ValueError("FetchPolicy.refresh_ahead must be in (0, 1]")


#: Issuer fields never shown in a repr.
_SECRET_FIELDS = frozenset({"client_secret", "shared_secret"})


def hidden_repr(config: Any, secrets: frozenset[str]) -> str:
    """A dataclass's repr with the ``secrets`` fields shown as ``'***'`` and passwords
    taken out of URLs: what a traceback's locals or a log line may show of a config."""
    shown = []
    for item in fields(config):
        value = getattr(config, item.name)
        if item.name in secrets and value is not None:
            text = "'***'"
        elif isinstance(value, str):
            text = repr(_without_password(value))
        else:
            text = repr(value)
        shown.append(f"{item.name}={text}")
    return f"{type(config).__name__}({', '.join(shown)})"


def _without_password(text: str) -> str:
    """A URL with the password of its userinfo replaced (``redis://:pw@host`` included)."""
    try:
        parts = urlsplit(text)
        if parts.password is None:
            return text
    except ValueError:
        return text
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True, slots=True)
class Issuer:
    """One trusted authorization server and what its tokens must look like.

    ``issuer`` is compared to ``iss`` exactly, as RFC 8414 §3.3 and RFC 9068 §4 ask:
    no trimming of slashes, no prefix match. An issuer holding ``{tenantid}`` is a
    template for multi-tenant providers: the token's ``tid`` fills it, the result
    must equal ``iss`` exactly, and ``tid`` must be one of ``tenants`` (or any,
    with ``tenants="*"``).
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
    #: Most introspection calls in flight at once, so junk opaque tokens cannot take the
    #: whole HTTP pool (32) from JWKS; more wait in line up to a second (503 after), the
    #: least-served client first, and at most half this many per client (429 beyond).
    introspection_concurrency: int = 16
    #: A regular expression every opaque token of this issuer matches (whole token):
    #: anything else is refused without asking the authorization server.
    opaque_token_pattern: str | None = None
    #: Refuse an introspection answer without ``aud`` (401 ``bad_aud``) instead of
    #: accepting it as RFC 7662 allows; for IdPs known to always send ``aud``.
    introspection_requires_audience: bool = False
    #: Share introspection results across replicas in Redis (``redis://...``); optional.
    cache_url: str | None = None
    #: Skip OIDC/RFC 8414 discovery entirely (then ``jwks_uri`` must be given).
    discovery: bool = True
    #: The discovery document's URL, when it is not at the issuer's well-known path
    #: (an issuer template's tenant-independent document, say).
    metadata_url: str | None = None
    #: With an issuer template: the tenants (``tid``) accepted, or ``"*"`` for any.
    tenants: Sequence[str] | Literal["*"] | None = None
    fetch: FetchPolicy = field(default_factory=FetchPolicy)

    def __post_init__(self) -> None:
        # Sequences are kept as tuples, so a list the caller mutates later changes nothing.
        for name in ("algorithms", "required_claims", "scope_claims", "client_id_claims"):
            _as_tuple(self, name)
        if self.client_ids is not None:
            _as_tuple(self, "client_ids")
            if not self.client_ids:
                raise ValueError("client_ids is empty: no token could ever be accepted")
        if self.audience is not None and not isinstance(self.audience, str):
            object.__setattr__(self, "audience", tuple(self.audience))
        if not isinstance(self.issuer, str) or not self.issuer:
            raise ValueError("Issuer.issuer must be a non-empty string")
        if not all(isinstance(a, str) and a for a in self.audiences):
            raise ValueError("each audience must be a non-empty string")
        if not self.audiences and not self.client_ids:
            raise ValueError(
                "at least one audience is required; it may be omitted only when client_ids "
                "names the clients whose tokens this API accepts (Cognito access tokens)"
            )
        if not all(isinstance(n, str) and n for n in self.client_id_claims):
            raise ValueError("client_id_claims takes a sequence of claim names")
        for path in self.scope_claims:
            claim_path_parts(path, "scope_claims")
        for name in self.expected_claims:
            claim_path_parts(name, "expected_claims")
        algorithms = frozenset(self.algorithms)
        if "none" in algorithms or not algorithms:
            raise ValueError("the algorithm allowlist must be non-empty and never contain 'none'")
        unknown = algorithms - ASYMMETRIC_ALGORITHMS - HMAC_ALGORITHMS
        if unknown:
            raise ValueError(f"unsupported algorithms: {sorted(unknown)}")
        if algorithms & HMAC_ALGORITHMS and self.shared_secret is None:
            raise ValueError("HMAC algorithms need a shared_secret configured on purpose")
        for name in ("leeway", "jwt_cache_ttl", "introspection_cache_ttl", "negative_cache_ttl"):
            _non_negative(self, name)
        if self.introspection_auth not in ("client_secret_basic", "client_secret_post"):
            raise ValueError(f"unsupported introspection_auth {self.introspection_auth!r}")
        if self.opaque not in ("introspect", "reject"):
            raise ValueError(f"opaque must be 'introspect' or 'reject', not {self.opaque!r}")
        if type(self.introspection_concurrency) is not int or self.introspection_concurrency < 1:
            raise ValueError("introspection_concurrency must be a positive integer")
        if self.opaque_token_pattern is not None:
            try:
                re.compile(self.opaque_token_pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(
                    f"opaque_token_pattern is not a regular expression: {exc}"
                ) from None
        if self.introspect_all and not self.has_client_credentials:
            raise ValueError(
                f"introspect_all for {self.issuer!r} needs client_id and client_secret"
            )
        if self.cache_url is not None and not self.introspects:
            raise ValueError(
                f"cache_url shares introspection results, but {self.issuer!r} "
                "does not introspect (it needs client_id and client_secret)"
            )
        if not isinstance(self.fetch, FetchPolicy):
            raise ValueError("Issuer.fetch must be a FetchPolicy")
        for name in ("jwks_uri", "introspection_endpoint", "metadata_url"):
            url = getattr(self, name)
            if url is not None:
                try:
                    check_url(url)  # keys and metadata must not travel in clear text
                except ValueError as exc:
                    raise ValueError(f"Issuer.{name}: {exc}") from None
        if TENANT_PLACEHOLDER in self.issuer or self.tenants is not None:
            self._check_template()

    def _check_template(self) -> None:
        """An issuer template: one ``{tenantid}``, its tenants named, its keys findable."""
        issuer, tenants = self.issuer, self.tenants
        if issuer.count(TENANT_PLACEHOLDER) != 1:
            raise ValueError(
                f"tenants are given, so the issuer must hold {TENANT_PLACEHOLDER} exactly once "
                f"(got {issuer!r})"
            )
        if "{" in issuer.replace(TENANT_PLACEHOLDER, "") or "}" in issuer.replace(
            TENANT_PLACEHOLDER, ""
        ):
            raise ValueError(f"the issuer template {issuer!r} holds another placeholder")
        if tenants is None:
            raise ValueError(
                f"the issuer {issuer!r} is a template: say which tenants it accepts, "
                "tenants=[...] or tenants='*' for any"
            )
        if tenants != "*":
            _as_tuple(self, "tenants")
            if not self.tenants:
                raise ValueError("tenants is empty: no token could ever be accepted")
            for tenant in self.tenants:
                if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
                    raise ValueError(f"tenant {tenant!r} is not a tenant id")
        if self.metadata_url is None and self.jwks_uri is None and self.discovery:
            raise ValueError(
                f"the issuer template {issuer!r} has no discovery document of its own: "
                "give metadata_url (its tenant-independent document) or jwks_uri"
            )

    def __repr__(self) -> str:
        """The dataclass repr with the secrets hidden and passwords taken out of URLs,
        so an Issuer in a log line or a traceback gives nothing away."""
        return hidden_repr(self, _SECRET_FIELDS)

    @property
    def audiences(self) -> tuple[str, ...]:
        if self.audience is None:
            return ()
        if isinstance(self.audience, str):
            return (self.audience,)
        return tuple(self.audience)

    @property
    def has_client_credentials(self) -> bool:
        """Both halves of the client credentials introspection authenticates with."""
        return bool(self.client_id) and self.client_secret is not None

    @property
    def introspects(self) -> bool:
        """Whether some token of this issuer is ever sent to its introspection endpoint."""
        return self.has_client_credentials and (self.opaque == "introspect" or self.introspect_all)

    @property
    def uses_jwks(self) -> bool:
        """Whether some allowed algorithm is verified with the issuer's published keys."""
        return any(a not in HMAC_ALGORITHMS for a in self.algorithms)


class IssuerOptions(TypedDict, total=False):
    """:class:`Issuer`'s fields as keywords (the middleware's ``issuer=...`` shorthand).

    Types only: the defaults and the checks are :class:`Issuer`'s, so they are
    written once. A test keeps the two lists of names equal.
    """

    issuer: str
    audience: str | Sequence[str] | None
    jwks_uri: str | None
    algorithms: Sequence[str]
    leeway: float
    rfc9068: bool
    required_claims: Sequence[str]
    scope_claims: Sequence[ClaimPath]
    client_id_claims: Sequence[str]
    client_ids: Sequence[str] | None
    expected_claims: Mapping[str, Expected]
    shared_secret: str | bytes | None
    introspection_endpoint: str | None
    client_id: str | None
    client_secret: str | None
    introspection_auth: Literal["client_secret_basic", "client_secret_post"]
    opaque: Literal["introspect", "reject"]
    introspect_all: bool
    jwt_cache_ttl: float
    introspection_cache_ttl: float
    negative_cache_ttl: float
    introspection_concurrency: int
    opaque_token_pattern: str | None
    introspection_requires_audience: bool
    cache_url: str | None
    discovery: bool
    metadata_url: str | None
    tenants: Sequence[str] | Literal["*"] | None
    fetch: FetchPolicy


#: Claims whose value is never a JSON object (RFC 7519 §4.1, RFC 8693 §4.2, RFC 9068
#: §2.2, and the providers' own): a path into one of them can never match anything.
_NEVER_OBJECTS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "scp", "client_id", "azp",
     "cid", "appid", "tid", "ver", "token_use", "typ", "auth_time", "roles", "permissions"}
)  # fmt: skip


def claim_path_parts(path: ClaimPath, setting: str) -> tuple[str | None, tuple[str, ...]]:
    """A configured claim path, checked: its top-level name (a string path) and its parts.

    Raises ``ValueError`` naming ``setting`` for a path that is no claim name, has an
    empty part, or runs through a claim that is never an object (so never matches).
    """
    if isinstance(path, str):
        parts = tuple(path.split(".")) if "." in path else (path,)
        name: str | None = path
    elif isinstance(path, tuple) and path and all(isinstance(p, str) for p in path):
        parts, name = path, None
    else:
        raise ValueError(f"{setting}: {path!r} is neither a claim name nor a tuple of names")
    if not all(parts):
        raise ValueError(
            f"{setting}: {path!r} has an empty part; name a claim, a dotted path "
            "such as 'realm_access.roles', or a tuple of names"
        )
    if len(parts) > 1 and parts[0] in _NEVER_OBJECTS and name not in _NEVER_OBJECTS:
        raise ValueError(
            f"{setting}: {path!r} can never match: {parts[0]!r} is never a JSON object"
        )
    return name, parts


def issuer_field_names() -> frozenset[str]:
    """The names :class:`Issuer` accepts (and the middleware's ``issuer=`` shorthand with it)."""
    return frozenset(f.name for f in fields(Issuer))


def _as_tuple(config: Any, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, str):
        raise ValueError(f"{name} takes a sequence, not one string: ({value!r},)")
    object.__setattr__(config, name, tuple(value))


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _non_negative(config: Any, name: str) -> None:
    value = getattr(config, name)
    if not _number(value) or value < 0:
        raise ValueError(f"{type(config).__name__}.{name} must be a finite number >= 0")
