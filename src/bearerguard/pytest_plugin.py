"""pytest fixtures for testing your own bearerguard-protected API.

Installing bearerguard registers this plugin with pytest (a ``pytest11`` entry
point), so the fixtures are there with no configuration; ``-p no:bearerguard.pytest_plugin``
turns it off. Until a test asks for one of its fixtures it imports nothing but
pytest: a project that merely has bearerguard installed pays nothing at
collection time. A test reads::

    def test_items(bearer_issuer):
        app = create_app(issuer=bearer_issuer.issuer, audience=bearer_issuer.audience)
        with TestClient(app) as client:
            response = client.get("/items", headers=bearer_issuer.auth_header(scope="read:items"))
        assert response.status_code == 200

``bearer_issuer`` is a :class:`~bearerguard.testing.TestIssuer` serving discovery,
JWKS and introspection on 127.0.0.1, fresh for each test, so its switches
(``rotate``, ``drop_old_keys``, ``outage``, ``delay``, ``revoke``) can be flipped
freely. Configure it per test or module with the ``bearer_issuer`` marker, which
takes :class:`TestIssuer`'s keyword arguments::

    @pytest.mark.bearer_issuer(algorithms=["ES256"], audience="https://orders.example.com")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported by the fixtures themselves, when first used
    import httpx

    from bearerguard.testing import DPoPKey, ManualClock, TestIssuer

__all__ = [
    "bearer_clock",
    "bearer_dpop_key",
    "bearer_http_client",
    "bearer_issuer",
    "bearer_issuer_session",
    "bearer_transport",
    "make_bearer_issuer",
]

_MARKER = "bearer_issuer"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**kwargs): TestIssuer keyword arguments for the bearer_issuer fixture "
        "(algorithms, audience, path, client_id, port, issuer, jwks_uri, metadata_url)",
    )


def _issuer_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The closest ``bearer_issuer`` marker's keywords (function over class over module)."""
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(
            f"@pytest.mark.{_MARKER} takes keyword arguments only, e.g. algorithms=['ES256']"
        )
    return dict(marker.kwargs)


@pytest.fixture
def bearer_clock() -> ManualClock:
    """A clock the test moves by hand, shared with ``bearer_issuer`` when both are asked for.

    Pass it to the middleware too (``clock=bearer_clock``): ``bearer_clock.advance(301)``
    then expires a five-minute token for the issuer and the API alike.
    """
    from bearerguard.testing import ManualClock

    return ManualClock()


@pytest.fixture
def bearer_issuer(request: pytest.FixtureRequest) -> Iterator[TestIssuer]:
    """A development issuer on 127.0.0.1 for this test only, closed afterwards.

    It mints on ``bearer_clock`` when the test uses that fixture, else on the real time.
    """
    from bearerguard.testing import TestIssuer

    options = _issuer_options(request)
    if "bearer_clock" in request.fixturenames:
        options.setdefault("clock", request.getfixturevalue("bearer_clock"))
    with TestIssuer(**options) as issuer:
        yield issuer


@pytest.fixture
def bearer_dpop_key(request: pytest.FixtureRequest) -> DPoPKey:
    """A client's DPoP key pair (ES256): ``bearer_issuer.mint(dpop_key=bearer_dpop_key)``
    binds a token to it, ``bearer_dpop_key.headers(token, "GET", url)`` proves it.

    Its proofs are dated on ``bearer_clock`` when the test uses that fixture.
    """
    import time

    from bearerguard.testing import DPoPKey

    clock = time.time
    if "bearer_clock" in request.fixturenames:
        clock = request.getfixturevalue("bearer_clock")
    return DPoPKey(clock=clock)


@pytest.fixture
def make_bearer_issuer() -> Iterator[Callable[..., TestIssuer]]:
    """A factory for more issuers in one test (``issuers=[...]``); all closed afterwards.

    Takes :class:`TestIssuer`'s keyword arguments: ``make_bearer_issuer(algorithms=["ES256"])``.
    """
    from bearerguard.testing import TestIssuer

    made: list[TestIssuer] = []

    def make(**options: Any) -> TestIssuer:
        issuer = TestIssuer(**options)
        made.append(issuer)
        return issuer

    yield make
    for issuer in made:
        issuer.close()


@pytest.fixture(scope="session")
def bearer_issuer_session() -> Iterator[TestIssuer]:
    """One development issuer for the whole session: cheaper, but shared.

    Every test sees the same keys and switches, so leave ``rotate``, ``outage`` and
    friends to tests that use the function-scoped ``bearer_issuer``.
    """
    from bearerguard.testing import TestIssuer

    with TestIssuer() as issuer:
        yield issuer


@pytest.fixture
def bearer_transport(bearer_issuer: TestIssuer) -> httpx.AsyncBaseTransport:
    """``bearer_issuer`` answering in-process: an httpx transport, no socket involved."""
    return bearer_issuer.transport()


@pytest.fixture
def bearer_http_client(bearer_transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on :func:`bearer_transport`, for ``TokenValidator(client=...)``.

    It holds no connections (the transport is in-process), so it needs no closing.
    """
    import httpx

    return httpx.AsyncClient(transport=bearer_transport, follow_redirects=False)
