"""examples/mcp_server.py, driven by the ``mcp`` package's own client over a real uvicorn.

The MCP authorization flow end to end: the client's first request is refused with
a challenge naming the RFC 9728 metadata; it reads the metadata, discovers the
authorization server (a TestIssuer that grants client credentials), asks for a
token for this resource (RFC 8707 ``resource``), and calls tools with it. A token
minted for another resource is refused.
"""

from __future__ import annotations

import importlib
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed

from asgi_server import loopback_socket, running_uvicorn
from bearerguard.testing import TestIssuer

ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID, CLIENT_SECRET = "mcp-client", "mcp-client-secret"


@dataclass
class Running:
    issuer: TestIssuer
    url: str  # the MCP endpoint, which is also the resource identifier


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    sys.path.insert(0, str(ROOT))
    try:
        example = importlib.import_module("examples.mcp_server")
    finally:
        sys.path.remove(str(ROOT))
    with TestIssuer() as issuer:
        issuer.add_client(CLIENT_ID, CLIENT_SECRET)
        # The SDK's model of authorization server metadata requires an authorization
        # endpoint, though a client-credentials client never calls it.
        issuer.serve_metadata(
            {**issuer.metadata(), "authorization_endpoint": issuer.url("/authorize")}
        )
        sock: socket.socket = loopback_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        with running_uvicorn(example.create_app(issuer.issuer, url), sock):
            yield Running(issuer, url)


class MemoryTokens:
    """The client's token storage (the SDK's TokenStorage protocol), in memory."""

    def __init__(self) -> None:
        self.tokens: Any = None
        self.client: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client

    async def set_client_info(self, client_info: Any) -> None:
        self.client = client_info


async def _session_calls(running: Running) -> dict[str, Any]:
    provider = ClientCredentialsOAuthProvider(
        server_url=running.url,
        storage=MemoryTokens(),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        issuer=running.issuer.issuer,
    )
    async with (
        create_mcp_http_client(auth=provider) as http,
        streamable_http_client(running.url, http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        added = await session.call_tool("add", {"a": 2, "b": 3})
        whoami = await session.call_tool("whoami", {})
    return {
        "tools": sorted(tool.name for tool in tools.tools),
        "add": added.structured_content,
        "whoami": whoami.structured_content,
    }


def test_mcp_client_discovers_the_authorization_server_and_calls_tools(server: Running) -> None:
    server.issuer.reset_counters()
    result = anyio.run(_session_calls, server)
    assert result["tools"] == ["add", "whoami"]
    assert result["add"] == {"result": 5}
    assert result["whoami"] == {"subject": CLIENT_ID, "client_id": CLIENT_ID}
    # The client found the token endpoint through the metadata and asked for a token
    # for this MCP server (RFC 8707), which the server's audience check then required.
    (token_request,) = [r for r in server.issuer.received if r.path == server.issuer.token_path]
    form = parse_qs(token_request.body.decode())
    assert form["grant_type"] == ["client_credentials"]
    assert form["resource"] == [server.url]


def test_first_request_is_refused_with_a_challenge_naming_the_resource_metadata(
    server: Running,
) -> None:
    response = httpx.post(server.url, json=_initialize(), headers=_mcp_headers())
    assert response.status_code == 401
    metadata_url = server.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert f'resource_metadata="{metadata_url}"' in response.headers["www-authenticate"]
    document = httpx.get(metadata_url).json()
    parsed = ProtectedResourceMetadata.model_validate(document)
    assert str(parsed.authorization_servers[0]).rstrip("/") == server.issuer.issuer
    # RFC 9728 §3.3 as the SDK checks it: the metadata is for the URL the client called.
    assert check_resource_allowed(server.url, str(parsed.resource))


def test_token_minted_for_another_resource_is_refused(server: Running) -> None:
    token = server.issuer.mint(audience="https://another-mcp-server.example.com/mcp")
    headers = {**_mcp_headers(), "Authorization": f"Bearer {token}"}
    response = httpx.post(server.url, json=_initialize(), headers=headers)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    good = server.issuer.mint(audience=server.url)
    headers["Authorization"] = f"Bearer {good}"
    accepted = httpx.post(server.url, json=_initialize(), headers=headers)
    assert accepted.status_code == 200, accepted.text


def _initialize() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw-http", "version": "0"},
        },
    }


def _mcp_headers() -> dict[str, str]:
    return {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
