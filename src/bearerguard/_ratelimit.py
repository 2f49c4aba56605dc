"""Per-token rate limits with the ``limits`` package: in memory for one process, Redis for many.

A limiter only ever sees tokens that already passed validation, so an attacker
with forged tokens cannot spend somebody else's budget. The default ``key="token"``
counts a token by its ``jti`` when it carries one, so a re-spelled signature (a
second valid encoding of the same token) does not get a second budget. A storage outage is a
documented choice (fail-open with a warning and a counter, or fail-closed with a
503), never a 500. Decisions and headers live in :mod:`bearerguard._ratelimit_decision`,
the storage in :mod:`bearerguard._ratelimit_storage`, the per-route helpers in
:mod:`bearerguard._ratelimit_routes`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypedDict, Unpack

from limits import RateLimitItem, parse_many, strategies
from limits import storage as sync_storage
from limits.aio import strategies as async_strategies
from limits.util import WindowStats

from bearerguard._errors import RateLimited, Unavailable
from bearerguard._ratelimit_decision import PolicyState, RateLimitDecision, decision_of
from bearerguard._ratelimit_memory import MovingWindowMemory
from bearerguard._ratelimit_redis import RedisMovingWindow
from bearerguard._ratelimit_storage import SharedStorage, async_storage_uri, redacted, supports
from bearerguard._redis import ScriptBatch
from bearerguard._tokens import AccessToken

__all__ = [
    "LimitsSpec",
    "RateLimitKey",
    "RateLimitOptions",
    "RateLimitSettings",
    "RateLimiter",
    "Strategy",
    "parse_limits",
]

log = logging.getLogger("bearerguard.ratelimit")

RateLimitKey: TypeAlias = Literal["token", "sub", "client_id"] | Callable[[AccessToken], str]
Strategy: TypeAlias = Literal["moving-window", "fixed-window", "sliding-window-counter"]
LimitsSpec: TypeAlias = str | Callable[[AccessToken], str | None]

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
#: Budget identities remembered (a token is hit many times; one SHA-256 for it is enough).
_IDENTITY_CACHE_SIZE = 4096


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
        _shared: SharedStorage | None = None,
        **options: Unpack[RateLimitOptions],
    ) -> None:
        settings = RateLimitSettings(**options)
        self.settings = settings
        self._static: tuple[RateLimitItem, ...] | None = None
        self._tiers: Callable[[AccessToken], str | None] | None = None
        if isinstance(limits, str):
            self._static = parse_limits(limits)
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
        self._shared = _shared or SharedStorage(
            settings.storage,
            timeout=settings.storage_timeout,
            cooldown=settings.outage_cooldown,
            options=settings.storage_options,
        )
        if not supports(self._shared.storage, strategy):
            raise ValueError(
                f"storage {redacted(self._shared.uri)!r} does not support {strategy!r}"
            )
        store = self._shared.storage
        #: Moving-window hits on one Redis: one batched script call instead of two per limit.
        self._batched = self._shared.moving_window if strategy == "moving-window" else None
        #: Moving-window hits in memory: the storage asked directly, one key per limit.
        self._memory_window = (
            store if isinstance(store, MovingWindowMemory) and strategy == "moving-window" else None
        )
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
            f"RateLimiter({limits!r}, storage={redacted(self._shared.uri)!r}, "
            f"strategy={self.strategy!r}, fail_closed={self.fail_closed})"
        )

    @property
    def storage_uri(self) -> str:
        """The storage URI in ``limits``' async notation (credentials included: do not log it)."""
        return self._shared.uri

    @property
    def script_batch(self) -> ScriptBatch | None:
        """The pipeline this limiter's Redis hits ride in (one server or sentinel), if any."""
        return self._shared.script_batch

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
        # replicas mid-way through a strategy change must not meet each other's keys. One
        # identifier joined here is the key limits would join from the parts (it joins
        # with "/"), built once instead of twice per limit.
        ids = "/".join((self.namespace, _STRATEGY_TAGS[self.strategy], scope, *ident))
        try:
            if self._memory_window is not None:
                states, refused = _consult_memory(self._memory_window, items, ids, consume)
            elif self._sync is not None:
                states, refused = _consult_now(self._sync, items, ids, consume)
            else:
                async with asyncio.timeout(self.storage_timeout):
                    if not shared.connected:
                        await shared.connect()
                    if self._batched is not None:
                        states, refused = await _consult_batched(self._batched, items, ids, consume)
                    else:
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
        return decision_of(states)

    async def _consult(
        self, items: tuple[RateLimitItem, ...], ids: str, consume: bool
    ) -> tuple[list[PolicyState], PolicyState | None]:
        states: list[PolicyState] = []
        strategy = self._async
        assert strategy is not None
        for item in items:
            allowed = await strategy.hit(item, ids) if consume else True
            state = _policy_state(item, allowed, await strategy.get_window_stats(item, ids))
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
            items = parse_limits(spec)
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


