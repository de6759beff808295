"""AIP-158 pagination shared by every list RPC: page sizes and opaque keyset page tokens.

A page token is the sort key of the last item of the previous page, plus a scope naming the
list it belongs to (e.g. ``"sessions:smolt-1a2b3c4d"``), as URL-safe base64 of compact JSON.
Keyset tokens stay valid while rows are added, cost an index seek instead of an OFFSET scan,
and carry nothing secret: a forged token can only move the reader to another position of a
list it may read anyway. A token from one list is rejected by another (INVALID_ARGUMENT).

Tokens come back from clients, so decoding treats them as hostile: whatever the bytes, the
result is a key of the expected types that every store and database can bind (strings without
NUL or lone surrogates and of bounded length, 32-bit integers, finite floats, datetimes that
exist in UTC), or INVALID_ARGUMENT naming the field. Never an exception of another kind, which
would surface as INTERNAL / 500.

Usage in a store::

    size = page_size(request.page_size)
    after = decode_page_token(request.page_token, scope="agents", types=(datetime, str))
    rows = query(..., after=after, limit=size + 1)
    items, token = next_page(rows, size, scope="agents", key=lambda row: (row.seen, row.id))
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from smoltbot.core.errors import InvalidArgument

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "KeyValue",
    "decode_page_token",
    "encode_page_token",
    "next_page",
    "page_size",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Tokens we issue are far shorter; this only bounds the work spent on garbage.
_MAX_TOKEN_LENGTH = 4096
#: Key strings are ids (agent, session, alert, trace ids are at most 200 characters).
_MAX_KEY_STRING_LENGTH = 512
#: Integer sort keys are INTEGER columns (card versions): PostgreSQL refuses to compare an
#: int4 with a larger bound parameter, so a larger key cannot be one we issued.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_NOT_OURS = "is not a page token returned by this list"

KeyValue = str | int | float | datetime | None
T = TypeVar("T")


def page_size(value: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE,
              field: str = "page_size") -> int:
    """The effective page size: 0 means `default`, larger than `maximum` is capped, negative is
    INVALID_ARGUMENT naming `field`."""
    if value < 0:
        raise InvalidArgument(field, f"must not be negative, got {value}")
    if value == 0:
        return default
    return min(value, maximum)


def encode_page_token(scope: str, key: Sequence[KeyValue]) -> str:
    """An opaque token for the position after the item whose sort key is `key`."""
    payload = {"s": scope, "k": [_encode_value(value) for value in key]}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_page_token(token: str, *, scope: str, types: Sequence[type],
                      field: str = "page_token") -> tuple[Any, ...] | None:
    """The sort key a token carries, or None for the first page (empty token).

    `types` are the expected types of the key's parts (str, int, float, datetime); a token
    that is malformed, from another list, or of another shape is INVALID_ARGUMENT naming
    `field`. A part may be None (a NULL sort column). Datetimes come back timezone-aware UTC.
    """
    if not token:
        return None
    if len(token) > _MAX_TOKEN_LENGTH:
        raise InvalidArgument(field, _NOT_OURS)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        # RecursionError: "[[[[..." nests deeper than the parser goes; NaN/Infinity are not JSON.
        payload = json.loads(raw, parse_constant=_refuse_constant)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument(field, _NOT_OURS) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("k"), list):
        raise InvalidArgument(field, _NOT_OURS)
    if not isinstance(payload.get("s"), str) or payload["s"] != scope:
        raise InvalidArgument(field, "belongs to another list or query")
    parts = payload["k"]
    if len(parts) != len(types):
        raise InvalidArgument(field, _NOT_OURS)
    try:
        return tuple(_decode_value(part, kind) for part, kind in zip(parts, types, strict=True))
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(field, _NOT_OURS) from None


def next_page(rows: Sequence[T], size: int, *, scope: str,
              key: Callable[[T], Sequence[KeyValue]]) -> tuple[list[T], str]:
    """Splits rows fetched with ``limit size + 1`` into the page and its next_page_token
    ("" on the last page)."""
    items = list(rows[:size])
    if len(rows) <= size or not items:
        return items, ""
    return items, encode_page_token(scope, key(items[-1]))


def _encode_value(value: KeyValue) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("page token datetimes must be timezone-aware")
        return {"t": value.astimezone(UTC).isoformat()}
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"cannot put {type(value).__name__} into a page token")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_value(part: Any, kind: type) -> Any:
    if part is None:
        return None
    if kind is datetime:
        if not isinstance(part, dict) or not isinstance(part.get("t"), str) or len(part["t"]) > 64:
            raise ValueError("expected a timestamp")
        value = datetime.fromisoformat(part["t"])
        if value.tzinfo is None:
            raise ValueError("expected a timezone-aware timestamp")
        return value.astimezone(UTC)  # OverflowError for 0001-01-01 east of UTC, and the like
    if kind is int:
        if isinstance(part, bool) or not isinstance(part, int) or not _INT_MIN <= part <= _INT_MAX:
            raise ValueError("expected a 32-bit integer")
        return part
    if kind is float:
        if isinstance(part, bool) or not isinstance(part, (int, float)) or not math.isfinite(part):
            raise ValueError("expected a finite number")
        return float(part)
    if kind is str:
        if not isinstance(part, str) or len(part) > _MAX_KEY_STRING_LENGTH or "\x00" in part:
            raise ValueError("expected an id")
        part.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
        return part
    raise TypeError(f"unsupported page token key type {kind.__name__}")
