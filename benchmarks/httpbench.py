"""HTTP throughput: uvicorn (one worker, pinned to core 0) under wrk (pinned to core 1).

All servers are started once and kept up; each round runs every scenario once,
in a shuffled order, and every figure is divided by the plain-Starlette run of
the same round. Token streams continue where the previous run of that server
stopped, so a cold stream never comes back to a token still in the cache.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.services import Uvicorn, apt_install, taskset_prefix, uvicorn_options
from benchmarks.stats import ratios, summary

CONNECTIONS = 32

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""

_ONE = """
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
"""

_ROTATE = """
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do
  if #line > 0 then tokens[#tokens + 1] = line end
end
local i = tonumber(os.getenv("BENCH_OFFSET") or "0") % #tokens
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/items", {["Authorization"] = "Bearer " .. tokens[i]})
end
"""


@dataclass
class Scenario:
    name: str
    label: str
    env: dict[str, str]
    stream: str  # "one" (a single token) or "rotate" (the cold token file)
    workers: int = 1
    server: Uvicorn | None = None
    offset: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)


def ensure_wrk() -> str | None:
    return apt_install("wrk", "wrk")


def write_scripts(directory: Path) -> dict[str, Path]:
    one = directory / "one.lua"
    one.write_text(_ONE + _DONE, encoding="utf-8")
    rotate = directory / "rotate.lua"
    rotate.write_text(_ROTATE + _DONE, encoding="utf-8")
    return {"one": one, "rotate": rotate}


def run_wrk(
    port: int,
    script: Path,
    duration: float,
    env: dict[str, str],
    cpus: str | None = "1",
    threads: int = 1,
) -> dict[str, Any]:
    cmd = [
        *taskset_prefix(cpus), "wrk", f"-t{threads}", f"-c{CONNECTIONS}",
        f"-d{max(1, round(duration))}s", "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}/items",
    ]  # fmt: skip
    import os

    done = subprocess.run(
        cmd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            out: dict[str, Any] = json.loads(line[len("BENCHJSON ") :])
            out["rps"] = out["requests"] / (out["duration_us"] / 1e6) if out["duration_us"] else 0.0
            return out
    raise RuntimeError(
        f"wrk gave no result (exit {done.returncode}): {done.stderr[-400:]} {done.stdout[-400:]}"
    )


def scenarios(
    base_env: dict[str, str], redis_url: str | None, cache_wired: bool, notes: dict[str, str]
) -> list[Scenario]:
    """The scenario list; the ones whose parts have not landed are named in ``notes`` instead."""

    def env(**extra: str) -> dict[str, str]:
        return {**base_env, **extra}

    found = [
        Scenario("plain", "no auth: plain Starlette (baseline)", env(BENCH_APP="plain"), "one"),
        Scenario("plain_fastapi", "no auth: plain FastAPI", env(BENCH_APP="plain_fastapi"), "one"),
    ]
    if cache_wired:
        found += [
            Scenario(
                "bg_hit", "bearerguard, cache hit (one token)", env(BENCH_APP="bearerguard"), "one"
            ),
            Scenario(
                "bg_cold",
                "bearerguard, cold stream, cache off",
                env(BENCH_APP="bearerguard", BENCH_CACHE="off"),
                "rotate",
            ),
            Scenario(
                "bg_cold_cache",
                "bearerguard, cold stream, cache on",
                env(BENCH_APP="bearerguard"),
                "rotate",
            ),
            Scenario(
                "bg_cold_cache_fastapi",
                "bearerguard on FastAPI, cold stream, cache on",
                env(BENCH_APP="bearerguard_fastapi"),
                "rotate",
            ),
            Scenario(
                "bg_hit_rl_memory",
                "bearerguard, cache hit + memory rate limit (moving window)",
                env(BENCH_APP="bearerguard", BENCH_RATE_LIMIT="1000000/second"),
                "one",
            ),
        ]
        if redis_url:
            found.append(
                Scenario(
                    "bg_hit_rl_redis",
                    "bearerguard, cache hit + Redis rate limit (moving window)",
                    env(
                        BENCH_APP="bearerguard",
                        BENCH_RATE_LIMIT="1000000/second",
                        BENCH_RATE_LIMIT_STORAGE=redis_url,
                    ),
                    "one",
                )
            )
        else:
            notes["bg_hit_rl_redis"] = "not measured: no redis-server"
    else:
        found.append(
            Scenario(
                "bg_cold",
                "bearerguard, cold stream (no cache yet)",
                env(BENCH_APP="bearerguard"),
                "rotate",
            )
        )
        for name in ("bg_hit", "bg_cold_cache", "bg_hit_rl_memory", "bg_hit_rl_redis"):
            notes[name] = "not available yet: the middleware has no validation cache setting"
    found += [
        Scenario(
            "authlib",
            "peer: FastAPI + authlib RFC 9068 JWTBearerTokenValidator",
            env(BENCH_APP="authlib"),
            "rotate",
        ),
        Scenario(
            "pyjwkclient",
            "peer: FastAPI + PyJWKClient dependency (tutorial)",
            env(BENCH_APP="pyjwkclient"),
            "rotate",
        ),
    ]
    return found


def run_http(
    *,
    base_env: dict[str, str],
    token: str,
    token_file: Path,
    redis_url: str | None,
    cache_wired: bool,
    rounds: int,
    duration: float,
    warmup: float,
    only: set[str] | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    notes: dict[str, str] = {}
    problem = ensure_wrk()
    if problem:
        return {"notes": {"http": f"not run: {problem}"}, "scenarios": {}}
    workdir = Path(tempfile.mkdtemp(prefix="bearerguard-bench-wrk-"))
    scripts = write_scripts(workdir)
    todo = [
        s
        for s in scenarios(base_env, redis_url, cache_wired, notes)
        if only is None or s.name in only or s.name == "plain"
    ]
    stream_env = {"BENCH_TOKEN": token, "BENCH_TOKENS": str(token_file)}
    try:
        for s in todo:
            progress(f"http: starting {s.name}")
            try:
                s.server = Uvicorn(s.env, workers=s.workers, cpus="0")
            except RuntimeError as exc:
                notes[s.name] = f"server failed to start: {exc}"
        todo = [s for s in todo if s.server is not None]
        for s in todo:  # warm-up: keys fetched, code paths hot, first tokens cached
            _one_run(s, scripts, warmup, stream_env, record=False)
        rng = random.Random(3)
        plain = next((s for s in todo if s.name == "plain"), None)
        for r in range(rounds):
            others = [s for s in todo if s is not plain]
            rng.shuffle(others)
            # The baseline runs three times a round (start, middle, end) and the round's
            # baseline is their median: one unlucky slot must not skew every ratio.
            half = len(others) // 2
            sequence = [plain, *others[:half], plain, *others[half:], plain]
            baseline: list[dict[str, Any]] = []
            for s in sequence:
                if s is None:
                    continue
                progress(f"http: round {r + 1}/{rounds}: {s.name}")
                try:
                    result = _one_run(s, scripts, duration, stream_env, record=s is not plain)
                    if s is plain:
                        baseline.append(result)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    notes[f"{s.name}/round{r + 1}"] = str(exc)[:300]
                    if s is not plain:
                        s.runs.append({})
                time.sleep(0.3)
            if plain is not None:
                plain.runs.append(_median_run(baseline))
        for s in todo:
            if s.server is not None and s.server.proc.poll() is not None:
                notes[s.name] = f"server died: {s.server.tail()}"
    finally:
        for s in todo:
            if s.server is not None:
                s.server.close()
    return {
        "setup": (
            f"uvicorn {' '.join(uvicorn_options()) or '(asyncio, h11)'} --workers 1 "
            f"--no-access-log, pinned to core 0; wrk -t1 -c{CONNECTIONS} {duration:.0f} s per run, "
            "pinned to core 1; plain Starlette runs at the start, middle and end of each round and "
            "the round's baseline is the median of those three; "
            f"{rounds} rounds, scenarios shuffled per round; ratios per round vs plain Starlette."
        ),
        "rounds": rounds,
        "duration_s": duration,
        "scenarios": _summarise(todo),
        "notes": notes,
    }


def _one_run(
    s: Scenario,
    scripts: dict[str, Path],
    duration: float,
    stream_env: dict[str, str],
    *,
    record: bool,
) -> dict[str, Any]:
    assert s.server is not None
    env = {**stream_env, "BENCH_OFFSET": str(s.offset)}
    result = run_wrk(s.server.port, scripts[s.stream], duration, env)
    # Continue the stream where it stopped (+ the requests in flight at the end).
    s.offset += result["requests"] + CONNECTIONS * 2
    if record:
        s.runs.append(result)
    return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round's baseline: the median of each figure over its runs, the runs kept."""
    if not runs:
        return {}
    out: dict[str, Any] = {
        key: statistics.median(run[key] for run in runs) for key in ("rps", "p50_us", "p99_us")
    }
    for key in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts"):
        out[key] = sum(run.get(key, 0) for run in runs)
    out["baseline_runs"] = runs
    return out


