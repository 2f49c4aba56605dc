"""How routes declare what they need: FastAPI dependencies and a Starlette decorator.

Both raise :class:`~bearerguard._errors.AuthError`; the middleware turns it into the
RFC 6750 answer (403 ``insufficient_scope`` with the route's ``scope``), so a
route never has to build a challenge itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from bearerguard._challenge import answer_for
from bearerguard._errors import AuthError, InsufficientScope, MissingToken
from bearerguard._tokens import AccessToken, TokenUser

__all__ = [
    "SCHEME_NAME",
    "bearer_scheme",
    "current_token",
    "optional_token",
    "require_scopes",
    "requires_scopes",
    "token_of",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def token_of(conn: HTTPConnection) -> AccessToken | None:
    """The validated token of this request, or ``None`` (anonymous or excluded path).

    Synchronous, for Starlette endpoints and decorators; FastAPI routes use the
    async dependencies below.
    """
    user = conn.scope.get("user")
    return user.token if isinstance(user, TokenUser) else None


def _required(conn: HTTPConnection) -> AccessToken:
    token = token_of(conn)
    if token is None:
        raise MissingToken()
    return token


# The FastAPI dependencies are async on purpose: FastAPI runs a plain ``def``
# dependency in a worker thread, a thread hop on every request for a dict lookup.


async def optional_token(conn: HTTPConnection) -> AccessToken | None:
    """FastAPI dependency: the validated token, or ``None`` (anonymous or excluded path)."""
    return token_of(conn)


async def current_token(conn: HTTPConnection) -> AccessToken:
    """FastAPI dependency: the validated :class:`AccessToken` of this request."""
    return _required(conn)


#: The name of bearerguard's security scheme in the OpenAPI document.
SCHEME_NAME = "BearerAuth"


@functools.cache
def bearer_scheme() -> Any:
    """The FastAPI security scheme behind every ``require_scopes``: an HTTP bearer (JWT) scheme.

    Built on first use, so Starlette-only applications never import FastAPI, and
    shared, so every route names the same scheme. :func:`bearerguard.openapi.install`
    can add OAuth2 flows from the issuer's metadata next to it.
    """
    from fastapi.openapi.models import HTTPBearer
    from fastapi.security.base import SecurityBase

    class BearerScheme(SecurityBase):
        """Documents the bearer token; at run time it only hands over the validated token."""

        def __init__(self) -> None:
            self.model = HTTPBearer(
                bearerFormat="JWT",
                description="An OAuth 2.0 access token, sent as `Authorization: Bearer <token>`.",
            )
            self.scheme_name = SCHEME_NAME

        async def __call__(self, conn: HTTPConnection) -> AccessToken:
            return _required(conn)

        def __repr__(self) -> str:
            return "bearer_scheme()"

    return BearerScheme()


class _FastAPISignature:
    """The signature FastAPI reads: a ``Security`` dependency carrying this instance's scopes.

    FastAPI turns it into the route's OpenAPI ``security`` requirement. It is built
    lazily (FastAPI is imported only when FastAPI asks) and is ``None`` on the class,
    so ``inspect.signature`` keeps working there.
    """

    def __get__(self, obj: require_scopes | None, owner: type | None = None) -> Any:
        if obj is None:
            return None
        if obj._signature is None:
            from fastapi import Security

            obj._signature = inspect.Signature(
                [
                    inspect.Parameter(
                        "conn", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
                    ),
                    inspect.Parameter(
                        "token",
                        inspect.Parameter.POSITIONAL_OR_KEYWORD,
                        annotation=AccessToken,
                        default=Security(bearer_scheme(), scopes=list(obj.scopes)),
                    ),
                ],
                return_annotation=AccessToken,
            )
        return obj._signature


class require_scopes:
    """FastAPI dependency factory: ``Depends(require_scopes("read:items"))``.

    Returns the :class:`AccessToken`, so it can stand in for ``current_token``, and
    raises :class:`InsufficientScope` (a 403 from the middleware) when a scope is
    missing. FastAPI sees it as a security dependency, so the route's OpenAPI
    ``security`` requirement lists these scopes; ``.scopes`` keeps them too.
    """

    __signature__ = _FastAPISignature()

    def __init__(self, *scopes: str) -> None:
        self.scopes: tuple[str, ...] = scopes
        self._signature: inspect.Signature | None = None

    async def __call__(self, conn: HTTPConnection, token: AccessToken | None = None) -> AccessToken:
        # Async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread.
        return self.check(conn, token)

    def check(self, conn: HTTPConnection, token: AccessToken | None = None) -> AccessToken:
        """The scope check itself (synchronous, for decorators and direct use)."""
        if token is None:
            token = _required(conn)
        if not token.scopes.issuperset(self.scopes):
            raise InsufficientScope(self.scopes)
        return token

    def __repr__(self) -> str:
        return f"require_scopes{self.scopes!r}"


def requires_scopes(*scopes: str) -> Callable[[F], F]:
    """Starlette endpoint decorator with an RFC 6750 403 (Starlette's ``@requires`` also works).

    It answers the refusal itself rather than raising, so the answer is right
    however the middleware was mounted (inside or around Starlette's error handling).
    """
    checker = require_scopes(*scopes)

    def decorate(endpoint: F) -> F:
        params = list(inspect.signature(endpoint).parameters)
        index = params.index("request") if "request" in params else 0

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            conn = kwargs.get("request", args[index] if len(args) > index else None)
            if not isinstance(conn, HTTPConnection):
                raise TypeError("requires_scopes needs the request as an argument")
            try:
                checker.check(conn)
            except AuthError as error:
                return answer_for(error, realm=None).response()
            return await endpoint(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
