"""Provider presets against tokens shaped like each provider's documented tokens.

Every test plays the provider with ``TestIssuer(issuer=...)`` at its real URLs
(discovery, JWKS; any other host fails to connect), passes the preset unchanged
to a validator, and checks what an API sees: subject, client and scopes for the
provider's access tokens, and a refusal for each look-alike (ID tokens, other
tenants, other APIs, the other token version).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from bearerguard import AccessToken, InvalidToken, Issuer, TokenValidator, providers
from bearerguard.testing import TestIssuer

pytestmark = pytest.mark.anyio

NOW = int(time.time())


def token(
    played: TestIssuer,
    claims: dict[str, Any],
    *,
    typ: str | None = "JWT",
    header: dict[str, Any] | None = None,
    **kw: Any,
) -> str:
    """A token with exactly these claims (nothing of TestIssuer's defaults) and this ``typ``."""
    body = {"iat": NOW, "exp": NOW + 3600, **claims}
    drop = {"sub", "client_id", "jti"} - body.keys()
    headers = {"typ": typ, **(header or {})}
    return played.mint(body, audience=None, headers=headers, drop=drop, **kw)


def playing(*algorithms: str, **urls: str) -> Iterator[TestIssuer]:
    """A TestIssuer answering at a provider's URLs, for the fixtures below."""
    with TestIssuer(algorithms or ("RS256",), **urls) as played:
        yield played


@asynccontextmanager
async def validator(config: Issuer, played: TestIssuer) -> AsyncIterator[TokenValidator]:
    async with httpx.AsyncClient(transport=played.transport()) as client:
        v = TokenValidator([config], client=client)
        try:
            yield v
        finally:
            await v.aclose()


async def accepted(config: Issuer, played: TestIssuer, raw: str) -> AccessToken:
    async with validator(config, played) as v:
        return await v.validate(raw)


async def refused(config: Issuer, played: TestIssuer, raw: str) -> str:
    async with validator(config, played) as v:
        with pytest.raises(InvalidToken) as info:
            await v.validate(raw)
    return info.value.reason


# -- Auth0 ---------------------------------------------------------------------------------

AUTH0 = "dev-abc.eu.auth0.com"
AUTH0_API = "https://orders.example.com"


@pytest.fixture
def auth0() -> Iterator[TestIssuer]:
    yield from playing(
        issuer=f"https://{AUTH0}/", jwks_uri=f"https://{AUTH0}/.well-known/jwks.json"
    )


def auth0_access(**claims: Any) -> dict[str, Any]:
    """Auth0 token profile, RBAC with "Add Permissions in the Access Token" on."""
    return {
        "iss": f"https://{AUTH0}/",
        "sub": "auth0|64f0c9a1b2",
        "aud": [AUTH0_API, f"https://{AUTH0}/userinfo"],
        "azp": "wE3kq0Zy7mY2spaClient",
        "scope": "openid profile read:orders",
        "permissions": ["read:orders", "write:orders"],
        **claims,
    }


async def test_auth0_access_token_gives_subject_client_scope_and_permissions(
    auth0: TestIssuer,
) -> None:
    config = providers.auth0(domain=AUTH0, audience=AUTH0_API)
    access = await accepted(config, auth0, token(auth0, auth0_access()))
    assert access.subject == "auth0|64f0c9a1b2"
    assert access.client_id == "wE3kq0Zy7mY2spaClient"
    assert access.scopes == {"openid", "profile", "read:orders", "write:orders"}
    assert auth0.requests["/.well-known/openid-configuration"] == 1
    assert auth0.requests["/.well-known/jwks.json"] == 1


async def test_auth0_rfc9068_profile_token_gives_its_client_id(auth0: TestIssuer) -> None:
    claims = auth0_access(client_id="wE3kq0Zy7mY2spaClient", jti="73WakrfVbNJBaAmhQtEeDv")
    del claims["azp"]
    config = providers.auth0(domain=AUTH0, audience=AUTH0_API)
    access = await accepted(config, auth0, token(auth0, claims, typ="at+jwt"))
    assert access.client_id == "wE3kq0Zy7mY2spaClient"


async def test_auth0_machine_to_machine_token_is_the_client_itself(auth0: TestIssuer) -> None:
    claims = {
        "iss": f"https://{AUTH0}/",
        "sub": "m2mClient123@clients",
        "aud": AUTH0_API,
        "azp": "m2mClient123",
        "gty": "client-credentials",
        "scope": "read:orders",
        "permissions": ["read:orders"],
    }
    access = await accepted(
        providers.auth0(domain=AUTH0, audience=AUTH0_API), auth0, token(auth0, claims)
    )
    assert (access.subject, access.client_id, access.scopes) == (
        "m2mClient123@clients",
        "m2mClient123",
        {"read:orders"},
    )


async def test_auth0_id_token_is_refused(auth0: TestIssuer) -> None:
    id_token = {
        "iss": f"https://{AUTH0}/",
        "sub": "auth0|64f0c9a1b2",
        "aud": "wE3kq0Zy7mY2spaClient",
        "nonce": "n-0S6_WzA2Mj",
        "name": "Ada",
        "email": "ada@example.com",
    }
    config = providers.auth0(domain=AUTH0, audience=AUTH0_API)
    assert await refused(config, auth0, token(auth0, id_token)) == "bad_aud"


async def test_auth0_token_for_another_api_is_refused(auth0: TestIssuer) -> None:
    other = auth0_access(aud=["https://billing.example.com", f"https://{AUTH0}/userinfo"])
    config = providers.auth0(domain=AUTH0, audience=AUTH0_API)
    assert await refused(config, auth0, token(auth0, other)) == "bad_aud"


async def test_auth0_issuer_without_its_trailing_slash_is_another_issuer(auth0: TestIssuer) -> None:
    config = providers.auth0(domain=AUTH0, audience=AUTH0_API)
    raw = token(auth0, auth0_access(iss=f"https://{AUTH0}"))
    assert await refused(config, auth0, raw) == "bad_iss"


# -- Microsoft Entra ID --------------------------------------------------------------------

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
THIRD_TENANT = "0f5c8e2a-4b1d-4c3e-9a7f-6d2b1e0c9a88"
API_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
CLIENT_ID = "1fec8e78-bce4-4aaf-ab1b-5451cc387264"
GRAPH = "00000003-0000-0000-c000-000000000000"
LOGIN = "https://login.microsoftonline.com"


def entra_v2(tid: str = TENANT, **claims: Any) -> dict[str, Any]:
    """A v2.0 delegated access token (``accessTokenAcceptedVersion: 2``)."""
    return {
        "aud": API_ID,
        "iss": f"{LOGIN}/{tid}/v2.0",
        "nbf": NOW - 5,
        "aio": "AXQAi/8TAAAA",
        "azp": CLIENT_ID,
        "azpacr": "0",
        "name": "Ada Lovelace",
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "preferred_username": "ada@contoso.com",
        "rh": "I",
        "scp": "access_as_user Orders.Read",
        "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
        "tid": tid,
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "2.0",
        **claims,
    }


def entra_v1(tid: str = TENANT, **claims: Any) -> dict[str, Any]:
    """A v1.0 access token (``accessTokenAcceptedVersion`` null): sts issuer, App ID URI."""
    return {
        "aud": f"api://{API_ID}",
        "iss": f"https://sts.windows.net/{tid}/",
        "nbf": NOW - 5,
        "acr": "1",
        "amr": ["pwd"],
        "appid": CLIENT_ID,
        "appidacr": "0",
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "scp": "Orders.Read",
        "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
        "tid": tid,
        "unique_name": "ada@contoso.com",
        "upn": "ada@contoso.com",
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "1.0",
        **claims,
    }


@pytest.fixture
def entra() -> Iterator[TestIssuer]:
    """One tenant's v2.0 endpoints."""
    yield from playing(
        issuer=f"{LOGIN}/{TENANT}/v2.0", jwks_uri=f"{LOGIN}/{TENANT}/discovery/v2.0/keys"
    )


@pytest.fixture
def entra_v1_endpoints() -> Iterator[TestIssuer]:
    """One tenant's v1.0 endpoints: the metadata at login.microsoftonline.com names sts."""
    yield from playing(
        issuer=f"https://sts.windows.net/{TENANT}/",
        metadata_url=f"{LOGIN}/{TENANT}/.well-known/openid-configuration",
        jwks_uri=f"{LOGIN}/{TENANT}/discovery/keys",
    )


@pytest.fixture
def entra_common() -> Iterator[TestIssuer]:
    """The tenant-independent v2.0 endpoints: the discovery document holds the template."""
    yield from playing(
        issuer=f"{LOGIN}/{{tenantid}}/v2.0",
        metadata_url=f"{LOGIN}/common/v2.0/.well-known/openid-configuration",
        jwks_uri=f"{LOGIN}/common/discovery/v2.0/keys",
    )


async def test_entra_v2_delegated_token_gives_subject_client_and_scp(entra: TestIssuer) -> None:
    config = providers.entra(tenant_id=TENANT, audience=API_ID)
    access = await accepted(config, entra, token(entra, entra_v2()))
    assert access.subject == "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ"
    assert access.client_id == CLIENT_ID
    assert access.scopes == {"access_as_user", "Orders.Read"}
    assert access.issuer == f"{LOGIN}/{TENANT}/v2.0"
    assert entra.requests[f"/{TENANT}/v2.0/.well-known/openid-configuration"] == 1
    assert entra.requests[f"/{TENANT}/discovery/v2.0/keys"] == 1


async def test_entra_v2_app_token_gives_its_roles_as_scopes(entra: TestIssuer) -> None:
    app = entra_v2(roles=["Orders.Read.All"], sub="4f8fa4a3-2bd5-4a2b-bd4c-0ed3bc4d9f0a")
    for name in ("scp", "name", "preferred_username"):
        del app[name]
    config = providers.entra(tenant_id=TENANT, audience=API_ID)
    access = await accepted(config, entra, token(entra, app))
    assert access.scopes == {"Orders.Read.All"}
    assert access.client_id == CLIENT_ID


async def test_entra_v1_token_is_refused_when_v2_is_configured(entra: TestIssuer) -> None:
    config = providers.entra(tenant_id=TENANT, audience=[API_ID, f"api://{API_ID}"])
    assert await refused(config, entra, token(entra, entra_v1())) == "bad_iss"


async def test_entra_v2_shaped_token_claiming_ver_1_is_refused(entra: TestIssuer) -> None:
    config = providers.entra(tenant_id=TENANT, audience=API_ID)
    assert await refused(config, entra, token(entra, entra_v2(ver="1.0"))) == "unexpected_claim"


async def test_entra_v1_access_token_gives_subject_appid_and_scp(
    entra_v1_endpoints: TestIssuer,
) -> None:
    played = entra_v1_endpoints
    config = providers.entra(tenant_id=TENANT, audience=f"api://{API_ID}", version="1.0")
    # v1.0 headers carry x5t besides kid (same value).
    raw = token(played, entra_v1(), header={"x5t": played.signing_kid})
    access = await accepted(config, played, raw)
    assert access.subject == "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA"
    assert access.client_id == CLIENT_ID
    assert access.scopes == {"Orders.Read"}
    assert played.requests[f"/{TENANT}/.well-known/openid-configuration"] == 1
    assert played.requests[f"/{TENANT}/discovery/keys"] == 1


async def test_entra_v2_token_is_refused_when_v1_is_configured(
    entra_v1_endpoints: TestIssuer,
) -> None:
    played = entra_v1_endpoints
    config = providers.entra(tenant_id=TENANT, audience=API_ID, version="1.0")
    assert await refused(config, played, token(played, entra_v2())) == "bad_iss"


async def test_entra_id_token_is_refused(entra: TestIssuer) -> None:
    # An ID token issued to the API's own app id: right aud, but no azp (never in ID tokens).
    id_token = entra_v2(nonce="123523", email="ada@contoso.com")
    for name in ("azp", "azpacr", "scp"):
        del id_token[name]
    config = providers.entra(tenant_id=TENANT, audience=API_ID)
    assert await refused(config, entra, token(entra, id_token)) == "missing_claim"


async def test_entra_token_for_another_api_is_refused(entra: TestIssuer) -> None:
    graph = entra_v2(aud=GRAPH, scp="User.Read")
    config = providers.entra(tenant_id=TENANT, audience=API_ID)
    assert await refused(config, entra, token(entra, graph)) == "bad_aud"


async def test_entra_token_of_another_tenant_is_refused_by_a_single_tenant_api(
    entra: TestIssuer,
) -> None:
    config = providers.entra(tenant_id=TENANT, audience=API_ID)
    assert await refused(config, entra, token(entra, entra_v2(tid=OTHER_TENANT))) == "bad_iss"


async def test_entra_multi_tenant_accepts_listed_tenants_and_refuses_others(
    entra_common: TestIssuer,
) -> None:
    played = entra_common
    config = providers.entra(tenants=[TENANT, OTHER_TENANT], audience=API_ID)
    async with validator(config, played) as v:
        for tid in (TENANT, OTHER_TENANT):
            access = await v.validate(token(played, entra_v2(tid=tid)))
            assert access.issuer == f"{LOGIN}/{tid}/v2.0"
            assert access.claims["tid"] == tid
        with pytest.raises(InvalidToken) as info:
            await v.validate(token(played, entra_v2(tid=THIRD_TENANT)))
        assert info.value.reason == "bad_tenant"
    assert played.requests["/common/v2.0/.well-known/openid-configuration"] == 1
    assert played.requests["/common/discovery/v2.0/keys"] == 1


async def test_entra_any_tenant_still_needs_iss_and_tid_to_agree(entra_common: TestIssuer) -> None:
    played = entra_common
    config = providers.entra(tenants="*", audience=API_ID)
    assert (await accepted(config, played, token(played, entra_v2(tid=THIRD_TENANT)))).subject
    forged = entra_v2(tid=TENANT, iss=f"{LOGIN}/{THIRD_TENANT}/v2.0")
    assert await refused(config, played, token(played, forged)) == "bad_iss"


def test_entra_configuration_mistakes_are_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="GUID"):
        providers.entra(tenant_id="contoso.onmicrosoft.com", audience=API_ID)
    with pytest.raises(ValueError, match="tenant"):
        providers.entra(audience=API_ID)
    with pytest.raises(ValueError):
        providers.entra(tenant_id=TENANT, tenants="*", audience=API_ID)
    # Upper-case GUIDs are written as Entra writes them in iss: lower case.
    upper = providers.entra(tenant_id=TENANT.upper(), audience=API_ID)
    assert upper.issuer == f"{LOGIN}/{TENANT}/v2.0"


