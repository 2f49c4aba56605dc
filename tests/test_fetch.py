"""fetch.py: every limit on talking to an authorization server, each against a real server."""

from __future__ import annotations

import base64
import gzip
from urllib.parse import parse_qs

import httpx
import pytest

from bearerguard._backoff import Backoff
from bearerguard._config import FetchPolicy
from bearerguard._fetch import MAX_REDIRECTS, UpstreamError, fetch_json, max_age_from_headers
from bearerguard._urls import check_url
from bearerguard.testing import RecordedRequest, Response, TestIssuer

POLICY = FetchPolicy(timeout=5.0)


# -- which URLs may be fetched ------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/jwks",
        "https://idp.example.com:8443/t/.well-known/x",
        "HTTPS://IDP/",
    ],
)
def test_https_urls_are_accepted(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/jwks",
        "http://127.10.20.30:8080/",
        "http://[::1]:9000/jwks",
        "http://localhost/jwks",
        "http://LocalHost:1/",
    ],
)
def test_plain_http_is_accepted_for_loopback_hosts(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.com/jwks",
        "http://10.0.0.1/jwks",
        "http://192.168.1.1/",
        "http://127.0.0.1.nip.io/jwks",
        "http://localhost.example.com/",
        "http://[::2]/",
    ],
)
def test_plain_http_on_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@idp.example.com/jwks",
        "https://user@idp.example.com/",
        "http://a@127.0.0.1/",
    ],
)
def test_urls_with_user_information_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="user information"):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://idp.example.com/jwks",
        "file:///etc/passwd",
        "//idp.example.com/jwks",
        "https:///jwks",
        "https://idp.example.com:99999/",
        "https://idp.example.com/jw ks",
        "https://idp.example.com/\r\nX: y",
    ],
)
def test_other_schemes_and_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_url(url)


@pytest.mark.anyio
async def test_a_refused_url_is_never_requested(http_client: httpx.AsyncClient) -> None:
    with pytest.raises(UpstreamError) as info:
        await fetch_json(http_client, "http://idp.example.com/jwks", policy=POLICY)
    assert info.value.retryable is False


# -- a good answer ------------------------------------------------------------------


