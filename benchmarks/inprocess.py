"""In-process throughput: one validation per distinct token, beside raw verify and the peers.

Each sample is one pass over a pool of distinct pre-minted tokens, so nothing
that caches per token can help; implementations are run in a shuffled order in
every round, and every ratio is taken against the raw ``cryptography`` verify of
the same signing inputs measured in the same round.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import importlib.util
import random
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from benchmarks.stats import ratios, summary
from benchmarks.tokens import BenchIssuer

ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")

#: Implementations of cold validation, in table order; "raw" is the 100 % baseline.
COLD_IMPLS = ("raw", "bearerguard", "pyjwt", "pyjwkclient", "authlib", "joserfc")
IMPL_LABELS = {
    "raw": "raw cryptography verify",
    "bearerguard": "bearerguard TokenValidator.validate",
    "bearerguard_cache_miss": "bearerguard validate, cache on and full (all misses, each evicts)",
    "pyjwt": "PyJWT jwt.decode (prebuilt key)",
    "pyjwkclient": "PyJWT PyJWKClient + jwt.decode (warm)",
    "authlib": "authlib.jose JsonWebToken + claims.validate",
    "joserfc": "joserfc jwt.decode + JWTClaimsRegistry",
}

Runner = Callable[[list[str]], float]

#: Tokens per interleaving step of the cold section.
CHUNK = 250


def _chunks(pool: list[str], size: int) -> list[list[str]]:
    return [pool[i : i + size] for i in range(0, len(pool), size)]


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def raw_verifier(
    alg: str, public_key: Any
) -> tuple[Callable[[bytes, bytes], None], Callable[[bytes], bytes]]:
    """The bare ``cryptography`` call for ``alg``, and how to turn a JWS signature into its input.

    The ES256 conversion from JWS ``r || s`` to DER happens before timing: the
    baseline is the cryptographic operation alone, the ceiling of any validator.
    """
    if alg == "RS256":
        pad, h = padding.PKCS1v15(), hashes.SHA256()
        return (lambda si, sig: public_key.verify(sig, si, pad, h)), (lambda s: s)
    if alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        h = hashes.SHA256()
        return (lambda si, sig: public_key.verify(sig, si, pss, h)), (lambda s: s)
    if alg == "ES256":
        ecdsa = ec.ECDSA(hashes.SHA256())

        def to_der(s: bytes) -> bytes:
            return encode_dss_signature(
                int.from_bytes(s[:32], "big"), int.from_bytes(s[32:], "big")
            )

        return (lambda si, sig: public_key.verify(sig, si, ecdsa)), to_der
    if alg == "EdDSA":
        return (lambda si, sig: public_key.verify(sig, si)), (lambda s: s)
    raise ValueError(alg)


@dataclass
class Context:
    """Everything the runners share: the issuer, one event loop, the pools."""

    issuer: BenchIssuer
    loop: asyncio.AbstractEventLoop
    pools: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    #: Called at the end of the run (servers and validators the sections started).
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def close(self) -> None:
        while self.closers:
            try:
                self.closers.pop()()
            except Exception as exc:  # closing must not hide the results
                print(f"[bench] close failed: {exc!r}")

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)


# -- bearerguard --------------------------------------------------------------------------


def bearerguard_available() -> str | None:
    """None when ``bearerguard.TokenValidator`` imports, else why not."""
    try:
        from bearerguard import TokenValidator  # noqa: F401
    except Exception as exc:  # any import failure means "not available yet"
        return f"bearerguard.TokenValidator does not import: {type(exc).__name__}: {exc}"
    return None


def cache_available() -> bool:
    """True once the validator takes a cache setting (bearerguard.cache wired into it)."""
    if importlib.util.find_spec("bearerguard._cache") is None:
        return False
    try:
        return _cache_kwargs(True) is not None
    except Exception:
        return False


def _cache_kwargs(enabled: bool) -> dict[str, Any] | None:
    """Validator keyword arguments that turn the validation cache on or off, if it has any.

    Returns None when the validator has no way to say so (then "off" cannot be
    measured separately and fresh validators are used for cold passes instead).
    """
    import inspect

    from bearerguard import TokenValidator

    params = inspect.signature(TokenValidator.__init__).parameters
    if "cache" in params:
        if enabled:
            return {}
        return {"cache": None} if params["cache"].default is not None else {}
    for name in ("cache_size", "cache_maxsize", "cache_max_entries", "max_cache_entries"):
        if name in params:
            return {} if enabled else {name: 0}
    if "cache_enabled" in params:
        return {"cache_enabled": enabled}
    return None


async def new_validator(issuer: BenchIssuer, **kwargs: Any) -> Any:
    """A TokenValidator for the bench issuer with its keys already fetched."""
    from bearerguard import Issuer, TokenValidator

    validator = TokenValidator(
        [
            Issuer(
                issuer=issuer.issuer,
                audience=issuer.audience,
                jwks_uri=issuer.jwks_uri,
                discovery=False,
            )
        ],
        **kwargs,
    )
    for state in validator.issuers.values():
        await state.jwks.prefetch()
    return validator


def bearerguard_runner(ctx: Context, *, cache: bool) -> Runner:
    """Cold validation with one long-lived validator (keys prefetched), one event loop.

    With the cache on, it is emptied and refilled to its size with other entries
    before each pass (untimed): every token is then a miss that is stored and evicts
    an old entry, which is the cold path of a server whose cache is full.
    """
    kwargs = (_cache_kwargs(cache) or {}) if cache_available() else {}
    validator = ctx.run(new_validator(ctx.issuer, **kwargs))
    ctx.closers.append(lambda: ctx.run(validator.aclose()))
    store = getattr(validator, "cache", None)
    clear = store.clear if cache and store is not None and hasattr(store, "clear") else None
    if cache and clear is None:
        raise RuntimeError("the validator's cache cannot be emptied between passes")
    validate = validator.validate
    fill = _steady_state_filler(ctx, validator) if cache else None

    def run(tokens: list[str]) -> float:
        if clear is not None:
            clear()
        if fill is not None:
            fill()

        async def go() -> float:
            t0 = time.perf_counter()
            for token in tokens:
                await validate(token)
            return time.perf_counter() - t0

        return float(ctx.run(go()))

    return run


def _steady_state_filler(ctx: Context, validator: Any) -> Callable[[], None] | None:
    """Fill the validator's cache with unrelated accepted entries (its size), or None."""
    store = getattr(validator, "cache", None)
    size = getattr(store, "maxsize", 0)
    if not size or not hasattr(store, "accept"):
        return None
    from bearerguard._cache import ALWAYS_ACTIVE

    access = ctx.run(validator.validate(ctx.issuer.mint("RS256")))
    far = time.time() + 3600

    def fill() -> None:
        accept = store.accept
        for i in range(size):
            accept(i.to_bytes(32, "big"), access, far, ALWAYS_ACTIVE)

    return fill


