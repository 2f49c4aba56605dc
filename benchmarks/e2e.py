"""In-process end to end: one ASGI request at a time, plain Starlette beside the middleware.

The HTTP rows include uvicorn, the kernel and wrk, which hide what the middleware
itself costs per request. Here the same Starlette app answers ``GET /items`` with
and without ``BearerAuthMiddleware`` in front, driven by a minimal ASGI server
loop (one scope dict, one ``receive``, one ``send`` per request), so the
difference between two rows is the middleware's own cost. Every variant takes its
turn on each chunk in a shuffled order, and every ratio is taken against the plain
app measured in the same round.

The figures are CPU time of the benchmark's thread (``time.thread_time``): on a
machine shared by several developers, wall time counts whoever else got the core
while a chunk ran, and the spreads swamped differences of 10 %. Rows that wait on
another process (Redis) are wall time, against the plain app's wall time.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from typing import Any

from benchmarks.inprocess import CHUNK, Context, _b64decode, raw_verifier
from benchmarks.stats import summary

#: Requests per sample for the one-token variants (cache hits).
HIT_REQUESTS = 2_000

LABELS = {
    "plain": "plain Starlette app, GET /items (the baseline)",
    "hit": "middleware + same app, cache hit (one token)",
    "hit_rl_memory": "middleware, cache hit + memory rate limit (moving window)",
    "hit_rl_redis": "middleware, cache hit + Redis rate limit (moving window)",
    "hit_sharing_memory": "middleware, cache hit + token_sharing (memory)",
    "hit_sharing_redis": "middleware, cache hit + token_sharing (Redis, one script call)",
    "hit_rl_sharing_redis": (
        "middleware, cache hit + Redis rate limit + token_sharing (one pipeline)"
    ),
    "hit_mtls": "middleware, cache hit, certificate-bound token (cert in a trusted proxy's header)",
    "cold_off": "middleware, distinct RS256 tokens, cache off",
    "cold_on": "middleware, distinct RS256 tokens, cache on (every token a miss, stored)",
}

#: Rows measured in wall time: they wait on another process, which CPU time would not count.
WALL_CLOCK = frozenset({"hit_rl_redis", "hit_sharing_redis", "hit_rl_sharing_redis"})

#: A driver times its requests: (wall seconds, CPU seconds of this thread).
Driver = Callable[[list[str]], tuple[float, float]]


def _scope_template(token: str, extra: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    """What uvicorn hands an app for ``GET /items`` with a bearer token (wrk's headers)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": "/items",
        "raw_path": b"/items",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", b"Bearer " + token.encode("ascii")),
            *(extra or ()),
        ],
        "state": {},
    }


def _plain_app() -> Any:
    from benchmarks.apps import plain_app

    return plain_app()


def scope_timer(ctx: Context, app: Any) -> Callable[[list[dict[str, Any]]], tuple[float, float]]:
    """(wall, CPU) seconds for one request per scope, in order; every answer must be a 200."""
    request = {"type": "http.request", "body": b"", "more_body": False}
    refused: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            refused.append(message["status"])

    def run(scopes: list[dict[str, Any]]) -> tuple[float, float]:
        async def go() -> tuple[float, float]:
            w0, c0 = time.perf_counter(), time.thread_time()
            for template in scopes:
                # A fresh scope per request, as a server builds one; the headers list is shared.
                await app({**template, "state": {}}, receive, send)
            return time.perf_counter() - w0, time.thread_time() - c0

        elapsed: tuple[float, float] = ctx.run(go())
        if refused:
            statuses = sorted(set(refused))
            refused.clear()
            raise RuntimeError(f"the app answered {statuses} instead of 200")
        return elapsed

    return run


