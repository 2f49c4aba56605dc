"""RFC 6750 §2: where a token may be, and what a malformed request is."""

from __future__ import annotations

import pytest

from bearerguard._credentials import find_in_form, find_in_header, find_in_query
from bearerguard._errors import InvalidRequest, InvalidToken

LIMIT = 8192


def h(*values: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", v) for v in values]


def test_bearer_token_found() -> None:
    assert find_in_header(h(b"Bearer abc.def-_~+/="), LIMIT) == "abc.def-_~+/="


@pytest.mark.parametrize("scheme", [b"bearer", b"BEARER", b"BeArEr"])
def test_scheme_is_case_insensitive(scheme: bytes) -> None:
    assert find_in_header(h(scheme + b" tok"), LIMIT) == "tok"


def test_no_header_means_no_token() -> None:
    assert find_in_header([(b"host", b"x")], LIMIT) is None


def test_other_scheme_means_no_bearer_token() -> None:
    assert find_in_header(h(b"Basic dXNlcjpwYXNz"), LIMIT) is None


def test_two_authorization_headers_are_a_malformed_request() -> None:
    with pytest.raises(InvalidRequest):
        find_in_header(h(b"Bearer a", b"Bearer b"), LIMIT)


@pytest.mark.parametrize(
    "value", [b"Bearer a b", b"Bearer a,b", b'Bearer "a"', b"Bearer =a", b"Bearer \xc3\xa9"]
)
def test_token_outside_b64token_grammar_is_a_malformed_request(value: bytes) -> None:
    with pytest.raises(InvalidRequest):
        find_in_header(h(value), LIMIT)


def test_empty_bearer_token_is_a_malformed_request() -> None:
    with pytest.raises(InvalidRequest):
        find_in_header(h(b"Bearer "), LIMIT)


def test_oversized_token_rejected_before_decoding() -> None:
    with pytest.raises(InvalidToken) as info:
        find_in_header(h(b"Bearer " + b"a" * (LIMIT + 1)), LIMIT)
    assert info.value.reason == "too_large"


def test_query_token_found() -> None:
    assert find_in_query(b"x=1&access_token=abc", LIMIT) == "abc"


def test_two_query_tokens_are_a_malformed_request() -> None:
    with pytest.raises(InvalidRequest):
        find_in_query(b"access_token=a&access_token=b", LIMIT)


def test_form_token_found() -> None:
    assert find_in_form(b"access_token=abc&x=1", LIMIT) == "abc"
