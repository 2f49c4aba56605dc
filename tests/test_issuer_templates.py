"""Multi-tenant issuers, shared key caches and TestIssuer playing real issuer URLs.

Every test goes through the whole validator and a TestIssuer answering at the
provider's own URLs (socket-less transport), as a user's tests would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bearerguard import InvalidToken, Issuer, TokenValidator
from bearerguard.testing import TestIssuer

pytestmark = pytest.mark.anyio

TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
COMMON_METADATA = "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"
COMMON_KEYS = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
API = "00000000-aaaa-bbbb-cccc-000000000001"
TENANTS = [f"{i:08d}-1111-2222-3333-444444444444" for i in range(20)]

Validate = Callable[..., TokenValidator]


@pytest.fixture
def entra() -> AsyncIterator[TestIssuer]:
    """Entra ID's tenant-independent v2.0 endpoints, played: one key set for every tenant."""
    with TestIssuer(
        issuer=TEMPLATE, jwks_uri=COMMON_KEYS, metadata_url=COMMON_METADATA, audience=API
    ) as issuer:
        yield issuer  # type: ignore[misc]


@pytest.fixture
async def validator(entra: TestIssuer) -> AsyncIterator[Validate]:
    made: list[TokenValidator] = []
    client = httpx.AsyncClient(transport=entra.transport())

    def make(*issuers: Issuer) -> TokenValidator:
        made.append(TokenValidator(issuers, client=client))
        return made[-1]

    yield make
    for v in made:
        await v.aclose()
    await client.aclose()


def token(entra: TestIssuer, tid: str, alg: str | None = None, **claims: Any) -> str:
    return entra.mint(
        {"tid": tid, "azp": "client-app", **claims},
        headers={"typ": "JWT"},
        drop=("client_id",),
        alg=alg,
    )


async def refusal(validator: TokenValidator, raw: str) -> str:
    with pytest.raises(InvalidToken) as info:
        await validator.validate(raw)
    return info.value.reason


async def test_template_issuer_accepts_an_allowed_tenant_and_reports_its_own_iss(
    entra: TestIssuer, validator: Validate
) -> None:
    v = validator(
        Issuer(issuer=TEMPLATE, audience=API, tenants=TENANTS[:2], metadata_url=COMMON_METADATA)
    )
    access = await v.validate(token(entra, TENANTS[1]))
    assert access.issuer == f"https://login.microsoftonline.com/{TENANTS[1]}/v2.0"
    assert access.client_id == "client-app"


async def test_template_issuer_refuses_a_tenant_not_allowed(
    entra: TestIssuer, validator: Validate
) -> None:
    v = validator(
        Issuer(issuer=TEMPLATE, audience=API, tenants=TENANTS[:2], metadata_url=COMMON_METADATA)
    )
    assert await refusal(v, token(entra, TENANTS[5])) == "bad_tenant"


async def test_template_issuer_refuses_a_token_whose_iss_and_tid_disagree(
    entra: TestIssuer, validator: Validate
) -> None:
    v = validator(Issuer(issuer=TEMPLATE, audience=API, tenants="*", metadata_url=COMMON_METADATA))
    forged = token(entra, TENANTS[0], iss=f"https://login.microsoftonline.com/{TENANTS[1]}/v2.0")
    assert await refusal(v, forged) == "bad_iss"


async def test_discovery_document_holding_the_template_is_accepted(
    entra: TestIssuer, validator: Validate
) -> None:
    v = validator(Issuer(issuer=TEMPLATE, audience=API, tenants="*", metadata_url=COMMON_METADATA))
    await v.validate(token(entra, TENANTS[3]))
    assert entra.requests[urlpath(COMMON_METADATA)] == 1
    assert entra.requests[entra.jwks_path] == 1


def test_template_issuer_without_metadata_url_or_jwks_uri_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="metadata_url"):
        TokenValidator([Issuer(issuer=TEMPLATE, audience=API, tenants="*")])


async def test_twenty_tenants_in_one_template_cost_one_key_fetch(
    entra: TestIssuer, validator: Validate
) -> None:
    v = validator(Issuer(issuer=TEMPLATE, audience=API, tenants=TENANTS, jwks_uri=COMMON_KEYS))
    for tid in TENANTS:
        await v.validate(token(entra, tid))
    assert entra.requests[entra.jwks_path] == 1


async def test_issuers_sharing_a_jwks_uri_share_one_key_cache(
    entra: TestIssuer, validator: Validate
) -> None:
    # Twenty single-tenant Entra issuers naming the common key set: one fetch, not twenty.
    issuers = [
        Issuer(
            issuer=f"https://login.microsoftonline.com/{tid}/v2.0",
            audience=API,
            jwks_uri=COMMON_KEYS,
        )
        for tid in TENANTS
    ]
    v = validator(*issuers)
    for tid in TENANTS:
        assert (await v.validate(token(entra, tid))).issuer.endswith(f"/{tid}/v2.0")
    assert entra.requests[entra.jwks_path] == 1
    assert len({id(state.jwks) for state in v.issuers.values()}) == 1
    # A rotation seen through one tenant's token serves them all.
    entra.rotate()
    await v.validate(token(entra, TENANTS[0]))
    await v.validate(token(entra, TENANTS[19]))
    assert entra.requests[entra.jwks_path] == 2


