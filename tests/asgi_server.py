"""A real uvicorn on 127.0.0.1 for tests that need a socket (TLS, the MCP client).

uvicorn does not fill the ASGI TLS extension (``scope["extensions"]["tls"]``);
:class:`TLSExtensionH11Protocol` adds it from the connection's SSL object, as a
server that implements the extension would, so mutual TLS is tested with a real
handshake rather than a hand-made scope.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["TLSExtensionH11Protocol", "loopback_socket", "running_uvicorn"]


class TLSExtensionH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, reporting the client certificate as the ASGI TLS extension."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        tls = {
            "server_cert": None,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": 0x0304 if ssl_object.version() == "TLSv1.3" else 0x0303,
            "cipher_suite": None,
        }
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
            await inner(scope, receive, send)

        self.app = app


def loopback_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1: its URL is known before the app is built."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running_uvicorn(app: Any, sock: socket.socket | None = None, **config: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``sock`` (else a free loopback port); yields the base URL."""
    sock = sock or loopback_socket()
    port = sock.getsockname()[1]
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "on")
    server = uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    scheme = "https" if config.get("ssl_certfile") else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
