"""Where bearerguard's cold path spends its time beyond the raw verify.

Two views: cProfile over a pass of distinct tokens (who calls what, inflated by
the profiler's own overhead on small functions), and direct timings of each step
of ``TokenValidator.validate`` on the same tokens (no profiler), beside cheaper
alternatives, so a suggestion comes with the microseconds it would save.
Internal names are looked up defensively: a step that moved is reported as
"n/a", never guessed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import cProfile
import gc
import hashlib
import io
import json
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from benchmarks.inprocess import (
    Context,
    _cache_kwargs,
    cache_available,
    new_validator,
    raw_verifier,
)


def per_op_us(fn: Callable[[Any], Any], items: Sequence[Any], reps: int = 5) -> float:
    """Median over ``reps`` passes of the time per item, in microseconds."""
    samples = []
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        samples.append((time.perf_counter() - t0) / len(items) * 1e6)
    return statistics.median(samples)


def per_op_us_async(
    loop: asyncio.AbstractEventLoop, fn: Callable[[Any], Any], items: Sequence[Any], reps: int = 5
) -> float:
    async def one() -> float:
        t0 = time.perf_counter()
        for item in items:
            await fn(item)
        return (time.perf_counter() - t0) / len(items) * 1e6

    samples = []
    for _ in range(reps):
        gc.collect()
        samples.append(loop.run_until_complete(one()))
    return statistics.median(samples)


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def run_profile(ctx: Context, n: int) -> dict[str, Any]:
    """Step timings, cheaper alternatives, and a cProfile top list for cold RS256."""
    from bearerguard import jws as jws_mod
    from bearerguard import validator as validator_mod

    tokens = ctx.pools["RS256"][:n]
    loop = ctx.loop
    kwargs = (_cache_kwargs(False) or {}) if cache_available() else {}
    validator = ctx.run(new_validator(ctx.issuer, **kwargs))
    state = next(iter(validator.issuers.values()))
    steps: dict[str, float | str] = {}
    alternatives: dict[str, float | str] = {}

    def step(name: str, table: dict[str, float | str], compute: Callable[[], float]) -> None:
        try:
            table[name] = round(compute(), 3)
        except Exception as exc:  # the internals moved: say so rather than guess
            table[name] = f"n/a ({type(exc).__name__}: {exc})"

    verify, convert = raw_verifier("RS256", ctx.issuer.public_key("RS256"))
    raw_items = []
    for t in tokens:
        h, p, s = t.split(".")
        raw_items.append((f"{h}.{p}".encode("ascii"), convert(_b64(s))))
    parsed = [jws_mod.parse_jws(t) for t in tokens]

    async def fresh_validate_all() -> float:
        v = await new_validator(ctx.issuer, **kwargs)
        try:
            t0 = time.perf_counter()
            for t in tokens:
                await v.validate(t)
            return (time.perf_counter() - t0) / len(tokens) * 1e6
        finally:
            await v.aclose()

    step(
        "validate (total, fresh validator)",
        steps,
        lambda: statistics.median(ctx.run(fresh_validate_all()) for _ in range(5)),
    )
    step(
        "raw RS256 verify (cryptography)",
        steps,
        lambda: per_op_us(lambda it: verify(*it), raw_items),
    )
    step("jws.looks_like_jws", steps, lambda: per_op_us(jws_mod.looks_like_jws, tokens))
    step("jws.parse_jws", steps, lambda: per_op_us(jws_mod.parse_jws, tokens))
    step(
        "TokenValidator._issuer_for",
        steps,
        lambda: per_op_us(lambda p: validator._issuer_for(p.claims), parsed),
    )
    step(
        "ClaimRules.check_header",
        steps,
        lambda: per_op_us(lambda p: state.rules.check_header(p.header), parsed),
    )
    step(
        "JWKSCache.get_keys (awaited)",
        steps,
        lambda: per_op_us_async(
            loop, lambda p: state.jwks.get_keys(p.header.get("kid"), "RS256"), parsed
        ),
    )
    keys = ctx.run(state.jwks.get_keys(parsed[0].header.get("kid"), "RS256"))
    key = keys[0]
    step(
        "VerificationKey.verify",
        steps,
        lambda: per_op_us(lambda p: key.verify(p.signing_input, p.signature), parsed),
    )
    now = time.time()
    step(
        "ClaimRules.check_claims",
        steps,
        lambda: per_op_us(lambda p: state.rules.check_claims(p.claims, now), parsed),
    )
    step(
        "validator.token_hash (sha256 hexdigest)",
        steps,
        lambda: per_op_us(validator_mod.token_hash, tokens),
    )
    digest = validator_mod.token_hash(tokens[0])
    step(
        "TokenValidator._access_token",
        steps,
        lambda: per_op_us(lambda p: validator._access_token(state, p.claims, digest, key), parsed),
    )

    async def noop() -> None:
        return None

    step(
        "await of an empty coroutine",
        steps,
        lambda: per_op_us_async(loop, lambda _: noop(), parsed),
    )

    # Cheaper alternatives for the same work.
    payload_segments = [t.split(".")[1] for t in tokens]
    header_segments = [t.split(".")[0] for t in tokens]
    payload_texts = [_b64(s).decode() for s in payload_segments]
    step("json.loads(payload) plain", alternatives, lambda: per_op_us(json.loads, payload_texts))
    decoder = getattr(jws_mod, "_decoder", None)
    if decoder is not None:
        step(
            "jws._decoder.decode(payload) (strict hooks)",
            alternatives,
            lambda: per_op_us(decoder.decode, payload_texts),
        )
    if hasattr(jws_mod, "_b64decode"):
        step(
            "jws._b64decode(payload)",
            alternatives,
            lambda: per_op_us(jws_mod._b64decode, payload_segments),
        )
    step(
        "base64.urlsafe_b64decode(payload)", alternatives, lambda: per_op_us(_b64, payload_segments)
    )
    step(
        "binascii.a2b_base64(payload, strict) via translate",
        alternatives,
        lambda: per_op_us(
            lambda s: binascii.a2b_base64(
                (s + "=" * (-len(s) % 4)).encode().translate(_STD), strict_mode=True
            ),
            payload_segments,
        ),
    )
    header_cache: dict[str, Any] = {}

    def cached_header(seg: str) -> Any:
        got = header_cache.get(seg)
        if got is None:
            got = header_cache[seg] = json.loads(_b64(seg))
        return got

    step(
        "header decode memoised by segment (dict hit)",
        alternatives,
        lambda: per_op_us(cached_header, header_segments),
    )
    step(
        "sha256(token).digest() (bytes, no hex)",
        alternatives,
        lambda: per_op_us(lambda t: hashlib.sha256(t.encode()).digest(), tokens),
    )
    step(
        "MappingProxyType(claims)",
        alternatives,
        lambda: per_op_us(lambda p: MappingProxyType(p.claims), parsed),
    )
    step(
        "frozenset(scope.split())",
        alternatives,
        lambda: per_op_us(lambda p: frozenset(p.claims.get("scope", "").split()), parsed),
    )
    step(
        "PyJWT RSAAlgorithm.verify (wrapper)",
        alternatives,
        lambda: _pyjwt_wrapper_us(ctx, raw_items),
    )

    # cProfile: who is on the stack, and how much each function costs itself.
    profiler = cProfile.Profile()

    async def profiled() -> None:
        v = await new_validator(ctx.issuer, **kwargs)
        try:
            profiler.enable()
            for t in tokens:
                await v.validate(t)
            profiler.disable()
        finally:
            await v.aclose()

    ctx.run(profiled())
    stats = pstats.Stats(profiler, stream=io.StringIO())
    top = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in sorted(
        stats.stats.items(),
        key=lambda kv: kv[1][2],
        reverse=True,  # type: ignore[attr-defined]
    )[:25]:
        short = filename.split("site-packages/")[-1].split("src/")[-1]
        top.append(
            {
                "function": f"{short}:{line}({func})",
                "calls_per_validation": round(ncalls / len(tokens), 2),
                "tottime_us_per_validation": round(tottime / len(tokens) * 1e6, 3),
                "cumtime_us_per_validation": round(cumtime / len(tokens) * 1e6, 3),
            }
        )
    ctx.run(validator.aclose())
    total = steps.get("validate (total, fresh validator)")
    named = [
        v
        for k, v in steps.items()
        if isinstance(v, float)
        and k
        not in (
            "validate (total, fresh validator)",
            "raw RS256 verify (cryptography)",
            "await of an empty coroutine",
        )
    ]
    out: dict[str, Any] = {
        "tokens": len(tokens),
        "steps_us": steps,
        "alternatives_us": alternatives,
        "cprofile_top": top,
    }
    if isinstance(total, float):
        out["sum_of_steps_us"] = round(sum(named), 3)
        out["unattributed_us"] = round(total - sum(named), 3)
    return out


_STD = bytes.maketrans(b"-_", b"+/")


def _pyjwt_wrapper_us(ctx: Context, raw_items: list[tuple[bytes, bytes]]) -> float:
    from jwt.algorithms import get_default_algorithms

    alg = get_default_algorithms()["RS256"]
    key = ctx.issuer.public_key("RS256")
    return per_op_us(lambda it: alg.verify(it[0], key, it[1]), raw_items)
