"""A FastAPI API behind Amazon Cognito, configured with one provider preset.

Cognito access tokens carry no ``aud``: the preset accepts the app clients you
name (``client_id``), only access tokens (``token_use``), and reads ``scope``.
Groups (``cognito:groups``) count as scopes here too, so routes can require
either a custom scope or a group::

    COGNITO_REGION=eu-west-1 COGNITO_USER_POOL_ID=eu-west-1_AbC123xyz \
    COGNITO_CLIENT_IDS=7m1234abcdefghijklmnopqrst uvicorn examples.cognito_app:app

Tests play Cognito with ``TestIssuer(issuer=...)`` and pass its transport as
``http_client`` (see tests/test_examples.py).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from fastapi import Depends, FastAPI

from bearerguard import AccessToken, BearerAuthMiddleware, current_token, providers, require_scopes


def create_app(http_client: httpx.AsyncClient | None = None) -> FastAPI:
    app = FastAPI(title="Orders API")
    cognito = providers.cognito(
        region=os.environ.get("COGNITO_REGION", "eu-west-1"),
        user_pool_id=os.environ.get("COGNITO_USER_POOL_ID", "eu-west-1_AbC123xyz"),
        client_ids=os.environ.get("COGNITO_CLIENT_IDS", "7m1234abcdefghijklmnopqrst").split(","),
        scope_claims=("scope", "cognito:groups"),
    )
    app.add_middleware(
        BearerAuthMiddleware, issuers=[cognito], http_client=http_client, exclude_paths=["/health"]
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/orders", dependencies=[Depends(require_scopes("orders/read"))])
    async def orders(token: AccessToken = Depends(current_token)) -> dict[str, Any]:
        return {"user": token.subject, "client": token.client_id, "orders": []}

    @app.delete("/orders/{order_id}", dependencies=[Depends(require_scopes("admin"))])
    async def cancel(order_id: str) -> dict[str, str]:
        return {"cancelled": order_id}

    return app


app = create_app()
