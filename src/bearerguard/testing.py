"""A development authorization server for tests and demos. NEVER use it in production.

:class:`TestIssuer` generates throw-away keys, mints access tokens (good ones and
deliberately broken ones) and serves discovery and a JWKS over real HTTP on
127.0.0.1, with switches for the events an API must survive: key rotation, an IdP
outage, a slow IdP, odd caching headers. It holds private keys in memory and
answers anyone on the loopback interface, which is exactly why it is a testing
tool and nothing else.

It does not depend on pytest and works inside or outside an event loop::

    with TestIssuer() as issuer:
        app.add_middleware(BearerAuthMiddleware, issuer=issuer.issuer, audience=issuer.audience)
        client.get("/items", headers=issuer.auth_header(scope="read:items"))

``TestIssuer(issuer="https://...")`` plays any real issuer (a provider preset's,
unchanged) through :meth:`TestIssuer.transport`: discovery and the JWKS are
answered at that issuer's URLs, and requests to any other host fail to connect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hashlib
import ipaddress
import json
import secrets
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote_plus, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import get_default_algorithms

from bearerguard._config import Issuer

__all__ = [
    "DEFAULT_AUDIENCE",
    "DPoPKey",
    "Handler",
    "ManualClock",
    "RecordedRequest",
    "Response",
    "TestCertificate",
    "TestIssuer",
    "generate_key",
    "make_certificate",
    "tamper",
]

#: The audience minted tokens carry unless told otherwise.
DEFAULT_AUDIENCE = "https://api.example.com"

_ALGORITHMS = get_default_algorithms()
_SIGNING_ALGS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}
_ALG_FOR_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_MAX_REQUEST_BODY = 1024 * 1024
_HMAC = frozenset({"HS256", "HS384", "HS512"})


class _Default:
    """Marks an argument left out, where ``None`` means something (omit the claim/header)."""

    def __repr__(self) -> str:
        return "DEFAULT"


_DEFAULT: Any = _Default()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key(alg: str) -> Any:
    """A fresh private key for ``alg``: RSA 2048 (RS*, PS*), the matching EC curve, Ed25519."""
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg in _CURVES:
        return ec.generate_private_key(_CURVES[alg])
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"TestIssuer cannot make keys for {alg!r}; use one of {_SIGNING_ALGS}")


class _KeyPool:
    """Keys made once per process and lent to issuers: an RSA key costs about 0.1 s to make.

    A key is lent to one issuer at a time, so two live issuers never share a key,
    and an issuer keeps every key it was lent until it closes, so it never gets the
    same key twice (a rotation always brings a new key). A closed issuer's keys
    serve the next one: a suite that makes hundreds of issuers makes a few keys.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[str, list[Any]] = {}

    @staticmethod
    def _kind(alg: str) -> str:
        return "RSA" if alg.startswith(("RS", "PS")) else alg  # RS* and PS* use one RSA key

    def lend(self, alg: str) -> Any:
        with self._lock:
            free = self._free.get(self._kind(alg))
            if free:
                return free.pop()
        return generate_key(alg)

    def give_back(self, lent: Iterable[tuple[str, Any]]) -> None:
        with self._lock:
            for alg, key in lent:
                self._free.setdefault(self._kind(alg), []).append(key)


_POOL = _KeyPool()


