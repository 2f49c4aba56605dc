"""Find the Python snippets of the README and the docs, and run one against a TestIssuer.

A snippet is a fenced ``python`` block. It runs as a reader would paste it, with
the documentation's placeholder issuer (``https://idp.example.com``) replaced by a
real :class:`~bearerguard.testing.TestIssuer` on 127.0.0.1, whose default audience
is already the documentation's ``https://api.example.com``. A fragment that
continues an application (``app.add_middleware(...)`` with no ``app = ...``) gets
what the reader has at that point: ``app = FastAPI()``, ``os`` and bearerguard's
public names; a snippet that makes its own ``app`` must import what it uses.

A snippet that is a test (it defines ``test_...`` functions) is run by pytest in a
fresh directory, beside an ``app.py`` whose ``create_app`` is the README's example.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: The issuer every snippet names; replaced by the TestIssuer's URL.
PLACEHOLDER_ISSUER = "https://idp.example.com"
#: What ``os.environ["INTROSPECTION_SECRET"]`` holds while a snippet runs.
INTROSPECTION_SECRET = "snippet-introspection-secret"

_FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
_HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)

#: The application a snippet's tests import (``from app import create_app``).
USER_APP = """
from fastapi import Depends, FastAPI

from bearerguard import AccessToken, BearerAuthMiddleware, current_token, require_scopes


def create_app(issuer, audience, **options):
    app = FastAPI()
    app.add_middleware(BearerAuthMiddleware, issuer=issuer, audience=audience, **options)

    @app.get("/items", dependencies=[Depends(require_scopes("read:items"))])
    async def items(token: AccessToken = Depends(current_token)):
        return {"owner": token.subject}

    return app
"""


@dataclass(frozen=True)
class Snippet:
    """One fenced Python block: where it is (file, the heading above it, its line) and its code."""

    path: Path
    heading: str
    line: int
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} ({self.heading})"

    @property
    def is_test(self) -> bool:
        return re.search(r"^def test_\w+\(", self.code, re.M) is not None

    def source(self, issuer: str, **replacements: str) -> str:
        """The code with the placeholder issuer (and anything else given) replaced."""
        code = self.code.replace(PLACEHOLDER_ISSUER, issuer)
        for old, new in replacements.items():
            code = code.replace(old, new)
        return code


def documents() -> list[Path]:
    """The README and every Markdown page of the documentation site."""
    docs = sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    return [ROOT / "README.md", *docs]


def snippets(path: Path) -> Iterator[Snippet]:
    text = path.read_text()
    headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(text)]
    for match in _FENCE.finditer(text):
        if match.group("lang") != "python":
            continue
        above = [title for start, title in headings if start < match.start()]
        body = match.group("body")
        indent = len(match.group("indent"))
        code = "\n".join(line[indent:] for line in body.splitlines())
        line = text.count("\n", 0, match.start()) + 1
        yield Snippet(path, above[-1] if above else "", line, code)


def run(snippet: Snippet, issuer: str, **replacements: str) -> dict[str, Any]:
    """Execute a non-test snippet; its namespace afterwards (``app`` and friends)."""
    from fastapi import FastAPI

    namespace: dict[str, Any] = {"__name__": "snippet", "os": os}
    code = snippet.source(issuer, **replacements)
    if re.search(r"^app\s*=", code, re.M) is None:
        import bearerguard

        namespace.update({name: getattr(bearerguard, name) for name in bearerguard.__all__})
        namespace["app"] = FastAPI()
    previous = os.environ.get("INTROSPECTION_SECRET")
    os.environ["INTROSPECTION_SECRET"] = INTROSPECTION_SECRET
    try:
        exec(compile(code, snippet.name, "exec"), namespace)
    finally:
        if previous is None:
            os.environ.pop("INTROSPECTION_SECRET", None)
        else:
            os.environ["INTROSPECTION_SECRET"] = previous
    return namespace
