"""``python -m benchmarks``: run the suite, write results/latest.{json,md,png}, print the table."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECTIONS = ("imports", "inprocess", "e2e", "dpop", "extras", "profile", "http", "scale")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="small pools, short runs (about 1-2 minutes)"
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    p.add_argument(
        "--scenarios",
        default=None,
        help="HTTP scenarios to run (comma-separated names; plain always runs)",
    )
    p.add_argument(
        "--rounds", type=int, default=None, help="in-process rounds (default 7, quick 3)"
    )
    p.add_argument(
        "--pool", type=int, default=None, help="distinct tokens per algorithm (default 2000)"
    )
    p.add_argument("--http-rounds", type=int, default=None, help="HTTP rounds (default 3, quick 1)")
    p.add_argument(
        "--duration", type=float, default=None, help="seconds per wrk run (default 5, quick 3)"
    )
    p.add_argument(
        "--rss-tokens", type=int, default=None, help="tokens for the RSS run (default 1000000)"
    )
    p.add_argument(
        "--out", default=str(Path(__file__).parent / "results"), help="results directory"
    )
    return p.parse_args(argv)


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    quick = args.quick
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        print(f"unknown sections: {sorted(unknown)}", file=sys.stderr)
        return 2
    rounds = args.rounds or (3 if quick else 7)
    pool_size = args.pool or (500 if quick else 2000)
    http_rounds = args.http_rounds or (1 if quick else 3)
    duration = args.duration or (3.0 if quick else 5.0)
    rss_tokens = args.rss_tokens or (50_000 if quick else 1_000_000)
    extras_ops = 20_000 if quick else 100_000

    from benchmarks import inprocess
    from benchmarks.machine import describe

    started = time.time()
    results: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if quick else "full",
        "machine": describe(),
        "config": {
            "sections": sorted(sections),
            "rounds": rounds,
            "pool": pool_size,
            "http_rounds": http_rounds,
            "duration_s": duration,
            "rss_tokens": rss_tokens,
        },
    }
    if "imports" in sections:
        from benchmarks.imports import measure

        progress("import bearerguard: python -X importtime in fresh interpreters")
        results["imports"] = measure(3 if quick else 7)
    problem = inprocess.bearerguard_available()
    if problem:
        results["bearerguard"] = problem
        progress(problem)

    from benchmarks.services import Redis, apt_install
    from benchmarks.tokens import ALGORITHMS, BenchIssuer, write_tokens

    redis: Redis | None = None
    if sections & {"e2e", "dpop", "extras", "http", "scale"}:
        why = apt_install("redis-server", "redis-server")
        if why is None:
            try:
                redis = Redis()
            except RuntimeError as exc:
                results["redis"] = str(exc)
        else:
            results["redis"] = why
    issuer = BenchIssuer() if problem is None else None
    ctx: inprocess.Context | None = None
    loop = asyncio.new_event_loop()
    tmp = Path(tempfile.mkdtemp(prefix="bearerguard-bench-"))
    try:
        if issuer is None:
            results["note"] = "bearerguard does not import: nothing to measure against"
        else:
            progress(f"minting {pool_size} tokens for each of {', '.join(ALGORITHMS)}")
            pools = {alg: issuer.pool(alg, pool_size) for alg in ALGORITHMS}
            ctx = inprocess.Context(issuer, loop, pools)
            results["inprocess"] = {}
            if "inprocess" in sections:
                results["inprocess"]["cold"] = inprocess.run_cold(ctx, rounds, progress)
            if "e2e" in sections:
                from benchmarks.e2e import run_e2e

                results["inprocess"]["e2e"] = run_e2e(
                    ctx, rounds, redis.url if redis else None, progress
                )
            if "dpop" in sections:
                from benchmarks.dpop import run_dpop

                results["inprocess"]["dpop"] = run_dpop(
                    ctx, rounds, progress, redis_url=redis.url if redis else None
                )
            if "extras" in sections:
                results["inprocess"]["extras"] = inprocess.run_extras(
                    ctx, rounds, extras_ops, redis.url if redis else None, progress
                )
            if "profile" in sections:
                from benchmarks.profiling import run_profile

                progress("profiling the cold RS256 path")
                results["profile"] = run_profile(ctx, min(pool_size, 2000))
            cache_wired = inprocess.cache_available()
            base_env = {
                "BENCH_ISSUER": issuer.issuer,
                "BENCH_AUDIENCE": issuer.audience,
                "BENCH_JWKS_URI": issuer.jwks_uri,
            }
            token_file = tmp / "cold_tokens.txt"
            if sections & {"http", "scale"}:
                n = _stream_size(quick)
                progress(f"minting {n} RS256 tokens for the HTTP cold stream")
                write_tokens(token_file, issuer.pool("RS256", n))
                results["config"]["http_cold_tokens"] = n
            if "http" in sections:
                from benchmarks.httpbench import run_http

                only = set(args.scenarios.split(",")) if args.scenarios else None
                results["http"] = run_http(
                    base_env=base_env,
                    token=issuer.mint("RS256"),
                    token_file=token_file,
                    redis_url=redis.url if redis else None,
                    cache_wired=cache_wired,
                    rounds=http_rounds,
                    duration=duration,
                    warmup=1.0,
                    only=only,
                    progress=progress,
                )
            if "scale" in sections:
                from benchmarks import scale

                results["scale"] = {}
                from benchmarks.httpbench import ensure_wrk

                ensure_wrk()  # installs wrk when missing; a failure shows in the rows below
                progress("scale: 1,000-request unknown-kid stampede")
                results["scale"]["jwks_stampede"] = scale.stampede(1000)
                progress("scale: cold stream on 1 and 2 workers")
                try:
                    results["scale"]["workers"] = scale.workers(
                        base_env=base_env,
                        token_file=token_file,
                        rounds=http_rounds,
                        duration=duration,
                        cache_wired=cache_wired,
                        progress=progress,
                    )
                except Exception as exc:
                    results["scale"]["workers"] = f"failed: {type(exc).__name__}: {exc}"
                if redis is not None and cache_wired:
                    progress("scale: cache hit + Redis rate limit on 1 and 2 workers")
                    try:
                        results["scale"]["workers_redis"] = scale.workers(
                            base_env=base_env,
                            token_file=token_file,
                            rounds=http_rounds,
                            duration=duration,
                            cache_wired=cache_wired,
                            progress=progress,
                            redis_url=redis.url,
                            token=issuer.mint("RS256"),
                        )
                    except Exception as exc:
                        results["scale"]["workers_redis"] = f"failed: {type(exc).__name__}: {exc}"
                else:
                    results["scale"]["workers_redis"] = "not measured: no redis-server"
                if cache_wired:
                    progress(
                        f"scale: RSS after {rss_tokens} distinct invalid tokens (child process)"
                    )
                    results["scale"]["rss_invalid_tokens"] = scale.rss(issuer, rss_tokens)
                    progress("scale: full-GC pauses with a cache full of accepted tokens (child)")
                    results["scale"]["gc_full_cache"] = scale.gc_with_full_cache(issuer, token_file)
                else:
                    results["scale"]["rss_invalid_tokens"] = (
                        "not available yet: no validation cache setting"
                    )
    finally:
        if ctx is not None:
            ctx.close()
        if issuer is not None:
            issuer.close()
        if redis is not None:
            redis.close()
        loop.close()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    results["duration_s"] = time.time() - started
    from benchmarks.machine import load

    results["machine"]["load_at_end"] = load()
    from benchmarks.report import write

    text = write(results, Path(args.out))
    print(text)
    progress(
        f"wrote {args.out}/latest.json, latest.md, latest.png in {results['duration_s']:.0f} s"
    )
    return 0


def _stream_size(quick: bool) -> int:
    """Distinct tokens in the cold stream: at least 3x the cache, so rotation never hits it."""
    import inspect

    from bearerguard import TokenValidator

    default = inspect.signature(TokenValidator).parameters["cache_size"].default
    size = default if isinstance(default, int) else 10_000
    return max(3 * size, 6_000 if quick else 30_000) if not quick else max(3 * size // 2, 6_000)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
