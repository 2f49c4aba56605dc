"""Three judges for one token (bearerguard, PyJWT, joserfc) and the mutations they are shown.

Every judge gets the same public key and the same rules: the key's one algorithm
(RS256, ES256 or EdDSA), ``iss`` exact, ``aud`` one of ours, ``exp`` required, 60 s
of leeway. The mutations start
from a valid access token and change it the way an attacker or a broken issuer
would: characters of the compact form, header members, claim values and types, the
JSON text itself; a structural change is then signed again with the issuer's key
most of the time, so the rules (not the signature) decide.
"""

from __future__ import annotations

import base64
import json
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from joserfc import jwt as jose_jwt
from joserfc.jwk import import_key

__all__ = ["Mutant", "Rules", "judge_joserfc", "judge_pyjwt", "mutate"]

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class Rules:
    issuer: str
    audience: str
    algorithm: str = "RS256"
    leeway: int = 60


@dataclass(frozen=True)
class Mutant:
    token: str
    #: What was done, in order (``"claim:exp=True"``, ``"char:flip"``, ``"resigned"``).
    steps: tuple[str, ...]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- the judges --------------------------------------------------------------------------


def judge_pyjwt(token: str, public_key: Any, rules: Rules) -> str | None:
    """``None`` when PyJWT accepts, else the exception's name."""
    try:
        pyjwt.decode(
            token,
            public_key,
            algorithms=[rules.algorithm],
            audience=rules.audience,
            issuer=rules.issuer,
            leeway=rules.leeway,
            options={"require": ["exp", "iss", "aud"]},
        )
    except Exception as error:  # any refusal, whatever its type
        return type(error).__name__
    return None


def judge_joserfc(token: str, jwk: dict[str, Any], rules: Rules) -> str | None:
    """``None`` when joserfc accepts, else the exception's name."""
    try:
        key = import_key(jwk)
        with warnings.catch_warnings():
            # joserfc warns that RFC 9864 deprecates EdDSA for Ed25519; the token says EdDSA.
            warnings.simplefilter("ignore")
            decoded = jose_jwt.decode(token, key, algorithms=[rules.algorithm])
        registry = jose_jwt.JWTClaimsRegistry(
            leeway=rules.leeway,
            iss={"essential": True, "value": rules.issuer},
            aud={"essential": True, "value": rules.audience},
            exp={"essential": True},
        )
        registry.validate(decoded.claims)
    except Exception as error:  # any refusal, whatever its type
        return type(error).__name__
    return None


# -- the mutations ------------------------------------------------------------------------

Sign = Callable[[bytes], bytes]

#: Claim values at the edges of the rules: wrong types, out-of-range numbers, near misses.
CLAIM_EDGES: dict[str, list[Any]] = {
    "exp": ["soon", True, 1e20, 2**64, -1, None, [1], 3000000000.5],
    "nbf": ["x", True, "FUTURE", 2**64, None],
    "iat": ["x", "FUTURE", False, 2**64, None],
    "iss": ["ISS/", "ISS".lower(), 5, None, ["ISS"]],
    "aud": [5, [], ["AUD", 5], ["other"], "other", {"AUD": 1}, None, "AUD "],
    "sub": [5, None, ["x"], True],
    "jti": [5, {"a": 1}],
    "client_id": [7, ["c"]],
    "scope": [5, "a\u2003b", ["a", 1], 'a"b'],
    "cnf": ["x", {}, {"jkt": "abc"}],
}
HEADER_EDGES: dict[str, list[Any]] = {
    "alg": ["none", "HS256", "RS384", "PS256", "rs256", "", None, 5],
    "typ": ["JWT", "jwt", "foo", 5, None, "application/at+jwt", "JOSE"],
    "kid": ["unknown", 5, None, "", {"a": 1}],
    "crit": [["exp"], [], "exp", ["b64"]],
    "b64": [False, True],
    "jwk": [{"kty": "oct", "k": "AAAA"}],
    "jku": ["https://attacker.example/jwks"],
    "zip": ["DEF"],
}
TEXT_EDITS = (
    "duplicate_member",
    "whitespace",
    "unicode_escapes",
    "lone_surrogate",
    "nan",
    "trailing_garbage",
    "bom",
    "array",
    "big_float",
    "deep_nesting",
)


def _substitute(value: Any, rules: Rules, now: int) -> Any:
    if value == "FUTURE":
        return now + 3600
    if isinstance(value, str):
        return value.replace("ISS", rules.issuer).replace("AUD", rules.audience)
    if isinstance(value, list):
        return [_substitute(v, rules, now) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, rules, now): v for k, v in value.items()}
    return value


