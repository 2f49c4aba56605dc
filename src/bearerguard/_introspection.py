"""RFC 7662 token introspection: asking the issuer about a token we cannot read ourselves.

The rules, and why:

* The token travels form-encoded in a POST body (§2.1), never in a URL, with
  ``token_type_hint=access_token``; the resource server authenticates with
  ``client_secret_basic`` (RFC 6749 §2.3.1: id and secret form-encoded before
  base64) or ``client_secret_post``. The exchange goes through
  :func:`~bearerguard._fetch.fetch_json`: a timeout, a size cap, strict JSON with
  duplicate member names refused, HTML refused, and no redirect for a POST.
* Only the JSON value ``true`` in ``active`` means active (§2.2): ``"true"``,
  ``1`` or a missing member all mean "not active".
* An active answer's ``exp``, ``nbf``, ``iat``, ``iss`` and ``aud`` are judged by
  the issuer's :class:`~bearerguard._claims.ClaimRules` exactly as a JWT's are,
  when present (``aud`` must be, with ``Issuer.introspection_requires_audience``);
  ``scope`` must be a string (or list) of scopes, and a ``token_type`` other
  than ``Bearer`` (a refresh token, say) is refused; ``DPoP`` only with the
  ``cnf.jkt`` its proofs are then checked against (RFC 9449 §6.2).
* An endpoint that cannot answer (down, timeout, 5xx, HTML, not JSON, oversized,
  or refusing our own credentials) is the issuer's problem, not the token's:
  :class:`~bearerguard._errors.Unavailable` (503 with ``Retry-After``), so clients
  keep their tokens. Nothing about such a failure is cached.
* At most ``Issuer.introspection_concurrency`` calls are in flight, so a flood of
  distinct junk tokens against a slow endpoint cannot take every connection of the
  shared HTTP pool from JWKS and metadata fetches. Beyond that, calls wait in line up
  to a second (then ``Unavailable``, ``Retry-After: 1``), and a freed slot goes to
  the waiting client (its address, behind ``trusted_proxies`` if any) that holds the
  fewest, so one client's flood cannot starve everyone else; a client with its
  share of the line already gets a 429 at once (:mod:`bearerguard._fairness`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import httpx

from bearerguard._binding import confirmation_of
from bearerguard._claims import ClaimRules
from bearerguard._config import Issuer
from bearerguard._errors import AuthError, InvalidToken, RateLimited, Unavailable, fail
from bearerguard._fairness import ClientOverShare, FairSlots, NoSlot
from bearerguard._fetch import UpstreamError, fetch_json
from bearerguard._metadata import MetadataResolver
from bearerguard._observability import notify
from bearerguard._tokens import AccessToken

__all__ = ["MAX_ANSWER_BYTES", "IntrospectionListener", "Introspector", "cache_deadline"]

log = logging.getLogger("bearerguard.introspection")

#: Introspection answers are small; anything larger than this is refused (64 KiB).
MAX_ANSWER_BYTES = 64 * 1024
#: Longest a call waits in line for a slot before the 503 (capped by the fetch timeout).
QUEUE_WAIT = 1.0
#: ``Retry-After`` when the endpoint failed without suggesting one.
DEFAULT_RETRY_AFTER = 5
#: ``token_type`` values that name a bearer access token (RFC 6749 §7.1, case-insensitive).
_BEARER_TYPES = frozenset({"bearer"})

#: Told of each finished :meth:`Introspector.ask`: the issuer, the seconds it took and
#: the error (``None`` when the endpoint gave a usable answer).
IntrospectionListener = Callable[[str, float, AuthError | None], None]


def names_an_access_token(token_type: Any, document: Mapping[str, Any]) -> bool:
    """``Bearer``, or ``DPoP`` described with the key it is bound to (RFC 9449 §6.2)."""
    if type(token_type) is not str:
        return False
    kind = token_type.lower()
    cnf = document.get("cnf")
    return kind in _BEARER_TYPES or (kind == "dpop" and type(cnf) is dict and "jkt" in cnf)


def cache_deadline(claims: Mapping[str, Any], now: float, cap: float) -> float:
    """When a result about these claims stops being served: never past ``exp``, nor ``now + cap``.

    RFC 7662 §4: a response that carries ``exp`` must not be cached beyond it.
    """
    deadline = now + max(0.0, cap)
    exp = claims.get("exp")
    if type(exp) is int or type(exp) is float:
        deadline = min(deadline, float(exp))
    return deadline


class Introspector:
    """One issuer's RFC 7662 client: it asks about a token and judges the answer.

    ``calls`` counts introspection requests sent and ``failures`` those that got
    no usable answer, for tests and metrics; listeners added with
    :meth:`add_listener` also learn how long each call took.
    """

    def __init__(
        self,
        config: Issuer,
        client: httpx.AsyncClient,
        *,
        metadata: MetadataResolver,
        rules: ClaimRules,
    ) -> None:
        if not config.has_client_credentials:  # the one check Issuer cannot make for us
            raise ValueError(
                f"introspection for {config.issuer!r} needs client_id and client_secret"
            )
        self.config = config
        self._client = client
        limit = config.introspection_concurrency
        #: Who may call now: ``limit`` at once, then a short line served client by client.
        self._slots = FairSlots(
            limit,
            per_client=max(1, limit // 2),
            wait=min(QUEUE_WAIT, config.fetch.timeout),
            max_waiting=4 * limit,
        )
        self._saturation_logged = False
        self._metadata = metadata
        self._rules = rules
        self._policy = replace(
            config.fetch, max_bytes=min(config.fetch.max_bytes, MAX_ANSWER_BYTES)
        )
        self.calls = 0
        self.failures = 0
        #: Why the last call had no usable answer (``None`` after one that had): read by
        #: explanations, never by the request path.
        self.last_error: str | None = None
        #: Calls refused because ``introspection_concurrency`` stayed in flight for the wait.
        self.saturated = 0
        #: Calls refused at once because their client already had its share of the line.
        self.over_share = 0
        self._listeners: tuple[IntrospectionListener, ...] = ()

    def __repr__(self) -> str:  # never the secret
        return f"Introspector(issuer={self.config.issuer!r}, client_id={self.config.client_id!r})"

    async def endpoint(self) -> str | None:
        """The configured endpoint, else the one the metadata names (``None``: there is none).

        Raises ``Unavailable`` when the metadata is needed and cannot be had.
        """
        if self.config.introspection_endpoint is not None:
            return self.config.introspection_endpoint
        return (await self._metadata.get()).introspection_endpoint

    def add_listener(self, listener: IntrospectionListener) -> None:
        """Call ``listener(issuer, seconds, error)`` after each :meth:`ask` that answers or fails.

        It runs on the request path, so it must be quick; an exception it raises is
        logged (``bearerguard.observer.error``) and never reaches the request. A
        cancelled call is not reported.
        """
        self._listeners = (*self._listeners, listener)

    @property
    def in_flight(self) -> int:
        """Introspection calls now waiting for the endpoint."""
        return self._slots.taken

    async def ask(
        self, token: str, endpoint: str, *, short_hash: str, client: Hashable | None = None
    ) -> Mapping[str, Any]:
        """POST the token to ``endpoint``; the answer as a JSON object, or an ``AuthError``.

        When every ``introspection_concurrency`` slot is taken the call waits in line
        up to a second, then raises ``Unavailable`` (reason ``introspection_saturated``);
        freed slots go first to the ``client`` (the requester's address, say) holding
        the fewest, and a client with half as many calls as there are slots already
        in line gets :class:`RateLimited` (429, ``Retry-After: 1``) at once.
        """
        try:
            await self._slots.acquire(client)
        except (ClientOverShare, NoSlot) as refusal:
            error: AuthError = (
                self._over_share()
                if isinstance(refusal, ClientOverShare)
                else self._saturated(short_hash)
            )
            if self._listeners:
                self._tell(0.0, error)
            raise error from None
        try:
            if not self._listeners:
                return await self._post(token, endpoint, short_hash)
            began = time.perf_counter()
            try:
                document = await self._post(token, endpoint, short_hash)
            except AuthError as error:
                self._tell(time.perf_counter() - began, error)
                raise
            self._tell(time.perf_counter() - began, None)
            return document
        finally:
            self._slots.release(client)
            if self._slots.taken == 0:
                self._saturation_logged = False

    def _over_share(self) -> RateLimited:
        self.over_share += 1
        share = self._slots.per_client
        self.last_error = f"this client already has {share} introspection calls waiting"
        return RateLimited(
            retry_after=1,
            limit=share,
            description="Too many of this client's tokens are being checked at once",
        )

    def _saturated(self, short_hash: str) -> Unavailable:
        self.saturated += 1
        self.last_error = f"{self._slots.taken} introspection calls already in flight"
        # One warning per episode (a flood must not flood the log too); the rest at debug.
        level = logging.DEBUG if self._saturation_logged else logging.WARNING
        self._saturation_logged = True
        log.log(
            level,
            "bearerguard.introspection.saturated issuer=%s token=%s in_flight=%d",
            self.config.issuer,
            short_hash,
            self._slots.taken,
        )
        return Unavailable(
            "The authorization server cannot check the access token right now",
            retry_after=1,
            reason="introspection_saturated",
        )

    def _tell(self, seconds: float, error: AuthError | None) -> None:
        for listener in self._listeners:
            notify(listener, self.config.issuer, seconds, error)

    async def _post(self, token: str, endpoint: str, short_hash: str) -> Mapping[str, Any]:
        config = self.config
        data = {"token": token, "token_type_hint": "access_token"}
        auth: tuple[str, str] | None = None
        assert config.client_id is not None and config.client_secret is not None
        if config.introspection_auth == "client_secret_post":
            data["client_id"] = config.client_id
            data["client_secret"] = config.client_secret
        else:
            auth = (config.client_id, config.client_secret)
        self.calls += 1
        try:
            result = await fetch_json(
                self._client, endpoint, policy=self._policy, method="POST", data=data, auth=auth
            )
        except UpstreamError as exc:
            raise self._unavailable(exc.message, exc.retry_after, short_hash) from None
        log.debug("bearerguard.introspection.call issuer=%s token=%s", config.issuer, short_hash)
        document = result.document
        if not isinstance(document, dict):
            raise self._unavailable("answer is not a JSON object", None, short_hash)
        self.last_error = None
        return document

    def judge(
        self,
        document: Mapping[str, Any],
        now: float,
        failures: list[InvalidToken] | None = None,
    ) -> None:
        """Raise ``InvalidToken`` unless the answer says active and its claims pass.

        With ``failures`` every broken rule is appended there instead (``inspect``).
        """
        if document.get("active") is not True:
            fail(
                failures,
                InvalidToken(
                    "The access token is not active",
                    reason="inactive",
                    claim="active",
                    expected=True,
                    found=document.get("active"),
                ),
            )
            return  # an inactive answer says nothing else worth judging
        token_type = document.get("token_type")
        if token_type is not None and not names_an_access_token(token_type, document):
            fail(
                failures,
                InvalidToken(
                    "The token is not a bearer access token",
                    reason="bad_token_type",
                    claim="token_type",
                    expected="Bearer",
                    found=token_type,
                ),
            )
        if self.config.introspection_requires_audience and "aud" not in document:
            # RFC 7662 makes aud optional; this issuer is configured to always send it,
            # so an answer without it may be about a token minted for another API.
            fail(
                failures,
                InvalidToken(
                    "The access token is not for this audience",
                    reason="bad_aud",
                    claim="aud",
                    expected=sorted(self._rules.audiences),
                    found=None,
                ),
            )
        self._rules.check_claims(document, now, introspected=True, failures=failures)
        try:
            self._rules.scopes(document)  # a malformed scope is a refusal
        except InvalidToken as error:
            fail(failures, error)
        username = document.get("username")
        if username is not None and type(username) is not str:
            fail(
                failures,
                InvalidToken(
                    "The access token's username is malformed",
                    reason="bad_claim",
                    claim="username",
                    expected="a string",
                    found=username,
                ),
            )

    def access_token(
        self,
        document: Mapping[str, Any],
        token_hash: str,
        *,
        share: Callable[[frozenset[str]], frozenset[str]] | None = None,
    ) -> AccessToken:
        """The :class:`AccessToken` of an answer that passed :meth:`judge`.

        ``share`` may swap the scope set for an equal one already held (see
        ``ValidationCache.shared_scopes``).
        """
        scopes = self._rules.scopes(document)
        aud = document.get("aud")
        if type(aud) is str:
            audience: tuple[str, ...] = (aud,)
        elif type(aud) is list:
            audience = tuple(a for a in aud if type(a) is str)
        else:
            audience = ()
        exp = document.get("exp")
        return AccessToken(
            issuer=self.config.issuer,
            subject=document.get("sub"),
            client_id=self._rules.client_id(document),
            scopes=share(scopes) if share is not None else scopes,
            audience=audience,
            expires_at=float(exp) if type(exp) is int or type(exp) is float else None,
            token_hash=token_hash,
            claims=MappingProxyType(dict(document)),
            kind="opaque",
            confirmation=confirmation_of(document),
        )

    def _unavailable(self, why: str, hint: float | None, short_hash: str) -> Unavailable:
        self.failures += 1
        self.last_error = why
        log.warning(
            "bearerguard.introspection.failed issuer=%s token=%s reason=%s",
            self.config.issuer,
            short_hash,
            why,
        )
        retry_after = DEFAULT_RETRY_AFTER if hint is None else min(60, max(1, math.ceil(hint)))
        return Unavailable(
            "The authorization server cannot check the access token right now",
            retry_after=retry_after,
            reason="introspection_unavailable",
        )
