"""Protected resource metadata (RFC 9728): how a client learns where to get a token for us.

A client that meets a 401 follows the challenge's ``resource_metadata`` URL (RFC 9728
§5.1) to a JSON document naming this API's resource identifier, the authorization
servers that issue tokens for it and the scopes it knows; MCP clients start every
authorization this way. The document lives at the resource's well-known URL
(§3.1): ``/.well-known/oauth-protected-resource`` inserted between the host and the
resource's path. For a resource with a path the bare well-known path is served too,
as clients fall back to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bearerguard._urls import check_url

__all__ = ["WELL_KNOWN", "ResourceMetadata"]

WELL_KNOWN = "/.well-known/oauth-protected-resource"
#: Members bearerguard writes itself; ``extra`` may not replace them.
_OWN = frozenset(
    {
        "resource",
        "authorization_servers",
        "scopes_supported",
        "bearer_methods_supported",
        "resource_name",
        "resource_documentation",
        "resource_policy_uri",
        "resource_tos_uri",
        "tls_client_certificate_bound_access_tokens",
        "dpop_signing_alg_values_supported",
        "dpop_bound_access_tokens_required",
    }
)
_BEARER_METHODS = frozenset({"header", "body", "query"})


def _url(name: str, value: str) -> None:
    try:
        check_url(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {value!r}: {exc}") from None
    if urlsplit(value).fragment or "#" in value:
        raise ValueError(f"{name}: {value!r} must not have a fragment")


@dataclass(frozen=True, slots=True)
class ResourceMetadata:
    """What :class:`~bearerguard.BearerAuthMiddleware` publishes about this API (RFC 9728 §2).

    ``resource`` is the API's identifier: the https URL clients call, and the audience
    its tokens should carry (RFC 8707). ``scopes_supported=None`` publishes the scopes
    the application's routes require (``require_scopes`` and ``scopes_required``);
    ``bearer_methods_supported=None`` the token locations the middleware accepts;
    ``tls_client_certificate_bound_access_tokens=None`` whether a proxy forwards client
    certificates (``client_cert_header``); the DPoP members follow the middleware's
    ``dpop`` settings. ``extra`` adds other registered members.
    """

    resource: str
    authorization_servers: Sequence[str] = ()
    scopes_supported: Sequence[str] | None = None
    bearer_methods_supported: Sequence[str] | None = None
    resource_name: str | None = None
    resource_documentation: str | None = None
    resource_policy_uri: str | None = None
    resource_tos_uri: str | None = None
    tls_client_certificate_bound_access_tokens: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: How long clients and caches may keep the document (``Cache-Control: max-age``).
    max_age: int = 3600

    def __post_init__(self) -> None:
        _url("resource", self.resource)
        if urlsplit(self.resource).query:
            # §3.1 builds the well-known URL from the path; a query has no place in it.
            raise ValueError(f"resource: {self.resource!r} must not have a query")
        if isinstance(self.authorization_servers, str):
            raise TypeError("authorization_servers takes a list of issuer URLs")
        for server in self.authorization_servers:
            _url("authorization_servers", server)
        for name in ("resource_documentation", "resource_policy_uri", "resource_tos_uri"):
            value = getattr(self, name)
            if value is not None:
                _url(name, value)
        if isinstance(self.scopes_supported, str):
            raise TypeError("scopes_supported takes a list of scopes")
        methods = self.bearer_methods_supported
        if methods is not None and (isinstance(methods, str) or set(methods) - _BEARER_METHODS):
            raise ValueError(f"bearer_methods_supported: a list of {sorted(_BEARER_METHODS)}")
        clash = sorted(_OWN & set(self.extra))
        if clash:
            raise ValueError(f"extra may not set {clash}: they are ResourceMetadata fields")
        if type(self.max_age) is not int or self.max_age < 0:
            raise ValueError("max_age must be a whole number of seconds, 0 or more")
        for name in ("authorization_servers", "scopes_supported", "bearer_methods_supported"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "extra", dict(self.extra))
        json.dumps(self.extra)  # a member that cannot be sent is a startup error

    @property
    def url(self) -> str:
        """Where the document is published: the URL every challenge names (§3.1, §5.1)."""
        parts = urlsplit(self.resource)
        path = parts.path if parts.path != "/" else ""
        return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{path}"

    @property
    def paths(self) -> frozenset[str]:
        """The request paths the document is served at: the resource's, and the bare one."""
        return frozenset({urlsplit(self.url).path, WELL_KNOWN})

    def document(
        self,
        *,
        scopes: Sequence[str],
        bearer_methods: Sequence[str],
        certificates: bool,
        dpop_algorithms: Sequence[str] = (),
        dpop_required: bool = False,
    ) -> dict[str, Any]:
        """The JSON document, with the middleware's answers where a field was left ``None``.

        The DPoP members (RFC 9728 §2, RFC 9449) come from the middleware's ``dpop``
        settings alone, so the document cannot promise what the API does not check.
        """
        document: dict[str, Any] = {"resource": self.resource}
        if self.authorization_servers:
            document["authorization_servers"] = list(self.authorization_servers)
        scopes_supported = self.scopes_supported if self.scopes_supported is not None else scopes
        if scopes_supported:
            document["scopes_supported"] = list(scopes_supported)
        methods = self.bearer_methods_supported
        document["bearer_methods_supported"] = list(bearer_methods if methods is None else methods)
        for name in (
            "resource_name",
            "resource_documentation",
            "resource_policy_uri",
            "resource_tos_uri",
        ):
            value = getattr(self, name)
            if value is not None:
                document[name] = value
        bound = self.tls_client_certificate_bound_access_tokens
        if certificates if bound is None else bound:
            document["tls_client_certificate_bound_access_tokens"] = True
        if dpop_algorithms:
            document["dpop_signing_alg_values_supported"] = list(dpop_algorithms)
        if dpop_required:
            document["dpop_bound_access_tokens_required"] = True
        document.update(self.extra)
        return document