def _summarise(done: list[Scenario]) -> dict[str, Any]:
    by_name = {s.name: s for s in done}
    plain = by_name.get("plain")

    def series(s: Scenario, key: str, scale: float = 1.0) -> list[float]:
        return [run[key] * scale if run else float("nan") for run in s.runs]

    out: dict[str, Any] = {}
    for s in done:
        rps = series(s, "rps")
        p50 = series(s, "p50_us", 1e-3)
        p99 = series(s, "p99_us", 1e-3)
        row: dict[str, Any] = {
            "label": s.label,
            "rps": summary(_clean(rps)),
            "p50_ms": summary(_clean(p50)),
            "p99_ms": summary(_clean(p99)),
            "non_2xx": sum(run.get("status_errors", 0) for run in s.runs if run),
            "socket_errors": sum(
                run.get(k, 0)
                for run in s.runs
                if run
                for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
            ),
            "runs": s.runs,
        }
        if plain is not None:
            row["rps_vs_plain"] = summary(_clean(ratios(rps, series(plain, "rps"))))
            row["p50_vs_plain"] = summary(_clean(ratios(p50, series(plain, "p50_us", 1e-3))))
            row["p99_vs_plain"] = summary(_clean(ratios(p99, series(plain, "p99_us", 1e-3))))
        out[s.name] = row
    # Cross ratios the targets need, per round.
    cold = by_name.get("bg_cold")
    cached = by_name.get("bg_cold_cache")
    if cold and cached:
        out["bg_cold_cache"]["p99_vs_bg_cold"] = summary(
            _clean(ratios(series(cached, "p99_us"), series(cold, "p99_us")))
        )
        out["bg_cold_cache"]["rps_vs_bg_cold"] = summary(
            _clean(ratios(series(cached, "rps"), series(cold, "rps")))
        )
    for peer in ("authlib", "pyjwkclient"):
        other = by_name.get(peer)
        if other is None:
            continue
        for mine in ("bg_cold_cache", "bg_cold_cache_fastapi", "bg_cold"):
            if mine in by_name:
                out[mine][f"rps_vs_{peer}"] = summary(
                    _clean(ratios(series(by_name[mine], "rps"), series(other, "rps")))
                )
    return out


def _clean(values: list[float]) -> list[float]:
    return [v for v in values if v == v]  # drop NaN (a failed run)
