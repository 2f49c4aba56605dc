"""DPoP (RFC 9449): a token bound to a key is only good with a fresh proof signed by that key.

A DPoP request carries ``Authorization: DPoP <token>`` and one ``DPoP`` header: a
JWT the client signed with the private half of the key its token is bound to
(``cnf.jkt``, the key's RFC 7638 thumbprint). The proof names the request it was
made for (``htm``, ``htu``), when (``iat``), which token (``ath``) and carries a
``jti`` the server accepts once, so a stolen token is useless without the key and
a stolen proof is useless for any other request.

Why it is shaped this way:

* The proof is verified on every request (that is its point), but everything a
  client repeats is judged once: its header (``typ``, ``alg``, the embedded public
  key, the key's thumbprint) is kept by its encoded form, so a request pays for
  one signature check and a few comparisons, not for building a key.
* The token itself goes through the validator and its cache like any other: a
  DPoP request costs a cache hit plus the proof.
* The ``jti`` store follows the rate limits' storage: in process, a bounded dict
  (one proof key holds at most an eighth of it; a full one is a 503, never an
  eviction or a pass that would reopen a replay window);
  in Redis, one atomic increment per proof through ``limits``. Keys name this API's
  identity, the proof's key and the ``jti``, so APIs sharing a Redis never see each
  other's proofs, and an outage fails open or closed as configured.
* Server nonces (RFC 9449 §8) are derived from a configured secret and the time
  step, so every replica makes and accepts the same nonces without sharing state.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError
from starlette.types import Scope

from bearerguard._config import ASYMMETRIC_ALGORITHMS, hidden_repr
from bearerguard._errors import InvalidDPoPProof, Reason, Unavailable, UseDPoPNonce
from bearerguard._jws import looks_like_jws, parse_jws
from bearerguard._keys import (
    _CRV_FOR_ALG,
    _KTY_FOR_ALG,
    _PUBLIC_MEMBERS,
    MIN_RSA_BITS,
    VerificationKey,
)

if TYPE_CHECKING:  # limits (and redis) are imported only when a Redis store is configured
    from bearerguard._ratelimit_storage import SharedStorage

__all__ = [
    "DEFAULT_DPOP_ALGORITHMS",
    "DEFAULT_DPOP_MAX_AGE",
    "DPOP_SCOPE_KEY",
    "DPoPGuard",
    "DPoPMode",
    "DPoPPolicy",
    "Proof",
    "jwk_thumbprint",
]

log = logging.getLogger("bearerguard.dpop")

DPoPMode = Literal["allowed", "required", "disabled"]

#: Proof algorithms accepted by default: the asymmetric ones, ES256 first (RFC 9449 §4.2).
DEFAULT_DPOP_ALGORITHMS: tuple[str, ...] = (
    "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512",
    "EdDSA", "Ed25519",
)  # fmt: skip
#: RFC 9864's fully-specified EdDSA names: the curve is in the name, the check is EdDSA's.
#: DPoP clients such as oauth4webapi sign proofs as ``Ed25519``.
_FULLY_SPECIFIED: dict[str, str] = {"Ed25519": "Ed25519", "Ed448": "Ed448"}
#: Every algorithm a proof may name (RFC 9449 §4.3: asymmetric only).
_PROOF_ALGORITHMS = ASYMMETRIC_ALGORITHMS | frozenset(_FULLY_SPECIFIED)
#: How old a proof may be, in seconds (RFC 9449 §11.1: a window of a few minutes at most).
DEFAULT_DPOP_MAX_AGE = 300.0
#: Where a verified proof is left on the ASGI scope (its key's thumbprint, for the app).
DPOP_SCOPE_KEY = "bearerguard.dpop"

#: A proof carries one public key and a signature: a few KiB at most (RSA 4096 is ~2 KiB).
MAX_PROOF_LENGTH = 8192
#: A ``jti`` is a random identifier (RFC 9449 §4.2 suggests 96 bits); more is not an identifier.
_MAX_JTI_LENGTH = 256
#: JWK members that make it a private key (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS: dict[str, tuple[str, ...]] = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
#: The largest RSA proof key taken (bits) and public exponent: a proof is verified before
#: its token is judged, so its cost is what anyone can make us pay per request. An
#: 8192-bit key verifies in ~0.8 ms (17x an ES256 proof); 4096 bits with e <= 65537
#: stays within about twice ES256 (measured, cryptography on OpenSSL 3).
_MAX_RSA_BITS = 4096
_MAX_RSA_EXPONENT = 65537
#: Spent proofs an in-process replay store remembers at most (about 100 MB when full).
_MAX_REMEMBERED = 1_000_000
#: Live proofs one proof key may have in that store (over a 5-minute window, ~400 a
#: second): past it that client's proofs are refused, so no single client fills the store.
_MAX_PER_PROOF_KEY = _MAX_REMEMBERED // 8
#: Judged proof headers kept by their encoded form; the cache starts over when full.
_KEY_CACHE_SIZE = 1024
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
#: A Host header (RFC 9110 §7.2): a host name, IPv4 or [IPv6] address, and an optional port.
#: Anything else (a path, user info, an unparseable address) names no URL a proof could be for.
_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?", re.ASCII)
_WEB_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_ALGORITHMS = get_default_algorithms()
#: Fields a repr shows as ``'***'``.
_SECRET_FIELDS = frozenset({"nonce_secret"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK: what ``cnf.jkt`` holds (RFC 9449 §6.1)."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass(frozen=True, slots=True)
class DPoPPolicy:
    """How DPoP proofs are judged; checked when made, so a mistake fails at startup.

    ``mode``: ``"allowed"`` takes ``Bearer`` for unbound tokens and ``DPoP`` for
    bound ones, ``"required"`` takes DPoP-bound tokens only, ``"disabled"`` never
    reads a DPoP proof (and bound tokens are then always refused).
    ``public_url`` is the origin clients use (``https://api.example.com``, plus any
    path prefix a proxy strips): behind a proxy the request's own scheme and host
    are not what the client signed. A proof is accepted from ``max_age`` seconds
    in the past to ``leeway`` seconds in the future; its ``jti`` is remembered that
    long. ``nonce`` turns on server nonces (RFC 9449 §8), derived from
    ``nonce_secret`` and the time, valid for ``nonce_lifetime`` to twice that, the
    same on every replica given the same secret.
    """

    mode: DPoPMode = "allowed"
    algorithms: Sequence[str] = DEFAULT_DPOP_ALGORITHMS
    public_url: str | None = None
    max_age: float = DEFAULT_DPOP_MAX_AGE
    leeway: float = 60.0
    replay_storage: str = "memory://"
    #: A replay store outage: refuse with 503 (True) or accept proofs unchecked for replay.
    replay_fail_closed: bool = False
    #: Ask for server nonces (RFC 9449 §8); needs ``nonce_secret``.
    nonce: bool = False
    nonce_secret: str | bytes | None = None
    nonce_lifetime: float = 300.0

    def __repr__(self) -> str:
        """Every field, but never the nonce secret or the replay store's password."""
        return hidden_repr(self, _SECRET_FIELDS)

    def __post_init__(self) -> None:
        if self.mode not in ("allowed", "required", "disabled"):
            raise ValueError(f"dpop must be 'allowed', 'required' or 'disabled', not {self.mode!r}")
        algorithms = tuple(self.algorithms)
        if not algorithms:
            raise ValueError("dpop_algorithms must not be empty")
        wrong = [a for a in algorithms if a not in _PROOF_ALGORITHMS]
        if wrong:
            # RFC 9449 §4.3: a proof's alg is asymmetric; never none, never a MAC.
            raise ValueError(f"DPoP proofs need asymmetric algorithms; not {wrong}")
        object.__setattr__(self, "algorithms", algorithms)
        for name in ("max_age", "leeway", "nonce_lifetime"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"dpop {name} must be a finite number >= 0")
        if self.nonce_lifetime < 1:
            raise ValueError("dpop nonce_lifetime must be at least one second")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("public_url must be an absolute http(s) URL")
            if parts.query or parts.fragment or parts.username or parts.password:
                raise ValueError("public_url must not carry a query, fragment or user info")
        if self.nonce and self.nonce_secret is None:
            raise ValueError(
                "dpop_nonce=True needs dpop_nonce_secret= (the same secret on every replica)"
            )
        if self.nonce_secret is not None:
            if not self.nonce:
                raise ValueError("dpop_nonce_secret is only used with dpop_nonce=True")
            if len(_secret_bytes(self.nonce_secret)) < 32:
                raise ValueError("dpop_nonce_secret must be at least 32 bytes (256 bits)")


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