# -- peers ---------------------------------------------------------------------------------


def pyjwt_runner(ctx: Context, alg: str) -> Runner:
    import jwt

    key = ctx.issuer.public_key(alg)
    aud, iss = ctx.issuer.audience, ctx.issuer.issuer
    options = {"require": ["exp", "iss", "aud"]}
    decode = jwt.decode

    def run(tokens: list[str]) -> float:
        t0 = time.perf_counter()
        for token in tokens:
            decode(
                token, key, algorithms=[alg], audience=aud, issuer=iss, leeway=60, options=options
            )
        return time.perf_counter() - t0

    return run


def pyjwkclient_runner(ctx: Context, alg: str) -> Runner:
    import jwt

    client = jwt.PyJWKClient(ctx.issuer.jwks_uri)
    aud, iss = ctx.issuer.audience, ctx.issuer.issuer
    options = {"require": ["exp", "iss", "aud"]}
    decode = jwt.decode
    client.get_signing_key_from_jwt(ctx.pools[alg][0])  # warm its JWKS cache

    def run(tokens: list[str]) -> float:
        t0 = time.perf_counter()
        for token in tokens:
            signing_key = client.get_signing_key_from_jwt(token)
            decode(
                token,
                signing_key.key,
                algorithms=[alg],
                audience=aud,
                issuer=iss,
                leeway=60,
                options=options,
            )
        return time.perf_counter() - t0

    return run


def authlib_runner(ctx: Context, alg: str) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from authlib.jose import JsonWebKey, JsonWebToken

    keyset = JsonWebKey.import_key_set(ctx.issuer.jwks())
    decoder = JsonWebToken([alg])
    options = {
        "iss": {"essential": True, "value": ctx.issuer.issuer},
        "aud": {"essential": True, "value": ctx.issuer.audience},
        "exp": {"essential": True},
    }

    def run(tokens: list[str]) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            for token in tokens:
                claims = decoder.decode(token, keyset, claims_options=options)
                claims.validate(leeway=60)
            return time.perf_counter() - t0

    return run


