"""The validation cache: a decision about a token, remembered under the SHA-256 of the token.

Why it is shaped this way:

* The hit path is the hot path (hundreds of thousands a second): one digest, one
  lookup, one deadline comparison and one ``key.active`` read, allocating nothing.
  ``cachetools.TTLCache`` costs several times that per ``get``, so entries carry
  their own deadline in an ``LRUCache`` instead.
* A deadline is fixed when the entry is stored: never past the token's ``exp``
  (RFC 7662 §4 asks it of introspection answers; JWTs get the same), never past
  the configured cap. Comparing it with the clock on every hit is the per-request
  expiry check; scopes and audience per route are the routes' business.
* Accepted and refused tokens live in separate bounded caches, so a flood of
  distinct forged tokens can only evict other refusals, never the good entries.
* A refusal remembers which JWKS generation judged it: once the keys change it is
  no longer served, so a negative entry never hides a key that has just appeared.
  An acceptance remembers the key that verified it: when the key leaves the JWKS
  (``VerificationKey.active`` turns false) the entry stops being served.
* Entries are small ``__slots__`` objects holding shared, immutable values, so a
  full cache adds few objects for the garbage collector to walk.

:class:`SharedCache` is the optional second level for introspection answers, in
Redis: the key is the token hash and the value the validated claims, never the
token; when Redis fails it is skipped for a while, never turned into an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from cachetools import LRUCache

from bearerguard.errors import InvalidToken
from bearerguard.fetch import parse_json
from bearerguard.tokens import AccessToken

__all__ = [
    "ALWAYS_ACTIVE",
    "DEFAULT_CACHE_SIZE",
    "Accepted",
    "Refused",
    "SharedCache",
    "ValidationCache",
]

log = logging.getLogger("bearerguard.cache")

#: Entries kept for accepted tokens; refusals get a quarter of that, separately.
DEFAULT_CACHE_SIZE = 10_000


class KeyLike(Protocol):
    """What an accepted entry needs of the key that vouched for it."""

    @property
    def active(self) -> bool: ...


class Generational(Protocol):
    """What a refused entry needs of the key source that judged it (a ``JWKSCache``)."""

    @property
    def generation(self) -> int: ...


class _AlwaysActive:
    """The key of results no JWKS key vouches for (introspection, HMAC): never retired."""

    __slots__ = ()
    active = True
    generation = 0


#: Stands in for a key or a key source when none applies, so the hit path never branches on None.
ALWAYS_ACTIVE = _AlwaysActive()


class Accepted:
    """A validated token, served until ``deadline`` while ``key`` is still published."""

    __slots__ = ("deadline", "key", "token")

    def __init__(self, token: AccessToken, deadline: float, key: KeyLike) -> None:
        self.token = token
        self.deadline = deadline
        self.key = key


class Refused:
    """A refusal, served until ``deadline`` while the key source is at ``generation``."""

    __slots__ = ("deadline", "description", "generation", "reason", "source")

    def __init__(self, error: InvalidToken, deadline: float, source: Generational) -> None:
        # Only the message is kept: the exception's traceback would hold the frames
        # (and the raw token) alive as long as the entry.
        self.description = error.description
        self.reason = error.reason
        self.deadline = deadline
        self.source = source
        self.generation = source.generation

    def error(self) -> InvalidToken:
        """A fresh exception each time: re-raising one instance would grow its traceback."""
        return InvalidToken(self.description, reason=self.reason)


class ValidationCache:
    """Accepted and refused tokens, each in a bounded LRU keyed by the token's SHA-256 digest.

    ``maxsize=0`` turns caching off (every call is a miss, nothing is stored).
    """

    __slots__ = ("_accepted", "_get_accepted", "_refused", "maxsize")

    def __init__(self, maxsize: int = DEFAULT_CACHE_SIZE, *, refused_maxsize: int | None = None):
        if maxsize < 0:
            raise ValueError("cache_size must be 0 (off) or positive")
        self.maxsize = maxsize
        refused_size = max(1, maxsize // 4) if refused_maxsize is None else refused_maxsize
        self._accepted: LRUCache[bytes, Accepted] = LRUCache(max(1, maxsize))
        self._refused: LRUCache[bytes, Refused] = LRUCache(max(1, refused_size))
        self._get_accepted = self._accepted.get

    @property
    def enabled(self) -> bool:
        return self.maxsize > 0

    def __len__(self) -> int:
        return len(self._accepted) + len(self._refused)

    def lookup(self, digest: bytes, now: float) -> AccessToken | None:
        """The cached token for ``digest``, ``None`` on a miss; raises a cached refusal.

        The hot path: no allocation when the token is accepted and still good.
        """
        entry = self._get_accepted(digest)
        if entry is not None:
            if now < entry.deadline and entry.key.active:
                return entry.token
            self._accepted.pop(digest, None)
        refused = self._refused.get(digest)
        if refused is not None:
            if now < refused.deadline and refused.generation == refused.source.generation:
                raise refused.error()
            self._refused.pop(digest, None)
        return None

    def accept(self, digest: bytes, token: AccessToken, deadline: float, key: KeyLike) -> None:
        """Remember an accepted token until ``deadline`` (clock time)."""
        if self.maxsize:
            self._refused.pop(digest, None)
            self._accepted[digest] = Accepted(token, deadline, key)

    def refuse(
        self, digest: bytes, error: InvalidToken, deadline: float, source: Generational
    ) -> None:
        """Remember a refusal until ``deadline`` or until ``source`` changes generation."""
        if self.maxsize:
            self._accepted.pop(digest, None)
            self._refused[digest] = Refused(error, deadline, source)

    def forget(self, digest: bytes) -> None:
        self._accepted.pop(digest, None)
        self._refused.pop(digest, None)

    def clear(self) -> None:
        self._accepted.clear()
        self._refused.clear()


class SharedCache:
    """Introspection answers shared between replicas through Redis; never raises.

    A value is ``{"active": true, "claims": {...}, "until": <epoch>}`` (or
    ``"active": false`` for a refusal) stored with the same lifetime the local
    cache would give it. Readers judge the claims again with their own rules and
    clock, so a replica configured differently is not bound by another's verdict.
    When Redis errors or times out, it is left alone for ``down_for`` seconds and
    bearerguard carries on with its in-process cache and the introspection endpoint.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        down_for: float = 5.0,
        prefix: str = "bearerguard:v1:introspection:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from redis.asyncio import Redis  # optional dependency: imported only when configured
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: one bounded attempt, then the breaker decides.
        self._redis: Any = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._timeout = timeout
        self._down_for = down_for
        self._prefix = prefix
        self._clock = clock
        self._down_until = float("-inf")
        #: Reads that found a value, and Redis failures, for tests and metrics.
        self.hits = 0
        self.failures = 0

    def _key(self, namespace: str, digest: bytes) -> str:
        return f"{self._prefix}{namespace}:{digest.hex()}"

    @property
    def available(self) -> bool:
        """False while a recent failure keeps Redis out of the request path."""
        return self._clock() >= self._down_until

    async def get(self, namespace: str, digest: bytes) -> dict[str, Any] | None:
        """The stored value, or ``None`` on a miss, a malformed value or any Redis trouble."""
        if not self.available:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.get(self._key(namespace, digest))
        except Exception as exc:  # redis errors, OSError, timeouts: all mean "skip Redis"
            self._failed("get", exc)
            return None
        if raw is None:
            return None
        try:
            value = parse_json(raw if isinstance(raw, bytes) else str(raw).encode())
        except ValueError:
            value = None
        if not _well_formed(value):
            log.warning("bearerguard.cache.shared_value_malformed digest=%s", digest.hex()[:12])
            return None
        self.hits += 1
        assert isinstance(value, dict)
        return value

    async def put(
        self, namespace: str, digest: bytes, value: Mapping[str, Any], ttl: float
    ) -> None:
        """Store ``value`` for ``ttl`` seconds (nothing when ``ttl`` is not positive)."""
        if ttl <= 0 or not self.available:
            return
        try:
            payload = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.set(
                    self._key(namespace, digest), payload, px=max(1, math.ceil(ttl * 1000))
                )
        except Exception as exc:
            self._failed("set", exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.failures += 1
        self._down_until = self._clock() + self._down_for
        log.warning(
            "bearerguard.cache.shared_unavailable op=%s error=%s skip_for=%.0fs",
            operation,
            type(exc).__name__,
            self._down_for,
        )

    async def aclose(self) -> None:
        try:
            await self._redis.aclose()
        except Exception:  # closing a connection to a dead server is not an error
            log.debug("bearerguard.cache.shared_close_failed", exc_info=True)


def _well_formed(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    active = value.get("active")
    until = value.get("until")
    if type(until) not in (int, float):
        return False
    if active is True:
        return isinstance(value.get("claims"), dict)
    return active is False
