"""The validated access token handed to applications."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from starlette.authentication import AuthCredentials, BaseUser

__all__ = ["AccessToken", "GrantedScopes", "TokenUser", "frozen"]


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token that passed every check; immutable, and never holding the raw token.

    ``token_hash`` is the hex SHA-256 of the raw token, for correlation in logs and
    caches; the token itself is deliberately not kept, so it cannot leak through a
    repr, a log line or an exception.
    """

    issuer: str
    subject: str | None
    client_id: str | None
    scopes: frozenset[str]
    audience: tuple[str, ...]
    expires_at: float | None
    token_hash: str
    claims: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    kind: Literal["jwt", "opaque"] = "jwt"
    key_id: str | None = None
    #: The token's RFC 7800 ``cnf`` object when it is bound to a key (``None``: a plain
    #: bearer token); judged once here so unbound tokens cost nothing per request.
    confirmation: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One AccessToken serves every later request for the same token from the cache:
        # nothing in it may change, nested claims included. Once per token, not per request.
        object.__setattr__(self, "claims", frozen(self.claims))
        if self.confirmation is not None:
            object.__setattr__(self, "confirmation", frozen(self.confirmation))

    @property
    def short_hash(self) -> str:
        """Twelve hex characters: enough to correlate log lines, useless to an attacker."""
        return self.token_hash[:12]

    def has_scopes(self, *required: str) -> bool:
        """True when every required scope was granted."""
        return self.scopes.issuperset(required)


#: JSON values that are immutable already (most claims): kept as they are, no call.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def frozen(value: Any) -> Any:
    """A JSON value made read-only all the way down: objects become read-only mappings,
    arrays tuples; strings, numbers, booleans and ``None`` are immutable already.

    Once per validated token, never per request: 0.6 µs for flat claims, 2.4 µs with
    nested roles and groups (timeit, this machine).
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or kind is MappingProxyType or isinstance(value, Mapping):
        return MappingProxyType(
            {k: v if type(v) in _SCALARS else frozen(v) for k, v in value.items()}
        )
    if kind is list or kind is tuple:
        return tuple(v if type(v) in _SCALARS else frozen(v) for v in value)
    return value


class TokenUser(BaseUser):
    """Starlette's ``request.user`` for a bearer request; ``token`` is ``None`` when anonymous."""

    __slots__ = ("token",)

    def __init__(self, token: AccessToken | None) -> None:
        self.token = token

    @property
    def is_authenticated(self) -> bool:
        return self.token is not None

    @property
    def display_name(self) -> str:
        if self.token is None:
            return ""
        return self.token.subject or self.token.client_id or ""

    @property
    def identity(self) -> str:
        return self.display_name


class GrantedScopes(AuthCredentials):
    """Starlette's ``request.auth`` for a validated token: built once per distinct scope set.

    Building ``AuthCredentials`` per request was a measurable share of a cache hit;
    one instance now serves every request whose token has the same scopes, so it
    must not change: ``scopes`` is a fresh list on every read and cannot be assigned.
    It also holds ``"authenticated"``, as Starlette's own authentication does, so the
    common ``@requires("authenticated")`` admits every validated token.
    """

    __slots__ = ("_granted",)

    def __init__(self, scopes: frozenset[str]) -> None:  # no super(): it would assign scopes
        self._granted = tuple(sorted(scopes | {"authenticated"}))

    @property
    def scopes(self) -> list[str]:
        return list(self._granted)

    @scopes.setter
    def scopes(self, value: list[str]) -> None:
        raise AttributeError("request.auth is shared between requests and cannot be changed")

    def __repr__(self) -> str:
        return f"GrantedScopes({list(self._granted)!r})"