# -- Amazon Cognito ------------------------------------------------------------------------

POOL = "eu-west-1_AbC123xyz"
COGNITO = f"https://cognito-idp.eu-west-1.amazonaws.com/{POOL}"
APP = "7m1234abcdefghijklmnopqrst"


@pytest.fixture
def cognito() -> Iterator[TestIssuer]:
    yield from playing(issuer=COGNITO, jwks_uri=f"{COGNITO}/.well-known/jwks.json")


def cognito_access(**claims: Any) -> dict[str, Any]:
    return {
        "sub": "a1b2c3d4-5678-90ab-cdef-1234567890ab",
        "cognito:groups": ["admin"],
        "iss": COGNITO,
        "client_id": APP,
        "origin_jti": "f5e6d7c8-b9a0-1234-5678-90abcdef1234",
        "event_id": "e1f2a3b4-c5d6-e7f8-a9b0-c1d2e3f4a5b6",
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin openid orders/read",
        "auth_time": NOW - 60,
        "jti": "j1k2l3m4-n5o6-p7q8-r9s0-t1u2v3w4x5y6",
        "username": "jdoe",
        **claims,
    }


async def test_cognito_access_token_gives_subject_client_and_scope(cognito: TestIssuer) -> None:
    config = providers.cognito(region="eu-west-1", user_pool_id=POOL, client_ids=[APP])
    access = await accepted(config, cognito, token(cognito, cognito_access(), typ=None))
    assert access.subject == "a1b2c3d4-5678-90ab-cdef-1234567890ab"
    assert access.client_id == APP
    assert access.scopes == {"aws.cognito.signin.user.admin", "openid", "orders/read"}
    assert access.audience == ()
    assert cognito.requests[f"/{POOL}/.well-known/openid-configuration"] == 1
    assert cognito.requests[f"/{POOL}/.well-known/jwks.json"] == 1


