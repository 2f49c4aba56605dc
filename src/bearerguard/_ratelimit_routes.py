"""Per-route rate limits: the FastAPI dependency and the Starlette decorator.

Both spend a second budget on top of the middleware's (or instead of it), on the
storage of the middleware's limiter when there is one, so every limit of an API
shares connections and one view of an outage.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.types import Scope

from bearerguard._ratelimit import LimitsSpec, RateLimiter, RateLimitKey, Strategy, parse_limits
from bearerguard._ratelimit_decision import LIMITER_SCOPE_KEY, RateLimitDecision, record_decision
from bearerguard._tokens import AccessToken

__all__ = ["LIMITER_SCOPE_KEY", "rate_limit", "rate_limited"]

F = TypeVar("F", bound=Callable[..., Any])


class rate_limit:  # a function at the call site, a class to hold its limiters
    """FastAPI dependency factory: ``Depends(rate_limit("5/second"))``.

    Uses the storage of the middleware's limiter (``scope["bearerguard.limiter"]``)
    when there is one, else its own in-memory storage, and builds that limiter once
    per storage, never per request. Requests without a validated token (anonymous
    or excluded paths) are not limited. Exceeding raises :class:`RateLimited`, which
    the middleware answers as a 429 with ``Retry-After`` and the RateLimit headers.
    Routes are counted separately (by endpoint) unless they share a ``scope`` name.
    """

    def __init__(
        self,
        limits: LimitsSpec,
        *,
        key: RateLimitKey = "token",
        scope: str | None = None,
        strategy: Strategy | None = None,
        fail_closed: bool | None = None,
    ) -> None:
        self.limits = limits
        self.key = key
        self.scope = scope
        self.strategy = strategy
        self.fail_closed = fail_closed
        # Fail on a bad limit string at import time, not on the first request.
        if isinstance(limits, str):
            parse_limits(limits)
        self._derived: weakref.WeakKeyDictionary[RateLimiter, RateLimiter] = (
            weakref.WeakKeyDictionary()
        )
        self._own: RateLimiter | None = None

    def __repr__(self) -> str:
        return f"rate_limit({self.limits!r})"

    async def __call__(self, conn: HTTPConnection) -> RateLimitDecision | None:
        return await self.check(conn.scope)

    def limiter_for(self, parent: RateLimiter | None) -> RateLimiter:
        """This route's limiter on ``parent``'s storage (cached), or on its own memory storage."""
        if parent is None:
            if self._own is None:
                self._own = RateLimiter(
                    self.limits,
                    key=self.key,
                    strategy=self.strategy or "moving-window",
                    fail_closed=bool(self.fail_closed),
                )
            return self._own
        limiter = self._derived.get(parent)
        if limiter is None:
            limiter = parent.derive(
                self.limits, key=self.key, strategy=self.strategy, fail_closed=self.fail_closed
            )
            self._derived[parent] = limiter
        return limiter

    async def check(self, scope: Scope) -> RateLimitDecision | None:
        """Spend the route budget of this request's token; ``None`` when there is no token."""
        user = scope.get("user")
        token = getattr(user, "token", None)
        if not isinstance(token, AccessToken):
            return None
        parent = scope.get(LIMITER_SCOPE_KEY)
        limiter = self.limiter_for(parent if isinstance(parent, RateLimiter) else None)
        decision = await limiter.hit(token, scope=self.scope or _route_name(scope))
        record_decision(scope, decision)
        return decision

    async def aclose(self) -> None:
        """Close the in-memory limiter this dependency made for itself, if any."""
        if self._own is not None:
            await self._own.aclose()


def rate_limited(
    limits: LimitsSpec,
    *,
    key: RateLimitKey = "token",
    scope: str | None = None,
    strategy: Strategy | None = None,
    fail_closed: bool | None = None,
) -> Callable[[F], F]:
    """Starlette endpoint decorator: ``@rate_limited("5/second")`` on ``endpoint(request)``.

    Same behaviour as :class:`rate_limit`; the endpoint (function or
    ``HTTPEndpoint`` method) must receive the request, which is how it is found.
    The 429 (or 503) is raised, like every refusal, so the middleware alone logs,
    counts and answers it, for HTTP and WebSocket routes alike (wrapped around a
    Starlette app from outside, it answers through the app's exception handler).
    """

    def decorate(endpoint: F) -> F:
        params = inspect.signature(endpoint).parameters
        if not params:
            raise TypeError("@rate_limited needs an endpoint that receives the request")
        guard = rate_limit(
            limits,
            key=key,
            scope=scope or f"{endpoint.__module__}.{endpoint.__qualname__}",
            strategy=strategy,
            fail_closed=fail_closed,
        )
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            conn = next(
                (a for a in (*args, *kwargs.values()) if isinstance(a, HTTPConnection)), None
            )
            if conn is not None:
                await guard.check(conn.scope)
            if is_async:
                return await endpoint(*args, **kwargs)
            return await run_in_threadpool(cast(Callable[..., Any], endpoint), *args, **kwargs)

        wrapper.rate_limit = guard  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def _route_name(scope: Scope) -> str:
    """A name for the route that is the same on every replica (so they share its budget)."""
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        module = getattr(endpoint, "__module__", "") or ""
        name = getattr(endpoint, "__qualname__", None) or type(endpoint).__qualname__
        return f"{module}.{name}"
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return str(scope.get("path", ""))
