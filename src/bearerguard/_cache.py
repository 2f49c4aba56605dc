"""The validation cache: a decision about a token, remembered under the SHA-256 of the token.

Why it is shaped this way:

* The hit path is the hot path (hundreds of thousands a second): one digest, one
  lookup, one deadline comparison, one ``key.active`` read and one counter
  increment, allocating nothing. ``cachetools.TTLCache`` costs several times that
  per ``get``, so entries carry their own deadline in a bounded ``OrderedDict``
  read with ``dict.get`` (and dropping its oldest entry is O(1) when it is full).
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
* An accepted entry is the :class:`AccessToken` itself, its deadline and key in
  side tables and its scope set shared with other tokens: a full cache adds as
  few objects as possible for the garbage collector's full passes to walk.

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
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from bearerguard._errors import InvalidToken
from bearerguard._json import loads_bytes
from bearerguard._redis import redis_client
from bearerguard._tokens import AccessToken

__all__ = [
    "ALWAYS_ACTIVE",
    "DEFAULT_CACHE_SIZE",
    "Refused",
    "SharedCache",
    "ValidationCache",
]

log = logging.getLogger("bearerguard.cache")

#: Entries kept for accepted tokens; refusals get a quarter of that, separately.
DEFAULT_CACHE_SIZE = 10_000
#: Distinct scope sets shared between cached tokens; past this, each token keeps its own.
_MAX_SCOPE_SETS = 1024


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


_V = TypeVar("_V")


class _Indexed(Generic[_V]):
    """A bounded map whose oldest entry goes first, read on the hit path through ``index``.

    ``index`` is an ``OrderedDict``: its ``get`` is the C-level ``dict.get`` and taking
    the oldest entry is O(1). (``cachetools.Cache`` evicted with ``next(iter(dict))``,
    which walks the slots its earlier evictions emptied: a cost on every store once the
    cache was full, so on every miss of a cold stream; see benchmarks/results/latest.md.)
    Entries are not reordered by hits.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.index: OrderedDict[bytes, _V] = OrderedDict()

    def __len__(self) -> int:
        return len(self.index)

    def __setitem__(self, key: bytes, value: _V) -> None:
        index = self.index
        if key not in index and len(index) >= self.maxsize:
            self._forget(index.popitem(last=False)[0])
        index[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self.index[key]
        self._forget(key)

    def pop(self, key: bytes, default: _V | None = None) -> _V | None:
        if key not in self.index:
            return default
        value = self.index.pop(key)
        self._forget(key)
        return value

    def _forget(self, key: bytes) -> None:
        """An entry left (evicted or removed): subclasses drop what they keep beside it."""


class _AcceptedIndex(_Indexed[AccessToken]):
    """Accepted tokens, with their deadline and key in side tables.

    Floats and shared key objects in plain dicts add nothing for the garbage
    collector to walk; a per-entry record object would add one tracked object per
    cached token (and full collections walk every one of them).
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.deadlines: dict[bytes, float] = {}
        self.verifiers: dict[bytes, KeyLike] = {}

    def put(self, digest: bytes, token: AccessToken, deadline: float, key: KeyLike) -> None:
        self.deadlines[digest] = deadline
        self.verifiers[digest] = key
        self[digest] = token

    def _forget(self, key: bytes) -> None:
        del self.deadlines[key]
        del self.verifiers[key]


class ValidationCache:
    """Accepted and refused tokens, each in a bounded cache keyed by the token's SHA-256 digest.

    ``maxsize=0`` turns caching off (every call is a miss, nothing is stored). Eviction
    is oldest-first: a hit does not reorder anything, so it stays a single lookup; a
    token evicted while still in use costs one fresh validation.

    Every :meth:`lookup` adds one to ``hits``, ``negative_hits`` (a cached refusal
    raised) or ``misses``: plain integers that only grow (:meth:`clear` keeps them),
    so metrics read them at collection time and the hit path pays one increment.
    """

    __slots__ = (
        "_accepted",
        "_deadlines",
        "_get_accepted",
        "_keys",
        "_refused",
        "_scopes",
        "hits",
        "maxsize",
        "misses",
        "negative_hits",
    )

    def __init__(self, maxsize: int = DEFAULT_CACHE_SIZE, *, refused_maxsize: int | None = None):
        if maxsize < 0:
            raise ValueError("cache_size must be 0 (off) or positive")
        self.maxsize = maxsize
        refused_size = max(1, maxsize // 4) if refused_maxsize is None else refused_maxsize
        self._refused: _Indexed[Refused] = _Indexed(max(1, refused_size))
        self._scopes: dict[frozenset[str], frozenset[str]] = {}
        self._reset_accepted(max(1, maxsize))
        self.hits = 0
        self.negative_hits = 0
        self.misses = 0

    def _reset_accepted(self, maxsize: int) -> None:
        self._accepted = _AcceptedIndex(maxsize)
        self._get_accepted = self._accepted.index.get
        self._deadlines = self._accepted.deadlines
        self._keys = self._accepted.verifiers

    @property
    def enabled(self) -> bool:
        return self.maxsize > 0

    def __len__(self) -> int:
        return len(self._accepted) + len(self._refused)

    def lookup(self, digest: bytes, now: float) -> AccessToken | None:
        """The cached token for ``digest``, ``None`` on a miss; raises a cached refusal.

        The hot path: no allocation when the token is accepted and still good.
        """
        token = self._get_accepted(digest)
        if token is not None:
            if now < self._deadlines[digest] and self._keys[digest].active:
                self.hits += 1
                return token
            del self._accepted[digest]
        refused = self._refused.index.get(digest)
        if refused is not None:
            if now < refused.deadline and refused.generation == refused.source.generation:
                self.negative_hits += 1
                raise refused.error()
            self._refused.pop(digest, None)
        self.misses += 1
        return None

    def accept(self, digest: bytes, token: AccessToken, deadline: float, key: KeyLike) -> None:
        """Remember an accepted token until ``deadline`` (clock time)."""
        if self.maxsize:
            self._refused.pop(digest, None)
            self._accepted.put(digest, token, deadline, key)

    def refuse(
        self, digest: bytes, error: InvalidToken, deadline: float, source: Generational
    ) -> None:
        """Remember a refusal until ``deadline`` or until ``source`` changes generation."""
        if self.maxsize:
            self._accepted.pop(digest, None)
            self._refused[digest] = Refused(error, deadline, source)

    def shared_scopes(self, scopes: frozenset[str]) -> frozenset[str]:
        """One frozenset object per distinct scope set, so cached tokens share them (bounded)."""
        found = self._scopes.get(scopes)
        if found is not None:
            return found
        if len(self._scopes) < _MAX_SCOPE_SETS:
            self._scopes[scopes] = scopes
        return scopes

    def clear(self) -> None:
        self._reset_accepted(int(self._accepted.maxsize))
        self._refused = _Indexed(int(self._refused.maxsize))


class SharedCache:
    """Introspection answers shared between replicas through Redis; never raises.

    A value is ``{"active": true, "at": <epoch>, "claims": {...}, "until": <epoch>}``
    (or ``"active": false`` for a refusal) stored with the same lifetime the local
    cache would give it. Readers judge the claims again with their own rules, clock
    and TTLs (counted from ``at``), so a replica configured differently is not bound
    by another's verdict. (v2: v1 entries had no ``at`` and are not read.)
    When Redis errors or times out, it is left alone for ``down_for`` seconds and
    bearerguard carries on with its in-process cache and the introspection endpoint.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        down_for: float = 5.0,
        prefix: str = "bearerguard:v2:introspection:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:  # optional dependency: imported only when configured
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:  # pragma: no cover - depends on the installation
            raise ValueError("cache_url needs redis-py: pip install 'bearerguard[redis]'") from None

        # One server, a cluster or a sentinel-watched master: the URIs rate limits take.
        # No retries inside redis-py: one bounded attempt, then the breaker decides.
        self._redis: Any = redis_client(
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
            value = loads_bytes(raw if isinstance(raw, bytes) else str(raw).encode())
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
    if type(until) not in (int, float) or type(value.get("at")) not in (int, float):
        return False
    if active is True:
        claims = value.get("claims")
        return isinstance(claims, dict) and claims.get("active") is True
    return active is False
