"""RFC 9068 JWT access tokens minted by oidc-provider, through a real FastAPI app."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import anyio
import pytest

from .interop_support import ApiFactory, OIDCProvider, bearer

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
#: These tests neither rotate keys nor stop the provider: they share one.
SHARES_PROVIDER = True


def _part(token: str, index: int) -> dict[str, Any]:
    segment = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def header_of(token: str) -> dict[str, Any]:
    """What the provider put in the JOSE header (read only to check a test's premise)."""
    return _part(token, 0)


def claims_of(token: str) -> dict[str, Any]:
    return _part(token, 1)


async def test_jwt_for_our_resource_is_accepted_with_its_scopes(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    token = await oidc_provider.token(oidc_provider.resource("jwt"), "read:items write:items")
    assert header_of(token)["typ"] == "at+jwt"
    async with api() as client:
        answer = await client.get("/items", headers=bearer(token))
        written = await client.post("/items", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kind"] == "jwt"
    assert body["scopes"] == ["read:items", "write:items"]
    assert body["client_id"] == "interop-client"
    assert body["audience"] == [oidc_provider.resource("jwt")]
    assert body["kid"] == oidc_provider.info["kids"]["current"]["RS256"]
    assert written.status_code == 200, written.text


async def test_jwt_without_the_route_scope_is_forbidden(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    token = await oidc_provider.token(oidc_provider.resource("jwt"), "read:items")
    async with api() as client:
        read = await client.get("/items", headers=bearer(token))
        write = await client.post("/items", headers=bearer(token))
    assert read.status_code == 200, read.text
    assert read.json()["scopes"] == ["read:items"]
    assert write.status_code == 403, write.text
    challenge = write.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="write:items"' in challenge


async def test_rfc9068_strict_mode_accepts_oidc_provider_tokens(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    token = await oidc_provider.token(oidc_provider.resource("jwt"))
    async with api(rfc9068=True) as client:
        answer = await client.get("/items", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["subject"] == "interop-client"


async def test_jwt_for_another_resource_is_refused(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    token = await oidc_provider.token(oidc_provider.resource("other_jwt"))
    assert claims_of(token)["aud"] == oidc_provider.resource("other_jwt")
    async with api() as client:
        answer = await client.get("/items", headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_jwt_is_refused_after_its_lifetime(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    token = await oidc_provider.token(oidc_provider.resource("jwt"), ttl=2)
    expires_at = claims_of(token)["exp"]
    async with api(leeway=0.0) as client:
        fresh = await client.get("/items", headers=bearer(token))
        # exp is whole seconds: wait until the clock is clearly past it.
        await anyio.sleep(max(0.0, expires_at + 1.0 - time.time()))
        expired = await client.get("/items", headers=bearer(token))
    assert fresh.status_code == 200, fresh.text
    assert expired.status_code == 401, expired.text
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]


async def test_es256_jwt_is_accepted(oidc_provider: OIDCProvider, api: ApiFactory) -> None:
    token = await oidc_provider.token(oidc_provider.resource("jwt"), alg="ES256")
    assert header_of(token)["alg"] == "ES256"
    async with api() as client:
        answer = await client.get("/items", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["kid"] == oidc_provider.info["kids"]["current"]["ES256"]
