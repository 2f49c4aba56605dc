"""Where a token is found in a request (RFC 6750 §2): header, and opt-in query or form body."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl

from bearerguard._errors import InvalidRequest, InvalidToken

__all__ = ["find_in_form", "find_in_header", "find_in_query"]

#: RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


def _check_grammar(token: bytes, max_length: int) -> str:
    """The b64token grammar, checked on bytes with C-level calls rather than a regex.

    Every request pays this on a token of hundreds of characters: deleting the
    allowed bytes and testing for leftovers measured twice as fast as a full match.
    """
    if len(token) > max_length:
        # Refused before any decoding, whatever it contains.
        raise InvalidToken("The access token is too large", reason="too_large")
    body = token.rstrip(b"=")
    if not body or body.translate(None, _B64TOKEN_CHARS):
        raise InvalidRequest("The bearer token is not a valid b64token", reason="bad_token_syntax")
    return token.decode("ascii")


def find_in_header(
    headers: Iterable[tuple[bytes, bytes]], max_length: int, scheme: bytes = b"bearer"
) -> str | None:
    """The token from ``Authorization: Bearer``; ``None`` when there is no bearer credential.

    Two Authorization headers are a malformed request, not a choice to make. The
    scheme is case-insensitive (RFC 7235 §2.1); another scheme means "no bearer token".
    ``scheme=b"dpop"`` reads ``Authorization: DPoP`` (RFC 9449 §7.1) the same way.
    """
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                raise InvalidRequest(
                    "More than one Authorization header", reason="duplicate_header"
                )
            found = value
    if found is None:
        return None
    used, _, rest = found.partition(b" ")
    if used.lower() != scheme:
        return None
    token = rest.strip(b" ")
    if not token:
        raise InvalidRequest("The bearer token is empty", reason="empty_token")
    return _check_grammar(token, max_length)


def _single(pairs: list[tuple[str, str]], where: str, max_length: int) -> str | None:
    values = [v for k, v in pairs if k == "access_token"]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"More than one access_token in the {where}", reason="duplicate_param")
    if not values[0]:
        raise InvalidRequest("The bearer token is empty", reason="empty_token")
    # A character outside ASCII becomes "?" (one byte, refused): lengths stay as sent.
    return _check_grammar(values[0].encode("ascii", "replace"), max_length)


def find_in_query(query_string: bytes, max_length: int) -> str | None:
    """RFC 6750 §2.3 ``access_token`` query parameter (opt-in: URLs end up in logs).

    Always parsed (no substring shortcut): ``access%5Ftoken`` is the same name.
    """
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return _single(pairs, "query", max_length)


def find_in_form(body: bytes, max_length: int) -> str | None:
    """RFC 6750 §2.2 form-encoded body parameter (opt-in), however its name is encoded."""
    pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    return _single(pairs, "form body", max_length)
