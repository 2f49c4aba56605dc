"""For any DPoP proof, the outcome is a verified proof or a DPoP refusal: never another exception.

A proof is client input end to end: its header (``typ``, ``alg``, the embedded
``jwk``), its claims and its signature. Each property starts from a right proof
and bends what Hypothesis picks (any JSON value where a member was, a private
key, another key's signature, the same JSON re-signed), then checks what
:meth:`DPoPGuard.check` does with it: a :class:`Proof` only when every RFC 9449
§4.3 check holds, otherwise :class:`InvalidDPoPProof`, never anything else (which
the middleware would have to turn into a 500).
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bearerguard._dpop import DPoPGuard, DPoPPolicy, Proof, jwk_thumbprint
from bearerguard._errors import InvalidDPoPProof
from bearerguard.testing import DPoPKey, ManualClock

from .strategies import json_values

NOW = 1_800_000_000.0
URL = "https://api.example.com/items"
TOKEN = "an-access-token"
DIGEST = hashlib.sha256(TOKEN.encode()).digest()
KEYS = {alg: DPoPKey(alg) for alg in ("ES256", "EdDSA", "PS256")}
OTHER = DPoPKey("ES256")
GUARD = DPoPGuard(DPoPPolicy(), identity="conformance", clock=ManualClock(NOW))
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "scheme": "https",
    "path": "/items",
    "raw_path": b"/items",
    "headers": [(b"host", b"api.example.com")],
}

some = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: What a header member may be replaced with: anything, or a value that is right elsewhere.
header_values = (
    json_values
    | st.sampled_from(["dpop+jwt", "DPoP+JWT", "JWT", "ES256", "EdDSA", "PS256", "none", "HS256"])
    | st.sampled_from([k.jwk for k in KEYS.values()])
    | st.sampled_from([k.private_jwk() for k in KEYS.values()])
)
claim_values = json_values | st.sampled_from(
    ["GET", "get", URL, URL + "?q=1", "https://api.example.com/other", NOW, NOW - 3600, NOW + 3600]
)


def judge(proof: str) -> Proof | InvalidDPoPProof:
    scope = {**SCOPE, "headers": [*SCOPE["headers"], (b"dpop", proof.encode("utf-8", "replace"))]}
    try:
        return GUARD.check(scope, DIGEST)
    except InvalidDPoPProof as refusal:
        return refusal


@some
@given(
    alg=st.sampled_from(sorted(KEYS)),
    header=st.dictionaries(st.sampled_from(["typ", "alg", "jwk", "crit", "kid"]), header_values),
    claims=st.dictionaries(
        st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce"]), claim_values
    ),
    other_signer=st.booleans(),
)
def test_any_bent_proof_is_verified_or_refused_never_a_crash(
    alg: str, header: dict[str, Any], claims: dict[str, Any], other_signer: bool
) -> None:
    key = KEYS[alg]
    signer = OTHER if other_signer else None
    proof = key.proof(
        "GET", URL, token=TOKEN, iat=NOW, headers=header, claims=claims, signer=signer
    )
    outcome = judge(proof)
    if isinstance(outcome, Proof):
        # Accepted: then every rule held, and the key is the one whose thumbprint it names.
        assert not other_signer
        assert "jwk" not in header or header["jwk"] == key.jwk
        assert outcome.jkt == jwk_thumbprint(key.jwk) == key.thumbprint
    else:
        assert outcome.status == 401 and outcome.error == "invalid_dpop_proof"
        assert outcome.reason.startswith("dpop_")


@some
@given(proof=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_header_value_is_verified_or_refused_never_a_crash(proof: str) -> None:
    outcome = judge(proof)
    assert isinstance(outcome, InvalidDPoPProof), outcome


@some
@given(
    segments=st.lists(
        st.sampled_from(
            [
                KEYS["ES256"].proof("GET", URL, token=TOKEN, iat=NOW).split(".")[0],
                KEYS["EdDSA"].proof("GET", URL, token=TOKEN, iat=NOW).split(".")[1],
                "",
                "e30",
                "AAAA",
                "_-_-",
            ]
        ),
        min_size=1,
        max_size=5,
    )
)
def test_spliced_proofs_are_refused(segments: list[str]) -> None:
    outcome = judge(".".join(segments))
    assert isinstance(outcome, InvalidDPoPProof), outcome
