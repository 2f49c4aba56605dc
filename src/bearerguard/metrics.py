"""Prometheus and OpenTelemetry observers: the optional ``metrics`` extra, imported only on use.

Nothing here is imported by ``import bearerguard``; each observer imports its own
client library when it is created, so an application that does not ask for
metrics never loads either. Give one to the middleware::

    app.add_middleware(BearerAuthMiddleware, issuer=..., audience=...,
                       observer=PrometheusObserver())

What is pushed on the request path: validations by outcome and reason, their
latency, refusals by status, rate-limit rejections, introspection call latency.
What is read at scrape/collection time from counters the library keeps anyway:
validation cache lookups, JWKS age, keys, fetches and failures, metadata and
introspection calls and failures, rate-limit storage errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bearerguard.errors import AuthError, RateLimited
from bearerguard.observability import Observer, Snapshot, outcome_of
from bearerguard.tokens import AccessToken

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


def _reason(error: AuthError | None) -> str:
    return "ok" if error is None else error.reason


class PrometheusObserver(Observer):
    """Metrics in a ``prometheus_client`` registry (the default one unless ``registry`` is given).

    Create one per registry: its metric names are registered once. Expose them the
    usual way (``prometheus_client.make_asgi_app()`` mounted on ``/metrics``, and
    ``/metrics`` in ``exclude_paths`` or behind its own protection).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "bearerguard",
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__()
        from prometheus_client import REGISTRY, Counter, Histogram

        registry = REGISTRY if registry is None else registry
        ns = namespace
        self._validations = Counter(
            f"{ns}_validations",
            "Bearer tokens judged, by outcome (accepted, rejected, unavailable) and reason",
            ["outcome", "reason"],
            registry=registry,
        )
        self._latency = Histogram(
            f"{ns}_validation_seconds",
            "Time to judge a bearer token (cache, keys, introspection included)",
            ["outcome"],
            buckets=tuple(buckets),
            registry=registry,
        )
        self._refusals = Counter(
            f"{ns}_refusals",
            "Error answers sent by the middleware, by HTTP status and reason",
            ["status", "reason"],
            registry=registry,
        )
        self._rate_limited = Counter(
            f"{ns}_ratelimit_rejections",
            "Requests refused with 429 because the token spent its budget",
            registry=registry,
        )
        self._introspection = Histogram(
            f"{ns}_introspection_seconds",
            "RFC 7662 introspection call latency, by issuer and outcome",
            ["issuer", "outcome"],
            buckets=tuple(buckets),
            registry=registry,
        )
        self._accepted = self._validations.labels("accepted", "ok")
        self._accepted_latency = self._latency.labels("accepted")
        registry.register(_PrometheusCollector(self, ns))

    def validation(
        self, token: AccessToken | None, error: AuthError | None, seconds: float
    ) -> None:
        if error is None:
            self._accepted.inc()
            self._accepted_latency.observe(seconds)
            return
        outcome = outcome_of(error)
        self._validations.labels(outcome, error.reason).inc()
        self._latency.labels(outcome).observe(seconds)

    def refusal(self, error: AuthError) -> None:
        self._refusals.labels(str(error.status), error.reason).inc()
        if isinstance(error, RateLimited):
            self._rate_limited.inc()

    def introspection(self, issuer: str, seconds: float, error: AuthError | None) -> None:
        self._introspection.labels(issuer, outcome_of(error)).observe(seconds)


class _PrometheusCollector:
    """Reads the library's own counters when Prometheus scrapes, never in between."""

    def __init__(self, observer: Observer, namespace: str) -> None:
        self._observer = observer
        self._ns = namespace

    def describe(self) -> Iterable[Metric]:
        return list(self._families(Snapshot((), 0, 0), (0, 0, 0)))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._observer.snapshot(), self._observer.cache_counts()))

    def _families(self, snapshot: Snapshot, lookups: tuple[int, int, int]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ns = self._ns
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


class OpenTelemetryObserver(Observer):
    """Metrics through the OpenTelemetry API (the global meter provider unless one is given).

    Names follow OTel conventions (dotted, durations in seconds); the lazily read
    counters are observable instruments, so they cost nothing between collections.
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
        self._validations = meter.create_counter(
            "bearerguard.validations", unit="{validation}", description="Bearer tokens judged"
        )
        self._latency = meter.create_histogram(
            "bearerguard.validation.duration",
            unit="s",
            description="Time to judge a bearer token",
            explicit_bucket_boundaries_advisory=list(buckets),
        )
        self._refusals = meter.create_counter(
            "bearerguard.refusals", unit="{response}", description="Error answers sent"
        )
        self._rate_limited = meter.create_counter(
            "bearerguard.ratelimit.rejections",
            unit="{request}",
            description="Requests refused with 429",
        )
        self._introspection = meter.create_histogram(
            "bearerguard.introspection.duration",
            unit="s",
            description="RFC 7662 introspection call latency",
            explicit_bucket_boundaries_advisory=list(buckets),
        )
        self._accepted_attrs = {"outcome": "accepted", "reason": "ok"}
        self._accepted_latency_attrs = {"outcome": "accepted"}
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

    def validation(
        self, token: AccessToken | None, error: AuthError | None, seconds: float
    ) -> None:
        if error is None:
            self._validations.add(1, self._accepted_attrs)
            self._latency.record(seconds, self._accepted_latency_attrs)
            return
        outcome = outcome_of(error)
        self._validations.add(1, {"outcome": outcome, "reason": error.reason})
        self._latency.record(seconds, {"outcome": outcome})

    def refusal(self, error: AuthError) -> None:
        self._refusals.add(1, {"http.response.status_code": error.status, "reason": error.reason})
        if isinstance(error, RateLimited):
            self._rate_limited.add(1)

    def introspection(self, issuer: str, seconds: float, error: AuthError | None) -> None:
        self._introspection.record(seconds, {"issuer": issuer, "outcome": outcome_of(error)})

    def _observe_cache(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        lookups = self.cache_counts()
        return [
            Observation(value, {"result": result})
            for result, value in zip(("hit", "negative_hit", "miss"), lookups, strict=True)
        ]

    def _observe_storage_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(self.snapshot().ratelimit_storage_errors)]

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
