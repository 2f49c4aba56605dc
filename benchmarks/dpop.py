"""DPoP (RFC 9449): what a DPoP-bound request costs beside a plain bearer cache hit.

A DPoP request cannot be a pure cache hit: its proof is new every time (a fresh
``jti``, signed by the client), so the middleware verifies one signature, checks
the proof's claims and spends its ``jti`` in the replay store on every request,
while the token itself is still served from the validation cache. This scenario
measures exactly that, in process, like ``e2e``: the same Starlette app behind
the middleware, answering

* ``bearer_hit``: ``Authorization: Bearer`` with one token (the baseline: a cache hit),
* ``dpop_es256`` / ``dpop_eddsa``: ``Authorization: DPoP`` with one bound token and a
  distinct proof per request (memory replay store),

and, as the floor a proof cannot go below, the raw ``cryptography`` verify of the
same proofs. With a redis-server, ``dpop_es256_redis`` spends each ``jti`` in Redis
(what replicas do); it waits on another process, so it is wall time against the
bearer hit's wall time. Proofs are signed before the timed loop (a client's cost, not the
server's). Every variant takes its turn on each chunk in a shuffled order; ratios
are taken against the bearer hit of the same round; times are CPU time of the
benchmark's thread.

Run alone: ``python -m benchmarks.dpop [--rounds 7] [--requests 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.e2e import _middleware, _plain_app, _scope_template, scope_timer
from benchmarks.inprocess import CHUNK, Context, _b64decode, raw_verifier
from benchmarks.stats import summary

#: The URL the proofs are made for: what the e2e scope template's Host and path say.
URL = "http://127.0.0.1:8000/items"
#: Requests per sample per variant.
REQUESTS = 2_000

LABELS = {
    "plain": "plain Starlette app, GET /items",
    "bearer_hit": "middleware, Bearer token, cache hit (the baseline)",
    "dpop_es256": "middleware, DPoP-bound token (cache hit) + fresh ES256 proof",
    "dpop_eddsa": "middleware, DPoP-bound token (cache hit) + fresh EdDSA proof",
    "dpop_es256_redis": "middleware, DPoP-bound token + fresh ES256 proof, jti in Redis",
}
#: Proof key algorithm of each DPoP row.
ROW_ALGS = {"dpop_es256": "ES256", "dpop_eddsa": "EdDSA"}
#: Rows that wait on Redis: timed and compared in wall time.
WALL_CLOCK = frozenset({"dpop_es256_redis"})


def _dpop_scope(token: str, proof: str) -> dict[str, Any]:
    scope = _scope_template(token)
    scope["headers"] = [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", b"DPoP " + token.encode("ascii")),
        (b"dpop", proof.encode("ascii")),
    ]
    return scope


def run_dpop(
    ctx: Context,
    rounds: int,
    progress: Callable[[str], None],
    requests: int = REQUESTS,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Per-request cost of a DPoP-bound request against a bearer cache hit, same rounds."""
    from bearerguard.testing import DPoPKey

    issuer = ctx.issuer
    bearer_token = issuer.mint("RS256")
    row_algs = dict(ROW_ALGS)
    notes: dict[str, str] = {}
    if redis_url:
        row_algs["dpop_es256_redis"] = "ES256"
    else:
        notes["dpop_es256_redis"] = "not measured: no redis-server"
    keys = {row: DPoPKey(alg) for row, alg in row_algs.items()}
    bound = {row: issuer.mint("RS256", cnf={"jkt": key.thumbprint}) for row, key in keys.items()}
    timers = {
        "plain": scope_timer(ctx, _plain_app()),
        "bearer_hit": scope_timer(ctx, _middleware(ctx)),
        **{row: scope_timer(ctx, _middleware(ctx)) for row in ROW_ALGS},
    }
    if redis_url:
        redis_app = _middleware(ctx, dpop_replay_storage=redis_url)
        timers["dpop_es256_redis"] = scope_timer(ctx, redis_app)
    chunks = max(1, requests // CHUNK)
    bearer_chunk = [_scope_template(bearer_token)] * CHUNK

    def proofs(row: str, n: int) -> list[str]:
        key, token = keys[row], bound[row]
        return [key.proof("GET", URL, token=token) for _ in range(n)]

    raw = {row: raw_verifier(alg, keys[row].private.public_key()) for row, alg in row_algs.items()}

    def raw_cost(row: str, chunk: list[str]) -> float:
        verify, convert = raw[row]
        signed = []
        for proof in chunk:
            head, payload, sig = proof.split(".")
            signed.append((f"{head}.{payload}".encode("ascii"), convert(_b64decode(sig))))
        c0 = time.thread_time()
        for signing_input, signature in signed:
            verify(signing_input, signature)
        return time.thread_time() - c0

    # Warm every path (code, keys, the cached tokens, the proof-header cache) untimed.
    timers["plain"](bearer_chunk[:4])
    timers["bearer_hit"](bearer_chunk[:4])
    for row in row_algs:
        timers[row]([_dpop_scope(bound[row], p) for p in proofs(row, 4)])

    raw_names = [f"raw_{row}" for row in ROW_ALGS]
    cpu: dict[str, list[float]] = {name: [] for name in [*timers, *raw_names]}
    wall: dict[str, list[float]] = {name: [] for name in timers}
    rng = random.Random(9449)
    for r in range(rounds):
        progress(f"dpop: round {r + 1}/{rounds} (signing {chunks * CHUNK} proofs per key)")
        # Fresh proofs each round, made now: their iat is within the window and every jti is new.
        pending = {row: proofs(row, chunks * CHUNK) for row in row_algs}
        gc.collect()
        spent = dict.fromkeys(cpu, 0.0)
        waited = dict.fromkeys(wall, 0.0)
        for i in range(chunks):
            order = [*timers, *raw_names]
            rng.shuffle(order)
            for name in order:
                if name in raw_names:
                    row = name[4:]
                    spent[name] += raw_cost(row, pending[row][i * CHUNK : (i + 1) * CHUNK])
                    continue
                if name in row_algs:
                    chunk = pending[name][i * CHUNK : (i + 1) * CHUNK]
                    scopes = [_dpop_scope(bound[name], p) for p in chunk]
                else:
                    scopes = bearer_chunk
                w, c = timers[name](scopes)
                spent[name] += c
                waited[name] += w
        for name in cpu:
            cpu[name].append(spent[name] / (chunks * CHUNK) * 1e6)
        for name in wall:
            wall[name].append(waited[name] / (chunks * CHUNK) * 1e6)

    rows: dict[str, Any] = {}
    for name in timers:
        series = wall if name in WALL_CLOCK else cpu
        samples, base = series[name], series["bearer_hit"]
        rows[name] = {
            "label": LABELS[name],
            "clock": "wall" if name in WALL_CLOCK else "cpu",
            "us_per_request": summary(samples),
            "vs_bearer_hit": summary([s / b for s, b in zip(samples, base, strict=True)]),
            "extra_over_bearer_hit_us": summary(
                [s - b for s, b in zip(samples, base, strict=True)]
            ),
        }
        if name in ROW_ALGS:
            floor = cpu[f"raw_{name}"]
            rows[name]["raw_verify_us"] = summary(floor)
            # What the proof check adds beyond its one signature verify (claims, replay, parse).
            rows[name]["extra_over_bearer_and_verify_us"] = summary(
                [s - b - f for s, b, f in zip(samples, base, floor, strict=True)]
            )
    return {
        "rounds": rounds,
        "requests_per_sample": chunks * CHUNK,
        "rows": rows,
        "notes": notes,
    }


def render(result: dict[str, Any]) -> str:
    """The scenario as a Markdown table (medians, with the spread over rounds)."""

    def fmt(stat: dict[str, Any], unit: str = "") -> str:
        return f"{stat['median']:.2f}{unit} ({stat['min']:.2f}-{stat['max']:.2f})"

    lines = [
        f"## DPoP-bound requests ({result['rounds']} rounds, "
        f"{result['requests_per_sample']:,} requests per sample, CPU time)",
        "",
        "| request | us/request | x bearer hit | raw proof verify us"
        " | extra beyond hit + verify us |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"].values():
        raw = row.get("raw_verify_us")
        extra = row.get("extra_over_bearer_and_verify_us")
        wall = " (wall, against the hit's wall time)" if row.get("clock") == "wall" else ""
        lines.append(
            f"| {row['label']}{wall} | {fmt(row['us_per_request'])} "
            f"| {fmt(row['vs_bearer_hit'], 'x')} "
            f"| {fmt(raw) if raw else '-'} | {fmt(extra) if extra else '-'} |"
        )
    for name, why in result.get("notes", {}).items():
        lines.append(f"\n- {name}: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dpop", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--redis", default=None, help="a redis:// URL for the Redis row")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    parser.add_argument(
        "--markdown", default=None, help="also write the table (with machine and load) here"
    )
    args = parser.parse_args(argv)
    from benchmarks.machine import describe, label, load, load_note
    from benchmarks.tokens import BenchIssuer

    machine = describe()

    def progress(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    issuer = BenchIssuer(("RS256",))
    loop = asyncio.new_event_loop()
    ctx = Context(issuer, loop, {})
    try:
        result = run_dpop(ctx, args.rounds, progress, args.requests, redis_url=args.redis)
    finally:
        ctx.close()
        loop.close()
        issuer.close()
    machine["load_at_end"] = load()
    result["machine"] = machine
    table = render(result)
    print(table)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    if args.markdown:
        command = "python -m benchmarks.dpop " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        with open(args.markdown, "w") as out:
            out.write(
                f"{table}\n\nMeasured at {machine['revision']} on {label(machine)}. "
                f"{load_note(machine)}\nReproduce: `{command.strip()}`.\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
