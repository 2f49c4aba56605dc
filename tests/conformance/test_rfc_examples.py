"""The JWS examples of RFC 7515 Appendix A and RFC 7520 Section 4, verified as signatures.

Their payloads are not access tokens (``Payload``, a Tolkien quote, a 2011 ``exp``),
so each runs through the signature layer (see ``signature_layer``), with the public
key served as a JWK Set or the HMAC key configured as a shared secret. Examples
that only exist in the JWS JSON Serialization are checked as the compact JWS their
protected header and signature make; access tokens are compact (RFC 7519 §1), and
a signature whose ``alg`` is not in a protected header cannot be one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bearerguard.testing import TestIssuer, tamper

from .signature_layer import Verdict, signature_layer

pytestmark = pytest.mark.anyio

EXAMPLES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "rfc_jws_examples.json").read_text()
)["examples"]


def named(*prefixes: str) -> list[dict[str, Any]]:
    return [e for e in EXAMPLES if e["name"].startswith(prefixes)]


COMPACT = [e for e in EXAMPLES if "jws" in e and e["key"] and "detached_payload" not in e]
PROTECTED_JSON = [e for e in EXAMPLES if "json" in e and "protected" in e["json"]]
UNPROTECTED_JSON = [e for e in EXAMPLES if "json" in e and "protected" not in e["json"]]


@pytest.fixture(scope="module")
def server() -> Iterator[TestIssuer]:
    with TestIssuer(algorithms=("ES256",)) as issuer:
        yield issuer


async def judge(server: TestIssuer, example: dict[str, Any], token: str) -> Verdict:
    key = example["key"]
    source = (
        {"secret": {"alg": example["alg"], **key}}
        if key["kty"] == "oct"
        else {"jwks": {"keys": [key]}}
    )
    async with signature_layer(server, **source) as layer:
        return await layer.judge(token)


def compact(flattened: dict[str, Any]) -> str:
    return f"{flattened.get('protected', '')}.{flattened['payload']}.{flattened['signature']}"


def test_the_examples_cover_both_rfcs() -> None:
    names = [e["name"] for e in COMPACT]
    assert len(named("RFC 7515 A.")) == 5 and len(named("RFC 7520 4.")) == 10
    assert len(names) == 8  # A.1-A.4 and 4.1-4.4


@pytest.mark.parametrize("example", COMPACT, ids=lambda e: e["name"])
async def test_compact_example_verifies(server: TestIssuer, example: dict[str, Any]) -> None:
    assert await judge(server, example, example["jws"]) is None


@pytest.mark.parametrize("example", COMPACT, ids=lambda e: e["name"])
async def test_compact_example_with_an_altered_signature_is_refused(
    server: TestIssuer, example: dict[str, Any]
) -> None:
    assert await judge(server, example, tamper(example["jws"])) == "bad_signature"


@pytest.mark.parametrize("example", PROTECTED_JSON, ids=lambda e: e["name"])
async def test_json_serialized_example_verifies_as_the_compact_jws_it_protects(
    server: TestIssuer, example: dict[str, Any]
) -> None:
    assert await judge(server, example, compact(example["json"])) is None


@pytest.mark.parametrize("example", UNPROTECTED_JSON, ids=lambda e: e["name"])
async def test_signature_without_a_protected_alg_is_refused(
    server: TestIssuer, example: dict[str, Any]
) -> None:
    """RFC 7520 4.7 and 4.8's ES512 signature: ``alg`` only in the unprotected header."""
    assert await judge(server, example, compact(example["json"])) == "shape"


async def test_detached_content_is_refused_but_verifies_once_attached(server: TestIssuer) -> None:
    """RFC 7520 4.5 (RFC 7515 Appendix F): an access token carries its claims."""
    (example,) = named("RFC 7520 4.5")
    head, empty, signature = example["jws"].split(".")
    assert empty == ""
    assert await judge(server, example, example["jws"]) == "shape"
    attached = f"{head}.{example['detached_payload']}.{signature}"
    assert await judge(server, example, attached) is None


async def test_unsecured_example_is_refused(server: TestIssuer) -> None:
    """RFC 7515 A.5: ``alg: none`` is never in an allowlist (RFC 8725 §3.1)."""
    (example,) = named("RFC 7515 A.5")
    for key in ({"kty": "EC", **named("RFC 7515 A.3")[0]["key"]}, named("RFC 7515 A.1")[0]["key"]):
        assert await judge(server, {"alg": "HS256", "key": key}, example["jws"]) is not None
