"""oidc-provider stopped mid-run: what the API still knows keeps working, the rest is 503."""

from __future__ import annotations

import anyio
import pytest

from bearerguard import FetchPolicy

from .interop_support import ApiFactory, OIDCProvider, bearer

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

#: Keys and metadata go stale after a second, so the outage is felt by every refresh.
FAST = FetchPolicy(min_ttl=1.0, default_ttl=1.0, max_ttl=1.0, cooldown=0.5, timeout=1.0)


async def test_known_keys_keep_working_while_the_provider_is_down(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    jwt = oidc_provider.resource("jwt")
    seen = await oidc_provider.token(jwt)
    unseen_rs = await oidc_provider.token(jwt)
    unseen_es = await oidc_provider.token(jwt, alg="ES256")
    async with api(fetch=FAST) as client:
        assert (await client.get("/items", headers=bearer(seen))).status_code == 200
        oidc_provider.stop()
        await anyio.sleep(1.5)  # past the key set's lifetime: every refresh now fails
        answers = [
            await client.get("/items", headers=bearer(token))
            for token in (seen, unseen_rs, unseen_es)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]


async def test_introspection_answers_503_while_the_provider_is_down(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    opaque = oidc_provider.resource("opaque")
    warm_up = await oidc_provider.token(opaque)
    token = await oidc_provider.token(opaque)
    async with api(audience=opaque, fetch=FAST) as client:
        assert (await client.get("/items", headers=bearer(warm_up))).status_code == 200
        oidc_provider.stop()
        answer = await client.get("/items", headers=bearer(token))
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json()["error"] == "temporarily_unavailable"


async def test_the_api_recovers_when_the_provider_comes_back(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    opaque = oidc_provider.resource("opaque")
    async with api(audience=opaque, fetch=FAST) as client:
        assert (
            await client.get("/items", headers=bearer(await oidc_provider.token(opaque)))
        ).status_code == 200
        pending = await oidc_provider.token(opaque)
        oidc_provider.stop()
        down = await client.get("/items", headers=bearer(pending))
        oidc_provider.start()  # same port, same keys; the token store starts empty
        after = await client.get("/items", headers=bearer(await oidc_provider.token(opaque)))
    assert down.status_code == 503, down.text
    assert after.status_code == 200, after.text
