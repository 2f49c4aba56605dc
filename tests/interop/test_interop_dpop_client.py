"""DPoP with a client nobody on this project wrote: panva's oauth4webapi over real HTTP.

``test_interop_dpop.py`` takes oidc-provider's tokens with proofs made by
``bearerguard.testing``; here the proofs too are someone else's. oauth4webapi
(``dpop_client.mjs``) gets a DPoP-bound token from oidc-provider, then calls the API
served by uvicorn on 127.0.0.1 with its own proofs, retrying once on
``use_dpop_nonce`` with the ``DPoP-Nonce`` it was handed, as RFC 9449 §8 asks.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_server import running_uvicorn
from bearerguard import BearerAuthMiddleware, token_of

from .interop_support import HERE, OIDCProvider, node_or_skip

pytestmark = pytest.mark.interop

NONCE_SECRET = "interop-dpop-nonce-secret-0123456789abcdef"


async def items(request: Request) -> JSONResponse:
    token = token_of(request)
    assert token is not None
    proof = request.scope["bearerguard.dpop"]
    return JSONResponse({"sub": token.subject, "client_id": token.client_id, "jkt": proof.jkt})


def run_client(provider: OIDCProvider, resource: str, alg: str, *urls: str) -> dict[str, Any]:
    client_id, client_secret = provider.client("client")
    done = subprocess.run(
        [
            node_or_skip("oauth4webapi"),
            str(HERE / "dpop_client.mjs"),
            provider.issuer,
            client_id,
            client_secret,
            resource,
            alg,
            *urls,
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_oauth4webapi_proofs_are_accepted_after_one_nonce_round_trip(
    oidc_provider: OIDCProvider, alg: str
) -> None:
    resource = oidc_provider.resource("jwt")
    app = Starlette(routes=[Route("/items", items)])
    app.add_middleware(
        BearerAuthMiddleware,
        issuer=oidc_provider.issuer,
        audience=resource,
        dpop_nonce=True,
        dpop_nonce_secret=NONCE_SECRET,
    )
    with running_uvicorn(app) as base:
        result = run_client(oidc_provider, resource, alg, f"{base}/items", f"{base}/items")
    assert result["token_type"].lower() == "dpop"
    first, second = result["calls"]
    # The first call has no nonce yet: one use_dpop_nonce answer, then accepted.
    assert first["status"] == 200, first["challenges"]
    assert first["retried"] is True
    assert first["body"] == {
        "sub": "interop-client",
        "client_id": "interop-client",
        "jkt": result["jkt"],
    }
    # The client keeps the nonce it was given: the next call passes at once.
    assert second["status"] == 200, second
    assert second["retried"] is False


def test_oauth4webapi_is_refused_by_an_api_for_another_resource(
    oidc_provider: OIDCProvider,
) -> None:
    app = Starlette(routes=[Route("/items", items)])
    app.add_middleware(
        BearerAuthMiddleware,
        issuer=oidc_provider.issuer,
        audience=oidc_provider.resource("other_jwt"),
    )
    with running_uvicorn(app) as base:
        result = run_client(oidc_provider, oidc_provider.resource("jwt"), "ES256", f"{base}/items")
    (call,) = result["calls"]
    assert call["status"] == 401, call
    # oauth4webapi reads both challenges of the one header, the error on DPoP's.
    bearer, dpop = call["challenges"]
    assert bearer == {"scheme": "bearer", "parameters": {"realm": "api"}}
    assert dpop["scheme"] == "dpop"
    assert dpop["parameters"]["error"] == "invalid_token"
    assert dpop["parameters"]["algs"].split()[0] == "ES256"
