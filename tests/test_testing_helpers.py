"""bearerguard.testing's helpers for sender-constrained tokens and OAuth clients.

Certificates, certificate-bound tokens and the token endpoint's RFC 8707
``resource`` are what users build their own tests on, so each promise is checked here against
an independent computation or a real HTTP exchange.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from urllib.parse import unquote, urlencode

import httpx
import jwt
import pytest
from cryptography import x509

from bearerguard.testing import TestIssuer, make_certificate


def test_certificate_thumbprint_is_the_base64url_sha256_of_its_der() -> None:
    cert = make_certificate("alice")
    der = ssl.PEM_cert_to_DER_cert(cert.pem)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert cert.thumbprint == expected
    assert cert.confirmation == {"x5t#S256": expected}


def test_certificate_header_forms_carry_the_same_certificate() -> None:
    cert = make_certificate("alice")
    rfc9440 = cert.header_value("rfc9440")
    assert rfc9440.startswith(":") and rfc9440.endswith(":")
    assert base64.b64decode(rfc9440[1:-1]) == cert.der
    assert unquote(cert.header_value("escaped-pem")) == cert.pem
    assert "\n" not in cert.header_value("pem")


def test_certificate_signed_by_a_test_ca_verifies_against_it() -> None:
    ca = make_certificate("test-ca", ca=True)
    leaf = make_certificate("server", hosts=["127.0.0.1", "localhost"], signer=ca)
    leaf.certificate.verify_directly_issued_by(ca.certificate)
    names = leaf.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["localhost"]


def test_mint_certificate_bound_puts_the_thumbprint_in_cnf(test_issuer: TestIssuer) -> None:
    cert = make_certificate("alice")
    claims = jwt.decode(
        test_issuer.mint_certificate_bound(cert, {"sub": "alice"}),
        options={"verify_signature": False},
    )
    assert claims["cnf"] == {"x5t#S256": cert.thumbprint}
    assert claims["sub"] == "alice"


def test_token_endpoint_mints_for_the_rfc_8707_resource_the_client_names(
    test_issuer: TestIssuer,
) -> None:
    secret = test_issuer.add_client("mcp-client")
    response = httpx.post(
        test_issuer.token_endpoint,
        data={"grant_type": "client_credentials", "resource": "https://mcp.example/mcp"},
        auth=("mcp-client", secret),
    )
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://mcp.example/mcp"
    plain = httpx.post(
        test_issuer.token_endpoint,
        data={"grant_type": "client_credentials"},
        auth=("mcp-client", secret),
    )
    aud = jwt.decode(plain.json()["access_token"], options={"verify_signature": False})["aud"]
    assert aud == test_issuer.audience


@pytest.mark.parametrize(
    "resources",
    [["https://a.example/#frag"], ["not-absolute"], ["https://a.example", "https://b.example"]],
    ids=["fragment", "relative", "two"],
)
def test_token_endpoint_refuses_a_resource_rfc_8707_refuses(
    test_issuer: TestIssuer, resources: list[str]
) -> None:
    secret = test_issuer.add_client("mcp-client")
    data = [("grant_type", "client_credentials")] + [("resource", r) for r in resources]
    response = httpx.post(
        test_issuer.token_endpoint,
        content=urlencode(data),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=("mcp-client", secret),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