def joserfc_runner(ctx: Context, alg: str) -> Runner:
    from joserfc import jwt as jjwt
    from joserfc.jwk import KeySet

    keyset = KeySet.import_key_set(ctx.issuer.jwks())
    registry = jjwt.JWTClaimsRegistry(
        leeway=60,
        iss={"essential": True, "value": ctx.issuer.issuer},
        aud={"essential": True, "value": ctx.issuer.audience},
        exp={"essential": True},
    )
    algorithms = [alg]

    def run(tokens: list[str]) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            for token in tokens:
                decoded = jjwt.decode(token, keyset, algorithms=algorithms)
                registry.validate(decoded.claims)
            return time.perf_counter() - t0

    return run


def raw_runner(ctx: Context, alg: str) -> Callable[[list[str]], float]:
    verify, convert = raw_verifier(alg, ctx.issuer.public_key(alg))
    prepared: dict[int, list[tuple[bytes, bytes]]] = {}

    def run(tokens: list[str]) -> float:
        items = prepared.get(id(tokens))
        if items is None:
            items = []
            for token in tokens:
                head, payload, sig = token.split(".")
                items.append((f"{head}.{payload}".encode("ascii"), convert(_b64decode(sig))))
            prepared[id(tokens)] = items
        t0 = time.perf_counter()
        for si, sig in items:
            verify(si, sig)
        return time.perf_counter() - t0

    return run


def _check_once(name: str, runner: Runner, token: str) -> str | None:
    """Run one token through an implementation: a failure disables it with the reason shown."""
    try:
        runner([token])
    except Exception as exc:  # a peer or bearerguard refusing a good token is a finding
        return f"{name} failed on a valid token: {type(exc).__name__}: {exc}"
    return None


# -- the cold section ----------------------------------------------------------------------