def _alg_for_key(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _ALG_FOR_CURVE[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError("pass alg= for this kind of key")


def tamper(token: str) -> str:
    """The same token with one signature character changed: a signature that does not verify."""
    head, payload, signature = token.split(".")
    decoded = bytearray(_b64decode(signature) or b"\x00")
    decoded[len(decoded) // 2] ^= 0x01
    return f"{head}.{payload}.{_b64(bytes(decoded))}"


@dataclass(frozen=True, slots=True)
class TestCertificate:
    """An X.509 certificate and its private key, for mutual TLS in tests (RFC 8705).

    Self-signed unless made with ``signer=``; good for client and server
    authentication alike. :attr:`confirmation` is the ``cnf`` a token bound to it
    carries; :meth:`header_value` and :meth:`tls_extension` are the two ways an
    API behind a proxy, or terminating TLS itself, learns which certificate was used.
    """

    __test__ = False  # not a pytest test class, despite the name

    certificate: x509.Certificate
    private_key: Any = field(repr=False)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def key_pem(self) -> str:
        """The private key, unencrypted PKCS#8 PEM (a test key: never protect anything with it)."""
        encoded: bytes = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return encoded.decode("ascii")

    @property
    def thumbprint(self) -> str:
        """``x5t#S256``: base64url SHA-256 of the DER certificate (RFC 8705 §3.1)."""
        return _b64(self.certificate.fingerprint(hashes.SHA256()))

    @property
    def confirmation(self) -> dict[str, str]:
        """The ``cnf`` claim of a token bound to this certificate."""
        return {"x5t#S256": self.thumbprint}

    def header_value(self, form: Literal["rfc9440", "pem", "escaped-pem"] = "rfc9440") -> str:
        """The certificate as a TLS-terminating proxy forwards it in a header.

        ``rfc9440``: ``Client-Cert`` (``:<base64 DER>:``); ``escaped-pem``: URL-encoded
        PEM (nginx's ``$ssl_client_escaped_cert``, AWS ALB); ``pem``: raw PEM on one
        line, newlines turned into spaces (Apache's ``RequestHeader ... SSL_CLIENT_CERT``).
        """
        if form == "rfc9440":
            return ":" + base64.b64encode(self.der).decode("ascii") + ":"
        if form == "escaped-pem":
            return quote(self.pem, safe="")
        return " ".join(self.pem.strip().splitlines())

    def tls_extension(self) -> dict[str, Any]:
        """``scope["extensions"]["tls"]`` as an ASGI server that verified this client sets it."""
        return {
            "server_cert": None,
            "client_cert_chain": [self.pem],
            "client_cert_name": self.certificate.subject.rfc4514_string(),
            "client_cert_error": None,
            "tls_version": 0x0304,
            "cipher_suite": None,
        }

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``<cn>.pem`` and ``<cn>.key`` into ``directory`` (for ``ssl`` or httpx)."""
        name = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
        cert_path = Path(directory) / f"{stem}.pem"
        key_path = Path(directory) / f"{stem}.key"
        cert_path.write_text(self.pem)
        key_path.write_text(self.key_pem)
        return cert_path, key_path


def make_certificate(
    common_name: str = "test-client",
    *,
    hosts: Iterable[str] = (),
    alg: str = "ES256",
    signer: TestCertificate | None = None,
    ca: bool = False,
    valid_for: float = 86_400,
) -> TestCertificate:
    """A fresh certificate for mutual TLS tests: a client's, a server's (``hosts``), or a CA.

    ``hosts`` become subject alternative names (IP addresses or DNS names), so the
    same helper makes the server certificate of a TLS test on 127.0.0.1.
    ``signer`` issues it from a test CA (``make_certificate("ca", ca=True)``)
    instead of self-signing it.
    """
    key = generate_key(alg)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.certificate.subject if signer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(seconds=valid_for))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Key identifiers and key usage: what strict X.509 checking (Python 3.13's
        # default context, VERIFY_X509_STRICT) requires of a chain.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    authority = (signer.private_key if signer else key).public_key()
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(authority), critical=False
    )
    if not ca:
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signing_key = signer.private_key if signer else key
    digest = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return TestCertificate(builder.sign(signing_key, digest), key)


class ManualClock:
    """A clock a test moves by hand (``clock.advance(30)``): lifetimes tested without sleeping.

    Give the same clock to the issuer and to the middleware
    (``TestIssuer(clock=clock)``, ``BearerAuthMiddleware(..., clock=clock)``): tokens
    are then minted and judged on one timeline, and ``advance(301)`` expires a
    five-minute token everywhere at once. It starts at the real time, so tokens
    minted against it also read as current to anything still on the real clock.
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the issuer received (headers with lower-case names)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Response:
    """A canned answer; ``body`` is bytes as-is, anything else is sent as JSON."""

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    #: False sends no Content-Length and closes the connection to end the body.
    content_length: bool = True

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


Handler = Callable[[RecordedRequest], "Response | None"]


@dataclass(slots=True)
class _Key:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = _ALGORITHMS[self.alg].to_jwk(self.private.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: TestIssuer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that hangs up during a delay is part of the tests."""


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        length = self.headers.get("Content-Length", "0")
        size = min(int(length), _MAX_REQUEST_BODY) if length.isdigit() else 0
        body = self.rfile.read(size) if size else b""
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=method,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        response = self.server.owner._answer(request)
        self.close_connection = True
        if response is None:  # simulate an IdP that drops the connection
            return
        payload = response.encoded()
        self.send_response(response.status)
        headers = dict(response.headers)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
        for name, value in headers.items():
            self.send_header(name, value)
        if response.content_length:
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: test output is not the place for an access log."""


class TestIssuer:
    """A development authorization server on 127.0.0.1, for tests and demos only.

    It starts serving when created and stops on :meth:`close` (or leaving a
    ``with`` block). ``algorithms`` names the keys it makes, one per algorithm;
    the first one signs by default.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        algorithms: Iterable[str] = ("RS256",),
        *,
        port: int = 0,
        audience: str = DEFAULT_AUDIENCE,
        path: str = "",
        client_id: str = "test-client",
        clock: Callable[[], float] = time.time,
        issuer: str | None = None,
        jwks_uri: str | None = None,
        metadata_url: str | None = None,
    ) -> None:
        algs = tuple(algorithms)
        if not algs:
            raise ValueError("TestIssuer needs at least one algorithm")
        if path and (not path.startswith("/") or path.endswith("/")):
            raise ValueError("path must start with '/' and not end with one")
        if issuer is not None and path:
            raise ValueError("give either issuer= (a whole URL) or path=, not both")
        for url in (issuer, jwks_uri, metadata_url):
            if url is not None and urlsplit(url).scheme not in ("https", "http"):
                raise ValueError(f"{url!r} is not an http(s) URL")
        self.audience = audience
        self.client_id = client_id
        #: The time tokens are minted at and introspection judges ``exp`` by (a
        #: :class:`ManualClock` shared with the middleware moves both).
        self.clock = clock
        self._path = path
        #: Played issuer: its identifier, JWKS and discovery URLs (``None``: loopback).
        self._played = issuer
        self._jwks_uri = jwks_uri
        self._metadata_url = metadata_url
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._counter = 0
        self._published: list[_Key] = []
        self._current: dict[str, _Key] = {}
        #: Keys lent by the pool, given back at close (never earlier: see _KeyPool).
        self._lent: list[tuple[str, Any]] = []
        self._default_alg = algs[0]
        for alg in dict.fromkeys(algs):
            self._add_key(alg)
        #: Requests received, by path (query left out).
        self.requests: Counter[str] = Counter()
        #: The latest requests received, oldest first (at most 200).
        self.received: deque[RecordedRequest] = deque(maxlen=200)
        self._outage: Literal["503", "close"] | None = None
        self._delay = 0.0
        self._cache_control: str | None = None
        self._jwks_override: Any = _DEFAULT
        self._metadata_override: Any = _DEFAULT
        self._routes: dict[str, Response] = {}
        self._handlers: dict[tuple[str, str], Handler] = {}
        #: The resource server's credentials for ``/introspect`` (basic or post).
        self.introspection_client: tuple[str, str] = ("resource-server", "rs-secret")
        self._opaque: dict[str, dict[str, Any]] = {}
        self._revoked: set[str] = set()
        #: client_id -> (secret, scopes it may ask for or ``None`` for any), for ``/token``.
        self._clients: dict[str, tuple[str, frozenset[str] | None]] = {}
        #: Lifetime in seconds of the tokens ``/token`` issues.
        self.token_lifetime: float = 300
        self._server = _Server(("127.0.0.1", port), _RequestHandler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # Closing waits for the next poll: 10 ms keeps a suite of issuers quick.
            kwargs={"poll_interval": 0.01},
            name=f"bearerguard-test-issuer-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @classmethod
    def like(cls, config: Issuer, **options: Any) -> TestIssuer:
        """A TestIssuer playing a configured issuer (a provider preset) at its own URLs.

        Its issuer, keys and discovery document are where ``config`` looks for them,
        and its tokens carry ``config``'s first audience; reach it through
        :meth:`transport`. ``options`` are the constructor's (``algorithms``, ...).
        """
        played: dict[str, Any] = {
            "issuer": config.issuer,
            "jwks_uri": config.jwks_uri,
            "metadata_url": config.metadata_url,
        }
        if config.audiences:
            played["audience"] = config.audiences[0]
        return cls(**{**played, **options})

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Stop serving (idempotent); a request held by :meth:`delay` is released."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        with self._lock:
            _POOL.give_back(self._lent)
            self._lent.clear()

    stop = close

    def __enter__(self) -> TestIssuer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> TestIssuer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TestIssuer({self.issuer!r}, kids={self.kids!r})"

    # -- where things are --------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The issuer identifier: the one played, else ``http://127.0.0.1:PORT`` plus the path.

        A played issuer template (``{tenantid}``) is filled from each token's ``tid``.
        """
        return self._played if self._played is not None else self.base_url + self._path

    @property
    def _origin(self) -> str:
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def _issuer_path(self) -> str:
        """The issuer's path without a trailing slash (none for a template)."""
        if self._played is None:
            return self._path
        path = urlsplit(self._played).path.rstrip("/")
        return "" if "{" in path else path

    @property
    def jwks_uri(self) -> str:
        if self._jwks_uri is not None:
            return self._jwks_uri
        return self._origin + self._issuer_path + "/jwks"

    @property
    def metadata_url(self) -> str:
        """Where discovery is answered besides the issuer's own well-known paths, if given."""
        return self._metadata_url or self._origin + self.discovery_path

    @property
    def introspection_endpoint(self) -> str:
        return self._origin + self.introspection_path

    @property
    def introspection_path(self) -> str:
        return self._issuer_path + "/introspect"

    @property
    def token_endpoint(self) -> str:
        """The RFC 6749 token endpoint: client credentials, for clients :meth:`add_client` made."""
        return self.issuer + "/token"

    @property
    def token_path(self) -> str:
        return self._path + "/token"

    @property
    def discovery_path(self) -> str:
        """The OIDC discovery path (``{issuer}/.well-known/openid-configuration``)."""
        return self._issuer_path + "/.well-known/openid-configuration"

    @property
    def rfc8414_path(self) -> str:
        """The RFC 8414 §3.1 path: the well-known segment goes before the issuer's path."""
        return "/.well-known/oauth-authorization-server" + self._issuer_path

    @property
    def jwks_path(self) -> str:
        return urlsplit(self.jwks_uri).path

    def _serves(self, url: httpx.URL) -> bool:
        """Whether a played issuer answers this URL's origin (the loopback one answers all)."""
        if self._played is None:
            return True
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        served = (self.issuer, self.jwks_uri, self.metadata_url)
        return any(origin == f"{p.scheme}://{p.netloc}" for p in map(urlsplit, served))

    def url(self, path: str) -> str:
        """An absolute URL on this server for ``path`` (which starts with ``/``)."""
        return self.base_url + path

    # -- keys --------------------------------------------------------------------

    def _add_key(self, alg: str, private: Any = None) -> _Key:
        with self._lock:
            self._counter += 1
            if private is None:
                private = self._lend(alg)
            thumb = hashlib.sha256(repr(private.public_key()).encode() + uuid.uuid4().bytes)
            key = _Key(f"{alg.lower()}-{self._counter}-{thumb.hexdigest()[:8]}", alg, private)
            self._published.append(key)
            self._current[alg] = key
            return key

    def _lend(self, alg: str) -> Any:
        with self._lock:
            key = _POOL.lend(alg)
            self._lent.append((alg, key))
            return key

    @property
    def kids(self) -> list[str]:
        """The ``kid`` of every key published in the JWKS, oldest first."""
        with self._lock:
            return [k.kid for k in self._published]

    @property
    def signing_kid(self) -> str:
        """The ``kid`` tokens are signed with by default."""
        with self._lock:
            return self._current[self._default_alg].kid

    @property
    def signing_key(self) -> Any:
        """The private key tokens are signed with by default (a ``cryptography`` key)."""
        with self._lock:
            return self._current[self._default_alg].private

    @property
    def signing_alg(self) -> str:
        return self._default_alg

    def rotate(self, alg: str | None = None) -> str:
        """Make a new key that signs from now on; the old one stays published. Returns its kid."""
        with self._lock:
            alg = alg or self._default_alg
            key = self._add_key(alg)
            self._default_alg = alg
            return key.kid

    def add_key(self, alg: str) -> str:
        """Publish a new key for ``alg`` that signs ``mint(alg=alg)``; the default alg stays."""
        return self._add_key(alg).kid

    def drop_old_keys(self) -> list[str]:
        """Publish only the current signing key of each algorithm; returns the kids dropped."""
        with self._lock:
            current = {id(k) for k in self._current.values()}
            dropped = [k.kid for k in self._published if id(k) not in current]
            self._published = [k for k in self._published if id(k) in current]
            return dropped

    def unpublish(self, kid: str) -> None:
        """Remove one key from the JWKS (it may still sign, for tests of removed keys)."""
        with self._lock:
            self._published = [k for k in self._published if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        """The JWK Set as normally published (public keys only)."""
        with self._lock:
            return {"keys": [k.public_jwk() for k in self._published]}

    def metadata(self) -> dict[str, Any]:
        """The discovery document as normally served."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "introspection_endpoint": self.introspection_endpoint,
            "token_endpoint": self.token_endpoint,
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
            "grant_types_supported": ["client_credentials"],
            "introspection_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
        }

    # -- tokens ------------------------------------------------------------------

    def claims(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        scope: str | None = None,
        audience: Any = _DEFAULT,
        expires_in: float | None = 300,
        drop: Collection[str] = (),
        dpop_key: DPoPKey | None = None,
    ) -> dict[str, Any]:
        """The claims :meth:`mint` would sign: sensible defaults, then ``claims`` over them.

        ``audience=None`` or ``expires_in=None`` leave ``aud`` or ``exp`` out; ``drop``
        removes any claim by name. ``dpop_key`` binds the token to that key
        (``cnf.jkt``, RFC 9449 §6.1).
        """
        now = int(self.clock())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "test-user",
            "aud": self.audience if audience is _DEFAULT else audience,
            "client_id": self.client_id,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        if expires_in is not None:
            body["exp"] = int(now + expires_in)
        if scope is not None:
            body["scope"] = scope
        if body["aud"] is None:
            del body["aud"]
        if dpop_key is not None:
            body["cnf"] = {"jkt": dpop_key.thumbprint}
        body.update(claims or {})
        iss = body.get("iss")
        if isinstance(iss, str) and "{tenantid}" in iss:
            tid = body.get("tid")
            if not isinstance(tid, str):
                raise ValueError("an issuer template needs the token's tenant: claims={'tid': ...}")
            body["iss"] = iss.replace("{tenantid}", tid)
        for name in drop:
            body.pop(name, None)
        return body

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        scope: str | None = None,
        audience: Any = _DEFAULT,
        expires_in: float | None = 300,
        alg: str | None = None,
        kid: Any = _DEFAULT,
        headers: Mapping[str, Any] | None = None,
        key: Any = None,
        drop: Collection[str] = (),
        dpop_key: DPoPKey | None = None,
    ) -> str:
        """A signed access token (compact JWS), ``typ`` ``at+jwt`` as RFC 9068 asks.

        ``alg`` picks which of the issuer's keys signs; ``key`` signs with another
        private key instead (then no ``kid`` unless given). ``kid=None`` leaves the
        ``kid`` header out, a string puts that value in. ``headers`` are merged last;
        a ``None`` value removes that header. ``alg="none"`` makes an unsigned token.
        ``dpop_key`` makes a DPoP-bound token (``cnf.jkt`` of that :class:`DPoPKey`).
        """
        body = self.claims(
            claims,
            scope=scope,
            audience=audience,
            expires_in=expires_in,
            drop=drop,
            dpop_key=dpop_key,
        )
        with self._lock:
            if key is not None:
                alg = alg or _alg_for_key(key)
                private, default_kid = key, None
            elif alg == "none":
                private, default_kid = None, None
            else:
                alg = alg or self._default_alg
                if alg not in self._current:
                    raise ValueError(f"no {alg} key: use TestIssuer(algorithms=...) or add_key()")
                signer = self._current[alg]
                private, default_kid = signer.private, signer.kid
        assert alg is not None
        header: dict[str, Any] = {"typ": "at+jwt", "alg": alg}
        chosen_kid = default_kid if kid is _DEFAULT else kid
        if chosen_kid is not None:
            header["kid"] = chosen_kid
        for name, value in (headers or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        return _sign(header, body, alg, private)

    def auth_header(
        self, claims: Mapping[str, Any] | None = None, **mint_kwargs: Any
    ) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for a token minted with the same arguments."""
        return {"Authorization": f"Bearer {self.mint(claims, **mint_kwargs)}"}

    def mint_certificate_bound(
        self, certificate: TestCertificate, claims: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """A token bound to a client certificate (RFC 8705 ``cnf`` ``x5t#S256``).

        An API accepts it only from a request made with that certificate: over mutual
        TLS, or through a trusted proxy that forwards the certificate.
        """
        return self.mint({**(claims or {}), "cnf": certificate.confirmation}, **kwargs)

    def dpop_headers(
        self,
        key: DPoPKey,
        method: str,
        url: str,
        claims: Mapping[str, Any] | None = None,
        *,
        nonce: str | None = None,
        **mint_kwargs: Any,
    ) -> dict[str, str]:
        """``Authorization: DPoP <token>`` and its ``DPoP`` proof, for one request.

        The token is bound to ``key`` and minted with the other arguments; the proof
        is for ``method`` and ``url`` (query and fragment are left out of ``htu``),
        made now by this issuer's clock.
        """
        token = self.mint(claims, dpop_key=key, **mint_kwargs)
        return key.headers(token, method, url, nonce=nonce, iat=int(self.clock()))

    # Deliberately broken tokens, one rule each.

    def mint_expired(self, claims: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        """Expired an hour ago (well beyond any sane leeway)."""
        now = int(self.clock())
        return self.mint({"iat": now - 7200, **(claims or {})}, expires_in=-3600, **kwargs)

    def mint_not_yet_valid(self, claims: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        """``nbf`` an hour from now."""
        return self.mint({"nbf": int(self.clock()) + 3600, **(claims or {})}, **kwargs)

    def mint_wrong_audience(self, claims: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        return self.mint(claims, audience="https://not-this-api.example.com", **kwargs)

    def mint_wrong_issuer(self, claims: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        return self.mint({"iss": self.issuer + "/other", **(claims or {})}, **kwargs)

    def mint_tampered(self, claims: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        """A good token whose signature was then altered."""
        return tamper(self.mint(claims, **kwargs))

    def mint_unknown_key(self, claims: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        """Signed with a key this issuer never published, under a kid it never used."""
        alg = kwargs.pop("alg", None) or self._default_alg
        kwargs.setdefault("kid", f"unknown-{uuid.uuid4().hex[:8]}")
        return self.mint(claims, alg=alg, key=self._lend(alg), **kwargs)

    def mint_alg_none(self, claims: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        """An unsigned token (``alg: none``), the oldest trick in the book."""
        return self.mint(claims, alg="none", **kwargs)

    # Opaque tokens, answered by RFC 7662 introspection at ``introspection_path``.

    def mint_opaque(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        scope: str | None = None,
        audience: Any = _DEFAULT,
        expires_in: float | None = 300,
        drop: Collection[str] = (),
        dpop_key: DPoPKey | None = None,
    ) -> str:
        """A random opaque token; introspection answers ``active: true`` with these claims.

        The answer is ``{"active": true, "token_type": "Bearer", ...claims}``; ``claims``
        override anything, ``drop`` removes members (``drop=("active",)`` included).
        With ``dpop_key`` the answer is ``token_type`` ``DPoP`` with ``cnf.jkt``.
        """
        token = secrets.token_urlsafe(32)
        kind = "Bearer" if dpop_key is None else "DPoP"
        document: dict[str, Any] = {"active": True, "token_type": kind}
        document.update(
            self.claims(
                claims, scope=scope, audience=audience, expires_in=expires_in, dpop_key=dpop_key
            )
        )
        for name in drop:
            document.pop(name, None)
        with self._lock:
            self._opaque[token] = document
        return token

    def add_client(
        self, client_id: str, secret: str | None = None, *, scopes: Iterable[str] | None = None
    ) -> str:
        """Let ``client_id`` get tokens from :attr:`token_endpoint`; returns its secret.

        ``scopes`` limits what it may ask for (``None``: anything). A client that asks
        for no scope gets all of ``scopes``. Its tokens have ``sub`` and ``client_id``
        set to ``client_id``, :attr:`token_lifetime`, and as audience the RFC 8707
        ``resource`` the client names, else this issuer's audience.
        """
        secret = secret if secret is not None else secrets.token_urlsafe(16)
        with self._lock:
            self._clients[client_id] = (secret, None if scopes is None else frozenset(scopes))
        return secret

    def revoke(self, token: str) -> None:
        """From now on introspection answers ``{"active": false}`` for this token (any kind)."""
        with self._lock:
            self._revoked.add(token)

    # -- switches ------------------------------------------------------------------

    def outage(self, on: bool = True, *, mode: Literal["503", "close"] = "503") -> None:
        """Every path answers 503 (``mode="503"``) or drops the connection (``"close"``)."""
        with self._lock:
            self._outage = mode if on else None

    def delay(self, seconds: float) -> None:
        """Wait this long before each answer (0 turns it off)."""
        with self._lock:
            self._delay = max(0.0, seconds)

    def cache_control(self, value: str | None) -> None:
        """The ``Cache-Control`` header of JWKS and metadata answers (``None``: none at all)."""
        with self._lock:
            self._cache_control = value

    def serve_jwks(self, document: Any = _DEFAULT) -> None:
        """Serve this JWKS instead (a JSON value, or raw ``bytes``); no argument restores it."""
        with self._lock:
            self._jwks_override = document

    def serve_metadata(self, document: Any = _DEFAULT) -> None:
        """Serve this discovery document instead (JSON value or ``bytes``); no args restores."""
        with self._lock:
            self._metadata_override = document

    def route(
        self,
        path: str,
        *,
        status: int = 200,
        body: Any = b"",
        headers: Mapping[str, str] | None = None,
        content_length: bool = True,
    ) -> None:
        """Answer ``path`` (any method) with this canned response, over anything else there."""
        with self._lock:
            self._routes[path] = Response(status, body, dict(headers or {}), content_length)

    def clear_routes(self) -> None:
        with self._lock:
            self._routes.clear()

    def add_handler(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler`` (called in the server's thread)."""
        with self._lock:
            self._handlers[(method.upper(), path)] = handler

    def reset_counters(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self.requests.clear()
            self.received.clear()

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport answered in-process by the same logic as the socket (no network).

        Every switch (rotation, outage, delay, overrides, handlers) applies alike;
        ``outage(mode="close")`` becomes an ``httpx.ConnectError``. Use it as
        ``httpx.AsyncClient(transport=issuer.transport())``.
        """
        return _InProcessTransport(self)

    # -- serving (runs in the server's threads) ---------------------------------------

    def _answer(self, request: RecordedRequest) -> Response | None:
        with self._lock:
            self.requests[request.path] += 1
            self.received.append(request)
            delay = self._delay
        if delay:
            self._stopping.wait(delay)
        with self._lock:
            if self._outage == "close":
                return None
            if self._outage == "503":
                return Response(503, {"error": "temporarily_unavailable"}, {"Retry-After": "1"})
            if request.path in self._routes:
                return self._routes[request.path]
            handler = self._handlers.get((request.method, request.path))
            cache = {"Cache-Control": self._cache_control} if self._cache_control else {}
            jwks_override, metadata_override = self._jwks_override, self._metadata_override
        if handler is not None:
            try:
                return handler(request)
            except Exception:  # show the test's bug, answer like a broken server would
                traceback.print_exc()
                return Response(500, {"error": "server_error"})
        if request.method == "POST" and request.path == self.introspection_path:
            return self._introspect(request)
        if request.path == self.token_path and request.method in ("POST", "OPTIONS"):
            # A browser page on another origin (Swagger UI) calls it: answer CORS too.
            answer = self._token(request) if request.method == "POST" else Response(204)
            return Response(
                answer.status, answer.body, {**answer.headers, **_TOKEN_CORS}, answer.content_length
            )
        if request.method in ("GET", "HEAD"):
            if request.path == self.jwks_path:
                document = self.jwks() if jwks_override is _DEFAULT else jwks_override
                return Response(
                    200, document, {"Content-Type": "application/jwk-set+json", **cache}
                )
            discovery = (self.discovery_path, self.rfc8414_path, urlsplit(self.metadata_url).path)
            if request.path in discovery:
                document = self.metadata() if metadata_override is _DEFAULT else metadata_override
                return Response(200, document, cache)
        return Response(404, {"error": "not_found"})

    def _introspect(self, request: RecordedRequest) -> Response:
        """RFC 7662 §2: client authentication, then what this issuer knows of the token."""
        fields = _form(request.body)
        if _client_of(request.headers, fields) != self.introspection_client:
            return Response(401, {"error": "invalid_client"}, {"WWW-Authenticate": "Basic"})
        token = fields.get("token")
        if not token:
            return Response(400, {"error": "invalid_request"})
        with self._lock:
            document = None if token in self._revoked else self._opaque.get(token)
        if document is None and token not in self._revoked and token.count(".") == 2:
            document = self._own_jwt_claims(token)
        exp = document.get("exp") if document is not None else None
        if document is None or (isinstance(exp, int | float) and exp <= self.clock()):
            return Response(200, {"active": False})
        return Response(200, document)

    def _token(self, request: RecordedRequest) -> Response:
        """RFC 6749 §4.4: the client credentials grant, errors as §5.2 says."""
        fields = _form(request.body)
        client = _client_of(request.headers, fields)
        with self._lock:
            known = self._clients.get(client[0]) if client is not None else None
        if client is None or known is None or not secrets.compare_digest(known[0], client[1]):
            return Response(401, {"error": "invalid_client"}, {"WWW-Authenticate": "Basic"})
        if fields.get("grant_type") != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type"})
        allowed = known[1]
        asked = fields.get("scope", "").split()
        if allowed is not None and not set(asked) <= allowed:
            return Response(400, {"error": "invalid_scope"})
        granted = asked or sorted(allowed or ())
        scope = " ".join(granted) or None
        # RFC 8707: the resource the client names is the token's audience (MCP clients
        # always name one); one absolute URI without a fragment, as §2 asks.
        resources = _form_values(request.body, "resource")
        if len(resources) > 1 or any(not urlsplit(r).scheme or "#" in r for r in resources):
            return Response(400, {"error": "invalid_target"})
        token = self.mint(
            {"sub": client[0], "client_id": client[0]},
            scope=scope,
            audience=resources[0] if resources else _DEFAULT,
            expires_in=self.token_lifetime,
        )
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.token_lifetime),
        }
        if scope is not None:
            body["scope"] = scope
        return Response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _own_jwt_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a JWT one of the published keys signed, as an active answer."""
        try:
            head, payload, signature = token.split(".")
            header = json.loads(_b64decode(head))
            claims = json.loads(_b64decode(payload))
            raw = _b64decode(signature)
        except (ValueError, binascii.Error):
            return None
        with self._lock:
            keys = [k for k in self._published if k.kid == header.get("kid")]
        signing_input = f"{head}.{payload}".encode("ascii")
        for key in keys:
            algorithm = _ALGORITHMS[key.alg]
            if key.alg == header.get("alg") and algorithm.verify(
                signing_input, key.private.public_key(), raw
            ):
                return {"active": True, "token_type": "Bearer", **claims}
        return None


class DPoPKey:
    """A client's DPoP key pair (RFC 9449): it makes proofs, right ones and deliberately wrong ones.

    ``DPoPKey()`` is a fresh P-256 key (``ES256``); any algorithm :func:`generate_key`
    knows works. :attr:`thumbprint` is what a token bound to it carries in ``cnf.jkt``
    (``TestIssuer.mint(dpop_key=key)``). Every argument of :meth:`proof` that a
    verifier checks can be set wrong on purpose::

        key.proof("GET", url, token=token)                      # right
        key.proof("POST", url, token=token)                     # wrong htm
        key.proof("GET", url, token=token, iat=time.time() - 3600)  # too old
        key.proof("GET", url, token=token, headers={"typ": "JWT"})  # wrong typ
        key.proof("GET", url, token=token, signer=DPoPKey())    # signed by another key
    """

    __test__ = False

    def __init__(
        self, alg: str = "ES256", private: Any = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.alg = alg
        self.private = private if private is not None else generate_key(alg)
        #: What a proof's ``iat`` is read from (a :class:`ManualClock` in tests that move time).
        self.clock = clock
        public: dict[str, Any] = _ALGORITHMS[alg].to_jwk(self.private.public_key(), as_dict=True)
        #: The public JWK a proof carries (no ``kid``, ``alg`` or ``use``: only the key).
        self.jwk = {k: v for k, v in public.items() if k in ("kty", "crv", "x", "y", "n", "e")}

    def __repr__(self) -> str:
        return f"DPoPKey({self.alg!r}, thumbprint={self.thumbprint!r})"

    @property
    def thumbprint(self) -> str:
        """The key's RFC 7638 SHA-256 thumbprint (base64url): a bound token's ``cnf.jkt``."""
        members = {
            "RSA": ("e", "kty", "n"),
            "EC": ("crv", "kty", "x", "y"),
            "OKP": ("crv", "kty", "x"),
        }
        canonical = {m: self.jwk[m] for m in members[self.jwk["kty"]]}
        text = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
        return _b64(hashlib.sha256(text.encode()).digest())

    def private_jwk(self) -> dict[str, Any]:
        """The key with its private members: what a proof must never carry."""
        full: dict[str, Any] = _ALGORITHMS[self.alg].to_jwk(self.private, as_dict=True)
        return full

    def proof(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        nonce: str | None = None,
        iat: float | None = None,
        jti: str | None = None,
        claims: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        signer: DPoPKey | None = None,
    ) -> str:
        """A DPoP proof JWT for one request (RFC 9449 §4.2).

        ``htu`` is ``url`` without query and fragment; ``ath`` is the hash of
        ``token`` when given. ``claims`` and ``headers`` are merged last (a ``None``
        value removes that member); ``signer`` signs with another key while the
        header still names this one.
        """
        body: dict[str, Any] = {
            "jti": jti if jti is not None else uuid.uuid4().hex,
            "htm": method,
            "htu": url.split("?", 1)[0].split("#", 1)[0],
            "iat": int(self.clock()) if iat is None else iat,
        }
        if token is not None:
            body["ath"] = _b64(hashlib.sha256(token.encode("ascii")).digest())
        if nonce is not None:
            body["nonce"] = nonce
        header: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": dict(self.jwk)}
        for target, changes in ((body, claims), (header, headers)):
            for name, value in (changes or {}).items():
                if value is None:
                    target.pop(name, None)
                else:
                    target[name] = value
        signing = signer if signer is not None else self
        alg = header.get("alg", signing.alg)
        if isinstance(alg, str) and alg in _HMAC:
            # An HMAC alg (a deliberately wrong proof) is signed with a made-up shared secret.
            return _sign(header, body, alg, b"a-secret-no-dpop-verifier-may-accept-000000000000")
        try:
            return _sign(header, body, str(alg), signing.private)
        except Exception:  # a header alg this key cannot sign with: sign with the key's own
            return _sign(header, body, signing.alg, signing.private)

    def headers(
        self, token: str, method: str, url: str, *, nonce: str | None = None, **proof_kwargs: Any
    ) -> dict[str, str]:
        """``{"Authorization": "DPoP <token>", "DPoP": <proof>}`` for one request."""
        proof = self.proof(method, url, token=token, nonce=nonce, **proof_kwargs)
        return {"Authorization": f"DPoP {token}", "DPoP": proof}


class _InProcessTransport(httpx.AsyncBaseTransport):
    """Hands requests straight to :meth:`TestIssuer._answer`, as the HTTP server thread does."""

    def __init__(self, owner: TestIssuer) -> None:
        self._owner = owner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = (await request.aread())[:_MAX_REQUEST_BODY]
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query.decode("ascii", "replace"),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        if self._owner._closed:
            raise httpx.ConnectError("the test issuer is closed", request=request)
        if not self._owner._serves(request.url):
            raise httpx.ConnectError(
                f"the test issuer plays {self._owner.issuer!r}, not {request.url.host!r}",
                request=request,
            )
        # _answer may sleep (delay()): off the event loop, as the real server would be.
        answer = await asyncio.to_thread(self._owner._answer, recorded)
        if answer is None:
            raise httpx.ConnectError("the test issuer dropped the connection", request=request)
        headers = dict(answer.headers)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
        content = b"" if request.method == "HEAD" else answer.encoded()
        return httpx.Response(answer.status, headers=headers, content=content, request=request)


#: CORS for the token endpoint, which Swagger UI calls from the API's origin.
_TOKEN_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


def _parsed(body: bytes) -> dict[str, list[str]]:
    try:
        return parse_qs(body.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return {}


def _form(body: bytes) -> dict[str, str]:
    """A form-encoded body's fields; a repeated or undecodable field is left out."""
    return {name: values[0] for name, values in _parsed(body).items() if len(values) == 1}


def _form_values(body: bytes, name: str) -> list[str]:
    """Every value of one field (RFC 8707 lets ``resource`` repeat)."""
    return _parsed(body).get(name, [])


def _client_of(headers: Mapping[str, str], fields: Mapping[str, str]) -> tuple[str, str] | None:
    """The client credentials of a request: HTTP Basic (RFC 6749 §2.3.1) or the form body."""
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            pair = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
        except (ValueError, binascii.Error):
            return None
        client_id, sep, secret = pair.partition(":")
        return (unquote_plus(client_id), unquote_plus(secret)) if sep else None
    if "client_id" in fields and "client_secret" in fields:
        return (fields["client_id"], fields["client_secret"])
    return None


def _sign(header: Mapping[str, Any], claims: Mapping[str, Any], alg: str, key: Any) -> str:
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    if alg == "none" or key is None:
        return signing_input + "."
    signature = _ALGORITHMS[alg].sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{_b64(signature)}"
