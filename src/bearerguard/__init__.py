"""bearerguard: OAuth 2.0 bearer access tokens for Starlette and FastAPI."""

from bearerguard.config import DEFAULT_ALGORITHMS, FetchPolicy, Issuer
from bearerguard.dependencies import (
    current_token,
    optional_token,
    require_scopes,
    requires_scopes,
    token_of,
)
from bearerguard.errors import (
    AuthError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    RateLimited,
    Unavailable,
)
from bearerguard.middleware import BearerAuthMiddleware
from bearerguard.observability import LoggingObserver, Observer
from bearerguard.ratelimit import RateLimitDecision, RateLimiter, rate_limit, rate_limited
from bearerguard.tokens import AccessToken, TokenUser
from bearerguard.validator import TokenValidator

__all__ = [
    "DEFAULT_ALGORITHMS",
    "AccessToken",
    "AuthError",
    "BearerAuthMiddleware",
    "FetchPolicy",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "Issuer",
    "LoggingObserver",
    "MissingToken",
    "Observer",
    "RateLimitDecision",
    "RateLimited",
    "RateLimiter",
    "TokenUser",
    "TokenValidator",
    "Unavailable",
    "current_token",
    "optional_token",
    "rate_limit",
    "rate_limited",
    "require_scopes",
    "requires_scopes",
    "token_of",
]
