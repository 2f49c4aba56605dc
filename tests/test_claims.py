"""Each header and claim rule of RFC 7519, RFC 8725 and RFC 9068, one test a rule."""

from __future__ import annotations

from typing import Any

import pytest

from bearerguard._claims import ClaimRules, read_scopes
from bearerguard._config import Issuer
from bearerguard._errors import InvalidToken

ISS = "https://idp.example.com"
AUD = "https://api.example.com"
NOW = 1_800_000_000.0


def rules(**kw: Any) -> ClaimRules:
    return ClaimRules(Issuer(issuer=ISS, audience=kw.pop("audience", AUD), **kw))


def claims(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISS, "aud": AUD, "exp": NOW + 300, "iat": NOW, "sub": "u1"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def reason(fn: Any, *args: Any) -> str:
    with pytest.raises(InvalidToken) as info:
        fn(*args)
    return info.value.reason


def test_valid_claims_pass() -> None:
    rules().check_claims(claims(), NOW)


# -- header ---------------------------------------------------------------------


def test_alg_outside_allowlist_rejected() -> None:
    assert reason(rules(algorithms=("ES256",)).check_header, {"alg": "RS256"}) == "bad_alg"


def test_alg_none_rejected() -> None:
    assert reason(rules().check_header, {"alg": "none"}) == "bad_alg"


def test_alg_hmac_rejected_by_default() -> None:
    assert reason(rules().check_header, {"alg": "HS256"}) == "bad_alg"


def test_alg_must_be_a_string() -> None:
    assert reason(rules().check_header, {"alg": ["RS256"]}) == "bad_alg"


def test_crit_header_rejected() -> None:
    assert reason(rules().check_header, {"alg": "RS256", "crit": ["exp"]}) == "crit"


def test_empty_crit_header_rejected() -> None:
    assert reason(rules().check_header, {"alg": "RS256", "crit": []}) == "crit"


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt"])
def test_default_mode_accepts_access_token_typ(typ: str | None) -> None:
    header = {"alg": "RS256"} if typ is None else {"alg": "RS256", "typ": typ}
    assert rules().check_header(header) == "RS256"


@pytest.mark.parametrize("typ", ["dpop+jwt", "logout+jwt", "secevent+jwt", "id_token+jwt", "JOSE"])
def test_default_mode_rejects_other_token_kinds(typ: str) -> None:
    assert reason(rules().check_header, {"alg": "RS256", "typ": typ}) == "bad_typ"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_rfc9068_mode_accepts_at_jwt_case_insensitively(typ: str) -> None:
    assert rules(rfc9068=True).check_header({"alg": "RS256", "typ": typ}) == "RS256"


@pytest.mark.parametrize("typ", [None, "JWT", "dpop+jwt"])
def test_rfc9068_mode_rejects_anything_but_at_jwt(typ: str | None) -> None:
    header = {"alg": "RS256"} if typ is None else {"alg": "RS256", "typ": typ}
    assert reason(rules(rfc9068=True).check_header, header) == "bad_typ"


def test_typ_must_be_a_string() -> None:
    assert reason(rules().check_header, {"alg": "RS256", "typ": 1}) == "bad_typ"


def test_kid_must_be_a_string() -> None:
    assert reason(rules().check_header, {"alg": "RS256", "kid": 7}) == "bad_kid"


# -- iss / aud --------------------------------------------------------------------


def test_iss_must_match_exactly() -> None:
    assert reason(rules().check_claims, claims(iss=ISS + "/"), NOW) == "bad_iss"


def test_iss_prefix_is_not_a_match() -> None:
    assert reason(rules().check_claims, claims(iss=ISS + ".evil.com"), NOW) == "bad_iss"


def test_iss_missing_rejected() -> None:
    assert reason(rules().check_claims, claims(iss=...), NOW) == "bad_iss"


def test_aud_string_must_be_configured() -> None:
    assert reason(rules().check_claims, claims(aud="https://other"), NOW) == "bad_aud"


def test_aud_array_containing_configured_audience_accepted() -> None:
    rules().check_claims(claims(aud=["https://other", AUD]), NOW)


def test_aud_array_without_configured_audience_rejected() -> None:
    assert reason(rules().check_claims, claims(aud=["https://other"]), NOW) == "bad_aud"


def test_aud_missing_rejected() -> None:
    assert reason(rules().check_claims, claims(aud=...), NOW) == "bad_aud"


def test_aud_of_wrong_type_rejected() -> None:
    assert reason(rules().check_claims, claims(aud={"x": AUD}), NOW) == "bad_aud"


def test_any_of_several_configured_audiences_accepted() -> None:
    rules(audience=["a", AUD]).check_claims(claims(), NOW)


# -- dates ---------------------------------------------------------------------


def test_exp_required() -> None:
    assert reason(rules().check_claims, claims(exp=...), NOW) == "bad_exp"


def test_expired_token_rejected() -> None:
    assert reason(rules().check_claims, claims(exp=NOW - 61), NOW) == "expired"


def test_exp_within_leeway_accepted() -> None:
    rules().check_claims(claims(exp=NOW - 59), NOW)


def test_leeway_is_configurable() -> None:
    assert reason(rules(leeway=0).check_claims, claims(exp=NOW), NOW) == "expired"


@pytest.mark.parametrize("bad", ["1800000300", None, True, [1], {"a": 1}])
def test_exp_must_be_a_json_number(bad: Any) -> None:
    assert reason(rules().check_claims, claims(exp=bad), NOW) == "bad_exp"


def test_nbf_in_future_rejected() -> None:
    assert reason(rules().check_claims, claims(nbf=NOW + 61), NOW) == "not_yet_valid"


def test_nbf_within_leeway_accepted() -> None:
    rules().check_claims(claims(nbf=NOW + 59), NOW)


def test_nbf_must_be_a_json_number() -> None:
    assert reason(rules().check_claims, claims(nbf="0"), NOW) == "bad_nbf"


def test_iat_in_future_rejected() -> None:
    assert reason(rules().check_claims, claims(iat=NOW + 61), NOW) == "iat_future"


def test_iat_must_be_a_json_number() -> None:
    assert reason(rules().check_claims, claims(iat=None), NOW) == "bad_iat"


# -- required claims --------------------------------------------------------------


def test_configured_required_claim_enforced() -> None:
    assert reason(rules(required_claims=("tenant",)).check_claims, claims(), NOW) == "missing_claim"


@pytest.mark.parametrize("name", ["sub", "client_id", "iat", "jti"])
def test_rfc9068_mode_requires_its_claims(name: str) -> None:
    full = claims(client_id="c1", jti="j1")
    del full[name]
    assert reason(rules(rfc9068=True).check_claims, full, NOW) == "missing_claim"


@pytest.mark.parametrize("name", ["sub", "client_id", "jti"])
def test_identity_claims_must_be_strings(name: str) -> None:
    assert reason(rules().check_claims, claims(**{name: 42}), NOW) == "bad_claim"


# -- scopes ---------------------------------------------------------------------


def test_scope_string_is_space_delimited() -> None:
    assert read_scopes({"scope": "a b  c"}, ("scope", "scp")) == {"a", "b", "c"}


def test_scp_list_accepted() -> None:
    assert read_scopes({"scp": ["a", "b"]}, ("scope", "scp")) == {"a", "b"}


def test_scope_claim_names_configurable() -> None:
    assert read_scopes({"permissions": ["x"]}, ("permissions",)) == {"x"}


def test_malformed_scope_claim_rejected() -> None:
    with pytest.raises(InvalidToken):
        read_scopes({"scope": 5}, ("scope",))


@pytest.mark.parametrize("separator", ["\u2003", "\u00a0", "\x1c", "\t", "\n"])
def test_scope_split_only_on_space(separator: str) -> None:
    # One scope the issuer granted must not become two (RFC 6749 §3.3).
    with pytest.raises(InvalidToken):
        read_scopes({"scope": f"files:read{separator}admin"}, ("scope",))


def test_scp_list_items_are_not_split() -> None:
    with pytest.raises(InvalidToken):
        read_scopes({"scp": ["read admin"]}, ("scp",))


def test_scope_outside_scope_token_grammar_rejected() -> None:
    with pytest.raises(InvalidToken):
        read_scopes({"scope": 'read "admin"'}, ("scope",))


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
def test_huge_integer_date_is_malformed_not_internal(name: str) -> None:
    assert reason(rules().check_claims, claims(**{name: 10**400}), NOW).startswith("bad_")


def test_aud_array_with_a_non_string_member_rejected() -> None:
    assert reason(rules().check_claims, claims(aud=[{"x": 1}, AUD]), NOW) == "bad_aud"


def test_scope_memo_remembers_judged_strings_and_stays_bounded() -> None:
    r = rules()
    first = r.scopes({"scope": "a b"})
    assert r.scopes({"scope": "a b"}) is first == {"a", "b"}
    for i in range(600):
        r.scopes({"scope": f"s{i}"})
    assert len(r.scope_memo) <= 256


def test_scope_memo_never_remembers_a_malformed_value() -> None:
    r = rules()
    for _ in range(2):
        with pytest.raises(InvalidToken):
            r.scopes({"scope": "a\tb"})
    assert r.scope_memo == {}


# -- scope claims: union, paths, types ---------------------------------------------------


def test_scope_claims_are_the_union_of_every_claim_present() -> None:
    r = rules(scope_claims=("scope", "permissions"))
    assert r.scopes({"scope": "openid read:a", "permissions": ["write:a"]}) == {
        "openid",
        "read:a",
        "write:a",
    }


def test_scope_claim_dotted_path_reads_nested_claims() -> None:
    r = rules(scope_claims=("scope", "realm_access.roles"))
    assert r.scopes({"realm_access": {"roles": ["admin", "user"]}}) == {"admin", "user"}
    assert r.scopes({"realm_access": {"other": []}}) == frozenset()


def test_scope_claim_tuple_path_allows_dots_inside_a_part() -> None:
    r = rules(scope_claims=(("resource_access", "api.example.com", "roles"),))
    token = {"resource_access": {"api.example.com": {"roles": ["reader"]}}}
    assert r.scopes(token) == {"reader"}


def test_scope_claim_named_with_dots_is_first_read_as_a_top_level_name() -> None:
    # Auth0 custom claims are namespaced by URL: one top-level name holding dots.
    r = rules(scope_claims=("https://example.com/roles",))
    assert r.scopes({"https://example.com/roles": ["admin"]}) == {"admin"}


@pytest.mark.parametrize("value", [{"read": True}, ["read", 5], 7, True])
def test_scope_claim_present_with_an_unusable_type_is_refused(value: Any) -> None:
    r = rules(scope_claims=("scope", "permissions"))
    assert reason(r.scopes, {"scope": "read", "permissions": value}) == "bad_scope"


def test_scope_path_through_a_non_object_is_refused() -> None:
    r = rules(scope_claims=("realm_access.roles",))
    assert reason(r.scopes, {"realm_access": ["admin"]}) == "bad_scope"


@pytest.mark.parametrize(
    "path", ["scope.roles", "realm_access..roles", ".roles", "", ("aud", "x"), ()]
)
def test_scope_path_that_can_never_match_is_a_configuration_error(path: Any) -> None:
    with pytest.raises(ValueError):
        rules(scope_claims=("scope", path))


def test_scope_claims_given_as_one_string_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="not one string"):
        rules(scope_claims="scp")


