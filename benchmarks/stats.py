"""Summaries of repeated samples: medians with their spread, and per-round ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of one measurement's rounds, with the raw samples kept."""
    if not samples:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": list(samples),
    }


def ratios(values: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per-round ratios: each value divided by the baseline measured in the same round."""
    return [v / b for v, b in zip(values, baseline, strict=False) if b]


def fmt_rate(value: float | None) -> str:
    """Operations per second, readable (12.3k/s, 1.05M/s)."""
    if value is None:
        return "n/a"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M/s"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k/s"
    return f"{value:.0f}/s"


def fmt_pct(s: dict[str, Any] | None) -> str:
    """A ratio summary as ``54 % (51..57)``."""
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median'] * 100:.0f} % ({s['min'] * 100:.0f}..{s['max'] * 100:.0f})"


def fmt_spread(s: dict[str, Any] | None, unit: str = "rate") -> str:
    """A summary as ``median (min..max)`` in the given unit."""
    if not s or s.get("median") is None:
        return "n/a"
    if unit == "rate":
        return f"{fmt_rate(s['median'])} ({fmt_rate(s['min'])}..{fmt_rate(s['max'])})"
    if unit == "ms":
        return f"{s['median']:.2f} ms ({s['min']:.2f}..{s['max']:.2f})"
    if unit == "us":
        return f"{s['median']:.1f} µs ({s['min']:.1f}..{s['max']:.1f})"
    return f"{s['median']:.3g} ({s['min']:.3g}..{s['max']:.3g})"
