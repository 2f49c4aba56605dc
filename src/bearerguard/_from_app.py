"""The configuration of a user's own application, for ``bearerguard inspect --app module:attr``.

``inspect`` must explain what the API does, not what its options on the command
line say it does: so the issuers are taken from the application's own
:class:`~bearerguard.BearerAuthMiddleware`, built exactly as the application
builds it (provider presets, ``issuers=[...]`` or the ``issuer=...`` shorthand
alike). Only this module knows where a middleware hides in an application; the
CLI just receives the issuer list.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import httpx

from bearerguard._config import Issuer
from bearerguard._middleware import BearerAuthMiddleware
from bearerguard._validator import TokenValidator

__all__ = ["AppConfig", "config_from_app"]

#: How deep to follow ``.app`` through wrapping middleware (CORS, GZip, ...).
_MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class AppConfig:
    """What ``inspect`` needs from an application: its issuers and how it fetches and limits."""

    issuers: tuple[Issuer, ...]
    max_token_length: int
    #: The application's own HTTP client, when it configured one (``http_client=``).
    http_client: httpx.AsyncClient | None
    validator: TokenValidator

    def issuer_for(self, token: str) -> Issuer:
        """The issuer the application's validator picks for this token (by its ``iss``).

        When none would, the first one: its diagnosis then shows how ``iss`` differs.
        """
        return self.validator.judging_issuer(token) or self.issuers[0]


def config_from_app(spec: str) -> AppConfig:
    """Import ``module:attr`` (as uvicorn does) and read its bearerguard middleware.

    Raises ``ValueError`` with a message for people when the spec cannot be
    imported or the application holds no :class:`BearerAuthMiddleware`.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--app takes module:attribute (like uvicorn), not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn does: the app lives beside the caller
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--app: cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"--app: {module_name!r} has no attribute {attr!r}") from None
    middleware = _find(target)
    if middleware is None:
        raise ValueError(f"--app: {spec} has no BearerAuthMiddleware (add_middleware or wrapped)")
    validator = middleware.validator
    return AppConfig(
        issuers=validator.configs,
        max_token_length=validator.max_token_length,
        http_client=validator.given_client,
        validator=validator,
    )


def _find(app: Any) -> BearerAuthMiddleware | None:
    """The middleware instance around ``app``, or one built from its declared middleware.

    A Starlette or FastAPI application declares middleware (``user_middleware``)
    and builds it on first use; building one here runs the very code the
    application runs (and no request is made: keys are fetched on first use).
    """
    seen = app
    for _ in range(_MAX_DEPTH):
        if isinstance(seen, BearerAuthMiddleware):
            return seen
        declared = getattr(seen, "user_middleware", None)
        for entry in declared or ():
            if isinstance(entry.cls, type) and issubclass(entry.cls, BearerAuthMiddleware):
                built: BearerAuthMiddleware = entry.cls(_no_app, *entry.args, **entry.kwargs)
                return built
        seen = getattr(seen, "app", None)
        if seen is None:
            return None
    return None


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    """The inner application of a middleware built only to be read."""
