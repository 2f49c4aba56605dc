"""jwks.py: the JWKS cache against a real issuer on 127.0.0.1, one behaviour per test.

Time is a :class:`ManualClock`, so lifetimes, cooldowns and outages are simulated
without sleeping; the HTTP traffic is real and counted on the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from jwt.algorithms import RSAAlgorithm

from bearerguard._config import FetchPolicy, Issuer
from bearerguard._errors import InvalidToken, Unavailable
from bearerguard._jwks import JWKSCache
from bearerguard._keys import VerificationKey
from bearerguard._metadata import MetadataResolver
from bearerguard.testing import ManualClock, TestIssuer, generate_key, tamper

pytestmark = pytest.mark.anyio
AUD = "https://api.example.com"

Make = Callable[..., JWKSCache]


@pytest.fixture
async def make(
    http_client: httpx.AsyncClient, clock: ManualClock, test_issuer: TestIssuer
) -> AsyncIterator[Make]:
    """Builds caches for an issuer (the fixture's by default) and closes them afterwards."""
    made: list[JWKSCache] = []

    def factory(
        issuer: TestIssuer | None = None, *, jwks_uri: str | None = None, **policy: Any
    ) -> JWKSCache:
        server = issuer or test_issuer
        config = Issuer(
            issuer=server.issuer, audience=AUD, jwks_uri=jwks_uri, fetch=FetchPolicy(**policy)
        )
        metadata = MetadataResolver(config, http_client, clock=clock)
        cache = JWKSCache(config, http_client, metadata=metadata, clock=clock)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        await cache.aclose()


def header(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return decoded


def verifies(keys: tuple[VerificationKey, ...], token: str) -> bool:
    head, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return any(key.verify(f"{head}.{payload}".encode(), raw) for key in keys)


async def keys_for(cache: JWKSCache, token: str) -> tuple[VerificationKey, ...]:
    h = header(token)
    return await cache.get_keys(h.get("kid"), h["alg"])


def jwks_requests(issuer: TestIssuer) -> int:
    return issuer.requests[issuer.jwks_path]


# -- the ordinary path -------------------------------------------------------------------


async def test_keys_are_fetched_once_and_verify_tokens(make: Make, test_issuer: TestIssuer) -> None:
    cache = make()
    for _ in range(50):
        token = test_issuer.mint()
        assert verifies(await keys_for(cache, token), token)
    assert jwks_requests(test_issuer) == 1
    assert cache.fetches == 1 and cache.generation == 1


async def test_every_algorithm_family_is_served(make: Make) -> None:
    algs = ("RS256", "PS512", "ES256", "ES384", "ES512", "EdDSA")
    with TestIssuer(algorithms=algs) as issuer:
        cache = make(issuer)
        for alg in algs:
            token = issuer.mint(alg=alg)
            assert verifies(await keys_for(cache, token), token), alg


async def test_configured_jwks_uri_skips_discovery(make: Make, test_issuer: TestIssuer) -> None:
    cache = make(jwks_uri=test_issuer.jwks_uri)
    await keys_for(cache, test_issuer.mint())
    assert dict(test_issuer.requests) == {test_issuer.jwks_path: 1}


async def test_keys_are_bound_to_the_issuer_that_served_them(
    make: Make, test_issuer: TestIssuer
) -> None:
    with TestIssuer() as other:
        mine, theirs = make(), make(other)
        assert all(k.issuer == test_issuer.issuer for k in await keys_for(mine, test_issuer.mint()))
        assert all(k.issuer == other.issuer for k in await keys_for(theirs, other.mint()))
        with pytest.raises(InvalidToken):  # other's kid is unknown to test_issuer's cache
            await keys_for(mine, other.mint())


async def test_token_without_kid_gets_the_keys_of_its_alg_without_a_fetch(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    await keys_for(cache, test_issuer.mint())
    token = test_issuer.mint(kid=None)
    assert verifies(await keys_for(cache, token), token)
    assert await cache.get_keys(None, "ES256") == ()
    assert jwks_requests(test_issuer) == 1


async def test_known_kid_with_another_alg_is_empty_not_a_refresh(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    await keys_for(cache, test_issuer.mint())
    assert await cache.get_keys(test_issuer.signing_kid, "ES256") == ()
    assert jwks_requests(test_issuer) == 1


# -- rotation and unknown kids -------------------------------------------------------------


async def test_rotation_is_picked_up_by_the_unknown_kid_and_that_request_is_validated(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    await keys_for(cache, test_issuer.mint())
    test_issuer.rotate()
    token = test_issuer.mint()
    assert verifies(await keys_for(cache, token), token)
    assert jwks_requests(test_issuer) == 2
    assert cache.generation == 2


async def test_rotation_is_logged(
    make: Make, test_issuer: TestIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bearerguard.jwks")
    cache = make()
    await keys_for(cache, test_issuer.mint())
    new_kid = test_issuer.rotate()
    await keys_for(cache, test_issuer.mint())
    rotated = [
        r.getMessage() for r in caplog.records if "bearerguard.jwks.rotated" in r.getMessage()
    ]
    assert len(rotated) == 1 and new_kid in rotated[0]


async def test_second_unknown_kid_within_the_cooldown_causes_no_fetch(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(cooldown=30)
    await keys_for(cache, test_issuer.mint())
    with pytest.raises(InvalidToken) as info:
        await cache.get_keys("nobody-1", "RS256")
    assert info.value.reason == "unknown_kid"
    assert jwks_requests(test_issuer) == 2
    clock.advance(29)
    with pytest.raises(InvalidToken):  # unchecked, yet a 401 like a bad signature
        await cache.get_keys("nobody-2", "RS256")
    assert jwks_requests(test_issuer) == 2
    clock.advance(1)
    with pytest.raises(InvalidToken):
        await cache.get_keys("nobody-3", "RS256")
    assert jwks_requests(test_issuer) == 3


async def test_unknown_kid_on_a_cold_cache_costs_one_fetch(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    with pytest.raises(InvalidToken):
        await cache.get_keys("nobody", "RS256")
    assert jwks_requests(test_issuer) == 1


async def test_single_flight_1000_concurrent_new_kid_requests_make_one_fetch(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    await keys_for(cache, test_issuer.mint())
    test_issuer.reset_counters()
    test_issuer.rotate()
    token = test_issuer.mint()
    results = await asyncio.gather(*(keys_for(cache, token) for _ in range(1000)))
    assert all(verifies(keys, token) for keys in results)
    fetches = jwks_requests(test_issuer)
    print(f"\n[figure a] 1,000 concurrent unknown-kid requests -> {fetches} JWKS fetch(es)")
    assert fetches == 1
    assert sum(test_issuer.requests.values()) == 1  # and no rediscovery


async def test_single_flight_on_a_cold_cache(make: Make, test_issuer: TestIssuer) -> None:
    cache = make()
    token = test_issuer.mint()
    results = await asyncio.gather(*(keys_for(cache, token) for _ in range(1000)))
    assert all(verifies(keys, token) for keys in results)
    assert jwks_requests(test_issuer) == 1
    assert test_issuer.requests[test_issuer.discovery_path] == 1


async def test_a_request_that_gives_up_does_not_cancel_the_shared_fetch(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    token = test_issuer.mint()
    test_issuer.delay(0.3)
    impatient = asyncio.ensure_future(keys_for(cache, token))
    patient = asyncio.ensure_future(keys_for(cache, token))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert verifies(await patient, token)
    assert impatient.cancelled()
    assert jwks_requests(test_issuer) == 1


async def test_random_kid_stream_is_bounded_and_cannot_starve_a_rotation(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cooldown, step, duration, rotate_at = 30.0, 0.5, 180.0, 10.0
    cache = make(cooldown=cooldown)
    await keys_for(cache, test_issuer.mint())
    test_issuer.reset_counters()
    genuine: str | None = None
    accepted_at: float | None = None
    start = clock.now
    for i in range(int(duration / step)):
        elapsed = i * step
        for _ in range(10):  # ten attacker requests per step, each with a fresh kid
            with pytest.raises(InvalidToken):  # never a 503 the attacker could cause
                await cache.get_keys(secrets.token_hex(8), "RS256")
        if genuine is None and elapsed >= rotate_at:
            test_issuer.rotate()
            genuine = test_issuer.mint()
        if genuine is not None and accepted_at is None:
            try:
                assert verifies(await keys_for(cache, genuine), genuine)
                accepted_at = elapsed
            except InvalidToken as refused:  # the client fetches a new token meanwhile
                assert refused.reason == "unknown_kid"
        clock.advance(step)
    fetches = jwks_requests(test_issuer)
    delay = (accepted_at or 0) - rotate_at
    print(
        f"\n[random kids] {int(duration / step) * 10} random-kid requests over {duration:g} s -> "
        f"{fetches} fetches; the rotation was accepted {delay:g} s after it happened"
    )
    assert fetches <= duration / cooldown + 1, fetches  # one per cooldown at most
    assert accepted_at is not None and accepted_at - rotate_at <= cooldown
    assert clock.now - start == duration


async def test_unknown_kid_during_cooldown_is_401_like_a_bad_signature_not_503(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(cooldown=30)
    await keys_for(cache, test_issuer.mint())
    with pytest.raises(InvalidToken) as checked:  # checked by a fetch begun after it arrived
        await cache.get_keys("attacker-1", "RS256")
    clock.advance(10.5)
    test_issuer.rotate()
    with pytest.raises(InvalidToken) as info:  # the attacker spent the refresh
        await keys_for(cache, test_issuer.mint())
    assert info.value.reason == "unknown_kid" and info.value.status == 401
    assert str(info.value) == str(checked.value) == "The access token's signature is invalid"
    clock.advance(19)
    with pytest.raises(InvalidToken):
        await cache.get_keys("attacker-2", "RS256")
    assert jwks_requests(test_issuer) == 2  # the cooldown still holds fetches down


async def test_genuine_rotation_right_after_an_attack_is_accepted_once_the_cooldown_ends(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(cooldown=30)
    await keys_for(cache, test_issuer.mint())
    await asyncio.gather(
        *(cache.get_keys(secrets.token_hex(8), "RS256") for _ in range(50)),
        return_exceptions=True,
    )
    assert jwks_requests(test_issuer) == 2
    test_issuer.rotate()
    token = test_issuer.mint()
    with pytest.raises(InvalidToken):
        await keys_for(cache, token)
    clock.advance(30)
    assert verifies(await keys_for(cache, token), token)
    assert jwks_requests(test_issuer) == 3


async def test_kid_that_is_not_a_string_is_malformed_not_a_crash(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    await keys_for(cache, test_issuer.mint())
    for kid in (["a"], {"a": 1}, 7):
        with pytest.raises(InvalidToken):
            await cache.get_keys(kid, "RS256")  # type: ignore[arg-type]
    assert jwks_requests(test_issuer) == 1


async def test_clock_going_back_neither_freezes_keys_nor_the_cooldown(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(cooldown=30)
    token = test_issuer.mint()
    await keys_for(cache, token)
    with pytest.raises(InvalidToken):
        await cache.get_keys("nobody", "RS256")
    clock.advance(-86_400)
    test_issuer.rotate()
    new_token = test_issuer.mint()
    assert verifies(await keys_for(cache, new_token), new_token)
    assert await cache.refresh() and cache.fetched_at == clock.now


async def test_key_replaced_under_the_same_kid_is_found_by_recheck(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    old_token = test_issuer.mint()
    tried = await keys_for(cache, old_token)
    replacement = generate_key("RS256")
    jwk = RSAAlgorithm.to_jwk(replacement.public_key(), as_dict=True)
    test_issuer.serve_jwks({"keys": [{**jwk, "kid": test_issuer.signing_kid, "alg": "RS256"}]})
    token = test_issuer.mint(key=replacement, kid=test_issuer.signing_kid)
    assert not verifies(await keys_for(cache, token), token)  # the cached key is the old one
    fresh = await cache.recheck(test_issuer.signing_kid, "RS256", tried)
    assert verifies(fresh, token) and not tried[0].active


async def test_recheck_after_a_forged_signature_fetches_at_most_once_per_cooldown(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(cooldown=30)
    token = tamper(test_issuer.mint())
    tried = await keys_for(cache, token)
    for _ in range(20):
        assert await cache.recheck(test_issuer.signing_kid, "RS256", tried) == ()
        clock.advance(1)
    assert jwks_requests(test_issuer) == 2  # the first fetch and one recheck in 20 s


# -- lifetimes --------------------------------------------------------------------------


async def test_max_age_below_the_floor_is_raised_to_min_ttl(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    test_issuer.cache_control("max-age=5")
    cache = make(min_ttl=300, max_ttl=3600, refresh_ahead=0.8)
    token = test_issuer.mint()
    await keys_for(cache, token)
    assert cache.ttl == 300
    clock.advance(239)  # 5 s are long gone, but 0.8 * 300 s are not
    await keys_for(cache, token)
    assert not cache.refreshing and jwks_requests(test_issuer) == 1


async def test_max_age_above_the_ceiling_is_lowered_to_max_ttl(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    test_issuer.cache_control("public, max-age=31536000")
    cache = make(min_ttl=60, max_ttl=3600, refresh_ahead=0.8)
    token = test_issuer.mint()
    await keys_for(cache, token)
    assert cache.ttl == 3600
    clock.advance(2880)
    await keys_for(cache, token)
    assert await cache.refresh()  # joins the refresh the request started
    assert jwks_requests(test_issuer) == 2


async def test_no_cache_headers_mean_the_default_lifetime(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make(default_ttl=1234)
    await keys_for(cache, test_issuer.mint())
    assert cache.ttl == 1234


async def test_no_store_is_held_to_the_floor(make: Make, test_issuer: TestIssuer) -> None:
    test_issuer.cache_control("no-store")
    cache = make(min_ttl=120)
    await keys_for(cache, test_issuer.mint())
    assert cache.ttl == 120


async def test_refresh_ahead_runs_in_the_background_while_requests_are_served(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    test_issuer.cache_control("max-age=600")
    cache = make(min_ttl=60, max_ttl=3600, refresh_ahead=0.8)
    token = test_issuer.mint()
    await keys_for(cache, token)
    test_issuer.delay(0.5)  # a slow IdP: a request that waited on it would still be waiting
    clock.advance(480)
    assert verifies(await keys_for(cache, token), token)
    assert cache.refreshing  # the request was answered while the refresh is in flight
    assert verifies(await keys_for(cache, token), token)  # and so is the next one
    assert await cache.refresh()
    assert jwks_requests(test_issuer) == 2
    assert cache.fetched_at == clock.now


# -- outages ---------------------------------------------------------------------------


async def test_issuer_down_before_the_first_fetch_is_unavailable_not_invalid(
    make: Make, test_issuer: TestIssuer
) -> None:
    test_issuer.outage(True)
    cache = make()
    with pytest.raises(Unavailable) as info:
        await keys_for(cache, test_issuer.mint())
    assert info.value.status == 503 and info.value.retry_after >= 1
    with pytest.raises(Unavailable):  # an unknown kid is no different while we have no keys
        await cache.get_keys("anything", "RS256")


async def test_failed_first_fetch_backs_off_then_recovers(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(jwks_uri=test_issuer.jwks_uri, cooldown=30)
    token = test_issuer.mint()
    test_issuer.outage(True, mode="close")
    for _ in range(100):  # a burst of requests while the issuer is down: one attempt
        with pytest.raises(Unavailable):
            await keys_for(cache, token)
    assert jwks_requests(test_issuer) == 1
    test_issuer.outage(False)
    clock.advance(1)
    assert verifies(await keys_for(cache, token), token)
    assert jwks_requests(test_issuer) == 2


async def test_known_keys_keep_working_through_an_outage(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    test_issuer.cache_control("max-age=300")
    cache = make(min_ttl=300, cooldown=30)
    token = test_issuer.mint()
    await keys_for(cache, token)
    test_issuer.outage(True)
    clock.advance(3600)
    for _ in range(3):
        assert verifies(await keys_for(cache, token), token)
        await cache.refresh()
    assert cache.failures >= 1 and cache.generation == 1


async def test_ten_minute_outage_with_known_keys_fails_no_request(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    test_issuer.cache_control("max-age=300")
    cache = make(min_ttl=300, cooldown=30)
    token = test_issuer.mint()
    await keys_for(cache, token)
    clock.advance(60)
    test_issuer.outage(True, mode="close")
    requests, failed, step = 6000, 0, 600 / 6000  # 10 requests a second for 10 minutes
    for _ in range(requests):
        try:
            if not verifies(await keys_for(cache, token), token):
                failed += 1
        except (InvalidToken, Unavailable):
            failed += 1
        await asyncio.sleep(0)  # let a background refresh run its course
        clock.advance(step)
    outage_attempts = jwks_requests(test_issuer) - 1
    print(
        f"\n[figure b] 10-minute JWKS outage, {requests} requests with known keys: "
        f"{failed} failed; {outage_attempts} fetch attempts during the outage"
    )
    assert failed == 0
    assert 0 < outage_attempts <= 600 / 30 + 6  # backoff: 1, 2, 4, 8, 16, then every 30 s
    assert not await cache.refresh()  # settle the attempt that may still be in flight
    test_issuer.outage(False)
    clock.advance(31)
    await keys_for(cache, token)  # the next routine refresh, after the backoff, succeeds
    assert await cache.refresh() and cache.fetched_at == clock.now


async def test_keys_past_max_stale_are_not_served_when_the_refresh_fails(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(min_ttl=60, max_ttl=60, max_stale=600, cooldown=30)
    token = test_issuer.mint()
    await keys_for(cache, token)
    test_issuer.outage(True)
    clock.advance(600)
    assert verifies(await keys_for(cache, token), token)  # still within the bound
    clock.advance(1)
    with pytest.raises(Unavailable):
        await keys_for(cache, token)
    test_issuer.outage(False)
    clock.advance(30)
    assert verifies(await keys_for(cache, token), token)


async def test_failed_refresh_for_a_new_kid_is_401_while_known_keys_are_in_hand(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    old_token = test_issuer.mint()
    await keys_for(cache, old_token)
    test_issuer.rotate()
    test_issuer.outage(True)
    token = test_issuer.mint()
    with pytest.raises(InvalidToken):  # an unknown kid is no proof our side is down
        await keys_for(cache, token)
    with pytest.raises(InvalidToken):
        await keys_for(cache, token)
    assert verifies(await keys_for(cache, old_token), old_token)  # known keys still work


# -- what a fetch may bring -----------------------------------------------------------------


async def test_one_bad_key_in_a_set_is_skipped(make: Make, test_issuer: TestIssuer) -> None:
    good = test_issuer.jwks()["keys"][0]
    test_issuer.serve_jwks(
        {
            "keys": [
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                {"kty": "EC", "kid": "off-curve", "crv": "P-256", "x": "AA", "y": "AA"},
                "not a key",
                good,
                {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            ]
        }
    )
    cache = make()
    token = test_issuer.mint()
    assert verifies(await keys_for(cache, token), token)
    assert cache.keyset is not None and cache.keyset.skipped == 4


async def test_oversized_jwks_is_refused(make: Make, test_issuer: TestIssuer) -> None:
    test_issuer.serve_jwks(b'{"keys": [], "padding": "' + b"x" * (600 * 1024) + b'"}')
    cache = make()  # the default cap, 512 KiB
    with pytest.raises(Unavailable):
        await keys_for(cache, test_issuer.mint())
    assert cache.failures == 1 and cache.keyset is None


async def test_jwks_redirect_to_another_host_is_refused(
    make: Make, test_issuer: TestIssuer
) -> None:
    with TestIssuer() as elsewhere:
        test_issuer.route(
            test_issuer.jwks_path, status=302, headers={"Location": elsewhere.jwks_uri}
        )
        cache = make()
        with pytest.raises(Unavailable):
            await keys_for(cache, test_issuer.mint())
        assert sum(elsewhere.requests.values()) == 0


async def test_document_that_is_not_a_jwk_set_keeps_the_last_known_good_keys(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    token = test_issuer.mint()
    await keys_for(cache, token)
    keyset = cache.keyset
    test_issuer.serve_jwks({"keys": "none today"})
    assert not await cache.refresh()
    assert cache.keyset is keyset and verifies(await keys_for(cache, token), token)


async def test_a_set_of_only_unusable_keys_keeps_the_last_known_good_keys(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    token = test_issuer.mint()
    await keys_for(cache, token)
    test_issuer.serve_jwks({"keys": [{"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}]})
    assert not await cache.refresh()
    assert verifies(await keys_for(cache, token), token)


async def test_removed_key_is_marked_inactive(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(cooldown=30)
    old_token = test_issuer.mint()
    (old_key,) = await keys_for(cache, old_token)
    test_issuer.rotate()
    test_issuer.drop_old_keys()
    new_token = test_issuer.mint()
    (new_key,) = await keys_for(cache, new_token)
    assert old_key.active is False and new_key.active is True
    clock.advance(30)  # past the cooldown the rotation's refresh started
    with pytest.raises(InvalidToken):
        await keys_for(cache, old_token)


async def test_unchanged_keys_keep_their_objects_and_generation(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    token = test_issuer.mint()
    (before,) = await keys_for(cache, token)
    assert await cache.refresh()
    (after,) = await keys_for(cache, token)
    assert after is before and after.active
    assert cache.generation == 1 and cache.fetches == 2


async def test_empty_jwk_set_retires_every_key(make: Make, test_issuer: TestIssuer) -> None:
    cache = make()
    token = test_issuer.mint()
    (key,) = await keys_for(cache, token)
    test_issuer.serve_jwks({"keys": []})
    assert await cache.refresh()
    assert key.active is False and cache.generation == 2


async def test_metadata_without_jwks_uri_is_unavailable(
    make: Make, test_issuer: TestIssuer
) -> None:
    test_issuer.serve_metadata({"issuer": test_issuer.issuer})
    cache = make()
    with pytest.raises(Unavailable):
        await keys_for(cache, test_issuer.mint())


# -- lifecycle -----------------------------------------------------------------------------


async def test_prefetch_loads_keys_so_requests_need_no_fetch(
    make: Make, test_issuer: TestIssuer
) -> None:
    cache = make()
    await cache.prefetch()
    test_issuer.reset_counters()
    await keys_for(cache, test_issuer.mint())
    assert sum(test_issuer.requests.values()) == 0


async def test_prefetch_never_raises_when_the_issuer_is_down(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    test_issuer.outage(True, mode="close")
    cache = make()
    await cache.prefetch()
    assert cache.keyset is None and cache.failures == 1
    test_issuer.outage(False)
    clock.advance(1)
    await keys_for(cache, test_issuer.mint())  # lazily retried by the next request
    assert cache.keyset is not None


async def test_aclose_cancels_a_background_refresh(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make()
    token = test_issuer.mint()
    await keys_for(cache, token)
    test_issuer.delay(30)
    clock.advance(cache.ttl)
    await keys_for(cache, token)
    assert cache.refreshing
    await cache.aclose()
    assert not cache.refreshing


async def test_ready_keys_defers_to_get_keys_unless_fresh_and_known(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make()
    token_kid = test_issuer.signing_kid
    assert cache.ready_keys(token_kid, "RS256") is None  # nothing fetched yet
    await cache.get_keys(token_kid, "RS256")
    assert cache.ready_keys(token_kid, "RS256")
    assert cache.ready_keys("unknown", "RS256") is None  # get_keys decides on refresh
    clock.advance(cache.ttl)  # due for a refresh: get_keys starts it
    assert cache.ready_keys(token_kid, "RS256") is None


async def test_an_unknown_kid_confirmed_absent_stays_401_within_the_cooldown(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(cooldown=30)
    await keys_for(cache, test_issuer.mint())
    for _ in range(3):  # the first request's fetch settles it for the cooldown
        with pytest.raises(InvalidToken):
            await cache.get_keys("gone", "RS256")
        clock.advance(5)
    assert jwks_requests(test_issuer) == 2


async def test_tokens_of_a_withdrawn_kid_are_refused_at_once_even_in_the_cooldown(
    make: Make, test_issuer: TestIssuer, clock: ManualClock
) -> None:
    cache = make(cooldown=30, min_ttl=1, max_ttl=1)
    old_kid = test_issuer.signing_kid
    await keys_for(cache, test_issuer.mint())
    test_issuer.rotate()
    test_issuer.drop_old_keys()
    clock.advance(2)
    await cache.refresh()  # the fetch that shows old_kid withdrawn
    with pytest.raises(InvalidToken):  # spends the unknown-kid refresh for 30 s
        await cache.get_keys("never-seen", "RS256")
    fetches = jwks_requests(test_issuer)
    clock.advance(1)
    with pytest.raises(InvalidToken) as info:  # not a 503, though the cooldown runs
        await cache.get_keys(old_kid, "RS256")
    assert info.value.reason == "unknown_kid"
    assert jwks_requests(test_issuer) == fetches
