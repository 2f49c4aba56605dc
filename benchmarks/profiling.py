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
import cProfile
import gc
import hashlib
import inspect
import io
import json
import pstats
import statistics
import time
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from benchmarks.inprocess import (
    Context,
    _cache_kwargs,
    bearerguard_runner,
    cache_available,
    new_validator,
    raw_verifier,
)

#: Interleaved rounds over all steps; each figure is the median of these.
REPS = 7


def per_op_us(fn: Callable[[Any], Any], items: Sequence[Any], reps: int = 1) -> float:
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
    loop: asyncio.AbstractEventLoop, fn: Callable[[Any], Any], items: Sequence[Any], reps: int = 1
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
    from bearerguard import _jws as jws_mod

    tokens = ctx.pools["RS256"][:n]
    loop = ctx.loop
    off = (_cache_kwargs(False) or {}) if cache_available() else {}
    on = (_cache_kwargs(True) or {}) if cache_available() else {}
    validator = ctx.run(new_validator(ctx.issuer, **off))
    state = next(iter(validator.issuers.values()))
    steps: dict[str, float | str] = {}
    alternatives: dict[str, float | str] = {}

    # Steps are registered, then sampled in interleaved rounds so a noisy moment on a
    # shared machine spreads over all of them instead of inflating one.
    registered: list[tuple[str, dict[str, float | str], Callable[[], float]]] = []

    def step(name: str, table: dict[str, float | str], sample: Callable[[], float]) -> None:
        registered.append((name, table, sample))

    verify, convert = raw_verifier("RS256", ctx.issuer.public_key("RS256"))
    raw_items = []
    for t in tokens:
        h, p, s = t.split(".")
        raw_items.append((f"{h}.{p}".encode("ascii"), convert(_b64(s))))
    parsed = [jws_mod.parse_jws(t) for t in tokens]
    segments = [t.split(".") for t in tokens]
    digests = [hashlib.sha256(t.encode()).digest() for t in tokens]
    now = time.time()

    # Totals use the same long-lived validators as the cold section (bearerguard_runner):
    # cache off; cache on and full, so each token is a miss that stores and evicts.
    total_off = bearerguard_runner(ctx, cache=False)
    total_on = bearerguard_runner(ctx, cache=True) if on != off else None

    def total(runner: Callable[[list[str]], float]) -> float:
        return runner(tokens) / len(tokens) * 1e6

    # The path of TokenValidator.validate, step by step, in order.
    step("TOTAL validate(), cache off", steps, lambda: total(total_off))
    if total_on is not None:
        step(
            "TOTAL validate(), cache on and full (miss, store, evict)",
            steps,
            lambda: total(total_on),
        )
    step(
        "raw RS256 verify (cryptography, the 100 %)",
        steps,
        lambda: per_op_us(lambda it: verify(*it), raw_items),
    )
    step(
        "sha256(token).digest()",
        steps,
        lambda: per_op_us(
            lambda t: hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest(), tokens
        ),
    )
    step("jws.looks_like_jws", steps, lambda: per_op_us(jws_mod.looks_like_jws, tokens))
    # Parse as validate() does: with the validator's header cache when it keeps one.
    headers = getattr(validator, "_headers", None)
    if isinstance(headers, dict):
        step(
            "jws.parse_jws (validator's warm header cache)",
            steps,
            lambda: per_op_us(lambda t: jws_mod.parse_jws(t, headers), tokens),
        )
    else:
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
    key = ctx.run(state.jwks.get_keys(parsed[0].header.get("kid"), "RS256"))[0]
    step(
        "VerificationKey.verify",
        steps,
        lambda: per_op_us(lambda p: key.verify(p.signing_input, p.signature), parsed),
    )
    step(
        "ClaimRules.check_claims",
        steps,
        lambda: per_op_us(lambda p: state.rules.check_claims(p.claims, now), parsed),
    )
    step("digest.hex()", steps, lambda: per_op_us(lambda d: d.hex(), digests))
    hexdigest = digests[0].hex()
    step(
        "TokenValidator._access_token",
        steps,
        lambda: per_op_us(
            lambda p: validator._access_token(state, p.claims, hexdigest, key), parsed
        ),
    )
    access = validator._access_token(state, parsed[0].claims, hexdigest, key)
    try:
        from bearerguard._cache import ValidationCache

        store = ValidationCache()
        step(
            "ValidationCache.accept, cache not full (cache on only)",
            steps,
            lambda: per_op_us(lambda d: store.accept(d, access, now + 300, key), digests),
        )
        size = len(digests)
        full = ValidationCache(size)
        for i in range(size):
            full.accept(i.to_bytes(32, "big"), access, now + 300, key)
        # Each sample stores digests never seen before, so every store evicts one entry.
        fresh_batches = iter(
            [hashlib.sha256(b"%d-%d" % (r, i)).digest() for i in range(size)]
            for r in range(REPS + 1)
        )
        step(
            "ValidationCache.accept, cache full: evicts (cache on only)",
            steps,
            lambda: per_op_us(
                lambda d: full.accept(d, access, now + 300, key), next(fresh_batches)
            ),
        )
        empty = ValidationCache()
        step(
            "ValidationCache.lookup, miss (cache on only)",
            steps,
            lambda: per_op_us(lambda d: empty.lookup(d, now), digests),
        )
        ordered: OrderedDict[bytes, Any] = OrderedDict(
            (i.to_bytes(32, "big"), access) for i in range(size)
        )
        other_batches = iter(
            [hashlib.sha256(b"o%d-%d" % (r, i)).digest() for i in range(size)]
            for r in range(REPS + 1)
        )

        def ordered_put(d: bytes) -> None:
            ordered.popitem(last=False)
            ordered[d] = access

        step(
            "OrderedDict insert + popitem(last=False) (reference for a full LRU)",
            alternatives,
            lambda: per_op_us(ordered_put, next(other_batches)),
        )
    except ImportError:
        pass

    # Inside parse_jws.
    step(
        "  in parse_jws: _json_object(header) (skipped on a header-cache hit)",
        steps,
        lambda: per_op_us(lambda sg: jws_mod._json_object(sg[0]), segments),
    )
    step(
        "  in parse_jws: _json_object(payload)",
        steps,
        lambda: per_op_us(lambda sg: jws_mod._json_object(sg[1]), segments),
    )
    step(
        "  in parse_jws: _b64decode(signature)",
        steps,
        lambda: per_op_us(lambda sg: jws_mod._b64decode(sg[2]), segments),
    )
    step(
        "  in parse_jws: signing_input slice + encode",
        steps,
        lambda: per_op_us(lambda t: t[: t.rindex(".")].encode("ascii"), tokens),
    )
    make_token = _token_factory(access)
    step(
        "  in _access_token: AccessToken(...) alone (frozen dataclass)",
        steps,
        lambda: per_op_us(lambda _: make_token(), tokens),
    )

    async def noop() -> None:
        return None

    step(
        "await of an empty coroutine (reference)",
        steps,
        lambda: per_op_us_async(loop, lambda _: noop(), parsed),
    )

    # Cheaper ways to do the same work.
    payload_texts = [_b64(sg[1]).decode() for sg in segments]
    step("json.loads(payload) plain", alternatives, lambda: per_op_us(json.loads, payload_texts))
    decoder = getattr(jws_mod, "_decoder", None)
    if decoder is not None:
        step(
            "jws._decoder.decode(payload) (duplicate/NaN hooks)",
            alternatives,
            lambda: per_op_us(decoder.decode, payload_texts),
        )
    if "header_cache" in inspect.signature(jws_mod.parse_jws).parameters:
        header_cache: dict[str, Any] = {}
        step(
            "jws.parse_jws(token, a warm header_cache)",
            alternatives,
            lambda: per_op_us(lambda t: jws_mod.parse_jws(t, header_cache), tokens),
        )
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    step(
        "shape: count('.')==2 and isascii() and not encode().translate(None, alphabet)",
        alternatives,
        lambda: per_op_us(
            lambda t: (
                t.count(".") == 2
                and t.isascii()
                and not t.encode("ascii").translate(None, alphabet)
            ),
            tokens,
        ),
    )
    step(
        "sync keyset.candidates(kid, alg) (no coroutine)",
        alternatives,
        lambda: per_op_us(
            lambda p: state.jwks.keyset.candidates(p.header.get("kid"), "RS256"), parsed
        ),
    )
    pad, sha = _padding_objects()
    pub = ctx.issuer.public_key("RS256")
    step(
        "public_key.verify with prebuilt PKCS1v15()/SHA256() (no wrapper)",
        alternatives,
        lambda: per_op_us(lambda p: pub.verify(p.signature, p.signing_input, pad, sha), parsed),
    )
    step(
        "PyJWT RSAAlgorithm.verify (the wrapper keys.py calls)",
        alternatives,
        lambda: _pyjwt_wrapper_us(ctx, raw_items),
    )
    fields = {f: getattr(access, f) for f in type(access).__dataclass_fields__}
    field_names = tuple(type(access).__dataclass_fields__)
    as_tuple = namedtuple("AccessTokenTuple", field_names)  # type: ignore[misc]
    values = tuple(getattr(access, f) for f in field_names)
    step(
        "a namedtuple with the same fields (immutable, no per-field setattr)",
        alternatives,
        lambda: per_op_us(lambda _: as_tuple(*values), tokens),
    )
    step(
        "tuple of the same AccessToken fields (allocation floor)",
        alternatives,
        lambda: per_op_us(lambda _: tuple(fields.values()), tokens),
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

    samples: dict[str, list[float]] = {name: [] for name, _, _ in registered}
    for _ in range(REPS):
        for name, table, sample in registered:
            if isinstance(table.get(name), str):
                continue
            try:
                samples[name].append(sample())
            except Exception as exc:  # the internals moved: say so rather than guess
                table[name] = f"n/a ({type(exc).__name__}: {exc})"
    for name, table, _ in registered:
        if samples[name] and not isinstance(table.get(name), str):
            table[name] = round(statistics.median(samples[name]), 3)

    # cProfile: who is on the stack, and how much each function costs itself.
    profiler = cProfile.Profile()

    async def profiled() -> None:
        v = await new_validator(ctx.issuer, **off)
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
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: kv[1][2],
        reverse=True,
    )[:25]:
        short = filename.split("site-packages/")[-1].split("src/")[-1]
        top.append({
            "function": f"{short}:{line}({func})",
            "calls_per_validation": round(ncalls / len(tokens), 2),
            "tottime_us_per_validation": round(tottime / len(tokens) * 1e6, 3),
            "cumtime_us_per_validation": round(cumtime / len(tokens) * 1e6, 3),
        })  # fmt: skip
    ctx.run(validator.aclose())
    path = [
        "sha256(token).digest()", "jws.looks_like_jws",
        "jws.parse_jws (validator's warm header cache)" if "jws.parse_jws" not in steps
        else "jws.parse_jws",
        "TokenValidator._issuer_for", "ClaimRules.check_header", "JWKSCache.get_keys (awaited)",
        "VerificationKey.verify", "ClaimRules.check_claims", "digest.hex()",
        "TokenValidator._access_token",
    ]  # fmt: skip
    named = [steps[k] for k in path if isinstance(steps.get(k), float)]
    out: dict[str, Any] = {
        "tokens": len(tokens),
        "steps_us": steps,
        "alternatives_us": alternatives,
        "cprofile_top": top,
    }
    grand = steps.get("TOTAL validate(), cache off")
    if isinstance(grand, float) and len(named) == len(path):
        out["sum_of_steps_us"] = round(sum(named), 3)
        out["unattributed_us"] = round(grand - sum(named), 3)
    return out


def _token_factory(access: Any) -> Callable[[], Any]:
    """A call that builds the same AccessToken again from prebuilt keyword arguments."""
    cls = type(access)
    fields = {f: getattr(access, f) for f in cls.__dataclass_fields__}
    return lambda: cls(**fields)


def _padding_objects() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256()


def _pyjwt_wrapper_us(ctx: Context, raw_items: list[tuple[bytes, bytes]]) -> float:
    from jwt.algorithms import get_default_algorithms

    alg = get_default_algorithms()["RS256"]
    key = ctx.issuer.public_key("RS256")
    return per_op_us(lambda it: alg.verify(it[0], key, it[1]), raw_items)