async def test_cognito_id_token_is_refused(cognito: TestIssuer) -> None:
    id_token = {
        "sub": "a1b2c3d4-5678-90ab-cdef-1234567890ab",
        "cognito:groups": ["admin"],
        "email_verified": True,
        "iss": COGNITO,
        "cognito:username": "jdoe",
        "origin_jti": "f5e6d7c8-b9a0-1234-5678-90abcdef1234",
        "aud": APP,
        "event_id": "e1f2a3b4-c5d6-e7f8-a9b0-c1d2e3f4a5b6",
        "token_use": "id",
        "auth_time": NOW - 60,
        "jti": "a7b8c9d0-e1f2-3456-7890-abcdef123456",
        "email": "jdoe@example.com",
    }
    config = providers.cognito(region="eu-west-1", user_pool_id=POOL, client_ids=[APP])
    assert await refused(config, cognito, token(cognito, id_token, typ=None)) == "bad_client"


async def test_cognito_token_use_other_than_access_is_refused(cognito: TestIssuer) -> None:
    # Even one naming an accepted client: token_use is Cognito's own word on the kind.
    config = providers.cognito(region="eu-west-1", user_pool_id=POOL, client_ids=[APP])
    raw = token(cognito, cognito_access(token_use="id"), typ=None)
    assert await refused(config, cognito, raw) == "unexpected_claim"


