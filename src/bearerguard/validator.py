"""Where a decision is made: a raw token in, an :class:`AccessToken` or an ``AuthError`` out.

The validator owns one HTTP client, one metadata resolver and one JWKS cache per
trusted issuer. It is usable without the middleware (the CLI and the benchmarks
drive it directly), and it never reaches a URL that came from a token: the
issuer is picked from the configured list by exact ``iss``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

import httpx

from bearerguard.claims import ClaimRules, read_scopes
from bearerguard.config import HMAC_ALGORITHMS, Issuer
from bearerguard.errors import AuthError, InvalidToken
from bearerguard.fetch import new_client
from bearerguard.jwks import JWKSCache
from bearerguard.jws import ParsedJWS, looks_like_jws, parse_jws
from bearerguard.keys import VerificationKey, shared_secret_keys
from bearerguard.metadata import MetadataResolver
from bearerguard.tokens import AccessToken

__all__ = ["DEFAULT_MAX_TOKEN_LENGTH", "IssuerState", "TokenValidator", "token_hash"]

log = logging.getLogger("bearerguard.validator")

#: Tokens longer than this are refused before any decoding (8 KiB).
DEFAULT_MAX_TOKEN_LENGTH = 8192


def token_hash(token: str) -> str:
    """The hex SHA-256 of the whole token: the only form in which a token is kept or logged."""
    return hashlib.sha256(token.encode()).hexdigest()


class IssuerState:
    """Everything bearerguard holds for one trusted issuer: rules, metadata, keys."""

    __slots__ = ("config", "hmac_keys", "jwks", "metadata", "rules")

    def __init__(self, config: Issuer, client: httpx.AsyncClient, clock: Callable[[], float]):
        self.config = config
        self.rules = ClaimRules(config)
        self.metadata = MetadataResolver(config, client, clock=clock)
        self.jwks = JWKSCache(config, client, metadata=self.metadata, clock=clock)
        self.hmac_keys: dict[str, tuple[VerificationKey, ...]] = {}
        if config.shared_secret is not None:
            for key in shared_secret_keys(
                config.shared_secret, issuer=config.issuer, algorithms=config.algorithms
            ):
                self.hmac_keys[key.alg] = (key,)

    @property
    def uses_jwks(self) -> bool:
        return any(a not in HMAC_ALGORITHMS for a in self.rules.algorithms)


class TokenValidator:
    """Validates bearer tokens against a fixed list of trusted issuers."""

    def __init__(
        self,
        issuers: Sequence[Issuer],
        *,
        client: httpx.AsyncClient | None = None,
        max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuers:
            raise ValueError("at least one Issuer is required")
        self._owns_client = client is None
        self.client = client if client is not None else new_client()
        self.clock = clock
        self.max_token_length = max_token_length
        self.issuers: dict[str, IssuerState] = {}
        for config in issuers:
            if config.issuer in self.issuers:
                raise ValueError(f"issuer {config.issuer!r} is configured twice")
            self.issuers[config.issuer] = IssuerState(config, self.client, clock)
        self._prefetch: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Begin fetching metadata and keys in the background; never waits on the IdP."""
        if self._prefetch is None:
            self._prefetch = asyncio.get_running_loop().create_task(self._prefetch_all())

    async def _prefetch_all(self) -> None:
        await asyncio.gather(
            *(s.jwks.prefetch() for s in self.issuers.values() if s.uses_jwks),
            return_exceptions=True,
        )

    async def aclose(self) -> None:
        if self._prefetch is not None:
            self._prefetch.cancel()
            self._prefetch = None
        for state in self.issuers.values():
            await state.jwks.aclose()
        if self._owns_client:
            await self.client.aclose()

    # -- the decision ------------------------------------------------------------

    async def validate(self, token: str) -> AccessToken:
        """Validate one raw token; every failure is an :class:`AuthError`, never anything else."""
        if len(token) > self.max_token_length:
            raise InvalidToken("The access token is too large", reason="too_large")
        if not looks_like_jws(token):
            if token.count(".") == 4:
                raise InvalidToken("Encrypted tokens are not accepted", reason="jwe")
            raise InvalidToken("The access token is malformed", reason="malformed")
        try:
            return await self._validate_jwt(token, parse_jws(token))
        except AuthError:
            raise
        except Exception:  # defence in depth: a bug here must be a 401, not a 500
            log.exception("bearerguard.validation.internal_error token=%s", token_hash(token)[:12])
            raise InvalidToken(
                "The access token could not be validated", reason="internal"
            ) from None

    def _issuer_for(self, claims: dict[str, Any]) -> IssuerState:
        iss = claims.get("iss")
        state = self.issuers.get(iss) if type(iss) is str else None
        if state is None:
            raise InvalidToken(
                "The access token was not issued by a trusted issuer", reason="bad_iss"
            )
        return state

    async def _validate_jwt(self, token: str, jws: ParsedJWS) -> AccessToken:
        state = self._issuer_for(jws.claims)
        alg = state.rules.check_header(jws.header)
        key = await self._verify_signature(state, jws, alg)
        claims = jws.claims
        state.rules.check_claims(claims, self.clock())
        return self._access_token(state, claims, token_hash(token), key)

    async def _verify_signature(
        self, state: IssuerState, jws: ParsedJWS, alg: str
    ) -> VerificationKey:
        kid: str | None = jws.header.get("kid")
        if alg in HMAC_ALGORITHMS:
            candidates = state.hmac_keys.get(alg, ())
        else:
            candidates = await state.jwks.get_keys(kid, alg)
        if not candidates:
            raise InvalidToken("No key of the issuer fits the access token", reason="no_key")
        for key in candidates:
            if key.verify(jws.signing_input, jws.signature):
                return key
        raise InvalidToken("The access token's signature is invalid", reason="bad_signature")

    @staticmethod
    def _access_token(
        state: IssuerState, claims: dict[str, Any], digest: str, key: VerificationKey | None
    ) -> AccessToken:
        aud = claims.get("aud")
        audience = (aud,) if isinstance(aud, str) else tuple(aud or ())
        exp = claims.get("exp")
        return AccessToken(
            issuer=state.config.issuer,
            subject=claims.get("sub"),
            client_id=claims.get("client_id"),
            scopes=read_scopes(claims, state.rules.scope_claims),
            audience=audience,
            expires_at=float(exp) if exp is not None else None,
            token_hash=digest,
            claims=MappingProxyType(claims),
            kind="jwt",
            key_id=key.kid if key is not None else None,
        )