# -- client id -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"client_id": "a", "azp": "b", "cid": "c", "appid": "d"}, "a"),
        ({"azp": "b", "cid": "c", "appid": "d"}, "b"),
        ({"cid": "c", "appid": "d"}, "c"),
        ({"appid": "d"}, "d"),
        ({}, None),
    ],
)
def test_client_id_is_the_first_client_id_claim_present(
    present: dict[str, Any], expected: str | None
) -> None:
    assert rules().client_id(present) == expected


def test_client_id_claims_are_configurable() -> None:
    assert rules(client_id_claims=("app",)).client_id({"azp": "b", "app": "x"}) == "x"


def test_client_id_claim_that_is_not_a_string_is_refused() -> None:
    assert reason(rules().check_claims, claims(azp=["b"]), NOW) == "bad_claim"


def test_client_ids_refuse_a_token_of_another_client() -> None:
    r = rules(client_ids=("app1", "app2"))
    r.check_claims(claims(client_id="app2"), NOW)
    assert reason(r.check_claims, claims(client_id="app3"), NOW) == "bad_client"


def test_client_ids_refuse_a_token_that_names_no_client() -> None:
    assert reason(rules(client_ids=("app1",)).check_claims, claims(), NOW) == "bad_client"


def test_client_ids_given_as_one_string_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        rules(client_ids="app1")


