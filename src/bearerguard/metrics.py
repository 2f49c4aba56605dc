"""Prometheus and OpenTelemetry observers: the optional ``metrics`` extra, imported only on use.

Nothing here is imported by ``import bearerguard``; each observer imports its own
client library when it is created, so an application that does not ask for
metrics never loads either. Give one to the middleware::

    app.add_middleware(BearerAuthMiddleware, issuer=..., audience=...,
                       observer=PrometheusObserver())

Counted on the request path, in plain integers: validations by outcome and
reason, their latency, refusals by status, rate-limit rejections, introspection
call latency (the OpenTelemetry observer records the two latencies through the
SDK's histograms). Read at scrape/collection time from counters the library
keeps anyway: validation cache lookups, JWKS age, keys, fetches and failures,
metadata and introspection calls and failures, rate-limit storage errors.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bearerguard._errors import AuthError, RateLimited
from bearerguard._observability import Observer, Snapshot, outcome_of
from bearerguard._tokens import AccessToken

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["LATENCY_BUCKETS", "OpenTelemetryObserver", "PrometheusObserver"]

#: Seconds: a cache hit is microseconds, a cold RSA check a fraction of a millisecond,
#: a request waiting on a JWKS fetch or an introspection call milliseconds to seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

#: Counters read at collection time: (metric name, Snapshot issuer field, help text).
_ISSUER_COUNTERS = (
    ("jwks_fetches", "jwks_fetches", "JWKS requests sent"),
    ("jwks_fetch_failures", "jwks_failures", "JWKS refreshes that failed"),
    ("jwks_key_set_changes", "jwks_changes", "Fetches that changed the key set"),
    ("metadata_fetches", "metadata_fetches", "Discovery requests sent"),
    ("metadata_fetch_failures", "metadata_failures", "Discovery attempts that failed"),
    ("introspection_calls", "introspection_calls", "RFC 7662 introspection requests sent"),
    ("introspection_failures", "introspection_failures", "Introspection calls with no answer"),
)


class _Histogram:
    """A latency histogram kept as plain counts: an ``observe`` is one bisect and two adds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: ``(le, observations <= le)``, ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class _Tallies(Observer):
    """Counts kept as plain integers on the request path, read when metrics are collected."""

    def __init__(self) -> None:
        super().__init__()
        #: (outcome, reason) -> validations; (status, reason) -> refusals.
        self._validations: dict[tuple[str, str], int] = {("accepted", "ok"): 0}
        self._refusals: dict[tuple[str, str], int] = {}
        self._rate_limited = 0

    def _count_validation(self, error: AuthError) -> str:
        outcome = outcome_of(error)
        key = (outcome, error.reason)
        self._validations[key] = self._validations.get(key, 0) + 1
        return outcome

    def refusal(self, error: AuthError) -> None:
        key = (str(error.status), error.reason)
        self._refusals[key] = self._refusals.get(key, 0) + 1
        if isinstance(error, RateLimited):
            self._rate_limited += 1