@dataclass(frozen=True, slots=True)
class Proof:
    """A DPoP proof that verified: its key's thumbprint and what the replay check needs."""

    jkt: str
    jti: str
    iat: float
    #: A fresher nonce to hand the client on success (its nonce is about to expire).
    next_nonce: str | None = None


class _ProofHeader:
    """A proof header judged once: its key, ready to verify, and the key's thumbprint."""

    __slots__ = ("jkt", "key")

    def __init__(self, key: VerificationKey, jkt: str) -> None:
        self.key = key
        self.jkt = jkt


def _refuse(
    description: str,
    reason: Reason,
    *,
    claim: str | None = None,
    expected: Any = None,
    found: Any = None,
) -> InvalidDPoPProof:
    """A DPoP refusal; ``claim``/``expected``/``found`` are for explanations, never sent."""
    return InvalidDPoPProof(description, reason=reason, claim=claim, expected=expected, found=found)


def _judge_header(header: dict[str, Any], algorithms: frozenset[str]) -> _ProofHeader:
    """RFC 9449 §4.3 checks 4, 5 and 7: ``typ``, an allowed asymmetric ``alg``, a public ``jwk``."""
    typ = header.get("typ")
    if type(typ) is not str or typ.lower() not in ("dpop+jwt", "application/dpop+jwt"):
        raise _refuse("The DPoP proof's typ must be dpop+jwt", "dpop_bad_typ")
    alg = header.get("alg")
    if type(alg) is not str or alg not in algorithms:
        raise _refuse("The DPoP proof's algorithm is not allowed", "dpop_bad_alg")
    if "crit" in header:
        raise _refuse("The DPoP proof uses an unsupported extension", "dpop_crit")
    jwk = header.get("jwk")
    if type(jwk) is not dict:
        raise _refuse("The DPoP proof carries no public key (jwk)", "dpop_no_jwk")
    if _PRIVATE_MEMBERS.intersection(jwk):
        raise _refuse("The DPoP proof's jwk must be a public key", "dpop_private_key")
    kty = jwk.get("kty")
    curve = _FULLY_SPECIFIED.get(alg)
    curves: frozenset[str] | None = _CRV_FOR_ALG.get(alg)
    if curve is not None:
        alg, curves = "EdDSA", frozenset({curve})  # verified as EdDSA, on that curve only
    if kty != _KTY_FOR_ALG[alg] or (curves is not None and jwk.get("crv") not in curves):
        raise _refuse("The DPoP proof's jwk does not fit its algorithm", "dpop_bad_jwk")
    members = _PUBLIC_MEMBERS[kty]
    if any(type(jwk.get(m)) is not str for m in members):
        raise _refuse("The DPoP proof's jwk is malformed", "dpop_bad_jwk")
    try:
        material = _ALGORITHMS[alg].from_jwk({m: jwk[m] for m in members})
    except (InvalidKeyError, ValueError, TypeError, KeyError):
        raise _refuse("The DPoP proof's jwk is malformed", "dpop_bad_jwk") from None
    if isinstance(material, rsa.RSAPublicKey):
        # Too small is weak (RFC 7518 §3.3); too large, or a huge exponent, makes every
        # proof a client sends cost us milliseconds of verification.
        if not MIN_RSA_BITS <= material.key_size <= _MAX_RSA_BITS:
            raise _refuse("The DPoP proof's RSA key size is not accepted", "dpop_bad_jwk")
        if material.public_numbers().e > _MAX_RSA_EXPONENT:
            raise _refuse("The DPoP proof's RSA exponent is not accepted", "dpop_bad_jwk")
    key = VerificationKey(kid=None, alg=alg, kty=kty, key=material, issuer="dpop")
    return _ProofHeader(key, jwk_thumbprint(jwk))