def test_audience_may_be_omitted_only_when_client_ids_are_given() -> None:
    with pytest.raises(ValueError, match="client_ids"):
        rules(audience=None)
    r = rules(audience=None, client_ids=("app1",))
    # A Cognito access token: no aud at all; the client decides who it is for.
    r.check_claims(claims(aud=..., client_id="app1"), NOW)
    assert reason(r.check_claims, claims(aud=..., client_id="app9"), NOW) == "bad_client"


@pytest.mark.parametrize("aud", [5, True, {"a": 1}, ["app", 1]])
def test_malformed_aud_is_refused_even_when_no_audience_is_configured(aud: Any) -> None:
    """Found by tests/conformance: an int ``aud`` crashed the validator (a 401 "internal")."""
    r = rules(audience=None, client_ids=("app1",))
    assert reason(r.check_claims, claims(aud=aud, client_id="app1"), NOW) == "bad_aud"
    r.check_claims(claims(aud=["x", "y"], client_id="app1"), NOW)


def test_audience_and_client_ids_together_both_apply() -> None:
    r = rules(client_ids=("app1",))
    assert reason(r.check_claims, claims(aud="other", client_id="app1"), NOW) == "bad_aud"
    assert reason(r.check_claims, claims(client_id="app9"), NOW) == "bad_client"