def _text_edit(text: str, edit: str, rng: random.Random) -> str:
    body = json.loads(text)
    if edit == "duplicate_member":
        name = rng.choice(sorted(body)) if body else "x"
        return text[:-1] + f',"{name}":"second"' + "}"
    if edit == "whitespace":
        return json.dumps(body, indent=2)
    if edit == "unicode_escapes":
        return json.dumps(body, ensure_ascii=True).replace('"iss"', '"\\u0069ss"')
    if edit == "lone_surrogate":
        return text[:-1] + ',"x":"\\ud800"}'
    if edit == "nan":
        return text[:-1] + ',"x":NaN}'
    if edit == "trailing_garbage":
        return text + " x"
    if edit == "bom":
        return "\ufeff" + text
    if edit == "array":
        return "[" + text + "]"
    if edit == "big_float":
        return text[:-1] + ',"x":1e400}'
    return text[:-1] + ',"x":' + "[" * 2000 + "]" * 2000 + "}"


def mutate(token: str, sign: Sign, rules: Rules, now: int, rng: random.Random) -> Mutant:
    """One to two random changes to ``token``, re-signed afterwards four times in five."""
    head, payload, signature = token.split(".")
    header_text = unb64(head).decode()
    claims_text = unb64(payload).decode()
    steps: list[str] = []
    kinds = [
        rng.choice(("char", "char", "header", "claim", "claim", "claim", "text"))
        for _ in range(rng.choice((1, 1, 2)))
    ]
    # A text edit may leave JSON nothing else can parse: it comes last, and only once.
    kinds = sorted(set(kinds), key=lambda k: k == "text")
    for kind in kinds:
        if kind == "header":
            header_text, step = _edit_member(header_text, HEADER_EDGES, rng, lambda v: v)
            steps.append(f"header:{step}")
        elif kind == "claim":
            claims_text, step = _edit_member(
                claims_text, CLAIM_EDGES, rng, lambda v: _substitute(v, rules, now)
            )
            steps.append(f"claim:{step}")
        elif kind == "text":
            edit = rng.choice(TEXT_EDITS)
            if rng.random() < 0.3:
                header_text = _text_edit(header_text, edit, rng)
                steps.append(f"header-text:{edit}")
            else:
                claims_text = _text_edit(claims_text, edit, rng)
                steps.append(f"claim-text:{edit}")
    structural = kinds != ["char"]
    encoded = [b64(header_text.encode("utf-8", "surrogatepass")), b64(claims_text.encode("utf-8"))]
    if structural and rng.random() < 0.8:
        signature = b64(sign(".".join(encoded).encode("ascii")))
        steps.append("resigned")
    compact = [*encoded, signature]
    if "char" in kinds:
        compact, step = _char_edit(compact, rng)
        steps.append(step)
    return Mutant(".".join(compact), tuple(steps))


CHAR_EDITS = ("flip", "delete", "insert", "pad", "noncanonical", "swap", "truncate", "dot")


def _edit_member(
    text: str, edges: dict[str, list[Any]], rng: random.Random, fill: Callable[[Any], Any]
) -> tuple[str, str]:
    """One member of a JSON object set to one of its edge values (``None`` removes it)."""
    document = json.loads(text)
    name = rng.choice(sorted(edges))
    value = fill(rng.choice(edges[name]))
    if value is None:
        document.pop(name, None)
    else:
        document[name] = value
    return json.dumps(document, separators=(",", ":")), f"{name}={value!r}"


def _char_edit(segments: list[str], rng: random.Random) -> tuple[list[str], str]:
    index = rng.randrange(3)
    segment = segments[index]
    where = rng.randrange(max(1, len(segment)))
    edit = rng.choice(CHAR_EDITS)
    if edit == "flip" and segment:
        segment = segment[:where] + rng.choice(B64URL) + segment[where + 1 :]
    elif edit == "delete":
        segment = segment[:where] + segment[where + 1 :]
    elif edit == "insert":
        segment = segment[:where] + rng.choice(B64URL + "=+/ ~.") + segment[where:]
    elif edit == "pad":
        segment = segment + "=" * rng.choice((1, 2))
    elif edit == "noncanonical" and segment and len(segment) % 4 in (2, 3):
        # The same bytes, spelled with unused low bits set (RFC 4648 §3.5).
        last = B64URL.index(segment[-1])
        segment = segment[:-1] + B64URL[last | (0b1111 if len(segment) % 4 == 2 else 0b11)]
    elif edit == "swap":
        segments = [segments[1], segments[0], segments[2]]
        return segments, "char:swap"
    elif edit == "truncate":
        segment = segment[: len(segment) // 2]
    elif edit == "dot":
        segment = segment[:where] + "." + segment[where:]
    segments = [*segments[:index], segment, *segments[index + 1 :]]
    return segments, f"char:{edit}@{('header', 'payload', 'signature')[index]}"
