"""What one validation did, step by step: recorded only when someone asks (``inspect``).

The validator fills a :class:`Trace` as it decides, so an explanation is the
decision itself rather than a second derivation of it: which issuer, where its
metadata and keys came from, which keys fitted the token's ``kid``, which one
verified (and whether the same-kid re-check ran), what the introspection endpoint
answered, why an upstream failed, and every rule the claims broke. A request
without a trace pays one ``is None`` test per step on the cold path, nothing on a
cache hit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bearerguard._errors import AuthError, InvalidToken
from bearerguard._keys import VerificationKey
from bearerguard._tokens import AccessToken

__all__ = ["Trace"]


@dataclass(slots=True, eq=False)
class Trace:
    """One run of :meth:`TokenValidator.validate <bearerguard.TokenValidator.validate>`."""

    #: ``jwt`` (a JWS), ``opaque`` (sent to introspection), or ``None`` (refused before).
    kind: Literal["jwt", "opaque"] | None = None
    #: The configured issuer that judged the token (the template, for a tenant's token).
    issuer: str | None = None
    #: Where the metadata came from (a discovery URL), ``None`` when configured.
    metadata_url: str | None = None
    jwks_uri: str | None = None
    alg: str | None = None
    kid: str | None = None
    #: Every key the issuer published when the token was judged, and how many of the
    #: published keys were unusable and left out.
    published: tuple[VerificationKey, ...] = ()
    skipped_keys: int = 0
    #: The keys that fitted the token's ``kid`` and ``alg``, tried in this order.
    candidates: tuple[VerificationKey, ...] = ()
    #: The key the signature verified with.
    key: VerificationKey | None = None
    #: Whether the same-kid re-check (one refresh for a replaced key) ran.
    rechecked: bool = False
    introspection_endpoint: str | None = None
    #: The introspection endpoint's answer, as received.
    introspection: Mapping[str, Any] | None = field(default=None, repr=False)
    #: Why an upstream (metadata, JWKS, introspection) could not answer, in its own words.
    upstream_error: str | None = None
    #: Every header or claim rule the token broke, in the order they are judged; the
    #: first is the one the request path refuses with.
    failures: list[InvalidToken] = field(default_factory=list)
    #: With ``introspect_all``, the rules the introspection answer about a JWT broke.
    introspection_failures: list[InvalidToken] = field(default_factory=list)
    #: The outcome: the token, or the refusal.
    access: AccessToken | None = None
    error: AuthError | None = None