class PrometheusObserver(_Tallies):
    """Metrics in a ``prometheus_client`` registry (the default one unless ``registry`` is given).

    Request-path events only add to plain integers (no lock, no label lookup in
    ``prometheus_client``); everything is turned into metric families when
    Prometheus scrapes. Create one per registry: its metric names are registered
    once. Expose them the usual way (``prometheus_client.make_asgi_app()`` mounted
    on ``/metrics``, with ``/metrics`` in ``exclude_paths`` or protected otherwise).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "bearerguard",
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__()
        from prometheus_client import REGISTRY

        self.namespace = namespace
        self._bounds = tuple(sorted(float(b) for b in buckets))
        #: outcome -> validation latency; (issuer, outcome) -> introspection latency.
        self._latency: dict[str, _Histogram] = {}
        self._introspection: dict[tuple[str, str], _Histogram] = {}
        self._accepted = ("accepted", "ok")
        self._accepted_latency = self._histogram(self._latency, "accepted")
        (REGISTRY if registry is None else registry).register(_PrometheusCollector(self))

    def _histogram(self, table: dict[Any, _Histogram], key: Any) -> _Histogram:
        found = table.get(key)
        if found is None:
            found = table[key] = _Histogram(self._bounds)
        return found

    def validation(
        self, token: AccessToken | None, error: AuthError | None, seconds: float
    ) -> None:
        if error is None:
            self._validations[self._accepted] += 1
            self._accepted_latency.observe(seconds)
            return
        outcome = self._count_validation(error)
        self._histogram(self._latency, outcome).observe(seconds)

    def introspection(self, issuer: str, seconds: float, error: AuthError | None) -> None:
        self._histogram(self._introspection, (issuer, outcome_of(error))).observe(seconds)


class _PrometheusCollector:
    """Turns the observer's tallies and the library's own counters into metric families."""

    def __init__(self, observer: PrometheusObserver) -> None:
        self._observer = observer

    def describe(self) -> Iterable[Metric]:
        return list(self._families(Snapshot((), 0, 0), (0, 0, 0)))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._observer.snapshot(), self._observer.cache_counts()))

    def _families(self, snapshot: Snapshot, lookups: tuple[int, int, int]) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        obs = self._observer
        ns = obs.namespace
        validations = CounterMetricFamily(
            f"{ns}_validations",
            "Bearer tokens judged, by outcome (accepted, rejected, unavailable) and reason",
            labels=["outcome", "reason"],
        )
        for (outcome, reason), count in list(obs._validations.items()):
            validations.add_metric([outcome, reason], count)
        yield validations
        latency = HistogramMetricFamily(
            f"{ns}_validation_seconds",
            "Time to judge a bearer token (cache, keys and introspection included)",
            labels=["outcome"],
        )
        for outcome, histogram in list(obs._latency.items()):
            latency.add_metric([outcome], histogram.cumulative(), histogram.total)
        yield latency
        refusals = CounterMetricFamily(
            f"{ns}_refusals",
            "Error answers sent by the middleware, by HTTP status and reason",
            labels=["status", "reason"],
        )
        for (status, reason), count in list(obs._refusals.items()):
            refusals.add_metric([status, reason], count)
        yield refusals
        yield CounterMetricFamily(
            f"{ns}_ratelimit_rejections",
            "Requests refused with 429 because the token spent its budget",
            value=obs._rate_limited,
        )
        introspection = HistogramMetricFamily(
            f"{ns}_introspection_seconds",
            "RFC 7662 introspection call latency, by issuer and outcome",
            labels=["issuer", "outcome"],
        )
        for (issuer, outcome), histogram in list(obs._introspection.items()):
            introspection.add_metric([issuer, outcome], histogram.cumulative(), histogram.total)
        yield introspection
        cache = CounterMetricFamily(
            f"{ns}_cache_lookups",
            "Validation cache lookups: hit, negative_hit (a cached refusal) or miss",
            labels=["result"],
        )
        for result, value in zip(("hit", "negative_hit", "miss"), lookups, strict=True):
            cache.add_metric([result], value)
        yield cache
        yield GaugeMetricFamily(
            f"{ns}_cache_entries", "Entries in the validation cache", value=snapshot.cache_entries
        )
        age = GaugeMetricFamily(
            f"{ns}_jwks_age_seconds",
            "Seconds since the keys in hand were fetched",
            labels=["issuer"],
        )
        keys = GaugeMetricFamily(f"{ns}_jwks_keys", "Usable keys in the JWKS", labels=["issuer"])
        for row in snapshot.issuers:
            if row.jwks_age is not None:
                age.add_metric([row.issuer], row.jwks_age)
            keys.add_metric([row.issuer], row.jwks_keys)
        yield age
        yield keys
        for name, field, help_text in _ISSUER_COUNTERS:
            family = CounterMetricFamily(f"{ns}_{name}", help_text, labels=["issuer"])
            for row in snapshot.issuers:
                family.add_metric([row.issuer], getattr(row, field))
            yield family
        yield CounterMetricFamily(
            f"{ns}_ratelimit_storage_errors",
            "Rate-limit hits decided without the storage (it failed or was cooling down)",
            value=snapshot.ratelimit_storage_errors,
        )
        yield CounterMetricFamily(
            f"{ns}_tokens_shared",
            "Tokens seen from more networks at once than token_sharing allows",
            value=snapshot.tokens_shared,
        )
        yield CounterMetricFamily(
            f"{ns}_dpop_replay_store_errors",
            "DPoP proofs decided without the replay store (it failed, was cooling down or full)",
            value=snapshot.dpop_replay_errors,
        )


class OpenTelemetryObserver(_Tallies):
    """Metrics through the OpenTelemetry API (the global meter provider unless one is given).

    Names follow OTel conventions (dotted, durations in seconds). Every count is an
    observable instrument over plain integers, so the request path only pays for
    the two latency histograms (``Histogram.record`` of the SDK in use).
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__()
        from opentelemetry import metrics

        meter = metrics.get_meter("bearerguard", meter_provider=meter_provider)
        meter.create_observable_counter(
            "bearerguard.validations",
            callbacks=[self._table_callback(self._validations, ("outcome", "reason"))],
            unit="{validation}",
            description="Bearer tokens judged, by outcome and reason",
        )
        meter.create_observable_counter(
            "bearerguard.refusals",
            callbacks=[self._table_callback(self._refusals, ("status", "reason"))],
            unit="{response}",
            description="Error answers sent by the middleware",
        )
        meter.create_observable_counter(
            "bearerguard.ratelimit.rejections",
            callbacks=[self._observe_rate_limited],
            unit="{request}",
            description="Requests refused with 429",
        )
        self._latency = meter.create_histogram(
            "bearerguard.validation.duration",
            unit="s",
            description="Time to judge a bearer token",
            explicit_bucket_boundaries_advisory=list(buckets),
        )
        self._introspection = meter.create_histogram(
            "bearerguard.introspection.duration",
            unit="s",
            description="RFC 7662 introspection call latency",
            explicit_bucket_boundaries_advisory=list(buckets),
        )
        self._accepted = ("accepted", "ok")
        #: One attributes dict per outcome, made once (the SDK hashes what it is given).
        self._outcome_attrs: dict[str, dict[str, str]] = {}
        self._accepted_attrs = self._attrs("accepted")
        meter.create_observable_counter(
            "bearerguard.cache.lookups",
            callbacks=[self._observe_cache],
            unit="{lookup}",
            description="Validation cache lookups: hit, negative_hit or miss",
        )
        meter.create_observable_gauge(
            "bearerguard.jwks.age",
            callbacks=[self._issuer_callback("jwks_age")],
            unit="s",
            description="Seconds since the keys in hand were fetched",
        )
        meter.create_observable_gauge(
            "bearerguard.jwks.keys",
            callbacks=[self._issuer_callback("jwks_keys")],
            unit="{key}",
            description="Usable keys in the JWKS",
        )
        for name, field, help_text in _ISSUER_COUNTERS:
            meter.create_observable_counter(
                "bearerguard." + name.replace("_", ".", 1),
                callbacks=[self._issuer_callback(field)],
                description=help_text,
            )
        meter.create_observable_counter(
            "bearerguard.ratelimit.storage_errors",
            callbacks=[self._observe_storage_errors],
            description="Rate-limit hits decided without the storage",
        )
        meter.create_observable_counter(
            "bearerguard.tokens.shared",
            callbacks=[self._observe_tokens_shared],
            description="Tokens seen from more networks at once than token_sharing allows",
        )
        meter.create_observable_counter(
            "bearerguard.dpop.replay_store_errors",
            callbacks=[self._observe_dpop_replay_errors],
            description="DPoP proofs decided without the replay store",
        )

    def validation(
        self, token: AccessToken | None, error: AuthError | None, seconds: float
    ) -> None:
        if error is None:
            self._validations[self._accepted] += 1
            self._latency.record(seconds, self._accepted_attrs)
            return
        self._latency.record(seconds, self._attrs(self._count_validation(error)))

    def _attrs(self, outcome: str) -> dict[str, str]:
        found = self._outcome_attrs.get(outcome)
        if found is None:
            found = self._outcome_attrs[outcome] = {"outcome": outcome}
        return found

    def introspection(self, issuer: str, seconds: float, error: AuthError | None) -> None:
        self._introspection.record(seconds, {"issuer": issuer, "outcome": outcome_of(error)})

    def _observe_cache(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        lookups = self.cache_counts()
        return [
            Observation(value, {"result": result})
            for result, value in zip(("hit", "negative_hit", "miss"), lookups, strict=True)
        ]

    def _observe_rate_limited(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(self._rate_limited)]

    @staticmethod
    def _table_callback(
        table: dict[tuple[str, str], int], names: tuple[str, str]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            return [
                Observation(count, dict(zip(names, key, strict=True)))
                for key, count in list(table.items())
            ]

        return observe

    def _observe_storage_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(self.snapshot().ratelimit_storage_errors)]

    def _observe_tokens_shared(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(self.snapshot().tokens_shared)]

    def _observe_dpop_replay_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(self.snapshot().dpop_replay_errors)]

    def _issuer_callback(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            found: list[Observation] = []
            for row in self.snapshot().issuers:
                value: Any = getattr(row, field)
                if value is not None:
                    found.append(Observation(value, {"issuer": row.issuer}))
            return found

        return observe
