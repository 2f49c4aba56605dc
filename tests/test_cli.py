"""``bearerguard inspect`` against a real TestIssuer: one test per rejection reason.

Each test asserts the exit status, the words a person reads, and the validator's
reason code (so the explanation and the middleware's verdict are the same thing).
No output may ever contain the token itself.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from bearerguard._cli import EXIT_INVALID, EXIT_UNAVAILABLE, EXIT_USAGE, EXIT_VALID, inspect_main
from bearerguard._cli import main as cli_main
from bearerguard.testing import TestIssuer

# Dogfood: the fixtures users get (bearer_issuer), not a private copy.
pytest_plugins = ["bearerguard.pytest_plugin"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.out)
        return loaded


@dataclass
class Report:
    """``inspect --json``: what the tests read, rather than the text's column layout."""

    code: int
    json: dict[str, Any]
    text: str  # the raw output, for what must never appear in it

    @property
    def reason(self) -> str | None:
        reason: str | None = self.json["reason"]
        return reason

    def status(self, name: str) -> str:
        """The status of the first check named ``name``."""
        return str(next(c["status"] for c in self.json["checks"] if c["name"] == name))

    @property
    def words(self) -> str:
        """Every check's detail, one a line: what a person reads, without the layout."""
        return "\n".join(str(c["detail"]) for c in self.json["checks"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _run(
    capsys: pytest.CaptureFixture[str],
    issuer: TestIssuer,
    token: str,
    *extra: str,
    audience: str | None = None,
) -> Result:
    argv = ["-", "--issuer", issuer.issuer, "--audience", audience or issuer.audience, *extra]
    code = inspect_main(argv, stdin=io.StringIO(token))
    captured = capsys.readouterr()
    assert token not in captured.out and token not in captured.err  # never echo the token
    return Result(code, captured.out, captured.err)


def _inspect(
    capsys: pytest.CaptureFixture[str], issuer: TestIssuer, token: str, *extra: str
) -> Report:
    """``inspect --json`` for ``token``: the report the tests below read."""
    result = _run(capsys, issuer, token, "--json", *extra)
    return Report(result.code, result.json, result.out + result.err)


def _reason(capsys: pytest.CaptureFixture[str], issuer: TestIssuer, token: str, *extra: str) -> str:
    """The validator's reason code, via --json, for the same token and options."""
    result = _run(capsys, issuer, token, "--json", *extra)
    return str(result.json["reason"])


# -- a valid token ---------------------------------------------------------------------


def test_valid_token_passes_every_check_and_exits_0(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    result = _run(capsys, bearer_issuer, bearer_issuer.mint(scope="read:items write:items"))
    assert result.code == EXIT_VALID
    assert "FAIL" not in result.out
    assert (
        f'PASS  kid        found: kid "{bearer_issuer.signing_kid}" (RSA key for RS256'
        in result.out
    )
    assert "thumbprint" in result.out
    assert "granted: read:items write:items (from scope)" in result.out
    assert "VALID: the API accepts this token (scopes: read:items write:items)" in result.out


def test_required_scope_missing_is_invalid_with_403_words(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint(scope="read:items")
    result = _run(capsys, bearer_issuer, token, "--require-scope", "write:items")
    assert result.code == EXIT_INVALID
    assert "FAIL  required scopes  the route needs write:items; the token lacks write:items" in (
        result.out
    )
    assert "FAIL  validator" not in result.out
    assert "INVALID (insufficient_scope): the token lacks write:items" in result.out
    assert 'answers 403 error="insufficient_scope"' in result.out


# -- one test per rejection reason -------------------------------------------------------


def test_expired(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint_expired())
    assert result.code == EXIT_INVALID
    assert result.status("exp") == "fail"
    assert "expired 1h" in result.words and "leeway 60 s" in result.words
    assert result.reason == "expired"


def test_not_yet_valid(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint_not_yet_valid())
    assert result.code == EXIT_INVALID
    assert result.status("nbf") == "fail" and "not valid yet" in result.words
    assert "from now (local clock" in result.words
    assert result.reason == "not_yet_valid"


def test_iat_in_the_future_shows_the_skew(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint({"iat": int(time.time()) + 600})
    result = _inspect(capsys, bearer_issuer, token)
    assert result.code == EXIT_INVALID
    assert "issued in the future" in result.words
    assert "ahead of the local clock" in result.words and "check NTP" in result.words
    assert result.reason == "iat_future"


def test_wrong_audience(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint_wrong_audience())
    assert result.code == EXIT_INVALID
    assert (
        'token aud "https://not-this-api.example.com" contains none of the configured '
        'audiences ["https://api.example.com"]'
    ) in result.words
    assert "issued for another API" in result.words
    assert result.reason == "bad_aud"


def test_wrong_issuer(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint_wrong_issuer())
    assert result.code == EXIT_INVALID
    assert f'token iss "{bearer_issuer.issuer}/other" vs configured issuer' in result.words
    assert 'the path differs ("/other" vs "")' in result.words
    assert result.reason == "bad_iss"


def test_wrong_issuer_trailing_slash_is_named(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint({"iss": bearer_issuer.issuer + "/"})
    result = _inspect(capsys, bearer_issuer, token)
    assert result.code == EXIT_INVALID
    assert "the token's iss ends with a slash and the configured issuer does not" in result.words
    assert "compared exactly" in result.words
    assert result.reason == "bad_iss"
    # The validator picks the issuer by iss: a foreign iss is refused before any key.
    checks = _run(capsys, bearer_issuer, token, "--json").json["checks"]
    assert isinstance(checks, list)
    assert {c["name"]: c["status"] for c in checks}["signature"] == "skip"


def test_bound_token_says_which_proof_the_api_asks_for(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    from bearerguard.testing import DPoPKey

    key = DPoPKey()
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint(dpop_key=key))
    assert result.code == 0
    assert result.status("binding") == "info"
    assert f'a DPoP proof signed by the key "{key.thumbprint}"' in result.words
    assert "sent as a plain Bearer token it is refused" in result.words
    plain = _inspect(capsys, bearer_issuer, bearer_issuer.mint())
    assert all(c["name"] != "binding" for c in plain.json["checks"])


def test_alg_none(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint_alg_none())
    assert result.code == EXIT_INVALID
    assert "the signature part is empty: an unsigned JWT" in result.words
    assert result.status("alg") == "fail"
    assert 'alg "none" means the token is not signed at all' in result.words
    assert result.reason == "malformed"


def test_alg_not_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    with TestIssuer(algorithms=("ES256",)) as issuer:
        result = _inspect(capsys, issuer, issuer.mint(), "--algorithms", "RS256,PS256")
        assert sum(issuer.requests.values()) == 0  # refused before any key is looked up
    assert result.code == EXIT_INVALID
    assert 'alg "ES256" is not on this API\'s allowlist (RS256, PS256)' in result.words
    assert result.reason == "bad_alg"


def test_hs256_confusion(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    public_pem = bearer_issuer.signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = bearer_issuer.mint(alg="HS256", key=public_pem, kid=bearer_issuer.signing_kid)
    result = _inspect(capsys, bearer_issuer, token)
    assert result.code == EXIT_INVALID
    assert "alg HS256 is HMAC, verified with a shared secret" in result.words
    assert "algorithm confusion, RFC 8725 §2.1" in result.words
    assert result.reason == "bad_alg"


def test_unknown_kid_lists_the_published_kids(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint_unknown_key(kid="kid-from-staging")
    result = _inspect(capsys, bearer_issuer, token)
    assert result.code == EXIT_INVALID
    assert (
        f'unknown kid "kid-from-staging": the issuer publishes kids ["{bearer_issuer.signing_kid}"]'
    ) in result.words
    assert result.reason == "unknown_kid"


def test_bad_signature(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint_tampered())
    assert result.code == EXIT_INVALID
    assert result.status("signature") == "fail"
    assert f'does not verify with kid "{bearer_issuer.signing_kid}"' in result.words
    assert "changed after it was signed" in result.words
    assert result.reason == "bad_signature"


def test_typ_dpop_jwt(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint(headers={"typ": "dpop+jwt"}))
    assert result.code == EXIT_INVALID
    assert 'typ "dpop+jwt" marks a DPoP proof (RFC 9449;' in result.words
    assert "), not an access token; accepted: none, JWT" in result.words
    assert result.reason == "bad_typ"


def test_typ_jwt_in_rfc9068_mode(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    result = _inspect(
        capsys, bearer_issuer, bearer_issuer.mint(headers={"typ": "JWT"}), "--rfc9068"
    )
    assert result.code == EXIT_INVALID
    assert "accepted: at+jwt or application/at+jwt (RFC 9068 mode is on)" in result.words
    assert result.reason == "bad_typ"


def test_crit(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    token = bearer_issuer.mint(headers={"crit": ["exp"], "exp": 1})
    result = _inspect(capsys, bearer_issuer, token)
    assert result.code == EXIT_INVALID
    assert 'crit ["exp"] lists extensions the recipient must understand' in result.words
    assert result.reason == "crit"


def test_jwe(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    header = _b64(b'{"alg":"RSA-OAEP-256","enc":"A256GCM"}')
    result = _inspect(capsys, bearer_issuer, f"{header}.a2V5.aXY.Y2lwaGVy.dGFn")
    assert result.code == EXIT_INVALID
    assert 'an encrypted JWT (JWE) (alg "RSA-OAEP-256", enc "A256GCM")' in result.words
    assert "accepts signed JWTs only" in result.words
    assert result.reason == "jwe"


def test_opaque(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint_opaque())
    assert result.code == EXIT_INVALID
    assert "an opaque token" in result.words and "RFC 7662 introspection" in result.words
    assert "Without introspection credentials" in result.words
    assert result.reason == "malformed"
    assert bearer_issuer.requests[bearer_issuer.introspection_path] == 0  # sent nowhere


def _introspecting(monkeypatch: pytest.MonkeyPatch, issuer: TestIssuer) -> tuple[str, ...]:
    client_id, secret = issuer.introspection_client
    monkeypatch.setenv("BG_TEST_SECRET", secret)
    return ("--client-id", client_id, "--client-secret-env", "BG_TEST_SECRET")


def test_opaque_active_is_introspected_at_the_configured_issuer(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint_opaque(scope="read:items")
    result = _inspect(capsys, bearer_issuer, token, *_introspecting(monkeypatch, bearer_issuer))
    assert result.code == EXIT_VALID
    assert result.status("introspection") == "pass" and result.status("active") == "pass"
    assert f"{bearer_issuer.introspection_endpoint} answered" in result.words
    assert result.json["verdict"] == "valid" and result.json["scopes"] == ["read:items"]
    assert "rs-secret" not in result.text


def test_inspect_sends_an_opaque_token_to_introspection_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint_opaque(scope="read:items")
    options = _introspecting(monkeypatch, bearer_issuer)
    result = _inspect(capsys, bearer_issuer, token, "--json", *options)
    assert result.json["verdict"] == "valid"
    assert bearer_issuer.requests[bearer_issuer.introspection_path] == 1


def test_opaque_revoked_is_inactive(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint_opaque()
    bearer_issuer.revoke(token)
    result = _inspect(capsys, bearer_issuer, token, *_introspecting(monkeypatch, bearer_issuer))
    assert result.code == EXIT_INVALID
    assert result.status("active") == "fail" and "not active: expired, revoked" in result.words
    assert result.reason == "inactive"


def test_opaque_with_refused_credentials_is_unavailable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bearer_issuer: TestIssuer
) -> None:
    monkeypatch.setenv("BG_TEST_SECRET", "wrong")
    options = ("--client-id", "resource-server", "--client-secret-env", "BG_TEST_SECRET")
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint_opaque(), *options)
    assert result.code == EXIT_UNAVAILABLE
    assert "HTTP 401" in result.words and 'credentials of client "resource-server"' in result.words
    assert "wrong" not in result.text


def test_opaque_wrong_audience_in_the_introspection_answer(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint_opaque(audience="https://other.example.com")
    result = _inspect(capsys, bearer_issuer, token, *_introspecting(monkeypatch, bearer_issuer))
    assert result.code == EXIT_INVALID
    assert result.status("aud") == "fail" and result.reason == "bad_aud"


def test_oversized(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    token = bearer_issuer.mint({"padding": "x" * 9000})
    result = _inspect(capsys, bearer_issuer, token)
    assert result.code == EXIT_INVALID
    assert (
        f"the token is {len(token):,} characters; bearerguard refuses anything over 8,192"
        in result.words
    )
    assert result.json["claims"] is None  # not even decoded
    assert sum(bearer_issuer.requests.values()) == 0
    assert result.reason == "too_large"


def test_malformed_json(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    good = bearer_issuer.mint()
    head, _, signature = good.split(".")
    duplicated = _b64(b'{"iss": "x", "iss": "y"}')
    token = f"{head}.{duplicated}.{signature}"
    result = _inspect(capsys, bearer_issuer, token)
    assert result.code == EXIT_INVALID
    assert "the claims part is not a strict JSON object: duplicate member name" in result.words
    assert result.reason == "malformed"


def test_missing_exp(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint(expires_in=None))
    assert result.code == EXIT_INVALID
    assert "the token has no exp claim" in result.words and "valid forever" in result.words
    assert result.reason == "bad_exp"


def test_missing_rfc9068_claims(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    result = _inspect(
        capsys, bearer_issuer, bearer_issuer.mint(drop=("client_id", "jti")), "--rfc9068"
    )
    assert result.code == EXIT_INVALID
    assert 'missing required claim(s) ["client_id", "jti"] (RFC 9068 mode)' in result.words
    assert result.reason == "missing_claim"


def test_several_faults_are_all_reported(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    token = bearer_issuer.mint_expired({"aud": "https://elsewhere.example.com"})
    result = _inspect(capsys, bearer_issuer, token)
    assert result.status("aud") == "fail" and result.status("exp") == "fail"
    # The verdict is the validator's: its first failing rule.
    assert result.reason == "bad_aud"


def test_jku_in_the_header_is_ignored(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    evil = "https://attacker.example/jwks.json"
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint(headers={"jku": evil}))
    assert result.code == EXIT_VALID
    assert result.status("jku") == "info"
    assert f'ignored: jku "{evil}" names a key source' in result.words


# -- the issuer, upstream -----------------------------------------------------------------


def test_issuer_down_exits_3(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    token = bearer_issuer.mint()
    bearer_issuer.outage()
    result = _inspect(capsys, bearer_issuer, token)
    assert result.code == EXIT_UNAVAILABLE
    assert result.status("metadata") == "fail"
    assert "could not get the issuer's metadata from" in result.words
    assert ": HTTP 503. The middleware answers 503 with Retry-After" in result.words
    assert result.reason == "jwks_unavailable"


def test_jwks_down_names_the_jwks_uri(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    bearer_issuer.route(bearer_issuer.jwks_path, status=500, body={"error": "oops"})
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint())
    assert result.code == EXIT_UNAVAILABLE
    assert result.status("metadata") == "pass"
    assert result.status("keys") == "fail"
    assert (
        f"could not get the issuer's keys from {bearer_issuer.jwks_uri}: HTTP 500" in result.words
    )


def test_metadata_for_another_issuer_is_refused(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    bearer_issuer.serve_metadata({**bearer_issuer.metadata(), "issuer": "https://evil.example.com"})
    result = _inspect(capsys, bearer_issuer, bearer_issuer.mint())
    assert result.code == EXIT_UNAVAILABLE
    assert "metadata issuer does not equal the configured issuer" in result.words


def test_issuer_not_listening_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    issuer = TestIssuer()
    token = issuer.mint()
    issuer.close()
    result = _inspect(capsys, issuer, token)
    assert result.code == EXIT_UNAVAILABLE
    assert "network error: ConnectError" in result.words


def test_jwks_uri_skips_discovery(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    result = _inspect(
        capsys, bearer_issuer, bearer_issuer.mint(), "--jwks-uri", bearer_issuer.jwks_uri
    )
    assert result.code == EXIT_VALID
    assert bearer_issuer.requests[bearer_issuer.discovery_path] == 0
    assert result.status("metadata") == "skip"


def test_keys_only_from_the_configured_issuer(
    capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer
) -> None:
    with TestIssuer() as other:
        token = other.mint(headers={"jku": other.jwks_uri})
        result = _inspect(capsys, bearer_issuer, token)
        assert sum(other.requests.values()) == 0
    assert result.code == EXIT_INVALID


# -- input and output ------------------------------------------------------------------------


def test_json_output(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    token = bearer_issuer.mint_expired()
    result = _run(capsys, bearer_issuer, token, "--json")
    report = result.json
    assert result.code == EXIT_INVALID
    assert report["verdict"] == "invalid" and report["reason"] == "expired"
    assert report["exit_code"] == EXIT_INVALID
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert checks["exp"]["status"] == "fail" and checks["exp"]["reason"] == "expired"
    assert checks["signature"]["status"] == "pass"
    assert report["token"]["length"] == len(token)  # type: ignore[index]
    assert isinstance(report["claims"], dict) and report["claims"]["sub"] == "test-user"


def test_token_from_stdin_in_a_real_process(bearer_issuer: TestIssuer) -> None:
    token = bearer_issuer.mint(scope="read:items")
    completed = subprocess.run(
        [sys.executable, "-m", "bearerguard", "inspect", "-", "--issuer", bearer_issuer.issuer,
         "--audience", bearer_issuer.audience],
        input=f"Authorization: Bearer {token}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert completed.returncode == EXIT_VALID, completed.stderr
    assert "VALID" in completed.stdout
    assert token not in completed.stdout + completed.stderr


def test_token_as_argument(capsys: pytest.CaptureFixture[str], bearer_issuer: TestIssuer) -> None:
    token = bearer_issuer.mint()
    code = cli_main(
        ["inspect", token, "--issuer", bearer_issuer.issuer, "--audience", bearer_issuer.audience]
    )
    out = capsys.readouterr().out
    assert code == EXIT_VALID and token not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["-", "--audience", "a"],  # no --issuer
        ["-", "--issuer", "http://127.0.0.1:1"],  # no --audience
        ["-", "--issuer", "http://idp.example.com", "--audience", "a"],  # http, not loopback
        ["-", "--issuer", "https://idp.example.com", "--audience", "a", "--algorithms", "none"],
        ["-", "--issuer", "https://idp.example.com", "--audience", "a", "--algorithms", "HS256"],
        ["-", "--issuer", "https://idp.example.com", "--audience", "a", "--leeway", "-1"],
        ["-", "--issuer", "https://idp.example.com", "--audience", "a", "--client-id", "c"],
        [
            "-",
            "--issuer",
            "https://idp.example.com",
            "--audience",
            "a",
            "--client-id",
            "c",
            "--client-secret-env",
            "BG_SURELY_NOT_SET",
        ],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert inspect_main(argv, stdin=io.StringIO("abc")) == EXIT_USAGE
    assert capsys.readouterr().err


def test_empty_stdin_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-", "--issuer", "https://idp.example.com", "--audience", "a"]
    assert inspect_main(argv, stdin=io.StringIO("  \n")) == EXIT_USAGE
    assert "no token given on stdin" in capsys.readouterr().err


def test_demo_command_still_dispatches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["demo", "--help"])
    assert exited.value.code == 0
    assert "--self-test" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["frobnicate"]) == EXIT_USAGE
    assert "unknown command" in capsys.readouterr().err


# -- the explanation and the middleware's verdict are one ------------------------------------


@pytest.mark.anyio
async def test_the_validators_reason_is_always_among_the_failed_checks(
    bearer_issuer: TestIssuer,
) -> None:
    from bearerguard._config import Issuer
    from bearerguard._diagnose import diagnose

    now = int(time.time())
    tokens = {
        "expired": bearer_issuer.mint_expired(),
        "nbf": bearer_issuer.mint_not_yet_valid(),
        "iat": bearer_issuer.mint({"iat": now + 600}),
        "aud": bearer_issuer.mint_wrong_audience(),
        "iss": bearer_issuer.mint_wrong_issuer(),
        "none": bearer_issuer.mint_alg_none(),
        "kid": bearer_issuer.mint_unknown_key(),
        "sig": bearer_issuer.mint_tampered(),
        "typ": bearer_issuer.mint(headers={"typ": "logout+jwt"}),
        "crit": bearer_issuer.mint(headers={"crit": ["b64"]}),
        "exp": bearer_issuer.mint(expires_in=None),
        "exp-string": bearer_issuer.mint({"exp": str(now + 60)}),
        "kid-number": bearer_issuer.mint(kid=7),
        "scope-number": bearer_issuer.mint({"scope": 5}),
        "sub-number": bearer_issuer.mint({"sub": 5}),
        "several": bearer_issuer.mint_expired({"aud": [], "iss": 1}),
        "opaque": bearer_issuer.mint_opaque(),
        "jwe": "a.b.c.d.e",
        "bad-chars": "a+b.c/d.e=",
    }
    config = Issuer(bearer_issuer.issuer, bearer_issuer.audience, opaque="reject")
    for name, token in tokens.items():
        report = await diagnose(token, config)
        assert report.verdict == "invalid", name
        assert report.reason in {c.reason for c in report.failed}, (name, report.checks)


def test_hostile_input_never_crashes(capsys: pytest.CaptureFixture[str]) -> None:
    # No issuer is needed: none of these gets as far as asking for keys.
    issuer = "https://idp.example.com"
    for token in [
        "\x1b[31mred",
        "é.é.é",
        "..",
        "a..b",
        "." * 4,
        "eyJ.eyJ.eyJ",
        _b64(b"[1]") + "." + _b64(b"{}") + ".c2ln",
        _b64(b'{"alg":"RS256"}') + "." + _b64(b'{"exp": 1e999}') + ".c2ln",
        _b64(b'{"alg":"RS256"}') + "." + _b64(b"[" * 5000 + b"]" * 5000) + ".c2ln",
        _b64(b"\xff\xfe") + "." + _b64(b"{}") + ".c2ln",
    ]:
        code = inspect_main(["-", "--issuer", issuer, "--audience", "a"], stdin=io.StringIO(token))
        out = capsys.readouterr().out
        assert code == EXIT_INVALID, (token, out)
        assert "\x1b" not in out


# -- --app: the configuration of the user's own application ----------------------------------

POOL = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz"
APP_MODULE = """
import httpx
from fastapi import FastAPI

from bearerguard import BearerAuthMiddleware, providers
from bearerguard.testing import TestIssuer

# Cognito and Okta, played at their real URLs; the app reaches them through the transport.
cognito = TestIssuer(issuer="{pool}", jwks_uri="{pool}/.well-known/jwks.json")
okta = TestIssuer(issuer="https://dev-1.okta.com/oauth2/default",
                  jwks_uri="https://dev-1.okta.com/oauth2/default/v1/keys",
                  audience="api://default")


class Both(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request):
        played = cognito if request.url.host.startswith("cognito") else okta
        return await played.transport().handle_async_request(request)


app = FastAPI()
app.add_middleware(
    BearerAuthMiddleware,
    issuers=[
        providers.cognito(region="eu-west-1", user_pool_id="eu-west-1_AbC123xyz",
                          client_ids=["app1"]),
        providers.okta(domain="dev-1.okta.com", audience="api://default"),
    ],
    http_client=httpx.AsyncClient(transport=Both()),
    max_token_length=4000,
)
"""


@pytest.fixture
def user_app(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> object:
    import importlib
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "orders_api.py").write_text(APP_MODULE.replace("{pool}", POOL))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)
    sys.modules.pop("orders_api", None)
    module = importlib.import_module("orders_api")
    yield module
    module.cognito.close()
    module.okta.close()
    sys.modules.pop("orders_api", None)


def _inspect_app(capsys: pytest.CaptureFixture[str], token: str, *extra: str) -> Result:
    code = inspect_main(["-", "--app", "orders_api:app", *extra], stdin=io.StringIO(token))
    captured = capsys.readouterr()
    assert token not in captured.out and token not in captured.err
    return Result(code, captured.out, captured.err)


def test_inspect_app_takes_the_issuers_from_the_apps_own_middleware(
    user_app: object, capsys: pytest.CaptureFixture[str]
) -> None:
    cognito: TestIssuer = user_app.cognito  # type: ignore[attr-defined]
    access = {"client_id": "app1", "token_use": "access", "scope": "orders/read"}
    token = cognito.mint(access, audience=None, headers={"typ": None})
    result = _inspect_app(capsys, token)
    assert result.code == EXIT_VALID, result.out + result.err
    assert f"issuer     {POOL}   clients app1" in result.out
    assert "VALID" in result.out and "orders/read" in result.out
    # The pool's ID token: the app's preset refuses it, so inspect does too.
    id_token = cognito.mint({"token_use": "id"}, audience="app1", drop=("client_id",))
    refused = _inspect_app(capsys, id_token, "--json")
    assert refused.code == EXIT_INVALID
    assert refused.json["reason"] == "bad_client"


def test_inspect_app_judges_a_token_by_the_issuer_it_names(
    user_app: object, capsys: pytest.CaptureFixture[str]
) -> None:
    okta: TestIssuer = user_app.okta  # type: ignore[attr-defined]
    token = okta.mint({"cid": "0oa1", "scp": ["orders:read"]}, drop=("client_id",))
    result = _inspect_app(capsys, token)
    assert result.code == EXIT_VALID, result.out + result.err
    assert "https://dev-1.okta.com/oauth2/default" in result.out


def test_inspect_app_uses_the_apps_token_size_cap(
    user_app: object, capsys: pytest.CaptureFixture[str]
) -> None:
    okta: TestIssuer = user_app.okta  # type: ignore[attr-defined]
    token = okta.mint({"cid": "0oa1", "padding": "x" * 4000}, drop=("client_id",))
    result = _inspect_app(capsys, token, "--json")
    assert (result.code, result.json["reason"]) == (EXIT_INVALID, "too_large")


def test_inspect_app_without_bearerguard_is_a_usage_error(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    (Path(str(tmp_path)) / "plain_api.py").write_text(
        "from fastapi import FastAPI\napp = FastAPI()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code = inspect_main(["x.y.z", "--app", "plain_api:app"])
    assert code == EXIT_USAGE
    assert "no BearerAuthMiddleware" in capsys.readouterr().err
    assert inspect_main(["x.y.z", "--app", "no_such_module_here:app"]) == EXIT_USAGE
    assert inspect_main(["x.y.z", "--app", "plain_api"]) == EXIT_USAGE


def test_inspect_without_app_needs_issuer_and_audience(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert inspect_main(["x.y.z", "--issuer", "https://idp.example.com"]) == EXIT_USAGE
    assert "--app" in capsys.readouterr().err


ENTRA_MODULE = """
import httpx
from fastapi import FastAPI

from bearerguard import BearerAuthMiddleware, providers
from bearerguard.testing import TestIssuer

login = "https://login.microsoftonline.com"
entra = TestIssuer(issuer=login + "/{tenantid}/v2.0",
                   metadata_url=login + "/common/v2.0/.well-known/openid-configuration",
                   jwks_uri=login + "/common/discovery/v2.0/keys", audience="{api}")
app = FastAPI()
app.add_middleware(
    BearerAuthMiddleware,
    issuers=[providers.entra(tenants=["{tenant}"], audience="{api}")],
    http_client=httpx.AsyncClient(transport=entra.transport()),
)
"""
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ENTRA_API = "6e74172b-be56-4843-9ff4-e66a39bb12e3"


def test_inspect_app_explains_an_issuer_template_as_the_validator_judges_it(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib
    from pathlib import Path

    source = ENTRA_MODULE.replace("{api}", ENTRA_API).replace('"{tenant}"', f'"{TENANT}"')
    (Path(str(tmp_path)) / "entra_api.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("entra_api", None)
    entra: TestIssuer = importlib.import_module("entra_api").entra
    try:
        claims = {"tid": TENANT, "azp": "client", "ver": "2.0", "scp": "Orders.Read"}
        token = entra.mint(claims, drop=("client_id",))
        code = inspect_main(["-", "--app", "entra_api:app"], stdin=io.StringIO(token))
        out = capsys.readouterr().out
        assert code == EXIT_VALID, out
        assert f'filled with tid "{TENANT}"' in out
        other = "0f5c8e2a-4b1d-4c3e-9a7f-6d2b1e0c9a88"
        token = entra.mint({**claims, "tid": other}, drop=("client_id",))
        code = inspect_main(["-", "--app", "entra_api:app"], stdin=io.StringIO(token))
        out = capsys.readouterr().out
        assert code == EXIT_INVALID
        assert f'tid "{other}" is not among the allowed tenants' in out
        assert "INVALID (bad_tenant)" in out
    finally:
        entra.close()
        sys.modules.pop("entra_api", None)