async def test_cognito_access_token_of_another_app_client_is_refused(cognito: TestIssuer) -> None:
    config = providers.cognito(region="eu-west-1", user_pool_id=POOL, client_ids=[APP])
    raw = token(cognito, cognito_access(client_id="3abcdefghijklmnopqrstuvwxy"), typ=None)
    assert await refused(config, cognito, raw) == "bad_client"


async def test_cognito_access_token_of_another_pool_is_refused(cognito: TestIssuer) -> None:
    config = providers.cognito(region="eu-west-1", user_pool_id=POOL, client_ids=[APP])
    other = cognito_access(iss="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other")
    assert await refused(config, cognito, token(cognito, other, typ=None)) == "bad_iss"


def test_cognito_pool_of_another_region_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="region"):
        providers.cognito(region="us-east-1", user_pool_id=POOL, client_ids=[APP])


# -- Keycloak ------------------------------------------------------------------------------

KEYCLOAK = "https://kc.example.com/realms/acme"


@pytest.fixture
def keycloak() -> Iterator[TestIssuer]:
    yield from playing(issuer=KEYCLOAK, jwks_uri=f"{KEYCLOAK}/protocol/openid-connect/certs")


def keycloak_access(**claims: Any) -> dict[str, Any]:
    return {
        "jti": "onrtac:6b5b1c4e-2f0a-4c1e-9f4b-3f0c5b3e2a11",
        "iss": KEYCLOAK,
        "aud": ["orders-api", "account"],
        "sub": "f1e2d3c4-b5a6-4789-8a9b-0c1d2e3f4a5b",
        "typ": "Bearer",
        "azp": "web-app",
        "sid": "4d3c2b1a-0f9e-4d8c-b7a6-5f4e3d2c1b0a",
        "acr": "1",
        "allowed-origins": ["https://app.example.com"],
        "realm_access": {"roles": ["default-roles-acme", "offline_access", "orders-admin"]},
        "resource_access": {
            "orders-api": {"roles": ["orders:read"]},
            "account": {"roles": ["manage-account", "view-profile"]},
        },
        "scope": "openid email profile",
        "email_verified": True,
        "preferred_username": "ada",
        **claims,
    }


