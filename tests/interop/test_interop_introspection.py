"""Opaque access tokens from oidc-provider, checked through its RFC 7662 introspection."""

from __future__ import annotations

import anyio
import pytest

from .interop_support import ApiFactory, OIDCProvider, bearer

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
#: These tests neither rotate keys nor stop the provider: they share one.
SHARES_PROVIDER = True

#: The introspection cache lifetime the revocation test runs with (seconds).
CACHE_TTL = 1.0
#: Options that set it; the name belongs to the introspection cache (issue 3).
CACHE_OPTIONS = {"introspection_cache_ttl": CACHE_TTL}


async def test_opaque_token_is_accepted_via_introspection(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    opaque = oidc_provider.resource("opaque")
    token = await oidc_provider.token(opaque, "read:items write:items")
    assert token.count(".") == 0
    async with api(audience=opaque) as client:
        answer = await client.get("/items", headers=bearer(token))
        written = await client.post("/items", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kind"] == "opaque"
    assert body["scopes"] == ["read:items", "write:items"]
    assert body["client_id"] == "interop-client"
    assert written.status_code == 200, written.text


async def test_introspection_with_client_secret_post(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    opaque = oidc_provider.resource("opaque")
    client_id, client_secret = oidc_provider.client("resource_server_post")
    token = await oidc_provider.token(opaque, "read:items")
    async with api(
        audience=opaque,
        client_id=client_id,
        client_secret=client_secret,
        introspection_auth="client_secret_post",
    ) as client:
        answer = await client.get("/items", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["scopes"] == ["read:items"]


async def test_opaque_token_for_another_audience_is_refused(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    token = await oidc_provider.token(oidc_provider.resource("opaque"))
    # The API is the JWT resource; this opaque token was issued for the opaque one.
    async with api() as client:
        answer = await client.get("/items", headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_revoked_opaque_token_is_refused_after_the_cache_lifetime(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    opaque = oidc_provider.resource("opaque")
    token = await oidc_provider.token(opaque)
    async with api(audience=opaque, **CACHE_OPTIONS) as client:
        accepted = await client.get("/items", headers=bearer(token))
        await oidc_provider.revoke(token)
        assert (await oidc_provider.introspect(token)) == {"active": False}
        await anyio.sleep(CACHE_TTL + 0.2)
        refused = await client.get("/items", headers=bearer(token))
    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 401, refused.text
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


async def test_refused_resource_server_credentials_answer_503_not_401(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    opaque = oidc_provider.resource("opaque")
    token = await oidc_provider.token(opaque)
    async with api(audience=opaque, client_secret="not-the-secret") as client:
        answer = await client.get("/items", headers=bearer(token))
    # The token may be fine: the resource server is misconfigured, so it cannot tell.
    assert answer.status_code == 503, answer.text
