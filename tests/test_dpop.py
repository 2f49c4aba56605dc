"""DPoP (RFC 9449) through the middleware: one test per rule, each named for the rule.

Tokens come from a real :class:`~bearerguard.testing.TestIssuer` on 127.0.0.1 and
proofs from :class:`~bearerguard.testing.DPoPKey`; the replay store tests use a real
``redis-server``. Each test asserts the answer a client gets (status, challenge,
body), not only that something was refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from bearerguard import BearerAuthMiddleware, Issuer, TokenValidator, require_scopes, token_of
from bearerguard.testing import DPoPKey, ManualClock, TestIssuer
from redis_server import RedisServer

pytestmark = pytest.mark.anyio

AUD = "https://api.example.com"
URL = "http://testserver/me"
SECRET = "a-dpop-nonce-secret-of-at-least-32-bytes!"
ALGS = 'algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA Ed25519"'


async def me(request: Request) -> JSONResponse:
    token = token_of(request)
    assert token is not None
    proof = request.scope.get("bearerguard.dpop")
    return JSONResponse({"sub": token.subject, "jkt": proof.jkt if proof else None})


Factory = Callable[..., BearerAuthMiddleware]


@pytest.fixture
async def build(test_issuer: TestIssuer) -> AsyncIterator[Factory]:
    """Middlewares (one per replica) around a one-route app, closed afterwards."""
    made: list[BearerAuthMiddleware] = []

    def make(*, clock: ManualClock | None = None, **options: Any) -> BearerAuthMiddleware:
        client_id, client_secret = test_issuer.introspection_client
        issuer = Issuer(
            issuer=test_issuer.issuer,
            audience=options.pop("audience", AUD),
            client_id=client_id,
            client_secret=client_secret,
        )
        validator = TokenValidator([issuer], clock=clock or time.time)
        app = Starlette(routes=[Route("/me", me, methods=["GET", "POST"])])
        middleware = BearerAuthMiddleware(app, validator=validator, **options)
        made.append(middleware)
        return middleware

    yield make
    for middleware in made:
        await middleware.aclose()


async def call(
    app: BearerAuthMiddleware,
    headers: dict[str, str],
    *,
    method: str = "GET",
    url: str = URL,
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.request(method, url, headers=headers)


def challenge(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


def assert_bad_proof(response: httpx.Response) -> None:
    """401 with the error on the DPoP challenge, the Bearer one only offered."""
    assert response.status_code == 401, response.text
    assert challenge(response).startswith(
        'Bearer realm="api", DPoP realm="api", error="invalid_dpop_proof"'
    )
    assert ALGS in challenge(response)
    assert response.json()["error"] == "invalid_dpop_proof"


@pytest.fixture
def key() -> DPoPKey:
    return DPoPKey()


# -- acceptance -----------------------------------------------------------------------


async def test_dpop_bound_token_with_its_proof_is_accepted(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    response = await call(build(), test_issuer.dpop_headers(key, "GET", URL, audience=AUD))
    assert response.status_code == 200, response.text
    assert response.json() == {"sub": "test-user", "jkt": key.thumbprint}


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "PS256", "RS256", "EdDSA"])
async def test_every_allowed_asymmetric_algorithm_verifies(
    build: Factory, test_issuer: TestIssuer, alg: str
) -> None:
    key = DPoPKey(alg)
    response = await call(build(), test_issuer.dpop_headers(key, "GET", URL, audience=AUD))
    assert response.status_code == 200, response.text


async def test_fully_specified_ed25519_alg_is_taken_on_its_curve_only(
    build: Factory, test_issuer: TestIssuer
) -> None:
    # RFC 9864 names EdDSA over Ed25519 "Ed25519"; DPoP clients (oauth4webapi) sign so.
    key = DPoPKey("EdDSA")
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    named = key.headers(token, "GET", URL, headers={"alg": "Ed25519"})
    assert (await call(build(), named)).status_code == 200
    wrong_curve = key.headers(token, "GET", URL, headers={"alg": "Ed448"})
    refused = await call(build(dpop_algorithms=["Ed448"]), wrong_curve)
    assert_bad_proof_with_algs(refused, 'algs="Ed448"')
    assert refused.json()["error_description"] == "The DPoP proof's jwk does not fit its algorithm"


async def test_bound_token_is_served_from_the_cache_but_every_proof_is_checked(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build()
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    for _ in range(3):
        assert (await call(app, key.headers(token, "GET", URL))).status_code == 200
    assert app.validator.cache.hits == 2  # validated once, then served from the cache
    bad = key.proof("GET", URL, token=token, signer=DPoPKey())
    assert_bad_proof(await call(app, {"Authorization": f"DPoP {token}", "DPoP": bad}))


# -- RFC 9449 §4.3: the proof ----------------------------------------------------------


async def test_dpop_scheme_without_a_proof_is_invalid_dpop_proof(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    assert_bad_proof(await call(build(), {"Authorization": f"DPoP {token}"}))


async def test_more_than_one_dpop_header_is_refused(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    proof = key.proof("GET", URL, token=token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof), ("DPoP", proof)]
    transport = httpx.ASGITransport(app=build())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get(URL, headers=headers)
    assert_bad_proof(response)


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", None])
async def test_proof_typ_must_be_dpop_jwt(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, typ: str | None
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    headers = key.headers(token, "GET", URL, headers={"typ": typ})
    assert_bad_proof(await call(build(), headers))


async def test_proof_alg_must_be_an_allowed_asymmetric_algorithm(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    unsigned = key.headers(token, "GET", URL, headers={"alg": "none"})
    assert_bad_proof(await call(build(), unsigned))
    hmac_alg = key.headers(token, "GET", URL, headers={"alg": "HS256"}, signer=None)
    assert_bad_proof(await call(build(), hmac_alg))
    only_eddsa = build(dpop_algorithms=["EdDSA"])
    response = await call(only_eddsa, key.headers(token, "GET", URL))
    assert_bad_proof_with_algs(response, 'algs="EdDSA"')


def assert_bad_proof_with_algs(response: httpx.Response, algs: str) -> None:
    assert response.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(response)
    assert challenge(response).endswith(algs)


async def test_proof_jwk_must_be_a_public_key(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    headers = key.headers(token, "GET", URL, headers={"jwk": key.private_jwk()})
    response = await call(build(), headers)
    assert_bad_proof(response)
    assert response.json()["error_description"] == "The DPoP proof's jwk must be a public key"


async def test_proof_without_jwk_or_with_a_jwk_unfit_for_its_alg_is_refused(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    app = build()
    assert_bad_proof(await call(app, key.headers(token, "GET", URL, headers={"jwk": None})))
    rsa = DPoPKey("RS256")
    mismatched = key.headers(token, "GET", URL, headers={"jwk": rsa.jwk})
    assert_bad_proof(await call(app, mismatched))


async def test_proof_rsa_keys_are_bounded_in_size_and_exponent(
    build: Factory, test_issuer: TestIssuer
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    def with_exponent(e: int) -> rsa.RSAPrivateKey:
        """A 2048-bit key with a public exponent no key generator would pick."""
        primes = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
        p, q = primes.p, primes.q
        lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
        while math.gcd(e, lam) != 1:
            e += 2
        d = pow(e, -1, lam)
        public = rsa.RSAPublicNumbers(e, p * q)
        numbers = rsa.RSAPrivateNumbers(
            p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
        )
        return numbers.private_key()

    app = build()
    for private, why in (
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "key size"),  # weak
        (with_exponent(2**32 + 1), "exponent"),  # every verification as slow as a signature
        (with_exponent(65539), "exponent"),  # past 65537: costlier than any client needs
    ):
        key = DPoPKey("RS256", private=private)
        token = test_issuer.mint(audience=AUD, dpop_key=key)
        response = await call(app, key.headers(token, "GET", URL))
        assert_bad_proof(response)
        assert why in response.json()["error_description"]


async def test_proof_rsa_keys_past_4096_bits_are_refused_before_any_verification(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    """A proof is verified before its token is judged: an 8192-bit key made every forged
    proof cost ~0.8 ms of CPU (17x ES256), with no valid token needed."""
    import base64
    import secrets

    def b64(number: int) -> str:
        raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    app = build()
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    for bits in (4104, 8192):
        modulus = secrets.randbits(bits) | (1 << (bits - 1)) | 1
        jwk = {"kty": "RSA", "n": b64(modulus), "e": "AQAB"}
        proof = key.proof("GET", URL, token=token, headers={"alg": "RS256", "jwk": jwk})
        response = await call(app, {"Authorization": f"DPoP {token}", "DPoP": proof})
        assert_bad_proof(response)
        assert (
            response.json()["error_description"] == "The DPoP proof's RSA key size is not accepted"
        )


async def test_proof_signature_must_verify_with_its_jwk(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    headers = key.headers(token, "GET", URL, signer=DPoPKey())
    response = await call(build(), headers)
    assert_bad_proof(response)
    assert response.json()["error_description"] == "The DPoP proof's signature is invalid"


async def test_proof_htm_must_match_the_request_method(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    response = await call(build(), key.headers(token, "GET", URL), method="POST")
    assert_bad_proof(response)
    assert "method" in response.json()["error_description"]


@pytest.mark.parametrize(
    "htu",
    [
        "http://testserver/other",
        "http://elsewhere.example/me",
        "https://testserver/me",
        "http://testserver:8080/me",
        "/me",
    ],
)
async def test_proof_htu_must_match_the_url_the_client_used(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, htu: str
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    response = await call(build(), key.headers(token, "GET", htu))
    assert_bad_proof(response)
    assert response.json()["error_description"] == "The DPoP proof is for another URL"
    assert "testserver" not in challenge(response)  # the URL we expected is never sent


@pytest.mark.parametrize(
    ("host", "htu"),
    [
        ("testserver/x", "http://testserver/x/me"),  # a path smuggled into Host
        ("u@testserver", "http://u@testserver/me"),  # user info
        ("[", "not a url"),  # two unparseable URLs are not the same URL
        ("testserver:99999", "http://testserver:99999/me?x"),  # no such port
    ],
)
async def test_proof_htu_never_matches_a_host_header_that_is_not_a_host(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, host: str, htu: str
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    proof = key.proof("GET", URL, token=token, claims={"htu": htu})
    response = await call(build(), {"Authorization": f"DPoP {token}", "DPoP": proof, "Host": host})
    assert_bad_proof(response)
    assert response.json()["error_description"] == "The DPoP proof is for another URL"


def test_htm_and_htu_refusals_record_what_was_expected_for_explanations(key: DPoPKey) -> None:
    import hashlib

    from bearerguard._dpop import DPoPGuard, DPoPPolicy
    from bearerguard._errors import InvalidDPoPProof

    guard = DPoPGuard(DPoPPolicy(), identity="explained")
    scope = {"method": "GET", "scheme": "http", "raw_path": b"/me", "headers": []}
    scope["headers"] = [(b"host", b"testserver")]
    digest = hashlib.sha256(b"t").digest()
    for proof, claim, expected, found in (
        (
            key.proof("GET", "http://testserver/other", token="t"),
            "htu",
            URL,
            "http://testserver/other",
        ),
        (key.proof("PUT", URL, token="t"), "htm", "GET", "PUT"),
    ):
        with pytest.raises(InvalidDPoPProof) as refused:
            guard.check(
                {**scope, "headers": [*scope["headers"], (b"dpop", proof.encode())]}, digest
            )
        assert (refused.value.claim, refused.value.expected, refused.value.found) == (
            claim,
            expected,
            found,
        )


@pytest.mark.parametrize(
    "htu",
    [
        "http://testserver/me?x=1#frag",  # query and fragment are not compared
        "HTTP://TestServer:80/me",  # RFC 3986 §6.2.2 and §6.2.3 normalization
        "http://testserver/%6De",  # percent-encoded unreserved character
    ],
)
async def test_proof_htu_is_compared_without_query_and_fragment_after_normalization(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, htu: str
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    proof = key.proof("GET", URL, token=token, claims={"htu": htu})
    response = await call(
        build(), {"Authorization": f"DPoP {token}", "DPoP": proof}, url=URL + "?page=2"
    )
    assert response.status_code == 200, response.text


async def test_htu_is_checked_against_public_url_behind_a_proxy(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build(public_url="https://api.example.com/v1")
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    public = key.headers(token, "GET", "https://api.example.com/v1/me")
    assert (await call(app, public)).status_code == 200
    internal = key.headers(token, "GET", URL)  # what the app sees, not what the client used
    assert_bad_proof(await call(app, internal))


@pytest.mark.parametrize("age", [301 + 60, -61])
async def test_proof_iat_must_be_within_the_window(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, age: int
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    response = await call(build(), key.headers(token, "GET", URL, iat=time.time() - age))
    assert_bad_proof(response)
    assert response.json()["error_description"] == "The DPoP proof is too old or from the future"


async def test_dpop_max_age_sets_the_window(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    app = build(dpop_max_age=10)
    assert (
        await call(app, key.headers(token, "GET", URL, iat=time.time() - 30))
    ).status_code == 200
    assert_bad_proof(await call(app, key.headers(token, "GET", URL, iat=time.time() - 100)))


async def test_proof_ath_must_be_the_hash_of_the_token(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    other = test_issuer.mint(audience=AUD, dpop_key=key)
    app = build()
    for proof in (key.proof("GET", URL, token=other), key.proof("GET", URL)):
        response = await call(app, {"Authorization": f"DPoP {token}", "DPoP": proof})
        assert_bad_proof(response)
        assert response.json()["error_description"] == "The DPoP proof is not for this access token"


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
async def test_proof_without_a_required_claim_is_refused(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, claim: str
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    assert_bad_proof(await call(build(), key.headers(token, "GET", URL, claims={claim: None})))


async def test_proof_with_crit_header_is_refused(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    assert_bad_proof(await call(build(), key.headers(token, "GET", URL, headers={"crit": ["x"]})))


# -- RFC 9449 §6 and §7: the binding ------------------------------------------------------


async def test_proof_key_must_be_the_key_the_token_is_bound_to(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    thief = DPoPKey()
    response = await call(build(), thief.headers(token, "GET", URL))
    assert response.status_code == 401
    assert challenge(response).startswith(
        'Bearer realm="api", DPoP realm="api", error="invalid_token"'
    )
    assert response.json()["error"] == "invalid_token"


def test_jkt_is_the_rfc_7638_thumbprint_of_the_proof_key() -> None:
    from bearerguard._dpop import jwk_thumbprint

    # RFC 7638 §3.1 and the key of RFC 9449's example proof (§4.1, bound in §6.1).
    rfc7638 = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
        "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YG"
        "jQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
        "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    rfc9449 = {
        "kty": "EC",
        "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
        "crv": "P-256",
    }
    for jwk, expected in (
        (rfc7638, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"),
        (rfc9449, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"),
    ):
        assert jwk_thumbprint(jwk) == expected
        helper = DPoPKey("ES256")
        helper.jwk = jwk  # the testing helper computes it on its own: both must agree
        assert helper.thumbprint == expected


async def test_dpop_bound_token_sent_as_bearer_is_refused(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    response = await call(
        build(), {"Authorization": f"Bearer {token}", "DPoP": key.proof("GET", URL, token=token)}
    )
    assert response.status_code == 401
    assert challenge(response).startswith('Bearer realm="api", error="invalid_token"')
    assert challenge(response).endswith(f'DPoP realm="api", {ALGS}')


async def test_unbound_token_with_the_dpop_scheme_is_refused(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD)
    response = await call(build(), key.headers(token, "GET", URL))
    assert response.status_code == 401
    assert 'DPoP realm="api", error="invalid_token"' in challenge(response)
    assert response.json()["error_description"] == "The access token is not bound to a DPoP key"


async def test_introspected_token_with_cnf_jkt_is_bound_the_same_way(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build()
    opaque = test_issuer.mint_opaque(audience=AUD, dpop_key=key)
    first = await call(app, key.headers(opaque, "GET", URL))
    assert first.status_code == 200, first.text
    thief = DPoPKey()
    assert (await call(app, thief.headers(opaque, "GET", URL))).status_code == 401
    as_bearer = await call(app, {"Authorization": f"Bearer {opaque}"})
    assert as_bearer.status_code == 401


# -- RFC 9449 §11.1: replay ----------------------------------------------------------------


async def test_proof_jti_is_accepted_once(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build()
    headers = test_issuer.dpop_headers(key, "GET", URL, audience=AUD)
    assert (await call(app, headers)).status_code == 200
    replayed = await call(app, headers)
    assert_bad_proof(replayed)
    assert replayed.json()["error_description"] == "The DPoP proof was already used"


async def test_a_refused_request_does_not_use_up_its_proof(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build()
    token = test_issuer.mint(audience=AUD, dpop_key=key, scope="read")
    proof = key.proof("GET", URL, token=token)
    wrong_token = test_issuer.mint(audience="https://other.example.com", dpop_key=key)
    response = await call(app, {"Authorization": f"DPoP {wrong_token}", "DPoP": proof})
    assert response.status_code == 401  # ath mismatch, jti not spent
    assert (await call(app, {"Authorization": f"DPoP {token}", "DPoP": proof})).status_code == 200


async def test_replay_store_in_redis_is_shared_by_replicas(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, server: RedisServer
) -> None:
    one, two = build(dpop_replay_storage=server.url), build(dpop_replay_storage=server.url)
    headers = test_issuer.dpop_headers(key, "GET", URL, audience=AUD)
    assert (await call(one, headers)).status_code == 200
    assert_bad_proof(await call(two, headers))


async def test_replay_store_is_keyed_by_the_api_so_apis_sharing_redis_never_collide(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, server: RedisServer
) -> None:
    other_aud = "https://other.example.com"
    api = build(dpop_replay_storage=server.url)
    other = build(dpop_replay_storage=server.url, audience=other_aud)
    mine = test_issuer.mint(audience=AUD, dpop_key=key)
    theirs = test_issuer.mint(audience=other_aud, dpop_key=key)
    jti = "the-same-jti-twice"
    assert (await call(api, key.headers(mine, "GET", URL, jti=jti))).status_code == 200
    assert (await call(other, key.headers(theirs, "GET", URL, jti=jti))).status_code == 200


async def test_replay_store_outage_fails_open_by_default_and_closed_when_rate_limits_do(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, server: RedisServer
) -> None:
    fail_open = build(dpop_replay_storage=server.url)
    fail_closed = build(dpop_replay_storage=server.url, rate_limit_fail_closed=True)
    server.kill()
    response = await call(fail_open, test_issuer.dpop_headers(key, "GET", URL, audience=AUD))
    assert response.status_code == 200
    assert fail_open.dpop is not None and fail_open.dpop.replay.errors == 1
    response = await call(fail_closed, test_issuer.dpop_headers(key, "GET", URL, audience=AUD))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "temporarily_unavailable"


async def test_a_full_in_process_replay_store_refuses_never_evicts_and_never_passes(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    # Failing open on a full store would let any proof be replayed by whoever filled it:
    # it is a 503 whatever rate_limit_fail_closed says, and nothing is evicted early.
    fail_open, fail_closed = build(), build(rate_limit_fail_closed=True)
    for app in (fail_open, fail_closed):
        assert app.dpop is not None and app.dpop.replay._memory is not None
        app.dpop.replay._memory.limit = 1  # a million in production; one here
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    for app in (fail_open, fail_closed):
        first = key.headers(token, "GET", URL)
        assert (await call(app, first)).status_code == 200
        assert_bad_proof(await call(app, first))  # still remembered: never evicted
        refused = await call(app, key.headers(token, "GET", URL))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert fail_open.dpop is not None and fail_open.dpop.replay.errors == 1


async def test_one_proof_key_cannot_fill_the_in_process_replay_store(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build()
    assert app.dpop is not None and app.dpop.replay._memory is not None
    app.dpop.replay._memory.per_key = 2  # an eighth of the store in production
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    for _ in range(2):
        assert (await call(app, key.headers(token, "GET", URL))).status_code == 200
    flooding = await call(app, key.headers(token, "GET", URL))
    assert_bad_proof(flooding)  # that client's own proofs are refused (401), nobody else's
    other = DPoPKey()
    theirs = test_issuer.mint(audience=AUD, dpop_key=other)
    assert (await call(app, other.headers(theirs, "GET", URL))).status_code == 200


async def test_dpop_refusals_and_replay_store_outages_are_counted_in_metrics(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, server: RedisServer
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bearerguard.metrics import PrometheusObserver

    registry = CollectorRegistry()
    app = build(dpop_replay_storage=server.url, observer=PrometheusObserver(registry))
    headers = test_issuer.dpop_headers(key, "GET", URL, audience=AUD)
    assert (await call(app, headers)).status_code == 200
    assert (await call(app, headers)).status_code == 401  # replayed
    server.kill()
    assert (
        await call(app, test_issuer.dpop_headers(key, "GET", URL, audience=AUD))
    ).status_code == 200
    text = generate_latest(registry).decode()
    assert 'bearerguard_validations_total{outcome="rejected",reason="dpop_replayed"} 1.0' in text
    assert "bearerguard_dpop_replay_store_errors_total 1.0" in text


# -- RFC 9449 §8: server nonces ------------------------------------------------------------


async def test_dpop_nonce_asks_for_a_nonce_with_use_dpop_nonce_and_the_header(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build(dpop_nonce=True, dpop_nonce_secret=SECRET)
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    first = await call(app, key.headers(token, "GET", URL))
    assert first.status_code == 401
    assert 'DPoP realm="api", error="use_dpop_nonce"' in challenge(first)
    nonce = first.headers["dpop-nonce"]
    second = await call(app, key.headers(token, "GET", URL, nonce=nonce))
    assert second.status_code == 200, second.text
    wrong = await call(app, key.headers(token, "GET", URL, nonce="not-our-nonce"))
    assert wrong.status_code == 401 and wrong.headers["dpop-nonce"] == nonce


async def test_dpop_nonces_are_valid_across_replicas_with_the_same_secret(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    one = build(dpop_nonce=True, dpop_nonce_secret=SECRET)
    two = build(dpop_nonce=True, dpop_nonce_secret=SECRET)
    stranger = build(dpop_nonce=True, dpop_nonce_secret=SECRET.upper())
    other_api = build(dpop_nonce=True, dpop_nonce_secret=SECRET, audience="https://other.example")
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    nonce = (await call(one, key.headers(token, "GET", URL))).headers["dpop-nonce"]
    assert (await call(two, key.headers(token, "GET", URL, nonce=nonce))).status_code == 200
    refused = await call(stranger, key.headers(token, "GET", URL, nonce=nonce))
    assert refused.status_code == 401 and 'error="use_dpop_nonce"' in challenge(refused)
    # The same secret on another API (keyed by who asks) makes other nonces.
    theirs = test_issuer.mint(audience="https://other.example", dpop_key=key)
    elsewhere = await call(other_api, key.headers(theirs, "GET", URL, nonce=nonce))
    assert elsewhere.status_code == 401 and 'error="use_dpop_nonce"' in challenge(elsewhere)


async def test_dpop_nonces_rotate_and_a_fresh_one_is_handed_out_before_the_old_expires(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    clock = ManualClock(time.time())
    app = build(clock=clock, dpop_nonce=True, dpop_nonce_secret=SECRET)
    token = test_issuer.mint(audience=AUD, dpop_key=key, expires_in=3600)
    old = (await call(app, key.headers(token, "GET", URL))).headers["dpop-nonce"]
    clock.advance(300)  # one lifetime: the old nonce is still good, a new one is offered
    fresh = await call(app, key.headers(token, "GET", URL, nonce=old, iat=clock.now))
    assert fresh.status_code == 200
    new = fresh.headers["dpop-nonce"]
    assert new != old
    clock.advance(300)  # two lifetimes: the old nonce is gone
    stale = await call(app, key.headers(token, "GET", URL, nonce=old, iat=clock.now))
    assert stale.status_code == 401 and 'error="use_dpop_nonce"' in challenge(stale)
    assert (
        await call(app, key.headers(token, "GET", URL, nonce=new, iat=clock.now))
    ).status_code == 200


def test_dpop_nonce_needs_a_secret_of_256_bits(test_issuer: TestIssuer) -> None:
    app = Starlette()
    with pytest.raises(ValueError, match="dpop_nonce_secret"):
        BearerAuthMiddleware(app, issuer=test_issuer.issuer, audience=AUD, dpop_nonce=True)
    with pytest.raises(ValueError, match="32 bytes"):
        BearerAuthMiddleware(
            app, issuer=test_issuer.issuer, audience=AUD, dpop_nonce=True, dpop_nonce_secret="short"
        )


# -- modes and challenges (RFC 9449 §7.1, §7.2) ------------------------------------------------


async def test_challenge_offers_bearer_and_dpop_when_both_are_allowed(build: Factory) -> None:
    response = await call(build(), {})
    assert response.status_code == 401
    assert challenge(response) == f'Bearer realm="api", DPoP realm="api", {ALGS}'


async def test_dpop_required_refuses_bearer_tokens_and_offers_only_dpop(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build(dpop="required", dpop_algorithms=["ES256"])
    bearer = await call(app, test_issuer.auth_header(audience=AUD))
    assert bearer.status_code == 401
    assert challenge(bearer).startswith('DPoP realm="api", error="invalid_token"')
    assert "Bearer" not in challenge(bearer)
    assert challenge(await call(app, {})) == 'DPoP realm="api", algs="ES256"'
    assert (
        await call(app, test_issuer.dpop_headers(key, "GET", URL, audience=AUD))
    ).status_code == 200


async def test_dpop_disabled_reads_no_proof_and_refuses_bound_tokens(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    app = build(dpop="disabled")
    assert app.dpop is None
    response = await call(app, test_issuer.dpop_headers(key, "GET", URL, audience=AUD))
    assert response.status_code == 401
    assert challenge(response) == 'Bearer realm="api"'  # DPoP is "no credentials" here
    assert (await call(app, test_issuer.auth_header(audience=AUD))).status_code == 200


async def test_insufficient_scope_on_a_dpop_request_is_answered_on_the_dpop_challenge(
    test_issuer: TestIssuer, key: DPoPKey
) -> None:
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({})

    from fastapi import Depends, FastAPI

    api = FastAPI()

    @api.get("/admin", dependencies=[Depends(require_scopes("admin"))])
    async def route() -> dict[str, str]:
        return {}

    api.add_middleware(BearerAuthMiddleware, issuer=test_issuer.issuer, audience=AUD)
    url = "http://testserver/admin"
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get(
            url, headers=test_issuer.dpop_headers(key, "GET", url, audience=AUD)
        )
    assert response.status_code == 403
    assert challenge(response) == (
        f'Bearer realm="api", DPoP realm="api", error="insufficient_scope", '
        f'error_description="The access token lacks a required scope", scope="admin", {ALGS}'
    )


@pytest.mark.parametrize("htu", ["http://testserver/ws", "ws://testserver/ws"])
def test_websocket_handshake_takes_a_dpop_proof_and_is_denied_without_one(
    test_issuer: TestIssuer, key: DPoPKey, htu: str
) -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        token = token_of(websocket)
        await websocket.send_json({"sub": token.subject if token else None})
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", ws)])
    app.add_middleware(BearerAuthMiddleware, issuer=test_issuer.issuer, audience=AUD)
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    with TestClient(app) as client:
        with client.websocket_connect("/ws", headers=key.headers(token, "GET", htu)) as socket:
            assert socket.receive_json() == {"sub": "test-user"}
        with pytest.raises(WebSocketDenialResponse) as denied:
            thief = DPoPKey().headers(token, "GET", htu)
            with client.websocket_connect("/ws", headers=thief):
                pass
    assert denied.value.status_code == 401
    assert 'DPoP realm="api", error="invalid_token"' in denied.value.headers["www-authenticate"]


@pytest.mark.parametrize(
    "proof",
    [
        "",
        "x",
        "a.b.c",
        "e30.e30.",
        "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.AAAA",
        "\u0000.\u0000.\u0000",
        "." * 5000,
        "A" * 9000,
    ],
)
async def test_hostile_proofs_are_401_never_5xx(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey, proof: str
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    response = await call(build(), {"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] in ("invalid_dpop_proof", "invalid_request")


async def test_hostile_proof_contents_are_401_never_5xx(
    build: Factory, test_issuer: TestIssuer, key: DPoPKey
) -> None:
    token = test_issuer.mint(audience=AUD, dpop_key=key)
    app = build()
    weird_claims: list[dict[str, Any]] = [
        {"iat": "now"},
        {"iat": True},
        {"iat": 10**30},
        {"htu": 7},
        {"htu": "http://[::1"},
        {"htm": ["GET"]},
        {"jti": 1},
        {"jti": "x" * 1000},
        {"ath": 5},
    ]
    weird_headers: list[dict[str, Any]] = [
        {"jwk": "string"},
        {"jwk": {"kty": "EC", "crv": "P-256", "x": 1, "y": 2}},
        {"jwk": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}},
        {"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}},
        {"alg": 5},
        {"typ": 5},
    ]
    for claims in weird_claims:
        response = await call(app, key.headers(token, "GET", URL, claims=claims))
        assert response.status_code == 401, (claims, response.text)
    for headers in weird_headers:
        response = await call(app, key.headers(token, "GET", URL, headers=headers))
        assert response.status_code == 401, (headers, response.text)


def test_dpop_policy_repr_hides_the_nonce_secret_and_the_replay_store_password(
    test_issuer: TestIssuer,
) -> None:
    app = BearerAuthMiddleware(
        Starlette(),
        issuer=test_issuer.issuer,
        audience=AUD,
        dpop_nonce=True,
        dpop_nonce_secret=SECRET,
        dpop_replay_storage="redis://:hunter2@127.0.0.1:6379/0",
    )
    assert app.dpop is not None
    shown = repr(app.dpop.policy)
    assert SECRET not in shown and "hunter2" not in shown
    assert "nonce_secret='***'" in shown and "redis://:***@127.0.0.1:6379/0" in shown