async def test_keycloak_access_token_gives_scope_realm_roles_and_this_apis_client_roles(
    keycloak: TestIssuer,
) -> None:
    config = providers.keycloak(
        base_url="https://kc.example.com", realm="acme", audience="orders-api"
    )
    access = await accepted(config, keycloak, token(keycloak, keycloak_access()))
    assert access.subject == "f1e2d3c4-b5a6-4789-8a9b-0c1d2e3f4a5b"
    assert access.client_id == "web-app"
    assert access.scopes == {
        "openid", "email", "profile",
        "default-roles-acme", "offline_access", "orders-admin",
        "orders:read",
    }  # fmt: skip
    assert "manage-account" not in access.scopes  # another client's roles stay out
    assert keycloak.requests["/realms/acme/.well-known/openid-configuration"] == 1
    assert keycloak.requests["/realms/acme/protocol/openid-connect/certs"] == 1


async def test_keycloak_id_token_is_refused_even_for_the_apis_own_client(
    keycloak: TestIssuer,
) -> None:
    id_token = keycloak_access(typ="ID", aud="orders-api", azp="orders-api", nonce="n1")
    for name in ("realm_access", "resource_access", "scope", "allowed-origins"):
        del id_token[name]
    config = providers.keycloak(
        base_url="https://kc.example.com", realm="acme", audience="orders-api"
    )
    assert await refused(config, keycloak, token(keycloak, id_token)) == "unexpected_claim"


