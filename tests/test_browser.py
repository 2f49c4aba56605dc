"""Swagger UI's "Authorize" in the demo, clicked in a real browser (headless Chromium).

The demo API and its development issuer run on 127.0.0.1 as ``make demo`` runs them.
Chromium comes from the system packages (``apt-get install chromium``) and is driven
by Playwright; FastAPI's ``/docs`` loads Swagger UI from a CDN, so the test hands
the browser the same files from ``tests/browser/node_modules`` (``make browser-deps``)
and lets no request leave the machine.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bearerguard._demo import SCOPES, SWAGGER_CLIENT_ID, create_demo_app
from bearerguard.testing import TestIssuer

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("BEARERGUARD_CHROMIUM", "/usr/bin/chromium")
SWAGGER_UI = Path(__file__).parent / "browser" / "node_modules" / "swagger-ui-dist"
CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/"
#: Chromium's flags for a container: no sandbox, no GPU, and nothing fetched of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _browser_or_skip() -> Any:
    """Playwright's sync API; a loud skip when a part is missing (a failure in CI)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the browser test needs the playwright package: pip install -e '.[dev]'"
    else:
        if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
            reason = f"the browser test needs {CHROMIUM}: apt-get install chromium"
        elif not (SWAGGER_UI / "swagger-ui-bundle.js").is_file():
            reason = "the browser test needs tests/browser/node_modules: run `make browser-deps`"
        else:
            return sync_playwright
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this is an error, not a skip: {reason}", pytrace=False)
    pytest.skip(f"BROWSER TEST NOT RUN: {reason}")


@pytest.fixture
def demo() -> Iterator[tuple[str, TestIssuer]]:
    """The demo API (uvicorn) and its issuer with the Swagger UI client, as `make demo` runs."""
    import uvicorn

    with TestIssuer() as issuer:
        secret = issuer.add_client(SWAGGER_CLIENT_ID, scopes=SCOPES)
        app = create_demo_app(issuer.issuer, swagger_client_secret=secret)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="demo-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}", issuer
        finally:
            server.should_exit = True
            thread.join(10)


def _serve_locally(route: Any) -> None:
    """Swagger UI's files from the local copy; anything else off this machine is refused."""
    url: str = route.request.url
    if url.startswith(CDN):
        route.fulfill(path=str(SWAGGER_UI / url.removeprefix(CDN).split("?")[0]))
    elif url.startswith(("http://127.0.0.1:", "data:")):
        route.continue_()
    else:
        route.abort()


def test_swagger_ui_authorize_gets_a_token_and_calls_a_protected_route(
    demo: tuple[str, TestIssuer],
) -> None:
    sync_playwright = _browser_or_skip()
    base, issuer = demo
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.route("**/*", _serve_locally)
            page.goto(base + "/docs")

            # "Authorize": the OAuth2 scheme's client credentials are pre-filled.
            page.locator("button.authorize").first.click()
            oauth = page.locator(".auth-container", has_text="clientCredentials")
            with page.expect_response(issuer.token_endpoint) as granted:
                oauth.locator("button.modal-btn.authorize").click()
            assert granted.value.status == 200
            oauth.locator("button", has_text="Logout").wait_for()
            oauth.locator("button.btn-done").click()

            # GET /items, "Try it out", "Execute": the browser sends the token it got.
            operation = page.locator(".opblock-get", has_text="/items")
            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            with page.expect_response(base + "/items") as called:
                operation.get_by_role("button", name="Execute").click()
            response = called.value
            assert response.status == 200
            assert response.request.headers["authorization"].startswith("Bearer ")
            assert response.json()["subject"] == SWAGGER_CLIENT_ID
            shown = operation.locator(".live-responses-table tr.response .response-col_status")
            assert shown.first.inner_text().strip() == "200"
        finally:
            browser.close()
    assert issuer.requests[issuer.token_path] >= 1
