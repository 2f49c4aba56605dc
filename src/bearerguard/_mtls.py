"""Certificate-bound access tokens (RFC 8705 §3): which client certificate a request proves.

A token whose ``cnf`` carries ``x5t#S256`` may only be used over a mutual-TLS
connection made with that certificate: the TLS handshake proved the client holds
its private key, and the thumbprint (base64url SHA-256 of the DER certificate)
ties the token to it. Only the certificate's identity matters here; the TLS
server (or the proxy) already judged whether to accept the certificate at all.

Where the certificate comes from decides whether it can be believed:

* the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``),
  filled by a server that terminated TLS itself, for a client talking to us
  directly; a certificate the server reports an error for proves nothing;
* a header set by a TLS-terminating proxy (``client_cert_header=``), believed only
  when the TCP peer is one of ``trusted_proxies`` (anyone else could write it).
  From a trusted proxy only the header counts: a TLS extension there describes
  the proxy's own certificate, not the client's.

The header may be RFC 9440 ``Client-Cert`` (``:<base64 DER>:``), a PEM certificate
(raw, or URL-encoded as nginx's ``$ssl_client_escaped_cert`` and AWS ALB send it),
or the base64 DER alone (URL-encoded or not, as Traefik and Caddy send it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.types import Scope

from bearerguard._proxies import TrustedProxies

__all__ = ["ClientCertificates", "thumbprint"]

#: Larger header values are not a certificate anyone sends; they prove nothing.
_MAX_HEADER_BYTES = 16 * 1024
_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----", re.ASCII
)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)
#: Thumbprints and peer verdicts remembered; a client sends the same certificate on
#: every request, so this is per client, and the dicts are emptied when full.
_MEMO_SIZE = 1024
#: The header names a proxy must never be trusted with: they carry other meanings.
_RESERVED = frozenset({"authorization", "dpop", "host", "cookie"})


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url (unpadded) SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def _der_from_pem(text: str) -> bytes | None:
    """The first certificate of a PEM text, as DER; ``None`` when there is none."""
    match = _PEM.search(text)
    if match is None:
        return None
    return _b64(re.sub(r"\s+", "", match.group(1)))


def _b64(text: str) -> bytes | None:
    if not text or _BASE64.fullmatch(text) is None:
        return None
    try:
        return base64.b64decode(text, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def _der_from_header(value: bytes) -> bytes | None:
    """The client certificate a proxy forwarded, in any of the usual encodings."""
    if len(value) > _MAX_HEADER_BYTES:
        return None
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if len(text) > 2 and text[0] == ":" and text[-1] == ":":  # RFC 9440 §2 byte sequence
        return _b64(text[1:-1])
    if "%" in text:  # URL-encoded PEM or base64 (nginx, AWS ALB, Traefik)
        text = unquote(text)
    if "-----BEGIN" in text:
        # nginx's old $ssl_client_cert folds lines with tabs: whitespace is dropped anyway.
        return _der_from_pem(text)
    return _b64(re.sub(r"\s+", "", text))


def _pem_from_tls(scope: Scope) -> str | None:
    """The client certificate of a direct TLS connection (ASGI TLS extension), as PEM."""
    extensions: Any = scope.get("extensions")
    tls = extensions.get("tls") if isinstance(extensions, dict) else None
    if not isinstance(tls, dict) or tls.get("client_cert_error"):
        return None
    chain = tls.get("client_cert_chain")
    if not isinstance(chain, list | tuple) or not chain or not isinstance(chain[0], str):
        return None
    return chain[0]


@dataclass(frozen=True, slots=True)
class ClientCertificates:
    """Where this API finds the client certificate of a request, and whom it believes.

    ``header``: the header a TLS-terminating proxy puts the client certificate in
    (``None``: no proxy does); it is read only from ``proxies``, so setting it
    without trusted proxies is a configuration error.
    """

    header: str | None = None
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    #: Encoded certificate (header value or PEM) -> thumbprint, ``None`` if it is none.
    _thumbprints: dict[bytes | str, str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    #: TCP peer host -> whether it is a trusted proxy.
    _peers: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.header is None:
            return
        name = self.header.strip().lower()
        if not name or name in _RESERVED or not name.isascii() or " " in name:
            raise ValueError(f"client_cert_header: {self.header!r} cannot carry a certificate")
        if not self.proxies:
            raise ValueError(
                "client_cert_header is only believed from trusted_proxies: without them "
                "any client could name any certificate; set trusted_proxies=[...] too"
            )
        object.__setattr__(self, "header", name)

    def thumbprint(self, scope: Scope) -> str | None:
        """The ``x5t#S256`` of the certificate this request was made with, if it proves one."""
        if self.proxies and self._from_proxy(scope):
            if self.header is None:  # the connection is the proxy's: nothing about the client
                return None
            name = self.header.encode("ascii")
            values = [value for key, value in scope["headers"] if key == name]
            if len(values) != 1:  # none, or two: nothing a proxy vouches for
                return None
            value = values[0]
            if len(value) > _MAX_HEADER_BYTES:  # never decoded, never remembered
                return None
            if value not in self._thumbprints:
                self._remember(value, _der_from_header(value))
            return self._thumbprints[value]
        pem = _pem_from_tls(scope)
        if pem is None:
            return None
        if pem not in self._thumbprints:
            self._remember(pem, _der_from_pem(pem))
        return self._thumbprints[pem]

    def _remember(self, encoded: bytes | str, der: bytes | None) -> None:
        if len(self._thumbprints) >= _MEMO_SIZE:
            self._thumbprints.clear()
        self._thumbprints[encoded] = thumbprint(der) if der is not None else None

    def _from_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        host = str(client[0]) if client else ""
        trusted = self._peers.get(host)
        if trusted is None:
            trusted = self.proxies.peer_is_trusted(scope)
            if len(self._peers) >= _MEMO_SIZE:
                self._peers.clear()
            self._peers[host] = trusted
        return trusted
