"""A plain Starlette API: bearerguard fills ``request.auth`` so ``@requires`` works unchanged.

    BEARERGUARD_ISSUER=https://idp.example.com BEARERGUARD_AUDIENCE=https://api.example.com \
        uvicorn examples.starlette_app:app
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bearerguard import BearerAuthMiddleware, scopes_required


@requires("read:items")
async def list_items(request: Request) -> JSONResponse:
    return JSONResponse({"owner": request.user.display_name, "scopes": request.auth.scopes})


@scopes_required("write:items")  # like @requires, but answers 403 with an RFC 6750 challenge
async def add_item(request: Request) -> JSONResponse:
    return JSONResponse({"created": True}, status_code=201)


app = Starlette(
    routes=[Route("/items", list_items), Route("/items", add_item, methods=["POST"])],
    middleware=[
        Middleware(
            BearerAuthMiddleware,
            issuer=os.environ.get("BEARERGUARD_ISSUER", "http://127.0.0.1:9000"),
            audience=os.environ.get("BEARERGUARD_AUDIENCE", "https://api.example.com"),
        )
    ],
)
