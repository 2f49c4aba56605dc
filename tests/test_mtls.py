"""Certificate-bound tokens (RFC 8705 §3), end to end through the middleware.

A token whose ``cnf`` carries ``x5t#S256`` is accepted only from a request made
with that client certificate: over a direct TLS connection (the ASGI TLS
extension, here also through a real uvicorn with a real handshake), or through
a trusted proxy that forwards the certificate in ``client_cert_header``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from asgi_server import TLSExtensionH11Protocol, running_uvicorn
from bearerguard import AccessToken, BearerAuthMiddleware, current_token
from bearerguard.testing import TestCertificate, TestIssuer, make_certificate

pytestmark = pytest.mark.anyio

PROXY = "10.0.0.7"
HEADER = "client-cert"


@pytest.fixture(scope="module")
def certificate() -> TestCertificate:
    return make_certificate("alice")


@pytest.fixture(scope="module")
def other_certificate() -> TestCertificate:
    return make_certificate("mallory")


def api(issuer: TestIssuer, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        BearerAuthMiddleware, issuer=issuer.issuer, audience=issuer.audience, **options
    )

    @app.get("/items")
    async def items(token: AccessToken = Depends(current_token)) -> dict[str, Any]:
        return {"sub": token.subject}

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app.router.routes.append(WebSocketRoute("/ws", stream))
    return app


def over_tls(app: Any, certificate: TestCertificate | None, **tls: Any) -> Any:
    """The app as a TLS-terminating ASGI server shows it a connection made with ``certificate``."""
    extension = {**certificate.tls_extension(), **tls} if certificate else None

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if extension is not None and scope["type"] in ("http", "websocket"):
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": extension}
        await app(scope, receive, send)

    return wrapped


async def get(app: Any, token: str, *, peer: str = "127.0.0.1", **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        return await client.get("/items", headers={"Authorization": f"Bearer {token}", **headers})


def assert_unproven(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="api", error="invalid_token"')
    assert response.json()["error"] == "invalid_token"


# -- direct TLS (ASGI TLS extension) ------------------------------------------------


async def test_bound_token_with_its_certificate_over_tls_is_accepted(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    response = await get(over_tls(api(test_issuer), certificate), token)
    assert response.status_code == 200, response.text


async def test_bound_token_with_another_certificate_is_401(
    test_issuer: TestIssuer, certificate: TestCertificate, other_certificate: TestCertificate
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    assert_unproven(await get(over_tls(api(test_issuer), other_certificate), token))


async def test_bound_token_without_a_client_certificate_is_401(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    assert_unproven(await get(api(test_issuer), token))


async def test_certificate_the_tls_server_reports_an_error_for_proves_nothing(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    app = over_tls(api(test_issuer), certificate, client_cert_error="unable to get issuer")
    assert_unproven(await get(app, token))


async def test_unbound_token_is_unaffected_by_a_client_certificate(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    response = await get(over_tls(api(test_issuer), certificate), test_issuer.mint())
    assert response.status_code == 200, response.text


async def test_introspected_token_bound_to_a_certificate_needs_it_too(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    app = api(
        test_issuer,
        client_id=test_issuer.introspection_client[0],
        client_secret=test_issuer.introspection_client[1],
    )
    token = test_issuer.mint_opaque({"cnf": certificate.confirmation})
    assert_unproven(await get(app, token))
    assert (await get(over_tls(app, certificate), token)).status_code == 200


def test_websocket_with_a_bound_token_needs_the_certificate_before_accept(
    test_issuer: TestIssuer, certificate: TestCertificate, other_certificate: TestCertificate
) -> None:
    headers = {"Authorization": f"Bearer {test_issuer.mint_certificate_bound(certificate)}"}
    with TestClient(over_tls(api(test_issuer), other_certificate)) as client:
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect("/ws", headers=headers),
        ):
            pass
        assert denied.value.status_code == 401
    with (
        TestClient(over_tls(api(test_issuer), certificate)) as client,
        client.websocket_connect("/ws", headers=headers) as ws,
    ):
        assert ws.receive_text() == "hello"


# -- through a TLS-terminating proxy (client_cert_header + trusted_proxies) ----------


def behind_proxy(issuer: TestIssuer) -> FastAPI:
    return api(issuer, client_cert_header=HEADER, trusted_proxies=[PROXY])


@pytest.mark.parametrize("form", ["rfc9440", "escaped-pem", "pem"])
async def test_certificate_forwarded_by_a_trusted_proxy_proves_the_binding(
    test_issuer: TestIssuer, certificate: TestCertificate, form: Any
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    header = {HEADER: certificate.header_value(form)}
    response = await get(behind_proxy(test_issuer), token, peer=PROXY, **header)
    assert response.status_code == 200, response.text


async def test_certificate_header_from_an_untrusted_peer_is_ignored(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    header = {HEADER: certificate.header_value()}
    assert_unproven(await get(behind_proxy(test_issuer), token, peer="203.0.113.9", **header))


async def test_certificate_seen_from_a_trusted_proxy_is_not_believed_from_another_peer(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    # Thumbprints and peer verdicts are remembered per value: neither may leak across peers.
    app = behind_proxy(test_issuer)
    token = test_issuer.mint_certificate_bound(certificate)
    header = {HEADER: certificate.header_value()}
    assert (await get(app, token, peer=PROXY, **header)).status_code == 200
    assert_unproven(await get(app, token, peer="203.0.113.9", **header))
    assert (await get(app, token, peer=PROXY, **header)).status_code == 200


async def test_proxy_forwarding_another_certificate_is_401(
    test_issuer: TestIssuer, certificate: TestCertificate, other_certificate: TestCertificate
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    header = {HEADER: other_certificate.header_value()}
    assert_unproven(await get(behind_proxy(test_issuer), token, peer=PROXY, **header))


async def test_from_a_trusted_proxy_its_own_tls_certificate_is_not_the_clients(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    # The proxy's connection to us carries the bound certificate, but it forwards none:
    # the TLS extension describes the proxy, so nothing about the client is proved.
    token = test_issuer.mint_certificate_bound(certificate)
    app = over_tls(behind_proxy(test_issuer), certificate)
    assert_unproven(await get(app, token, peer=PROXY))


async def test_tls_certificate_of_a_trusted_proxy_never_counts_even_without_a_header_setting(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    # trusted_proxies set for another feature (client addresses), no client_cert_header.
    token = test_issuer.mint_certificate_bound(certificate)
    app = over_tls(api(test_issuer, trusted_proxies=[PROXY]), certificate)
    assert_unproven(await get(app, token, peer=PROXY))
    assert (await get(app, token, peer="203.0.113.9")).status_code == 200


async def test_two_certificate_headers_prove_nothing(
    test_issuer: TestIssuer, certificate: TestCertificate
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    transport = httpx.ASGITransport(app=behind_proxy(test_issuer), client=(PROXY, 50000))
    value = certificate.header_value().encode()
    headers = [(b"authorization", f"Bearer {token}".encode())] + [(b"client-cert", value)] * 2
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        response = await client.get("/items", headers=headers)
    assert_unproven(response)


@pytest.mark.parametrize(
    "value",
    [
        ":not base64!:",
        "::",
        "%ZZ%",
        "-----BEGIN CERTIFICATE-----@@-----END CERTIFICATE-----",
        "A" * 20_000,
        "\u00e9t\u00e9",
    ],
    ids=["bad-rfc9440", "empty-rfc9440", "bad-escape", "bad-pem", "oversized", "non-ascii"],
)
async def test_malformed_certificate_header_is_a_401_never_a_500(
    test_issuer: TestIssuer, certificate: TestCertificate, value: str
) -> None:
    token = test_issuer.mint_certificate_bound(certificate)
    transport = httpx.ASGITransport(app=behind_proxy(test_issuer), client=(PROXY, 50000))
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"client-cert", value.encode())]
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        assert_unproven(await client.get("/items", headers=headers))


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"client_cert_header": HEADER}, "only believed from trusted_proxies"),
        ({"client_cert_header": "Authorization", "trusted_proxies": [PROXY]}, "cannot carry"),
    ],
)
def test_certificate_header_configuration_that_could_be_forged_is_refused_at_startup(
    test_issuer: TestIssuer, options: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        BearerAuthMiddleware(
            FastAPI(), issuer=test_issuer.issuer, audience=test_issuer.audience, **options
        )


# -- a real TLS handshake ----------------------------------------------------------------


@dataclass
class PKI:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate it issued."""

    ca_file: Path
    server_files: tuple[Path, Path]
    client: TestCertificate
    client_files: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("tls")
    ca = make_certificate("test-ca", ca=True)
    (directory / "ca.pem").write_text(ca.pem)
    server = make_certificate("server", hosts=["127.0.0.1"], signer=ca)
    client = make_certificate("alice", signer=ca)
    return PKI(directory / "ca.pem", server.write(directory), client, client.write(directory))


def test_bound_token_over_a_real_mutual_tls_connection(test_issuer: TestIssuer, pki: PKI) -> None:
    bound = test_issuer.mint_certificate_bound(pki.client)
    stranger = test_issuer.mint_certificate_bound(make_certificate("someone-else"))
    with running_uvicorn(
        api(test_issuer),
        http=TLSExtensionH11Protocol,
        ssl_certfile=str(pki.server_files[0]),
        ssl_keyfile=str(pki.server_files[1]),
        ssl_ca_certs=str(pki.ca_file),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    ) as url:
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        # Strict X.509 checks (the default from Python 3.13): the test PKI passes them.
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        context.load_cert_chain(*map(str, pki.client_files))
        with httpx.Client(base_url=url, verify=context) as client:
            ok = client.get("/items", headers={"Authorization": f"Bearer {bound}"})
            assert ok.status_code == 200, ok.text
            refused = client.get("/items", headers={"Authorization": f"Bearer {stranger}"})
            assert_unproven(refused)
