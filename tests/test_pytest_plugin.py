"""The pytest plugin and the in-process transport, as a user of bearerguard would meet them.

The plugin tests run a small user test suite in a fresh pytest (``pytester``), so
what is asserted is exactly what a user gets by enabling the plugin.
"""

from __future__ import annotations

import httpx
import pytest

from bearerguard.config import Issuer
from bearerguard.errors import Unavailable
from bearerguard.testing import TestIssuer
from bearerguard.validator import TokenValidator

pytest_plugins = ["pytester"]


@pytest.mark.anyio
async def test_transport_serves_discovery_and_keys_without_a_socket(
    test_issuer: TestIssuer,
) -> None:
    async with httpx.AsyncClient(transport=test_issuer.transport()) as client:
        validator = TokenValidator(
            [Issuer(test_issuer.issuer, test_issuer.audience)], client=client
        )
        token = await validator.validate(test_issuer.mint(scope="read:items"))
        await validator.aclose()
    assert token.scopes == {"read:items"}
    assert test_issuer.requests[test_issuer.discovery_path] == 1
    assert test_issuer.requests[test_issuer.jwks_path] == 1


@pytest.mark.anyio
async def test_transport_outage_close_is_a_connect_error_and_a_503(
    test_issuer: TestIssuer,
) -> None:
    test_issuer.outage(mode="close")
    async with httpx.AsyncClient(transport=test_issuer.transport()) as client:
        validator = TokenValidator(
            [Issuer(test_issuer.issuer, test_issuer.audience)], client=client
        )
        with pytest.raises(Unavailable):
            await validator.validate(test_issuer.mint())
        await validator.aclose()
