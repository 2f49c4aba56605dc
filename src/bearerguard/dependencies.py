"""How routes declare what they need: FastAPI dependencies and a Starlette decorator.

Both raise :class:`~bearerguard.errors.AuthError`; the middleware turns it into the
RFC 6750 answer (403 ``insufficient_scope`` with the route's ``scope``), so a
route never has to build a challenge itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from bearerguard.errors import InsufficientScope, MissingToken
from bearerguard.tokens import AccessToken, TokenUser

__all__ = ["current_token", "optional_token", "require_scopes", "requires_scopes"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def optional_token(conn: HTTPConnection) -> AccessToken | None:
    """The validated token of this request, or ``None`` (anonymous or excluded path)."""
    user = conn.scope.get("user")
    return user.token if isinstance(user, TokenUser) else None


def current_token(conn: HTTPConnection) -> AccessToken:
    """FastAPI dependency: the validated :class:`AccessToken` of this request."""
    token = optional_token(conn)
    if token is None:
        raise MissingToken()
    return token


class require_scopes:
    """FastAPI dependency factory: ``Depends(require_scopes("read:items"))``.

    Returns the :class:`AccessToken`, so it can stand in for ``current_token``.
    The required scopes are kept on the object (``.scopes``) for OpenAPI.
    """

    def __init__(self, *scopes: str) -> None:
        self.scopes: tuple[str, ...] = scopes

    def __call__(self, conn: HTTPConnection) -> AccessToken:
        token = current_token(conn)
        if not token.scopes.issuperset(self.scopes):
            raise InsufficientScope(self.scopes)
        return token

    def __repr__(self) -> str:
        return f"require_scopes{self.scopes!r}"


def requires_scopes(*scopes: str) -> Callable[[F], F]:
    """Starlette endpoint decorator with an RFC 6750 403 (Starlette's ``@requires`` also works)."""
    checker = require_scopes(*scopes)

    def decorate(endpoint: F) -> F:
        params = list(inspect.signature(endpoint).parameters)
        index = params.index("request") if "request" in params else 0

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            conn = kwargs.get("request", args[index] if len(args) > index else None)
            if not isinstance(conn, HTTPConnection):
                raise TypeError("requires_scopes needs the request as an argument")
            checker(conn)
            return await endpoint(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
