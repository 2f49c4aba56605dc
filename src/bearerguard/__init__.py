"""bearerguard: OAuth 2.0 bearer access tokens for Starlette and FastAPI."""

from bearerguard.config import DEFAULT_ALGORITHMS, FetchPolicy, Issuer
from bearerguard.errors import (
    AuthError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    RateLimited,
    Unavailable,
)
from bearerguard.tokens import AccessToken

__all__ = [
    "DEFAULT_ALGORITHMS",
    "AccessToken",
    "AuthError",
    "FetchPolicy",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "Issuer",
    "MissingToken",
    "RateLimited",
    "Unavailable",
]