async def test_keycloak_token_for_another_client_is_refused(keycloak: TestIssuer) -> None:
    config = providers.keycloak(
        base_url="https://kc.example.com", realm="acme", audience="orders-api"
    )
    raw = token(keycloak, keycloak_access(aud="account"))
    assert await refused(config, keycloak, raw) == "bad_aud"


async def test_keycloak_token_of_another_realm_is_refused(keycloak: TestIssuer) -> None:
    config = providers.keycloak(
        base_url="https://kc.example.com", realm="acme", audience="orders-api"
    )
    raw = token(keycloak, keycloak_access(iss="https://kc.example.com/realms/master"))
    assert await refused(config, keycloak, raw) == "bad_iss"


async def test_keycloak_realm_access_of_the_wrong_shape_is_refused(keycloak: TestIssuer) -> None:
    config = providers.keycloak(
        base_url="https://kc.example.com", realm="acme", audience="orders-api"
    )
    raw = token(keycloak, keycloak_access(realm_access=["orders-admin"]))
    assert await refused(config, keycloak, raw) == "bad_scope"


# -- Okta ----------------------------------------------------------------------------------

OKTA = "dev-123456.okta.com"
OKTA_AS = f"https://{OKTA}/oauth2/default"


@pytest.fixture
def okta() -> Iterator[TestIssuer]:
    yield from playing(issuer=OKTA_AS, jwks_uri=f"{OKTA_AS}/v1/keys")


