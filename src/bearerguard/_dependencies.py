"""How routes declare what they need: FastAPI dependencies and a Starlette decorator.

All raise :class:`~bearerguard._errors.AuthError`; the middleware turns it into the
RFC 6750 answer (403 ``insufficient_scope`` with the route's ``scope``, or RFC 9470's
401 ``insufficient_user_authentication``), so a route never builds a challenge itself.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from bearerguard._challenge import quote
from bearerguard._errors import InsufficientScope, InsufficientUserAuthentication, MissingToken
from bearerguard._tokens import AccessToken, TokenUser

__all__ = [
    "SCHEME_NAME",
    "authentication_required",
    "bearer_scheme",
    "current_token",
    "optional_token",
    "require_authentication",
    "require_scopes",
    "route_scopes",
    "scopes_required",
    "token_of",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

log = logging.getLogger("bearerguard.middleware")


def token_of(conn: HTTPConnection) -> AccessToken | None:
    """The validated token of this request, or ``None`` (anonymous or excluded path).

    Synchronous, for Starlette endpoints and decorators; FastAPI routes use the
    async dependencies below.
    """
    user = conn.scope.get("user")
    return user.token if isinstance(user, TokenUser) else None


def _required(conn: HTTPConnection) -> AccessToken:
    user = conn.scope.get("user")
    if not isinstance(user, TokenUser):
        # The middleware marks every request it lets through (anonymous and excluded
        # ones too): without its mark this is a wiring mistake, not a missing token.
        raise RuntimeError(
            "bearerguard's current_token, require_scopes and decorators need "
            "BearerAuthMiddleware in front of this route: "
            "app.add_middleware(BearerAuthMiddleware, issuer=..., audience=...)"
        )
    if user.token is None:
        raise MissingToken()
    return user.token


# The FastAPI dependencies are async on purpose: FastAPI runs a plain ``def``
# dependency in a worker thread, a thread hop on every request for a dict lookup.


async def optional_token(conn: HTTPConnection) -> AccessToken | None:
    """FastAPI dependency: the validated token, or ``None`` (anonymous or excluded path)."""
    return token_of(conn)


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

    def __get__(self, obj: _Guard | None, owner: type | None = None) -> Any:
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


class _Guard:
    """What a route requires of its token, usable as a FastAPI dependency and by decorators.

    Calling it returns the :class:`AccessToken`, so it can stand in for
    ``current_token``; a token that falls short raises an :class:`AuthError`,
    which the middleware answers. FastAPI sees a security dependency, so the
    route's OpenAPI ``security`` requirement names the bearer scheme (and
    ``scopes``, the scopes this guard requires).
    """

    __signature__ = _FastAPISignature()
    scopes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._signature: inspect.Signature | None = None

    async def __call__(self, conn: HTTPConnection, token: AccessToken | None = None) -> AccessToken:
        # Async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread.
        return self.check(conn, token)

    def check(self, conn: HTTPConnection, token: AccessToken | None = None) -> AccessToken:
        """The check itself (synchronous, for decorators and direct use)."""
        return self.judge(_required(conn) if token is None else token)

    def judge(self, token: AccessToken) -> AccessToken:
        raise NotImplementedError


class require_scopes(_Guard):
    """FastAPI dependency factory: ``Depends(require_scopes("read:items"))``.

    Returns the :class:`AccessToken`, so it can stand in for ``current_token``, and
    raises :class:`InsufficientScope` (a 403 from the middleware) when a scope is
    missing. FastAPI sees it as a security dependency, so the route's OpenAPI
    ``security`` requirement lists these scopes; ``.scopes`` keeps them too.

    ``issuers``: the ``iss`` values whose tokens this route accepts. Scope names are
    each issuer's own: with several trusted issuers, ``read:items`` from issuer B
    says nothing about what issuer A meant by it, so a route meant for A's scopes
    names A. A token from another issuer is a 403, like a missing scope.
    """

    def __init__(self, *scopes: str, issuers: Iterable[str] | None = None) -> None:
        super().__init__()
        self.scopes = scopes
        if isinstance(issuers, str):
            raise TypeError("issuers= takes a list of issuer identifiers, not one string")
        self.issuers: frozenset[str] | None = None if issuers is None else frozenset(issuers)
        if self.issuers is not None and not self.issuers:
            raise ValueError("issuers= must name at least one issuer (or be left out)")

    def judge(self, token: AccessToken) -> AccessToken:
        if self.issuers is not None and token.issuer not in self.issuers:
            raise InsufficientScope(
                self.scopes,
                "The access token's issuer is not accepted on this route",
                reason="issuer_not_accepted",
            )
        if not token.scopes.issuperset(self.scopes):
            raise InsufficientScope(self.scopes)
        return token

    def __repr__(self) -> str:
        if self.issuers is None:
            return f"require_scopes{self.scopes!r}"
        return (
            f"require_scopes({', '.join(map(repr, self.scopes))}, issuers={sorted(self.issuers)})"
        )


class require_authentication(_Guard):
    """FastAPI dependency factory for step-up authentication (RFC 9470).

    ``Depends(require_authentication(acr_values=["urn:mfa"], max_age=300))``: the
    token's ``acr`` must be one of ``acr_values`` and its ``auth_time`` at most
    ``max_age`` seconds old. A token that falls short (a claim absent included)
    raises :class:`InsufficientUserAuthentication`, which the middleware answers
    401 ``insufficient_user_authentication`` naming both requirements, so the
    client can ask its authorization server for a stronger or fresher sign-in.
    """

    def __init__(
        self,
        *,
        acr_values: Iterable[str] | str = (),
        max_age: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        # RFC 9470 writes acr_values space-separated; a plain string is read that way.
        values = acr_values.split() if isinstance(acr_values, str) else tuple(acr_values)
        for value in values:
            if not isinstance(value, str) or not value or quote(value) != value or " " in value:
                raise ValueError(f"acr_values: {value!r} cannot be sent in a challenge")
        if max_age is not None and (type(max_age) is not int or max_age < 0):
            raise ValueError("max_age must be a whole number of seconds, 0 or more")
        if not values and max_age is None:
            raise ValueError("require_authentication needs acr_values=, max_age= or both")
        self.acr_values: tuple[str, ...] = tuple(values)
        self.max_age = max_age
        self.clock = clock

    def judge(self, token: AccessToken) -> AccessToken:
        claims = token.claims
        if self.acr_values:
            acr = claims.get("acr")
            if type(acr) is not str or acr not in self.acr_values:
                raise self._refusal("A different authentication level is required")
        if self.max_age is not None:
            auth_time: Any = claims.get("auth_time")
            # RFC 9470 §4: without auth_time the token cannot show how recent the sign-in is.
            if type(auth_time) not in (int, float) or self.clock() - auth_time > self.max_age:
                raise self._refusal("More recent authentication is required")
        return token

    def _refusal(self, description: str) -> InsufficientUserAuthentication:
        # Both requirements go in every challenge: the new token must meet both.
        return InsufficientUserAuthentication(
            acr_values=self.acr_values, max_age=self.max_age, description=description
        )

    def __repr__(self) -> str:
        return f"require_authentication(acr_values={self.acr_values!r}, max_age={self.max_age!r})"


#: Where a decorated endpoint lists its guards (decorators may stack).
_GUARDS = "__bearerguard_guards__"
#: Deeper than this, a route tree is not walked further (mounts inside mounts...).
_MAX_ROUTE_DEPTH = 16


def route_scopes(app: Any) -> tuple[str, ...]:
    """Every scope a route of ``app`` requires, sorted: what RFC 9728 ``scopes_supported`` lists.

    Reads ``@scopes_required`` endpoints and ``require_scopes`` dependencies of the
    routes (through mounts), and for a FastAPI application its OpenAPI document,
    where FastAPI records every route's security scopes however routers nest.
    """
    found: set[str] = set()

    def dependant(node: Any, depth: int) -> None:
        if depth > _MAX_ROUTE_DEPTH:
            return
        for dependency in getattr(node, "dependencies", ()):
            if isinstance(dependency.call, _Guard):
                found.update(dependency.call.scopes)
            dependant(dependency, depth + 1)

    def routes(node: Any, depth: int) -> None:
        if depth > _MAX_ROUTE_DEPTH:
            return
        for route in getattr(node, "routes", None) or ():
            for guard in getattr(getattr(route, "endpoint", None), _GUARDS, ()):
                found.update(guard.scopes)
            dependant(getattr(route, "dependant", None), 0)
            routes(getattr(route, "app", None), depth + 1)  # a Mount, or a mounted app

    routes(app, 0)
    openapi = getattr(app, "openapi", None)
    if callable(openapi):
        try:
            schema = openapi()
        except Exception:  # a schema FastAPI cannot build: the routes walked above still count
            log.warning("bearerguard.metadata.openapi_failed: scopes_supported from routes only")
            schema = {}
        for item in (schema.get("paths") or {}).values():
            for operation in item.values():
                for requirement in (
                    (operation.get("security") or ()) if isinstance(operation, dict) else ()
                ):
                    found.update(requirement.get(SCHEME_NAME, ()))
    return tuple(sorted(found))


class _CurrentToken(_Guard):
    """FastAPI dependency: the validated :class:`AccessToken` of this request.

    A guard that asks nothing more of the token: FastAPI sees the bearer security
    scheme, so a route that only reads ``Depends(current_token)`` shows the lock
    in ``/docs`` and a security requirement in ``/openapi.json`` like any other.
    """

    def judge(self, token: AccessToken) -> AccessToken:
        return token

    def __repr__(self) -> str:
        return "current_token"


#: ``Depends(current_token)``: the validated :class:`AccessToken` of this request.
current_token = _CurrentToken()


def _endpoint_decorator(guard: _Guard, name: str) -> Callable[[F], F]:
    """Wrap a Starlette endpoint so ``guard`` checks its request first.

    The refusal is raised, not answered here: the middleware answers it (inside or
    around Starlette's error handling), so a decorator's challenge is the same as
    a dependency's, resource metadata and all.
    """

    def decorate(endpoint: F) -> F:
        params = list(inspect.signature(endpoint).parameters)
        index = params.index("request") if "request" in params else 0

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            conn = kwargs.get("request", args[index] if len(args) > index else None)
            if not isinstance(conn, HTTPConnection):
                raise TypeError(f"{name} needs the request as an argument")
            guard.check(conn)
            return await endpoint(*args, **kwargs)

        # Read by route_scopes(): what the endpoint requires stays discoverable.
        wrapper.__dict__[_GUARDS] = (*getattr(endpoint, _GUARDS, ()), guard)
        return wrapper  # type: ignore[return-value]

    return decorate


def scopes_required(*scopes: str, issuers: Iterable[str] | None = None) -> Callable[[F], F]:
    """Starlette endpoint decorator with an RFC 6750 403 (Starlette's ``@requires`` also works).

    ``issuers`` as for :class:`require_scopes`: the issuers whose tokens this route accepts.
    """
    return _endpoint_decorator(require_scopes(*scopes, issuers=issuers), "scopes_required")


def authentication_required(
    *,
    acr_values: Iterable[str] | str = (),
    max_age: int | None = None,
    clock: Callable[[], float] = time.time,
) -> Callable[[F], F]:
    """Starlette endpoint decorator for step-up (RFC 9470): see :class:`require_authentication`."""
    guard = require_authentication(acr_values=acr_values, max_age=max_age, clock=clock)
    return _endpoint_decorator(guard, "authentication_required")
