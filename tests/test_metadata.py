"""metadata.py: discovery (OIDC and RFC 8414), the exact-issuer rule, caching and backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bearerguard._config import FetchPolicy, Issuer
from bearerguard._errors import Unavailable
from bearerguard._metadata import MetadataResolver, discovery_urls
from bearerguard.testing import ManualClock, TestIssuer

pytestmark = pytest.mark.anyio
AUD = "https://api.example.com"

Make = Callable[..., MetadataResolver]


@pytest.fixture
async def make(http_client: httpx.AsyncClient, clock: ManualClock) -> AsyncIterator[Make]:
    made: list[MetadataResolver] = []

    def factory(issuer: str, **options: Any) -> MetadataResolver:
        resolver = MetadataResolver(
            Issuer(issuer=issuer, audience=AUD, **options), http_client, clock=clock
        )
        made.append(resolver)
        return resolver

    yield factory
    for resolver in made:
        await resolver.aclose()


def test_discovery_urls_follow_oidc_then_rfc8414_path_insertion() -> None:
    assert discovery_urls("https://idp.example.com") == (
        "https://idp.example.com/.well-known/openid-configuration",
        "https://idp.example.com/.well-known/oauth-authorization-server",
    )
    assert discovery_urls("https://idp.example.com/tenant/a/") == (
        "https://idp.example.com/tenant/a/.well-known/openid-configuration",
        "https://idp.example.com/.well-known/oauth-authorization-server/tenant/a",
    )


async def test_oidc_discovery_finds_the_jwks_uri(make: Make, test_issuer: TestIssuer) -> None:
    metadata = await make(test_issuer.issuer).get()
    assert metadata.issuer == test_issuer.issuer
    assert metadata.jwks_uri == test_issuer.jwks_uri
    assert metadata.introspection_endpoint == test_issuer.introspection_endpoint
    assert metadata.raw["grant_types_supported"] == ["client_credentials"]
    assert test_issuer.requests[test_issuer.discovery_path] == 1


async def test_metadata_url_is_fetched_instead_of_the_well_known_paths(
    make: Make, test_issuer: TestIssuer
) -> None:
    elsewhere = test_issuer.url("/tenant-independent/openid-configuration")
    test_issuer.route("/tenant-independent/openid-configuration", body=test_issuer.metadata())
    metadata = await make(test_issuer.issuer, metadata_url=elsewhere).get()
    assert metadata.jwks_uri == test_issuer.jwks_uri
    assert test_issuer.requests["/tenant-independent/openid-configuration"] == 1
    assert test_issuer.requests[test_issuer.discovery_path] == 0


async def test_rfc8414_path_insertion_is_tried_when_oidc_discovery_is_absent(make: Make) -> None:
    with TestIssuer(path="/tenant") as issuer:
        issuer.route(issuer.discovery_path, status=404, body={"error": "not_found"})
        metadata = await make(issuer.issuer).get()
        assert metadata.jwks_uri == issuer.jwks_uri
        assert issuer.requests["/tenant/.well-known/openid-configuration"] == 1
        assert issuer.requests["/.well-known/oauth-authorization-server/tenant"] == 1


async def test_html_catch_all_page_at_the_oidc_path_falls_through_to_rfc8414(make: Make) -> None:
    with TestIssuer(path="/tenant") as issuer:
        page = b"<!doctype html><title>app</title>"
        issuer.route(issuer.discovery_path, body=page, headers={"Content-Type": "text/html"})
        assert (await make(issuer.issuer).get()).jwks_uri == issuer.jwks_uri


async def test_issuer_down_is_not_asked_twice_per_attempt(
    make: Make, test_issuer: TestIssuer
) -> None:
    test_issuer.outage(True)
    with pytest.raises(Unavailable):
        await make(test_issuer.issuer).get()
    assert sum(test_issuer.requests.values()) == 1


async def test_metadata_issuer_must_equal_the_configured_issuer_exactly(
    make: Make, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    test_issuer.serve_metadata({**test_issuer.metadata(), "issuer": test_issuer.issuer + "/"})
    with pytest.raises(Unavailable):
        await make(test_issuer.issuer).get()
    assert "bearerguard.metadata.issuer_mismatch" in caplog.text


async def test_metadata_claiming_another_issuer_is_refused(
    make: Make, test_issuer: TestIssuer
) -> None:
    with TestIssuer() as other:
        test_issuer.serve_metadata(other.metadata())
        with pytest.raises(Unavailable):
            await make(test_issuer.issuer).get()
        assert sum(other.requests.values()) == 0


async def test_http_jwks_uri_on_a_non_loopback_host_in_metadata_is_refused(
    make: Make, test_issuer: TestIssuer
) -> None:
    test_issuer.serve_metadata(
        {**test_issuer.metadata(), "jwks_uri": "http://idp.example.com/jwks"}
    )
    with pytest.raises(Unavailable):
        await make(test_issuer.issuer).get()


async def test_introspection_endpoint_in_metadata_is_checked_too(
    make: Make, test_issuer: TestIssuer
) -> None:
    test_issuer.serve_metadata(
        {**test_issuer.metadata(), "introspection_endpoint": "http://idp.example.com/introspect"}
    )
    with pytest.raises(Unavailable):
        await make(test_issuer.issuer).get()


@pytest.mark.parametrize("member", ["jwks_uri", "introspection_endpoint"])
async def test_https_issuer_metadata_cannot_point_to_plain_http_loopback(
    test_issuer: TestIssuer, clock: ManualClock, member: str
) -> None:
    issuer = "https://idp.example.com"
    good = {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "introspection_endpoint": f"{issuer}/introspect",
    }
    async with httpx.AsyncClient(transport=test_issuer.transport()) as client:
        test_issuer.serve_metadata(good)
        resolver = MetadataResolver(Issuer(issuer=issuer, audience=AUD), client, clock=clock)
        assert (await resolver.get()).jwks_uri == f"{issuer}/jwks"  # https URLs are fine
        for local in ("http://localhost:6379/", "http://127.0.0.1:2375/x", "http://[::1]:8500/"):
            test_issuer.serve_metadata({**good, member: local})
            resolver = MetadataResolver(Issuer(issuer=issuer, audience=AUD), client, clock=clock)
            with pytest.raises(Unavailable):
                await resolver.get()
    # A loopback http issuer (tests, the demo) may still name loopback http URLs.
    with TestIssuer() as local_issuer:
        async with httpx.AsyncClient() as client:
            resolver = MetadataResolver(
                Issuer(issuer=local_issuer.issuer, audience=AUD), client, clock=clock
            )
            assert (await resolver.get()).jwks_uri == local_issuer.jwks_uri


@pytest.mark.parametrize("document", [[1, 2], "issuer", None, {"jwks_uri": 5}])
async def test_metadata_that_is_not_a_metadata_object_is_refused(
    make: Make, test_issuer: TestIssuer, document: Any
) -> None:
    test_issuer.serve_metadata(document)
    with pytest.raises(Unavailable):
        await make(test_issuer.issuer).get()


async def test_configured_jwks_uri_makes_no_request(make: Make, test_issuer: TestIssuer) -> None:
    metadata = await make(test_issuer.issuer, jwks_uri=test_issuer.jwks_uri).get()
    assert metadata.jwks_uri == test_issuer.jwks_uri
    assert sum(test_issuer.requests.values()) == 0


async def test_discovery_off_makes_no_request(make: Make, test_issuer: TestIssuer) -> None:
    metadata = await make(test_issuer.issuer, discovery=False).get()
    assert metadata.jwks_uri is None
    assert sum(test_issuer.requests.values()) == 0


async def test_configured_introspection_endpoint_wins_over_metadata(
    make: Make, test_issuer: TestIssuer
) -> None:
    mine = test_issuer.url("/my-introspect")
    metadata = await make(test_issuer.issuer, introspection_endpoint=mine).get()
    assert metadata.introspection_endpoint == mine
    assert metadata.jwks_uri == test_issuer.jwks_uri


@pytest.mark.parametrize("name", ["jwks_uri", "introspection_endpoint", "metadata_url"])
def test_configured_http_url_on_a_non_loopback_host_is_a_configuration_error(name: str) -> None:
    with pytest.raises(ValueError, match=f"Issuer.{name}: .*loopback"):
        Issuer(issuer="https://idp.example.com", audience=AUD, **{name: "http://idp.example/x"})


async def test_issuer_that_discovery_cannot_use_is_unavailable_without_a_request(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(Unavailable):
        await make("http://idp.example.com").get()
    assert "bearerguard.metadata.fetch_failed" in caplog.text


async def test_metadata_is_cached_and_refetched_after_max_ttl(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    resolver = make(test_issuer.issuer, fetch=FetchPolicy(max_ttl=3600))
    await resolver.get()
    clock.advance(3599)
    await resolver.get()
    assert test_issuer.requests[test_issuer.discovery_path] == 1
    clock.advance(1)
    await resolver.get()
    assert test_issuer.requests[test_issuer.discovery_path] == 2


async def test_concurrent_callers_share_one_fetch(make: Make, test_issuer: TestIssuer) -> None:
    resolver = make(test_issuer.issuer)
    results = await asyncio.gather(*(resolver.get() for _ in range(200)))
    assert {r.jwks_uri for r in results} == {test_issuer.jwks_uri}
    assert sum(test_issuer.requests.values()) == 1


async def test_failed_discovery_backs_off_exponentially(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    resolver = make(test_issuer.issuer, fetch=FetchPolicy(cooldown=30))
    test_issuer.outage(True)
    with pytest.raises(Unavailable) as info:
        await resolver.get()
    assert info.value.retry_after >= 1
    attempts = sum(test_issuer.requests.values())
    seen = []
    for _ in range(40):  # 40 s of callers, one a second
        with pytest.raises(Unavailable):
            await resolver.get()
        seen.append(sum(test_issuer.requests.values()) - attempts)
        clock.advance(1)
    # attempts at +1, +3, +7, +15, +31 s: five more, not forty
    assert resolver.failures == 6
    assert seen[-1] == 5 * attempts


async def test_last_known_good_metadata_survives_an_outage(
    make: Make, test_issuer: TestIssuer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = make(test_issuer.issuer, fetch=FetchPolicy(max_ttl=60))
    first = await resolver.get()
    test_issuer.outage(True)
    clock.advance(61)
    with caplog.at_level(logging.WARNING):
        assert await resolver.get() == first
    assert "bearerguard.metadata.fetch_failed" in caplog.text
    assert await resolver.get() == first  # within the backoff: no new request
    test_issuer.outage(False)
    clock.advance(2)
    assert (await resolver.get()).jwks_uri == test_issuer.jwks_uri
    assert resolver.failures == 1
