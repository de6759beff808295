"""Checks of what clients send the Registry that are not id shapes (those are `core.ids`):
free text with a length limit, and client-reported times."""

from __future__ import annotations

from datetime import datetime, timedelta

from smoltbot.core.errors import InvalidArgument
from smoltbot.core.storage import utcnow

__all__ = ["clamp_to_now", "validate_text"]


def validate_text(value: str, field: str, *, max_length: int, required: bool = True) -> str:
    """A printable identifier-like string of at most `max_length` characters."""
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return value
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters, got {len(value)}",
                              reason="FIELD_TOO_LONG")
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control characters")
    return value


def clamp_to_now(at: datetime | None, *, slack: timedelta = timedelta(seconds=5)) -> datetime:
    """A client-reported time, or now; times in the future (clock skew) become now."""
    now = utcnow()
    if at is None or at > now + slack:
        return now
    return at
