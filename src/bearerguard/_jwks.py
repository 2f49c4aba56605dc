"""One issuer's JWKS, cached: no request waits on a routine refresh, and an outage is never a 401.

The rules, and why:

* The request path only looks keys up. A routine refresh starts in the
  background once ``refresh_ahead`` of the lifetime has passed, and a failure
  keeps the last known good keys, up to ``max_stale`` after the last success.
* A ``kid`` we do not know may mean the issuer rotated its keys: one refresh is
  made (single-flight, so a thousand such requests cost one fetch) and the request
  is judged with the refreshed keys. At most one such refresh happens per
  ``cooldown``, so a stream of random ``kid`` s cannot make us hammer the issuer.
* An unknown ``kid`` we could not check (the cooldown was spent, or the check
  failed while last-known-good keys are in hand) is a 401 exactly like a bad
  signature, never a 503: a forged token is the client's doing, and an attacker
  must not be able to make the API look down to load balancers and SLO alerts.
  Such a ``kid`` schedules one refresh for when the cooldown ends, so a genuine
  rotation is picked up within one cooldown even if no request comes meanwhile;
  a ``kid`` a fetch showed absent (or withdrew) is settled for one cooldown, then
  checked again like any unknown one.
* When keys cannot be had at all (never fetched, or past ``max_stale``) the answer
  is :class:`~bearerguard._errors.Unavailable` (503), never
  :class:`~bearerguard._errors.InvalidToken`: clients keep good tokens.
* Keys belong to the issuer whose JWKS served them (RFC 8725 §3.8).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from bearerguard._backoff import Backoff
from bearerguard._config import Issuer
from bearerguard._errors import InvalidToken, Unavailable, signature_refused
from bearerguard._fetch import UpstreamError, fetch_json
from bearerguard._flight import SingleFlight
from bearerguard._keys import KeySet, VerificationKey
from bearerguard._metadata import MetadataResolver

__all__ = ["JWKSCache"]

log = logging.getLogger("bearerguard.jwks")

_ACCEPT = {"Accept": "application/jwk-set+json, application/json"}
#: How many refreshes one unknown-kid request may wait for before it decides.
_MAX_WAITS = 4
#: Unknown kids remembered (with when they were first seen); past this, start over.
_MAX_UNKNOWN_KIDS = 1024


class _JWKSError(Exception):
    """A JWKS answer that must not replace the keys in hand; the message is safe to log."""


class JWKSCache:
    """The keys of one issuer, fetched from its ``jwks_uri`` and kept fresh.

    ``fetches`` counts JWKS requests sent and ``failures`` refresh attempts that
    failed, for tests and metrics; ``generation`` grows each time a fetch changed
    the key set.
    """

    def __init__(
        self,
        issuer: Issuer,
        client: httpx.AsyncClient,
        *,
        metadata: MetadataResolver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._client = client
        self._metadata = metadata
        self._clock = clock
        self._policy = issuer.fetch
        self._keyset: KeySet | None = None
        self._fetched_at = float("-inf")
        self._ttl = self._policy.default_ttl
        self._generation = 0
        self._flight: SingleFlight[bool] = SingleFlight()
        self._backoff = Backoff(self._policy.cooldown)
        self._last_forced: float | None = None
        self._last_ok = True
        # Sequence numbers: refreshes started, and the latest started one that succeeded.
        self._started = 0
        self._ok_seq = 0
        self.fetches = 0
        self.failures = 0
        #: Why the last fetch failed (``None`` after one that worked), for explanations.
        self.last_error: str | None = None
        # kid -> (refreshes started, clock) when it was first seen unknown (or withdrawn),
        # for one cooldown.
        self._unknown_since: dict[str, tuple[int, float]] = {}
        # The refresh an unchecked unknown kid scheduled for the end of the cooldown.
        self._deferred: asyncio.TimerHandle | None = None

    # -- what others may look at -------------------------------------------------

    @property
    def keyset(self) -> KeySet | None:
        return self._keyset

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def ttl(self) -> float:
        """The lifetime given to the current keys (Cache-Control, clamped)."""
        return self._ttl

    @property
    def fetched_at(self) -> float | None:
        """Clock time of the last successful fetch, ``None`` before the first."""
        return self._keyset.fetched_at if self._keyset is not None else None

    @property
    def refreshing(self) -> bool:
        """True while a fetch is in flight."""
        return self._flight.current() is not None

    # -- the request path ----------------------------------------------------------

    def ready_keys(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...] | None:
        """The request path's fast lane: the keys, when nothing needs doing first.

        ``None`` when the keys are missing, due for a refresh, or the ``kid`` is
        unknown: then :meth:`get_keys` decides. Synchronous, since awaiting a
        coroutine that never suspends still costs every cold validation its frame.
        """
        keyset = self._keyset
        if keyset is None or (kid is not None and type(kid) is not str):
            return None
        age = self._clock() - self._fetched_at
        if age < 0 or age >= self._policy.refresh_ahead * self._ttl:
            return None
        return keyset.candidates(kid, alg)

    async def get_keys(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        """Keys that may verify a token with this ``kid`` and ``alg`` (see ``KeySet.candidates``).

        Raises ``InvalidToken`` (reason ``unknown_kid``, the answer of a bad signature)
        when the keys in hand do not hold ``kid`` and a refresh did not bring it (or
        could not be made: cooldown, failed fetch), and ``Unavailable`` only when no
        keys can be had at all.
        """
        if kid is not None and type(kid) is not str:
            raise InvalidToken("The access token is malformed", reason="bad_kid")
        arrival = self._started
        now = self._clock()
        keyset = self._keyset
        age = now - self._fetched_at
        if keyset is None or age > self._policy.max_stale:
            keyset = await self._fresh_enough(now)
        elif self._refresh_due(age) and self._backoff.allows(now):
            self._start("refresh_ahead")
        found = keyset.candidates(kid, alg)
        if found is not None:
            return found
        return await self._unknown_kid(kid, alg, arrival)

    def _refresh_due(self, age: float) -> bool:
        # A negative age means the clock went back: refresh rather than trust the keys' age.
        return age >= self._policy.refresh_ahead * self._ttl or age < 0

    async def _fresh_enough(self, now: float) -> KeySet:
        """Wait for keys when there are none (or only too stale ones): the only blocking fetch."""
        if self._flight.current() is None and not self._backoff.allows(now):
            raise self._unavailable(now)
        await self._join(self._start("initial" if self._keyset is None else "stale"))
        keyset = self._keyset
        now = self._clock()
        if keyset is None or now - self._fetched_at > self._policy.max_stale:
            raise self._unavailable(now)
        return keyset

    async def _unknown_kid(
        self, kid: str | None, alg: str, arrival: int
    ) -> tuple[VerificationKey, ...]:
        def probe() -> tuple[VerificationKey, ...] | None:
            keyset = self._keyset
            return keyset.candidates(kid, alg) if keyset is not None else None

        if kid is not None:
            arrival = self._first_seen_unknown(kid, arrival)
        found = await self._refresh_until(probe, arrival, "unknown_kid", kid)
        if found is not None:
            return found
        if self._ok_seq <= arrival:
            # Unchecked (the cooldown was spent, or the fetch failed): the kid may be a
            # genuine rotation, so look once more when the cooldown ends.
            self._defer_refresh()
        raise signature_refused("unknown_kid")

    def _first_seen_unknown(self, kid: str, arrival: int) -> int:
        """When this kid was first found unknown, if within one cooldown; else now.

        A fetch begun after that moment which still lacks the kid settles it: the
        next requests with that kid (a withdrawn key's tokens, say) get their 401
        at once rather than a 503 while the cooldown runs. Remembered only for a
        cooldown, so a kid the issuer publishes later is looked for again.
        """
        now = self._clock()
        seen = self._unknown_since.get(kid)
        if seen is not None and 0 <= now - seen[1] < self._policy.cooldown:
            return min(arrival, seen[0])
        self._settle_unknown(kid, arrival, now)
        return arrival

    def _settle_unknown(self, kid: str, seq: int, now: float) -> None:
        if len(self._unknown_since) >= _MAX_UNKNOWN_KIDS:
            self._unknown_since.clear()
        self._unknown_since[kid] = (seq, now)

    def _defer_refresh(self) -> None:
        """Schedule one refresh for the end of the cooldown, unless one is scheduled already."""
        if self._deferred is not None:
            return
        forced = self._last_forced
        left = self._policy.cooldown - (self._clock() - forced) if forced is not None else 0.0
        seq = self._started
        self._deferred = asyncio.get_running_loop().call_later(
            min(max(left, 0.0), self._policy.cooldown), self._deferred_refresh, seq
        )

    def _deferred_refresh(self, seq: int) -> None:
        self._deferred = None
        if self._ok_seq > seq or self._flight.current() is not None:
            return  # a fetch since the kid was refused has already looked
        self._last_forced = self._clock()
        log.info(
            "bearerguard.jwks.unknown_kid issuer=%s action=deferred_refresh",
            self._issuer.issuer,
        )
        self._start("unknown_kid")

    async def recheck(
        self, kid: str | None, alg: str, tried: tuple[VerificationKey, ...]
    ) -> tuple[VerificationKey, ...]:
        """Keys worth trying after ``tried`` failed to verify a signature; never raises.

        For issuers that replace a key under the same ``kid`` (or sign without one):
        one refresh, under the same cooldown and single flight as an unknown ``kid``
        (so forged signatures cost no more fetches than random kids), and the keys
        for ``kid``/``alg`` that were not among ``tried``; ``()`` when there are none.
        """
        tried_ids = {id(key) for key in tried}

        def probe() -> tuple[VerificationKey, ...] | None:
            keyset = self._keyset
            found = keyset.candidates(kid, alg) if keyset is not None else None
            fresh = tuple(k for k in found or () if id(k) not in tried_ids)
            return fresh or None

        if kid is not None and type(kid) is not str:
            return ()
        return await self._refresh_until(probe, self._started, "recheck", kid) or ()

    async def _refresh_until(
        self,
        probe: Callable[[], tuple[VerificationKey, ...] | None],
        arrival: int,
        reason: str,
        kid: str | None,
    ) -> tuple[VerificationKey, ...] | None:
        """Wait for refreshes (joining one in flight, or forcing one when the cooldown allows)
        until ``probe`` finds something, or a fetch begun after ``arrival`` has succeeded."""
        for _ in range(_MAX_WAITS):
            if self._ok_seq > arrival:
                return None  # keys fetched after the request arrived: nothing more to learn
            if self._flight.current() is None:
                now = self._clock()
                if (
                    self._last_forced is not None
                    and 0 <= now - self._last_forced < self._policy.cooldown
                ):
                    return None
                self._last_forced = now
                log.info(
                    "bearerguard.jwks.%s issuer=%s kid=%r action=refresh",
                    reason,  # unknown_kid, or recheck after a signature that did not verify
                    self._issuer.issuer,
                    (kid or "")[:64],
                )
                self._start(reason)
            await self._join()
            found = probe()
            if found is not None:
                return found
        return None

    # -- lifecycle -----------------------------------------------------------------

    async def prefetch(self) -> None:
        """Fetch keys at startup when there are none; never raises (a later request retries)."""
        try:
            if self._keyset is None:
                await self._join(self._start("prefetch"))
        except Exception:  # startup must not depend on the issuer
            log.exception("bearerguard.jwks.prefetch_error issuer=%s", self._issuer.issuer)

    async def refresh(self) -> bool:
        """Fetch now (or join the fetch in flight); True when keys were fetched. Never raises."""
        return await self._join(self._start("requested"))

    async def aclose(self) -> None:
        """Cancel a fetch in flight, a scheduled one, and the metadata's (at shutdown)."""
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        await self._flight.aclose()
        await self._metadata.aclose()

    # -- the single flight -------------------------------------------------------

    def _start(self, reason: str) -> asyncio.Task[bool]:
        """The refresh in flight, or a new one numbered after those started before it."""

        def launch() -> Coroutine[Any, Any, bool]:
            self._started += 1
            return self._refresh(reason, self._started)

        return self._flight.start(launch, name=f"bearerguard-jwks-{reason}")

    async def _join(self, task: asyncio.Task[bool] | None = None) -> bool:
        task = task if task is not None else self._flight.current()
        return self._last_ok if task is None else await self._flight.join(task)

    async def _refresh(self, reason: str, seq: int) -> bool:
        """One fetch of the JWKS; records the outcome and never raises."""
        try:
            metadata = await self._metadata.get()
            if metadata.jwks_uri is None:
                raise _JWKSError("the issuer publishes no jwks_uri")
            self.fetches += 1
            result = await fetch_json(
                self._client, metadata.jwks_uri, policy=self._policy, headers=_ACCEPT
            )
            fetched_at = self._clock()
            keyset = KeySet.from_jwks(
                result.document,
                issuer=self._issuer.issuer,
                algorithms=self._issuer.algorithms,
                max_keys=self._policy.max_keys,
                fetched_at=fetched_at,
            )
            if not keyset.keys and keyset.skipped:
                raise _JWKSError(f"none of the {keyset.skipped} keys is usable")
        except (Unavailable, UpstreamError, _JWKSError, ValueError) as exc:
            self._failed(reason, exc)
            return False
        except Exception as exc:  # a bug must not kill the cache
            log.exception("bearerguard.jwks.internal_error issuer=%s", self._issuer.issuer)
            self._failed(reason, exc)
            return False
        self._install(keyset, result.max_age, seq)
        return True

    def _install(self, new: KeySet, max_age: float | None, seq: int) -> None:
        policy = self._policy
        ttl = policy.default_ttl if max_age is None else max_age
        ttl = min(max(ttl, policy.min_ttl), policy.max_ttl)
        old = self._keyset
        if old is not None:
            new = new.adopt_from(old)
            old.retire_missing(new)
        changed = old is None or {k.identity() for k in old.keys} != {
            k.identity() for k in new.keys
        }
        self._keyset = new
        self._fetched_at = new.fetched_at
        self._ttl = ttl
        self._last_ok = True
        self.last_error = None
        self._ok_seq = max(self._ok_seq, seq)
        self._backoff.succeeded()
        if changed:
            self._generation += 1
        kids = {k.kid for k in new.keys}
        log.info(
            "bearerguard.jwks.fetched issuer=%s keys=%d skipped=%d ttl=%.0fs",
            self._issuer.issuer,
            len(new.keys),
            new.skipped,
            ttl,
        )
        if old is not None and changed:
            before = {k.kid for k in old.keys}
            # A withdrawn kid is settled by this fetch for one cooldown (its tokens get
            # their 401 at once), then looked for again like any unknown kid.
            for kid in before - kids:
                if kid is not None:
                    self._settle_unknown(kid, seq - 1, new.fetched_at)
            log.info(
                "bearerguard.jwks.rotated issuer=%s added=%s removed=%s generation=%d",
                self._issuer.issuer,
                sorted(str(k) for k in kids - before),
                sorted(str(k) for k in before - kids),
                self._generation,
            )

    def _failed(self, reason: str, exc: Exception) -> None:
        self.failures += 1
        self._last_ok = False
        self.last_error = (
            exc.description if isinstance(exc, Unavailable) else str(exc) or type(exc).__name__
        )
        hint = exc.retry_after if isinstance(exc, UpstreamError) else None
        delay = self._backoff.failed(self._clock(), hint=hint)
        log.warning(
            "bearerguard.jwks.fetch_failed issuer=%s trigger=%s reason=%s retry_in=%.0fs keys=%s",
            self._issuer.issuer,
            reason,
            exc.description if isinstance(exc, Unavailable) else exc,
            delay,
            "none" if self._keyset is None else "last_known_good",
        )

    def _unavailable(self, now: float) -> Unavailable:
        return Unavailable(
            "The issuer's signing keys are unavailable",
            retry_after=max(1, math.ceil(self._backoff.remaining(now))),
            reason="jwks_unavailable",
        )
