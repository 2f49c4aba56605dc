"""DPoP (RFC 9449) with tokens oidc-provider binds to a client key, through a real FastAPI app.

The client asks oidc-provider's token endpoint for a token with a DPoP proof of its
key (RFC 9449 §5); the provider binds the token to that key (``cnf.jkt``, in the
JWT itself or in its introspection answer). The API then takes the token only with
a fresh proof of the same key: never as a Bearer token, never with another key's
proof, never with the same proof twice.
"""

from __future__ import annotations

import pytest

from bearerguard.testing import DPoPKey

from .interop_support import ApiFactory, OIDCProvider, bearer
from .test_interop_jwt import claims_of

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
#: These tests neither rotate keys nor stop the provider: they share one.
SHARES_PROVIDER = True

#: The URL the API is called at (the ``api`` fixture's base URL): what proofs sign as htu.
ITEMS = "http://api.test/items"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_dpop_bound_jwt_is_accepted_with_a_proof_of_its_key(
    oidc_provider: OIDCProvider, api: ApiFactory, alg: str
) -> None:
    key = DPoPKey(alg)
    token = await oidc_provider.token(oidc_provider.resource("jwt"), dpop=key)
    assert claims_of(token)["cnf"] == {"jkt": key.thumbprint}  # the provider bound it
    async with api() as client:
        read = await client.get("/items", headers=key.headers(token, "GET", ITEMS))
        write = await client.post("/items", headers=key.headers(token, "POST", ITEMS))
    assert read.status_code == 200, read.text
    assert read.json()["scopes"] == ["read:items", "write:items"]
    assert write.status_code == 200, write.text


async def test_dpop_bound_jwt_is_refused_as_a_bearer_token_or_with_another_key(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    key = DPoPKey()
    token = await oidc_provider.token(oidc_provider.resource("jwt"), dpop=key)
    async with api() as client:
        as_bearer = await client.get("/items", headers=bearer(token))
        thief = await client.get("/items", headers=DPoPKey().headers(token, "GET", ITEMS))
        wrong_url = await client.get(
            "/items", headers=key.headers(token, "GET", "http://api.test/other")
        )
    assert as_bearer.status_code == 401
    assert as_bearer.headers["www-authenticate"].startswith(
        'Bearer realm="api", error="invalid_token"'
    )
    assert thief.status_code == 401
    assert 'DPoP realm="api", error="invalid_token"' in thief.headers["www-authenticate"]
    assert wrong_url.status_code == 401
    assert 'error="invalid_dpop_proof"' in wrong_url.headers["www-authenticate"]


async def test_a_proof_is_accepted_once(oidc_provider: OIDCProvider, api: ApiFactory) -> None:
    key = DPoPKey()
    token = await oidc_provider.token(oidc_provider.resource("jwt"), dpop=key)
    headers = key.headers(token, "GET", ITEMS)
    async with api() as client:
        first = await client.get("/items", headers=headers)
        again = await client.get("/items", headers=headers)
    assert first.status_code == 200, first.text
    assert again.status_code == 401
    assert again.json()["error_description"] == "The DPoP proof was already used"


async def test_dpop_bound_opaque_token_is_bound_through_introspection(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    key = DPoPKey()
    token = await oidc_provider.token(oidc_provider.resource("opaque"), dpop=key)
    described = await oidc_provider.introspect(token)
    assert described["token_type"] == "DPoP"
    assert described["cnf"] == {"jkt": key.thumbprint}
    async with api(audience=oidc_provider.resource("opaque")) as client:
        accepted = await client.get("/items", headers=key.headers(token, "GET", ITEMS))
        as_bearer = await client.get("/items", headers=bearer(token))
        thief = await client.get("/items", headers=DPoPKey().headers(token, "GET", ITEMS))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["kind"] == "opaque"
    assert as_bearer.status_code == 401
    assert thief.status_code == 401


async def test_unbound_tokens_keep_working_as_bearer_beside_dpop(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    token = await oidc_provider.token(oidc_provider.resource("jwt"))
    async with api() as client:
        plain = await client.get("/items", headers=bearer(token))
        missing = await client.get("/items")
    assert plain.status_code == 200, plain.text
    assert missing.headers["www-authenticate"].startswith('Bearer realm="api", DPoP realm="api"')
