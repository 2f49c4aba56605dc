"""A FastAPI API protected by bearerguard.

Run it against your own issuer:

    BEARERGUARD_ISSUER=https://idp.example.com BEARERGUARD_AUDIENCE=https://api.example.com \
        uvicorn examples.fastapi_app:app

or with the embedded development issuer: ``make demo``.
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI

from bearerguard import AccessToken, BearerAuthMiddleware, current_token, require_scopes
from bearerguard.openapi import docs_paths

app = FastAPI(title="Inventory API")
app.add_middleware(
    BearerAuthMiddleware,
    issuer=os.environ.get("BEARERGUARD_ISSUER", "http://127.0.0.1:9000"),
    audience=os.environ.get("BEARERGUARD_AUDIENCE", "https://api.example.com"),
    exclude_paths=["/health", *docs_paths(app)],  # /docs, /openapi.json, oauth2-redirect
)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items", dependencies=[Depends(require_scopes("read:items"))])
async def list_items(token: AccessToken = Depends(current_token)) -> dict[str, object]:
    return {"owner": token.subject, "items": ["apple", "pear"]}


@app.delete("/items/{name}")
async def delete_item(
    name: str,
    token: AccessToken = Depends(require_scopes("write:items")),
) -> dict[str, object]:
    return {"deleted": name, "by": token.client_id}
