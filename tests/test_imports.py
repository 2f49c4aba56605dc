"""What ``import bearerguard`` costs: only what the configuration uses is imported.

Each check runs in a fresh interpreter, since this test process has imported
everything already.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import bearerguard

INIT = Path(bearerguard.__file__)
OPTIONAL = ("limits", "redis", "prometheus_client", "opentelemetry")

#: A Starlette API behind the middleware, one request through it; prints what got imported.
API = """
import sys
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bearerguard import BearerAuthMiddleware
from bearerguard.testing import TestIssuer

async def home(request):
    return PlainTextResponse("ok")

with TestIssuer() as issuer:
    app = BearerAuthMiddleware(
        Starlette(routes=[Route("/", home)]),
        issuer=issuer.issuer, audience=issuer.audience, {options}
    )
    with TestClient(app) as client:
        assert client.get("/", headers=issuer.auth_header()).status_code == 200
print(sorted({{m.split(".")[0] for m in sys.modules}} & {optional}))
"""


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_import_bearerguard_imports_no_optional_library() -> None:
    # The issue's own check, as a user runs it.
    printed = _run(
        "import bearerguard, sys; print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in {'limits','redis','prometheus_client','opentelemetry'}))"
    )
    assert printed == "[]"


def test_import_bearerguard_imports_none_of_its_modules_yet() -> None:
    printed = _run(
        "import bearerguard, sys; print(sorted(m for m in sys.modules if m.startswith('bearer')))"
    )
    assert printed == "['bearerguard']"


def test_an_api_without_rate_limits_or_observer_never_imports_them() -> None:
    assert _run(API.format(options="", optional=set(OPTIONAL))) == "[]"


def test_a_rate_limit_imports_limits_when_configured() -> None:
    printed = _run(API.format(options='rate_limit="100/second",', optional=set(OPTIONAL)))
    assert printed == "['limits']"


def test_every_public_name_resolves_and_is_then_a_plain_attribute() -> None:
    for name in bearerguard.__all__:
        value = getattr(bearerguard, name)
        assert vars(bearerguard)[name] is value
    assert set(bearerguard.__all__) <= set(dir(bearerguard))


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        bearerguard.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as error:
        assert "NoSuchThing" in str(error)
    else:
        raise AssertionError("bearerguard.NoSuchThing did not raise")


def test_lazy_exports_type_checking_imports_and_all_name_the_same_things() -> None:
    tree = ast.parse(INIT.read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                for alias in stmt.names:
                    typed[alias.name] = stmt.module.removeprefix("bearerguard.")
    exports = vars(bearerguard)["_EXPORTS"]
    assert typed == exports
    assert sorted(bearerguard.__all__) == sorted(exports)
