"""The ASGI apps wrk hits, chosen and configured by environment variables (uvicorn imports ``app``).

``BENCH_APP``: ``plain`` (Starlette, no auth: the baseline), ``plain_fastapi``,
``bearerguard`` (Starlette + BearerAuthMiddleware), ``bearerguard_fastapi``,
``authlib`` (FastAPI + authlib's RFC 9068 ``JWTBearerTokenValidator``) or
``pyjwkclient`` (FastAPI + the PyJWKClient dependency tutorials show).
``BENCH_ISSUER`` / ``BENCH_AUDIENCE`` / ``BENCH_JWKS_URI`` name the issuer;
``BENCH_CACHE`` (``on``/``off``), ``BENCH_RATE_LIMIT``, ``BENCH_RATE_LIMIT_STORAGE``
and ``BENCH_RATE_LIMIT_STRATEGY`` configure bearerguard; ``BENCH_GC_FREEZE=1`` calls
``gc.freeze()`` after import (an experiment switch, off in the suite). Every app
answers ``GET /items`` with the same small JSON body.
"""

from __future__ import annotations

import inspect
import json
import os
import urllib.request
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BODY = {"items": [], "ok": True}


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"benchmarks.apps needs {name} in the environment")
    return value


async def items(request: Request) -> Response:
    return JSONResponse(BODY)


def bearerguard_kwargs() -> dict[str, Any]:
    """BearerAuthMiddleware keywords from the environment (cache and rate limit included)."""
    from bearerguard import BearerAuthMiddleware

    params = inspect.signature(BearerAuthMiddleware.__init__).parameters
    kwargs: dict[str, Any] = {
        "issuer": _env("BENCH_ISSUER"),
        "audience": _env("BENCH_AUDIENCE"),
        "jwks_uri": _env("BENCH_JWKS_URI"),
    }
    cache = os.environ.get("BENCH_CACHE", "on")
    if cache == "off":
        for name in ("cache_size", "cache_maxsize", "cache_max_entries"):
            if name in params:
                kwargs[name] = 0
                break
        else:
            # The middleware has no cache keyword: hand it a validator built with the cache off.
            kwargs = {"validator": _validator_without_cache()}
    limit = os.environ.get("BENCH_RATE_LIMIT")
    if limit:
        kwargs["rate_limit"] = limit
        kwargs["rate_limit_storage"] = os.environ.get("BENCH_RATE_LIMIT_STORAGE", "memory://")
        strategy = os.environ.get("BENCH_RATE_LIMIT_STRATEGY")
        if strategy:
            kwargs["rate_limit_strategy"] = strategy
    return kwargs


def _validator_without_cache() -> Any:
    from bearerguard import Issuer, TokenValidator

    params = inspect.signature(TokenValidator.__init__).parameters
    if "cache_size" not in params:
        raise RuntimeError("TokenValidator has no cache_size: the cache cannot be turned off")
    issuer = Issuer(
        issuer=_env("BENCH_ISSUER"),
        audience=_env("BENCH_AUDIENCE"),
        jwks_uri=_env("BENCH_JWKS_URI"),
    )
    return TokenValidator([issuer], cache_size=0)


def plain_app() -> Starlette:
    return Starlette(routes=[Route("/items", items)])


def bearerguard_app() -> Starlette:
    from bearerguard import BearerAuthMiddleware

    return Starlette(
        routes=[Route("/items", items)],
        middleware=[Middleware(BearerAuthMiddleware, **bearerguard_kwargs())],
    )


def fastapi_app(kind: str) -> Any:
    from fastapi import FastAPI

    if kind == "plain_fastapi":
        app = FastAPI()

        @app.get("/items")
        async def plain_items() -> dict[str, Any]:
            return BODY

        return app
    if kind == "bearerguard_fastapi":
        from bearerguard import BearerAuthMiddleware

        app = FastAPI()
        app.add_middleware(BearerAuthMiddleware, **bearerguard_kwargs())

        @app.get("/items")
        async def guarded_items() -> dict[str, Any]:
            return BODY

        return app
    if kind == "authlib":
        return authlib_app()
    if kind == "pyjwkclient":
        return pyjwkclient_app()
    raise RuntimeError(f"unknown BENCH_APP {kind!r}")


