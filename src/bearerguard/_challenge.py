"""Where a failure becomes an HTTP answer: RFC 6750 §3 challenges, with a JSON body alongside."""

from __future__ import annotations

import json
import re

from starlette.responses import Response

from bearerguard._errors import (
    AuthError,
    InsufficientScope,
    InsufficientUserAuthentication,
    RateLimited,
    Unavailable,
)

__all__ = ["Answer", "answer_for", "quote"]

#: RFC 6750 §3: error_description and scope allow %x20-21 / %x23-5B / %x5D-7E only.
_UNSAFE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def quote(value: str) -> str:
    """Make a value safe inside a quoted auth-param (no quote, backslash or control char)."""
    return _UNSAFE.sub("", value)


class Answer:
    """A ready HTTP answer: status, raw ASGI headers and a JSON body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def response(self) -> Response:
        """The same answer as a Starlette response, for code that returns one from a route."""
        response = Response(self.body, status_code=self.status)
        response.raw_headers = list(self.headers)
        return response


def answer_for(
    error: AuthError, realm: str | None, *, resource_metadata: str | None = None
) -> Answer:
    """Build the answer for an error; the only function that writes a challenge.

    ``realm`` is optional in RFC 6750 §3; without one the challenge omits it.
    ``resource_metadata`` (RFC 9728 §5.1) tells the client where to learn which
    authorization server issues tokens for this API; every challenge carries it.
    """
    params = [f'realm="{quote(realm)}"'] if realm else []
    body: dict[str, object] = {}
    if error.error is not None:
        body["error"] = error.error
        if error.description:
            body["error_description"] = error.description
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if isinstance(error, Unavailable | RateLimited):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    if isinstance(error, RateLimited) and error.headers:
        headers += error.headers
    elif isinstance(error, RateLimited):
        headers += [
            (b"ratelimit-limit", str(error.limit).encode()),
            (b"ratelimit-remaining", str(error.remaining).encode()),
            (b"ratelimit-reset", str(error.reset).encode()),
        ]
    if error.status in (401, 403) or (error.status == 400 and error.error is not None):
        if error.error is not None:
            params.append(f'error="{error.error}"')
            if error.description:
                params.append(f'error_description="{quote(error.description)}"')
        if isinstance(error, InsufficientScope):
            scope = quote(" ".join(error.required))
            params.append(f'scope="{scope}"')
            body["scope"] = scope
        elif isinstance(error, InsufficientUserAuthentication):
            # RFC 9470 §3: what a new token must show, so the client can ask for it.
            if error.acr_values:
                acr_values = quote(" ".join(error.acr_values))
                params.append(f'acr_values="{acr_values}"')
                body["acr_values"] = acr_values
            if error.max_age is not None:
                params.append(f'max_age="{error.max_age}"')
                body["max_age"] = error.max_age
        if resource_metadata is not None:
            params.append(f'resource_metadata="{quote(resource_metadata)}"')
        challenge = "Bearer " + ", ".join(params) if params else "Bearer"
        headers.append((b"www-authenticate", challenge.encode()))
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers.append((b"content-length", str(len(payload)).encode()))
    return Answer(error.status, headers, payload)
