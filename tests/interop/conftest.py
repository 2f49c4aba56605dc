"""Fixtures that run panva's oidc-provider (tests/interop/provider.mjs) as a real process.

A test that rotates keys or stops the provider gets its own on a free loopback port,
so rotations and outages cannot leak into another test; modules whose tests change
nothing share one per module. Each is stopped by PID at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bearerguard import Issuer

from .interop_support import ApiFactory, OIDCProvider, build_api, lifespan, node_or_skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _running(workdir: Path) -> Iterator[OIDCProvider]:
    provider = OIDCProvider(node=node_or_skip(), workdir=workdir, ttl=300)
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def shared_oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """One provider for a whole module whose tests change nothing about it."""
    yield from _running(tmp_path_factory.mktemp("oidc-provider"))


@pytest.fixture
def oidc_provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OIDCProvider]:
    """A running oidc-provider with a 300 s default token lifetime.

    A module whose tests neither rotate keys nor stop the provider says so with
    ``SHARES_PROVIDER = True`` and its tests share one (starting node costs a second
    or more); the others get their own, so a rotation or an outage cannot leak.
    """
    if getattr(request.module, "SHARES_PROVIDER", False):
        yield request.getfixturevalue("shared_oidc_provider")
        return
    yield from _running(tmp_path)


@pytest.fixture
def api(oidc_provider: OIDCProvider) -> ApiFactory:
    """Serve the API trusting the running provider, discovery as-is; options go to Issuer.

    By default the API is the JWT resource and authenticates to introspection as
    ``interop-rs``; ``leeway=0`` so a lifetime of a few seconds means what it says.
    ``middleware={...}`` passes the middleware's own keywords.
    """

    @asynccontextmanager
    async def serve(
        middleware: dict[str, Any] | None = None, **options: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        client_id, client_secret = oidc_provider.client("resource_server")
        settings: dict[str, Any] = {
            "issuer": oidc_provider.issuer,
            "audience": oidc_provider.resource("jwt"),
            "client_id": client_id,
            "client_secret": client_secret,
            "leeway": 0.0,
        }
        settings.update(options)
        app = build_api(Issuer(**settings), **(middleware or {}))
        transport = httpx.ASGITransport(app=app)
        async with (
            lifespan(app),
            httpx.AsyncClient(transport=transport, base_url="http://api.test") as client,
        ):
            yield client

    return serve
