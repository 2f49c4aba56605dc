"""The validation cache's rules, with an injected clock: lifetimes, refusals, keys, bounds.

JWT lifetimes are observed through ``validator.cache.lookup`` (a miss means the
next request is judged afresh); introspection lifetimes through the issuer's
request counter.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
from jwt.algorithms import RSAAlgorithm

from bearerguard import FetchPolicy, Issuer
from bearerguard._cache import ALWAYS_ACTIVE, ValidationCache
from bearerguard._errors import InvalidToken
from bearerguard._tokens import AccessToken
from bearerguard._validator import TokenValidator
from bearerguard.testing import TestIssuer, generate_key

if TYPE_CHECKING:  # the clock fixture's type, from tests/conftest.py
    from conftest import ManualClock

pytestmark = pytest.mark.anyio

MakeValidator = Callable[..., TokenValidator]


def config(issuer: TestIssuer, **options: Any) -> Issuer:
    client_id, client_secret = issuer.introspection_client
    settings: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": issuer.audience,
        "jwks_uri": issuer.jwks_uri,
        "introspection_endpoint": issuer.introspection_endpoint,
        "client_id": client_id,
        "client_secret": client_secret,
        "leeway": 0.0,
        "fetch": FetchPolicy(timeout=1.0, cooldown=0.1),
    }
    settings.update(options)
    return Issuer(**settings)


@pytest.fixture
def now(clock: ManualClock, test_issuer: TestIssuer) -> ManualClock:
    """The manual clock, started at the real time, that the issuer also mints on.

    One clock for both: with the real time on one side and a frozen one on the other,
    a token minted a second later reads as issued in the future under ``leeway=0``.
    """
    clock.now = time.time()
    test_issuer.clock = clock
    return clock


@pytest.fixture
async def make_validator(now: ManualClock) -> AsyncIterator[MakeValidator]:
    made: list[TokenValidator] = []

    def make(*issuers: Issuer, **options: Any) -> TokenValidator:
        validator = TokenValidator(list(issuers), clock=now, **options)
        made.append(validator)
        return validator

    yield make
    for validator in made:
        await validator.aclose()


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def cached(validator: TokenValidator, token: str) -> AccessToken | None:
    return validator.cache.lookup(digest(token), validator.clock())


def calls(issuer: TestIssuer) -> int:
    return issuer.requests[issuer.introspection_path]


def access_token(name: str = "t") -> AccessToken:
    return AccessToken(
        issuer="https://issuer.example.com",
        subject=name,
        client_id=None,
        scopes=frozenset(),
        audience=(),
        expires_at=None,
        token_hash=name,
    )


# -- keys and hits --------------------------------------------------------------------------


async def test_cache_key_is_the_sha256_of_the_whole_token(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint()
    validator = make_validator(config(test_issuer))
    access = await validator.validate(token)
    assert access.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert cached(validator, token) is access
    assert validator.cache.lookup(digest(token[:-1]), validator.clock()) is None


async def test_a_hit_returns_the_same_token_object(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint()
    validator = make_validator(config(test_issuer))
    first = await validator.validate(token)
    assert await validator.validate(token) is first


async def test_a_hit_is_answered_by_the_synchronous_lookup(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint()
    validator = make_validator(config(test_issuer))
    assert validator.lookup(token) == (digest(token), None)  # a miss: decide() is next
    first = await validator.decide(token, digest(token))
    assert validator.lookup(token) == (digest(token), first)


async def test_a_remembered_refusal_is_raised_by_the_synchronous_lookup(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    header, payload, _ = test_issuer.mint().split(".")
    forged = f"{header}.{payload}.{'A' * 342}"
    validator = make_validator(config(test_issuer))
    with pytest.raises(InvalidToken):
        await validator.validate(forged)
    with pytest.raises(InvalidToken, match="signature"):
        validator.lookup(forged)


async def test_cache_size_zero_turns_the_cache_off(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_opaque()
    validator = make_validator(config(test_issuer), cache_size=0)
    await validator.validate(token)
    await validator.validate(token)
    assert calls(test_issuer) == 2
    assert len(validator.cache) == 0


async def test_every_lookup_is_counted_as_a_hit_a_negative_hit_or_a_miss(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    validator = make_validator(config(test_issuer))
    good, forged = test_issuer.mint(), test_issuer.mint_tampered()
    for _ in range(3):
        await validator.validate(good)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await validator.validate(forged)
    cache = validator.cache
    assert (cache.hits, cache.negative_hits, cache.misses) == (2, 1, 2)
    lookup = cache.lookup  # a reference held elsewhere counts the same
    now.advance(11)  # the refusal has lapsed: a miss, not a negative hit
    assert lookup(digest(forged), validator.clock()) is None
    assert lookup(digest(good), validator.clock()) is not None
    cache.clear()  # counters only grow: a collector's rate never goes negative
    assert (cache.hits, cache.negative_hits, cache.misses) == (3, 1, 3)


# -- how long an accepted token is served ---------------------------------------------------


async def test_jwt_entry_lives_at_most_the_jwt_cap(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint(expires_in=3600)
    validator = make_validator(config(test_issuer))
    await validator.validate(token)
    now.advance(299)
    assert cached(validator, token) is not None
    now.advance(2)
    assert cached(validator, token) is None


async def test_jwt_cap_is_configurable(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint(expires_in=3600)
    validator = make_validator(config(test_issuer, jwt_cache_ttl=10))
    await validator.validate(token)
    now.advance(11)
    assert cached(validator, token) is None


async def test_jwt_entry_never_outlives_the_token_exp(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint(expires_in=30)
    validator = make_validator(config(test_issuer))
    await validator.validate(token)
    now.advance(28)
    assert cached(validator, token) is not None
    now.advance(3)
    assert cached(validator, token) is None
    with pytest.raises(InvalidToken) as refused:
        await validator.validate(token)
    assert refused.value.reason == "expired"


async def test_introspection_entry_lives_at_most_60_seconds_by_default(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint_opaque(expires_in=3600)
    validator = make_validator(config(test_issuer))
    await validator.validate(token)
    now.advance(59)
    await validator.validate(token)
    assert calls(test_issuer) == 1
    now.advance(2)
    await validator.validate(token)
    assert calls(test_issuer) == 2


async def test_introspection_cap_is_configurable(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint_opaque(expires_in=3600)
    validator = make_validator(config(test_issuer, introspection_cache_ttl=5))
    await validator.validate(token)
    now.advance(6)
    await validator.validate(token)
    assert calls(test_issuer) == 2


async def test_introspection_entry_never_outlives_the_answer_exp(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint_opaque(expires_in=20)
    validator = make_validator(config(test_issuer))
    await validator.validate(token)
    now.advance(21)
    with pytest.raises(InvalidToken) as refused:
        await validator.validate(token)
    # Asked again, not served from the cache: the issuer, on the same clock, says inactive.
    assert refused.value.reason == "inactive"
    assert calls(test_issuer) == 2


# -- refusals --------------------------------------------------------------------------------


async def test_inactive_answer_is_remembered_briefly(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint_opaque()
    test_issuer.revoke(token)
    validator = make_validator(config(test_issuer))
    for _ in range(3):
        with pytest.raises(InvalidToken):
            await validator.validate(token)
    assert calls(test_issuer) == 1
    now.advance(11)
    with pytest.raises(InvalidToken):
        await validator.validate(token)
    assert calls(test_issuer) == 2


async def test_negative_lifetime_is_configurable(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint_opaque()
    test_issuer.revoke(token)
    validator = make_validator(config(test_issuer, negative_cache_ttl=0))
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await validator.validate(token)
    assert calls(test_issuer) == 2


async def test_bad_signature_is_remembered_briefly(
    test_issuer: TestIssuer, make_validator: MakeValidator, now: ManualClock
) -> None:
    token = test_issuer.mint_tampered()
    validator = make_validator(config(test_issuer))
    with pytest.raises(InvalidToken):
        await validator.validate(token)
    with pytest.raises(InvalidToken) as again:
        cached(validator, token)
    assert again.value.reason == "bad_signature"
    now.advance(11)
    assert cached(validator, token) is None


async def test_a_remembered_refusal_never_hides_a_key_published_later(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    # The issuer replaces the key behind a kid: a token signed with the new key
    # fails against the old one, and must pass as soon as the JWKS is refreshed.
    kid = test_issuer.signing_kid
    new_key = generate_key("RS256")
    token = test_issuer.mint(key=new_key, kid=kid, alg="RS256")
    validator = make_validator(config(test_issuer))
    with pytest.raises(InvalidToken) as refused:
        await validator.validate(token)
    assert refused.value.reason == "bad_signature"
    jwk = RSAAlgorithm.to_jwk(new_key.public_key(), as_dict=True)
    test_issuer.serve_jwks({"keys": [{**jwk, "kid": kid, "alg": "RS256", "use": "sig"}]})
    assert await validator.issuers[test_issuer.issuer].jwks.refresh()
    assert cached(validator, token) is None
    assert (await validator.validate(token)).key_id == kid


async def test_unknown_kid_is_not_remembered(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_unknown_key()
    validator = make_validator(config(test_issuer))
    with pytest.raises(InvalidToken) as refused:
        await validator.validate(token)
    assert refused.value.reason == "unknown_kid"
    assert cached(validator, token) is None


async def test_a_refusal_that_depends_on_the_clock_is_not_remembered(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint_not_yet_valid()
    validator = make_validator(config(test_issuer))
    with pytest.raises(InvalidToken):
        await validator.validate(token)
    assert cached(validator, token) is None


async def test_a_remembered_refusal_is_raised_fresh_each_time() -> None:
    cache = ValidationCache(10)
    cache.refuse(b"d", InvalidToken("no", reason="inactive"), 100.0, ALWAYS_ACTIVE)
    raised = []
    for _ in range(2):
        with pytest.raises(InvalidToken) as refused:
            cache.lookup(b"d", 1.0)
        raised.append(refused.value)
    assert raised[0] is not raised[1]
    assert raised[1].reason == "inactive"


# -- keys that leave the JWKS --------------------------------------------------------------


async def test_results_verified_with_a_removed_key_stop_being_served(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint()
    validator = make_validator(config(test_issuer))
    await validator.validate(token)
    test_issuer.rotate()
    test_issuer.drop_old_keys()
    assert await validator.issuers[test_issuer.issuer].jwks.refresh()
    assert cached(validator, token) is None
    with pytest.raises(InvalidToken) as refused:
        await validator.validate(token)
    assert refused.value.reason == "unknown_kid"


async def test_results_of_a_key_still_published_survive_a_refresh(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    token = test_issuer.mint()
    validator = make_validator(config(test_issuer))
    access = await validator.validate(token)
    test_issuer.rotate()
    assert await validator.issuers[test_issuer.issuer].jwks.refresh()
    assert cached(validator, token) is access


# -- bounds ------------------------------------------------------------------------------------


def test_cache_is_bounded() -> None:
    cache = ValidationCache(100)
    for i in range(1000):
        cache.accept(i.to_bytes(32, "big"), access_token(), 1e12, ALWAYS_ACTIVE)
        cache.refuse(i.to_bytes(32, "little"), InvalidToken("x"), 1e12, ALWAYS_ACTIVE)
    assert len(cache) <= 100 + 25


def test_a_full_cache_evicts_its_oldest_entry_and_everything_kept_beside_it() -> None:
    cache = ValidationCache(3)
    digests = [bytes([i]) * 32 for i in range(5)]
    tokens = [access_token(str(i)) for i in range(5)]
    for digest, token in zip(digests, tokens, strict=True):
        cache.accept(digest, token, 1e12, ALWAYS_ACTIVE)
    assert [cache.lookup(d, 0.0) for d in digests] == [None, None, *tokens[2:]]
    accepted: Any = cache._accepted
    assert set(accepted.deadlines) == set(accepted.verifiers) == set(digests[2:])


def test_a_flood_of_refusals_never_evicts_accepted_tokens() -> None:
    cache = ValidationCache(100)
    good = [access_token(str(i)) for i in range(50)]
    for i, token in enumerate(good):
        cache.accept(bytes([i]) * 32, token, 1e12, ALWAYS_ACTIVE)
    for i in range(10_000):
        cache.refuse(i.to_bytes(32, "big") + b"x", InvalidToken("x"), 1e12, ALWAYS_ACTIVE)
    assert all(cache.lookup(bytes([i]) * 32, 1.0) is t for i, t in enumerate(good))


def test_memory_stays_flat_under_a_stream_of_distinct_tokens() -> None:
    cache = ValidationCache(1000)
    refusal = InvalidToken("The access token's signature is invalid", reason="bad_signature")
    tracemalloc.start()
    try:
        for i in range(20_000):
            cache.refuse(hashlib.sha256(str(i).encode()).digest(), refusal, 1e12, ALWAYS_ACTIVE)
        warm, _ = tracemalloc.get_traced_memory()
        for i in range(20_000, 120_000):
            cache.refuse(hashlib.sha256(str(i).encode()).digest(), refusal, 1e12, ALWAYS_ACTIVE)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - warm < 256 * 1024


async def test_invalid_tokens_do_not_grow_the_cache_past_its_bound(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    validator = make_validator(config(test_issuer), cache_size=40)
    good = test_issuer.mint()
    await validator.validate(good)
    forged = [test_issuer.mint_tampered({"jti": str(i)}) for i in range(60)]
    results = await asyncio.gather(*(validator.validate(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, InvalidToken) for r in results)
    assert len(validator.cache) <= 40 + 10
    assert cached(validator, good) is not None


async def test_a_token_that_cannot_be_hashed_is_refused_not_a_crash(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    validator = make_validator(config(test_issuer))
    with pytest.raises(InvalidToken) as refused:
        await validator.validate("abc\udc80def")
    assert refused.value.reason == "malformed"


def test_cached_tokens_share_equal_scope_sets() -> None:
    cache = ValidationCache(10)
    first = cache.shared_scopes(frozenset({"read", "write"}))
    assert cache.shared_scopes(frozenset({"write", "read"})) is first


async def test_aud_with_non_string_members_is_refused_not_filtered(
    test_issuer: TestIssuer, make_validator: MakeValidator
) -> None:
    # RFC 7519 §4.1.3: every member is a StringOrURI; a mixed list is malformed.
    token = test_issuer.mint(audience=[test_issuer.audience, 42, {"x": 1}])
    with pytest.raises(InvalidToken) as info:
        await make_validator(config(test_issuer)).validate(token)
    assert info.value.reason == "bad_aud"
