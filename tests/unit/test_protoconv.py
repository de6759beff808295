"""Protobuf <-> domain conversions in one place (core.protoconv): timestamps and cards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from smoltbot.core.aap.cards import default_card
from smoltbot.core.errors import InvalidArgument
from smoltbot.core.protoconv import card_from_dict, card_to_dict, from_timestamp, timestamp_text, to_timestamp
from smoltbot.v1 import card_pb2, registry_service_pb2


def test_a_datetime_round_trips_as_aware_utc() -> None:
    moment = datetime(2026, 11, 24, 17, 40, 2, 123456, tzinfo=timezone(timedelta(hours=2)))
    request = registry_service_pb2.TouchAgentRequest(seen_at=to_timestamp(moment, "seen_at"))
    back = from_timestamp(request, "seen_at")
    assert back == moment and back is not None and back.tzinfo == UTC
    assert timestamp_text(request, "seen_at") == "2026-11-24T15:40:02.123456Z"


def test_a_naive_datetime_is_taken_as_utc() -> None:
    stamp = to_timestamp(datetime(2026, 1, 1, 12, 0))
    assert stamp.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_an_unset_timestamp_is_none() -> None:
    request = registry_service_pb2.TouchAgentRequest()
    assert from_timestamp(request, "seen_at") is None and timestamp_text(request, "seen_at") is None


def test_a_timestamp_no_datetime_can_hold_names_its_field() -> None:
    request = registry_service_pb2.TouchAgentRequest(seen_at=timestamp_pb2.Timestamp(seconds=10**15))
    with pytest.raises(InvalidArgument) as caught:
        from_timestamp(request, "seen_at")
    assert caught.value.field == "seen_at"
    assert from_timestamp(request, "seen_at", strict=False) is None


def test_a_datetime_no_timestamp_can_hold_names_its_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        # 0001-01-01 00:00 at UTC+1 is a year-0 time in UTC.
        to_timestamp(datetime.min.replace(tzinfo=timezone(timedelta(hours=1))), "since")
    assert caught.value.field == "since"


def _card() -> dict:
    return default_card("smolt-0a1b2c3d", card_id="ac-1", issued_at=datetime(2026, 1, 1, tzinfo=UTC),
                        query_endpoint="http://127.0.0.1:8000/v1/agents/smolt-0a1b2c3d/traces")


def test_a_card_round_trips_through_its_proto() -> None:
    card = _card()
    back = card_to_dict(card_from_dict(card))
    assert back["agent_id"] == card["agent_id"] and back["audit"] == {**card["audit"], **back["audit"]}
    assert back["audit"]["trace_format"] == card["audit"]["trace_format"]


def test_unset_strings_aap_defaults_are_left_out_and_the_rest_printed() -> None:
    proto = card_pb2.AlignmentCard()
    proto.audit.retention_days = 0
    data = card_to_dict(proto)
    for name in ("card_version", "card_id", "agent_id", "autonomy_mode", "integrity_mode"):
        assert name not in data
    # Both converters used to disagree here: an unset trace_format is AAP's default, not "".
    assert "trace_format" not in data["audit"]
    assert data["audit"]["retention_days"] == 0 and data["audit"]["queryable"] is False


def test_fields_the_proto_does_not_know_are_skipped() -> None:
    card = {**_card(), "from_a_newer_aap": {"x": 1}}
    assert "from_a_newer_aap" not in card_to_dict(card_from_dict(card))
