"""What the interop tests drive: oidc-provider as a real process, and the API under test.

Kept out of conftest.py so test modules can import the types and helpers by name.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TextIO

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message

from bearerguard import (
    AccessToken,
    BearerAuthMiddleware,
    Issuer,
    current_token,
    require_scopes,
)
from bearerguard.testing import DPoPKey, TestCertificate

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "provider.mjs"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def node_or_skip(package: str = "oidc-provider") -> str:
    """The node binary; a loud skip when it or ``package`` is missing (a failure in CI)."""
    node = shutil.which("node")
    if node is None:
        reason = "interop tests need `node` on PATH (panva/oidc-provider runs on Node.js)"
    elif not (HERE / "node_modules" / package).is_dir():
        reason = (
            f"interop tests need {package} in tests/interop/node_modules: run `make interop-deps`"
        )
    else:
        return node
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this is an error, not a skip: {reason}", pytrace=False)
    pytest.skip(f"INTEROP NOT RUN: {reason}")


class StartTimeout(RuntimeError):
    """The provider process printed nothing within START_TIMEOUT."""


def process_state(pid: int) -> str:
    """The kernel's view of a process (Linux), to tell a stalled start from a stopped one."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return "state unknown"
    state = next((line for line in status if line.startswith("State:")), "State: ?")
    return f"{state.strip()}, wchan {wchan or '-'}"


@dataclass
class OIDCProvider:
    """One running oidc-provider process and the calls a test makes to it."""

    node: str
    workdir: Path
    ttl: int
    port: int = 0
    issuer: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    _log: TextIO | None = None

    # -- process ---------------------------------------------------------------

    def start(self) -> None:
        """Start the provider (on the same port and keys as before, after a stop).

        A start that prints nothing in time is retried once: on a loaded machine a
        node process has been seen to stall before its first line, and the fixture,
        not the code under test, is what would fail. The stall is logged as a warning.
        """
        try:
            self._spawn()
        except StartTimeout as stalled:
            warnings.warn(f"retrying the oidc-provider start: {stalled}", stacklevel=2)
            self._spawn()
        self._wait_for_discovery()

    def _spawn(self) -> None:
        assert self.process is None, "the provider is already running"
        self._log = (self.workdir / "provider.log").open("a")
        self.process = subprocess.Popen(
            [
                self.node,
                str(SCRIPT),
                "--port",
                str(self.port),
                "--ttl",
                str(self.ttl),
                "--keys-file",
                str(self.workdir / "keys.json"),
                "--watch-stdin",
            ],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.info = json.loads(self._first_line())
        self.port = self.info["port"]
        self.issuer = self.info["issuer"]

    def _first_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=START_TIMEOUT):
                state = process_state(self.process.pid)
                self.stop()
                raise StartTimeout(
                    f"no line in {START_TIMEOUT:.0f} s ({state}); log: {self.log_tail()}"
                )
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"oidc-provider exited at start: {self.log_tail()}")
        return line

    def _wait_for_discovery(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as client:
            while True:
                try:
                    if client.get(self.discovery_url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"no discovery document in time: {self.log_tail()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the process by its PID: SIGTERM, then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "provider.log"
        text = path.read_text() if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- what the provider advertises ------------------------------------------

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def resource(self, name: str) -> str:
        return str(self.info["resources"][name])

    def client(self, name: str) -> tuple[str, str]:
        creds = self.info["clients"][name]
        return str(creds["client_id"]), str(creds["client_secret"])

    # -- calls -------------------------------------------------------------------

    async def token(
        self,
        resource: str,
        scope: str = "read:items write:items",
        *,
        alg: str | None = None,
        ttl: int | None = None,
        dpop: DPoPKey | None = None,
        certificate: TestCertificate | None = None,
    ) -> str:
        """A client_credentials access token for one resource indicator (RFC 8707).

        With ``dpop`` the request carries a DPoP proof of that key (RFC 9449 §5) and
        the token comes back bound to it (``token_type`` ``DPoP``). With
        ``certificate`` the mTLS client asks, presenting that certificate as a TLS
        proxy would forward it, and the token comes back bound to it (RFC 8705 §3).
        """
        headers = {}
        client = "client"
        if certificate is not None:
            headers["X-Interop-Client-Cert"] = certificate.header_value("escaped-pem")
            client = "mtls_client"
        if dpop is not None:
            headers["DPoP"] = dpop.proof("POST", f"{self.issuer}/token")
        if alg is not None:
            headers["X-Interop-Alg"] = alg
        if ttl is not None:
            headers["X-Interop-TTL"] = str(ttl)
        async with httpx.AsyncClient(timeout=5.0, auth=self.client(client)) as http:
            answer = await http.post(
                f"{self.issuer}/token",
                data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
                headers=headers,
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["token_type"] == ("DPoP" if dpop is not None else "Bearer")
        return str(answer.json()["access_token"])

    async def revoke(self, token: str) -> None:
        async with httpx.AsyncClient(timeout=5.0, auth=self.client("client")) as http:
            answer = await http.post(f"{self.issuer}/token/revocation", data={"token": token})
        assert answer.status_code == 200, answer.text

    async def introspect(self, token: str) -> dict[str, Any]:
        """What the provider itself says about a token, to check a test's premise."""
        async with httpx.AsyncClient(timeout=5.0, auth=self.client("resource_server")) as http:
            answer = await http.post(f"{self.issuer}/token/introspection", data={"token": token})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def _admin(self, method: str, action: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            answer = await http.request(method, f"{self.issuer}/__admin/{action}")
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()
        return state

    async def rotate(self) -> dict[str, Any]:
        """New keys sign from now on; the old ones stay published. Returns the kid state."""
        return await self._admin("POST", "rotate")

    async def drop_old_keys(self) -> dict[str, Any]:
        return await self._admin("POST", "drop-old-keys")

    async def kids(self) -> dict[str, Any]:
        return await self._admin("GET", "state")


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan around a block, as a server would (startup, then shutdown).

    httpx's ASGITransport sends no lifespan events; without them the middleware's
    startup prefetch and its shutdown (closing its HTTP client) would go untested.
    """
    to_app_send, to_app_receive = anyio.create_memory_object_stream[Message](4)
    from_app_send, from_app_receive = anyio.create_memory_object_stream[Message](4)

    async def run() -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await app(scope, to_app_receive.receive, from_app_send.send)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        with anyio.fail_after(10):
            await to_app_send.send({"type": "lifespan.startup"})
            started = await from_app_receive.receive()
        assert started["type"] == "lifespan.startup.complete", started
        try:
            yield
        finally:
            with anyio.fail_after(10):
                await to_app_send.send({"type": "lifespan.shutdown"})
                stopped = await from_app_receive.receive()
            assert stopped["type"] == "lifespan.shutdown.complete", stopped


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build_api(issuer: Issuer, **middleware: Any) -> FastAPI:
    """The API under test: FastAPI with the documented one-line add_middleware.

    ``middleware`` are the middleware's own keywords (``trusted_proxies``, ...).
    """
    app = FastAPI()
    app.add_middleware(BearerAuthMiddleware, issuers=[issuer], **middleware)

    @app.get("/items")
    async def read_items(token: Annotated[AccessToken, Depends(current_token)]) -> dict[str, Any]:
        return {
            "kind": token.kind,
            "kid": token.key_id,
            "client_id": token.client_id,
            "subject": token.subject,
            "scopes": sorted(token.scopes),
            "audience": list(token.audience),
        }

    @app.post("/items", dependencies=[Depends(require_scopes("write:items"))])
    async def write_items() -> dict[str, bool]:
        return {"written": True}

    return app


ApiFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