def _normalized(url: str) -> str | None:
    """An http(s) URL in the form RFC 9449 §4.3 compares: no query or fragment, RFC 3986 §6.2.

    Scheme and host lower-cased, the default port dropped, an empty path made ``/``,
    percent-encodings upper-cased and unreserved characters decoded. A WebSocket URL
    counts as its handshake's http(s) URL (``wss://`` is ``https://``). ``None`` for
    anything that is not an absolute http(s) or ws(s) URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = _WEB_SCHEMES.get(parts.scheme.lower())
    host = parts.hostname
    if scheme is None or not host or parts.username or parts.password:
        return None
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None and f":{port}" != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = quote(_unquote_unreserved(parts.path), safe="/:@!$&'()*+,;=%-._~") or "/"
    return f"{scheme}://{netloc}{path}"


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _unquote_unreserved(path: str) -> str:
    """Decode only percent-encoded unreserved characters; upper-case the other escapes."""
    pieces = path.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        code = piece[:2]
        try:
            char = chr(int(code, 16)) if len(code) == 2 else None
        except ValueError:
            char = None
        if char is None:
            out.append("%" + piece)
        elif char in _UNRESERVED:
            out.append(char + piece[2:])
        else:
            out.append("%" + code.upper() + piece[2:])
    return "".join(out)


class Nonces:
    """Stateless server nonces (RFC 9449 §8): HMAC of this API's identity and the time step.

    A nonce made in step ``n`` is accepted in steps ``n`` and ``n + 1`` (and one
    step early, for a replica whose clock runs ahead), so it lives between one and
    two lifetimes. The values of the current window are computed once per step.
    """

    __slots__ = ("_context", "_lifetime", "_secret", "_step", "_window")

    def __init__(self, secret: bytes, lifetime: float, context: bytes) -> None:
        self._secret = secret
        self._lifetime = lifetime
        self._context = context
        self._step = -1
        self._window: tuple[str, str, str] = ("", "", "")

    def _make(self, step: int) -> str:
        mac = hmac.new(self._secret, self._context + step.to_bytes(8, "big"), hashlib.sha256)
        return _b64(mac.digest()[:24])

    def window(self, now: float) -> tuple[str, str, str]:
        """(previous, current, next) nonce values for the step ``now`` falls in."""
        step = int(now // self._lifetime)
        if step != self._step:
            self._window = (self._make(step - 1), self._make(step), self._make(step + 1))
            self._step = step
        return self._window


class _SeenJtis:
    """The in-process replay store: digests of spent proofs until they could no longer be used.

    A plain dict (a ``limits`` memory counter costs several microseconds of locks
    per proof). Entries go in roughly in expiry order, so a sweep stops at the
    first live one. Nothing is ever evicted early (that would reopen a replay
    window), so the store is bounded twice: one proof key may hold at most
    ``per_key`` live entries (the client flooding it is refused, nobody else), and
    a store full all the same cannot decide, which is always a 503, never a pass.
    """

    __slots__ = ("_next_sweep", "_per_key", "_seen", "limit", "per_key")

    def __init__(self, limit: int = _MAX_REMEMBERED, per_key: int = _MAX_PER_PROOF_KEY) -> None:
        self._seen: dict[bytes, tuple[float, str]] = {}
        self._per_key: dict[str, int] = {}
        self._next_sweep = 0.0
        self.limit = limit
        self.per_key = per_key

    def first_use(self, key: bytes, owner: str, ttl: float, now: float) -> bool:
        """True the first time; raises ``_ProofFlood`` or ``OverflowError`` when it cannot say."""
        seen = self._seen
        entry = seen.get(key)
        if entry is not None and entry[0] > now:
            return False
        if now >= self._next_sweep or len(seen) >= self.limit:
            self._sweep(now)
        held = self._per_key.get(owner, 0)
        if held >= self.per_key:
            raise _ProofFlood(owner)
        if len(seen) >= self.limit:
            raise OverflowError("the DPoP replay store is full")
        seen[key] = (now + ttl, owner)
        self._per_key[owner] = held + 1
        return True

    def _sweep(self, now: float) -> None:
        seen = self._seen
        per_key = self._per_key
        expired = []
        for key, (until, _) in seen.items():
            if until > now:
                break
            expired.append(key)
        for key in expired:
            owner = seen.pop(key)[1]
            left = per_key[owner] - 1
            if left:
                per_key[owner] = left
            else:
                del per_key[owner]
        self._next_sweep = now + 1.0


class _ProofFlood(Exception):
    """One proof key spent more proofs within their window than the store keeps for it."""


class _ReplayStore:
    """Proof ``jti``s seen within their window: in process, or one atomic increment in Redis."""

    __slots__ = ("_memory", "_shared", "errors", "fail_closed", "namespace", "timeout")

    def __init__(self, uri: str, *, fail_closed: bool, namespace: str) -> None:
        self.timeout = 1.0
        self._memory: _SeenJtis | None = None
        self._shared: SharedStorage | None = None
        if uri.partition("://")[0].lower().removeprefix("async+") == "memory":
            self._memory = _SeenJtis()
        else:  # a networked store is connected (and its URI checked) at startup
            from bearerguard._ratelimit_storage import SharedStorage

            self._shared = SharedStorage(uri, timeout=self.timeout, cooldown=1.0, options={})
        self.fail_closed = fail_closed
        self.namespace = namespace
        #: Proofs accepted without a replay check (store down or full, failing open).
        self.errors = 0

    async def first_use(self, jkt: str, jti: str, ttl: float) -> bool:
        """True the first time this key's ``jti`` is seen within ``ttl`` seconds."""
        digest = hashlib.sha256(f"{jkt}\0{jti}".encode("utf-8", "surrogatepass")).digest()
        now = time.monotonic()
        memory = self._memory
        if memory is not None:
            try:
                return memory.first_use(digest[:20], jkt, ttl, now)
            except _ProofFlood:
                raise _refuse(
                    "The DPoP proof key has spent too many proofs", "dpop_proof_flood"
                ) from None
            except OverflowError as exc:
                # A full store is no outage to ride through: passing would let any proof be
                # replayed. It cannot decide, so it refuses (503) whatever fail_closed says.
                self._undecided(exc, now)
                raise Unavailable(
                    "The DPoP replay check is unavailable",
                    retry_after=1,
                    reason="dpop_replay_unavailable",
                ) from None
        shared = self._shared
        assert shared is not None
        if shared.is_down(now):
            return self._undecided(None, now)
        key = f"{self.namespace}/{digest[:20].hex()}"
        try:
            async with asyncio.timeout(self.timeout):
                count = await shared.storage.incr(key, max(1, math.ceil(ttl)))  # type: ignore[misc]
        except Exception as exc:  # any storage failure is an outage, never a 500
            return self._undecided(exc, now)
        if shared.down_until:
            shared.down_until = 0.0
            log.info("bearerguard.dpop.replay_store_recovered")
        return bool(count == 1)

    def _undecided(self, exc: Exception | None, now: float) -> bool:
        """No replay decision: warn (once a second), count, then fail open or closed."""
        self.errors += 1
        shared = self._shared
        cooldown = shared.cooldown if shared is not None else 1.0
        if exc is not None:
            quiet = shared.is_down(now) if shared is not None else False
            if not quiet:
                from bearerguard._ratelimit_storage import redacted

                log.warning(
                    "bearerguard.dpop.replay_store_unavailable storage=%s error=%s"
                    " fail_closed=%s errors=%d",
                    redacted(shared.uri) if shared is not None else "memory://",
                    type(exc).__name__,
                    self.fail_closed,
                    self.errors,
                )
            if shared is not None:
                shared.down_until = now + cooldown
        if self.fail_closed:
            raise Unavailable(
                "The DPoP replay check is unavailable",
                retry_after=max(1, math.ceil(cooldown)),
                reason="dpop_replay_unavailable",
            )
        return True

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()


