"""Which URLs bearerguard may fetch: https, or plain http to a loopback host.

Used where a URL is configured (an :class:`~bearerguard.Issuer` checks its own when
made), where a metadata document names one, and before every fetch.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["check_url", "is_loopback_http"]

_LOOPBACK_NAMES = frozenset({"localhost"})


def check_url(url: str, *, plain_http_loopback: bool = True) -> None:
    """Raise ``ValueError`` unless ``url`` is https, or http to a loopback host.

    Keys and metadata decide what is trusted, so they must not travel in clear text
    over a network; loopback http is allowed so tests and the demo work. With
    ``plain_http_loopback=False`` only https passes (for URLs named by a remote
    server's metadata, which must not send us to a local plain-http service).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("URL must be a non-empty string")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("URL must not contain whitespace or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError(f"URL scheme must be https, not {parts.scheme or 'missing'!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("URL must not carry user information")
    host = parts.hostname
    if not host:
        raise ValueError("URL has no host")
    _ = parts.port  # raises ValueError for a malformed port
    if scheme == "http" and not _is_loopback(host):
        raise ValueError(
            "plain http is only allowed for loopback hosts (127.0.0.1, ::1, localhost)"
        )
    if scheme == "http" and not plain_http_loopback:
        raise ValueError("URL must be https: plain http to loopback is not allowed here")


def is_loopback_http(url: str) -> bool:
    """True when ``url`` is plain http to a loopback host (a local test or demo issuer)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() == "http" and _is_loopback(parts.hostname or "")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
