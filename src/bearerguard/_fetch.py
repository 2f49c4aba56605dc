"""The one place bearerguard talks HTTP to an authorization server, with every limit applied.

Metadata, JWKS and introspection all go through :func:`fetch_json`, so the rules
that keep a hostile or broken upstream from hurting us (https only, a size cap, one
timeout for the whole exchange, no redirect to another origin, strict JSON) are
written once.

Redirects: a GET follows at most :data:`MAX_REDIRECTS` redirects, and only within
the same origin (scheme, host and port); a redirect anywhere else is refused. A
POST (introspection) never follows a redirect, so a body and client credentials
are never re-sent to a URL the configuration did not name.

The client is ``httpx``'s by default; an ``httpx2.AsyncClient`` (httpx's successor,
the same API) given by the caller works alike: URLs are handed over as strings and
its errors are caught as httpx's are.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
import sys
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import quote_plus, urljoin

import httpx

from bearerguard._config import FetchPolicy
from bearerguard._json import loads_bytes
from bearerguard._urls import check_url

if TYPE_CHECKING:
    import httpx2

#: What ``http_client=`` takes: an ``httpx.AsyncClient`` or an ``httpx2.AsyncClient``.
HTTPClient: TypeAlias = "httpx.AsyncClient | httpx2.AsyncClient"

__all__ = [
    "MAX_REDIRECTS",
    "FetchResult",
    "UpstreamError",
    "fetch_json",
    "max_age_from_headers",
    "new_client",
]

#: Same-origin redirects a GET may follow before the fetch fails.
MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class UpstreamError(Exception):
    """A fetch failed; the message is short and safe to log (no body, no credentials).

    ``retryable`` tells whether trying again later may help (network error, timeout,
    5xx, 408/429, a body that is not JSON, an oversized body, a bad redirect), as
    opposed to an answer that will not change by itself (a 4xx, a URL refused).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A parsed JSON answer and how long the server says it may be kept.

    ``max_age`` is ``None`` when the server said nothing, ``0`` when it forbade caching.
    """

    document: Any
    max_age: float | None
    status: int


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host.lower(), url.port or default)


def max_age_from_headers(headers: httpx.Headers) -> float | None:
    """Seconds the response may be cached (RFC 9111), or ``None`` when the server said nothing.

    ``no-store``/``no-cache`` give 0; ``max-age`` minus ``Age`` otherwise; else
    ``Expires`` minus ``Date``. An unparseable value counts as said-nothing for
    ``max-age`` and as already-expired for ``Expires`` (RFC 9111 §5.3).
    """
    directives: dict[str, str | None] = {}
    for value in headers.get_list("cache-control"):
        for part in value.split(","):
            name, sep, arg = part.strip().partition("=")
            if name:
                directives.setdefault(name.strip().lower(), arg.strip().strip('"') if sep else None)
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    age = _non_negative_int(headers.get("age")) or 0
    if "max-age" in directives:
        max_age = _non_negative_int(directives["max-age"])
        if max_age is None:
            return None
        return float(max(0, max_age - age))
    expires = headers.get("expires")
    if expires is None:
        return None
    try:
        expires_at = parsedate_to_datetime(expires).timestamp()
        date = headers.get("date")
        now = parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    if now is None:
        return None
    return max(0.0, expires_at - now - age)


def _non_negative_int(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative_int(value.strip())
    return float(seconds) if seconds is not None else None


async def fetch_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    policy: FetchPolicy,
    method: str = "GET",
    data: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    accept_status: Collection[int] = (200,),
) -> FetchResult:
    """Fetch one JSON document; every failure is an :class:`UpstreamError`, nothing else.

    ``policy.timeout`` bounds the whole exchange (redirects and body included) and
    ``policy.max_bytes`` the decoded body.
    """
    try:
        check_url(url)
    except ValueError as exc:
        raise UpstreamError(f"URL refused: {exc}", retryable=False) from None
    method = method.upper()
    request_headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    if headers:
        request_headers.update(headers)
    try:
        async with asyncio.timeout(policy.timeout):
            return await _exchange(
                client,
                httpx.URL(url),
                policy=policy,
                method=method,
                data=data,
                auth=auth,
                headers=request_headers,
                accept_status=accept_status,
            )
    except TimeoutError:
        raise UpstreamError(f"timed out after {policy.timeout:g} s") from None
    except Exception as exc:
        timeouts, failures = _transport_errors()
        if isinstance(exc, timeouts):
            raise UpstreamError(f"timed out after {policy.timeout:g} s") from None
        if isinstance(exc, failures):
            raise UpstreamError(f"network error: {type(exc).__name__}") from None
        raise


def _transport_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(timeouts, other transport failures) of httpx, and of httpx2 when it is in use.

    Looked up only when an exchange has failed: httpx2 is never imported by us; if a
    caller's client is an httpx2 one, the module is already loaded.
    """
    modules = [httpx, sys.modules.get("httpx2")]
    timeouts: list[type[Exception]] = []
    failures: list[type[Exception]] = [OSError]
    for module in modules:
        if module is not None:
            timeouts.append(module.TimeoutException)
            failures += [module.HTTPError, module.InvalidURL, module.StreamError]
    return tuple(timeouts), tuple(failures)


