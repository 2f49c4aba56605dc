"""ROCA (CVE-2017-15361): a JWKS RSA key whose private key anyone can compute is skipped.

The fingerprint is checked where a key is parsed, once per key per fetch, and the
key is logged as skipped like any other unusable key.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import bearerguard._keys as keys_module
from bearerguard import Issuer, TokenValidator
from bearerguard._keys import _ROCA_MASKS, KeySet, has_roca_fingerprint
from bearerguard.testing import TestIssuer

from .signature_layer import b64url_decode

VECTORS = Path(__file__).parent / "wycheproof" / "json_web_key_test.json"


def wycheproof_key(comment: str) -> dict[str, Any]:
    groups = json.loads(VECTORS.read_text())["testGroups"]
    key: dict[str, Any] = next(g for g in groups if g["comment"] == comment)["public"]["keys"][0]
    return key


def modulus(jwk: dict[str, Any]) -> int:
    return int.from_bytes(b64url_decode(jwk["n"]), "big")


def test_wycheproof_roca_key_has_the_fingerprint() -> None:
    assert has_roca_fingerprint(modulus(wycheproof_key("jws_rsa_roca_key")))


def test_a_modulus_built_the_way_rsalib_built_primes_has_the_fingerprint() -> None:
    """p = k*M + (65537**a mod M) for M the product of the primes up to 701 (2 included)."""
    rng = random.Random(15361)
    primorial = 2 * math.prod(r for r, _ in _ROCA_MASKS)

    def rsalib_like() -> int:
        return rng.getrandbits(256) * primorial + pow(65537, rng.getrandbits(64), primorial)

    for _ in range(5):
        assert has_roca_fingerprint(rsalib_like() * rsalib_like())


def test_ordinary_rsa_keys_have_no_roca_fingerprint() -> None:
    assert not has_roca_fingerprint(modulus(wycheproof_key("rs256")))
    for _ in range(3):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert not has_roca_fingerprint(key.public_key().public_numbers().n)


def test_roca_false_positive_rate_is_negligible() -> None:
    """A random modulus passes each prime's test with odds |<65537> mod r| / (r - 1)."""
    log2_odds = sum(math.log2(bin(mask).count("1") / (r - 1)) for r, mask in _ROCA_MASKS)
    assert log2_odds < -160


def test_roca_key_in_a_jwks_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    roca = {**wycheproof_key("jws_rsa_roca_key"), "kid": "roca"}
    good = {**wycheproof_key("rs256"), "kid": "good"}
    with caplog.at_level(logging.WARNING, logger="bearerguard.keys"):
        keyset = KeySet.from_jwks({"keys": [roca, good]}, issuer="i", algorithms=["RS256"])
    assert [k.kid for k in keyset.keys] == ["good"]
    assert keyset.skipped == 1
    assert "bearerguard.jwks.key_skipped kid='roca' reason=rsa_roca" in caplog.messages


@pytest.mark.anyio
async def test_roca_check_runs_once_per_key_per_fetch_not_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def counting(n: int) -> bool:
        calls.append(n)
        return has_roca_fingerprint(n)

    monkeypatch.setattr(keys_module, "has_roca_fingerprint", counting)
    with TestIssuer() as issuer:
        roca = {**wycheproof_key("jws_rsa_roca_key"), "kid": "roca"}
        issuer.serve_jwks({"keys": [*issuer.jwks()["keys"], roca]})
        config = Issuer(issuer.issuer, audience=issuer.audience, jwks_uri=issuer.jwks_uri)
        validator = TokenValidator([config], cache_size=0)
        try:
            for _ in range(5):
                await validator.validate(issuer.mint())
        finally:
            await validator.aclose()
        assert issuer.requests[issuer.jwks_path] == 1
    assert len(calls) == 2  # the issuer's key and the ROCA key, each once
