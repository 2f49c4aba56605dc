"""An MCP server (the ``mcp`` package's streamable HTTP app) protected by bearerguard.

The MCP authorization specification makes an MCP server an OAuth 2.1 resource
server: it publishes RFC 9728 protected resource metadata naming its authorization
server, every 401 points there (``resource_metadata`` in the challenge), and it
accepts only tokens issued for itself, the audience being the server's own URL
(RFC 8707). bearerguard does those three; the MCP SDK speaks the protocol. An MCP
client then finds its way alone: 401, metadata, authorization server, a token for
this resource, the call.

Run it (``pip install mcp uvicorn``) with the public URL of the MCP endpoint::

    BEARERGUARD_ISSUER=https://idp.example.com MCP_RESOURCE=https://mcp.example.com/mcp \\
        uvicorn examples.mcp_server:app
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from mcp.server.mcpserver import Context, MCPServer
from starlette.applications import Starlette

from bearerguard import BearerAuthMiddleware, ResourceMetadata, token_of


def create_app(issuer: str, resource: str) -> Starlette:
    """The MCP endpoint at ``resource``'s path, for tokens ``issuer`` minted for ``resource``."""
    mcp = MCPServer("bearerguard-example")

    @mcp.tool()
    async def whoami(ctx: Context) -> dict[str, Any]:
        """Who the access token says is calling (the middleware validated it already)."""
        token = token_of(ctx.request_context.request)
        assert token is not None  # the middleware lets no request through without one
        return {"subject": token.subject, "client_id": token.client_id}

    @mcp.tool()
    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    parts = urlsplit(resource)
    app = mcp.streamable_http_app(
        streamable_http_path=parts.path or "/",
        # The SDK's DNS-rebinding protection is on for a loopback host, off otherwise.
        host=parts.hostname or "127.0.0.1",
    )
    app.add_middleware(
        BearerAuthMiddleware,
        issuer=issuer,
        audience=resource,  # tokens minted for another resource (RFC 8707) are refused
        resource_metadata=ResourceMetadata(resource=resource, authorization_servers=[issuer]),
    )
    return app


app = create_app(
    os.environ.get("BEARERGUARD_ISSUER", "https://idp.example.com"),
    os.environ.get("MCP_RESOURCE", "http://127.0.0.1:8000/mcp"),
)