# -- expected claims -----------------------------------------------------------------------


def test_expected_claim_must_equal_its_value_with_the_same_json_type() -> None:
    r = rules(expected_claims={"ver": "2.0", "email_verified": True})
    r.check_claims(claims(ver="2.0", email_verified=True), NOW)
    assert reason(r.check_claims, claims(ver="1.0", email_verified=True), NOW) == (
        "unexpected_claim"
    )
    assert reason(r.check_claims, claims(ver=2.0, email_verified=True), NOW) == "unexpected_claim"
    assert reason(r.check_claims, claims(ver="2.0", email_verified=1), NOW) == "unexpected_claim"


def test_expected_claim_collection_accepts_any_listed_value() -> None:
    r = rules(expected_claims={"ver": ("1.0", "2.0")})
    r.check_claims(claims(ver="1.0"), NOW)
    assert reason(r.check_claims, claims(ver="3.0"), NOW) == "unexpected_claim"


def test_expected_claim_predicate_decides_and_a_failing_predicate_refuses() -> None:
    r = rules(expected_claims={"sub": lambda v: isinstance(v, str) and len(v) <= 8})
    r.check_claims(claims(sub="short"), NOW)
    assert reason(r.check_claims, claims(sub="far-too-long"), NOW) == "unexpected_claim"
    boom = rules(expected_claims={"sub": lambda v: v["x"]})
    assert reason(boom.check_claims, claims(), NOW) == "unexpected_claim"


def test_expected_claim_that_is_absent_is_refused() -> None:
    r = rules(expected_claims={"token_use": "access"})
    assert reason(r.check_claims, claims(), NOW) == "missing_claim"


def test_expected_claim_may_name_a_nested_path() -> None:
    r = rules(expected_claims={"firebase.sign_in_provider": {"password", "google.com"}})
    r.check_claims(claims(firebase={"sign_in_provider": "password"}), NOW)
    assert reason(r.check_claims, claims(firebase={"sign_in_provider": "anonymous"}), NOW) == (
        "unexpected_claim"
    )


def test_expected_claims_apply_to_introspection_answers_too() -> None:
    r = rules(expected_claims={"token_use": "access"}, client_ids=("app1",))
    answer = {"active": True, "client_id": "app1", "token_use": "id"}
    assert reason(lambda: r.check_claims(answer, NOW, introspected=True)) == "unexpected_claim"
    with pytest.raises(InvalidToken):
        r.check_claims({"active": True, "token_use": "access"}, NOW, introspected=True)


# -- issuer templates (multi-tenant issuers) --------------------------------------------

TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
T1 = "11111111-1111-1111-1111-111111111111"
T2 = "22222222-2222-2222-2222-222222222222"


COMMON = "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"