def run_cold(ctx: Context, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved rounds of every implementation over every algorithm's pool."""
    unavailable = bearerguard_available()
    impls: dict[str, dict[str, Runner]] = {alg: {} for alg in ALGORITHMS}
    skipped: dict[str, str] = {}
    for alg in ALGORITHMS:
        builders: dict[str, Callable[[], Runner]] = {
            "raw": lambda alg=alg: raw_runner(ctx, alg),
            "pyjwt": lambda alg=alg: pyjwt_runner(ctx, alg),
            "pyjwkclient": lambda alg=alg: pyjwkclient_runner(ctx, alg),
            "authlib": lambda alg=alg: authlib_runner(ctx, alg),
            "joserfc": lambda alg=alg: joserfc_runner(ctx, alg),
        }
        if unavailable is None:
            cache_on = cache_available()
            builders["bearerguard"] = lambda: bearerguard_runner(ctx, cache=False)
            if cache_on:
                builders["bearerguard_cache_miss"] = lambda: bearerguard_runner(ctx, cache=True)
        else:
            skipped["bearerguard"] = unavailable
        for name, build in builders.items():
            try:
                runner = build()
            except Exception as exc:
                skipped[f"{name}/{alg}"] = f"{type(exc).__name__}: {exc}"
                continue
            problem = _check_once(name, runner, ctx.pools[alg][0])
            if problem:
                skipped[f"{name}/{alg}"] = problem
                continue
            impls[alg][name] = runner

    seconds: dict[str, dict[str, list[float]]] = {
        alg: {name: [] for name in impls[alg]} for alg in ALGORITHMS
    }
    rates: dict[str, dict[str, list[float]]] = {
        alg: {name: [] for name in impls[alg]} for alg in ALGORITHMS
    }
    # Ratios are per round, so each round must have a raw sample for the algorithm.
    rng = random.Random(1)
    # Within a round the pool is walked in chunks, every implementation taking its turn on
    # each chunk in a shuffled order: a burst of load from a neighbour on a shared machine
    # then lands on all of them instead of on whichever ran at that moment.
    chunks = {alg: _chunks(ctx.pools[alg], CHUNK) for alg in ALGORITHMS}
    for r in range(rounds):
        progress(f"in-process cold: round {r + 1}/{rounds}")
        for alg in ALGORITHMS:
            spent = dict.fromkeys(impls[alg], 0.0)
            gc.collect()
            for chunk in chunks[alg]:
                order = list(impls[alg])
                rng.shuffle(order)
                for name in order:
                    spent[name] += impls[alg][name](chunk)
            for name, elapsed in spent.items():
                seconds[alg][name].append(elapsed)
                rates[alg][name].append(len(ctx.pools[alg]) / elapsed)

    results: dict[str, Any] = {
        "pool_size": {a: len(p) for a, p in ctx.pools.items()},
        "rounds": rounds,
    }
    table: dict[str, Any] = {}
    for alg in ALGORITHMS:
        raw = rates[alg].get("raw", [])
        pyjwt_rates = rates[alg].get("pyjwt", [])
        per_impl = {}
        for name, samples in rates[alg].items():
            per_impl[name] = {
                "label": IMPL_LABELS[name],
                "ops_per_s": summary(samples),
                "us_per_op": summary([1e6 / s for s in samples]),
                "vs_raw": summary(ratios(samples, raw)),
                "vs_pyjwt": summary(ratios(samples, pyjwt_rates)) if pyjwt_rates else None,
            }
        table[alg] = per_impl
    results["by_alg"] = table
    results["skipped"] = skipped
    return results


# -- cache hit, rate limits, introspection -------------------------------------------------


def _timed_loop(ctx: Context, n: int, body: Callable[[], Awaitable[Any]]) -> float:
    async def go() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await body()
        return time.perf_counter() - t0

    return float(ctx.run(go()))


def run_extras(
    ctx: Context, rounds: int, n: int, redis_url: str | None, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Cache hits, rate-limit hits and introspection; each says "not available yet" when missing."""
    out: dict[str, Any] = {}
    token = ctx.pools["RS256"][0]
    tokens = ctx.pools["RS256"]

    # The floor a cache hit is measured against: sha256 of the token + a dict lookup + exp check.
    table = {hashlib.sha256(t.encode()).digest(): (time.time() + 3600, t) for t in tokens[:64]}

    def floor() -> float:
        get, sha, now = table.get, hashlib.sha256, time.time
        t0 = time.perf_counter()
        for _ in range(n):
            hit = get(sha(token.encode()).digest())
            if hit is None or hit[0] <= now():
                raise AssertionError("floor lookup missed")
        return n / (time.perf_counter() - t0)

    samples: dict[str, list[float]] = {"floor": []}
    #: Each runner returns operations per second for one sample.
    runners: dict[str, Callable[[], float]] = {"floor": floor}
    notes: dict[str, str] = {}

    bg = bearerguard_available()
    if bg is not None:
        notes["cache_hit"] = notes["ratelimit"] = notes["introspection"] = (
            "not available yet: " + bg
        )
    else:
        if cache_available():
            holder: dict[str, Any] = {}

            async def make_cached() -> None:
                kwargs = _cache_kwargs(True) or {}
                holder["v"] = await new_validator(ctx.issuer, **kwargs)
                await holder["v"].validate(token)

            ctx.run(make_cached())
            ctx.closers.append(lambda: ctx.run(holder["v"].aclose()))
            validate = holder["v"].validate
            runners["cache_hit"] = lambda: n / _timed_loop(ctx, n, lambda: validate(token))
        else:
            notes["cache_hit"] = "not available yet: TokenValidator has no cache setting yet"

        if importlib.util.find_spec("bearerguard._ratelimit") is not None:
            try:
                runners.update(_ratelimit_runners(ctx, n, redis_url, notes))
            except Exception as exc:
                notes["ratelimit"] = f"failed to set up: {type(exc).__name__}: {exc}"
        else:
            notes["ratelimit"] = "not available yet: bearerguard.ratelimit does not exist"

        if importlib.util.find_spec("bearerguard._introspection") is not None:
            try:
                runners.update(_introspection_runners(ctx, n, notes))
            except Exception as exc:
                notes["introspection"] = f"failed to set up: {type(exc).__name__}: {exc}"
        else:
            notes["introspection"] = "not available yet: bearerguard.introspection does not exist"

    for name in runners:
        samples.setdefault(name, [])
    rng = random.Random(2)
    for r in range(rounds):
        progress(f"in-process extras: round {r + 1}/{rounds}")
        order = list(runners)
        rng.shuffle(order)
        for name in order:
            gc.collect()
            try:
                rate = runners[name]()
            except Exception as exc:
                notes[name] = f"failed during the run: {type(exc).__name__}: {exc}"
                samples[name].append(float("nan"))
                continue
            samples[name].append(rate)
    floor_rates = samples["floor"]
    for name, values in samples.items():
        clean = [v for v in values if v == v]  # a failed sample is NaN, kept for alignment
        out[name] = {
            "ops_per_s": summary(clean),
            "us_per_op": summary([1e6 / v for v in clean]),
            # The same round's floor, for judging a figure on a busy machine.
            "vs_floor": summary([r for r in ratios(values, floor_rates) if r == r]),
        }
    out["notes"] = notes
    out["ops_per_sample"] = n
    return out


def _ratelimit_runners(
    ctx: Context, n: int, redis_url: str | None, notes: dict[str, str]
) -> dict[str, Callable[[], float]]:
    """``RateLimiter.hit`` on validated tokens, rotating over distinct tokens (one budget each)."""
    from bearerguard import RateLimiter

    access_tokens: list[Any] = []

    async def validate_some() -> None:
        validator = await new_validator(ctx.issuer)
        try:
            for t in ctx.pools["RS256"][:500]:
                access_tokens.append(await validator.validate(t))
        finally:
            await validator.aclose()

    ctx.run(validate_some())
    runners: dict[str, Callable[[], float]] = {}
    # (name, storage, strategy, yield to the loop after each hit). A server yields between
    # requests, which lets the storage's background work run; a tight loop hides it.
    configs: list[tuple[str, str, str, bool]] = [
        ("ratelimit_memory_moving", "memory://", "moving-window", False),
        ("ratelimit_memory_moving_yielding", "memory://", "moving-window", True),
        ("ratelimit_memory_fixed", "memory://", "fixed-window", False),
        ("ratelimit_memory_fixed_yielding", "memory://", "fixed-window", True),
    ]
    if redis_url:
        configs.append(("ratelimit_redis_moving", redis_url, "moving-window", False))
    else:
        notes["ratelimit_redis_moving"] = "no redis-server available"
    count = len(access_tokens)
    for name, storage, strategy, yielding in configs:
        limiter = RateLimiter("1000000/minute", storage=storage, strategy=strategy)  # type: ignore[arg-type]
        ctx.closers.append(lambda limiter=limiter: ctx.run(limiter.aclose()))
        # Redis round trips are slow: fewer operations per sample keep the run short.
        ops = max(200, n // 5) if "redis" not in name else max(200, n // 20)

        def make(
            limiter: Any = limiter, ops: int = ops, yielding: bool = yielding
        ) -> Callable[[], float]:
            state = {"i": 0}

            async def body() -> Any:
                i = state["i"] = (state["i"] + 1) % count
                decision = await limiter.hit(access_tokens[i])
                if yielding:
                    await asyncio.sleep(0)
                return decision

            return lambda: ops / _timed_loop(ctx, ops, body)

        runners[name] = make()

    async def just_yield() -> None:
        await asyncio.sleep(0)

    loop_ops = max(200, n // 5)
    runners["loop_yield"] = lambda: loop_ops / _timed_loop(ctx, loop_ops, just_yield)
    return runners


def _introspection_runners(
    ctx: Context, n: int, notes: dict[str, str]
) -> dict[str, Callable[[], float]]:
    """Opaque tokens through a loopback introspection server (uvicorn, keep-alive, core 1).

    Cold: a fresh validator with the cache off per sample and distinct opaque
    tokens, so every validation is one introspection round trip; hit: one opaque
    token again and again with the cache on.
    """
    import secrets

    from bearerguard import Issuer, TokenValidator
    from benchmarks.services import Uvicorn

    server = Uvicorn(
        {
            "BENCH_APP": "introspection",
            "BENCH_ISSUER": ctx.issuer.issuer,
            "BENCH_AUDIENCE": ctx.issuer.audience,
        },
        cpus="1",
    )
    ctx.closers.append(server.close)
    config = Issuer(
        issuer=ctx.issuer.issuer,
        audience=ctx.issuer.audience,
        jwks_uri=ctx.issuer.jwks_uri,
        discovery=False,
        introspection_endpoint=f"http://127.0.0.1:{server.port}/introspect",
        client_id="bench-rs",
        client_secret="bench-rs-secret",
        opaque="introspect",
    )
    cold_ops = max(100, n // 200)
    off = _cache_kwargs(False) or {}

    def cold() -> float:
        tokens = [secrets.token_urlsafe(32) for _ in range(cold_ops)]

        async def go() -> float:
            validator = TokenValidator([config], **off)
            try:
                await validator.validate(secrets.token_urlsafe(32))  # connection pool warm
                t0 = time.perf_counter()
                for token in tokens:
                    await validator.validate(token)
                return cold_ops / (time.perf_counter() - t0)
            finally:
                await validator.aclose()

        return float(ctx.run(go()))

    holder: dict[str, Any] = {}
    opaque = secrets.token_urlsafe(32)

    async def make_hit() -> None:
        holder["v"] = TokenValidator([config], **(_cache_kwargs(True) or {}))
        ctx.closers.append(lambda: ctx.run(holder["v"].aclose()))
        await holder["v"].validate(opaque)

    ctx.run(make_hit())
    validate = holder["v"].validate
    notes["introspection"] = (
        f"loopback uvicorn introspection server on core 1 (keep-alive); cold: {cold_ops} "
        "distinct opaque tokens per sample, cache off"
    )
    return {
        "introspection_cold": cold,
        "introspection_hit": lambda: n / _timed_loop(ctx, n, lambda: validate(opaque)),
    }
