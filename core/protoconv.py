"""Protobuf <-> domain conversions every service shares: timestamps, and alignment cards.

Timestamps: datetimes are timezone-aware UTC in the domain (naive ones are taken as UTC); a
Timestamp a caller sent that no datetime can hold is an InvalidArgument naming its field.

Cards: the AAP dict (what `core.aap` reads and the Registry stores) <-> `smoltbot.v1.AlignmentCard`.
The stored JSON is authoritative; fields a newer AAP adds are skipped in the proto view. Proto
strings have no presence, so an unset one arrives as "": for the strings AAP has a default for,
"" means "the default" and is left out of the dict (AAP then fills it in); every other field is
printed, since AAP needs `queryable: false` and `retention_days: 0` to be present.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from smoltbot.core.errors import InvalidArgument
from smoltbot.v1 import card_pb2

__all__ = ["card_from_dict", "card_to_dict", "from_timestamp", "timestamp_text", "to_timestamp"]

#: Card strings without presence that AAP defaults: an unset proto string is "" and means "default".
_DEFAULTED_CARD_STRINGS = ("card_version", "card_id", "agent_id", "autonomy_mode", "integrity_mode")
_DEFAULTED_AUDIT_STRINGS = ("trace_format",)


def to_timestamp(value: datetime, field: str = "timestamp") -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp; naive datetimes are taken as UTC. InvalidArgument naming `field`
    when the time is outside what a Timestamp holds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromDatetime(value.astimezone(UTC))
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "must be between 0001-01-01 and 9999-12-31 UTC") from None
    return stamp


def from_timestamp(message: Message, field: str, *, strict: bool = True) -> datetime | None:
    """`message.<field>` as an aware UTC datetime; None when the field is not set. A value no
    datetime can hold is an InvalidArgument naming the field, or None when not `strict` (data a
    service only records, where a wrong clock must not lose the record)."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        if not strict:
            return None
        raise InvalidArgument(field, "is not a valid timestamp (0001-01-01 to 9999-12-31 UTC)") from None


def timestamp_text(message: Message, field: str) -> str | None:
    """`message.<field>` as RFC 3339 text in UTC ("2026-11-24T17:40:02.123Z"); None when unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToJsonString()


def card_from_dict(card: dict[str, Any]) -> card_pb2.AlignmentCard:
    """The proto view of an AAP card dict (fields the proto does not know are skipped)."""
    return json_format.ParseDict(card, card_pb2.AlignmentCard(), ignore_unknown_fields=True)


def card_to_dict(card: card_pb2.AlignmentCard) -> dict[str, Any]:
    """The AAP dict of a proto card: every field printed, except the unset strings AAP has
    defaults for."""
    data = json_format.MessageToDict(card, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    for name in _DEFAULTED_CARD_STRINGS:
        if data.get(name) == "":
            del data[name]
    audit = data.get("audit")
    if isinstance(audit, dict):
        for name in _DEFAULTED_AUDIT_STRINGS:
            if audit.get(name) == "":
                del audit[name]
    return data
