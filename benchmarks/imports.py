"""What an application's import of bearerguard costs (``python -X importtime``), and loads.

``import bearerguard`` alone loads nothing (its names are imported on first use),
so the row measures both the bare import and what every application does: the
package and the middleware (``from bearerguard import BearerAuthMiddleware``); the
verdict: no optional module such as ``limits`` or ``redis`` loads before the
configuration asks for it. Measured in fresh interpreters (median of several), so
nothing an earlier import left in ``sys.modules`` hides a cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from benchmarks.services import child_pythonpath
from benchmarks.stats import summary

#: Modules a configuration may not need; loading them on a bare import is the finding.
OPTIONAL = ("limits", "redis", "fastapi", "hiredis", "prometheus_client", "opentelemetry")
#: Modules every configuration needs (reported, not judged).
CORE = ("starlette", "httpx", "jwt", "cryptography")

_CHILD = """
import json, sys
before = set(sys.modules)
STATEMENT
print("BENCHJSON " + json.dumps(sorted(set(sys.modules) - before)))
"""

#: What is measured: the bare import, and what an application writes to use the middleware.
STATEMENTS = ("import bearerguard", "from bearerguard import BearerAuthMiddleware")


def _one(statement: str) -> tuple[float, dict[str, int], list[str]]:
    """Total import time (µs, sum of self times), own µs per top-level package, modules loaded."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _CHILD.replace("STATEMENT", statement)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": child_pythonpath()},
    )
    total = 0
    packages: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line[12:].split("|"))
        total += int(self_us)
        # Own time summed per top-level package, whoever imported it: where the time goes.
        top = name.split(".")[0]
        packages[top] = packages.get(top, 0) + int(self_us)
    loaded: list[str] = []
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            loaded = json.loads(line[len("BENCHJSON ") :])
    return float(total), packages, loaded


def measure(runs: int = 5) -> dict[str, Any]:
    """Each statement of :data:`STATEMENTS` in fresh interpreters; the verdict reads the last."""
    out: dict[str, Any] = {"statements": {}}
    for statement in STATEMENTS:
        out["statements"][statement] = _measure(statement, runs)
    out.update(out["statements"][STATEMENTS[-1]])
    out["statement"] = STATEMENTS[-1]
    return out


def _measure(statement: str, runs: int) -> dict[str, Any]:
    """Median total import time over ``runs`` fresh interpreters, the heavy packages."""
    totals: list[float] = []
    per_package: dict[str, list[int]] = {}
    loaded: list[str] = []
    for _ in range(runs):
        total, packages, loaded = _one(statement)
        totals.append(total / 1000)
        for name, us in packages.items():
            per_package.setdefault(name, []).append(us)
    tops = {name.split(".")[0] for name in loaded}
    heavy = sorted(
        ((name, sorted(v)[len(v) // 2] / 1000) for name, v in per_package.items()),
        key=lambda item: -item[1],
    )[:8]
    return {
        "total_ms": summary(totals),
        "heaviest_ms": {name: round(ms, 1) for name, ms in heavy},
        "modules_loaded": len(loaded),
        "optional_loaded": [name for name in OPTIONAL if name in tops],
        "core_loaded": [name for name in CORE if name in tops],
    }
