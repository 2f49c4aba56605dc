"""Configuration lives once: each default in its dataclass, each check where it is declared."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

import pytest
from starlette.applications import Starlette

from bearerguard import BearerAuthMiddleware, FetchPolicy, Issuer, RateLimiter
from bearerguard._config import IssuerOptions
from bearerguard._errors import REASONS, AuthError, InvalidRequest, InvalidToken, Unavailable
from bearerguard._ratelimit import RateLimitOptions, RateLimitSettings

ISS = "https://issuer.example"
AUD = "api://default"


def issuer(**fields: Any) -> Issuer:
    return Issuer(**{"issuer": ISS, "audience": AUD, **fields})


# -- one place for each default --------------------------------------------------------------


def test_middleware_issuer_keywords_are_exactly_the_issuer_fields() -> None:
    assert set(get_type_hints(IssuerOptions)) == {f.name for f in dataclasses.fields(Issuer)}


def test_middleware_issuer_defaults_are_the_issuer_defaults() -> None:
    middleware = BearerAuthMiddleware(Starlette(), issuer=ISS, audience=AUD)
    [state] = middleware.validator.issuers.values()
    assert state.config == Issuer(ISS, AUD)


def test_middleware_forwards_every_issuer_field_it_is_given() -> None:
    middleware = BearerAuthMiddleware(
        Starlette(), issuer=ISS, audience=[AUD, "other"], leeway=5, required_claims=["jti"]
    )
    [state] = middleware.validator.issuers.values()
    assert state.config == Issuer(ISS, (AUD, "other"), leeway=5, required_claims=("jti",))


def test_rate_limiter_keywords_are_exactly_the_settings_fields() -> None:
    names = {f.name for f in dataclasses.fields(RateLimitSettings)}
    assert set(get_type_hints(RateLimitOptions)) == names


def test_middleware_rate_limit_defaults_are_the_limiter_defaults() -> None:
    middleware = BearerAuthMiddleware(Starlette(), issuer=ISS, audience=AUD, rate_limit="5/second")
    assert middleware.rate_limiter is not None
    settings = middleware.rate_limiter.settings
    # The namespace is the API's own (shared storages are keyed by who asked); the rest
    # are the limiter's defaults.
    assert settings.namespace.startswith("bearerguard/")
    assert dataclasses.replace(settings, namespace="bearerguard") == RateLimitSettings()


def test_middleware_refuses_issuer_fields_next_to_issuers() -> None:
    with pytest.raises(ValueError, match="leeway"):
        BearerAuthMiddleware(Starlette(), issuers=[issuer()], leeway=5)


def test_middleware_refuses_issuer_fields_next_to_a_validator() -> None:
    other = BearerAuthMiddleware(Starlette(), issuer=ISS, audience=AUD)
    with pytest.raises(ValueError, match="validator"):
        BearerAuthMiddleware(Starlette(), validator=other.validator, audience=AUD)


# -- each check where the setting is declared ------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"audience": ()}, "audience"),
        ({"audience": ""}, "audience"),
        ({"issuer": ""}, "issuer"),
        ({"algorithms": ("RS256", "none")}, "none"),
        ({"algorithms": ()}, "allowlist"),
        ({"algorithms": ("RS1",)}, "unsupported"),
        ({"algorithms": "RS256"}, "algorithms"),
        ({"algorithms": ("HS256",)}, "shared_secret"),
        ({"leeway": -1}, "leeway"),
        ({"leeway": float("nan")}, "leeway"),
        ({"jwt_cache_ttl": -1}, "jwt_cache_ttl"),
        ({"negative_cache_ttl": -0.5}, "negative_cache_ttl"),
        ({"introspection_cache_ttl": -1}, "introspection_cache_ttl"),
        ({"introspection_concurrency": 0}, "introspection_concurrency"),
        ({"introspection_auth": "private_key_jwt"}, "introspection_auth"),
        ({"opaque": "accept"}, "opaque"),
        ({"introspect_all": True}, "introspect_all"),
        ({"cache_url": "redis://127.0.0.1:1/0"}, "cache_url"),
        ({"scope_claims": "scope"}, "scope_claims"),
        ({"scope_claims": ["iss.roles"]}, "scope_claims"),
        ({"scope_claims": [("realm_access", "")]}, "scope_claims"),
        ({"expected_claims": {"a..b": 1}}, "expected_claims"),
        ({"client_ids": []}, "client_ids"),
        ({"client_ids": "app"}, "client_ids"),
        ({"client_id_claims": ["azp", ""]}, "client_id_claims"),
    ],
)
def test_issuer_refuses_a_bad_field_when_made(fields: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        issuer(**fields)


def test_issuer_keeps_sequences_as_tuples() -> None:
    audiences = [AUD]
    config = issuer(audience=audiences, algorithms=["ES256"], required_claims=["jti"])
    audiences.append("late")
    assert config.audience == (AUD,)
    assert config.algorithms == ("ES256",)
    assert config.required_claims == ("jti",)


@pytest.mark.parametrize(
    "fields",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"max_bytes": 0},
        {"max_bytes": 1.5},
        {"max_keys": 0},
        {"min_ttl": -1},
        {"cooldown": -1},
        {"max_stale": float("inf")},
        {"refresh_ahead": 0},
        {"refresh_ahead": 1.5},
    ],
)
def test_fetch_policy_refuses_a_bad_field_when_made(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(fields))):
        FetchPolicy(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"strategy": "token-bucket"},
        {"key": "email"},
        {"storage": "localhost:6379"},
        {"storage_timeout": 0},
        {"outage_cooldown": -1},
    ],
)
def test_rate_limit_settings_refuse_a_bad_field_when_made(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RateLimitSettings(**fields)
    with pytest.raises(ValueError):
        RateLimiter("5/minute", **fields)


def test_rate_limit_settings_repr_hides_the_storage_uri() -> None:
    settings = RateLimitSettings(storage="redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(settings)


# -- reasons are a closed set ------------------------------------------------------------------


def test_a_bare_error_gets_a_reason_from_the_closed_set() -> None:
    for error in (AuthError(), InvalidToken("x"), InvalidRequest("x"), Unavailable("x")):
        assert error.reason in REASONS
    assert InvalidToken("x").reason == "invalid_token"
    assert Unavailable("x").reason == "upstream_unavailable"