def _consult_memory(
    storage: MovingWindowMemory, items: tuple[RateLimitItem, ...], ids: str, consume: bool
) -> tuple[list[PolicyState], PolicyState | None]:
    """``_consult_now`` for the in-memory moving window, asking the storage what limits'
    ``MovingWindowRateLimiter`` asks it (acquire, then the window) with the key built once."""
    states: list[PolicyState] = []
    for item in items:
        key = _storage_key(item, ids)
        limit, expiry = item.amount, item.get_expiry()
        allowed, start, count = storage.spend(key, limit, expiry, consume)
        state = _policy_state_at(item, allowed, start + expiry, limit - count)
        states.append(state)
        if not allowed:
            return states, state
    return states, None


@functools.lru_cache(maxsize=_IDENTITY_CACHE_SIZE)
def _storage_key(item: RateLimitItem, ids: str) -> str:
    """limits' key for a limit and an identity: the same few pairs hit again and again."""
    return item.key_for(ids)


def _consult_now(
    strategy: strategies.RateLimiter,
    items: tuple[RateLimitItem, ...],
    ids: str,
    consume: bool,
) -> tuple[list[PolicyState], PolicyState | None]:
    """The in-memory walk of ``_consult``, run inline: no await, so no task switch per hit."""
    states: list[PolicyState] = []
    for item in items:
        allowed = strategy.hit(item, ids) if consume else True
        state = _policy_state(item, allowed, strategy.get_window_stats(item, ids))
        states.append(state)
        if not allowed:
            return states, state
    return states, None


async def _consult_batched(
    batched: RedisMovingWindow, items: tuple[RateLimitItem, ...], ids: str, consume: bool
) -> tuple[list[PolicyState], PolicyState | None]:
    """``_consult`` for the moving window on one Redis: every limit in one script call.

    The window stats are limits' own arithmetic (reset = oldest hit + window,
    remaining = limit - hits in the window).
    """
    windows = await batched.check(
        [_storage_key(item, ids) for item in items],
        [(item.amount, item.get_expiry()) for item in items],
        time.time(),
        consume=consume,
    )
    states: list[PolicyState] = []
    for item, (allowed, oldest, count) in zip(items, windows, strict=False):
        stats = WindowStats(oldest + item.get_expiry(), item.amount - count)
        state = _policy_state(item, allowed, stats)
        states.append(state)
        if not allowed:
            return states, state
    return states, None


def _policy_state(item: RateLimitItem, allowed: bool, stats: WindowStats) -> PolicyState:
    return _policy_state_at(item, allowed, stats.reset_time, stats.remaining)


def _policy_state_at(
    item: RateLimitItem, allowed: bool, reset_time: float, remaining: int
) -> PolicyState:
    """Where a key stands in one limit; ``reset`` never exceeds the window nor goes negative."""
    window = item.get_expiry()
    reset = min(window, max(0, math.ceil(reset_time - time.time())))
    left = max(0, min(item.amount, remaining)) if allowed else 0
    return PolicyState(_policy_name(item), item.amount, window, left, reset)


def _token_identity(token: AccessToken) -> tuple[str, str]:
    """The token's own budget: by ``jti`` when it has one, else by the hash of its text.

    A signature can be re-spelled into a second valid token (ECDSA ``s`` -> ``n - s``)
    with another hash; the ``jti`` (RFC 7519 §4.1.7), covered by the signature, cannot.
    """
    jti = token.claims.get("jti")
    if type(jti) is str and jti:
        return "jti", _digest(token.issuer, jti)
    return "token", token.token_hash


def parse_limits(spec: str) -> tuple[RateLimitItem, ...]:
    try:
        items = parse_many(spec)
    except ValueError:
        raise ValueError(
            f"invalid rate limit {spec!r}; use the limits notation, e.g. '10/second;1000/hour'"
        ) from None
    return tuple(sorted(items, key=lambda i: (i.get_expiry(), i.amount)))


@functools.lru_cache(maxsize=_PARSED_CACHE_SIZE)
def _policy_name(item: RateLimitItem) -> str:
    """``100-per-60s``: the same few items every hit, so named once each."""
    return f"{item.amount}-per-{item.get_expiry()}s"


@functools.lru_cache(maxsize=_IDENTITY_CACHE_SIZE)
def _digest(*parts: str) -> str:
    """Keys carry no subject or client id in clear, and a '/' in one cannot forge another key."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
