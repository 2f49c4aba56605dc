"""Every input the fuzzer ever crashed on, and every seed it starts from, replays cleanly.

``one_input`` is the fuzz target itself (see ``fuzz_target``): it fails on any
exception that is not a refusal, any 5xx, and any internal error the validator
caught and logged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .fuzz_target import TARGETS, one_input

HERE = Path(__file__).parent
SEEDS = sorted((HERE / "fuzz_seeds").iterdir())
CRASHES = sorted(p for p in (HERE / "fuzz_crashes").iterdir() if p.suffix != ".md")


@pytest.mark.parametrize("path", SEEDS + CRASHES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fuzz_input_replays_without_a_crash(path: Path) -> None:
    one_input(path.read_bytes())


def test_the_seeds_start_every_target() -> None:
    assert {p.read_bytes()[0] % len(TARGETS) for p in SEEDS} == set(range(len(TARGETS)))
