"""Where a decision is made: a raw token in, an :class:`AccessToken` or an ``AuthError`` out.

The validator owns one HTTP client, one metadata resolver and one JWKS cache per
trusted issuer, and one validation cache for all of them. It is usable without
the middleware (the CLI and the benchmarks drive it directly), and it never
reaches a URL that came from a token: the issuer is picked from the configured
list by exact ``iss``.

Which path a token takes:

* A JWS compact serialization is a JWT: verified with the issuer's keys and
  judged by its claim rules. A JWT that fails is refused; it is never "rescued"
  by introspection. With ``introspect_all`` a JWT that passed is also
  introspected (for issuers that revoke JWTs).
* Anything else (but a JWE, which is refused) is an opaque token: it goes to
  the one issuer that introspects opaque tokens (``opaque="introspect"`` with
  ``client_id`` and ``client_secret``), never to several, so a token is only
  ever shown to one authorization server. With no such issuer it is a 401.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, cast

import httpx

from bearerguard._binding import confirmation_of
from bearerguard._cache import (
    ALWAYS_ACTIVE,
    DEFAULT_CACHE_SIZE,
    Generational,
    KeyLike,
    SharedCache,
    ValidationCache,
)
from bearerguard._claims import ClaimRules
from bearerguard._config import HMAC_ALGORITHMS, FetchPolicy, Issuer
from bearerguard._errors import AuthError, InvalidToken, Reason, Unavailable, signature_refused
from bearerguard._fetch import HTTPClient, new_client
from bearerguard._flight import KeyedFlight
from bearerguard._introspection import IntrospectionListener, Introspector, cache_deadline
from bearerguard._jwks import JWKSCache
from bearerguard._jws import ParsedJWS, looks_like_jws, parse_jws
from bearerguard._keys import VerificationKey, shared_secret_keys
from bearerguard._metadata import MetadataResolver, ServerMetadata
from bearerguard._stats import IssuerStats
from bearerguard._tokens import AccessToken
from bearerguard._trace import Trace

__all__ = ["DEFAULT_MAX_TOKEN_LENGTH", "IssuerState", "TokenValidator", "token_hash"]

log = logging.getLogger("bearerguard.validator")

#: Tokens longer than this are refused before any decoding (8 KiB).
DEFAULT_MAX_TOKEN_LENGTH = 8192
#: Refusals that depend on the clock, not the token alone: never remembered.
_TIME_DEPENDENT: frozenset[Reason] = frozenset({"not_yet_valid", "iat_future", "auth_time_future"})

_sha256 = hashlib.sha256


def token_hash(token: str) -> str:
    """The hex SHA-256 of the whole token: the only form in which a token is kept or logged."""
    return _sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def asker(config: Issuer) -> str:
    """This API as one issuer knows it: the issuer, our audiences and our introspection client."""
    return "\0".join((config.issuer, " ".join(sorted(config.audiences)), config.client_id or ""))


class IssuerState:
    """Everything bearerguard holds for one trusted issuer: rules, metadata, keys, introspection."""

    __slots__ = (
        "config",
        "hmac_keys",
        "introspector",
        "jwks",
        "metadata",
        "namespace",
        "opaque_pattern",
        "rules",
        "shared",
    )

    def __init__(
        self,
        config: Issuer,
        client: httpx.AsyncClient,
        clock: Callable[[], float],
        *,
        jwks: JWKSCache | None = None,
    ):
        self.config = config
        self.rules = ClaimRules(config)
        self.metadata = MetadataResolver(config, client, clock=clock)
        #: Issuers configured with one ``jwks_uri`` hand in the one cache they share.
        self.jwks = jwks or JWKSCache(config, client, metadata=self.metadata, clock=clock)
        self.hmac_keys: dict[str, tuple[VerificationKey, ...]] = {}
        if config.shared_secret is not None:
            for key in shared_secret_keys(
                config.shared_secret, issuer=config.issuer, algorithms=config.algorithms
            ):
                self.hmac_keys[key.alg] = (key,)
        self.introspector: Introspector | None = None
        if config.introspects:
            self.introspector = Introspector(
                config, client, metadata=self.metadata, rules=self.rules
            )
        #: Redis keys of this issuer's introspection results live under this name: the
        #: issuer and this API's identity, since an authorization server answers for the
        #: resource server that asked (RFC 7662 §2.2, §4) and another API must never
        #: reuse that verdict (an answer without ``aud`` vouches only for the asker).
        self.namespace = _sha256(asker(config).encode()).hexdigest()[:32]
        pattern = config.opaque_token_pattern
        #: What every opaque token of this issuer looks like, when configured.
        self.opaque_pattern = re.compile(pattern) if pattern is not None else None
        self.shared: SharedCache | None = None

    @property
    def uses_jwks(self) -> bool:
        return self.config.uses_jwks

    def key_source(self, alg: str) -> Generational:
        """What judged a signature: the JWKS (whose generation changes on rotation), or a secret."""
        return ALWAYS_ACTIVE if alg in HMAC_ALGORITHMS else self.jwks


def _shared_jwks(
    issuers: Sequence[Issuer], client: httpx.AsyncClient, clock: Callable[[], float]
) -> dict[tuple[str | None, FetchPolicy], JWKSCache]:
    """One key cache per configured ``jwks_uri`` (and fetch policy) that several issuers name.

    Entra ID publishes one key set for every tenant: twenty single-tenant issuers
    cost one fetch, one refresh and one cache. The shared cache parses keys for every
    algorithm its issuers allow; each issuer's own allowlist still judges each token.
    """
    groups: dict[tuple[str | None, FetchPolicy], list[Issuer]] = {}
    for config in issuers:
        if config.jwks_uri is not None:
            groups.setdefault((config.jwks_uri, config.fetch), []).append(config)
    caches: dict[tuple[str | None, FetchPolicy], JWKSCache] = {}
    for key, sharers in groups.items():
        if len(sharers) < 2:
            continue
        algorithms = tuple(
            dict.fromkeys(a for c in sharers for a in c.algorithms if a not in HMAC_ALGORITHMS)
        )
        owner = replace(sharers[0], algorithms=algorithms or sharers[0].algorithms)
        metadata = MetadataResolver(owner, client, clock=clock)
        caches[key] = JWKSCache(owner, client, metadata=metadata, clock=clock)
    return caches


class TokenValidator:
    """Validates bearer tokens against a fixed list of trusted issuers, with a cache in front.

    ``cache_size`` bounds the accepted-token cache (refusals get a quarter of it,
    separately); ``0`` turns the cache off. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        issuers: Sequence[Issuer],
        *,
        client: HTTPClient | None = None,
        max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuers:
            raise ValueError("at least one Issuer is required")
        self._owns_client = client is None
        # httpx2's client has httpx's API: the fetch layer treats both as httpx's.
        self.client = cast("httpx.AsyncClient", client) if client is not None else new_client()
        self.clock = clock
        self.max_token_length = max_token_length
        self.issuers: dict[str, IssuerState] = {}
        shared_keys = _shared_jwks(issuers, self.client, clock)
        for config in issuers:
            if config.issuer in self.issuers:
                raise ValueError(f"issuer {config.issuer!r} is configured twice")
            jwks = shared_keys.get((config.jwks_uri, config.fetch)) if config.jwks_uri else None
            self.issuers[config.issuer] = IssuerState(config, self.client, clock, jwks=jwks)
        #: Issuer templates (``{tenantid}``), tried when no issuer equals ``iss``.
        self._templates = tuple(s for s in self.issuers.values() if s.rules.template)
        opaque = [
            s
            for s in self.issuers.values()
            if s.introspector is not None and s.config.opaque == "introspect"
        ]
        if len(opaque) > 1:
            raise ValueError(
                "more than one issuer would introspect opaque tokens "
                f"({', '.join(s.config.issuer for s in opaque)}); a token must only be shown "
                "to one authorization server: set opaque='reject' on all but one"
            )
        #: The issuer opaque tokens are introspected with, if any.
        self.opaque_issuer: IssuerState | None = opaque[0] if opaque else None
        #: Decisions remembered under the token's SHA-256 digest.
        self.cache = ValidationCache(cache_size)
        self._cache_on = self.cache.enabled
        self._shared: dict[str, SharedCache] = {}
        for state in self.issuers.values():
            url = state.config.cache_url
            if url is None:
                continue  # Issuer checked that an issuer with a cache_url introspects
            if url not in self._shared:
                self._shared[url] = SharedCache(url)
            state.shared = self._shared[url]
        #: Introspections in flight by token digest: one per token, however many requests wait.
        self._introspecting: KeyedFlight[bytes, AccessToken] = KeyedFlight()
        #: Decoded JWS headers by their encoded form: one key's tokens all share one.
        self._headers: dict[str, dict[str, Any]] = {}
        self._prefetch: asyncio.Task[None] | None = None

    def identity(self) -> str:
        """Who is asking, for state kept beside other APIs' in a shared store (Redis).

        The trusted issuers with their audiences and introspection client: two APIs that
        differ in any of them never read each other's entries.
        """
        parts = sorted(asker(state.config) for state in self.issuers.values())
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    # -- what others may read (metrics, openapi, inspect) ----------------------

    @property
    def configs(self) -> tuple[Issuer, ...]:
        """The trusted issuers, as configured."""
        return tuple(state.config for state in self.issuers.values())

    def issuer_metadata(self, issuer: str) -> ServerMetadata | None:
        """The metadata in hand for a configured issuer (no network call); ``None``: not yet."""
        state = self.issuers.get(issuer)
        return state.metadata.cached if state is not None else None

    def judging_issuer(self, token: str) -> Issuer | None:
        """The configured issuer a JWT's ``iss`` picks, as :meth:`validate` would pick it.

        ``None`` for a token that is not a readable JWS or names no trusted issuer.
        """
        if not looks_like_jws(token):
            return None
        try:
            return self._issuer_for(parse_jws(token).claims).config
        except InvalidToken:
            return None

    @property
    def given_client(self) -> httpx.AsyncClient | None:
        """The HTTP client the caller handed in (``None``: the validator made its own)."""
        return None if self._owns_client else self.client

    def statistics(self) -> tuple[IssuerStats, ...]:
        """Each issuer's counters now: key age and count, fetches, failures, introspection."""
        now = self.clock()
        rows = []
        for state in self.issuers.values():
            jwks, introspector = state.jwks, state.introspector
            fetched_at, keyset = jwks.fetched_at, jwks.keyset
            rows.append(
                IssuerStats(
                    issuer=state.config.issuer,
                    jwks_age=None if fetched_at is None else max(0.0, now - fetched_at),
                    jwks_keys=len(keyset.keys) if keyset is not None else 0,
                    jwks_fetches=jwks.fetches,
                    jwks_failures=jwks.failures,
                    jwks_changes=jwks.generation,
                    metadata_fetches=state.metadata.fetches,
                    metadata_failures=state.metadata.failures,
                    introspection_calls=introspector.calls if introspector is not None else 0,
                    introspection_failures=(
                        introspector.failures if introspector is not None else 0
                    ),
                )
            )
        return tuple(rows)

    def cache_counts(self) -> tuple[int, int, int]:
        """Validation cache lookups since the validator was made: hits, negative hits, misses."""
        cache = self.cache
        return cache.hits, cache.negative_hits, cache.misses

    def cache_entries(self) -> int:
        """Decisions the validation cache holds now."""
        return len(self.cache)

    def add_introspection_listener(self, listener: IntrospectionListener) -> None:
        """Call ``listener(issuer, seconds, error)`` after each introspection call, any issuer."""
        for state in self.issuers.values():
            if state.introspector is not None:
                state.introspector.add_listener(listener)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Begin fetching metadata and keys in the background; never waits on the IdP."""
        if self._prefetch is None:
            self._prefetch = asyncio.get_running_loop().create_task(self._prefetch_all())

    def _key_caches(self, *, in_use: bool = True) -> list[JWKSCache]:
        """Each JWKS cache once, however many issuers share it."""
        states = [s for s in self.issuers.values() if s.uses_jwks or not in_use]
        return list({id(s.jwks): s.jwks for s in states}.values())

    async def _prefetch_all(self) -> None:
        await asyncio.gather(*(c.prefetch() for c in self._key_caches()), return_exceptions=True)

    async def aclose(self) -> None:
        if self._prefetch is not None:
            self._prefetch.cancel()
            self._prefetch = None
        await self._introspecting.aclose()
        for state in self.issuers.values():
            await state.metadata.aclose()
        for cache in self._key_caches(in_use=False):
            await cache.aclose()
        for shared in self._shared.values():
            await shared.aclose()
        if self._owns_client:
            await self.client.aclose()

    # -- the decision ------------------------------------------------------------

    async def validate(self, token: str, *, trace: Trace | None = None) -> AccessToken:
        """Validate one raw token; every failure is an :class:`AuthError`, never anything else.

        A bound token (``AccessToken.confirmation`` not ``None``: DPoP ``cnf.jkt`` or
        mTLS ``cnf.x5t#S256``) is returned as valid: proving possession is per request,
        which the middleware does. Code calling this directly must refuse such a token
        unless it checked the proof itself, or a stolen bound token is a bearer token.

        ``trace`` records what this run did (keys, re-checks, introspection, every
        broken rule) for an explanation; the decision is the same with or without it.
        """
        if trace is not None:
            return await self._traced(token, trace)
        digest, cached = self.lookup(token)
        if cached is not None:
            return cached
        return await self.decide(token, digest)

    def lookup(self, token: str) -> tuple[bytes, AccessToken | None]:
        """The synchronous half of :meth:`validate`: the token's digest and its cached decision.

        A cache hit is answered here without creating a coroutine (the middleware
        calls this first); a remembered refusal raises. ``None``: call :meth:`decide`.
        """
        if len(token) > self.max_token_length:
            raise InvalidToken("The access token is too large", reason="too_large")
        try:
            digest = _sha256(token.encode()).digest()
        except UnicodeEncodeError:  # a lone surrogate: no header could have carried it
            raise InvalidToken("The access token is malformed", reason="malformed") from None
        if self._cache_on:
            return digest, self.cache.lookup(digest, self.clock())
        return digest, None

    async def decide(
        self,
        token: str,
        digest: bytes,
        trace: Trace | None = None,
        *,
        client: Callable[[], Hashable] | None = None,
    ) -> AccessToken:
        """Validate a token :meth:`lookup` found no decision for (``digest`` is its SHA-256).

        ``client`` says who is asking (the middleware: the client's address), asked
        only if the token goes to introspection, where each client gets a fair share.
        """
        try:
            return await self._decide(token, digest, trace, client)
        except AuthError:
            raise
        except Exception:  # defence in depth: a bug here must be a 401, not a 500
            log.exception("bearerguard.validation.internal_error token=%s", digest.hex()[:12])
            raise InvalidToken(
                "The access token could not be validated", reason="internal"
            ) from None

    async def _traced(self, token: str, trace: Trace) -> AccessToken:
        """:meth:`validate` with a trace: the cache is neither read nor written for it."""
        on, self._cache_on = self._cache_on, False
        try:
            digest, _ = self.lookup(token)
            trace.access = await self.decide(token, digest, trace)
            return trace.access
        except AuthError as error:
            trace.error = error
            if isinstance(error, Unavailable):
                trace.upstream_error = self._upstream_error(trace, error)
            raise
        finally:
            self._cache_on = on
            self._where_from(trace)

    def _where_from(self, trace: Trace) -> None:
        """Where the judging issuer's metadata and keys came from, for the trace."""
        state = self.issuers.get(trace.issuer) if trace.issuer is not None else None
        if state is None:
            return
        metadata = state.metadata.cached
        trace.metadata_url = state.metadata.source
        trace.jwks_uri = metadata.jwks_uri if metadata is not None else None
        keyset = state.jwks.keyset
        if keyset is not None and trace.kind == "jwt":
            trace.published, trace.skipped_keys = tuple(keyset.keys), keyset.skipped

    def _upstream_error(self, trace: Trace, error: Unavailable) -> str | None:
        """The failing upstream's own words for an ``Unavailable`` (no log parsing needed)."""
        state = self.issuers.get(trace.issuer) if trace.issuer is not None else None
        if state is None:
            return None
        if error.reason.startswith("introspection"):
            return state.introspector.last_error if state.introspector is not None else None
        if state.metadata.cached is None:
            return state.metadata.last_error
        return state.jwks.last_error

    async def _decide(
        self,
        token: str,
        digest: bytes,
        trace: Trace | None = None,
        client: Callable[[], Hashable] | None = None,
    ) -> AccessToken:
        if not looks_like_jws(token):
            if token.count(".") == 4:
                raise InvalidToken("Encrypted tokens are not accepted", reason="jwe")
            state = self.opaque_issuer
            if state is None:
                raise InvalidToken("The access token is malformed", reason="malformed")
            if trace is not None:
                trace.kind, trace.issuer = "opaque", state.config.issuer
            if state.opaque_pattern is not None and not state.opaque_pattern.fullmatch(token):
                # Not a token this authorization server could have issued: no call needed.
                raise InvalidToken("The access token is malformed", reason="malformed")
            return await self._introspecting.run(
                digest,
                functools.partial(self._introspect_opaque, state, token, digest, trace, client),
            )
        jws = parse_jws(token, self._headers)
        if trace is not None:
            return await self._validate_jwt(token, digest, jws, trace)
        return await self._validate_jwt(token, digest, jws)

    def _issuer_for(self, claims: dict[str, Any]) -> IssuerState:
        iss = claims.get("iss")
        state = self.issuers.get(iss) if type(iss) is str else None
        if state is None and type(iss) is str:
            # Only a trusted template's own shape picks it; its rules then judge the tenant.
            state = next((s for s in self._templates if s.rules.frames(iss)), None)
        if state is None:
            raise InvalidToken(
                "The access token was not issued by a trusted issuer", reason="bad_iss"
            )
        return state

    async def _validate_jwt(
        self, token: str, digest: bytes, jws: ParsedJWS, trace: Trace | None = None
    ) -> AccessToken:
        state = self._issuer_for(jws.claims)
        if trace is not None:
            self._trace_rules(state, jws, trace)
        alg = state.rules.check_header(jws.header)
        config = state.config
        try:
            key = await self._verify_signature(state, jws, alg, trace)
        except InvalidToken as error:
            if error.reason == "bad_signature":
                self._refuse(digest, error, config.negative_cache_ttl, state.key_source(alg))
            raise
        now = self.clock()
        claims = jws.claims
        try:
            state.rules.check_claims(claims, now)
            if key.bound_issuer is not None and not state.rules.key_allows(
                key.bound_issuer, claims
            ):
                raise signature_refused("key_issuer")
            access = self._access_token(state, claims, digest.hex(), key)
        except InvalidToken as error:
            self._refuse(digest, error, config.negative_cache_ttl, state.key_source(alg))
            raise
        deadline = min(claims["exp"] + state.rules.leeway, now + config.jwt_cache_ttl)
        if config.introspect_all:
            return await self._introspecting.run(
                digest,
                functools.partial(
                    self._introspect_jwt, state, token, digest, access, deadline, key, trace
                ),
            )
        self._accept(digest, access, deadline, key)
        return access

    def _trace_rules(self, state: IssuerState, jws: ParsedJWS, trace: Trace) -> None:
        """Every header and claim rule the token breaks, for the trace (nothing is decided)."""
        trace.kind, trace.issuer = "jwt", state.config.issuer
        alg, kid = jws.header.get("alg"), jws.header.get("kid")
        trace.alg = alg if type(alg) is str else None
        trace.kid = kid if type(kid) is str else None
        state.rules.check_header(jws.header, trace.failures)
        state.rules.check_claims(jws.claims, self.clock(), failures=trace.failures)

    async def _verify_signature(
        self, state: IssuerState, jws: ParsedJWS, alg: str, trace: Trace | None = None
    ) -> VerificationKey:
        kid: str | None = jws.header.get("kid")
        candidates: tuple[VerificationKey, ...] | None
        if alg in HMAC_ALGORITHMS:
            candidates = state.hmac_keys.get(alg, ())
        else:
            candidates = state.jwks.ready_keys(kid, alg)
            if candidates is None:
                candidates = await state.jwks.get_keys(kid, alg)
        if trace is not None:
            trace.candidates = candidates
        if not candidates:
            raise signature_refused("no_key")
        for key in candidates:
            if key.verify(jws.signing_input, jws.signature):
                if trace is not None:
                    trace.key = key
                return key
        if alg not in HMAC_ALGORITHMS:
            # An issuer may replace a key under the same kid: one refresh, under the
            # unknown-kid cooldown and single flight, so forgeries cost no more fetches.
            if trace is not None:
                trace.rechecked = True
            for key in await state.jwks.recheck(kid, alg, candidates):
                if key.verify(jws.signing_input, jws.signature):
                    if trace is not None:
                        trace.key = key
                    return key
        raise signature_refused("bad_signature")

    def _access_token(
        self, state: IssuerState, claims: dict[str, Any], digest: str, key: VerificationKey | None
    ) -> AccessToken:
        aud = claims.get("aud")
        audience = (aud,) if type(aud) is str else tuple(a for a in aud or () if type(a) is str)
        exp = claims.get("exp")
        return AccessToken(
            issuer=claims["iss"],  # equal to the issuer, or its template filled for the tenant
            subject=claims.get("sub"),
            client_id=state.rules.client_id(claims),
            scopes=self.cache.shared_scopes(state.rules.scopes(claims)),
            audience=audience,
            expires_at=float(exp) if exp is not None else None,
            token_hash=digest,
            claims=MappingProxyType(claims),
            kind="jwt",
            key_id=key.kid if key is not None else None,
            confirmation=confirmation_of(claims),
        )

    def _refuse(self, digest: bytes, error: InvalidToken, ttl: float, source: Generational) -> None:
        """Remember a refusal briefly, unless it depends on the clock rather than the token."""
        if self._cache_on and ttl > 0 and error.reason not in _TIME_DEPENDENT:
            self.cache.refuse(digest, error, self.clock() + ttl, source)

    def _accept(self, digest: bytes, access: AccessToken, deadline: float, key: KeyLike) -> None:
        if self._cache_on:
            self.cache.accept(digest, access, deadline, key)

    # -- introspection -------------------------------------------------------------

    async def _introspect_opaque(
        self,
        state: IssuerState,
        token: str,
        digest: bytes,
        trace: Trace | None = None,
        client: Callable[[], Hashable] | None = None,
    ) -> AccessToken:
        introspector = state.introspector
        assert introspector is not None
        config = state.config
        shared = state.shared
        if shared is not None and config.introspection_cache_ttl > 0 and trace is None:
            stored = await shared.get(state.namespace, digest)
            if stored is not None:
                found = self._from_shared(state, digest, stored)
                if found is not None:
                    return found
        endpoint = await introspector.endpoint()
        if endpoint is None:
            log.warning(
                "bearerguard.introspection.no_endpoint issuer=%s token=%s",
                config.issuer,
                digest.hex()[:12],
            )
            raise InvalidToken("Opaque access tokens are not accepted", reason="no_introspection")
        if trace is not None:
            trace.introspection_endpoint = endpoint
        asker = client() if client is not None else None
        document = await introspector.ask(
            token, endpoint, short_hash=digest.hex()[:12], client=asker
        )
        now = self.clock()
        if trace is not None:
            trace.introspection = document
            introspector.judge(document, now, trace.failures)
            shared = None  # an explanation neither reads nor writes what replicas share
        try:
            introspector.judge(document, now)
            access = introspector.access_token(
                document, digest.hex(), share=self.cache.shared_scopes
            )
        except InvalidToken as error:
            if error.reason != "inactive" or document.get("active") is False:
                self._refuse(digest, error, config.negative_cache_ttl, ALWAYS_ACTIVE)
            if shared is not None and document.get("active") is False:
                until = now + config.negative_cache_ttl
                refusal: dict[str, Any] = {"active": False, "at": now, "until": until}
                await shared.put(state.namespace, digest, refusal, until - now)
            raise
        deadline = cache_deadline(document, now, config.introspection_cache_ttl)
        self._accept(digest, access, deadline, ALWAYS_ACTIVE)
        if shared is not None:
            value = {"active": True, "at": now, "claims": dict(document), "until": deadline}
            await shared.put(state.namespace, digest, value, deadline - now)
        return access

    def _from_shared(
        self, state: IssuerState, digest: bytes, stored: dict[str, Any]
    ) -> AccessToken | None:
        """A result another replica stored, judged again with this replica's rules and clock.

        ``None`` when this replica's own TTLs say the answer is too old to serve: a
        replica never trusts an entry longer than it would trust its own answer.
        """
        introspector = state.introspector
        assert introspector is not None
        config = state.config
        now = self.clock()
        active = stored["active"] is True
        ttl = config.introspection_cache_ttl if active else config.negative_cache_ttl
        until = min(float(stored["until"]), float(stored["at"]) + ttl)
        if until <= now:
            return None
        if not active:
            error = InvalidToken("The access token is not active", reason="inactive")
            self._refuse(digest, error, until - now, ALWAYS_ACTIVE)
            raise error
        claims: dict[str, Any] = stored["claims"]
        try:
            introspector.judge(claims, now)
            access = introspector.access_token(claims, digest.hex(), share=self.cache.shared_scopes)
        except InvalidToken as error:
            self._refuse(digest, error, config.negative_cache_ttl, ALWAYS_ACTIVE)
            raise
        deadline = min(until, cache_deadline(claims, now, config.introspection_cache_ttl))
        self._accept(digest, access, deadline, ALWAYS_ACTIVE)
        return access

    async def _introspect_jwt(
        self,
        state: IssuerState,
        token: str,
        digest: bytes,
        access: AccessToken,
        deadline: float,
        key: VerificationKey,
        trace: Trace | None = None,
    ) -> AccessToken:
        """``introspect_all``: a JWT that verified must also be active at its issuer."""
        introspector = state.introspector
        assert introspector is not None
        config = state.config
        endpoint = await introspector.endpoint()
        if endpoint is None:
            # Configured to check every JWT, yet no endpoint is known: fail closed, not 401.
            raise Unavailable(
                "The authorization server cannot check the access token right now",
                reason="introspection_unavailable",
            )
        if trace is not None:
            trace.introspection_endpoint = endpoint
        document = await introspector.ask(token, endpoint, short_hash=digest.hex()[:12])
        now = self.clock()
        if trace is not None:
            trace.introspection = document
            introspector.judge(document, now, trace.introspection_failures)
        try:
            introspector.judge(document, now)
        except InvalidToken as error:
            if error.reason != "inactive" or document.get("active") is False:
                self._refuse(digest, error, config.negative_cache_ttl, ALWAYS_ACTIVE)
            raise
        deadline = min(deadline, cache_deadline(document, now, config.introspection_cache_ttl))
        self._accept(digest, access, deadline, key)
        return access
