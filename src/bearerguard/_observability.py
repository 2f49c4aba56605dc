"""The observer hook and the log events: auth made visible without slowing the request path.

Logging (standard library, always on) writes one line per event; the first word is
a stable event name, the rest ``key=value`` pairs. A token appears only as the
first 12 hex characters of its SHA-256 (``token=``), never itself, and no client
secret or signature is ever logged. The events:

==================================  ===========================================================
``bearerguard.validation``          a token was refused: ``outcome=rejected`` (INFO) or
                                    ``unavailable`` (WARNING), with ``reason`` and ``status``;
                                    ``outcome=accepted`` (DEBUG) only with :class:`LoggingObserver`
``bearerguard.authorization``       a route refused a valid token (``outcome=forbidden``)
``bearerguard.ratelimit.exceeded``  a token spent its budget (429)
``bearerguard.jwks.fetched``        keys fetched (``keys``, ``skipped``, ``ttl``)
``bearerguard.jwks.fetch_failed``   a JWKS fetch failed (last known good keys are kept)
``bearerguard.jwks.rotated``        the key set changed (``added``, ``removed``)
``bearerguard.jwks.unknown_kid``    a token named a key we do not have: one refresh
``bearerguard.jwks.key_skipped``    one unusable key in a set was left out
``bearerguard.metadata.fetched``    discovery answered; ``.fetch_failed``, ``.issuer_mismatch``
``bearerguard.introspection.call``  an RFC 7662 request was answered (DEBUG)
``bearerguard.introspection.failed``  the introspection endpoint gave no usable answer
``bearerguard.ratelimit.storage_unavailable`` / ``.storage_recovered``
``bearerguard.cache.shared_unavailable``  the Redis second level is skipped for a while
==================================  ===========================================================

Metrics go through an :class:`Observer` given to the middleware
(``BearerAuthMiddleware(..., observer=PrometheusObserver())``, see
:mod:`bearerguard.metrics`). With no observer the middleware does no extra work;
with one, request-path events are pushed to it (introspection calls through
:meth:`Introspector.add_listener <bearerguard._introspection.Introspector.add_listener>`)
and everything that already has a counter (validation cache lookups, JWKS age and
fetches, introspection calls, rate-limit storage errors) is read only when metrics
are collected, through :meth:`Observer.cache_counts` and :meth:`Observer.snapshot`.
Nothing of the validator is replaced or wrapped.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bearerguard._errors import AuthError, RateLimited, Unavailable
from bearerguard._stats import IssuerStats
from bearerguard._tokens import AccessToken

if TYPE_CHECKING:
    from bearerguard._middleware import BearerAuthMiddleware
    from bearerguard._validator import TokenValidator

__all__ = [
    "IssuerStats",
    "LoggingObserver",
    "Observer",
    "Snapshot",
    "outcome_of",
]

log = logging.getLogger("bearerguard.observability")


def outcome_of(error: AuthError | None) -> str:
    """The stable outcome word for a decision: its metric label and its log value."""
    if error is None:
        return "accepted"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, Unavailable):
        return "unavailable"
    if error.status == 403:
        return "forbidden"
    return "rejected"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything read lazily at collection time."""

    issuers: tuple[IssuerStats, ...]
    cache_entries: int
    ratelimit_storage_errors: int
    #: Tokens reported as used from too many networks (``token_sharing``), since start.
    tokens_shared: int = 0
    #: DPoP proofs accepted without a replay check (the store was down or full), since start.
    dpop_replay_errors: int = 0


