"""Wycheproof's JSON Web Signature, JSON Web Key and JSON Web Crypto vectors, every one of them.

Each vector runs through bearerguard's signature layer (see ``signature_layer``):
a JWK Set over real HTTP, or an ``oct`` key as a configured shared secret. A vector
either agrees with Wycheproof's verdict, or is listed in :data:`STRICTER` with the
RFC reason bearerguard refuses what Wycheproof would accept. bearerguard never
accepts a vector Wycheproof calls invalid. JWE vectors do not apply to a resource
server that verifies signatures; they are counted as skipped, and each is shown to
be refused by the whole validator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bearerguard import InvalidToken, Issuer, TokenValidator
from bearerguard.testing import TestIssuer

from .signature_layer import Verdict, signature_layer

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent / "wycheproof"
FILES = ("json_web_signature_test", "json_web_key_test", "json_web_crypto_test")

_EMPTY_PAYLOAD = (
    "RFC 7519 §7.2: a JWT's payload is its claims set, a JSON object; a JWS with an empty "
    "payload is never an access token, so its shape is refused before any key is tried"
)
_ALG_NOT_THE_KEYS = (
    "RFC 8725 §3.1 and RFC 7517 §4.4: each key is used with exactly one algorithm, the "
    "one its JWK declares; this JWK declares another alg than the token's"
)
_NOT_BASE64URL = (
    "RFC 7515 §2 and §7.1: each segment is base64url without padding and without "
    "characters outside its alphabet (RFC 4648 §5); a token with '?' is malformed"
)
_SECRET_IN_A_SET = (
    "RFC 8725 §3.1 (the caller chooses the keys): an HMAC secret is configured per "
    "issuer (shared_secret), never taken from a JWK Set, which an issuer publishes"
)

#: Vectors Wycheproof calls valid that bearerguard refuses on purpose, and why.
STRICTER: dict[tuple[str, int], str] = {
    **{("json_web_signature_test", tc): _EMPTY_PAYLOAD for tc in (259, 264, 268, 272, 320, 325)},
    **{("json_web_signature_test", tc): _ALG_NOT_THE_KEYS for tc in (346, 347, 350, 351)},
    **{("json_web_signature_test", tc): _NOT_BASE64URL for tc in (372, 373)},
    ("json_web_key_test", 2): _SECRET_IN_A_SET,
    ("json_web_crypto_test", 48): _SECRET_IN_A_SET,
}

#: Vectors Wycheproof calls invalid whose token is byte for byte a valid vector of the
#: same group and key: no verifier can agree with both. Their comments say what they
#: meant (``=`` padding in the signature, in the payload); that is tested instead.
CONTRADICTORY: dict[tuple[str, int], tuple[int, str]] = {
    ("json_web_signature_test", 367): (357, "{h}.{p}.{s}="),
    ("json_web_signature_test", 370): (357, "{h}.{p}==.{s}"),
}


@dataclass(frozen=True)
class Group:
    file: str
    index: int
    comment: str
    group: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file.removesuffix('_test')}-{self.index}-{self.comment}"

    @property
    def is_jwe(self) -> bool:
        return any("jwe" in test for test in self.group["tests"])

    def key_source(self) -> dict[str, Any]:
        """What a deployment would configure: the public JWK (Set), or one secret."""
        if "public" in self.group:
            public = self.group["public"]
            return {"jwks": public if "keys" in public else {"keys": [public]}}
        private = self.group["private"]
        keys = private.get("keys", [private])
        if len(keys) == 1 and keys[0].get("kty") == "oct":
            return {"secret": keys[0]}
        return {"jwks": {"keys": keys}}


def _groups() -> list[Group]:
    found = []
    for name in FILES:
        document = json.loads((HERE / f"{name}.json").read_text())
        for index, group in enumerate(document["testGroups"]):
            found.append(Group(name, index, group["comment"], group))
    return found


GROUPS = _groups()
JWS_GROUPS = [g for g in GROUPS if not g.is_jwe]
JWE_GROUPS = [g for g in GROUPS if g.is_jwe]


def _token(test: dict[str, Any]) -> str:
    raw = test["jws"]
    return raw if isinstance(raw, str) else json.dumps(raw)


def outcome(file: str, test: dict[str, Any], verdict: Verdict) -> str:
    """``agree``, ``stricter`` (listed, with its reason) or what is wrong with the verdict."""
    if (file, test["tcId"]) in CONTRADICTORY:
        return "contradictory"
    expected_valid = test["result"] == "valid"
    listed = (file, test["tcId"]) in STRICTER
    if (verdict is None) == expected_valid:
        return "listed as stricter but agrees" if listed else "agree"
    if verdict is None:
        return "ACCEPTS AN INVALID VECTOR"
    return "stricter" if listed else f"refused ({verdict}) but not listed as stricter"


@pytest.fixture(scope="module")
def server() -> Iterator[TestIssuer]:
    """One loopback server for the whole module; each group serves its own JWK Set on it."""
    with TestIssuer(algorithms=("ES256",)) as issuer:
        yield issuer


async def judge_group(server: TestIssuer, group: Group) -> dict[int, str]:
    async with signature_layer(server, **group.key_source()) as layer:
        return {
            test["tcId"]: outcome(group.file, test, await layer.judge(_token(test)))
            for test in group.group["tests"]
        }


@pytest.mark.parametrize("group", JWS_GROUPS, ids=lambda g: g.id)
async def test_every_vector_agrees_or_is_deliberately_stricter(
    server: TestIssuer, group: Group
) -> None:
    outcomes = await judge_group(server, group)
    allowed = ("agree", "stricter", "contradictory")
    wrong = {tc: what for tc, what in outcomes.items() if what not in allowed}
    assert wrong == {}


def test_vector_counts() -> None:
    """The figures the conformance report quotes (agree / stricter / skipped).

    The test above proves each vector's class; this pins how many there are, so a
    newer Wycheproof commit shows up here as a changed figure.
    """
    total = sum(len(g.group["tests"]) for g in GROUPS)
    skipped = sum(len(g.group["tests"]) for g in JWE_GROUPS) + len(CONTRADICTORY)
    counts = {"agree": total - len(STRICTER) - skipped, "stricter": len(STRICTER)}
    assert (total, counts, skipped) == (510, {"agree": 460, "stricter": 14}, 36)


def test_every_stricter_entry_has_a_reason_and_a_vector() -> None:
    ids = {(g.file, t["tcId"]): t for g in JWS_GROUPS for t in g.group["tests"]}
    for key, reason in STRICTER.items():
        assert key in ids and ids[key]["result"] == "valid"
        assert "RFC" in reason


async def test_jwe_vectors_are_refused_by_the_validator(server: TestIssuer) -> None:
    """A resource server that verifies signatures accepts no encrypted token at all."""
    tokens = [t["jwe"] for g in JWE_GROUPS for t in g.group["tests"]]
    config = Issuer(server.issuer, audience="conformance", jwks_uri=server.jwks_uri)
    validator = TokenValidator([config])
    try:
        for token in tokens:
            with pytest.raises(InvalidToken) as refused:
                await validator.validate(token if isinstance(token, str) else json.dumps(token))
            assert refused.value.reason in ("jwe", "malformed")
    finally:
        await validator.aclose()
