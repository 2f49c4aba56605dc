"""Where a failure becomes an HTTP answer: RFC 6750 §3 challenges, with a JSON body alongside."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from starlette.responses import Response

from bearerguard._errors import (
    AuthError,
    InsufficientScope,
    InsufficientUserAuthentication,
    RateLimited,
    Unavailable,
    UseDPoPNonce,
)

__all__ = ["BEARER_ONLY", "Answer", "Schemes", "answer_for", "quote"]

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


@dataclass(frozen=True, slots=True)
class Schemes:
    """The authentication schemes a refusal offers, one challenge each in one header.

    RFC 9110 §11.6.1 lets one ``WWW-Authenticate`` list several challenges; RFC 9449
    §7.2 asks a resource server that takes both ``Bearer`` and ``DPoP`` tokens to
    offer both. ``dpop_algs`` (space-separated) turns the DPoP challenge on.
    """

    bearer: bool = True
    dpop_algs: str | None = None


#: What a plain bearer API offers (and what helpers outside a middleware answer with).
BEARER_ONLY = Schemes()


def answer_for(
    error: AuthError,
    realm: str | None,
    schemes: Schemes = BEARER_ONLY,
    *,
    used: str = "Bearer",
    resource_metadata: str | None = None,
) -> Answer:
    """Build the answer for an error; the only function that writes a challenge.

    ``realm`` is optional in RFC 6750 §3; without one the challenge omits it. The
    error goes on the challenge of the scheme it belongs to (``error.scheme``, else
    the scheme the request ``used``); the other scheme's challenge says only that
    it is offered, so a client never reads one scheme's error as the other's.
    ``resource_metadata`` (RFC 9728 §5.1) tells the client where to learn which
    authorization server issues tokens for this API; every challenge carries it.
    """
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
    if isinstance(error, UseDPoPNonce):
        headers.append((b"dpop-nonce", error.nonce.encode()))
    if error.status in (401, 403) or (error.status == 400 and error.error is not None):
        offered = (["Bearer"] if schemes.bearer else []) + (["DPoP"] if schemes.dpop_algs else [])
        target = error.scheme or used
        if target not in offered:
            target = offered[0] if offered else "Bearer"
        challenges = []
        for name in offered or ["Bearer"]:
            params = [f'realm="{quote(realm)}"'] if realm else []
            if name == target and error.error is not None:
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
            if name == "DPoP":
                params.append(f'algs="{schemes.dpop_algs}"')
            if resource_metadata is not None:
                params.append(f'resource_metadata="{quote(resource_metadata)}"')
            challenges.append(f"{name} " + ", ".join(params) if params else name)
        headers.append((b"www-authenticate", ", ".join(challenges).encode()))
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers.append((b"content-length", str(len(payload)).encode()))
    return Answer(error.status, headers, payload)
