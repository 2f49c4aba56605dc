"""Certificate-bound tokens (RFC 8705) that oidc-provider binds, through a real FastAPI app.

The mTLS client asks oidc-provider for a token presenting its certificate (as a
TLS-terminating proxy forwards it); the provider computes the thumbprint itself and
binds the token to it (``cnf["x5t#S256"]``). The API, behind the same kind of proxy,
takes the token only when the proxy forwards that certificate: so bearerguard's
thumbprint agrees with an authorization server nobody on this project wrote.
"""

from __future__ import annotations

import pytest

from bearerguard.testing import make_certificate

from .interop_support import ApiFactory, OIDCProvider, bearer
from .test_interop_jwt import claims_of

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
#: These tests neither rotate keys nor stop the provider: they share one.
SHARES_PROVIDER = True

#: The API sits behind a TLS-terminating proxy on loopback (httpx's ASGI peer).
BEHIND_PROXY = {"client_cert_header": "client-cert", "trusted_proxies": ["127.0.0.1"]}


async def test_certificate_bound_jwt_is_accepted_with_its_certificate_only(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    alice, mallory = make_certificate("alice"), make_certificate("mallory")
    token = await oidc_provider.token(oidc_provider.resource("jwt"), certificate=alice)
    # The provider's thumbprint, computed by oidc-provider: the premise of the test.
    assert claims_of(token)["cnf"] == {"x5t#S256": alice.thumbprint}
    async with api(middleware=BEHIND_PROXY) as client:
        own = await client.get(
            "/items", headers={**bearer(token), "Client-Cert": alice.header_value("escaped-pem")}
        )
        rfc9440 = await client.get(
            "/items", headers={**bearer(token), "Client-Cert": alice.header_value()}
        )
        stolen = await client.get(
            "/items", headers={**bearer(token), "Client-Cert": mallory.header_value()}
        )
        plain = await client.get("/items", headers=bearer(token))
    assert own.status_code == 200, own.text
    assert rfc9440.status_code == 200, rfc9440.text
    assert rfc9440.json()["client_id"] == "interop-mtls-client"
    for refused in (stolen, plain):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith(
            'Bearer realm="api", error="invalid_token"'
        )


async def test_certificate_bound_opaque_token_is_bound_through_introspection(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    alice = make_certificate("alice")
    token = await oidc_provider.token(oidc_provider.resource("opaque"), certificate=alice)
    assert (await oidc_provider.introspect(token))["cnf"] == {"x5t#S256": alice.thumbprint}
    async with api(middleware=BEHIND_PROXY, audience=oidc_provider.resource("opaque")) as client:
        ok = await client.get(
            "/items", headers={**bearer(token), "Client-Cert": alice.header_value()}
        )
        plain = await client.get("/items", headers=bearer(token))
    assert ok.status_code == 200, ok.text
    assert plain.status_code == 401
