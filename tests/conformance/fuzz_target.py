"""Coverage-guided fuzzing of everything bearerguard reads from outside (atheris, libFuzzer).

Run it with ``make fuzz`` (``FUZZ_SECONDS`` bounds it, 60 by default), which starts
``run_fuzzer.py``; the crashing inputs libFuzzer writes go to ``.fuzz/``.
:func:`one_input` is also what the regression test replays for every input in
``fuzz_crashes/``: a crash found once is copied there and stays a test forever.

The first byte picks a target, the rest is its input:

0. the compact-JWS parser and the strict JSON parser;
1. the whole validator, on the bytes as a token;
2. the claim and header rules, on the bytes as JSON signed with the configured secret,
   so the rules (not the signature) judge them;
3. credential extraction (``Authorization`` header, query string, form body);
4. the middleware's request handling: method, path, query, headers and body of an
   HTTP request, or a WebSocket handshake, through the ASGI interface;
5. JWK Set parsing (what a JWKS endpoint may serve);
6. introspection answers (what an RFC 7662 endpoint may answer).

What counts as a crash: any exception other than bearerguard's own refusals, a
5xx answer, or an ``internal_error`` logged by the validator (a bug it caught).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

from bearerguard import AuthError, BearerAuthMiddleware, InvalidToken, Issuer, TokenValidator
from bearerguard._credentials import find_in_form, find_in_header, find_in_query
from bearerguard._json import loads_bytes, loads_object
from bearerguard._jws import looks_like_jws, parse_jws
from bearerguard._keys import KeySet
from bearerguard.testing import ManualClock

__all__ = ["TARGETS", "one_input"]

NOW = 1_800_000_000.0
ISSUER = "https://issuer.example"
AUDIENCE = "https://api.example"
SECRET = b"fuzzing-secret-" * 4
ALGORITHMS = ("HS256", "RS256", "ES256", "PS256", "EdDSA")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(header: bytes, claims: bytes) -> str:
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    mac = hmac.new(SECRET, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


class _InternalErrors(logging.Handler):
    """Collects what the validator logs when it caught a bug (``internal_error``)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


class _World:
    """What every input is run against, built once: a loop, a validator, two middlewares."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors = _InternalErrors()
        logging.getLogger("bearerguard").addHandler(self.errors)
        hmac_issuer = Issuer(
            ISSUER,
            audience=AUDIENCE,
            algorithms=("HS256",),
            shared_secret=SECRET,
            scope_claims=("scope", "scp", "realm_access.roles"),
            discovery=False,
        )
        self.validator = TokenValidator([hmac_issuer], clock=ManualClock(NOW))
        self.middlewares = [
            BearerAuthMiddleware(_app, validator=self.validator),
            BearerAuthMiddleware(
                _app,
                validator=TokenValidator([hmac_issuer], clock=ManualClock(NOW), cache_size=0),
                token_in_query=True,
                token_in_form=True,
                allow_anonymous=True,
                exclude_paths=("/public*",),
            ),
        ]
        introspecting = TokenValidator(
            [
                Issuer(
                    ISSUER,
                    audience=AUDIENCE,
                    client_id="rs",
                    client_secret="secret",
                    introspection_endpoint="http://127.0.0.1:9/introspect",
                    discovery=False,
                )
            ],
            clock=ManualClock(NOW),
        )
        introspector = introspecting.issuers[ISSUER].introspector
        assert introspector is not None
        self.introspector = introspector

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


_world: _World | None = None


def _get_world() -> _World:
    global _world
    if _world is None:
        _world = _World()
    return _world


def _text(data: bytes) -> str:
    # surrogateescape: undecodable bytes become lone surrogates, which a str can hold.
    return data.decode("utf-8", "surrogateescape")


def _parsers(data: bytes) -> None:
    token = _text(data)
    if looks_like_jws(token):
        for claims in (True, False):
            with contextlib.suppress(InvalidToken):
                parse_jws(token, {}, claims=claims)
    for parse in (loads_bytes, loads_object):
        with contextlib.suppress(ValueError):
            parse(data)


async def _validate(validator: TokenValidator, token: str) -> None:
    with contextlib.suppress(AuthError):
        await validator.validate(token)


def _validator(data: bytes) -> None:
    world = _get_world()
    world.run(_validate(world.validator, _text(data)))


def _rules(data: bytes) -> None:
    header, _, claims = data.partition(b"\x00")
    if not claims:
        header, claims = b'{"alg":"HS256","typ":"at+jwt"}', header
    world = _get_world()
    world.run(_validate(world.validator, _sign(header, claims)))


def _credentials(data: bytes) -> None:
    for find, source in (
        (find_in_header, [(b"authorization", data)]),
        (find_in_header, [(b"authorization", data), (b"authorization", data)]),
        (find_in_query, data),
        (find_in_form, data),
    ):
        try:
            found = find(source, 4096)  # type: ignore[operator]
        except AuthError:
            continue
        assert found is None or isinstance(found, str)


def _request(data: bytes) -> None:
    """An HTTP request (or WebSocket handshake) made of the input's lines."""
    lines = data.split(b"\n")
    first = lines[0] if lines else b""
    choice = first[:1]
    method = first[1:].decode("latin-1") or "GET"
    path = _text(lines[1]) if len(lines) > 1 else "/"
    query = lines[2] if len(lines) > 2 else b""
    headers: list[tuple[bytes, bytes]] = []
    body = b""
    for index, line in enumerate(lines[3:], start=3):
        if not line:
            body = b"\n".join(lines[index + 1 :])
            break
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    world = _get_world()
    middleware = world.middlewares[(choice[0] if choice else 0) % 2]
    kind = "websocket" if choice and choice[0] & 2 else "http"
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https" if kind == "http" else "wss",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("203.0.113.9", 4711),
        "server": ("api.example", 443),
    }
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]
    if kind == "websocket":
        chunks = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    world.run(middleware(scope, receive, send))
    for message in sent:
        status = message.get("status")
        if message["type"] in ("http.response.start", "websocket.http.response.start"):
            assert isinstance(status, int) and status < 500, (status, scope, body)


def _jwks(data: bytes) -> None:
    try:
        document = loads_bytes(data)
    except ValueError:
        return
    # ValueError: not a JWK Set at all (a fetch then keeps the last good keys).
    with contextlib.suppress(ValueError):
        KeySet.from_jwks(document, issuer=ISSUER, algorithms=ALGORITHMS)


def _introspection(data: bytes) -> None:
    try:
        document = loads_bytes(data)
    except ValueError:
        return
    if not isinstance(document, dict):
        return
    introspector = _get_world().introspector
    try:
        introspector.judge(document, NOW)
        introspector.access_token(document, "00")
    except InvalidToken:
        pass


TARGETS: tuple[Callable[[bytes], None], ...] = (
    _parsers,
    _validator,
    _rules,
    _credentials,
    _request,
    _jwks,
    _introspection,
)


def one_input(data: bytes) -> None:
    """One fuzzing input: the first byte picks the target, the rest is its input."""
    if not data:
        return
    world = _get_world()
    world.errors.seen.clear()
    TARGETS[data[0] % len(TARGETS)](data[1:])
    assert not world.errors.seen, world.errors.seen
