"""bearerguard: OAuth 2.0 bearer access tokens for Starlette and FastAPI.

The names below are imported when first used (PEP 562), so ``import bearerguard``
costs next to nothing, and an application loads only what its configuration uses:
no ``limits`` without a rate limit, no Redis client without a Redis URL, no metrics
library without an observer. The pytest plugin relies on it to cost nothing until a
test asks for one of its fixtures.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from bearerguard._config import DEFAULT_ALGORITHMS, FetchPolicy, Issuer
    from bearerguard._dependencies import (
        authentication_required,
        current_token,
        optional_token,
        require_authentication,
        require_scopes,
        scopes_required,
        token_of,
    )
    from bearerguard._errors import (
        AuthError,
        InsufficientScope,
        InsufficientUserAuthentication,
        InvalidRequest,
        InvalidToken,
        MissingToken,
        RateLimited,
        Unavailable,
    )
    from bearerguard._middleware import BearerAuthMiddleware
    from bearerguard._observability import LoggingObserver, Observer
    from bearerguard._ratelimit import RateLimiter
    from bearerguard._ratelimit_decision import RateLimitDecision
    from bearerguard._ratelimit_routes import rate_limit, rate_limited
    from bearerguard._resource_metadata import ResourceMetadata
    from bearerguard._sharing import TokenSharing
    from bearerguard._tokens import AccessToken, TokenUser
    from bearerguard._validator import TokenValidator

#: Where each public name lives (a test keeps this, the imports above and __all__ equal).
_EXPORTS: dict[str, str] = {
    "DEFAULT_ALGORITHMS": "_config",
    "FetchPolicy": "_config",
    "Issuer": "_config",
    "authentication_required": "_dependencies",
    "current_token": "_dependencies",
    "optional_token": "_dependencies",
    "require_authentication": "_dependencies",
    "require_scopes": "_dependencies",
    "scopes_required": "_dependencies",
    "token_of": "_dependencies",
    "AuthError": "_errors",
    "InsufficientScope": "_errors",
    "InsufficientUserAuthentication": "_errors",
    "InvalidRequest": "_errors",
    "InvalidToken": "_errors",
    "MissingToken": "_errors",
    "RateLimited": "_errors",
    "Unavailable": "_errors",
    "BearerAuthMiddleware": "_middleware",
    "LoggingObserver": "_observability",
    "Observer": "_observability",
    "RateLimiter": "_ratelimit",
    "RateLimitDecision": "_ratelimit_decision",
    "rate_limit": "_ratelimit_routes",
    "rate_limited": "_ratelimit_routes",
    "ResourceMetadata": "_resource_metadata",
    "TokenSharing": "_sharing",
    "AccessToken": "_tokens",
    "TokenUser": "_tokens",
    "TokenValidator": "_validator",
}

__all__ = [
    "DEFAULT_ALGORITHMS",
    "AccessToken",
    "AuthError",
    "BearerAuthMiddleware",
    "FetchPolicy",
    "InsufficientScope",
    "InsufficientUserAuthentication",
    "InvalidRequest",
    "InvalidToken",
    "Issuer",
    "LoggingObserver",
    "MissingToken",
    "Observer",
    "RateLimitDecision",
    "RateLimited",
    "RateLimiter",
    "ResourceMetadata",
    "TokenSharing",
    "TokenUser",
    "TokenValidator",
    "Unavailable",
    "authentication_required",
    "current_token",
    "optional_token",
    "rate_limit",
    "rate_limited",
    "require_authentication",
    "require_scopes",
    "scopes_required",
    "token_of",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use, then keep it as a plain module attribute."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bearerguard' has no attribute {name!r}")
    value = getattr(import_module(f"bearerguard.{module}"), name)
    globals()[name] = value  # later lookups never come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