class Observer:
    """Receives bearerguard's decisions; subclass it and override what you need.

    Every method is a no-op here. The request-path ones (:meth:`validation`,
    :meth:`refusal`, :meth:`introspection`) must be quick; an exception raised in
    one is logged and swallowed, never turned into an error answer. One observer
    may serve several middlewares (it holds them weakly).
    """

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[BearerAuthMiddleware] = weakref.WeakSet()
        #: Validators whose cache counters are summed (one entry however many middlewares).
        self._validators: weakref.WeakSet[TokenValidator] = weakref.WeakSet()

    # -- called by the middleware ------------------------------------------------------

    def attach(self, middleware: BearerAuthMiddleware) -> None:
        """Called once by each middleware given this observer; listens to what it owns."""
        self._sources.add(middleware)
        validator = middleware.validator
        if validator not in self._validators:
            self._validators.add(validator)
            validator.add_introspection_listener(self.introspection)

    def validation(
        self, token: AccessToken | None, error: AuthError | None, seconds: float
    ) -> None:
        """A token was judged: accepted (``token``) or refused (``error``), in ``seconds``."""

    def refusal(self, error: AuthError) -> None:
        """The middleware answered with ``error`` (any 400/401/403/429/503 it sent)."""

    def introspection(self, issuer: str, seconds: float, error: AuthError | None) -> None:
        """One RFC 7662 call ended, with a usable answer (``error`` is ``None``) or not."""

    # -- read at collection time -----------------------------------------------------

    def cache_counts(self) -> tuple[int, int, int]:
        """Validation cache lookups since each validator was made: hits, negative hits, misses.

        A negative hit is a cached refusal; the counters are the cache's own.
        """
        hits = negative = misses = 0
        for validator in list(self._validators):
            counts = validator.cache_counts()
            hits += counts[0]
            negative += counts[1]
            misses += counts[2]
        return hits, negative, misses

    def snapshot(self) -> Snapshot:
        """Counters the library keeps anyway, read now (no cost between collections)."""
        issuers: dict[str, list[IssuerStats]] = {}
        entries = 0
        storage_errors = 0
        shared = 0
        replay_errors = 0
        for middleware in list(self._sources):
            validator = middleware.validator
            entries += validator.cache_entries()
            limiter = middleware.rate_limiter
            if limiter is not None:
                storage_errors += limiter.storage_errors
            if middleware.sharing is not None:
                shared += middleware.sharing.flagged
            if middleware.dpop is not None:
                replay_errors += middleware.dpop.replay.errors
            for row in validator.statistics():
                issuers.setdefault(row.issuer, []).append(row)
        merged = tuple(_merge(rows) for rows in issuers.values())
        return Snapshot(merged, entries, storage_errors, shared, replay_errors)


def notify(method: Callable[..., None], *args: Any) -> None:
    """Call an observer method or listener; its failure is logged, never the request's problem."""
    try:
        method(*args)
    except Exception:
        log.exception("bearerguard.observer.error method=%s", getattr(method, "__name__", "?"))


def _merge(rows: list[IssuerStats]) -> IssuerStats:
    if len(rows) == 1:
        return rows[0]
    ages = [r.jwks_age for r in rows if r.jwks_age is not None]
    return IssuerStats(
        issuer=rows[0].issuer,
        jwks_age=max(ages) if ages else None,
        jwks_keys=max(r.jwks_keys for r in rows),
        **{
            name: sum(getattr(r, name) for r in rows)
            for name in (
                "jwks_fetches",
                "jwks_failures",
                "jwks_changes",
                "metadata_fetches",
                "metadata_failures",
                "introspection_calls",
                "introspection_failures",
            )
        },
    )


class LoggingObserver(Observer):
    """Logs accepted tokens too (``bearerguard.validation outcome=accepted``, DEBUG).

    Refusals are always logged; acceptances only through this observer, so the
    request path of a server that does not want them carries no logging call.
    """

    def validation(
        self, token: AccessToken | None, error: AuthError | None, seconds: float
    ) -> None:
        if token is not None and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "bearerguard.validation outcome=accepted reason=ok token=%s issuer=%s kind=%s"
                " seconds=%.6f",
                token.short_hash,
                token.issuer,
                token.kind,
                seconds,
            )
