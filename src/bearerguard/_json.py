"""The one JSON parser: tokens, fetched documents and shared-cache entries read the same way.

RFC 8259 leaves duplicate member names, ``NaN`` and numbers beyond a double open;
two parsers that disagree on them read one document two ways (RFC 8725 §3.2,
RFC 7493). So everything bearerguard decodes passes the same rules: UTF-8 only,
no duplicate member names, no ``NaN``/``Infinity``, no number that overflows a
double, no lone surrogate, no nesting deep enough to exhaust the parser. Every
refusal is a ``ValueError``.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["loads", "loads_bytes", "loads_object"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name in JSON object")
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf: the same refusal as "Infinity"
        raise ValueError("JSON number out of range")
    return value


_decoder = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)
_decode = _decoder.decode


def loads(text: str) -> Any:
    """Parse ``text`` strictly; ``ValueError`` for anything the module docstring refuses."""
    try:
        value = _decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if "\\u" in text:
        # An escaped lone surrogate cannot be encoded as UTF-8: it would crash the
        # application the first time it printed the value (RFC 8259 §8.2, RFC 7493 §2.1).
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError: ValueError
    return value


def loads_bytes(body: bytes) -> Any:
    """:func:`loads` for a body that must be UTF-8 (RFC 8259 §8.1)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("JSON text is not UTF-8") from None
    return loads(text)


def loads_object(body: bytes) -> dict[str, Any]:
    """:func:`loads_bytes` for a document that must be a JSON object (a JWS header, claims)."""
    value = loads_bytes(body)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
