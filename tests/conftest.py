"""Fixtures every test module may use: a real issuer on 127.0.0.1, an HTTP client, a manual clock.

Async tests run on anyio's pytest plugin (``pytest.mark.anyio``) with asyncio only:
bearerguard's caches are asyncio code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from bearerguard._fetch import new_client
from bearerguard._ratelimit import RateLimiter
from bearerguard.testing import ManualClock, TestIssuer
from redis_server import RedisServer, running_redis

__all__ = ["ManualClock"]  # re-exported: some test modules import it from here


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def test_issuer() -> Iterator[TestIssuer]:
    """A fresh development issuer (one RS256 key) serving on a free loopback port."""
    with TestIssuer() as issuer:
        yield issuer


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """The client bearerguard itself would use (no automatic redirects)."""
    async with new_client() as client:
        yield client


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped afterwards."""
    with running_redis() as server:
        yield server


@pytest.fixture
async def limiters() -> AsyncIterator[list[RateLimiter]]:
    """Rate limiters made by a test, closed afterwards."""
    made: list[RateLimiter] = []
    yield made
    for limiter in made:
        await limiter.aclose()