@pytest.mark.anyio
async def test_fetch_returns_the_document_status_and_lifetime(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.cache_control("public, max-age=600")
    result = await fetch_json(http_client, test_issuer.jwks_uri, policy=POLICY)
    assert result.status == 200
    assert result.document == test_issuer.jwks()
    assert result.max_age == 600


@pytest.mark.anyio
async def test_client_identifies_itself_and_asks_for_json(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    await fetch_json(http_client, test_issuer.jwks_uri, policy=POLICY)
    request = test_issuer.received[-1]
    assert request.headers["user-agent"].startswith("bearerguard")
    assert request.headers["accept"] == "application/json"
    assert http_client.follow_redirects is False


@pytest.mark.anyio
async def test_post_sends_the_form_and_form_encoded_basic_credentials(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    def introspect(request: RecordedRequest) -> Response:
        return Response(200, {"active": True})

    test_issuer.add_handler("POST", "/introspect", introspect)
    result = await fetch_json(
        http_client,
        test_issuer.url("/introspect"),
        policy=POLICY,
        method="POST",
        data={"token": "abc", "token_type_hint": "access_token"},
        auth=("my client", "s&cret:1"),
    )
    assert result.document == {"active": True}
    request = test_issuer.received[-1]
    assert request.method == "POST"
    assert parse_qs(request.body.decode()) == {
        "token": ["abc"],
        "token_type_hint": ["access_token"],
    }
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    # RFC 6749 §2.3.1: each part form-encoded before Basic encoding.
    assert base64.b64decode(encoded).decode() == "my+client:s%26cret%3A1"


@pytest.mark.anyio
async def test_accept_status_lets_a_caller_read_other_answers(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route("/x", status=400, body={"error": "invalid_request"})
    result = await fetch_json(
        http_client, test_issuer.url("/x"), policy=POLICY, accept_status=(200, 400)
    )
    assert (result.status, result.document) == (400, {"error": "invalid_request"})


# -- status codes and failures --------------------------------------------------------


@pytest.mark.anyio
async def test_5xx_is_a_retryable_error_with_its_retry_after(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.outage(True)
    with pytest.raises(UpstreamError) as info:
        await fetch_json(http_client, test_issuer.jwks_uri, policy=POLICY)
    assert (info.value.status, info.value.retryable, info.value.retry_after) == (503, True, 1.0)


@pytest.mark.anyio
async def test_4xx_is_not_retryable(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    with pytest.raises(UpstreamError) as info:
        await fetch_json(http_client, test_issuer.url("/nothing-here"), policy=POLICY)
    assert (info.value.status, info.value.retryable) == (404, False)


@pytest.mark.anyio
async def test_dropped_connection_is_a_retryable_error(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.outage(True, mode="close")
    with pytest.raises(UpstreamError, match="network error") as info:
        await fetch_json(http_client, test_issuer.jwks_uri, policy=POLICY)
    assert info.value.retryable and info.value.status is None


@pytest.mark.anyio
async def test_connection_refused_is_a_retryable_error(http_client: httpx.AsyncClient) -> None:
    with TestIssuer() as gone:
        url = gone.jwks_uri
    with pytest.raises(UpstreamError, match="network error") as info:
        await fetch_json(http_client, url, policy=POLICY)
    assert info.value.retryable


@pytest.mark.anyio
async def test_timeout_bounds_the_whole_exchange(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.delay(30)
    with pytest.raises(UpstreamError, match="timed out") as info:
        await fetch_json(http_client, test_issuer.jwks_uri, policy=FetchPolicy(timeout=0.3))
    assert info.value.retryable


# -- the body ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_oversized_body_is_refused_by_its_content_length(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route("/big", body=b'{"pad": "' + b"x" * 5000 + b'"}')
    with pytest.raises(UpstreamError, match="larger than 4096 bytes") as info:
        await fetch_json(http_client, test_issuer.url("/big"), policy=FetchPolicy(max_bytes=4096))
    assert info.value.retryable


@pytest.mark.anyio
async def test_oversized_body_without_content_length_is_cut_off(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route("/big", body=b'{"pad": "' + b"x" * 200_000 + b'"}', content_length=False)
    with pytest.raises(UpstreamError, match="larger than 4096 bytes"):
        await fetch_json(http_client, test_issuer.url("/big"), policy=FetchPolicy(max_bytes=4096))


@pytest.mark.anyio
async def test_body_without_content_length_within_the_cap_is_read(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route("/small", body={"keys": []}, content_length=False)
    result = await fetch_json(http_client, test_issuer.url("/small"), policy=POLICY)
    assert result.document == {"keys": []}


@pytest.mark.anyio
async def test_in_process_answers_are_read_and_capped_too(test_issuer: TestIssuer) -> None:
    test_issuer.route("/big", body=b'{"pad": "' + b"x" * 5000 + b'"}')
    async with httpx.AsyncClient(transport=test_issuer.transport()) as client:
        result = await fetch_json(client, test_issuer.jwks_uri, policy=POLICY)
        assert result.document == test_issuer.jwks()
        with pytest.raises(UpstreamError, match="larger than"):
            await fetch_json(client, test_issuer.url("/big"), policy=FetchPolicy(max_bytes=4096))


@pytest.mark.anyio
async def test_compressed_body_is_decoded(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route(
        "/gz", body=gzip.compress(b'{"keys": []}'), headers={"Content-Encoding": "gzip"}
    )
    result = await fetch_json(http_client, test_issuer.url("/gz"), policy=POLICY)
    assert result.document == {"keys": []}


@pytest.mark.anyio
async def test_compression_bomb_is_refused_by_its_decoded_size(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    bomb = gzip.compress(b'{"pad": "' + b"x" * (64 * 1024 * 1024) + b'"}')
    assert len(bomb) < 128 * 1024  # small on the wire, 64 MiB once decoded
    test_issuer.route("/bomb", body=bomb, headers={"Content-Encoding": "gzip"})
    with pytest.raises(UpstreamError, match="larger than"):
        await fetch_json(http_client, test_issuer.url("/bomb"), policy=POLICY)


@pytest.mark.anyio
@pytest.mark.parametrize(("coding", "message"), [("br", "unsupported"), ("gzip", "decompressed")])
async def test_body_that_cannot_be_decoded_is_refused(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer, coding: str, message: str
) -> None:
    test_issuer.route(
        "/odd", body=b"definitely not compressed", headers={"Content-Encoding": coding}
    )
    with pytest.raises(UpstreamError, match=message):
        await fetch_json(http_client, test_issuer.url("/odd"), policy=POLICY)


@pytest.mark.anyio
async def test_html_answer_is_refused_as_retryable(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route(
        "/jwks",
        body=b"<html>Sign in to the hotel wifi</html>",
        headers={"Content-Type": "text/html"},
    )
    with pytest.raises(UpstreamError, match="HTML") as info:
        await fetch_json(http_client, test_issuer.jwks_uri, policy=POLICY)
    assert info.value.retryable


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b'{"keys": [], "keys": [{"kty": "RSA"}]}',
        b'{"exp": NaN}',
        b'{"exp": Infinity}',
        b'{"exp": -Infinity}',
        b'{"a": "\xff\xfe"}',
        b"\xef\xbb\xbf{}",
        b'{"keys": []',
        b"",
    ],
    ids=[
        "duplicate-member",
        "nan",
        "infinity",
        "-infinity",
        "not-utf8",
        "bom",
        "truncated",
        "empty",
    ],
)
async def test_json_that_is_not_strict_rfc8259_is_refused(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer, body: bytes
) -> None:
    test_issuer.route("/doc", body=body)
    with pytest.raises(UpstreamError, match="not valid JSON"):
        await fetch_json(http_client, test_issuer.url("/doc"), policy=POLICY)


# -- redirects --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_redirect_to_another_host_is_refused(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    with TestIssuer() as elsewhere:
        test_issuer.route("/jwks", status=302, headers={"Location": elsewhere.jwks_uri})
        with pytest.raises(UpstreamError, match="another origin"):
            await fetch_json(http_client, test_issuer.jwks_uri, policy=POLICY)
        assert sum(elsewhere.requests.values()) == 0


@pytest.mark.anyio
async def test_redirect_to_another_scheme_is_refused(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route(
        "/jwks", status=301, headers={"Location": f"https://127.0.0.1:{test_issuer.port}/jwks"}
    )
    with pytest.raises(UpstreamError, match="another origin"):
        await fetch_json(http_client, test_issuer.jwks_uri, policy=POLICY)


@pytest.mark.anyio
async def test_redirect_to_a_non_loopback_http_url_is_refused(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route("/jwks", status=307, headers={"Location": "http://idp.example.com/jwks"})
    with pytest.raises(UpstreamError, match="refused URL"):
        await fetch_json(http_client, test_issuer.jwks_uri, policy=POLICY)


@pytest.mark.anyio
async def test_same_origin_redirect_is_followed(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route("/old-jwks", status=301, headers={"Location": "/jwks"})
    result = await fetch_json(http_client, test_issuer.url("/old-jwks"), policy=POLICY)
    assert result.document == test_issuer.jwks()


@pytest.mark.anyio
async def test_redirect_chain_is_cut_after_the_limit(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route("/loop", status=302, headers={"Location": "/loop"})
    with pytest.raises(UpstreamError, match="redirects"):
        await fetch_json(http_client, test_issuer.url("/loop"), policy=POLICY)
    assert test_issuer.requests["/loop"] == MAX_REDIRECTS + 1


@pytest.mark.anyio
async def test_post_never_follows_a_redirect(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    test_issuer.route("/introspect", status=307, headers={"Location": "/other"})
    with pytest.raises(UpstreamError, match="redirect refused"):
        await fetch_json(
            http_client, test_issuer.url("/introspect"), policy=POLICY, method="POST",
            data={"token": "t"}, auth=("id", "secret"),
        )  # fmt: skip
    assert test_issuer.requests["/other"] == 0


# -- cache lifetime -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"cache-control": "max-age=600"}, 600.0),
        ({"cache-control": "public, MAX-AGE=60"}, 60.0),
        ({"cache-control": 'max-age="120"'}, 120.0),
        ({"cache-control": "max-age=600", "age": "100"}, 500.0),
        ({"cache-control": "max-age=60", "age": "100"}, 0.0),
        ({"cache-control": "no-store"}, 0.0),
        ({"cache-control": "no-cache, max-age=600"}, 0.0),
        ({"cache-control": "max-age=soon"}, None),
        ({"cache-control": "max-age=-5"}, None),
        ({"cache-control": "s-maxage=100"}, None),
        (
            {"expires": "Thu, 01 Jan 2026 01:00:00 GMT", "date": "Thu, 01 Jan 2026 00:00:00 GMT"},
            3600.0,
        ),
        ({"expires": "0", "date": "Thu, 01 Jan 2026 00:00:00 GMT"}, 0.0),
        (
            {"cache-control": "max-age=30", "expires": "Thu, 01 Jan 2026 01:00:00 GMT",
             "date": "Thu, 01 Jan 2026 00:00:00 GMT"},
            30.0,
        ),
    ],
)  # fmt: skip
def test_cache_lifetime_follows_rfc9111(headers: dict[str, str], expected: float | None) -> None:
    assert max_age_from_headers(httpx.Headers(headers)) == expected


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_up_to_its_cap() -> None:
    backoff = Backoff(30.0)
    delays = [backoff.failed(0.0) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    backoff.succeeded()
    assert backoff.allows(0.0) and backoff.failed(0.0) == 1


def test_backoff_honours_retry_after_within_its_cap() -> None:
    backoff = Backoff(30.0)
    assert backoff.failed(0.0, hint=10) == 10
    assert backoff.failed(0.0, hint=3600) == 30
