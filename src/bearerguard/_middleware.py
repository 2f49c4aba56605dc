"""The one-line integration: a pure ASGI middleware that guards every HTTP and WebSocket request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any, Unpack, cast

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from bearerguard._binding import NOTHING_PROVED, Proved, check_binding
from bearerguard._cache import DEFAULT_CACHE_SIZE
from bearerguard._challenge import Answer, Schemes, answer_for
from bearerguard._config import Issuer, IssuerOptions
from bearerguard._credentials import find_in_form, find_in_header, find_in_query
from bearerguard._dependencies import route_scopes, token_of
from bearerguard._dpop import (
    DPOP_SCOPE_KEY,
    DPoPGuard,
    DPoPMode,
    DPoPPolicy,
    Proof,
)
from bearerguard._errors import (
    AuthError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    RateLimited,
    Unavailable,
)
from bearerguard._fetch import HTTPClient
from bearerguard._mtls import ClientCertificates
from bearerguard._observability import Observer, notify, outcome_of
from bearerguard._proxies import TrustedProxies
from bearerguard._ratelimit_decision import (
    DECISION_SCOPE_KEY,
    LIMITER_SCOPE_KEY,
    RateLimitDecision,
    record_decision,
)
from bearerguard._resource_metadata import ResourceMetadata
from bearerguard._sharing import TokenSharing, TokenSharingWatch
from bearerguard._tokens import AccessToken, GrantedScopes, TokenUser
from bearerguard._validator import DEFAULT_MAX_TOKEN_LENGTH, TokenValidator, token_hash

if TYPE_CHECKING:  # imported when configured: no ``limits`` for an API without rate limits
    from bearerguard._ratelimit import RateLimiter, RateLimitKey, RateLimitOptions, Strategy

__all__ = ["BearerAuthMiddleware"]

log = logging.getLogger("bearerguard.middleware")

#: The messages that start a response: after one, a refusal can no longer be sent.
_STARTS = frozenset({"http.response.start", "websocket.accept"})
#: Distinct scope sets whose ``request.auth`` is kept; past this, each request builds its own.
_MAX_CREDENTIALS = 1024
#: Form bodies read to look for ``access_token`` are capped; a larger one is a 400.
_MAX_FORM_BYTES = 64 * 1024


class BearerAuthMiddleware:
    """Validate the bearer token of every request before the application sees it.

    On success the scope carries ``auth`` (Starlette ``AuthCredentials`` with the
    token's scopes, so ``@requires`` works unchanged) and ``user`` (a
    :class:`TokenUser` whose ``.token`` is the :class:`AccessToken`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        issuers: Sequence[Issuer] | None = None,
        exclude_paths: Sequence[str] = (),
        realm: str = "api",
        allow_anonymous: bool = False,
        token_in_query: bool = False,
        token_in_form: bool = False,
        max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH,
        cache_size: int = DEFAULT_CACHE_SIZE,
        rate_limit: str | Callable[[AccessToken], str | None] | None = None,
        rate_limit_key: RateLimitKey | None = None,
        rate_limit_storage: str | None = None,
        rate_limit_strategy: Strategy | None = None,
        rate_limit_fail_closed: bool | None = None,
        rate_limiter: RateLimiter | None = None,
        validator: TokenValidator | None = None,
        http_client: HTTPClient | None = None,
        observer: Observer | None = None,
        trusted_proxies: Sequence[str] = (),
        client_cert_header: str | None = None,
        resource_metadata: ResourceMetadata | None = None,
        token_sharing: TokenSharing | None = None,
        dpop: DPoPMode | None = None,
        dpop_algorithms: Sequence[str] | None = None,
        dpop_max_age: float | None = None,
        dpop_replay_storage: str | None = None,
        dpop_nonce: bool | None = None,
        dpop_nonce_secret: str | bytes | None = None,
        public_url: str | None = None,
        clock: Callable[[], float] | None = None,
        **issuer_fields: Unpack[IssuerOptions],
    ) -> None:
        """``issuer=``, ``audience=`` and any other :class:`Issuer` field describe one issuer
        (their defaults are :class:`Issuer`'s); ``issuers=[Issuer(...), ...]`` trusts several.

        The ``rate_limit_*`` keywords left at ``None`` take :class:`RateLimiter`'s defaults,
        the ``dpop*`` ones :class:`~bearerguard._dpop.DPoPPolicy`'s (``dpop="allowed"``).
        """
        self.app = app
        # An app factory may pass issuer=None alongside issuers= or validator=: None is absent.
        given = sorted(name for name, value in issuer_fields.items() if value is not None)
        if validator is None:
            if issuers:
                if given:
                    raise ValueError(
                        f"give either issuers=[Issuer(...)] or one issuer's fields ({given}), "
                        "not both"
                    )
            elif issuer_fields.get("issuer") is None:
                raise ValueError(
                    "BearerAuthMiddleware needs issuer= and audience= (or issuers=[...])"
                )
            else:
                issuers = [Issuer(**issuer_fields)]
            # A client handed in (e.g. TestIssuer.transport()) is the caller's to close.
            validator = TokenValidator(
                issuers,
                client=http_client,
                max_token_length=max_token_length,
                cache_size=cache_size,
                # Tests share one ManualClock with their TestIssuer; production reads the time.
                clock=time.time if clock is None else clock,
            )
        elif issuers or given:
            raise ValueError("give either validator= or the issuers it trusts, not both")
        self.validator = validator
        options: RateLimitOptions = {}
        if rate_limit_key is not None:
            options["key"] = rate_limit_key
        if rate_limit_storage is not None:
            options["storage"] = rate_limit_storage
        if rate_limit_strategy is not None:
            options["strategy"] = rate_limit_strategy
        if rate_limit_fail_closed is not None:
            options["fail_closed"] = rate_limit_fail_closed
        limiting = None
        if options or rate_limit is not None or token_sharing is not None:
            # Only now: an API that limits nothing never imports ``limits``.
            from bearerguard._ratelimit import RateLimiter, RateLimitSettings

            limiting = RateLimitSettings(**options)
            if rate_limiter is None and rate_limit is not None:
                # Keyed by this API's identity, as token sharing and DPoP replays are: a
                # user's requests to another API on the same Redis never spend this budget.
                own: RateLimitOptions = {
                    **options,
                    "namespace": f"bearerguard/{validator.identity()}",
                }
                rate_limiter = RateLimiter(rate_limit, **own)
        #: Spends each validated token's budget; also lends its storage to per-route limits.
        self.rate_limiter = rate_limiter
        #: Proxies whose forwarding (and client-certificate) headers are believed; none by default.
        self.proxies = TrustedProxies.parse(trusted_proxies)
        #: Where a request's client certificate is found (RFC 8705), asked for bound tokens only.
        self.certificates = ClientCertificates(client_cert_header, self.proxies)
        #: Watches where each validated token is used from (stolen-token detection); optional.
        self.sharing: TokenSharingWatch | None = None
        # The rate limits' storage and outage choice, lent to token sharing and DPoP's
        # replay store; None when nothing names one (each then keeps its own default).
        lent: tuple[str, bool] | None = None
        if rate_limiter is not None:
            lent = (rate_limiter.storage_uri, rate_limiter.fail_closed)
        elif limiting is not None:
            lent = (limiting.storage, limiting.fail_closed)
        if token_sharing is not None and lent is not None:
            self.sharing = TokenSharingWatch(
                token_sharing,
                storage=lent[0],
                fail_closed=lent[1],
                namespace=validator.identity(),
                proxies=self.proxies,
                clock=validator.clock,
                batch=rate_limiter.script_batch if rate_limiter is not None else None,
            )
        #: Sightings and hits share one pipeline: both are sent in the same loop iteration.
        self._sighting_with_hit = (
            self.sharing is not None
            and rate_limiter is not None
            and rate_limiter.script_batch is not None
        )
        #: Checks DPoP proofs (RFC 9449); ``None`` when ``dpop="disabled"``.
        self.dpop: DPoPGuard | None = None
        # The replay store is the rate limits' storage unless given, and an outage of it
        # follows the rate limits' fail-open/fail-closed choice.
        settings: dict[str, Any] = {}
        if lent is not None:
            settings = {"replay_storage": lent[0], "replay_fail_closed": lent[1]}
        for name, value in (
            ("mode", dpop),
            ("algorithms", dpop_algorithms),
            ("max_age", dpop_max_age),
            ("replay_storage", dpop_replay_storage),
            ("nonce", dpop_nonce),
            ("nonce_secret", dpop_nonce_secret),
            ("public_url", public_url),
        ):
            if value is not None:
                settings[name] = value
        policy = DPoPPolicy(**settings)
        if policy.mode != "disabled":
            self.dpop = DPoPGuard(policy, identity=validator.identity(), clock=validator.clock)
        #: Bearer tokens are refused outright (``dpop="required"``).
        self._dpop_only = policy.mode == "required"
        #: Which challenges every refusal offers: Bearer, DPoP or both (RFC 9449 §7.2).
        self.schemes = Schemes(
            bearer=not self._dpop_only,
            dpop_algs=self.dpop.algs if self.dpop is not None else None,
        )
        self.realm = realm
        self.allow_anonymous = allow_anonymous
        self.token_in_query = token_in_query
        self.token_in_form = token_in_form
        self.max_token_length = max_token_length
        #: RFC 9728: the document served at its well-known paths, named by every challenge.
        self.resource_metadata = resource_metadata
        self._metadata_url = resource_metadata.url if resource_metadata is not None else None
        self._metadata_paths = resource_metadata.paths if resource_metadata else frozenset()
        self._metadata_answer: Answer | None = None
        if resource_metadata is not None:
            audiences = {a for st in validator.issuers.values() for a in st.config.audiences}
            if audiences and resource_metadata.resource not in audiences:
                # RFC 8707 clients ask for tokens for `resource`; if no issuer's audience
                # names it, every such token will be refused (MCP clients always ask).
                log.warning(
                    "bearerguard.metadata.resource_not_an_audience resource=%s audiences=%s",
                    resource_metadata.resource,
                    ",".join(sorted(audiences)),
                )
        # The metadata paths are public: they are found where excluded paths are, so a
        # request for anything else pays nothing for them.
        exact, prefixes = exclusions(exclude_paths)
        self._exact = exact | self._metadata_paths
        self._prefixes = prefixes
        self._started = False
        #: ``request.auth`` by scope set: built once, shared by every request with those scopes.
        self._credentials: dict[frozenset[str], GrantedScopes] = {}
        #: Told about every decision (metrics); ``None`` costs nothing on the request path.
        self.observer = observer
        if observer is not None:
            observer.attach(self)
        if isinstance(app, Starlette):
            # Wrapped around the application (not added with add_middleware), a route's
            # AuthError would meet Starlette's error handling before us and become a 500.
            # One handler serves Starlette's Request form and its WebSocket form.
            app.add_exception_handler(AuthError, cast(Any, self._handle_route_error))

    def _excluded(self, scope: Scope) -> bool:
        """Whether the path the application routes on (``root_path`` and mounts taken off,
        as Starlette's router does) is one that needs no token."""
        path = _route_path(scope)
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._excluded(scope):
            if kind == "http" and scope["path"] in self._metadata_paths:
                await self._serve_metadata(scope, send)
                return
            # No token is looked for; a route here that asks for one gets the RFC 6750
            # 401 (``optional_token`` is for "a token if present"), never a 500.
            scope["auth"] = AuthCredentials()
            scope["user"] = TokenUser(None)
            await self._call_app(scope, receive, send)
            return
        if not self._started:
            self._started = True
            self.validator.start()
        observer = self.observer
        began = perf_counter() if observer is not None else 0.0
        token: str | None = None
        access: AccessToken | None = None
        in_query = False
        proof: Proof | None = None
        dpop = False
        try:
            if self.token_in_query or self.token_in_form:
                token, receive, in_query, dpop = await self._find_token(scope, receive)
            else:  # the usual configuration: no coroutine to look in one header
                token = find_in_header(scope["headers"], self.max_token_length)
                if token is None and self.dpop is not None:
                    token = self._dpop_token(scope)
                    dpop = token is not None
            if token is None:
                if not self.allow_anonymous:
                    raise MissingToken()
                scope["auth"] = AuthCredentials()
                scope["user"] = TokenUser(None)
            else:
                if not dpop:
                    if self._dpop_only:
                        raise InvalidToken(
                            "This API takes DPoP-bound tokens only", reason="dpop_required"
                        )
                    validator = self.validator
                    # A cache hit is answered synchronously; only a miss awaits a decision.
                    digest, validated = validator.lookup(token)
                    if validated is None:
                        asker = partial(_client_key, self.proxies, scope)
                        validated = await validator.decide(token, digest, client=asker)
                    if validated.confirmation is not None:
                        # A bound token (RFC 7800 cnf) needs its proof: what the request
                        # proves is worked out only here, so unbound tokens pay nothing.
                        check_binding(validated.confirmation, self._proved(scope))
                else:
                    validated, proof = await self._prove_dpop(scope, token)
                access = validated
                self._authenticate(scope, access)
                if observer is not None:
                    notify(observer.validation, access, None, perf_counter() - began)
                if self._sighting_with_hit:
                    scope[LIMITER_SCOPE_KEY] = self.rate_limiter
                    record_decision(scope, await self._observe_and_hit(access, scope))
                else:
                    if self.sharing is not None:
                        await self.sharing.observe(access, scope)
                    if self.rate_limiter is not None:
                        # Only a validated token spends budget: forged ones cannot drain it.
                        scope[LIMITER_SCOPE_KEY] = self.rate_limiter
                        record_decision(scope, await self.rate_limiter.hit(access))
        except AuthError as error:
            if access is None and observer is not None:
                notify(observer.validation, None, error, perf_counter() - began)
            await self._refuse(scope, receive, send, error, token=token, access=access, dpop=dpop)
            return
        if proof is not None and proof.next_nonce is not None:
            send = _adding_header(send, b"dpop-nonce", proof.next_nonce.encode())
        await self._call_app(scope, receive, send, private=in_query)

    async def _observe_and_hit(self, access: AccessToken, scope: Scope) -> RateLimitDecision:
        """The token-sharing sighting and the rate-limit hit in one Redis round trip.

        Both start in the same loop iteration, so the storage's pipeline carries both.
        A token refused as shared is answered 401 before any 429: it is burnt, not busy.
        """
        assert self.sharing is not None and self.rate_limiter is not None
        sighting, hit = await asyncio.gather(
            self.sharing.observe(access, scope),
            self.rate_limiter.hit(access),
            return_exceptions=True,
        )
        if isinstance(sighting, BaseException):
            raise sighting
        if isinstance(hit, BaseException):
            raise hit
        return hit

    async def _serve_metadata(self, scope: Scope, send: Send) -> None:
        """RFC 9728 §3.2: the protected resource metadata, public, cacheable, readable cross-origin.

        Built on first request, when the application's routes (and so the scopes they
        require) are all known; the same bytes are sent from then on.
        """
        method = scope.get("method", "GET")
        if method == "OPTIONS":  # a browser's CORS preflight (MCP clients in a page)
            await _send(send, 204, _metadata_cors(), b"")
            return
        if method not in ("GET", "HEAD"):
            await _send(send, 405, [(b"allow", b"GET, HEAD, OPTIONS")], b"")
            return
        answer = self._metadata_answer
        if answer is None:
            answer = self._metadata_answer = self._build_metadata(scope)
        await _send(send, 200, answer.headers, b"" if method == "HEAD" else answer.body)

    def _build_metadata(self, scope: Scope) -> Answer:
        metadata = self.resource_metadata
        assert metadata is not None
        methods = ["header"]
        if self.token_in_form:
            methods.append("body")
        if self.token_in_query:
            methods.append("query")
        document = metadata.document(
            scopes=route_scopes(scope.get("app") or self.app),
            bearer_methods=methods,
            certificates=self.certificates.header is not None,
            dpop_algorithms=self.dpop.algs.split() if self.dpop is not None else (),
            dpop_required=self._dpop_only,
        )
        body = json.dumps(document, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", f"public, max-age={metadata.max_age}".encode()),
            (b"content-length", str(len(body)).encode()),
            *_metadata_cors(),
        ]
        return Answer(200, headers, body)

    def _proved(self, scope: Scope) -> Proved:
        """What this request proves about its sender, by RFC 7800 confirmation method."""
        x5t = self.certificates.thumbprint(scope)
        return {"x5t#S256": x5t} if x5t is not None else NOTHING_PROVED

    async def _prove_dpop(self, scope: Scope, token: str) -> tuple[AccessToken, Proof]:
        """A DPoP request (RFC 9449 §7.1): the proof, the token, their binding, then the jti.

        The proof is checked before an uncached token is decided, so a request
        without a good proof costs no key fetch or introspection; its ``jti`` is
        spent last, so only a request that passed everything can use up a proof.
        """
        guard = self.dpop
        assert guard is not None
        validator = self.validator
        digest, validated = validator.lookup(token)  # a cache hit, or nothing done yet
        proof = guard.check(scope, digest)
        if validated is None:
            asker = partial(_client_key, self.proxies, scope)
            validated = await validator.decide(token, digest, client=asker)
        if validated.confirmation is None:
            raise InvalidToken(
                "The access token is not bound to a DPoP key", reason="dpop_unbound_token"
            )
        check_binding(validated.confirmation, {**self._proved(scope), "jkt": proof.jkt})
        await guard.spend(proof)
        scope[DPOP_SCOPE_KEY] = proof
        return validated, proof

    async def _handle_route_error(self, conn: HTTPConnection, exc: Exception) -> Response | None:
        """A route's AuthError, answered inside Starlette: the same answer ``_refuse`` sends.

        On a WebSocket, Starlette sends the returned response as a denial, which only
        a server with the denial-response extension understands; elsewhere the
        handshake is closed with 1008 instead.
        """
        assert isinstance(exc, AuthError)
        scope = conn.scope
        self._report(scope, exc, None, token_of(conn))
        # The refusal carries its own RateLimit headers: none from the scope on top.
        scope.pop(DECISION_SCOPE_KEY, None)
        answer = answer_for(
            exc,
            self.realm,
            self.schemes,
            used="DPoP" if DPOP_SCOPE_KEY in scope else "Bearer",
            resource_metadata=self._metadata_url,
        )
        if scope["type"] == "websocket" and not _denial_supported(scope):
            assert isinstance(conn, WebSocket)
            await conn.close(1008, _close_reason(answer.status))
            return None
        return answer.response()

    def _authenticate(self, scope: Scope, access: AccessToken) -> None:
        credentials = self._credentials.get(access.scopes)
        if credentials is None:
            credentials = GrantedScopes(access.scopes)
            if len(self._credentials) < _MAX_CREDENTIALS:
                self._credentials[access.scopes] = credentials
        scope["auth"] = credentials
        scope["user"] = TokenUser(access)

    async def _call_app(
        self, scope: Scope, receive: Receive, send: Send, *, private: bool = False
    ) -> None:
        """Run the app; an AuthError raised by a route dependency becomes its RFC 6750 answer.

        Rate-limit decisions left on the scope (by the middleware or a per-route
        limit) become RateLimit headers on the response. ``private``: the token came
        in the URL, so a success must not be stored by shared caches (RFC 6750 §2.3).

        A mounted Starlette application answers an exception it has no handler for
        with a 500 and then raises it on: such a 500 is held back until the app is
        done, so a route's refusal inside a ``Mount`` still gets its own answer.
        """
        started = False
        held: list[Message] | None = None

        async def send_tracking(message: Message) -> None:
            nonlocal started, held
            if held is not None:
                held.append(message)
                return
            if not started and message["type"] in _STARTS:
                if message.get("status") == 500:
                    held = [message]
                    return
                started = True
                decision = scope.get(DECISION_SCOPE_KEY)
                if decision is not None and message["type"] == "http.response.start":
                    message = {
                        **message,
                        "headers": [*message.get("headers", ()), *decision.headers()],
                    }
                if private and 200 <= message.get("status", 0) < 300:
                    headers = [h for h in message.get("headers", ()) if h[0] != b"cache-control"]
                    message = {**message, "headers": [*headers, (b"cache-control", b"private")]}
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except AuthError as error:
            if started:
                raise
            await self._refuse(
                scope,
                receive,
                send,
                error,
                access=token_of(HTTPConnection(scope)),
                dpop=DPOP_SCOPE_KEY in scope,
            )
            return
        except BaseException:
            for message in held or ():
                await send(message)
            raise
        for message in held or ():
            await send(message)

    def _dpop_token(self, scope: Scope) -> str | None:
        """The token of ``Authorization: DPoP``; asked only when there is no Bearer token."""
        return find_in_header(scope["headers"], self.max_token_length, scheme=b"dpop")

    async def _find_token(
        self, scope: Scope, receive: Receive
    ) -> tuple[str | None, Receive, bool, bool]:
        """The token, the receive to use from now on, whether it was in the URL, whether DPoP."""
        limit = self.max_token_length
        token = find_in_header(scope["headers"], limit)
        in_url = False
        dpop = False
        if token is None and self.dpop is not None:
            token = self._dpop_token(scope)
            dpop = token is not None
        if self.token_in_query:
            from_query = find_in_query(scope.get("query_string", b""), limit)
            if from_query is not None:
                if token is not None:
                    raise InvalidRequest(
                        "The token was sent in more than one place", reason="two_locations"
                    )
                token, in_url = from_query, True
        # A token found already means the body is never read: an upload behind a header
        # token streams to the application untouched (and is never buffered by us).
        if token is None and self.token_in_form and scope["type"] == "http" and _is_form(scope):
            body, receive = await _buffer_body(receive)
            token = find_in_form(body, limit)
        return token, receive, in_url, dpop

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        error: AuthError,
        *,
        token: str | None = None,
        access: AccessToken | None = None,
        dpop: bool = False,
    ) -> None:
        self._report(scope, error, token, access)
        answer = answer_for(
            error,
            self.realm,
            self.schemes,
            used="DPoP" if dpop else "Bearer",
            resource_metadata=self._metadata_url,
        )
        if scope["type"] == "websocket":
            await _deny_websocket(scope, receive, send, answer)
            return
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})

    def _report(
        self, scope: Scope, error: AuthError, token: str | None, access: AccessToken | None
    ) -> None:
        """Log a refusal and tell the observer: the same for every path that refuses."""
        level = _log_level(error)
        if log.isEnabledFor(level):
            self._log_refusal(scope, error, level, token, access)
        if self.observer is not None:
            notify(self.observer.refusal, error)

    def _log_refusal(
        self,
        scope: Scope,
        error: AuthError,
        level: int,
        token: str | None,
        access: AccessToken | None,
    ) -> None:
        """One line per refusal, named for the decision that refused; the token only as a hash."""
        if access is not None:
            shown = access.short_hash
        elif token is None:
            shown = "-"
        elif len(token) > self.max_token_length:
            shown = "too_large"  # never hashed, as it is never decoded
        else:
            shown = token_hash(token)[:12]
        outcome = outcome_of(error)
        path = _printable(scope.get("path", ""))
        if isinstance(error, RateLimited):
            log.log(
                level,
                "bearerguard.ratelimit.exceeded token=%s limit=%d retry_after=%d path=%s",
                shown,
                error.limit,
                error.retry_after,
                path,
            )
        elif access is None:
            log.log(
                level,
                "bearerguard.validation outcome=%s reason=%s status=%d token=%s path=%s",
                outcome,
                error.reason,
                error.status,
                shown,
                path,
            )
        else:
            required = " ".join(error.required) if isinstance(error, InsufficientScope) else "-"
            log.log(
                level,
                "bearerguard.authorization outcome=%s reason=%s status=%d required=%r token=%s"
                " path=%s",
                outcome,
                error.reason,
                error.status,
                required,
                shown,
                path,
            )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Fetch keys at startup (never waiting on the IdP); close the client at shutdown."""

        async def receive_hooked() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and not self._started:
                self._started = True
                self.validator.start()
            return message

        async def send_hooked(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aclose()
            await send(message)

        await self.app(scope, receive_hooked, send_hooked)

    async def aclose(self) -> None:
        """Close the HTTP client, background refreshes, rate-limit and token-sharing storage."""
        await self.validator.aclose()
        if self.rate_limiter is not None:
            await self.rate_limiter.aclose()
        if self.sharing is not None:
            await self.sharing.aclose()
        if self.dpop is not None:
            await self.dpop.aclose()


def _adding_header(send: Send, name: bytes, value: bytes) -> Send:
    """``send`` with one more header on the response start (a fresh DPoP nonce, RFC 9449 §8.2)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (name, value)]}
        await send(message)

    return sending


