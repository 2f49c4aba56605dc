"""Differential: mutations of valid tokens judged by bearerguard, PyJWT and joserfc alike.

The rule: bearerguard never accepts a token both others refuse. Every other
disagreement must be explained below: bearerguard refusing what another library
accepts is one of its deliberate rules (:data:`STRICTER`, by refusal reason, and
:data:`MALFORMED_BECAUSE` for the strict parser, by what the mutation did), and
bearerguard accepting what one library refuses is a known difference of that
library (:data:`OTHERS_STRICTER`). An unexplained disagreement fails the test with
the mutation that caused it.

``BEARERGUARD_DIFFERENTIAL_SEED`` picks another sequence of mutations (CI runs the
fixed default, so a failure reproduces).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from jwt.algorithms import get_default_algorithms

from bearerguard import AuthError, Issuer, TokenValidator
from bearerguard.testing import TestIssuer

from .differential import Mutant, Rules, judge_joserfc, judge_pyjwt, mutate

#: Mutants per signing algorithm: the RSA key gets most, the curves a share each.
MUTANTS = {"RS256": 600, "ES256": 200, "EdDSA": 200}
SEED = int(os.environ.get("BEARERGUARD_DIFFERENTIAL_SEED", "1016"))

#: bearerguard's refusal reason -> why it refuses what another library accepts.
STRICTER: dict[str, str] = {
    "bad_typ": "RFC 8725 §3.11 and RFC 9068 §2.1: typ says what the JWT is; only an "
    "access token's (at+jwt) or a plain JWT's is one, and typ is a string (RFC 7515 §4.1.9)",
    "bad_scope": "RFC 6749 §3.3: scope is scope-tokens separated by SP; another type or "
    "character is refused rather than read as some other scope",
    "bad_claim": "RFC 7519 §4.1.2/§4.1.7 and RFC 9068 §2.2: sub, jti and client_id are strings",
    "bad_cnf": "RFC 7800 §3.1: cnf is a non-empty object of confirmation methods",
    "unknown_kid": "RFC 7515 §4.1.4: kid names the issuer's key; PyJWT and joserfc were "
    "handed the one key directly and never read kid",
    "bad_exp": "RFC 7519 §2 and RFC 7493 §2.2: a NumericDate is a JSON number that fits a "
    "double; true and 2**64 are not dates",
    "bad_nbf": "RFC 7519 §2: a NumericDate is a JSON number, never a boolean",
    "bad_iat": "RFC 7519 §2: a NumericDate is a JSON number, never a boolean",
    "crit": "RFC 7515 §4.1.11: crit is a non-empty list of extensions the recipient "
    "understands; bearerguard understands none",
    "b64": "RFC 7797 §7: the unencoded-payload option is not for JWTs, so any b64 header "
    "is refused; the others ignore b64: true when crit does not name it",
}
#: A step of the mutation -> why the strict parser refuses the token as malformed.
MALFORMED_BECAUSE: dict[str, str] = {
    "char:pad": "RFC 7515 §2: base64url without padding; '=' is not in a compact JWS",
    "char:noncanonical": "RFC 4648 §3.5: unused bits are zero, one value has one spelling",
    "char:insert": "RFC 7515 §7.1: a segment holds base64url characters only",
    "text:duplicate_member": "RFC 7515 §5.2 and RFC 8725 §3.2 (I-JSON, RFC 7493 §2.3): "
    "duplicate member names are refused, never resolved one way or another",
    "text:bom": "RFC 8259 §8.1: JSON text carries no byte order mark",
    "text:lone_surrogate": "RFC 7493 §2.1: strings are valid Unicode; a lone surrogate is not",
    "text:big_float": "RFC 7493 §2.2: a number must fit an IEEE double; 1e400 does not",
    "text:nan": "RFC 8259 §6: NaN is not JSON",
    "text:deep_nesting": "nesting deeper than the parser's limit is refused, not recursed into",
    "text:trailing_garbage": "RFC 8259 §2: one JSON value, nothing after it",
    "text:array": "RFC 7515 §4 and RFC 7519 §7.2: the header and the claims are JSON objects",
}
#: (library, its error, a mutation step) -> why that library refuses what bearerguard accepts.
OTHERS_STRICTER: dict[tuple[str, str, str], str] = {
    ("joserfc", "UnsupportedHeaderError", "header:zip"): "zip is a JWE parameter (RFC 7516 "
    "§4.1.3); in a JWS it is an unknown header, which RFC 7515 §4 says to ignore",
}


def explain(mutant: Mutant, verdicts: dict[str, str | None]) -> str | None:
    """The explanation of a disagreement, ``None`` if there is none (a failure)."""
    ours = verdicts["bearerguard"]
    steps = [s.split("=")[0].replace("header-", "").replace("claim-", "") for s in mutant.steps]
    steps = [s.split("@")[0] for s in steps]
    if ours is None:
        for library in ("pyjwt", "joserfc"):
            error = verdicts[library]
            if error is not None:
                found = [OTHERS_STRICTER.get((library, error, s)) for s in steps]
                return next((f for f in found if f), None)
        return None
    if ours == "malformed":
        return next((MALFORMED_BECAUSE[s] for s in steps if s in MALFORMED_BECAUSE), None)
    return STRICTER.get(ours)


@pytest.fixture(scope="module", params=sorted(MUTANTS))
def issuer(request: pytest.FixtureRequest) -> Iterator[TestIssuer]:
    """An issuer whose one key signs with the parametrized algorithm."""
    with TestIssuer(algorithms=(request.param,)) as server:
        yield server


def judge_all(issuer: TestIssuer, mutants: list[Mutant]) -> list[dict[str, str | None]]:
    rules = Rules(issuer.issuer, issuer.audience, issuer.signing_alg)
    public_key = issuer.signing_key.public_key()
    jwk = next(k for k in issuer.jwks()["keys"] if k["kid"] == issuer.signing_kid)
    config = Issuer(
        issuer.issuer,
        audience=issuer.audience,
        jwks_uri=issuer.jwks_uri,
        algorithms=(rules.algorithm,),
        leeway=rules.leeway,
        discovery=False,
    )

    async def ours() -> list[str | None]:
        validator = TokenValidator([config], cache_size=0)
        verdicts: list[str | None] = []
        try:
            for mutant in mutants:
                try:
                    await validator.validate(mutant.token)
                    verdicts.append(None)
                except AuthError as error:
                    verdicts.append(error.reason)
        finally:
            await validator.aclose()
        return verdicts

    return [
        {
            "bearerguard": verdict,
            "pyjwt": judge_pyjwt(mutant.token, public_key, rules),
            "joserfc": judge_joserfc(mutant.token, jwk, rules),
        }
        for mutant, verdict in zip(mutants, asyncio.run(ours()), strict=True)
    ]


def mutants(issuer: TestIssuer, count: int, seed: int) -> list[Mutant]:
    rng = random.Random(seed)
    algorithm = get_default_algorithms()[issuer.signing_alg]
    rules = Rules(issuer.issuer, issuer.audience, issuer.signing_alg)

    def sign(data: bytes) -> bytes:
        return bytes(algorithm.sign(data, issuer.signing_key))

    now = int(time.time())
    return [mutate(issuer.mint({"scope": "read"}), sign, rules, now, rng) for _ in range(count)]


def test_the_unmutated_token_is_accepted_by_all_three(issuer: TestIssuer) -> None:
    (verdicts,) = judge_all(issuer, [Mutant(issuer.mint({"scope": "read"}), ())])
    assert verdicts == {"bearerguard": None, "pyjwt": None, "joserfc": None}


def test_bearerguard_never_accepts_what_both_others_refuse_and_every_difference_is_explained(
    issuer: TestIssuer,
) -> None:
    count = MUTANTS[issuer.signing_alg]
    drawn = mutants(issuer, count, SEED)
    outcomes: Counter[str] = Counter()
    unexplained: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for mutant, verdicts in zip(drawn, judge_all(issuer, drawn), strict=True):
        accepted = {name: verdict is None for name, verdict in verdicts.items()}
        if accepted["bearerguard"] and not accepted["pyjwt"] and not accepted["joserfc"]:
            unexplained.append((mutant.steps, {"BEARERGUARD ACCEPTS WHAT BOTH REFUSE": verdicts}))
        elif len(set(accepted.values())) == 1:
            outcomes["agree"] += 1
        elif explain(mutant, verdicts) is None:
            unexplained.append((mutant.steps, verdicts))
        else:
            outcomes["explained"] += 1
    assert not unexplained, "\n".join(f"{steps}: {verdicts}" for steps, verdicts in unexplained)
    # The mutations must reach every kind of outcome, or the test proves little.
    assert outcomes["agree"] > count // 2 and outcomes["explained"] > count // 20
