"""Results out: ``latest.json`` (every raw sample), ``latest.md`` (the table), ``latest.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.machine import label, load_note
from benchmarks.stats import fmt_pct, fmt_spread

#: The issue's targets, checked against medians measured in the same run.
TARGETS = {
    "cold_rs256_vs_raw": 0.50,
    "cold_rs256_vs_pyjwt": 2.0,
    "cache_hit_ops": 500_000,
    "http_hit_vs_plain": 0.92,
    "http_ratelimit_vs_plain": 0.80,
    "http_cold_cache_vs_plain": 0.33,
    "http_cold_cache_p99_vs_cold": 1.5,
    "http_vs_peers": 1.5,
}


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _verdict(s: dict[str, Any] | None, target: float, higher: bool = True) -> str:
    if not s or s.get("median") is None:
        return "not measured"
    m = s["median"]
    ok = m >= target if higher else m <= target
    return "MET" if ok else "MISSED"


#: Issue 13's targets: the whole request path, over HTTP and in process.
TARGETS_13 = {
    "http_hit_vs_plain": 0.92,
    "http_rl_memory_vs_plain": 0.80,
    "http_rl_redis_vs_plain": 0.45,
    "http_cold_cache_vs_plain": 0.45,
    # "Never slower than cache off": every round within the run-to-run noise (3 %).
    "http_cold_cache_vs_off_min": 0.97,
    "e2e_cold_raw_vs_extra": 0.5,
    "e2e_hit_extra_vs_plain": 0.35,
    "fastapi_vs_authlib": 1.5,
    "fastapi_vs_pyjwkclient": 2.0,
}


def targets_13(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's table: each row's median (min..max over rounds) and a verdict."""
    rows: list[dict[str, Any]] = []
    http = _get(results, "http", "scenarios") or {}

    def http_row(text: str, name: str, metric: str, key: str) -> None:
        s = _get(http, name, metric)
        figure = fmt_pct(s) if metric == "rps_vs_plain" else _fmt_x(s)
        rows.append({"target": text, "figure": figure, "verdict": _verdict(s, TARGETS_13[key])})

    http_row("HTTP cache hit >= 92 % of plain Starlette", "bg_hit", "rps_vs_plain",
             "http_hit_vs_plain")  # fmt: skip
    http_row("HTTP cache hit + memory rate limit (default strategy) >= 80 %",
             "bg_hit_rl_memory", "rps_vs_plain", "http_rl_memory_vs_plain")  # fmt: skip
    http_row("HTTP cache hit + Redis rate limit (Redis on the same machine) >= 45 %",
             "bg_hit_rl_redis", "rps_vs_plain", "http_rl_redis_vs_plain")  # fmt: skip
    http_row("HTTP cold stream, cache on >= 45 %", "bg_cold_cache", "rps_vs_plain",
             "http_cold_cache_vs_plain")  # fmt: skip
    vs_off = _get(http, "bg_cold_cache", "rps_vs_bg_cold")
    rows.append(
        {
            "target": "HTTP cold stream: cache on never slower than cache off "
            "(every round >= 97 %, the noise floor)",
            "figure": _fmt_x(vs_off),
            "verdict": "not measured"
            if not vs_off or vs_off.get("min") is None
            else ("MET" if vs_off["min"] >= TARGETS_13["http_cold_cache_vs_off_min"] else "MISSED"),
        }
    )
    e2e = _get(results, "inprocess", "e2e", "rows") or {}
    cold = _get(e2e, "cold_on", "raw_vs_extra")
    rows.append(
        {
            "target": "in-process cold RS256 through the middleware (cache on): raw verify / "
            "extra cost vs a plain request >= 0.5x",
            "figure": _fmt_x(cold),
            "verdict": _verdict(cold, TARGETS_13["e2e_cold_raw_vs_extra"]),
        }
    )
    hit = _get(e2e, "hit", "extra_vs_plain")
    rows.append(
        {
            "target": "in-process cache hit through the middleware: extra cost vs a plain "
            "request <= 35 %",
            "figure": fmt_pct(hit),
            "verdict": _verdict(hit, TARGETS_13["e2e_hit_extra_vs_plain"], higher=False),
        }
    )
    http_row("bearerguard on FastAPI (cold, cache on) >= 1.5x FastAPI + authlib",
             "bg_cold_cache_fastapi", "rps_vs_authlib", "fastapi_vs_authlib")  # fmt: skip
    http_row("bearerguard on FastAPI (cold, cache on) >= 2x FastAPI + PyJWKClient",
             "bg_cold_cache_fastapi", "rps_vs_pyjwkclient", "fastapi_vs_pyjwkclient")  # fmt: skip
    imports = results.get("imports")
    if isinstance(imports, dict) and "total_ms" in imports:
        optional = imports["optional_loaded"]
        heavy = ", ".join(f"{k} {v:.0f}" for k, v in list(imports["heaviest_ms"].items())[:6])
        bare = (imports.get("statements") or {}).get("import bearerguard")
        bare_text = (
            f"`import bearerguard` {fmt_spread(bare['total_ms'], 'ms')}, "
            f"{bare['modules_loaded']} modules; "
            if bare
            else ""
        )
        rows.append(
            {
                "target": "`import bearerguard` loads only what the configuration uses",
                "figure": f"{bare_text}`{imports.get('statement', 'import bearerguard')}` "
                f"{fmt_spread(imports['total_ms'], 'ms')} (-X importtime), "
                f"{imports['modules_loaded']} modules; optional loaded: "
                f"{', '.join(optional) or 'none'}; own ms by package: {heavy}",
                "verdict": "MISSED" if optional else "MET",
            }
        )
    else:
        rows.append(
            {
                "target": "`import bearerguard` loads only what the configuration uses",
                "figure": "n/a",
                "verdict": "not measured",
            }
        )
    return rows


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's targets, each with its median, spread (min..max over rounds) and a verdict."""
    rows: list[dict[str, Any]] = []
    bg = _get(results, "inprocess", "cold", "by_alg", "RS256", "bearerguard")
    rows.append(
        {
            "target": "in-process cold RS256 >= 50 % of raw verify",
            "figure": fmt_pct(bg and bg["vs_raw"]),
            "verdict": _verdict(bg and bg["vs_raw"], TARGETS["cold_rs256_vs_raw"]),
        }
    )
    rows.append(
        {
            "target": "in-process cold RS256 >= 2x PyJWT jwt.decode",
            "figure": _fmt_x(bg and bg["vs_pyjwt"]),
            "verdict": _verdict(bg and bg["vs_pyjwt"], TARGETS["cold_rs256_vs_pyjwt"]),
        }
    )
    hit = _get(results, "inprocess", "extras", "cache_hit", "ops_per_s")
    rows.append(
        {
            "target": "in-process cache hit >= 500k/s",
            "figure": fmt_spread(hit) if hit and hit.get("n") else "n/a",
            "verdict": _verdict(hit, TARGETS["cache_hit_ops"]),
        }
    )
    http = _get(results, "http", "scenarios") or {}

    def ratio_row(text: str, name: str, metric: str, target: float, higher: bool = True) -> None:
        s = _get(http, name, metric)
        figure = fmt_pct(s) if metric.endswith("rps_vs_plain") else _fmt_x(s)
        rows.append({"target": text, "figure": figure, "verdict": _verdict(s, target, higher)})

    ratio_row("HTTP cache hit >= 92 % of plain Starlette req/s", "bg_hit", "rps_vs_plain", 0.92)
    ratio_row(
        "HTTP cache hit + memory rate limit >= 80 %", "bg_hit_rl_memory", "rps_vs_plain", 0.80
    )
    ratio_row("HTTP cold stream with cache >= 33 %", "bg_cold_cache", "rps_vs_plain", 0.33)
    ratio_row(
        "HTTP cold+cache p99 <= 1.5x cold p99 (no cache)",
        "bg_cold_cache",
        "p99_vs_bg_cold",
        1.5,
        higher=False,
    )
    for peer, text in (
        ("authlib", "FastAPI + authlib RFC 9068"),
        ("pyjwkclient", "PyJWKClient dep."),
    ):
        ratio_row(
            f"HTTP cold (cache on) >= 1.5x {text}: bearerguard on Starlette",
            "bg_cold_cache",
            f"rps_vs_{peer}",
            1.5,
        )
        ratio_row(
            f"HTTP cold (cache on) >= 1.5x {text}: bearerguard on FastAPI (same framework)",
            "bg_cold_cache_fastapi",
            f"rps_vs_{peer}",
            1.5,
        )
    return rows


