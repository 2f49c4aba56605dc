"""The benchmark suite's pieces run end to end with tiny counts (no timing is asserted).

Peers that are not installed (authlib, joserfc: the ``bench`` extra) are reported
by the suite as skipped with the reason; these tests only check that what it
measures is real and that the report is written from it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import inprocess, report
from benchmarks.machine import describe
from benchmarks.tokens import ALGORITHMS, BenchIssuer


@pytest.fixture(scope="module")
def ctx() -> Iterator[inprocess.Context]:
    issuer = BenchIssuer()
    loop = asyncio.new_event_loop()
    context = inprocess.Context(issuer, loop, {alg: issuer.pool(alg, 4) for alg in ALGORITHMS})
    try:
        yield context
    finally:
        context.close()
        loop.close()
        issuer.close()


def test_cold_section_measures_raw_verify_and_bearerguard_for_every_algorithm(
    ctx: inprocess.Context,
) -> None:
    result = inprocess.run_cold(ctx, rounds=1, progress=lambda _: None)
    for alg in ALGORITHMS:
        row = result["by_alg"][alg]
        assert row["raw"]["ops_per_s"]["n"] == 1
        assert row["bearerguard"]["ops_per_s"]["median"] > 0
        assert row["bearerguard"]["vs_raw"]["n"] == 1
    assert not any(name.startswith("bearerguard") for name in result["skipped"])


def test_extras_measure_cache_hit_and_rate_limit_or_say_why_not(ctx: inprocess.Context) -> None:
    result = inprocess.run_extras(ctx, rounds=1, n=20, redis_url=None, progress=lambda _: None)
    assert result["floor"]["ops_per_s"]["n"] == 1
    for name in ("cache_hit", "ratelimit_memory_moving", "introspection_cold"):
        measured = name in result and result[name]["ops_per_s"]["n"] == 1
        assert measured or name in result["notes"], name


def test_profile_times_each_step_of_the_cold_path(
    ctx: inprocess.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import profiling

    # One round, and no full collection before each sample: with the suite's heap a
    # gc.collect() costs ~50 ms, and the profile made ~200 of them. Nothing is timed here.
    monkeypatch.setattr(profiling, "REPS", 1)
    monkeypatch.setattr(profiling.gc, "collect", lambda *args: 0)
    result = profiling.run_profile(ctx, 4)
    assert isinstance(result["steps_us"]["TOTAL validate(), cache off"], float)
    assert result["cprofile_top"]


def test_report_writes_json_markdown_and_names_every_target(
    ctx: inprocess.Context, tmp_path: Path
) -> None:
    results = {
        "started": "now",
        "mode": "smoke",
        "machine": describe(),
        "duration_s": 0.0,
        "inprocess": {"cold": inprocess.run_cold(ctx, rounds=1, progress=lambda _: None)},
    }
    text = report.write(results, tmp_path)
    assert (tmp_path / "latest.json").exists()
    assert (tmp_path / "latest.md").read_text() == text.split("\n(chart not written")[0]
    assert "in-process cold RS256 >= 50 % of raw verify" in text
    assert "AMD" in text or results["machine"]["cpu_model"] in text


@pytest.mark.parametrize("kind", ["plain", "bearerguard", "bearerguard_off"])
def test_benchmark_apps_answer_with_and_without_a_token(
    ctx: inprocess.Context, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import apps

    issuer = ctx.issuer
    monkeypatch.setenv("BENCH_APP", kind.removesuffix("_off"))
    monkeypatch.setenv("BENCH_CACHE", "off" if kind.endswith("_off") else "on")
    monkeypatch.setenv("BENCH_ISSUER", issuer.issuer)
    monkeypatch.setenv("BENCH_AUDIENCE", issuer.audience)
    monkeypatch.setenv("BENCH_JWKS_URI", issuer.jwks_uri)
    with TestClient(apps.build()) as client:
        good = client.get("/items", headers={"Authorization": f"Bearer {ctx.pools['RS256'][0]}"})
        assert good.status_code == 200
        assert good.json() == apps.BODY
        missing = client.get("/items")
        assert missing.status_code == (200 if kind == "plain" else 401)


def test_benchmark_app_with_cache_off_really_has_no_cache(
    ctx: inprocess.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import apps

    issuer = ctx.issuer
    monkeypatch.setenv("BENCH_CACHE", "off")
    monkeypatch.setenv("BENCH_ISSUER", issuer.issuer)
    monkeypatch.setenv("BENCH_AUDIENCE", issuer.audience)
    monkeypatch.setenv("BENCH_JWKS_URI", issuer.jwks_uri)
    kwargs = apps.bearerguard_kwargs()
    validator = kwargs.get("validator")
    if validator is not None:
        assert not validator.cache.enabled
    else:
        assert any(kwargs.get(k) == 0 for k in ("cache_size", "cache_maxsize", "cache_max_entries"))


def test_end_to_end_rows_time_plain_starlette_and_the_middleware_in_the_same_rounds(
    ctx: inprocess.Context,
) -> None:
    from benchmarks.e2e import run_e2e

    result = run_e2e(ctx, rounds=1, redis_url=None, progress=lambda _: None, hit_requests=10)
    rows = result["rows"]
    for name in (
        "plain",
        "hit",
        "hit_rl_memory",
        "hit_sharing_memory",
        "hit_mtls",
        "cold_off",
        "cold_on",
    ):
        assert rows[name]["us_per_request"]["n"] == 1, name
    assert rows["plain"]["extra_us"]["median"] == 0
    assert rows["cold_on"]["raw_vs_extra"]["n"] == 1
    assert "hit_rl_redis" in result["notes"]
    assert "hit_sharing_redis" in result["notes"]


def test_dpop_rows_time_a_bound_request_against_a_bearer_hit_in_the_same_rounds(
    ctx: inprocess.Context,
) -> None:
    from benchmarks.dpop import render, run_dpop

    result = run_dpop(ctx, rounds=1, progress=lambda _: None, requests=10)
    rows = result["rows"]
    for name in ("plain", "bearer_hit", "dpop_es256", "dpop_eddsa"):
        assert rows[name]["us_per_request"]["n"] == 1, name
    assert rows["bearer_hit"]["vs_bearer_hit"]["median"] == 1
    assert rows["dpop_es256"]["raw_verify_us"]["median"] > 0
    assert "fresh ES256 proof" in render(result)
    assert "dpop_es256_redis" in result["notes"]  # no redis-server given: said, not hidden


def test_end_to_end_driver_fails_loudly_when_the_app_refuses(ctx: inprocess.Context) -> None:
    from benchmarks.apps import plain_app
    from benchmarks.e2e import driver

    from bearerguard import BearerAuthMiddleware

    app = BearerAuthMiddleware(
        plain_app(), issuer="https://other.example", audience="x", jwks_uri=ctx.issuer.jwks_uri
    )
    with pytest.raises(RuntimeError, match="401"):
        driver(ctx, app)([ctx.pools["RS256"][0]])
    ctx.run(app.aclose())


def test_import_row_reports_total_time_and_the_optional_modules_loaded() -> None:
    from benchmarks.imports import STATEMENTS, measure

    result = measure(runs=1)
    assert set(result["statements"]) == set(STATEMENTS)
    for row in result["statements"].values():
        assert row["total_ms"]["median"] > 0 and row["modules_loaded"] > 0
        assert "bearerguard" in row["heaviest_ms"] or row["modules_loaded"] < 50
    # The middleware needs Starlette whatever the configuration: the row must see it load.
    assert "starlette" in result["statements"][STATEMENTS[-1]]["core_loaded"]
    assert isinstance(result["optional_loaded"], list)


def test_report_prints_issue_13_table_with_a_verdict_per_row(tmp_path: Path) -> None:
    text = report.write(
        {"started": "now", "mode": "smoke", "machine": describe(), "duration_s": 0.0}, tmp_path
    )
    table = text.split("## Targets (issue 13")[1].split("## Earlier targets")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "verdict" not in line]
    assert len(rows) == 10
    assert all(
        line.rstrip().endswith(("| MET |", "| MISSED |", "| not measured |")) for line in rows
    )