def tenant_rules(tenants: Any = (T1,)) -> ClaimRules:
    return ClaimRules(Issuer(issuer=TEMPLATE, audience=AUD, tenants=tenants, metadata_url=COMMON))


def tenant_claims(tid: Any, iss: str | None = None) -> dict[str, Any]:
    issuer = iss if iss is not None else TEMPLATE.replace("{tenantid}", str(tid))
    return claims(iss=issuer, tid=tid)


def test_issuer_template_is_filled_from_tid_and_must_equal_iss() -> None:
    tenant_rules().check_claims(tenant_claims(T1), NOW)
    other_iss = "https://login.microsoftonline.com/" + T2 + "/v2.0"
    assert reason(tenant_rules().check_claims, tenant_claims(T1, other_iss), NOW) == "bad_iss"
    v1_iss = f"https://sts.windows.net/{T1}/"
    assert reason(tenant_rules().check_claims, tenant_claims(T1, v1_iss), NOW) == "bad_iss"


def test_issuer_template_refuses_a_tenant_not_allowed() -> None:
    assert reason(tenant_rules().check_claims, tenant_claims(T2), NOW) == "bad_tenant"


def test_issuer_template_with_star_accepts_any_tenant() -> None:
    tenant_rules("*").check_claims(tenant_claims(T2), NOW)


@pytest.mark.parametrize("tid", [None, 5, "", "a/b", "x" * 200, "../x"])
def test_issuer_template_refuses_a_tid_that_is_not_one_tenant_id(tid: Any) -> None:
    iss = TEMPLATE.replace("{tenantid}", str(tid))
    assert reason(tenant_rules("*").check_claims, claims(iss=iss, tid=tid), NOW) == "bad_iss"


def test_issuer_template_without_tenants_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="tenants"):
        Issuer(issuer=TEMPLATE, audience=AUD, metadata_url=COMMON)


@pytest.mark.parametrize(
    ("issuer", "tenants"),
    [(ISS, (T1,)), (TEMPLATE, T1), (TEMPLATE, ()), (TEMPLATE, ("a/b",)),
     ("https://x/{tenantid}/{tenantid}", "*"), ("https://x/{tenantid}/{other}", "*")],
)  # fmt: skip
def test_tenants_without_one_clean_template_is_a_configuration_error(
    issuer: str, tenants: Any
) -> None:
    with pytest.raises(ValueError):
        Issuer(issuer=issuer, audience=AUD, tenants=tenants, metadata_url=COMMON)


def test_auth_time_in_the_future_is_refused() -> None:
    r = rules()
    r.check_claims(claims(auth_time=NOW - 3600), NOW)
    r.check_claims(claims(auth_time=NOW + 30), NOW)  # within the leeway
    assert reason(r.check_claims, claims(auth_time=NOW + 3600), NOW) == "auth_time_future"


@pytest.mark.parametrize("value", ["1700000000", True, None, [1]])
def test_auth_time_that_is_not_a_number_is_refused(value: Any) -> None:
    assert reason(rules().check_claims, claims(auth_time=value), NOW) == "bad_auth_time"


# -- collecting every failure (inspect) ------------------------------------------------------


def test_collecting_lists_every_broken_rule_and_the_first_is_the_one_raised() -> None:
    bad = claims(iss="https://evil.example", aud="other", exp=NOW - 3600, sub=5)
    failures: list[InvalidToken] = []
    rules().check_claims(bad, NOW, failures=failures)
    assert [f.reason for f in failures] == ["bad_iss", "bad_aud", "expired", "bad_claim"]
    assert reason(rules().check_claims, bad, NOW) == failures[0].reason


def test_collecting_lists_every_broken_header_rule() -> None:
    failures: list[InvalidToken] = []
    rules().check_header({"alg": "none", "crit": ["x"], "typ": "dpop+jwt", "kid": 7}, failures)
    assert [f.reason for f in failures] == ["bad_alg", "crit", "bad_typ", "bad_kid"]


def test_a_refusal_names_the_claim_what_was_expected_and_what_was_found() -> None:
    with pytest.raises(InvalidToken) as info:
        rules().check_claims(claims(aud=["a", "b"]), NOW)
    assert (info.value.claim, info.value.expected, info.value.found) == ("aud", [AUD], ["a", "b"])
