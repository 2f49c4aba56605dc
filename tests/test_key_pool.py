"""TestIssuer's keys come from a pool: cheap to make, never shared where a test could tell."""

from __future__ import annotations

import jwt
import pytest

from bearerguard.testing import TestIssuer


def keys_of(issuer: TestIssuer) -> set[str]:
    """The RSA moduli the issuer publishes: equal moduli, equal keys."""
    return {key["n"] for key in issuer.jwks()["keys"]}


def test_two_live_issuers_never_share_a_key() -> None:
    with TestIssuer() as one, TestIssuer() as two:
        assert keys_of(one).isdisjoint(keys_of(two))


def test_a_rotation_always_brings_a_key_the_issuer_never_had() -> None:
    with TestIssuer() as issuer:
        seen = keys_of(issuer)
        for _ in range(3):
            issuer.rotate()
            issuer.drop_old_keys()
            assert keys_of(issuer).isdisjoint(seen)
            seen |= keys_of(issuer)


def test_an_unknown_key_token_verifies_with_no_published_key() -> None:
    with TestIssuer() as issuer, TestIssuer() as other:
        token = issuer.mint_unknown_key()
        for jwk in issuer.jwks()["keys"] + other.jwks()["keys"]:
            with pytest.raises(jwt.InvalidSignatureError):
                jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"])


def test_a_closed_issuers_key_serves_the_next_issuer() -> None:
    with TestIssuer() as first:
        before = keys_of(first)
    with TestIssuer() as second:
        assert keys_of(second) == before
