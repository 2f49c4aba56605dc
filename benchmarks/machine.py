"""What the numbers were measured on: absolute figures are meaningless without it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

_PACKAGES = (
    "bearerguard", "cryptography", "PyJWT", "Authlib", "joserfc", "starlette", "fastapi",
    "uvicorn", "uvloop", "httptools", "limits", "redis", "coredis", "httpx",
)  # fmt: skip


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _tool_version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def load() -> list[float] | None:
    """The 1/5/15-minute load averages: a busy shared machine shows here first."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def revision() -> str | None:
    """The commit measured, with ``+dirty`` when src/ has uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def describe() -> dict[str, Any]:
    """Platform, CPU model, core count, Python, and the versions of everything compared."""
    return {
        "revision": revision(),
        "load_at_start": load(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": versions(),
        "wrk": _tool_version(["wrk", "--version"]),
        "redis_server": _tool_version(["redis-server", "--version"]),
    }


def label(info: dict[str, Any]) -> str:
    """One line for the top of a table."""
    return (
        f"{info['cpu_model']} ({info['cpus']} cores), {info['platform']}, "
        f"{info['python_implementation']} {info['python']}"
    )


def load_note(info: dict[str, Any]) -> str:
    """The load averages at start and end, for the reader to judge how noisy the run was."""
    start, end = info.get("load_at_start"), info.get("load_at_end")
    if not start:
        return ""
    text = f"Load average (1/5/15 min) at start {start}"
    return text + (f", at end {end}" if end else "") + f" on {info['cpus']} cores."
