"""The main job on embedded defaults: a protected FastAPI app and a development issuer, locally.

Nothing outside 127.0.0.1 is needed: the issuer's keys are generated at start and
its discovery document and JWKS are served on a loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import httpx

from bearerguard._dependencies import current_token, require_scopes
from bearerguard._middleware import BearerAuthMiddleware
from bearerguard._tokens import AccessToken
from bearerguard.testing import TestIssuer

__all__ = ["create_demo_app", "main"]

AUDIENCE = "https://api.example.com"
#: The client Swagger UI's "Authorize" dialog is pre-filled with.
SWAGGER_CLIENT_ID = "swagger-ui"
SCOPES = {"read:items": "Read the inventory", "write:items": "Add to the inventory"}


def create_demo_app(
    issuer: str, audience: str = AUDIENCE, *, swagger_client_secret: str | None = None
) -> Any:
    """The example API: one public route, one that reads items, one that writes them.

    With ``swagger_client_secret``, ``/docs`` pre-fills "Authorize" with the demo
    issuer's client, so a click obtains a token (client credentials) from its token
    endpoint; without it the dialog still takes a pasted token.
    """
    from fastapi import Depends, FastAPI

    from bearerguard.openapi import docs_paths, install

    app = FastAPI(title="bearerguard demo")
    app.add_middleware(
        BearerAuthMiddleware,
        issuer=issuer,
        audience=audience,
        exclude_paths=["/health", *docs_paths(app)],
    )
    if swagger_client_secret is not None:
        # A secret in a web page: acceptable for a throw-away loopback issuer only.
        app.swagger_ui_init_oauth = {
            "clientId": SWAGGER_CLIENT_ID,
            "clientSecret": swagger_client_secret,
            "scopes": list(SCOPES),
        }
    # The OAuth2 flows come from the issuer's metadata (its token endpoint).
    install(app, scopes=SCOPES)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/items")
    async def items(token: AccessToken = Depends(require_scopes("read:items"))) -> dict[str, Any]:
        return {
            "items": ["apple", "pear"],
            "subject": token.subject,
            "scopes": sorted(token.scopes),
        }

    @app.post("/items", dependencies=[Depends(require_scopes("write:items"))])
    async def add_item(token: AccessToken = Depends(current_token)) -> dict[str, Any]:
        return {"created": True, "by": token.subject}

    return app


def _tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{payload}.{flipped}"


async def _serve(app: Any, port: int) -> tuple[Any, asyncio.Task[None]]:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the demo server did not start")
    return server, task


async def _run(port: int, self_test: bool) -> int:
    with TestIssuer(algorithms=("RS256",)) as issuer:
        secret = issuer.add_client(SWAGGER_CLIENT_ID, scopes=SCOPES)
        app = create_demo_app(issuer.issuer, swagger_client_secret=secret)
        server, task = await _serve(app, port)
        base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        good = issuer.mint(
            {"sub": "alice"}, scope="read:items write:items", audience=AUDIENCE, expires_in=3600
        )
        read_only = issuer.mint(
            {"sub": "bob"}, scope="read:items", audience=AUDIENCE, expires_in=3600
        )
        cases = [
            ("valid token, GET /items", "GET", good, 200),
            ("valid token, POST /items", "POST", good, 200),
            ("token lacking write:items, POST /items", "POST", read_only, 403),
            ("tampered token, GET /items", "GET", _tampered(good), 401),
            ("no token, GET /items", "GET", None, 401),
        ]
        print(f"bearerguard demo: API on {base}, development issuer on {issuer.issuer}\n")
        for label, method, token, _ in cases:
            auth = f" -H 'Authorization: Bearer {token}'" if token else ""
            print(f"# {label}\ncurl -i -X {method} {base}/items{auth}\n")
        print(
            f"# Swagger UI: open {base}/docs, click Authorize (client {SWAGGER_CLIENT_ID!r}"
            " is filled in), tick the scopes, Authorize, then try GET /items.\n"
        )
        try:
            if self_test:
                failures = await _self_test(base, cases)
                return await _self_test_client_credentials(base, issuer, secret) or failures
            print("Serving until Ctrl-C.")
            await task
            return 0
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _self_test(base: str, cases: list[tuple[str, str, str | None, int]]) -> int:
    failures = 0
    async with httpx.AsyncClient(base_url=base) as client:
        for label, method, token, expected in cases:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = await client.request(method, "/items", headers=headers)
            ok = response.status_code == expected
            failures += not ok
            challenge = response.headers.get("www-authenticate", "")
            mark = "ok  " if ok else "FAIL"
            print(f"{mark} {response.status_code} (want {expected}) {label} {challenge}")
    print(f"demo self-test: {len(cases) - failures} of {len(cases)} answers as expected")
    return 1 if failures else 0


async def _self_test_client_credentials(base: str, issuer: TestIssuer, secret: str) -> int:
    """What Swagger UI's "Authorize" does: a client credentials token, then GET /items."""
    async with httpx.AsyncClient() as client:
        granted = await client.post(
            issuer.token_endpoint,
            data={"grant_type": "client_credentials", "scope": "read:items"},
            auth=(SWAGGER_CLIENT_ID, secret),
        )
        token = granted.json().get("access_token") if granted.status_code == 200 else None
        headers = {"Authorization": f"Bearer {token}"}
        response = await client.get(f"{base}/items", headers=headers)
    ok = token is not None and response.status_code == 200
    mark = "ok  " if ok else "FAIL"
    print(f"{mark} {response.status_code} (want 200) client credentials token, GET /items")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bearerguard demo", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="API port (0 picks a free one)")
    parser.add_argument(
        "--self-test", action="store_true", help="run the curl lines itself and exit"
    )
    args = parser.parse_args(argv)
    port = 0 if args.self_test and args.port == 8000 else args.port
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(port, args.self_test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