def driver(ctx: Context, app: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Driver:
    """Time ``len(tokens)`` requests through ``app``, one after another; all must be 200.

    ``headers`` go on every request after the Authorization header.
    """
    timed = scope_timer(ctx, app)
    templates: dict[str, dict[str, Any]] = {}

    def run(tokens: list[str]) -> tuple[float, float]:
        scopes = []
        for token in tokens:
            template = templates.get(token)
            if template is None:
                template = templates[token] = _scope_template(token, headers)
            scopes.append(template)
        return timed(scopes)

    return run


def _middleware(ctx: Context, **kwargs: Any) -> Any:
    from bearerguard import BearerAuthMiddleware

    issuer = ctx.issuer
    mw = BearerAuthMiddleware(
        _plain_app(),
        issuer=issuer.issuer,
        audience=issuer.audience,
        jwks_uri=issuer.jwks_uri,
        **kwargs,
    )

    async def warm() -> None:
        mw.validator.start()
        mw._started = True
        for state in mw.validator.issuers.values():
            await state.jwks.prefetch()

    ctx.run(warm())
    ctx.closers.append(lambda: ctx.run(mw.aclose()))
    return mw


def run_e2e(
    ctx: Context,
    rounds: int,
    redis_url: str | None,
    progress: Callable[[str], None],
    hit_requests: int = HIT_REQUESTS,
) -> dict[str, Any]:
    """Per-request cost of plain Starlette and the middleware variants, same rounds."""
    pool = ctx.pools["RS256"]
    token = pool[0]
    notes: dict[str, str] = {}
    drivers: dict[str, Driver] = {"plain": driver(ctx, _plain_app())}
    hit_app = _middleware(ctx)
    drivers["hit"] = driver(ctx, hit_app)
    drivers["hit_rl_memory"] = driver(ctx, _middleware(ctx, rate_limit="1000000/second"))
    if redis_url:
        drivers["hit_rl_redis"] = driver(
            ctx,
            _middleware(ctx, rate_limit="1000000/second", rate_limit_storage=redis_url),
        )
    else:
        notes["hit_rl_redis"] = "not measured: no redis-server"
    from bearerguard import TokenSharing

    # Stolen-token detection on, never tripping: what watching costs every request.
    watch = TokenSharing(max_networks=1_000)
    drivers["hit_sharing_memory"] = driver(ctx, _middleware(ctx, token_sharing=watch))
    if redis_url:
        drivers["hit_sharing_redis"] = driver(
            ctx, _middleware(ctx, token_sharing=watch, rate_limit_storage=redis_url)
        )
        # Both on one Redis: the sighting rides in the rate-limit hit's pipeline.
        drivers["hit_rl_sharing_redis"] = driver(
            ctx,
            _middleware(
                ctx,
                token_sharing=watch,
                rate_limit="1000000/second",
                rate_limit_storage=redis_url,
            ),
        )
    else:
        notes["hit_sharing_redis"] = "not measured: no redis-server"
        notes["hit_rl_sharing_redis"] = "not measured: no redis-server"
    # A certificate-bound token (RFC 8705) whose certificate a TLS-terminating proxy
    # forwards (RFC 9440): the cache hit plus what proving the binding costs.
    from bearerguard.testing import make_certificate

    certificate = make_certificate("bench-client")
    bound = ctx.issuer.mint(cnf=certificate.confirmation)
    mtls_run = driver(
        ctx,
        _middleware(ctx, client_cert_header="client-cert", trusted_proxies=["127.0.0.1"]),
        headers=[(b"client-cert", certificate.header_value().encode("ascii"))],
    )
    drivers["hit_mtls"] = lambda tokens: mtls_run([bound] * len(tokens))
    cold_off = _middleware(ctx, cache_size=0)
    drivers["cold_off"] = driver(ctx, cold_off)
    cold_on = _middleware(ctx)
    cold_on_run = driver(ctx, cold_on)

    def cold_on_driver(tokens: list[str]) -> tuple[float, float]:
        cold_on.validator.cache.clear()  # untimed: every token of the chunk is a miss
        return cold_on_run(tokens)

    drivers["cold_on"] = cold_on_driver
    verify, convert = raw_verifier("RS256", ctx.issuer.public_key("RS256"))
    signed = []
    for t in pool:
        head, payload, sig = t.split(".")
        signed.append((f"{head}.{payload}".encode("ascii"), convert(_b64decode(sig))))

    def raw(chunk: list[tuple[bytes, bytes]]) -> float:
        t0 = time.thread_time()
        for si, sig in chunk:
            verify(si, sig)
        return time.thread_time() - t0

    # Warm every path once (code, keys, the first cache entry) before timing.
    for name, run in drivers.items():
        run([token] if name.startswith("hit") or name == "plain" else pool[:4])

    per_request: dict[str, list[float]] = {name: [] for name in drivers}
    wall_per_request: dict[str, list[float]] = {name: [] for name in drivers}
    raw_us: list[float] = []
    rng = random.Random(5)
    cold_chunks = [pool[i : i + CHUNK] for i in range(0, len(pool), CHUNK)]
    signed_chunks = [signed[i : i + CHUNK] for i in range(0, len(signed), CHUNK)]
    hit_chunk = [token] * CHUNK
    hit_chunks = max(1, hit_requests // CHUNK)
    for r in range(rounds):
        progress(f"in-process end to end: round {r + 1}/{rounds}")
        gc.collect()
        spent = dict.fromkeys(drivers, 0.0)
        walled = dict.fromkeys(drivers, 0.0)
        counts = dict.fromkeys(drivers, 0)
        raw_spent = 0.0
        steps = max(hit_chunks, len(cold_chunks))
        for i in range(steps):
            order = [*drivers, "raw"]
            rng.shuffle(order)
            for name in order:
                if name == "raw":
                    if i < len(signed_chunks):
                        raw_spent += raw(signed_chunks[i])
                    continue
                cold = name.startswith("cold")
                if cold and i >= len(cold_chunks):
                    continue
                if not cold and i >= hit_chunks:
                    continue
                chunk = cold_chunks[i] if cold else hit_chunk
                wall, cpu = drivers[name](chunk)
                spent[name] += cpu
                walled[name] += wall
                counts[name] += len(chunk)
        for name in drivers:
            per_request[name].append(spent[name] / counts[name] * 1e6)
            wall_per_request[name].append(walled[name] / counts[name] * 1e6)
        raw_us.append(raw_spent / len(signed) * 1e6)

    rows: dict[str, Any] = {}
    for name in drivers:
        series = wall_per_request if name in WALL_CLOCK else per_request
        samples, plain = series[name], series["plain"]
        extra = [s - p for s, p in zip(samples, plain, strict=True)]
        rows[name] = {
            "label": LABELS[name],
            "clock": "wall" if name in WALL_CLOCK else "cpu",
            "wall_us_per_request": summary(wall_per_request[name]),
            "us_per_request": summary(samples),
            "extra_us": summary(extra),
            "extra_vs_plain": summary([e / p for e, p in zip(extra, plain, strict=True)]),
        }
        if name.startswith("cold"):
            # Raw verify over the middleware's extra cost: 0.5x means the middleware adds
            # at most twice the signature check (the validator alone is about 1.8x).
            rows[name]["raw_vs_extra"] = summary(
                [v / e for v, e in zip(raw_us, extra, strict=True) if e > 0]
            )
    return {
        "rounds": rounds,
        "hit_requests_per_sample": hit_chunks * CHUNK,
        "cold_tokens_per_sample": len(pool),
        "raw_verify_us": summary(raw_us),
        "rows": rows,
        "notes": notes,
    }
