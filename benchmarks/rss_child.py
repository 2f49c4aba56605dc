"""Child process for memory and GC figures: validate many distinct tokens, report RSS and pauses.

Run by :mod:`benchmarks.scale` in a fresh interpreter so nothing else the suite
allocated counts. ``invalid``: tokens made by changing the ``jti`` of one valid
token without re-signing it (distinct, well-formed, a signature that fails), so
the refusal cache is what grows. ``valid``: a file of distinct valid tokens, so
the cache fills with accepted entries, whose full-GC pauses are the tail risk.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import resource
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any


def status_kib(field: str = "VmRSS") -> int:
    """A memory figure of this process from /proc (VmRSS now, VmHWM the peak since exec)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def vmrss_kib() -> int:
    return status_kib("VmRSS")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def invalid_tokens(template: str, n: int) -> Iterator[str]:
    """``n`` distinct tokens: ``template`` with a new ``jti`` each, the signature left as is."""
    head, payload, signature = template.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for i in range(n):
        claims["jti"] = f"bench-{i}"
        yield f"{head}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}.{signature}"


def file_tokens(path: str) -> list[str]:
    """Distinct valid tokens, one a line (the HTTP cold stream's file)."""
    with open(path, encoding="ascii") as f:
        return [line.strip() for line in f if line.strip()]


async def main(
    issuer: str, audience: str, jwks_uri: str, tokens: Iterable[str], n: int
) -> dict[str, Any]:
    from bearerguard import AuthError, Issuer, TokenValidator

    pauses: list[float] = []
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started["t"] = time.perf_counter()
        elif "t" in started:
            pauses.append(time.perf_counter() - started.pop("t"))

    validator = TokenValidator(
        [Issuer(issuer=issuer, audience=audience, jwks_uri=jwks_uri, discovery=False)]
    )
    try:
        for state in validator.issuers.values():
            await state.jwks.prefetch()
        gc.collect()
        t_full = time.perf_counter()
        gc.collect()
        forced_before = time.perf_counter() - t_full
        tracked_before = len(gc.get_objects())
        gc.callbacks.append(on_gc)
        checkpoints = [{"tokens": 0, "vmrss_mib": round(vmrss_kib() / 1024, 1), "seconds": 0.0}]
        every = max(1, n // 10)
        outcomes: dict[str, int] = {}
        t0 = time.perf_counter()
        for i, token in enumerate(tokens):
            try:
                await validator.validate(token)
                outcomes["accepted"] = outcomes.get("accepted", 0) + 1
            except AuthError as exc:
                outcomes[exc.reason] = outcomes.get(exc.reason, 0) + 1
            if (i + 1) % every == 0:
                checkpoints.append(
                    {
                        "tokens": i + 1,
                        "vmrss_mib": round(vmrss_kib() / 1024, 1),
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
        gc.callbacks.remove(on_gc)
        # What one full collection costs now (a gen 2 pause), against the same before the run.
        t_full = time.perf_counter()
        gc.collect()
        forced_after = time.perf_counter() - t_full
        cache = getattr(validator, "cache", None) or getattr(validator, "_cache", None)
        return {
            "tokens": n,
            "outcomes": outcomes,
            # VmHWM is this process's own peak; ru_maxrss on Linux survives execve and may
            # still hold the parent's peak, so it is kept only for reference.
            "peak_rss_mib": round(status_kib("VmHWM") / 1024, 1),
            "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "checkpoints": checkpoints,
            "cache_entries_at_end": len(cache)
            if cache is not None and hasattr(cache, "__len__")
            else None,
            "gen2_collections": len(pauses),
            "gen2_pause_max_ms": round(max(pauses) * 1000, 2) if pauses else None,
            "gen2_pause_total_ms": round(sum(pauses) * 1000, 2),
            "forced_full_gc_ms_before": round(forced_before * 1000, 2),
            "forced_full_gc_ms_after": round(forced_after * 1000, 2),
            "gc_tracked_objects_before": tracked_before,
            "gc_tracked_objects_after": len(gc.get_objects()),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    finally:
        await validator.aclose()


if __name__ == "__main__":
    # invalid ISSUER AUDIENCE JWKS_URI TEMPLATE N   |   valid ISSUER AUDIENCE JWKS_URI FILE
    mode, iss, aud, uri, arg = sys.argv[1:6]
    if mode == "invalid":
        count = int(sys.argv[6])
        source: Iterable[str] = invalid_tokens(arg, count)
    else:
        valid = file_tokens(arg)
        source, count = valid, len(valid)
    result = asyncio.run(main(iss, aud, uri, source, count))
    print("BENCHJSON " + json.dumps(result))
