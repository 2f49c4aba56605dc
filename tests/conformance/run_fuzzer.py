"""``make fuzz``: atheris with bearerguard instrumented for coverage, over ``fuzz_target``.

Arguments are libFuzzer's (``-max_total_time=60 -artifact_prefix=.fuzz/ corpus/``).
Imported inside ``instrument_imports`` so every bearerguard module reports the
branches an input reached, which is what guides the mutations.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["bearerguard"]):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fuzz_target import one_input  # type: ignore[import-not-found]

if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