async def _exchange(
    client: httpx.AsyncClient,
    url: httpx.URL,
    *,
    policy: FetchPolicy,
    method: str,
    data: Mapping[str, str] | None,
    auth: tuple[str, str] | None,
    headers: Mapping[str, str],
    accept_status: Collection[int],
) -> FetchResult:
    origin = _origin(url)
    for _ in range(MAX_REDIRECTS + 1):
        request = client.build_request(
            method,
            str(url),  # a string, which httpx2's client takes too
            data=dict(data) if data is not None else None,
            headers=headers,
            timeout=policy.timeout,
        )
        if auth is not None:
            request.headers["Authorization"] = _basic_credentials(*auth)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if (
                response.status_code in _REDIRECT_STATUSES
                and response.status_code not in accept_status
            ):
                url = _redirect_target(url, response, origin=origin, method=method)
                continue
            if response.status_code not in accept_status:
                raise _status_error(response)
            body = await _read_capped(response, policy.max_bytes)
        finally:
            await response.aclose()
        if response.headers.get("content-type", "").lower().startswith("text/html"):
            raise UpstreamError("answer is HTML, not JSON", status=response.status_code)
        try:
            document = loads_bytes(body)
        except ValueError as exc:
            raise UpstreamError(
                f"answer is not valid JSON: {exc}", status=response.status_code
            ) from None
        return FetchResult(
            document=document,
            max_age=max_age_from_headers(response.headers),
            status=response.status_code,
        )
    raise UpstreamError(f"more than {MAX_REDIRECTS} redirects")


def _basic_credentials(client_id: str, secret: str) -> str:
    """HTTP Basic for client credentials, each part form-encoded first (RFC 6749 §2.3.1)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _redirect_target(
    url: httpx.URL, response: httpx.Response, *, origin: tuple[str, str, int | None], method: str
) -> httpx.URL:
    if method != "GET":
        raise UpstreamError(f"redirect refused for {method}", status=response.status_code)
    location = response.headers.get("location")
    if not location:
        raise UpstreamError("redirect without a Location", status=response.status_code)
    target = urljoin(str(url), location)
    try:
        check_url(target)
        parsed = httpx.URL(target)
    except (ValueError, httpx.InvalidURL):
        raise UpstreamError("redirect to a refused URL", status=response.status_code) from None
    if _origin(parsed) != origin:
        raise UpstreamError("redirect to another origin refused", status=response.status_code)
    return parsed


def _status_error(response: httpx.Response) -> UpstreamError:
    status = response.status_code
    retryable = status >= 500 or status in (408, 425, 429)
    return UpstreamError(
        f"HTTP {status}",
        retryable=retryable,
        status=status,
        retry_after=_retry_after(response.headers),
    )


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, decoded, refused as soon as it (or its decoded form) passes ``max_bytes``.

    Decompression is done here with a bounded output, so a small gzip bomb cannot
    expand in memory before the cap is checked.
    """
    too_large = UpstreamError(f"answer larger than {max_bytes} bytes", status=response.status_code)
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    if response.is_stream_consumed:
        # An in-memory answer (an in-process transport): already read and decoded.
        if len(response.content) > max_bytes:
            raise too_large
        return response.content
    decoder = _decoder(response.headers.get("content-encoding", ""), response.status_code)
    chunks: list[bytes] = []
    size = 0
    try:
        async for raw in response.aiter_raw():
            data = raw
            while True:
                piece = data if decoder is None else decoder.decompress(data, max_bytes - size + 1)
                size += len(piece)
                if size > max_bytes:
                    raise too_large
                chunks.append(piece)
                if decoder is None or not decoder.unconsumed_tail:
                    break
                data = decoder.unconsumed_tail
        if decoder is not None:
            tail = decoder.flush()
            if size + len(tail) > max_bytes:
                raise too_large
            chunks.append(tail)
    except zlib.error:
        raise UpstreamError(
            "answer could not be decompressed", status=response.status_code
        ) from None
    return b"".join(chunks)


def _decoder(content_encoding: str, status: int) -> zlib._Decompress | None:
    """A zlib decompressor for gzip/deflate, ``None`` for identity; anything else is refused."""
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    raise UpstreamError("answer uses an unsupported content encoding", status=status)


def _user_agent() -> str:
    try:
        return f"bearerguard/{version('bearerguard')}"
    except PackageNotFoundError:
        return "bearerguard"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, made once per process.

    Making one loads the CA bundle, which costs more than everything else a new
    validator does; every validator (one per ``inspect`` run, per test app) would
    otherwise pay it again. The environment (``SSL_CERT_FILE``) is read the first time.
    """
    return httpx.create_ssl_context()


def new_client() -> httpx.AsyncClient:
    """The HTTP client a middleware shares between its issuers: no automatic redirects.

    Redirects are handled by :func:`fetch_json` itself, so the same-origin rule
    cannot be bypassed by a client configured elsewhere.
    """
    return httpx.AsyncClient(
        verify=_tls_context(),
        follow_redirects=False,
        timeout=httpx.Timeout(FetchPolicy().timeout),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=8, keepalive_expiry=30.0),
        headers={"User-Agent": _user_agent()},
    )
