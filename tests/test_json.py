"""One strict JSON parser: a token and a fetched document refuse the same JSON the same way."""

from __future__ import annotations

import base64

import httpx
import pytest

from bearerguard._config import FetchPolicy
from bearerguard._errors import InvalidToken
from bearerguard._fetch import UpstreamError, fetch_json
from bearerguard._json import loads, loads_bytes
from bearerguard._jws import parse_jws
from bearerguard.testing import TestIssuer

#: JSON RFC 8259 leaves open and bearerguard refuses everywhere: two parsers could read each
#: of these two ways (RFC 8725 §3.2, RFC 7493).
HOSTILE = {
    "duplicate-member": b'{"exp": 1, "exp": 2}',
    "nan": b'{"exp": NaN}',
    "infinity": b'{"exp": Infinity}',
    "-infinity": b'{"exp": -Infinity}',
    "overflowing-number": b'{"exp": 1e999}',
    "overflowing-negative": b'{"exp": -1e400}',
    "lone-surrogate": b'{"sub": "\\ud800"}',
    "not-utf8": b'{"sub": "\xff\xfe"}',
    "deep-nesting": b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_parser_refuses_what_rfc8259_leaves_open(body: bytes) -> None:
    with pytest.raises(ValueError):
        loads_bytes(body)


@pytest.mark.anyio
@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
async def test_fetched_documents_refuse_non_finite_and_duplicate_json_as_tokens_do(
    http_client: httpx.AsyncClient, test_issuer: TestIssuer, body: bytes
) -> None:
    """Issue #10 rule 7: one parser, so a JWKS or introspection answer and a token agree."""
    token = ".".join((_b64(b'{"alg":"RS256"}'), _b64(body), _b64(b"sig")))
    with pytest.raises(InvalidToken):
        parse_jws(token)
    test_issuer.route("/doc", body=body)
    with pytest.raises(UpstreamError, match="not valid JSON"):
        await fetch_json(http_client, test_issuer.url("/doc"), policy=FetchPolicy(timeout=5.0))


def test_escaped_surrogate_pairs_and_big_integers_are_json() -> None:
    assert loads('{"sub": "\\ud83d\\ude00", "n": 12345678901234567890}') == {
        "sub": "\U0001f600",
        "n": 12345678901234567890,
    }
