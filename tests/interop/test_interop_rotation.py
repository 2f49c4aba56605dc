"""Key rotation at oidc-provider: a new Provider with a new key set behind the same listener."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from bearerguard import FetchPolicy

from .interop_support import ApiFactory, OIDCProvider, bearer

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

#: Small on purpose: the JWKS is re-read every second and an unknown kid may force a
#: fetch every 0.5 s, so a test sees in seconds what production sees in minutes.
COOLDOWN = 0.5
FAST = FetchPolicy(min_ttl=1.0, default_ttl=1.0, max_ttl=1.0, cooldown=COOLDOWN)
#: How long the API may take to notice a dropped key: a TTL, a cooldown, and slack.
CONVERGE = 10.0


async def status_of(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/items", headers=bearer(token))).status_code


async def test_rotation_causes_no_401_for_fresh_tokens(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    jwt = oidc_provider.resource("jwt")
    # The default (long) JWKS lifetime: only the unknown kid can make the API refetch.
    async with api(fetch=FetchPolicy(cooldown=COOLDOWN)) as client:
        before = await oidc_provider.token(jwt)
        assert await status_of(client, before) == 200
        await anyio.sleep(COOLDOWN + 0.1)  # a rotation comes long after the last fetch

        state = await oidc_provider.rotate()
        fresh = [await oidc_provider.token(jwt, alg=alg) for alg in ("RS256", "ES256") * 10]
        answers: list[httpx.Response] = []

        async def call(token: str) -> None:
            answers.append(await client.get("/items", headers=bearer(token)))

        async with anyio.create_task_group() as tasks:
            for token in fresh:
                tasks.start_soon(call, token)
        old_after = await status_of(client, before)

    assert [a.status_code for a in answers] == [200] * len(fresh), [a.text for a in answers]
    assert {a.json()["kid"] for a in answers} == set(state["current"].values())
    assert old_after == 200  # the old key is still published


async def test_tokens_of_dropped_keys_are_refused(
    oidc_provider: OIDCProvider, api: ApiFactory
) -> None:
    jwt = oidc_provider.resource("jwt")
    async with api(fetch=FAST) as client:
        old_rs = await oidc_provider.token(jwt)
        old_es = await oidc_provider.token(jwt, alg="ES256")
        assert await status_of(client, old_rs) == 200
        assert await status_of(client, old_es) == 200

        await oidc_provider.rotate()
        assert await status_of(client, await oidc_provider.token(jwt)) == 200
        assert await status_of(client, old_rs) == 200
        await oidc_provider.drop_old_keys()

        fresh_statuses: list[int] = []
        deadline = time.monotonic() + CONVERGE
        while time.monotonic() < deadline:
            fresh_statuses.append(await status_of(client, await oidc_provider.token(jwt)))
            if await status_of(client, old_rs) == 401:
                break
            await anyio.sleep(0.2)
        # Past the cooldown the dropped kid has been looked for again and is refused.
        await anyio.sleep(COOLDOWN * 1.5)
        refused_rs = await client.get("/items", headers=bearer(old_rs))
        refused_es = await client.get("/items", headers=bearer(old_es))

    assert refused_rs.status_code == 401, refused_rs.text
    assert 'error="invalid_token"' in refused_rs.headers["www-authenticate"]
    assert refused_es.status_code == 401, refused_es.text
    assert set(fresh_statuses) == {200}
