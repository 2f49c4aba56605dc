"""OAuth2 flows in a FastAPI app's OpenAPI document, taken from the issuer's metadata.

Every route guarded by ``Depends(require_scopes(...))`` already carries an HTTP
bearer requirement with its scopes (FastAPI derives it from the dependency), so
``/docs`` shows the lock and the "Authorize" button takes a pasted token with no
extra code. :func:`install` adds what FastAPI cannot know at import time: an
``oauth2`` scheme whose flows (``clientCredentials``, ``authorizationCode``) come
from the authorization server's RFC 8414 / OIDC metadata, offered next to the
bearer scheme on every guarded route, so Swagger UI can fetch a token itself::

    app.add_middleware(BearerAuthMiddleware, issuer=..., audience=...,
                       exclude_paths=["/health", *docs_paths(app)])
    bearerguard.openapi.install(app, client_id="swagger-ui")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bearerguard._dependencies import SCHEME_NAME
from bearerguard._middleware import BearerAuthMiddleware
from bearerguard._urls import check_url

__all__ = ["OAUTH2_SCHEME_NAME", "docs_paths", "install", "oauth2_flows"]

#: The name of the OAuth2 scheme :func:`install` adds (``-2``, ``-3`` ... for further issuers).
OAUTH2_SCHEME_NAME = "OAuth2"

#: How far down the middleware stack to look for bearerguard's middleware.
_MAX_DEPTH = 64


def docs_paths(app: Any) -> list[str]:
    """The paths FastAPI serves its documentation on, for ``exclude_paths``.

    The docs pages and the OpenAPI document are public; the API calls made from
    Swagger UI carry the token.
    """
    paths = [
        getattr(app, "openapi_url", None),
        getattr(app, "docs_url", None),
        getattr(app, "swagger_ui_oauth2_redirect_url", None)
        if getattr(app, "docs_url", None)
        else None,
        getattr(app, "redoc_url", None),
    ]
    return [p for p in paths if isinstance(p, str) and p]


def oauth2_flows(
    metadata: Mapping[str, Any],
    scopes: Mapping[str, str],
    *,
    token_url: str | None = None,
    authorization_url: str | None = None,
    refresh_url: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI ``flows`` object for an authorization server, ``{}`` when none can be offered.

    Only the flows current practice keeps (RFC 9700 retires implicit and password):
    ``clientCredentials`` needs a token endpoint, ``authorizationCode`` an
    authorization endpoint too, and both must be in ``grant_types_supported``
    (RFC 8414 §2: when absent, it means authorization_code and implicit).
    Explicit URLs win over the metadata and offer their flow whatever it says.
    """
    token = token_url or _url(metadata.get("token_endpoint"))
    authorize = authorization_url or _url(metadata.get("authorization_endpoint"))
    grants = metadata.get("grant_types_supported")
    if not isinstance(grants, list):
        grants = ["authorization_code", "implicit"]
    scope_map = dict(scopes)
    common: dict[str, Any] = {"scopes": scope_map}
    if refresh_url:
        common["refreshUrl"] = refresh_url
    flows: dict[str, Any] = {}
    if token and (token_url or "client_credentials" in grants):
        flows["clientCredentials"] = {"tokenUrl": token, **common}
    if token and authorize and (authorization_url or "authorization_code" in grants):
        flows["authorizationCode"] = {
            "authorizationUrl": authorize,
            "tokenUrl": token,
            **common,
        }
    return flows


def install(
    app: Any,
    *,
    token_url: str | None = None,
    authorization_url: str | None = None,
    refresh_url: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    scopes: Mapping[str, str] | None = None,
    client_id: str | None = None,
) -> None:
    """Add the issuer's OAuth2 flows to ``app``'s OpenAPI document (FastAPI apps).

    The metadata is the one bearerguard's middleware discovered (or ``metadata``,
    given explicitly); until it is known the document carries only the bearer
    scheme and is not cached, so the flows appear once discovery has answered.
    ``scopes`` describes scopes (``{"read:items": "Read the inventory"}``);
    every scope a route requires is listed either way. ``client_id`` pre-fills
    Swagger UI's dialog and turns on PKCE for the authorization code flow.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi
    descriptions = dict(scopes or {})
    if client_id is not None and getattr(app, "swagger_ui_init_oauth", None) is None:
        app.swagger_ui_init_oauth = {
            "clientId": client_id,
            "usePkceWithAuthorizationCodeGrant": True,
        }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            cached: dict[str, Any] = app.openapi_schema
            return cached
        schema = generate()
        documents = [metadata] if metadata is not None else _discovered(app)
        if documents is None:  # discovery has not answered yet: try again next time
            app.openapi_schema = None
            documents = [{}]
        _add_oauth2(
            schema,
            documents,
            descriptions,
            token_url=token_url,
            authorization_url=authorization_url,
            refresh_url=refresh_url,
        )
        return schema

    app.openapi = openapi


def _add_oauth2(
    schema: dict[str, Any],
    documents: list[Mapping[str, Any]],
    descriptions: Mapping[str, str],
    **urls: str | None,
) -> None:
    operations = list(_operations(schema))
    used: dict[str, str] = {}
    for op in operations:
        for requirement in op.get("security", ()):
            for scope in requirement.get(SCHEME_NAME, ()):
                used.setdefault(scope, descriptions.get(scope, ""))
    scope_map = {**used, **descriptions}
    names: list[str] = []
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    for document in documents:
        flows = oauth2_flows(document, scope_map, **urls)
        if not flows:
            continue
        name = OAUTH2_SCHEME_NAME if not names else f"{OAUTH2_SCHEME_NAME}-{len(names) + 1}"
        names.append(name)
        issuer = document.get("issuer")
        schemes[name] = {
            "type": "oauth2",
            "description": f"Tokens from {issuer}" if isinstance(issuer, str) else "OAuth 2.0",
            "flows": flows,
        }
    if not names:
        return
    for op in operations:
        security = op.get("security")
        if not security:
            continue
        for requirement in list(security):
            if SCHEME_NAME in requirement:
                security.extend({name: list(requirement[SCHEME_NAME])} for name in names)


def _operations(schema: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for item in (schema.get("paths") or {}).values():
        for op in item.values():
            if isinstance(op, dict):
                yield op


def _discovered(app: Any) -> list[Mapping[str, Any]] | None:
    """Each issuer's metadata document from the running middleware; ``None`` while unknown."""
    middleware = _find_middleware(getattr(app, "middleware_stack", None))
    if middleware is None:
        return None
    documents: list[Mapping[str, Any]] = []
    validator = middleware.validator
    for config in validator.configs:
        cached = validator.issuer_metadata(config.issuer)
        if cached is None:
            return None
        documents.append(cached.raw)
    return documents


def _find_middleware(node: Any) -> BearerAuthMiddleware | None:
    for _ in range(_MAX_DEPTH):
        if node is None or isinstance(node, BearerAuthMiddleware):
            return node
        node = getattr(node, "app", None)
    return None


def _url(value: Any) -> str | None:
    """A metadata URL Swagger UI may be sent to: https, or http on loopback."""
    if not isinstance(value, str):
        return None
    try:
        check_url(value)
    except ValueError:
        return None
    return value