def exclusions(patterns: Sequence[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """``exclude_paths`` as exact paths and segment prefixes.

    ``"/docs/*"`` (or ``"/docs*"``) covers ``/docs`` and everything below it, never
    ``/docsadmin``; an exact path also covers its trailing-slash twin.
    """
    exact: set[str] = set()
    prefixes: list[str] = []
    for pattern in patterns:
        if pattern.endswith("*"):
            base = pattern.rstrip("*").rstrip("/")
            prefixes.append(base + "/")
            if base:
                exact.add(base)
        else:
            base = pattern.rstrip("/")
            exact.update({base or "/", base + "/"})
    return frozenset(exact), tuple(prefixes)


def _route_path(scope: Scope) -> str:
    """The path without the ``root_path`` the app is mounted at (whole segments only)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _client_key(proxies: TrustedProxies, scope: Scope) -> Hashable:
    """Who is asking, for each client's fair share of introspection: its address."""
    return proxies.client_address(scope) or "unknown"


def _log_level(error: AuthError) -> int:
    """WARNING when an upstream is failing (a 503); INFO for what a client's token caused."""
    return logging.WARNING if isinstance(error, Unavailable) else logging.INFO


def _metadata_cors() -> list[tuple[bytes, bytes]]:
    """A public document: any origin may read it (no credentials are involved)."""
    return [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
    ]


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _printable(path: str) -> str:
    """A request path safe for a log line: control characters escaped, so no forged lines."""
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


def _is_form(scope: Scope) -> bool:
    if scope.get("method") in ("GET", "HEAD"):
        return False
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type: bytes = value.split(b";")[0].strip().lower()
            return media_type == b"application/x-www-form-urlencoded"
    return False


async def _buffer_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read a (capped) form body, then replay it so the application still receives it."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_FORM_BYTES:
            raise InvalidRequest(
                "The form body is too large to look for a token", reason="body_too_large"
            )
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, answer: Answer) -> None:
    """Refuse before accept: an HTTP denial where the server supports it, else close 1008."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if _denial_supported(scope):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": answer.status,
                "headers": answer.headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": answer.body})
        return
    await send({"type": "websocket.close", "code": 1008, "reason": _close_reason(answer.status)})


def _denial_supported(scope: Scope) -> bool:
    """Whether the server can send an HTTP response instead of a WebSocket handshake."""
    return "websocket.http.response" in (scope.get("extensions") or {})


def _close_reason(status: int) -> str:
    """The close frame's reason for a refusal sent as 1008: the answer's status in a word."""
    return _CLOSE_REASONS.get(status, "unauthorized")


_CLOSE_REASONS = {400: "bad_request", 403: "forbidden", 429: "rate_limited", 503: "unavailable"}