def okta_access(**claims: Any) -> dict[str, Any]:
    return {
        "ver": 1,
        "jti": "AT.MNAoEQ_jbKqoinrQo1D0XKjMX28U5d7ZszBceot7-Ts",
        "iss": OKTA_AS,
        "aud": "api://default",
        "sub": "ada@example.com",
        "cid": "0oa1b2c3d4e5f6g7h8i9",
        "uid": "00u1a2b3c4d5e6f7g8h9",
        "scp": ["openid", "orders:read"],
        "auth_time": NOW - 60,
        **claims,
    }


async def test_okta_access_token_gives_subject_cid_and_scp(okta: TestIssuer) -> None:
    config = providers.okta(domain=OKTA, audience="api://default")
    access = await accepted(config, okta, token(okta, okta_access(), typ=None))
    assert access.subject == "ada@example.com"
    assert access.client_id == "0oa1b2c3d4e5f6g7h8i9"
    assert access.scopes == {"openid", "orders:read"}
    assert okta.requests["/oauth2/default/.well-known/openid-configuration"] == 1
    assert okta.requests["/oauth2/default/v1/keys"] == 1


async def test_okta_id_token_is_refused_even_with_the_apis_audience(okta: TestIssuer) -> None:
    id_token = {
        "sub": "00u1a2b3c4d5e6f7g8h9",
        "name": "Ada",
        "email": "ada@example.com",
        "ver": 1,
        "iss": OKTA_AS,
        "aud": "0oa1b2c3d4e5f6g7h8i9",
        "jti": "ID.radCQMOQUmyvcTBmmIL0J6BaS60apUEiC7-vI7pOmkw",
        "amr": ["pwd"],
        "idp": "00o1a2b3c4d5e6f7g8h9",
        "auth_time": NOW - 60,
        "at_hash": "fPlsvVszI29LU2UhDyJ9vg",
    }
    audience_is_the_client = providers.okta(domain=OKTA, audience="0oa1b2c3d4e5f6g7h8i9")
    assert await refused(audience_is_the_client, okta, token(okta, id_token, typ=None)) == (
        "missing_claim"
    )
    config = providers.okta(domain=OKTA, audience="api://default")
    assert await refused(config, okta, token(okta, id_token, typ=None)) == "bad_aud"


async def test_okta_org_authorization_server_token_is_refused(okta: TestIssuer) -> None:
    org = okta_access(iss=f"https://{OKTA}", aud=f"https://{OKTA}")
    config = providers.okta(domain=OKTA, audience="api://default")
    assert await refused(config, okta, token(okta, org, typ=None)) == "bad_iss"


# -- Firebase ------------------------------------------------------------------------------

PROJECT = "orders-prod-3f2a1"


@pytest.fixture
def firebase() -> Iterator[TestIssuer]:
    yield from playing(
        "RS256",
        "ES256",
        issuer=f"https://securetoken.google.com/{PROJECT}",
        jwks_uri=providers.FIREBASE_JWKS_URI,
    )


def firebase_id_token(**claims: Any) -> dict[str, Any]:
    return {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "auth_time": NOW - 60,
        "user_id": "Xk893u23H9SI893",
        "sub": "Xk893u23H9SI893",
        "email": "ada@example.com",
        "email_verified": True,
        "firebase": {"identities": {"email": ["ada@example.com"]}, "sign_in_provider": "password"},
        **claims,
    }


async def test_firebase_id_token_gives_the_uid_and_keys_come_from_securetoken(
    firebase: TestIssuer,
) -> None:
    access = await accepted(
        providers.firebase(project_id=PROJECT), firebase, token(firebase, firebase_id_token())
    )
    assert access.subject == "Xk893u23H9SI893"
    assert access.client_id is None
    assert access.scopes == frozenset()
    assert firebase.requests["/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"] == 1
    assert firebase.requests[f"/{PROJECT}/.well-known/openid-configuration"] == 0


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        (
            {"iss": "https://securetoken.google.com/other-project", "aud": "other-project"},
            "bad_iss",
        ),
        ({"aud": "other-project"}, "bad_aud"),
        # A session cookie: same claims, issued by session.firebase.google.com.
        ({"iss": f"https://session.firebase.google.com/{PROJECT}"}, "bad_iss"),
        ({"sub": ""}, "unexpected_claim"),
        ({"sub": "u" * 129}, "unexpected_claim"),
        ({"auth_time": NOW + 3600}, "auth_time_future"),
        ({"auth_time": None}, "bad_auth_time"),
    ],
)
async def test_firebase_look_alikes_are_refused(
    firebase: TestIssuer, claims: dict[str, Any], why: str
) -> None:
    raw = token(firebase, firebase_id_token(**claims))
    assert await refused(providers.firebase(project_id=PROJECT), firebase, raw) == why


