"""Metrics: the Prometheus and OpenTelemetry observers, and no cost for those who use neither."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from bearerguard import BearerAuthMiddleware, FetchPolicy, Issuer, require_scopes
from bearerguard._observability import Observer
from bearerguard._validator import TokenValidator
from bearerguard.metrics import OpenTelemetryObserver, PrometheusObserver
from bearerguard.testing import TestIssuer


def make_app(issuer: TestIssuer, observer: Observer, **middleware: Any) -> FastAPI:
    client_id, client_secret = issuer.introspection_client
    app = FastAPI()
    options: dict[str, Any] = {"observer": observer}
    if "validator" not in middleware:
        options.update(
            issuer=issuer.issuer,
            audience=issuer.audience,
            client_id=client_id,
            client_secret=client_secret,
            fetch=FetchPolicy(timeout=1.0, cooldown=0.1),
        )
    options.update(middleware)
    app.add_middleware(BearerAuthMiddleware, **options)

    @app.get("/items")
    async def items(token: Any = Depends(require_scopes("read:items"))) -> dict[str, str]:
        return {"ok": "yes"}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(test_issuer: TestIssuer, registry: CollectorRegistry) -> Iterator[TestClient]:
    app = make_app(test_issuer, PrometheusObserver(registry), rate_limit="3/minute")
    with TestClient(app) as c:
        yield c


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# -- Prometheus: pushed on the request path ------------------------------------------


def test_validations_are_counted_by_outcome_and_reason(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    client.get("/items", headers=test_issuer.auth_header(scope="read:items"))
    client.get("/items", headers=bearer(test_issuer.mint_tampered()))
    client.get("/items", headers=bearer(test_issuer.mint_expired()))
    client.get("/items")
    total = "bearerguard_validations_total"
    assert value(registry, total, outcome="accepted", reason="ok") == 1
    assert value(registry, total, outcome="rejected", reason="bad_signature") == 1
    assert value(registry, total, outcome="rejected", reason="expired") == 1
    assert value(registry, total, outcome="rejected", reason="missing_token") == 1


def test_each_validation_is_one_latency_observation(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    for _ in range(2):
        client.get("/items", headers=test_issuer.auth_header(scope="read:items"))
    client.get("/items", headers=bearer(test_issuer.mint_tampered()))
    count = "bearerguard_validation_seconds_count"
    assert value(registry, count, outcome="accepted") == 2
    assert value(registry, count, outcome="rejected") == 1
    assert value(registry, "bearerguard_validation_seconds_sum", outcome="accepted") > 0


def test_refusals_are_counted_by_status_and_reason(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    client.get("/items", headers=test_issuer.auth_header(scope="other"))
    client.get("/items")
    refusals = "bearerguard_refusals_total"
    assert value(registry, refusals, status="403", reason="insufficient_scope") == 1
    assert value(registry, refusals, status="401", reason="missing_token") == 1


def test_rate_limit_rejections_are_counted(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    headers = test_issuer.auth_header(scope="read:items")
    statuses = [client.get("/items", headers=headers).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert value(registry, "bearerguard_ratelimit_rejections_total") == 2


def test_introspection_latency_is_observed_per_call(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    opaque = test_issuer.mint_opaque(scope="read:items")
    for _ in range(3):  # one call, then cache hits
        assert client.get("/items", headers=bearer(opaque)).status_code == 200
    issuer = test_issuer.issuer
    count = "bearerguard_introspection_seconds_count"
    assert value(registry, count, issuer=issuer, outcome="accepted") == 1
    assert value(registry, "bearerguard_introspection_calls_total", issuer=issuer) == 1


def test_failed_introspection_is_observed_as_unavailable(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    client.get("/items", headers=test_issuer.auth_header(scope="read:items"))  # keys in hand
    test_issuer.outage()
    assert client.get("/items", headers=bearer(test_issuer.mint_opaque())).status_code == 503
    issuer = test_issuer.issuer
    count = "bearerguard_introspection_seconds_count"
    assert value(registry, count, issuer=issuer, outcome="unavailable") == 1
    assert value(registry, "bearerguard_introspection_failures_total", issuer=issuer) == 1


# -- Prometheus: read at scrape time --------------------------------------------------


def test_cache_hits_and_misses_are_counted(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    good = test_issuer.auth_header(scope="read:items")
    bad = bearer(test_issuer.mint_tampered())
    for headers in (good, good, good, bad, bad):
        client.get("/items", headers=headers)
    lookups = "bearerguard_cache_lookups_total"
    assert value(registry, lookups, result="miss") == 2
    assert value(registry, lookups, result="hit") == 2
    assert value(registry, lookups, result="negative_hit") == 1
    assert value(registry, "bearerguard_cache_entries") == 2


def test_jwks_age_keys_and_fetches_are_reported(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    client.get("/items", headers=test_issuer.auth_header(scope="read:items"))
    issuer = test_issuer.issuer
    assert 0 <= value(registry, "bearerguard_jwks_age_seconds", issuer=issuer) < 60
    assert value(registry, "bearerguard_jwks_keys", issuer=issuer) == 1
    assert value(registry, "bearerguard_jwks_fetches_total", issuer=issuer) == 1
    assert value(registry, "bearerguard_jwks_key_set_changes_total", issuer=issuer) == 1
    assert value(registry, "bearerguard_metadata_fetches_total", issuer=issuer) >= 1


def test_key_rotation_is_seen_as_a_key_set_change(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    client.get("/items", headers=test_issuer.auth_header(scope="read:items"))
    test_issuer.rotate()
    assert client.get("/items", headers=test_issuer.auth_header(scope="read:items")).is_success
    issuer = test_issuer.issuer
    assert value(registry, "bearerguard_jwks_key_set_changes_total", issuer=issuer) == 2
    assert value(registry, "bearerguard_jwks_keys", issuer=issuer) == 2


def test_jwks_fetch_failures_are_counted(
    test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    app = make_app(test_issuer, PrometheusObserver(registry), jwks_uri=test_issuer.jwks_uri)
    test_issuer.outage()
    with TestClient(app) as c:
        assert (
            c.get("/items", headers=test_issuer.auth_header(scope="read:items")).status_code == 503
        )
    issuer = test_issuer.issuer
    assert value(registry, "bearerguard_jwks_fetch_failures_total", issuer=issuer) >= 1
    assert value(registry, "bearerguard_jwks_age_seconds", issuer=issuer) == 0  # no keys: absent


def test_rate_limit_storage_errors_are_reported(
    test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    app = make_app(
        test_issuer,
        PrometheusObserver(registry),
        rate_limit="5/minute",
        rate_limit_storage="redis://127.0.0.1:9/0",  # nothing listens on the discard port
    )
    with TestClient(app) as c:
        assert c.get("/items", headers=test_issuer.auth_header(scope="read:items")).is_success
    assert value(registry, "bearerguard_ratelimit_storage_errors_total") == 1


# -- OpenTelemetry ----------------------------------------------------------------------


def otel_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_opentelemetry_observer_records_validations_and_reads_jwks_lazily(
    test_issuer: TestIssuer,
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    app = make_app(test_issuer, OpenTelemetryObserver(provider))
    with TestClient(app) as c:
        c.get("/items", headers=test_issuer.auth_header(scope="read:items"))
        c.get("/items", headers=bearer(test_issuer.mint_tampered()))
        points = otel_points(reader)
    validations = {
        (p.attributes["outcome"], p.attributes["reason"]): p.value
        for p in points["bearerguard.validations"]
    }
    assert validations == {("accepted", "ok"): 1, ("rejected", "bad_signature"): 1}
    [refusal] = points["bearerguard.refusals"]
    assert (refusal.attributes, refusal.value) == ({"status": "401", "reason": "bad_signature"}, 1)
    assert sum(p.count for p in points["bearerguard.validation.duration"]) == 2
    [age] = points["bearerguard.jwks.age"]
    assert age.attributes == {"issuer": test_issuer.issuer}
    assert 0 <= age.value < 60
    [fetches] = points["bearerguard.jwks.fetches"]
    # the prefetch, and one recheck the forged signature may cause (once per cooldown)
    assert fetches.value == 2
    lookups = {p.attributes["result"]: p.value for p in points["bearerguard.cache.lookups"]}
    assert lookups == {"hit": 0, "negative_hit": 0, "miss": 2}
    provider.shutdown()


# -- no cost without the extra ---------------------------------------------------------


def test_importing_bearerguard_loads_no_metrics_library() -> None:
    code = (
        "import sys, bearerguard, bearerguard._middleware, bearerguard._observability\n"
        "names = ('prometheus_client', 'opentelemetry', 'fastapi')\n"
        "loaded = [m for m in names if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_middleware_without_observer_instruments_nothing(test_issuer: TestIssuer) -> None:
    middleware = BearerAuthMiddleware(
        make_app(test_issuer, Observer()), issuer=test_issuer.issuer, audience="x"
    )
    assert middleware.observer is None
    assert type(middleware.validator.cache).__name__ == "ValidationCache"


def test_an_observer_listens_without_replacing_anything(
    test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    client_id, client_secret = test_issuer.introspection_client
    issuer = Issuer(
        issuer=test_issuer.issuer,
        audience=test_issuer.audience,
        client_id=client_id,
        client_secret=client_secret,
        fetch=FetchPolicy(timeout=1.0, cooldown=0.1),
    )
    validator = TokenValidator([issuer])
    cache, lookup = validator.cache, validator.cache.lookup  # held before the observer comes
    [state] = validator.issuers.values()
    assert state.introspector is not None
    app = make_app(test_issuer, PrometheusObserver(registry), validator=validator)
    good = test_issuer.auth_header(scope="read:items")
    with TestClient(app) as c:
        for _ in range(2):
            c.get("/items", headers=good)
        c.get("/items", headers=bearer(test_issuer.mint_opaque(scope="read:items")))
        lookup(b"\0" * 32, validator.clock())
    assert validator.cache is cache
    assert "ask" not in vars(state.introspector)
    lookups = "bearerguard_cache_lookups_total"
    assert value(registry, lookups, result="hit") == 1
    assert value(registry, lookups, result="miss") == 3
    count = "bearerguard_introspection_seconds_count"
    assert value(registry, count, issuer=test_issuer.issuer, outcome="accepted") == 1


def test_latency_buckets_are_cumulative_and_the_exposition_parses(
    client: TestClient, test_issuer: TestIssuer, registry: CollectorRegistry
) -> None:
    for _ in range(3):
        client.get("/items", headers=test_issuer.auth_header(scope="read:items"))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    buckets = [
        s
        for s in families["bearerguard_validation_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["outcome"] == "accepted"
    ]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)
    assert buckets[-1].labels["le"] == "+Inf"
    assert counts[-1] == 3


def test_app_factory_called_twice_with_a_registry_each_does_not_collide(
    test_issuer: TestIssuer,
) -> None:
    registries = [CollectorRegistry(), CollectorRegistry()]
    apps = [make_app(test_issuer, PrometheusObserver(registry=r)) for r in registries]
    for app in apps:
        with TestClient(app) as client:
            client.get("/items", headers=test_issuer.auth_header(scope="read:items"))
    for registry in registries:
        found = registry.get_sample_value(
            "bearerguard_validations_total", {"outcome": "accepted", "reason": "ok"}
        )
        assert found == 1  # each app counted its own request, in its own registry


def test_a_second_observer_in_one_registry_is_refused_at_startup() -> None:
    registry = CollectorRegistry()
    PrometheusObserver(registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusObserver(registry=registry)
