"""Dependencies point down: what reads the validator reads its small read-only surface."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bearerguard"
#: The validator's internals: its per-issuer state and what that state holds.
INTERNALS = {"issuers", "jwks", "introspector", "metadata", "rules", "cache", "_issuer_for"}


@pytest.mark.parametrize(
    "module", ["_observability.py", "metrics.py", "openapi.py", "_from_app.py"]
)
def test_readers_of_the_validator_use_its_read_only_surface(module: str) -> None:
    tree = ast.parse((SRC / module).read_text())
    reached = sorted(
        f"validator.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute | ast.Name)
        and (getattr(node.value, "attr", None) or getattr(node.value, "id", None)) == "validator"
        and (node.attr in INTERNALS or node.attr.startswith("_"))
    )
    assert reached == []
