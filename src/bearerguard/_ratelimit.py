"""Per-token rate limits with the ``limits`` package: in memory for one process, Redis for many.

A limiter only ever sees tokens that already passed validation, so an attacker
with forged tokens cannot spend somebody else's budget. The default ``key="token"``
counts a token by its ``jti`` when it carries one, so a re-spelled signature (a
second valid encoding of the same token) does not get a second budget. A storage outage is a
documented choice (fail-open with a warning and a counter, or fail-closed with a
503), never a 500.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import math
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypedDict, TypeVar, Unpack, cast

from limits import RateLimitItem, parse_many, strategies
from limits import storage as sync_storage
from limits.aio import storage as async_storage
from limits.aio import strategies as async_strategies
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from limits.util import WindowStats
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Scope

from bearerguard._challenge import answer_for
from bearerguard._errors import RateLimited, Unavailable
from bearerguard._tokens import AccessToken

__all__ = [
    "DECISION_SCOPE_KEY",
    "LIMITER_SCOPE_KEY",
    "PolicyState",
    "RateLimitDecision",
    "RateLimitKey",
    "RateLimitOptions",
    "RateLimitSettings",
    "RateLimiter",
    "Strategy",
    "rate_limit",
    "rate_limited",
]

log = logging.getLogger("bearerguard.ratelimit")

RateLimitKey: TypeAlias = Literal["token", "sub", "client_id"] | Callable[[AccessToken], str]
Strategy: TypeAlias = Literal["moving-window", "fixed-window", "sliding-window-counter"]
LimitsSpec: TypeAlias = str | Callable[[AccessToken], str | None]

#: Where the middleware puts its :class:`RateLimiter` so per-route limits share its storage.
LIMITER_SCOPE_KEY = "bearerguard.limiter"
#: Where each limiter check leaves its decision (merged, most restrictive wins) for the headers.
DECISION_SCOPE_KEY = "bearerguard.ratelimit"

_KEYS = ("token", "sub", "client_id")
_STRATEGY_TAGS = {"moving-window": "mw", "fixed-window": "fw", "sliding-window-counter": "swc"}
_STRATEGIES: dict[str, type[async_strategies.RateLimiter]] = {
    "moving-window": async_strategies.MovingWindowRateLimiter,
    "fixed-window": async_strategies.FixedWindowRateLimiter,
    "sliding-window-counter": async_strategies.SlidingWindowCounterRateLimiter,
}
_SYNC_STRATEGIES: dict[str, type[strategies.RateLimiter]] = {
    "moving-window": strategies.MovingWindowRateLimiter,
    "fixed-window": strategies.FixedWindowRateLimiter,
    "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
}
_PARSED_CACHE_SIZE = 256

F = TypeVar("F", bound=Callable[..., Any])


# -- decisions and headers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyState:
    """One limit (``q`` per ``w`` seconds) and where this key stands in it."""

    name: str
    quota: int
    window: int
    remaining: int
    reset: int


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The outcome of one allowed hit; ``reset`` is the seconds until the window frees capacity.

    ``limit``/``remaining``/``reset`` describe the most restrictive limit (the one a
    client should pace itself on); ``policies`` keeps every limit for the newer
    draft header pair. A decision without policies (no limit for this token, or the
    storage was down and the limiter failed open: ``degraded``) sends no headers,
    because any numbers would be invented.
    """

    limit: int
    remaining: int
    reset: int
    policies: tuple[PolicyState, ...] = ()
    degraded: bool = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit-Limit/-Remaining/-Reset, plus RateLimit-Policy and RateLimit (draft -10)."""
        if not self.policies:
            return []
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset).encode()),
            *_draft_headers(self.policies),
        ]

    def merge(self, other: RateLimitDecision) -> RateLimitDecision:
        """Combine two decisions on one request (global and per-route): the tighter one leads."""
        degraded = self.degraded or other.degraded
        if not (self.policies and other.policies):
            lead = self if self.policies else other
            return RateLimitDecision(
                lead.limit, lead.remaining, lead.reset, lead.policies, degraded
            )
        lead = min((self, other), key=lambda d: (d.remaining, -d.reset))
        return RateLimitDecision(
            lead.limit,
            lead.remaining,
            lead.reset,
            _unique(self.policies + other.policies),
            degraded,
        )


def _draft_headers(policies: tuple[PolicyState, ...]) -> list[tuple[bytes, bytes]]:
    declared = ", ".join(f'"{p.name}";q={p.quota};w={p.window}' for p in policies)
    current = ", ".join(f'"{p.name}";r={p.remaining};t={p.reset}' for p in policies)
    return [(b"ratelimit-policy", declared.encode()), (b"ratelimit", current.encode())]


def _unique(policies: tuple[PolicyState, ...]) -> tuple[PolicyState, ...]:
    """Keep policy names unique in one header (a route limit may repeat a global one's shape)."""
    seen: dict[str, int] = {}
    out: list[PolicyState] = []
    for p in policies:
        n = seen.get(p.name, 0)
        seen[p.name] = n + 1
        out.append(
            p
            if n == 0
            else PolicyState(f"{p.name}-{n + 1}", p.quota, p.window, p.remaining, p.reset)
        )
    return tuple(out)


def _decision(states: list[PolicyState]) -> RateLimitDecision:
    lead = min(states, key=lambda s: (s.remaining, -s.reset))
    return RateLimitDecision(lead.quota, lead.remaining, lead.reset, tuple(states))


# -- storage --------------------------------------------------------------------------------


def async_storage_uri(uri: str) -> str:
    """Map what users write (``redis://``, ``memory://``) to the async scheme of ``limits``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme:
        raise ValueError("rate limit storage must be a URI such as memory:// or redis://host:port")
    scheme = scheme.lower()
    if not scheme.startswith("async+"):
        scheme = "async+" + scheme
    return f"{scheme}://{rest}"


def _redacted(uri: str) -> str:
    """The storage URI without credentials, for error messages and reprs."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class _SharedStorage:
    """One ``limits`` storage and its health, shared by a limiter and the limiters derived from it.

    ``memory://`` gets the synchronous ``limits.storage.MemoryStorage`` because the
    async one awaits an expiry task that walks every key on each hit (68-94 µs a hit
    once the event loop runs between hits), while the sync one is pure in-process
    dict/deque work (a few µs, expiry on a timer thread) that cannot block on I/O;
    networked storages (Redis) keep the async implementation.

    After a failure the storage is left alone for ``cooldown`` seconds, so an outage
    costs one failed round trip per cooldown instead of one per request, and the
    warning is logged once per cooldown instead of flooding the log.
    """

    __slots__ = ("__weakref__", "cooldown", "down_until", "storage", "uri")

    def __init__(
        self, uri: str, *, timeout: float, cooldown: float, options: Mapping[str, Any]
    ) -> None:
        self.uri = async_storage_uri(uri)
        self.cooldown = cooldown
        self.down_until = 0.0
        scheme, _, rest = self.uri.partition("://")
        opts: dict[str, Any] = {}
        if scheme.startswith("async+redis"):
            # limits' default async Redis client (coredis) must be entered as an async
            # context manager since coredis 5, which limits 5.x does not do: use redis-py.
            opts = {
                "implementation": "redispy",
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            }
        opts.update(options)
        # The reported URI stays async+memory://; only the implementation behind it is sync.
        target = f"memory://{rest}" if scheme == "async+memory" else self.uri
        try:
            storage = storage_from_string(target, wrap_exceptions=True, **opts)
        except ConfigurationError as exc:
            raise ValueError(f"rate limit storage {_redacted(self.uri)!r}: {exc}") from None
        if not isinstance(storage, (async_storage.Storage, sync_storage.MemoryStorage)):
            raise ValueError(
                f"rate limit storage {_redacted(self.uri)!r} has no async implementation"
            )
        self.storage: async_storage.Storage | sync_storage.MemoryStorage = storage

    def is_down(self, now: float) -> bool:
        return now < self.down_until

    async def aclose(self) -> None:
        """Release the redis-py pool or the memory expiry task (``limits`` has no close)."""
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        closer = getattr(client, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception as exc:  # closing a dead connection must not fail shutdown
                log.debug("bearerguard.ratelimit.close_failed error=%s", type(exc).__name__)
        timer = getattr(self.storage, "timer", None)
        if isinstance(timer, (threading.Timer, asyncio.Task)):  # sync memory / async memory
            timer.cancel()  # a no-op on a finished timer or task


def _supports(storage: async_storage.Storage | sync_storage.Storage, strategy: str) -> bool:
    if strategy == "moving-window":
        return isinstance(
            storage, (async_storage.MovingWindowSupport, sync_storage.MovingWindowSupport)
        )
    if strategy == "sliding-window-counter":
        return isinstance(
            storage,
            (async_storage.SlidingWindowCounterSupport, sync_storage.SlidingWindowCounterSupport),
        )
    return True


# -- the limiter ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """How a :class:`RateLimiter` counts and where: every default once, checked when made.

    ``storage`` and ``storage_options`` may carry credentials, so they stay out of the repr.
    """

    #: Whose budget a hit spends: the token's own (by ``jti``), its ``sub``, its client, or yours.
    key: RateLimitKey = "token"
    storage: str = field(default="memory://", repr=False)
    strategy: Strategy = "moving-window"
    #: Storage down: ``True`` answers 503, ``False`` lets the request through with a warning.
    fail_closed: bool = False
    namespace: str = "bearerguard"
    #: Longest one storage round trip may take before it counts as an outage.
    storage_timeout: float = 1.0
    #: After a storage failure, how long it is left alone (one failed call per cooldown).
    outage_cooldown: float = 1.0
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise ValueError(
                f"unknown rate limit strategy {self.strategy!r}; use one of {sorted(_STRATEGIES)}"
            )
        if not callable(self.key) and self.key not in _KEYS:
            raise ValueError(
                f"rate limit key must be one of {_KEYS} or a callable, not {self.key!r}"
            )
        if not self.storage_timeout > 0 or not self.outage_cooldown >= 0:
            raise ValueError("storage_timeout must be > 0 and outage_cooldown >= 0")
        async_storage_uri(self.storage)  # a URI at all; its scheme is judged by ``limits``


class RateLimitOptions(TypedDict, total=False):
    """:class:`RateLimitSettings`' fields as keywords of :class:`RateLimiter` (types only)."""

    key: RateLimitKey
    storage: str
    strategy: Strategy
    fail_closed: bool
    namespace: str
    storage_timeout: float
    outage_cooldown: float
    storage_options: Mapping[str, Any]


class RateLimiter:
    """Spend a validated token's budget; the most restrictive limit decides and is reported.

    ``limits`` is the ``limits`` string notation (``"10/second;1000/hour"``) or a
    callable that returns it for a token (tiers; ``None`` or ``""`` = unlimited).
    Limits are tried from the shortest window to the longest and the first one that
    refuses stops the walk, so a burst refused by ``10/second`` does not also eat the
    hourly budget.
    """

    def __init__(
        self,
        limits: LimitsSpec,
        *,
        _shared: _SharedStorage | None = None,
        **options: Unpack[RateLimitOptions],
    ) -> None:
        settings = RateLimitSettings(**options)
        self.settings = settings
        self._static: tuple[RateLimitItem, ...] | None = None
        self._tiers: Callable[[AccessToken], str | None] | None = None
        if isinstance(limits, str):
            self._static = _parse(limits)
        elif callable(limits):
            self._tiers = limits
        else:
            raise ValueError("limits must be a limit string such as '100/minute' or a callable")
        self._parsed: dict[str, tuple[RateLimitItem, ...]] = {}
        self.key = settings.key
        self.strategy = strategy = settings.strategy
        self.fail_closed = settings.fail_closed
        self.namespace = settings.namespace
        self.storage_timeout = settings.storage_timeout
        self._owns_storage = _shared is None
        self._shared = _shared or _SharedStorage(
            settings.storage,
            timeout=settings.storage_timeout,
            cooldown=settings.outage_cooldown,
            options=settings.storage_options,
        )
        if not _supports(self._shared.storage, strategy):
            raise ValueError(
                f"storage {_redacted(self._shared.uri)!r} does not support {strategy!r}"
            )
        store = self._shared.storage
        # Exactly one is set: the sync strategy for memory, the async one for networked storage.
        self._sync: strategies.RateLimiter | None = None
        self._async: async_strategies.RateLimiter | None = None
        if isinstance(store, sync_storage.Storage):
            self._sync = _SYNC_STRATEGIES[strategy](store)
        else:
            self._async = _STRATEGIES[strategy](store)
        #: Hits decided without the storage (it failed, or was in its outage cooldown).
        self.storage_errors = 0
        #: Hits whose limit callable (tier or key) raised or returned an invalid limit string.
        self.limit_errors = 0

    def __repr__(self) -> str:
        limits = "<callable>" if self._tiers else ";".join(str(i) for i in self._static or ())
        return (
            f"RateLimiter({limits!r}, storage={_redacted(self._shared.uri)!r}, "
            f"strategy={self.strategy!r}, fail_closed={self.fail_closed})"
        )

    @property
    def storage_uri(self) -> str:
        """The storage URI in ``limits``' async notation (credentials included: do not log it)."""
        return self._shared.uri

    def derive(
        self,
        limits: LimitsSpec,
        *,
        key: RateLimitKey = "token",
        strategy: Strategy | None = None,
        fail_closed: bool | None = None,
    ) -> RateLimiter:
        """A limiter with other limits on this one's storage (shared connections and health)."""
        return RateLimiter(
            limits,
            key=key,
            strategy=strategy or self.strategy,
            fail_closed=self.fail_closed if fail_closed is None else fail_closed,
            namespace=self.namespace,
            storage_timeout=self.storage_timeout,
            outage_cooldown=self.settings.outage_cooldown,
            _shared=self._shared,
        )

    async def aclose(self) -> None:
        """Close the storage connections (a derived limiter leaves the shared storage open)."""
        if self._owns_storage:
            await self._shared.aclose()

    # -- hitting ---------------------------------------------------------------------------

    async def hit(self, token: AccessToken, *, scope: str = "") -> RateLimitDecision:
        """Spend one unit of the token's budget.

        Raises :class:`RateLimited` (429) when a limit is exhausted, or
        :class:`Unavailable` (503) when the storage is down and ``fail_closed``.
        """
        return await self._run(token, scope, consume=True)

    async def peek(self, token: AccessToken, *, scope: str = "") -> RateLimitDecision:
        """Where the token stands without spending anything (never raises RateLimited)."""
        return await self._run(token, scope, consume=False)

    async def _run(self, token: AccessToken, scope: str, *, consume: bool) -> RateLimitDecision:
        try:
            items = self._items_for(token)
            ident = self._identity(token)
        except Exception as exc:
            self.limit_errors += 1
            log.error(
                "bearerguard.ratelimit.limit_error token=%s error=%s",
                token.short_hash,
                type(exc).__name__,
            )
            return self._undecided()
        if not items:
            return RateLimitDecision(0, 0, 0)
        shared = self._shared
        if shared.is_down(time.monotonic()):
            return self._without_storage(token, None)
        # The strategy is part of the key: each stores a different Redis type under it, so
        # replicas mid-way through a strategy change must not meet each other's keys.
        ids = (self.namespace, _STRATEGY_TAGS[self.strategy], scope, *ident)
        try:
            if self._sync is not None:
                states, refused = _consult_now(self._sync, items, ids, consume)
            else:
                async with asyncio.timeout(self.storage_timeout):
                    states, refused = await self._consult(items, ids, consume)
        # Any storage failure (ConnectionError, StorageError, TimeoutError, ...) is an outage.
        except Exception as exc:
            return self._without_storage(token, exc)
        if shared.down_until:
            shared.down_until = 0.0
            log.info("bearerguard.ratelimit.storage_recovered")
        if refused is not None:
            wait = max(1, refused.reset)
            refusal = RateLimitDecision(refused.quota, 0, wait, tuple(states))
            raise RateLimited(
                retry_after=wait,
                limit=refused.quota,
                remaining=0,
                reset=wait,
                headers=tuple(refusal.headers()),
            )
        return _decision(states)

    async def _consult(
        self, items: tuple[RateLimitItem, ...], ids: tuple[str, ...], consume: bool
    ) -> tuple[list[PolicyState], PolicyState | None]:
        states: list[PolicyState] = []
        strategy = self._async
        assert strategy is not None
        for item in items:
            allowed = await strategy.hit(item, *ids) if consume else True
            state = _policy_state(item, allowed, await strategy.get_window_stats(item, *ids))
            states.append(state)
            if not allowed:
                return states, state
        return states, None

    def _without_storage(self, token: AccessToken, exc: Exception | None) -> RateLimitDecision:
        """Storage unreachable: warn (once per cooldown), count, then fail open or closed."""
        self.storage_errors += 1
        shared = self._shared
        if exc is not None:
            now = time.monotonic()
            if not shared.is_down(now):
                log.warning(
                    "bearerguard.ratelimit.storage_unavailable token=%s error=%s"
                    " fail_closed=%s errors=%d",
                    token.short_hash,
                    type(exc).__name__,
                    self.fail_closed,
                    self.storage_errors,
                )
            shared.down_until = now + shared.cooldown
        return self._undecided()

    def _undecided(self) -> RateLimitDecision:
        """No decision could be made: a 503 when failing closed, else let the request through."""
        if self.fail_closed:
            raise Unavailable(
                "The rate limit service is unavailable",
                retry_after=max(1, math.ceil(self._shared.cooldown)),
                reason="ratelimit_unavailable",
            )
        return RateLimitDecision(0, 0, 0, degraded=True)

    # -- limits and keys -------------------------------------------------------------------

    def _items_for(self, token: AccessToken) -> tuple[RateLimitItem, ...]:
        if self._static is not None:
            return self._static
        assert self._tiers is not None
        spec = self._tiers(token)
        if not spec:
            return ()
        items = self._parsed.get(spec)
        if items is None:
            items = _parse(spec)
            if len(self._parsed) >= _PARSED_CACHE_SIZE:
                self._parsed.clear()
            self._parsed[spec] = items
        return items

    def _identity(self, token: AccessToken) -> tuple[str, str]:
        key = self.key
        if callable(key):
            value = key(token)
            if value:
                return "custom", _digest("custom", value)
        elif key == "sub" and token.subject:
            return "sub", _digest(token.issuer, token.subject)
        elif key == "client_id" and token.client_id:
            return "client_id", _digest(token.issuer, token.client_id)
        return _token_identity(token)


def _consult_now(
    strategy: strategies.RateLimiter,
    items: tuple[RateLimitItem, ...],
    ids: tuple[str, ...],
    consume: bool,
) -> tuple[list[PolicyState], PolicyState | None]:
    """The in-memory walk of ``_consult``, run inline: no await, so no task switch per hit."""
    states: list[PolicyState] = []
    for item in items:
        allowed = strategy.hit(item, *ids) if consume else True
        state = _policy_state(item, allowed, strategy.get_window_stats(item, *ids))
        states.append(state)
        if not allowed:
            return states, state
    return states, None


def _policy_state(item: RateLimitItem, allowed: bool, stats: WindowStats) -> PolicyState:
    """Where a key stands in one limit; ``reset`` never exceeds the window nor goes negative."""
    window = item.get_expiry()
    reset = min(window, max(0, math.ceil(stats.reset_time - time.time())))
    remaining = max(0, min(item.amount, stats.remaining)) if allowed else 0
    return PolicyState(_policy_name(item), item.amount, window, remaining, reset)


def _token_identity(token: AccessToken) -> tuple[str, str]:
    """The token's own budget: by ``jti`` when it has one, else by the hash of its text.

    A signature can be re-spelled into a second valid token (ECDSA ``s`` -> ``n - s``)
    with another hash; the ``jti`` (RFC 7519 §4.1.7), covered by the signature, cannot.
    """
    jti = token.claims.get("jti")
    if type(jti) is str and jti:
        return "jti", _digest(token.issuer, jti)
    return "token", token.token_hash


def _parse(spec: str) -> tuple[RateLimitItem, ...]:
    try:
        items = parse_many(spec)
    except ValueError:
        raise ValueError(
            f"invalid rate limit {spec!r}; use the limits notation, e.g. '10/second;1000/hour'"
        ) from None
    return tuple(sorted(items, key=lambda i: (i.get_expiry(), i.amount)))


def _policy_name(item: RateLimitItem) -> str:
    return f"{item.amount}-per-{item.get_expiry()}s"


def _digest(*parts: str) -> str:
    """Keys carry no subject or client id in clear, and a '/' in one cannot forge another key."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


# -- per-route limits -----------------------------------------------------------------------


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
            _parse(limits)
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
    The 429 (or 503) is returned as the endpoint's response rather than raised, so
    it is the same answer however the middleware is mounted: wrapped around a
    Starlette app from outside, a raised error would meet Starlette's
    ``ServerErrorMiddleware`` first and become a 500.
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
                try:
                    await guard.check(conn.scope)
                except (RateLimited, Unavailable) as error:
                    if conn.scope.get("type") != "http":
                        raise
                    return _answer(conn.scope, error)
            if is_async:
                return await endpoint(*args, **kwargs)
            return await run_in_threadpool(cast(Callable[..., Any], endpoint), *args, **kwargs)

        wrapper.rate_limit = guard  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def _answer(scope: Scope, error: RateLimited | Unavailable) -> Response:
    """The RFC 6750-shaped answer for a refusal, carrying its own RateLimit headers."""
    # The refusal's headers replace any decision left on the scope, so none is sent twice.
    scope.pop(DECISION_SCOPE_KEY, None)
    if isinstance(error, RateLimited):  # the same event the middleware logs for its own 429s
        log.info(
            "bearerguard.ratelimit.exceeded token=%s limit=%d retry_after=%d path=%s",
            getattr(getattr(scope.get("user"), "token", None), "short_hash", "-"),
            error.limit,
            error.retry_after,
            scope.get("path"),
        )
    return answer_for(error, realm=None).response()


def record_decision(scope: Scope, decision: RateLimitDecision) -> None:
    """Leave a decision on the scope, merged with any earlier one, for the response headers."""
    previous = scope.get(DECISION_SCOPE_KEY)
    scope[DECISION_SCOPE_KEY] = (
        previous.merge(decision) if isinstance(previous, RateLimitDecision) else decision
    )


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
