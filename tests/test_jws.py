"""The strict compact-JWS parser: every malformation is an InvalidToken, never a crash."""

from __future__ import annotations

import base64
import json

import pytest

from bearerguard._errors import InvalidToken
from bearerguard._jws import looks_like_jws, parse_jws


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(header: str | bytes, payload: str | bytes, sig: bytes = b"sig") -> str:
    h = header.encode() if isinstance(header, str) else header
    p = payload.encode() if isinstance(payload, str) else payload
    return f"{b64(h)}.{b64(p)}.{b64(sig)}"


def test_well_formed_token_parses() -> None:
    jws = parse_jws(token('{"alg":"RS256"}', '{"sub":"a","exp":1}'))
    assert jws.header == {"alg": "RS256"}
    assert jws.claims == {"sub": "a", "exp": 1}
    assert jws.signature == b"sig"


def test_signing_input_is_the_first_two_segments() -> None:
    raw = token('{"alg":"RS256"}', "{}")
    assert parse_jws(raw).signing_input == raw.rsplit(".", 1)[0].encode()


@pytest.mark.parametrize("raw", ["a.b", "a.b.c.d", "a.b.c.d.e", "a..c", "a.b.c=", "a.b.c+", ""])
def test_wrong_shape_is_not_a_jws(raw: str) -> None:
    assert not looks_like_jws(raw)


def test_duplicate_header_member_rejected() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256","alg":"none"}', "{}"))


def test_duplicate_claim_rejected() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256"}', '{"aud":"a","aud":"b"}'))


@pytest.mark.parametrize(
    "payload", ['{"exp":NaN}', '{"exp":Infinity}', '{"exp":-Infinity}', '{"exp":1e999}']
)
def test_non_finite_numbers_rejected(payload: str) -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256"}', payload))


def test_header_must_be_an_object() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('["alg"]', "{}"))


def test_claims_must_be_an_object() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256"}', '"claims"'))


def test_non_json_segment_rejected() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token("not json", "{}"))


def test_non_utf8_json_rejected() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256"}'.encode("utf-16"), "{}"))


def test_impossible_base64_length_rejected() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256"}', "{}") + "A")


def test_deeply_nested_json_rejected_not_crashing() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256"}', '{"a":' * 100_000 + "1" + "}" * 100_000))


def test_huge_integer_rejected_not_crashing() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256"}', '{"exp":' + "9" * 5000 + "}"))


def test_claims_round_trip_unicode() -> None:
    payload = json.dumps({"name": "Zoë"})
    assert parse_jws(token('{"alg":"RS256"}', payload)).claims["name"] == "Zoë"


def test_header_cache_decodes_each_header_once_and_stays_bounded() -> None:
    from bearerguard._jws import HEADER_CACHE_SIZE

    cache: dict[str, dict[str, object]] = {}
    first = parse_jws(token('{"alg":"RS256","kid":"k"}', '{"n":1}'), cache)
    second = parse_jws(token('{"alg":"RS256","kid":"k"}', '{"n":2}'), cache)
    assert first.header is second.header and second.claims == {"n": 2}
    for i in range(HEADER_CACHE_SIZE * 3):
        parse_jws(token(f'{{"alg":"RS256","kid":"{i}"}}', "{}"), cache)
    assert len(cache) <= HEADER_CACHE_SIZE


def test_header_cache_never_keeps_a_malformed_header() -> None:
    cache: dict[str, dict[str, object]] = {}
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256","alg":"none"}', "{}"), cache)
    assert cache == {}


def test_non_canonical_base64url_segment_is_refused() -> None:
    # "QQ" is the canonical spelling of b"A"; "QR".."QZ" decode to it too (RFC 4648 §3.5).
    good = token('{"alg":"RS256"}', "{}", b"A")
    assert parse_jws(good).signature == b"A"
    for last in "RSTUVWXYZ":
        with pytest.raises(InvalidToken):
            parse_jws(good[:-1] + last)


def test_lone_surrogate_in_claims_is_malformed() -> None:
    with pytest.raises(InvalidToken):
        parse_jws(token('{"alg":"RS256"}', '{"sub":"\\ud800"}'))


def test_escaped_surrogate_pair_is_accepted() -> None:
    assert (
        parse_jws(token('{"alg":"RS256"}', '{"sub":"\\ud83d\\ude00"}')).claims["sub"]
        == "\U0001f600"
    )


@pytest.mark.parametrize("raw", ["a!.b.c", "a.b.c\u00e9", "a .b.c"])
def test_characters_outside_base64url_are_refused_by_strict_decoding(raw: str) -> None:
    # looks_like_jws only rules out b64token characters; anything else (which the
    # middleware's RFC 6750 grammar check never lets through) fails decoding.
    with pytest.raises(InvalidToken):
        parse_jws(raw)