def authlib_app() -> Any:
    """FastAPI + authlib's RFC 9068 validator, its JWKS imported once (the peer at its best)."""
    from authlib.oauth2 import OAuth2Error
    from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from joserfc.jwk import KeySet

    with urllib.request.urlopen(_env("BENCH_JWKS_URI"), timeout=10) as answer:  # loopback only
        keyset = KeySet.import_key_set(json.loads(answer.read()))

    class Validator(JWTBearerTokenValidator):  # type: ignore[misc]
        def get_jwks(self) -> Any:
            return keyset

    validator = Validator(issuer=_env("BENCH_ISSUER"), resource_server=_env("BENCH_AUDIENCE"))
    bearer = HTTPBearer()

    async def require_token(credentials: HTTPAuthorizationCredentials = Depends(bearer)) -> Any:
        try:
            claims = validator.authenticate_token(credentials.credentials)
            validator.validate_token(claims, scopes=None, request=None)
        except OAuth2Error as exc:
            raise HTTPException(status_code=401, detail="invalid_token") from exc
        return claims

    app = FastAPI()

    @app.get("/items")
    async def authlib_items(claims: Any = Depends(require_token)) -> dict[str, Any]:
        return BODY

    return app


def pyjwkclient_app() -> Any:
    """FastAPI + the PyJWKClient dependency from the common Auth0-style tutorials."""
    import jwt
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    issuer, audience = _env("BENCH_ISSUER"), _env("BENCH_AUDIENCE")
    jwks_client = jwt.PyJWKClient(_env("BENCH_JWKS_URI"))
    bearer = HTTPBearer()

    async def verify(token: HTTPAuthorizationCredentials = Depends(bearer)) -> Any:
        try:
            signing_key = jwks_client.get_signing_key_from_jwt(token.credentials).key
            return jwt.decode(
                token.credentials,
                signing_key,
                algorithms=["RS256"],
                audience=audience,
                issuer=issuer,
            )
        except (jwt.exceptions.PyJWKClientError, jwt.exceptions.InvalidTokenError) as exc:
            raise HTTPException(status_code=401, detail=str(exc)) from exc

    app = FastAPI()

    @app.get("/items")
    async def pyjwk_items(payload: Any = Depends(verify)) -> dict[str, Any]:
        return BODY

    return app


def introspection_app() -> Starlette:
    """A fast RFC 7662 endpoint for the in-process introspection figures: every token active."""
    import time
    import urllib.parse

    issuer, audience = _env("BENCH_ISSUER"), _env("BENCH_AUDIENCE")

    async def introspect(request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode("ascii", "replace"))
        if not form.get("token"):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        now = int(time.time())
        return JSONResponse({
            "active": True, "iss": issuer, "aud": audience, "iat": now, "exp": now + 3600,
            "scope": "read:items write:items", "client_id": "bench-client", "sub": "bench-user",
            "token_type": "Bearer",
        })  # fmt: skip

    return Starlette(routes=[Route("/introspect", introspect, methods=["POST"])])


def build() -> Any:
    kind = os.environ.get("BENCH_APP", "plain")
    if kind == "plain":
        return plain_app()
    if kind == "introspection":
        return introspection_app()
    if kind == "bearerguard":
        return bearerguard_app()
    return fastapi_app(kind)


app = build()

if os.environ.get("BENCH_GC_FREEZE") == "1":
    # Experiment switch: move everything alive after import out of the collector's sight,
    # as a server could do once at startup (gc.freeze).
    import gc

    gc.collect()
    gc.freeze()
