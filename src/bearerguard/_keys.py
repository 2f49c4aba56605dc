"""Where a key is chosen: JWKs parsed once per fetch into ready verifiers, indexed by ``kid``.

Everything expensive about a key (decoding its members, building the
``cryptography`` object, checking it is fit for an algorithm) happens here, once
per fetch, so the request path only looks up a tuple and calls ``verify``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

__all__ = ["KeySet", "VerificationKey", "has_roca_fingerprint", "shared_secret_keys"]

log = logging.getLogger("bearerguard.keys")

_ALGORITHMS = get_default_algorithms()

#: Which JWK a token's ``alg`` may be verified with (RFC 7518 §3.1, RFC 8037 §3.1).
_KTY_FOR_ALG: dict[str, str] = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}
_CRV_FOR_ALG: dict[str, frozenset[str]] = {
    "ES256": frozenset({"P-256"}),
    "ES384": frozenset({"P-384"}),
    "ES512": frozenset({"P-521"}),
    "EdDSA": frozenset({"Ed25519", "Ed448"}),
}
#: Only the public members are handed to the parser: a JWKS that leaks a private
#: key must not turn verification into something else.
_PUBLIC_MEMBERS: dict[str, tuple[str, ...]] = {
    "RSA": ("kty", "n", "e"),
    "EC": ("kty", "crv", "x", "y"),
    "OKP": ("kty", "crv", "x"),
}
#: RFC 7518 §3.3 and §4.2: RSA keys of 2048 bits or larger MUST be used.
MIN_RSA_BITS = 2048
#: Most keys one token is tried against (a token without ``kid``, or a JWKS that lists
#: one ``kid`` many times): forging against a large JWKS costs a few verifications.
MAX_CANDIDATES = 4
#: RFC 7518 §3.2: an HMAC key at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def _roca_masks(bound: int) -> tuple[tuple[int, int], ...]:
    """For each odd prime r up to ``bound``: a bitmask of the powers of 65537 modulo r."""
    primes = [r for r in range(3, bound + 1) if all(r % d for d in range(2, math.isqrt(r) + 1))]
    masks = []
    for r in primes:
        mask, power = 0, 1
        while not mask >> power & 1:
            mask |= 1 << power
            power = power * 65537 % r
        masks.append((r, mask))
    return tuple(masks)


#: CVE-2017-15361 (ROCA, Nemec et al., CCS 2017): Infineon's RSALib made primes
#: ``k * M + (65537**a mod M)`` with M the product of the first primes, so the
#: modulus is a power of 65537 modulo each of them. For keys of 1984 bits and more
#: (smaller ones are refused anyway) M holds every prime up to 701: 125 tests, which
#: a random modulus passes with probability about 2**-167.
_ROCA_MASKS = _roca_masks(701)


def has_roca_fingerprint(modulus: int) -> bool:
    """True when an RSA modulus has the ROCA fingerprint: its private key can be computed.

    125 remainders of small primes, done once per key per fetch, never per request.
    """
    return all(mask >> (modulus % r) & 1 for r, mask in _ROCA_MASKS)


class VerificationKey:
    """One key fit for exactly one algorithm, ready to verify.

    ``active`` turns false when a later fetch no longer lists the key, so results
    cached on its word stop being served (RFC 7517 rotation). ``bound_issuer`` is
    the JWK's own ``issuer`` member, when it has one: Entra ID's shared key set says
    which issuer (or issuer template) each key may sign for.
    """

    __slots__ = (
        "_alg_obj",
        "_identity",
        "_key",
        "active",
        "alg",
        "bound_issuer",
        "issuer",
        "kid",
        "kty",
    )

    def __init__(
        self,
        *,
        kid: str | None,
        alg: str,
        kty: str,
        key: Any,
        issuer: str,
        bound_issuer: str | None = None,
    ) -> None:
        self.kid = kid
        self.alg = alg
        self.kty = kty
        self.issuer = issuer
        self.bound_issuer = bound_issuer
        self._key = key
        self._alg_obj = _ALGORITHMS[alg]
        self.active = True
        # Once, here: whatever the material, it fails while the key is parsed (and skipped).
        self._identity = (kid, alg, _fingerprint(key))

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        if self.kty == "oct":
            expected = self._alg_obj.sign(signing_input, self._key)
            return hmac.compare_digest(expected, signature)
        return bool(self._alg_obj.verify(signing_input, self._key, signature))

    def identity(self) -> tuple[str | None, str, str]:
        """What makes two fetches' keys the same key (kid, alg and public material)."""
        return self._identity

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, alg={self.alg!r}, issuer={self.issuer!r})"


def _fingerprint(key: Any) -> str:
    """SHA-256 of the public key's DER form: fixed-size, whatever the key's size.

    (A decimal repr of the numbers overflowed Python's int-to-str limit for RSA
    keys of 16384 bits.)
    """
    if isinstance(key, bytes):
        return "oct"
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


