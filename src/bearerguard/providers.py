"""One line per identity provider: an :class:`~bearerguard.Issuer` that knows its tokens.

Each preset returns a plain :class:`~bearerguard.Issuer` built from the provider's
own documentation: its real issuer string, where its discovery document and keys
live, which claim names the client, which claims carry scopes, roles or
permissions (all counted as scopes, so ``require_scopes`` works unchanged), and
what tells its access tokens from its look-alikes (ID tokens, other tenants,
other APIs). Any :class:`~bearerguard.Issuer` field may be passed as a keyword
to override the preset's value; ``required_claims`` and ``expected_claims`` are
*added* to the preset's own (naming a claim the preset expects replaces that one
check), so an override never silently drops a look-alike check::

    from bearerguard import BearerAuthMiddleware, providers

    app.add_middleware(BearerAuthMiddleware, issuers=[
        providers.cognito(region="eu-west-1", user_pool_id="eu-west-1_AbC", client_ids=["app1"]),
    ])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Unpack

from bearerguard._config import Expected, Issuer, IssuerOptions

__all__ = ["auth0", "cognito", "entra", "firebase", "keycloak", "okta"]

#: Entra ID tenant ids are GUIDs, written in lower case in ``iss`` and ``tid``.
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?")
#: https://login.microsoftonline.com, the public cloud; sovereign clouds override ``issuer``.
_ENTRA = "https://login.microsoftonline.com"
#: Firebase ID tokens are verified with Google's ``securetoken`` keys (RS256 only).
FIREBASE_JWKS_URI = (
    "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"
)


def _build(preset: dict[str, Any], overrides: Mapping[str, Any]) -> Issuer:
    """The preset with the caller's fields over it; claim checks are added to, not replaced.

    The presets name the provider's own parameters (``audience``, ``tenants``,
    ``client_ids``) and take every other :class:`Issuer` field as typed keywords;
    mypy flags that overlap (``[misc]``), which is on purpose: the named one wins.
    """
    fields = {**preset, **overrides}
    if "required_claims" in overrides:
        fields["required_claims"] = tuple(
            dict.fromkeys([*preset.get("required_claims", ()), *overrides["required_claims"]])
        )
    if "expected_claims" in overrides:
        fields["expected_claims"] = {
            **preset.get("expected_claims", {}),
            **overrides["expected_claims"],
        }
    return Issuer(**fields)


def _host(value: str, name: str) -> str:
    """A bare host name (``dev-abc.us.auth0.com``): the preset writes the URL around it."""
    host = value.removeprefix("https://").rstrip("/") if isinstance(value, str) else ""
    if not _HOST.fullmatch(host):
        raise ValueError(
            f"{name} must be a host name such as 'example.eu.auth0.com', not {value!r}"
        )
    return host


def _audiences(audience: str | Sequence[str]) -> tuple[str, ...]:
    return (audience,) if isinstance(audience, str) else tuple(audience)


def auth0(  # type: ignore[misc]  # see _build
    domain: str, audience: str | Sequence[str], **overrides: Unpack[IssuerOptions]
) -> Issuer:
    """Auth0: ``iss`` is ``https://{domain}/`` (with the trailing slash), keys by discovery.

    Scopes come from ``scope`` and, with RBAC's "Add Permissions in the Access
    Token", from ``permissions``; the client from ``client_id`` (RFC 9068 token
    profile) or ``azp`` (Auth0 token profile). ``audience`` is the API identifier;
    ID tokens (``aud`` is the application's client id) and other APIs' tokens are
    refused by it. Use your custom domain if tokens are issued under it.

    Relied on: https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles
    and https://auth0.com/docs/secure/tokens/json-web-tokens/json-web-key-sets.
    """
    host = _host(domain, "domain")
    return _build(
        {
            "issuer": f"https://{host}/",
            "audience": audience,
            "scope_claims": ("scope", "permissions"),
            "client_id_claims": ("client_id", "azp"),
        },
        overrides,
    )


def entra(  # type: ignore[misc]  # see _build
    tenant_id: str | None = None,
    audience: str | Sequence[str] | None = None,
    *,
    tenants: Sequence[str] | Literal["*"] | None = None,
    version: Literal["1.0", "2.0"] = "2.0",
    **overrides: Unpack[IssuerOptions],
) -> Issuer:
    """Microsoft Entra ID (Azure AD): one tenant (``tenant_id``), or many (``tenants``).

    ``version`` is the access token version your API's app registration asks for
    (``accessTokenAcceptedVersion``: ``2`` gives ``ver`` "2.0", null or ``1`` gives
    "1.0"); the other version's tokens are refused (their ``iss`` and ``ver``
    differ). v2.0: ``iss`` ``https://login.microsoftonline.com/{tid}/v2.0``,
    ``aud`` the API's client id, client in ``azp``. v1.0: ``iss``
    ``https://sts.windows.net/{tid}/``, ``aud`` the App ID URI (``api://...``) or
    client id, client in ``appid``. Scopes: delegated ``scp`` and app ``roles``.
    ID tokens carry neither ``azp`` nor ``appid``, so they are refused.

    Multi-tenant (``tenants=[...]`` or ``"*"``): the issuer is the template Entra's
    tenant-independent discovery document publishes, filled from ``tid`` (a GUID)
    and compared with ``iss`` exactly; a tenant not listed gets 401 ``bad_tenant``.

    Relied on: https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference
    and https://learn.microsoft.com/entra/identity-platform/access-tokens (validate
    the issuer; v1.0 and v2.0 metadata; tenant-independent metadata).
    """
    if audience is None:
        raise ValueError("entra() needs audience= (your API's client id, or its App ID URI)")
    if version not in ("1.0", "2.0"):
        raise ValueError(f"version must be '1.0' or '2.0', not {version!r}")
    if (tenant_id is None) == (tenants is None):
        raise ValueError(
            "entra() takes tenant_id= (one tenant) or tenants=[...] / tenants='*' (multi-tenant)"
        )
    v2 = version == "2.0"
    client_claim = "azp" if v2 else "appid"
    preset: dict[str, Any] = {
        "audience": audience,
        "scope_claims": ("scp", "roles"),
        "client_id_claims": (client_claim,),
        "required_claims": (client_claim,),
        "expected_claims": {"ver": version, "tid": _is_guid},
    }
    if tenant_id is not None:
        tid = _guid(tenant_id, "tenant_id")
        if v2:
            preset["issuer"] = f"{_ENTRA}/{tid}/v2.0"
        else:
            # The v1.0 document is served by login.microsoftonline.com, its issuer is sts.
            preset["issuer"] = f"https://sts.windows.net/{tid}/"
            preset["metadata_url"] = f"{_ENTRA}/{tid}/.well-known/openid-configuration"
        preset["expected_claims"] = {"ver": version, "tid": tid}
    else:
        if tenants != "*":
            if isinstance(tenants, str) or tenants is None:
                raise ValueError("tenants takes a list of tenant ids, or '*' for any tenant")
            tenants = tuple(_guid(t, "tenants") for t in tenants)
        if v2:
            preset["issuer"] = f"{_ENTRA}/{{tenantid}}/v2.0"
            preset["metadata_url"] = f"{_ENTRA}/common/v2.0/.well-known/openid-configuration"
        else:
            preset["issuer"] = "https://sts.windows.net/{tenantid}/"
            preset["metadata_url"] = f"{_ENTRA}/common/.well-known/openid-configuration"
        preset["tenants"] = tenants
    return _build(preset, overrides)


def _is_guid(value: Any) -> bool:
    return type(value) is str and _GUID.fullmatch(value) is not None


def _guid(value: Any, name: str) -> str:
    tid = value.lower() if isinstance(value, str) else value
    if not _is_guid(tid):
        raise ValueError(
            f"{name}: Entra tenant ids are GUIDs (the Directory (tenant) ID), not {value!r}; "
            "for any tenant use tenants='*'"
        )
    return str(tid)


def cognito(  # type: ignore[misc]  # see _build
    region: str,
    user_pool_id: str,
    client_ids: Sequence[str],
    **overrides: Unpack[IssuerOptions],
) -> Issuer:
    """Amazon Cognito user pools: access tokens only, from the app clients named.

    ``iss`` is ``https://cognito-idp.{region}.amazonaws.com/{user_pool_id}``; keys
    by discovery (``/.well-known/jwks.json``). Cognito access tokens carry no
    ``aud``: ``client_id`` must be one of ``client_ids`` and ``token_use`` must be
    ``access``, so the pool's ID tokens (``token_use`` ``id``, ``aud`` the client)
    are refused. Scopes come from ``scope``; add ``"cognito:groups"`` to
    ``scope_claims`` to count groups as well.

    Relied on: https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html
    and .../amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html.
    """
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-[0-9]", region or ""):
        raise ValueError(f"region must be an AWS region such as 'eu-west-1', not {region!r}")
    if not isinstance(user_pool_id, str) or not re.fullmatch(
        re.escape(region) + r"_[A-Za-z0-9]+", user_pool_id
    ):
        raise ValueError(
            f"user_pool_id must be the pool id of region {region!r} ('{region}_...'), "
            f"not {user_pool_id!r}"
        )
    expected: dict[str, Expected] = {"token_use": "access"}
    return _build(
        {
            "issuer": f"https://cognito-idp.{region}.{_aws_domain(region)}/{user_pool_id}",
            "audience": None,
            "client_ids": client_ids,
            "scope_claims": ("scope",),
            "client_id_claims": ("client_id",),
            "expected_claims": expected,
        },
        overrides,
    )


def _aws_domain(region: str) -> str:
    """AWS endpoints live under ``amazonaws.com``, in the China regions ``amazonaws.com.cn``."""
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def keycloak(  # type: ignore[misc]  # see _build
    base_url: str, realm: str, audience: str | Sequence[str], **overrides: Unpack[IssuerOptions]
) -> Issuer:
    """Keycloak: ``iss`` is ``{base_url}/realms/{realm}``, keys by discovery.

    ``base_url`` is where Keycloak answers (add ``/auth`` for Keycloak 16 and older).
    Keycloak puts the API in ``aud`` only when an audience mapper (or the client's
    roles) says so: ``audience`` is that value. Scopes: ``scope``, the realm roles
    (``realm_access.roles``) and this API's client roles
    (``resource_access.<audience>.roles``). The client is ``azp``. The ``typ``
    claim must be ``Bearer``, so ID tokens (``ID``) and refresh tokens are refused.

    Relied on: https://www.keycloak.org/docs/latest/server_admin/ (OIDC endpoints,
    audience support, role mappers) and https://www.keycloak.org/securing-apps/oidc-layers.
    """
    base = base_url.rstrip("/") if isinstance(base_url, str) else ""
    if not base.startswith(("https://", "http://")):
        raise ValueError("base_url must be Keycloak's URL, such as 'https://kc.example.com'")
    if not isinstance(realm, str) or not realm or "/" in realm:
        raise ValueError(f"realm must be a realm name, not {realm!r}")
    client_roles = tuple(("resource_access", a, "roles") for a in _audiences(audience))
    return _build(
        {
            "issuer": f"{base}/realms/{realm}",
            "audience": audience,
            "scope_claims": ("scope", "realm_access.roles", *client_roles),
            "client_id_claims": ("azp", "client_id"),
            "expected_claims": {"typ": ("Bearer", "DPoP")},
        },
        overrides,
    )


def okta(  # type: ignore[misc]  # see _build
    domain: str,
    audience: str | Sequence[str],
    authorization_server: str = "default",
    **overrides: Unpack[IssuerOptions],
) -> Issuer:
    """Okta custom authorization servers: ``iss`` is ``https://{domain}/oauth2/{server}``.

    ``authorization_server`` is the server's id (``default`` for the one every org
    has); the org authorization server's access tokens are meant for Okta's own APIs
    and cannot be validated locally. Scopes come from ``scp`` (a list), the client
    from ``cid``; ID tokens have no ``cid`` and are refused, as are other APIs'
    tokens (``aud``, ``api://default`` unless changed).

    Relied on: https://developer.okta.com/docs/guides/validate-access-tokens/ and
    https://developer.okta.com/docs/api/openapi/okta-oauth/oauth/tag/CustomAS (metadata).
    """
    host = _host(domain, "domain")
    if not re.fullmatch(r"[A-Za-z0-9]+", authorization_server or ""):
        raise ValueError(
            f"authorization_server must be a custom authorization server id such as 'default', "
            f"not {authorization_server!r}"
        )
    return _build(
        {
            "issuer": f"https://{host}/oauth2/{authorization_server}",
            "audience": audience,
            "scope_claims": ("scp",),
            "client_id_claims": ("cid",),
            "required_claims": ("cid",),
        },
        overrides,
    )


def firebase(project_id: str, **overrides: Unpack[IssuerOptions]) -> Issuer:
    """Firebase Authentication ID tokens, which Firebase apps send as bearer tokens.

    As Firebase asks of third-party verifiers: RS256 only, keys from Google's
    ``securetoken`` JWKS (shared by every project, so several projects cost one key
    cache), ``iss`` ``https://securetoken.google.com/{project_id}``, ``aud`` the
    project id, ``sub`` (the uid) a non-empty string of at most 128 characters,
    ``auth_time`` present and not in the future. Session cookies, custom tokens and
    other projects' tokens are refused (their ``iss``/``aud`` differ). Firebase
    tokens carry no scopes and no client: put custom claims in ``scope_claims``
    (``scope_claims=("roles",)``) to use ``require_scopes``.

    Relied on: https://firebase.google.com/docs/auth/admin/verify-id-tokens
    (verify ID tokens using a third-party JWT library).
    """
    if not isinstance(project_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{3,62}", project_id):
        raise ValueError(f"project_id must be a Firebase project id, not {project_id!r}")
    return _build(
        {
            "issuer": f"https://securetoken.google.com/{project_id}",
            "audience": project_id,
            "jwks_uri": FIREBASE_JWKS_URI,
            "algorithms": ("RS256",),
            "scope_claims": (),
            "client_id_claims": (),
            "required_claims": ("sub", "auth_time"),
            "expected_claims": {"sub": _firebase_uid},
        },
        overrides,
    )


def _firebase_uid(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 128