class DPoPGuard:
    """Checks the DPoP proof of a request and spends its ``jti``; one per middleware.

    ``identity`` names this API (its audiences): it keys the replay store and the
    nonces, so two APIs sharing a Redis or a nonce secret never accept each
    other's proofs or nonces.
    """

    def __init__(
        self,
        policy: DPoPPolicy,
        *,
        identity: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._algorithms = frozenset(policy.algorithms)
        #: The ``algs`` of the DPoP challenge (RFC 9449 §7.1).
        self.algs = " ".join(policy.algorithms)
        self._max_age = float(policy.max_age)
        self._leeway = float(policy.leeway)
        self._public = policy.public_url.rstrip("/") if policy.public_url else None
        namespace = "bearerguard/dpop/" + hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.replay = _ReplayStore(
            policy.replay_storage, fail_closed=policy.replay_fail_closed, namespace=namespace
        )
        self.nonces: Nonces | None = None
        if policy.nonce and policy.nonce_secret is not None:
            self.nonces = Nonces(
                _secret_bytes(policy.nonce_secret),
                float(policy.nonce_lifetime),
                b"bearerguard-dpop-nonce\0" + identity.encode(),
            )
        self._headers: dict[str, dict[str, Any]] = {}
        self._judged: dict[str, _ProofHeader] = {}

    async def aclose(self) -> None:
        await self.replay.aclose()

    # -- the request path ---------------------------------------------------------------

    def check(self, scope: Scope, token_digest: bytes) -> Proof:
        """Verify the request's one DPoP proof for the token of this SHA-256 (RFC 9449 §4.3, §7.1).

        The digest is the validator's cache key, so ``ath`` costs no second hash.

        Raises :class:`InvalidDPoPProof` (401 ``invalid_dpop_proof``) for a missing,
        repeated or bad proof and :class:`UseDPoPNonce` when a server nonce is needed.
        The key binding (``cnf.jkt``) and the replay check come after the token is valid.
        """
        value: bytes | None = None
        for name, header in scope["headers"]:
            if name == b"dpop":
                if value is not None:
                    raise _refuse("More than one DPoP header", "dpop_duplicate")
                value = header
        if value is None:
            raise _refuse("A DPoP proof is required with the DPoP scheme", "dpop_missing")
        if len(value) > MAX_PROOF_LENGTH:
            raise _refuse("The DPoP proof is too large", "dpop_too_large")
        proof = value.decode("latin-1").strip(" \t")
        if not looks_like_jws(proof):
            raise _refuse("The DPoP proof is not a JWT", "dpop_malformed")
        try:
            jws = parse_jws(proof, self._headers)
        except Exception:
            raise _refuse("The DPoP proof is malformed", "dpop_malformed") from None
        encoded_header = proof[: proof.index(".")]
        judged = self._judged.get(encoded_header)
        if judged is None:
            judged = _judge_header(jws.header, self._algorithms)
            if len(self._judged) >= _KEY_CACHE_SIZE:
                self._judged.clear()
            self._judged[encoded_header] = judged
        try:
            good = judged.key.verify(jws.signing_input, jws.signature)
        except Exception:
            good = False
        if not good:
            raise _refuse("The DPoP proof's signature is invalid", "dpop_bad_signature")
        claims = jws.claims
        jti = claims.get("jti")
        if type(jti) is not str or not jti or len(jti) > _MAX_JTI_LENGTH:
            raise _refuse("The DPoP proof needs a jti", "dpop_bad_jti")
        method = scope.get("method", "GET")
        htm = claims.get("htm")
        if htm != method:
            raise _refuse(
                "The DPoP proof is for another HTTP method",
                "dpop_bad_htm",
                claim="htm",
                expected=method,
                found=htm,
            )
        self._check_htu(claims.get("htu"), scope)
        now = self.clock()
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise _refuse("The DPoP proof needs an iat", "dpop_bad_iat")
        if iat > now + self._leeway or iat < now - self._max_age - self._leeway:
            raise _refuse("The DPoP proof is too old or from the future", "dpop_stale")
        ath = claims.get("ath")
        if type(ath) is not str or not hmac.compare_digest(
            ath.encode("ascii", "replace"), _b64(token_digest).encode("ascii")
        ):
            raise _refuse("The DPoP proof is not for this access token", "dpop_bad_ath")
        next_nonce = self._check_nonce(claims.get("nonce"), now)
        return Proof(jkt=judged.jkt, jti=jti, iat=float(iat), next_nonce=next_nonce)

    def _check_htu(self, htu: Any, scope: Scope) -> None:
        if type(htu) is not str:
            raise _refuse("The DPoP proof needs an htu", "dpop_bad_htu")
        expected = self.request_url(scope)
        # Most clients sign exactly the URL they call: compare as-is before normalizing.
        given = htu.split("?", 1)[0].split("#", 1)[0]
        if expected is None or (
            given != expected
            and ((normal := _normalized(expected)) is None or _normalized(given) != normal)
        ):
            # No URL of ours (a Host header that is no host) matches any htu: two
            # unparseable URLs are not the same URL. The URL we expected is kept for
            # explanations, never sent: behind a misconfigured proxy it is internal.
            raise _refuse(
                "The DPoP proof is for another URL",
                "dpop_bad_htu",
                claim="htu",
                expected=expected,
                found=given,
            )

    def request_url(self, scope: Scope) -> str | None:
        """The URL the client used, without query: ``public_url`` or scheme and Host, plus path.

        ``None`` when the Host header is not a host (``api/x``, ``u@h``, ``[``): a path
        smuggled into it would let a proof made for ``/x/me`` pass at ``/me``.
        """
        raw = scope.get("raw_path")
        if raw:
            path = raw.split(b"?", 1)[0].decode("latin-1")
        else:
            # ASGI's path already holds the root path (Starlette routes on path - root_path).
            path = quote(scope.get("path", "/"), safe="/:@!$&'()*+,;=%")
        if self._public is not None:
            return f"{self._public}{path}"
        scheme = _WEB_SCHEMES.get(scope.get("scheme", "http"), "http")
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        if host is None:
            server = scope.get("server")
            host = f"{server[0]}:{server[1]}" if server else "localhost"
        else:
            match = _HOST.fullmatch(host)
            if match is None or int(match.group(1) or 0) > 65535:
                return None
        return f"{scheme}://{host}{path}"

    def _check_nonce(self, nonce: Any, now: float) -> str | None:
        nonces = self.nonces
        if nonces is None:
            return None
        previous, current, following = nonces.window(now)
        if type(nonce) is not str:
            raise UseDPoPNonce(current, "The DPoP proof needs the server's nonce")
        given = nonce.encode("ascii", "replace")
        if hmac.compare_digest(given, current.encode()) or hmac.compare_digest(
            given, following.encode()
        ):
            return None
        if hmac.compare_digest(given, previous.encode()):
            return current  # still good; hand out the next one before it runs out
        raise UseDPoPNonce(current, "The DPoP proof's nonce is not current")

    async def spend(self, proof: Proof) -> None:
        """Accept the proof's ``jti`` once (RFC 9449 §11.1): a repeat is a replayed proof."""
        ttl = proof.iat + self._max_age + self._leeway - self.clock()
        if not await self.replay.first_use(proof.jkt, proof.jti, ttl):
            raise _refuse("The DPoP proof was already used", "dpop_replayed")
