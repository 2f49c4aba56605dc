"""Child process for the RSS measurement: validate N distinct invalid tokens, report memory.

Run by :func:`benchmarks.scale.rss` in a fresh interpreter so nothing else the
suite allocated counts. Tokens are made by changing the ``jti`` of one valid
token without re-signing it: distinct, well-formed, with a signature that fails.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import resource
import sys
import time
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


async def main(issuer: str, audience: str, jwks_uri: str, template: str, n: int) -> dict[str, Any]:
    from bearerguard.config import Issuer
    from bearerguard.errors import AuthError
    from bearerguard.validator import TokenValidator

    head, payload, signature = template.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
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
        gc.callbacks.append(on_gc)
        checkpoints = [{"tokens": 0, "vmrss_mib": round(vmrss_kib() / 1024, 1), "seconds": 0.0}]
        every = max(1, n // 10)
        outcomes: dict[str, int] = {}
        t0 = time.perf_counter()
        for i in range(n):
            claims["jti"] = f"bench-{i}"
            token = f"{head}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}.{signature}"
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
            "seconds": round(time.perf_counter() - t0, 1),
        }
    finally:
        await validator.aclose()


if __name__ == "__main__":
    iss, aud, uri, tpl, count = sys.argv[1:6]
    result = asyncio.run(main(iss, aud, uri, tpl, int(count)))
    print("BENCHJSON " + json.dumps(result))
