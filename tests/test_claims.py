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


# -- configuration guards ---------------------------------------------------------


def test_none_algorithm_cannot_be_allowed() -> None:
    with pytest.raises(ValueError):
        rules(algorithms=("RS256", "none"))


def test_hmac_needs_a_configured_secret() -> None:
    with pytest.raises(ValueError):
        rules(algorithms=("HS256",))


def test_unknown_algorithm_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        rules(algorithms=("RS1",))


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