class KeySet:
    """An immutable snapshot of one issuer's keys, as served by one fetch of its JWKS."""

    __slots__ = ("_by_alg", "_by_kid", "fetched_at", "issuer", "keys", "skipped")

    def __init__(
        self,
        issuer: str,
        keys: Iterable[VerificationKey],
        *,
        fetched_at: float = 0.0,
        skipped: int = 0,
    ) -> None:
        self.issuer = issuer
        self.keys: tuple[VerificationKey, ...] = tuple(keys)
        self.fetched_at = fetched_at
        self.skipped = skipped
        by_kid: dict[str, dict[str, list[VerificationKey]]] = {}
        by_alg: dict[str, list[VerificationKey]] = {}
        for key in self.keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, {}).setdefault(key.alg, []).append(key)
            by_alg.setdefault(key.alg, []).append(key)
        top = MAX_CANDIDATES
        self._by_kid = {k: {a: tuple(v[:top]) for a, v in d.items()} for k, d in by_kid.items()}
        self._by_alg = {a: tuple(v[:top]) for a, v in by_alg.items()}

    def candidates(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...] | None:
        """Keys that may verify a token with this header.

        ``None`` means the ``kid`` is unknown (a refresh may help); an empty tuple
        means the kid is known but no key of it is fit for ``alg`` (no refresh helps).
        A token without ``kid`` is only tried against keys whose algorithm matches,
        and never more than :data:`MAX_CANDIDATES` of them (the first the JWKS lists).
        """
        if kid is None:
            return self._by_alg.get(alg, ())
        by_alg = self._by_kid.get(kid)
        if by_alg is None:
            return None
        return by_alg.get(alg, ())

    def retire_missing(self, newer: KeySet) -> int:
        """Mark keys absent from ``newer`` inactive; return how many were retired."""
        still = {k.identity() for k in newer.keys}
        retired = 0
        for key in self.keys:
            if key.identity() not in still:
                if key.active:
                    retired += 1
                key.active = False
        return retired

    def adopt_from(self, older: KeySet) -> KeySet:
        """Reuse ``older``'s objects for unchanged keys, so caches keyed on them stay valid."""
        previous = {k.identity(): k for k in older.keys if k.active}
        merged = [previous.get(k.identity(), k) for k in self.keys]
        return KeySet(self.issuer, merged, fetched_at=self.fetched_at, skipped=self.skipped)

    @classmethod
    def from_jwks(
        cls,
        document: Any,
        *,
        issuer: str,
        algorithms: Iterable[str],
        max_keys: int = 100,
        fetched_at: float = 0.0,
    ) -> KeySet:
        """Parse a JWKS document; a key that is malformed or unfit is skipped, not fatal.

        Raises ``ValueError`` only when the document itself is not a JWK Set.
        """
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWK Set: expected an object with a 'keys' array")
        allowed = [a for a in algorithms if a in _KTY_FOR_ALG]
        keys: list[VerificationKey] = []
        skipped = 0
        for jwk in document["keys"][:max_keys]:
            parsed = _parse_jwk(jwk, issuer=issuer, allowed=allowed)
            if not parsed:
                skipped += 1
            keys.extend(parsed)
        skipped += max(0, len(document["keys"]) - max_keys)
        return cls(issuer, keys, fetched_at=fetched_at, skipped=skipped)


def _parse_jwk(jwk: Any, *, issuer: str, allowed: list[str]) -> list[VerificationKey]:
    """One JWK to zero or more verifiers, one per algorithm it is fit for.

    Whatever a JWK holds, the worst it can do is be skipped: one hostile key must
    not cost the issuer's whole key set.
    """
    try:
        return _read_jwk(jwk, issuer=issuer, allowed=allowed)
    except Exception as exc:
        kid = jwk.get("kid") if isinstance(jwk, Mapping) else None
        log.warning(
            "bearerguard.jwks.key_skipped kid=%r reason=%s",
            kid if isinstance(kid, str) else None,
            type(exc).__name__,
        )
        return []


def _read_jwk(jwk: Any, *, issuer: str, allowed: list[str]) -> list[VerificationKey]:
    if not isinstance(jwk, Mapping):
        return []
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return []
    use = jwk.get("use")
    if use is not None and use != "sig":
        return []
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return []
    declared = jwk.get("alg")
    if declared is not None and not isinstance(declared, str):
        return []
    bound = jwk.get("issuer")
    if bound is not None and not isinstance(bound, str):
        return []  # a key whose scope we cannot read signs for nobody
    if kty not in _PUBLIC_MEMBERS:
        # ``oct`` keys are never taken from a JWKS: HMAC needs a configured secret.
        return []
    fit = [
        alg
        for alg in allowed
        if _KTY_FOR_ALG[alg] == kty
        and (declared is None or declared == alg)
        and (alg not in _CRV_FOR_ALG or jwk.get("crv") in _CRV_FOR_ALG[alg])
    ]
    if not fit:
        return []
    public = {m: jwk[m] for m in _PUBLIC_MEMBERS[kty] if m in jwk}
    try:
        material = _ALGORITHMS[fit[0]].from_jwk(dict(public))
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        log.warning("bearerguard.jwks.key_skipped kid=%r reason=%s", kid, type(exc).__name__)
        return []
    if isinstance(material, rsa.RSAPublicKey):
        if material.key_size < MIN_RSA_BITS:
            log.warning("bearerguard.jwks.key_skipped kid=%r reason=rsa_too_small", kid)
            return []
        if has_roca_fingerprint(material.public_numbers().n):
            # Anyone can compute the private key (CVE-2017-15361): a forgery, not a signature.
            log.warning("bearerguard.jwks.key_skipped kid=%r reason=rsa_roca", kid)
            return []
    if isinstance(material, ec.EllipticCurvePublicKey) and kty != "EC":
        return []
    return [
        VerificationKey(kid=kid, alg=alg, kty=kty, key=material, issuer=issuer, bound_issuer=bound)
        for alg in fit
    ]


def shared_secret_keys(
    secret: str | bytes, *, issuer: str, algorithms: Iterable[str]
) -> list[VerificationKey]:
    """Verifiers for a deliberately configured HMAC secret (never from a JWKS)."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    keys = []
    for alg in algorithms:
        if alg in _HMAC_MIN_BYTES:
            if len(raw) < _HMAC_MIN_BYTES[alg]:
                raise ValueError(
                    f"{alg} needs a shared secret of at least {_HMAC_MIN_BYTES[alg]} bytes"
                )
            keys.append(VerificationKey(kid=None, alg=alg, kty="oct", key=raw, issuer=issuer))
    return keys
