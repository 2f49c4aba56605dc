"""bearerguard: OAuth 2.0 bearer access tokens for Starlette and FastAPI."""

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
