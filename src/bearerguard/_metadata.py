"""Authorization server metadata (OIDC Discovery 1.0, RFC 8414): where the keys live.

The document is trusted only when its ``issuer`` equals the configured one exactly
(RFC 8414 §3.3): otherwise a compromised or misconfigured server could point us at
someone else's keys. For an issuer template that means the document holds the very
template (Entra ID's tenant-independent documents say
``https://login.microsoftonline.com/{tenantid}/v2.0``), fetched from ``metadata_url``.
The URLs it names must be https, unless the issuer itself is
plain http on loopback: an https issuer's metadata may not aim us at a local
service. A failure here is the upstream's or the configuration's fault, never the
token's, so it surfaces as :class:`~bearerguard._errors.Unavailable`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bearerguard._backoff import Backoff
from bearerguard._config import Issuer
from bearerguard._errors import Unavailable
from bearerguard._fetch import UpstreamError, fetch_json
from bearerguard._flight import SingleFlight
from bearerguard._urls import check_url, is_loopback_http

__all__ = ["MetadataResolver", "ServerMetadata", "discovery_urls"]

log = logging.getLogger("bearerguard.metadata")

_OIDC_SUFFIX = "/.well-known/openid-configuration"
_RFC8414_PREFIX = "/.well-known/oauth-authorization-server"
#: The metadata members bearerguard dereferences; each must pass :func:`check_url`.
_URL_MEMBERS = ("jwks_uri", "introspection_endpoint")


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """What bearerguard uses from an authorization server's metadata, plus the raw document."""

    issuer: str
    jwks_uri: str | None
    introspection_endpoint: str | None
    raw: Mapping[str, Any]