async def test_shared_key_cache_still_applies_each_issuers_own_algorithms(
    validator: Validate,
) -> None:
    with TestIssuer(("ES256",), issuer="https://idp.example.com", audience=API) as es:
        client = httpx.AsyncClient(transport=es.transport())
        v = TokenValidator(
            [
                Issuer(
                    issuer="https://idp.example.com",
                    audience=API,
                    jwks_uri=es.jwks_uri,
                    algorithms=("RS256",),
                ),
                Issuer(
                    issuer="https://other.example.com",
                    audience=API,
                    jwks_uri=es.jwks_uri,
                    algorithms=("ES256",),
                ),
            ],
            client=client,
        )
        try:
            assert await refusal(v, es.mint()) == "bad_alg"
            await v.validate(es.mint({"iss": "https://other.example.com"}))
        finally:
            await v.aclose()
            await client.aclose()


# -- TestIssuer(issuer=...) ------------------------------------------------------------------


async def test_played_issuer_answers_at_its_own_urls_and_nowhere_else() -> None:
    with TestIssuer(
        issuer="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC",
        jwks_uri="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC/.well-known/jwks.json",
    ) as played:
        async with httpx.AsyncClient(transport=played.transport()) as client:
            base = played.issuer
            document = (await client.get(base + "/.well-known/openid-configuration")).json()
            assert document["issuer"] == base
            assert document["jwks_uri"] == base + "/.well-known/jwks.json"
            keys = (await client.get(document["jwks_uri"])).json()
            assert [k["kid"] for k in keys["keys"]] == played.kids
            with pytest.raises(httpx.ConnectError):
                await client.get(
                    "https://cognito-idp.us-east-1.amazonaws.com/x/.well-known/jwks.json"
                )
    assert played.mint().count(".") == 2


def test_played_issuer_template_fills_iss_from_the_tokens_tid(entra: TestIssuer) -> None:
    claims = entra.claims({"tid": TENANTS[0]})
    assert claims["iss"] == f"https://login.microsoftonline.com/{TENANTS[0]}/v2.0"
    with pytest.raises(ValueError, match="tid"):
        entra.claims()


def urlpath(url: str) -> str:
    return httpx.URL(url).path


MSA = "9188040d-6c67-4c5b-b112-36a304b66dad"  # Entra's personal-accounts tenant


async def test_a_key_whose_jwk_names_its_issuer_signs_only_for_that_issuer() -> None:
    # Entra's common key set marks each key: the template (any tenant) or one issuer.
    with TestIssuer(
        ("RS256", "ES256"),
        issuer=TEMPLATE,
        jwks_uri=COMMON_KEYS,
        metadata_url=COMMON_METADATA,
        audience=API,
    ) as entra:
        scoped = entra.jwks()
        for jwk in scoped["keys"]:
            msa = f"https://login.microsoftonline.com/{MSA}/v2.0"
            jwk["issuer"] = TEMPLATE if jwk["alg"] == "RS256" else msa
        assert scoped["keys"][1]["issuer"] == f"https://login.microsoftonline.com/{MSA}/v2.0"
        entra.serve_jwks(scoped)
        async with httpx.AsyncClient(transport=entra.transport()) as client:
            v = TokenValidator(
                [Issuer(issuer=TEMPLATE, audience=API, tenants="*", jwks_uri=COMMON_KEYS)],
                client=client,
            )
            try:
                await v.validate(token(entra, TENANTS[0]))  # template key, any tenant
                await v.validate(token(entra, MSA, alg="ES256"))  # MSA key, MSA tenant
                assert await refusal(v, token(entra, TENANTS[0], alg="ES256")) == "key_issuer"
            finally:
                await v.aclose()


async def test_a_jwk_with_an_unreadable_issuer_member_is_never_used() -> None:
    with TestIssuer(("RS256", "ES256"), issuer="https://idp.example.com", audience=API) as played:
        document = played.jwks()
        document["keys"][0]["issuer"] = ["https://idp.example.com"]  # the RS256 key
        played.serve_jwks(document)
        async with httpx.AsyncClient(transport=played.transport()) as client:
            v = TokenValidator([Issuer(issuer=played.issuer, audience=API)], client=client)
            try:
                await v.validate(played.mint(alg="ES256"))
                with pytest.raises(InvalidToken):
                    await v.validate(played.mint(alg="RS256"))
            finally:
                await v.aclose()