async def test_firebase_id_token_without_auth_time_is_refused(firebase: TestIssuer) -> None:
    claims = firebase_id_token()
    del claims["auth_time"]
    raw = token(firebase, claims)
    assert await refused(providers.firebase(project_id=PROJECT), firebase, raw) == "missing_claim"


async def test_firebase_custom_token_is_refused(firebase: TestIssuer) -> None:
    service_account = f"firebase-adminsdk-abcde@{PROJECT}.iam.gserviceaccount.com"
    custom = {
        "iss": service_account,
        "sub": service_account,
        "aud": "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit",
        "uid": "Xk893u23H9SI893",
    }
    raw = token(firebase, custom)
    assert await refused(providers.firebase(project_id=PROJECT), firebase, raw) == "bad_iss"


async def test_firebase_token_not_signed_with_rs256_is_refused(firebase: TestIssuer) -> None:
    raw = token(firebase, firebase_id_token(), alg="ES256")
    assert await refused(providers.firebase(project_id=PROJECT), firebase, raw) == "bad_alg"


# -- overrides -----------------------------------------------------------------------------


def test_preset_takes_any_issuer_field_as_an_override() -> None:
    config = providers.okta(
        domain=OKTA, audience="api://default", leeway=5, scope_claims=("scp", "groups")
    )
    assert (config.leeway, config.scope_claims) == (5, ("scp", "groups"))
    assert config.issuer == OKTA_AS


async def test_preset_expected_claims_are_added_to_not_replaced(cognito: TestIssuer) -> None:
    config = providers.cognito(
        region="eu-west-1",
        user_pool_id=POOL,
        client_ids=[APP],
        expected_claims={"cognito:groups": lambda groups: "admin" in groups},
    )
    assert await refused(
        config, cognito, token(cognito, cognito_access(token_use="id"), typ=None)
    ) == ("unexpected_claim")
    raw = token(cognito, cognito_access(**{"cognito:groups": ["staff"]}), typ=None)
    assert await refused(config, cognito, raw) == "unexpected_claim"
    assert (await accepted(config, cognito, token(cognito, cognito_access(), typ=None))).subject


# -- TestIssuer.like: a preset tested unchanged ----------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        providers.firebase(project_id=PROJECT),
        providers.entra(tenants="*", audience=API_ID),
        providers.auth0(domain=AUTH0, audience=AUTH0_API),
    ],
    ids=["firebase", "entra-multi-tenant", "auth0"],
)
async def test_test_issuer_like_plays_a_preset_at_its_own_urls(config: Issuer) -> None:
    claims = {"sub": "u1", "tid": TENANT, "azp": CLIENT_ID, "ver": "2.0", "auth_time": NOW}
    with TestIssuer.like(config) as played:
        access = await accepted(config, played, played.mint(claims))
    assert access.subject == "u1"
    assert played.requests[played.jwks_path] == 1


def test_cognito_in_a_china_region_uses_the_amazonaws_com_cn_endpoints() -> None:
    config = providers.cognito(
        region="cn-north-1", user_pool_id="cn-north-1_AbC123xyz", client_ids=[APP]
    )
    assert config.issuer == "https://cognito-idp.cn-north-1.amazonaws.com.cn/cn-north-1_AbC123xyz"