def _fmt_x(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.2f}x ({s['min']:.2f}..{s['max']:.2f})"


def markdown(results: dict[str, Any]) -> str:
    """The whole table as Markdown: machine, targets, in-process, HTTP, scale, profile."""
    info = results["machine"]
    lines = [
        "# bearerguard benchmarks",
        "",
        f"Machine: {label(info)}. Run: {results['started']} ({results['mode']}, "
        f"bearerguard at {info.get('revision') or 'unknown revision'}, "
        f"{results.get('duration_s', 0):.0f} s). Medians over interleaved rounds, "
        "(min..max) across rounds;"
        " ratios are taken per round against a baseline measured in the same round. "
        + load_note(info),
        "",
        "## Targets (issue 13: the whole request path)",
        "",
        "| target | median (min..max) | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| {r['target']} | {r['figure']} | {r['verdict']} |" for r in targets_13(results)]
    lines += [
        "",
        "## Earlier targets (issue 5)",
        "",
        "| target | median (min..max) | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| {r['target']} | {r['figure']} | {r['verdict']} |" for r in targets(results)]
    e2e = _get(results, "inprocess", "e2e")
    if e2e:
        lines += [
            "",
            f"## In-process end to end ({e2e['rounds']} rounds; "
            f"{e2e['hit_requests_per_sample']:,} requests per sample for one token, "
            f"{e2e['cold_tokens_per_sample']:,} distinct tokens for cold rows)",
            "",
            "The same Starlette app with and without the middleware, driven as a server "
            "drives it (a fresh scope, `receive` and `send` per request), variants interleaved "
            "per chunk. CPU time of the thread (the machine is shared), except rows marked "
            "wall, which wait on Redis and are compared with the plain app's wall time. Raw "
            "RS256 verify of the same tokens in the same round: "
            f"{fmt_spread(e2e['raw_verify_us'], 'us')}.",
            "",
            "| variant | µs/request | extra µs vs plain | extra vs plain | raw verify / extra |",
            "|---|---|---|---|---|",
        ]
        for row in e2e["rows"].values():
            lines.append(
                f"| {row['label']}{' (wall)' if row.get('clock') == 'wall' else ''} | "
                f"{fmt_spread(row['us_per_request'], 'us')} | "
                f"{fmt_spread(row['extra_us'], 'us')} | {fmt_pct(row['extra_vs_plain'])} | "
                f"{_fmt_x(row.get('raw_vs_extra'))} |"
            )
        for name, why in e2e.get("notes", {}).items():
            lines.append(f"\n- {name}: {why}")
    dpop = _get(results, "inprocess", "dpop")
    if dpop:
        from benchmarks.dpop import render

        lines += ["", render(dpop)]
    cold = _get(results, "inprocess", "cold")
    if cold:
        lines += [
            "",
            f"## In-process cold validation ({cold['rounds']} rounds, distinct tokens: "
            f"{', '.join(f'{a} {n}' for a, n in cold['pool_size'].items())} per pass)",
            "",
            "| alg | implementation | ops/s | µs/op | vs raw verify | vs PyJWT decode |",
            "|---|---|---|---|---|---|",
        ]
        for alg, impls in cold["by_alg"].items():
            for row in impls.values():
                lines.append(
                    f"| {alg} | {row['label']} | {fmt_spread(row['ops_per_s'])} | "
                    f"{row['us_per_op']['median']:.1f} | {fmt_pct(row['vs_raw'])} | "
                    f"{_fmt_x(row['vs_pyjwt'])} |"
                )
        for name, why in cold.get("skipped", {}).items():
            lines.append(f"\n- {name}: {why}")
    extras = _get(results, "inprocess", "extras")
    if extras:
        lines += [
            "",
            "## In-process: cache hit, rate limits, introspection",
            "",
            f"Ops per sample: floor and cache hits {extras['ops_per_sample']:,}; memory rate "
            f"limits {max(200, extras['ops_per_sample'] // 5):,}; Redis "
            f"{max(200, extras['ops_per_sample'] // 20):,}; introspection cold "
            f"{max(100, extras['ops_per_sample'] // 200):,} (one round trip each).",
            "",
            "| what | ops/s | µs/op | vs floor (same round) |",
            "|---|---|---|---|",
        ]
        for name, row in extras.items():
            if isinstance(row, dict) and "ops_per_s" in row and row["ops_per_s"]["n"]:
                lines.append(
                    f"| {_EXTRA_LABELS.get(name, name)} | {fmt_spread(row['ops_per_s'])} | "
                    f"{row['us_per_op']['median']:.2f} | {fmt_pct(row.get('vs_floor'))} |"
                )
        for name, why in extras.get("notes", {}).items():
            lines.append(f"\n- {name}: {why}")
    http = results.get("http")
    if http:
        lines += [
            "",
            "## HTTP (uvicorn, wrk on loopback)",
            "",
            http.get("setup", ""),
            "",
            "| scenario | req/s | vs plain | p50 | p99 | p50 vs plain | p99 vs plain | non-2xx |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in http.get("scenarios", {}).values():
            lines.append(
                f"| {row['label']} | {fmt_spread(row['rps'])} | "
                f"{fmt_pct(row.get('rps_vs_plain'))} | {_ms(row['p50_ms'])} | "
                f"{_ms(row['p99_ms'])} | {_fmt_x(row.get('p50_vs_plain'))} | "
                f"{_fmt_x(row.get('p99_vs_plain'))} | {row.get('non_2xx', 0)} |"
            )
        for name, why in http.get("notes", {}).items():
            lines.append(f"\n- {name}: {why}")
    scale = results.get("scale")
    if scale:
        lines += ["", "## Scale", ""]
        lines += _scale_lines(scale)
    prof = results.get("profile")
    if prof:
        lines += [
            "",
            f"## Profile: bearerguard cold RS256 ({prof['tokens']} distinct tokens)",
            "",
            "| step | µs per validation |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v} |" for k, v in prof["steps_us"].items()]
        if "unattributed_us" in prof:
            lines.append(
                f"| (sum of the path's steps / TOTAL cache off minus that sum) | "
                f"{prof['sum_of_steps_us']} / {prof['unattributed_us']} |"
            )
            lines += [
                "",
                "Each step is timed alone in a tight loop over the same tokens (7 interleaved "
                "rounds, median). The remainder is what the steps cost together and not alone: "
                "the RSA verify evicts the interpreter's caches between Python steps, which "
                "grows with the machine's load.",
            ]
        lines += ["", "| alternative | µs per op |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in prof["alternatives_us"].items()]
        lines += [
            "",
            "cProfile, top by own time (inflated by profiler overhead):",
            "",
            "| function | calls/validation | own µs | cumulative µs |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{r['function']}` | {r['calls_per_validation']} | "
            f"{r['tottime_us_per_validation']} | "
            f"{r['cumtime_us_per_validation']} |"
            for r in prof["cprofile_top"][:15]
        ]
    lines += ["", "## How these were measured", ""] + [f"- {m}" for m in METHOD]
    lines += [
        "",
        "Reproduce: `make bench` (or `python -m benchmarks`; `--quick` for a 1-2 minute run; "
        "`--help` for sections).",
    ]
    return "\n".join(lines) + "\n"


def _scale_lines(scale: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    st = scale.get("jwks_stampede")
    if isinstance(st, dict) and "new_kid" in st:
        nk, rk = st["new_kid"], st["random_kids_after"]
        lines.append(
            f"- JWKS stampede: {nk['requests']} concurrent requests with a newly published kid "
            f"caused **{nk['jwks_fetches']} JWKS fetch(es)**, {nk['accepted']} accepted, "
            f"in {nk['seconds']} s; then {rk['requests']} with random unknown kids caused "
            f"**{rk['jwks_fetches']}** more (outcomes {rk['outcomes']}), in {rk['seconds']} s."
        )
    elif st is not None:
        lines.append(f"- JWKS stampede: {st}")
    for key in ("workers", "workers_redis"):
        wk = scale.get(key)
        if isinstance(wk, dict):
            one, two = wk["rps"]["1 worker"], wk["rps"]["2 workers"]
            p99_ratio = wk.get("p99_two_vs_one")
            lines.append(
                f"- {wk['scenario']}: 1 worker {fmt_spread(one)}, p99 "
                f"{_ms(wk['p99_ms']['1 worker'])}; 2 workers {fmt_spread(two)}, p99 "
                f"{_ms(wk['p99_ms']['2 workers'])}; 2 vs 1: throughput "
                f"{_fmt_x(wk['two_vs_one'])}"
                + (f", p99 {_fmt_x(p99_ratio)}" if p99_ratio else "")
                + f". {wk['setup']}."
            )
        elif wk is not None:
            lines.append(f"- {key}: {wk}")
    rss = scale.get("rss_invalid_tokens")
    if isinstance(rss, dict) and "checkpoints" in rss:
        cps = rss["checkpoints"]
        lines.append(
            f"- RSS under {rss['tokens']:,} distinct invalid tokens (bad signatures, cache on, "
            f"fresh process): VmRSS {cps[0]['vmrss_mib']} MiB before, {cps[-1]['vmrss_mib']} MiB "
            f"after; **peak {rss['peak_rss_mib']} MiB** (VmHWM); cache entries at the end: "
            f"{rss['cache_entries_at_end']}; full (gen 2) GCs: {rss['gen2_collections']}, longest "
            f"{rss['gen2_pause_max_ms']} ms; outcomes {rss['outcomes']}; {rss['seconds']} s. "
            "Checkpoints (tokens: MiB): "
            + ", ".join(f"{c['tokens']:,}: {c['vmrss_mib']}" for c in cps)
        )
    elif rss is not None:
        lines.append(f"- RSS: {rss}")
    full = scale.get("gc_full_cache")
    if isinstance(full, dict) and "checkpoints" in full:
        cps = full["checkpoints"]
        lines.append(
            f"- Cache full of accepted tokens: {full['tokens']:,} distinct valid tokens through "
            f"one validator (cache on, fresh process): {full['cache_entries_at_end']} entries "
            f"at the end; full (gen 2) GCs: {full['gen2_collections']}, **longest pause "
            f"{full['gen2_pause_max_ms']} ms**, total {full.get('gen2_pause_total_ms')} ms over "
            f"{full['seconds']} s; a forced full collection takes "
            f"**{full.get('forced_full_gc_ms_after')} ms** with the cache full "
            f"({full.get('gc_tracked_objects_after'):,} GC-tracked objects) against "
            f"{full.get('forced_full_gc_ms_before')} ms before the run "
            f"({full.get('gc_tracked_objects_before', 0):,} objects); VmRSS "
            f"{cps[0]['vmrss_mib']} -> {cps[-1]['vmrss_mib']} MiB, peak "
            f"{full['peak_rss_mib']} MiB; outcomes {full['outcomes']}."
        )
    elif full is not None:
        lines.append(f"- GC with a full cache: {full}")
    return lines


METHOD = (
    "In-process cold: every validation uses a distinct pre-minted token (own `jti`), signed by "
    "a TestIssuer key served as a JWKS on 127.0.0.1. Each round walks the pool in 250-token "
    "chunks, every implementation taking its turn on each chunk in a shuffled order; a rate is "
    "the pool size over the summed time, and each ratio is taken against raw verify in the "
    "same round.",
    "Raw verify is the bare `cryptography` call on the same signing inputs with prebuilt "
    "padding/hash objects; for ES256 the JWS r||s signature is converted to DER beforehand "
    "(so the conversion, which every validator must do, counts against the validators).",
    "bearerguard: one long-lived `TokenValidator` per variant with its keys prefetched. "
    "`cache on and full`: before each chunk the cache is emptied and refilled with unrelated "
    "entries up to its size (untimed), so every token misses, is stored, and evicts one entry.",
    "Peers do the same checks (signature, iss, aud, exp, 60 s leeway): PyJWT `jwt.decode` with "
    "a prebuilt key and `options.require`; PyJWKClient with its JWKS cache warm, then "
    "`jwt.decode`; authlib.jose and joserfc with the issuer's key set imported once (kid "
    "selection), then their claims validation.",
    "HTTP: all servers start once and stay up; each round runs every scenario once in a "
    "shuffled order; ratios are per round against plain Starlette. Cold streams rotate "
    "through a file of distinct tokens (at least 3x the cache size) and continue where the "
    "previous run of that server stopped, so no token is still cached when it comes back. "
    "Rate-limit scenarios use one token with a limit it never reaches (`1000000/second`): "
    "the cost of the check, not of refusals. The peers are FastAPI apps, so bearerguard is "
    "also measured on FastAPI for a same-framework comparison.",
    "On a shared machine a neighbour's load slows everything; look at the load averages "
    "above and at the min..max spreads before trusting an absolute number. Ratios within a "
    "round are the robust figures.",
)


_EXTRA_LABELS = {
    "floor": "floor: sha256(token) + dict lookup + exp check",
    "cache_hit": "bearerguard validate, cache hit (same token)",
    "ratelimit_memory_moving": "RateLimiter.hit, memory, moving window (default), 500 tokens",
    "ratelimit_memory_fixed": "RateLimiter.hit, memory, fixed window, 500 tokens",
    "ratelimit_redis_moving": "RateLimiter.hit, Redis, moving window, 500 tokens",
    "ratelimit_memory_moving_yielding": "RateLimiter.hit, memory, moving window, yielding to the "
    "loop after each hit (as a server does)",
    "ratelimit_memory_fixed_yielding": "RateLimiter.hit, memory, fixed window, yielding to the "
    "loop after each hit",
    "loop_yield": "reference: await asyncio.sleep(0) alone",
    "introspection_cold": "bearerguard validate, distinct opaque tokens, loopback introspection",
    "introspection_hit": "bearerguard validate, opaque token, cache hit",
}


def _ms(s: dict[str, Any] | None) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.2f} ms ({s['min']:.2f}..{s['max']:.2f})"


IMPL_SHORT = {
    "bearerguard": "bearerguard (cache off)",
    "bearerguard_cache_miss": "bearerguard (cache on, misses)",
    "pyjwt": "PyJWT decode",
    "pyjwkclient": "PyJWKClient + decode",
    "authlib": "authlib.jose",
    "joserfc": "joserfc",
}


def chart(results: dict[str, Any], path: Path) -> str | None:
    """A two-panel PNG: in-process ops/s per alg and implementation; HTTP req/s vs plain."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    cold = _get(results, "inprocess", "cold", "by_alg") or {}
    http = _get(results, "http", "scenarios") or {}
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    ax = axes[0]
    if cold:
        algs = list(cold)
        impls = sorted(
            {name for d in cold.values() for name in d},
            key=lambda n: [
                "raw",
                "bearerguard",
                "bearerguard_cache_miss",
                "pyjwt",
                "pyjwkclient",
                "authlib",
                "joserfc",
            ].index(n),
        )
        impls = [n for n in impls if n != "raw"]
        width = 0.8 / max(1, len(impls))
        for i, name in enumerate(impls):
            rows = [cold[a].get(name, {}).get("vs_raw") or {} for a in algs]
            med = [(r.get("median") or 0) * 100 for r in rows]
            lo = [
                m - (r.get("min") or 0) * 100 if r.get("min") else 0
                for r, m in zip(rows, med, strict=True)
            ]
            hi = [
                (r.get("max") or 0) * 100 - m if r.get("max") else 0
                for r, m in zip(rows, med, strict=True)
            ]
            xs = [j + i * width for j in range(len(algs))]
            ax.bar(xs, med, width, yerr=[lo, hi], label=IMPL_SHORT.get(name, name), capsize=2)
        ax.axhline(100, color="grey", lw=0.8)
        ax.axhline(50, color="tab:red", lw=0.8, ls="--")
        ax.set_xticks([j + width * (len(impls) - 1) / 2 for j in range(len(algs))], algs)
        ax.set_ylabel("% of raw cryptography verify, same round (median, min..max)")
        ax.set_title("In-process cold validation, distinct tokens (100 % = raw verify)")
        ax.legend(fontsize=8)
    else:
        ax.set_title("In-process: not run")
    ax = axes[1]
    if http:
        names = list(http)
        rows = [http[n].get("rps_vs_plain") or {} for n in names]
        med = [(r.get("median") or 0) * 100 for r in rows]
        lo = [
            m - (r.get("min") or 0) * 100 if r.get("min") else 0
            for r, m in zip(rows, med, strict=True)
        ]
        hi = [
            (r.get("max") or 0) * 100 - m if r.get("max") else 0
            for r, m in zip(rows, med, strict=True)
        ]
        ax.barh(range(len(names)), med, xerr=[lo, hi], color="tab:blue", capsize=2)
        ax.set_yticks(range(len(names)), [http[n]["label"] for n in names], fontsize=8)
        ax.axvline(100, color="grey", lw=0.8)
        ax.set_xlabel("req/s as % of plain Starlette in the same round (median, min..max)")
        ax.set_title("HTTP, uvicorn 1 worker, wrk on loopback")
        ax.invert_yaxis()
    else:
        ax.set_title("HTTP: not run")
    fig.suptitle(f"bearerguard benchmarks: {label(results['machine'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(results: dict[str, Any], outdir: Path) -> str:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "latest.json").write_text(
        json.dumps(results, indent=1, sort_keys=False) + "\n", encoding="utf-8"
    )
    text = markdown(results)
    (outdir / "latest.md").write_text(text, encoding="utf-8")
    problem = chart(results, outdir / "latest.png")
    if problem:
        text += f"\n(chart not written: {problem})\n"
    return text
