"""Scale: the cold stream on 1 and 2 workers, the unknown-kid stampede, and RSS under 1M tokens."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.httpbench import run_wrk, write_scripts
from benchmarks.services import ROOT, Uvicorn, child_pythonpath
from benchmarks.stats import ratios, summary
from benchmarks.tokens import BenchIssuer


def stampede(n: int = 1000) -> dict[str, Any]:
    """JWKS fetches caused by ``n`` concurrent requests with a new kid, then with random kids."""
    from bearerguard import Issuer, TokenValidator

    issuer = BenchIssuer(("RS256",))
    loop = asyncio.new_event_loop()
    try:

        async def go() -> dict[str, Any]:
            validator = TokenValidator(
                [
                    Issuer(
                        issuer=issuer.issuer,
                        audience=issuer.audience,
                        jwks_uri=issuer.jwks_uri,
                        discovery=False,
                    )
                ]
            )
            try:
                for state in validator.issuers.values():
                    await state.jwks.prefetch()
                before = issuer.jwks_requests
                issuer.rotate("RS256")  # published; tokens below are signed by it
                rotated = [issuer.mint("RS256") for _ in range(n)]
                t0 = time.perf_counter()
                results = await asyncio.gather(
                    *(validator.validate(t) for t in rotated), return_exceptions=True
                )
                elapsed = time.perf_counter() - t0
                rotated_fetches = issuer.jwks_requests - before
                accepted = sum(1 for r in results if not isinstance(r, BaseException))
                # Random kids the issuer never published: at most one fetch per cooldown.
                before = issuer.jwks_requests
                bogus = [issuer.mint_with_kid(uuid.uuid4().hex) for _ in range(n)]
                t1 = time.perf_counter()
                bogus_results = await asyncio.gather(
                    *(validator.validate(t) for t in bogus), return_exceptions=True
                )
                bogus_elapsed = time.perf_counter() - t1
                reasons: dict[str, int] = {}
                for res in bogus_results:
                    key = getattr(res, "reason", type(res).__name__)
                    reasons[str(key)] = reasons.get(str(key), 0) + 1
                return {
                    "new_kid": {
                        "requests": n,
                        "jwks_fetches": rotated_fetches,
                        "accepted": accepted,
                        "seconds": round(elapsed, 3),
                    },
                    "random_kids_after": {
                        "requests": n,
                        "jwks_fetches": issuer.jwks_requests - before,
                        "outcomes": reasons,
                        "seconds": round(bogus_elapsed, 3),
                    },
                }
            finally:
                await validator.aclose()

        return loop.run_until_complete(go())
    finally:
        loop.close()
        issuer.close()


def workers(
    *,
    base_env: dict[str, str],
    token_file: Path,
    rounds: int,
    duration: float,
    cache_wired: bool,
    progress: Callable[[str], None],
    redis_url: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """The same load on one worker (pinned) and two (unpinned, sharing cores with wrk).

    Without ``redis_url``: the cold stream. With it: one token (cache hits) spending a
    budget kept in Redis, shared by the workers as by replicas, so the figure is what
    a second process buys when every request is one Redis check.
    """
    scripts = write_scripts(Path(token_file).parent)
    env = {**base_env, "BENCH_APP": "bearerguard"}
    stream = "rotate"
    scenario = "bearerguard cold stream" + (", cache on" if cache_wired else "")
    if redis_url is not None:
        env.update(BENCH_RATE_LIMIT="1000000/second", BENCH_RATE_LIMIT_STORAGE=redis_url)
        stream = "one"
        scenario = "bearerguard cache hit + Redis rate limit (moving window), workers share it"
    wrk_env = {"BENCH_TOKENS": str(token_file), "BENCH_TOKEN": token or ""}
    servers = {
        "1 worker": Uvicorn(env, workers=1, cpus="0"),
        "2 workers": Uvicorn(env, workers=2, cpus=None),
    }
    offsets = dict.fromkeys(servers, 0)
    rps: dict[str, list[float]] = {k: [] for k in servers}
    p99: dict[str, list[float]] = {k: [] for k in servers}
    try:
        time.sleep(1.0)
        for name, server in servers.items():
            got = run_wrk(
                server.port,
                scripts[stream],
                2,
                {**wrk_env, "BENCH_OFFSET": "0"},
                cpus="1" if name == "1 worker" else None,
                threads=1 if name == "1 worker" else 2,
            )
            offsets[name] += got["requests"] + 100
        rng = random.Random(4)
        for r in range(rounds):
            order = list(servers)
            rng.shuffle(order)
            for name in order:
                progress(f"scale: round {r + 1}/{rounds}: {scenario}, {name}")
                got = run_wrk(
                    servers[name].port,
                    scripts[stream],
                    duration,
                    {**wrk_env, "BENCH_OFFSET": str(offsets[name])},
                    cpus="1" if name == "1 worker" else None,
                    threads=1 if name == "1 worker" else 2,
                )
                offsets[name] += got["requests"] + 100
                rps[name].append(got["rps"])
                p99[name].append(got["p99_us"] / 1000)
    finally:
        for server in servers.values():
            server.close()
    return {
        "scenario": scenario,
        "setup": "1 worker pinned to core 0 with wrk -t1 on core 1; 2 workers and wrk -t2 unpinned "
        "(the machine has 2 cores, so wrk competes with the workers)",
        "rps": {k: summary(v) for k, v in rps.items()},
        "p99_ms": {k: summary(v) for k, v in p99.items()},
        "two_vs_one": summary(ratios(rps["2 workers"], rps["1 worker"])),
        "p99_two_vs_one": summary(ratios(p99["2 workers"], p99["1 worker"])),
    }


def rss(issuer: BenchIssuer, n: int, timeout: float = 900) -> dict[str, Any]:
    """Peak RSS of a fresh process validating ``n`` distinct invalid tokens (bad signatures)."""
    template = issuer.mint("RS256")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.rss_child",
        "invalid",
        issuer.issuer,
        issuer.audience,
        issuer.jwks_uri,
        template,
        str(n),
    ]
    return _child(cmd, timeout)


def gc_with_full_cache(
    issuer: BenchIssuer, token_file: Path, timeout: float = 600
) -> dict[str, Any]:
    """Full-GC pauses and RSS of a fresh process whose cache fills with accepted tokens."""
    cmd = [sys.executable, "-m", "benchmarks.rss_child", "valid", issuer.issuer, issuer.audience,
           issuer.jwks_uri, str(token_file)]  # fmt: skip
    return _child(cmd, timeout)


def _child(cmd: list[str], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=ROOT
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            out: dict[str, Any] = json.loads(line[len("BENCHJSON ") :])
            return out
    return {"error": f"child failed (exit {done.returncode}): {done.stderr[-600:]}"}