def discovery_urls(issuer: str) -> tuple[str, str]:
    """Where to look for metadata, in order: OIDC Discovery §4, then RFC 8414 §3.1.

    OIDC appends the well-known suffix to the issuer; RFC 8414 inserts its
    well-known segment between the host and the issuer's path.
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = urlunsplit((parts.scheme, parts.netloc, path + _OIDC_SUFFIX, "", ""))
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, _RFC8414_PREFIX + path, "", ""))
    return oidc, rfc8414


class _MetadataError(Exception):
    """A metadata document that must not be used; the message is safe to log."""


class MetadataResolver:
    """Finds and caches one issuer's metadata: single-flight, last-known-good, backoff.

    When ``jwks_uri`` is configured (or discovery is off) the metadata is built from
    the configuration and no request is ever made.
    """

    def __init__(
        self,
        issuer: Issuer,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._client = client
        self._clock = clock
        self._policy = issuer.fetch
        self._static: ServerMetadata | None = None
        if issuer.jwks_uri is not None or not issuer.discovery:
            self._static = ServerMetadata(
                issuer=issuer.issuer,
                jwks_uri=issuer.jwks_uri,
                introspection_endpoint=issuer.introspection_endpoint,
                raw=MappingProxyType({}),
            )
        self._cached: ServerMetadata | None = None
        self._fetched_at = 0.0
        self._flight: SingleFlight[None] = SingleFlight()
        self._backoff = Backoff(self._policy.cooldown)
        #: HTTP requests made and failed attempts, for tests and metrics.
        self.fetches = 0
        self.failures = 0
        #: The discovery URL the metadata in hand came from (``None``: configured).
        self.source: str | None = None
        #: Why the last discovery failed (``None`` after one that worked), for explanations.
        self.last_error: str | None = None

    @property
    def cached(self) -> ServerMetadata | None:
        """The metadata in hand (configured or last fetched), without any network call."""
        return self._static if self._static is not None else self._cached

    async def get(self) -> ServerMetadata:
        """The issuer's metadata; raises ``Unavailable`` only when none was ever had."""
        if self._static is not None:
            return self._static
        now = self._clock()
        cached = self._cached
        if cached is not None and now - self._fetched_at < self._policy.max_ttl:
            return cached
        if self._flight.current() is None and not self._backoff.allows(now):
            if cached is not None:
                return cached
            raise self._unavailable(now)
        await self._flight.run(self._refresh)
        if self._cached is not None:
            return self._cached
        raise self._unavailable(self._clock())

    async def aclose(self) -> None:
        """Cancel a fetch in flight (at shutdown)."""
        await self._flight.aclose()

    def _unavailable(self, now: float) -> Unavailable:
        wait = self._backoff.remaining(now)
        return Unavailable(
            "The authorization server's metadata is unavailable",
            retry_after=max(1, math.ceil(wait)),
            reason="metadata_unavailable",
        )

    async def _refresh(self) -> None:
        """One discovery attempt; records the outcome and never raises."""
        try:
            metadata = await self._discover()
        except (_MetadataError, UpstreamError) as exc:
            self._failed(exc)
        except Exception as exc:  # a bug must not kill the resolver
            log.exception("bearerguard.metadata.internal_error issuer=%s", self._issuer.issuer)
            self._failed(exc)
        else:
            self._cached = metadata
            self._fetched_at = self._clock()
            self._backoff.succeeded()
            self.last_error = None
            log.info(
                "bearerguard.metadata.fetched issuer=%s jwks_uri=%s",
                self._issuer.issuer,
                metadata.jwks_uri,
            )

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = str(exc) or type(exc).__name__
        hint = exc.retry_after if isinstance(exc, UpstreamError) else None
        delay = self._backoff.failed(self._clock(), hint=hint)
        log.warning(
            "bearerguard.metadata.fetch_failed issuer=%s reason=%s retry_in=%.0fs have_cached=%s",
            self._issuer.issuer,
            exc,
            delay,
            self._cached is not None,
        )

    async def _discover(self) -> ServerMetadata:
        issuer = self._issuer.issuer
        try:
            check_url(issuer)
        except ValueError as exc:
            raise _MetadataError(f"issuer is not a URL discovery can use: {exc}") from None
        parts = urlsplit(issuer)
        if parts.query or parts.fragment:
            raise _MetadataError("issuer must not have a query or fragment (RFC 8414 §2)")
        last: UpstreamError | None = None
        configured = self._issuer.metadata_url
        for url in (configured,) if configured is not None else discovery_urls(issuer):
            self.fetches += 1
            try:
                result = await fetch_json(self._client, url, policy=self._policy)
            except UpstreamError as exc:
                last = exc
                if exc.status is None or exc.status >= 500 or exc.status == 429:
                    raise  # the host itself is down or busy: the next URL is on it too
                continue
            if not isinstance(result.document, Mapping):
                last = UpstreamError("metadata is not a JSON object", status=result.status)
                continue
            metadata = self._validate(result.document)
            self.source = url
            return metadata
        assert last is not None
        raise last

    def _validate(self, document: Mapping[str, Any]) -> ServerMetadata:
        configured = self._issuer.issuer
        found = document.get("issuer")
        if found != configured:
            log.error(
                "bearerguard.metadata.issuer_mismatch configured=%r found=%r",
                configured,
                found if isinstance(found, str) and len(found) <= 200 else type(found).__name__,
            )
            raise _MetadataError("metadata issuer does not equal the configured issuer")
        # Plain-http loopback URLs only from a loopback http issuer (a local test or
        # demo): an https issuer's metadata must not aim us at a local service.
        local = is_loopback_http(configured)
        urls: dict[str, str | None] = {}
        for member in _URL_MEMBERS:
            value = document.get(member)
            if value is None:
                urls[member] = None
                continue
            if not isinstance(value, str):
                raise _MetadataError(f"metadata {member} is not a string")
            try:
                check_url(value, plain_http_loopback=local)
            except ValueError as exc:
                raise _MetadataError(f"metadata {member} refused: {exc}") from None
            urls[member] = value
        return ServerMetadata(
            issuer=configured,
            jwks_uri=urls["jwks_uri"],
            introspection_endpoint=self._issuer.introspection_endpoint
            or urls["introspection_endpoint"],
            raw=MappingProxyType(dict(document)),
        )
