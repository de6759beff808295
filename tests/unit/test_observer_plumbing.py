"""Observer plumbing without servers: ingest validation, order_by, the fast trace-to-proto
conversion (checked against json_format.ParseDict) and the offloaded computation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf import json_format

from smoltbot.core.aap.cards import default_card
from smoltbot.core.errors import InvalidArgument
from smoltbot.observer.extraction import extract
from smoltbot.observer.intake import validate
from smoltbot.observer.pipeline import Job, compute
from smoltbot.observer.queries import parse_order_by
from smoltbot.observer.trace_builder import build_traces
from smoltbot.observer.trace_proto import trace_to_proto
from smoltbot.v1 import exchange_pb2, trace_pb2
from smoltbot.v1 import observer_service_pb2 as pb

CARD = default_card("smolt-1", card_id="ac-1", issued_at=datetime(2026, 1, 1, tzinfo=UTC),
                    query_endpoint="http://127.0.0.1:8000/v1/agents/smolt-1/traces")
CARD["autonomy"]["escalation_triggers"] = [
    {"condition": 'path contains "/etc"', "action": "log", "reason": "x"}
]
RESPONSES = [
    {"type": "message", "model": "m", "stop_reason": "end_turn",
     "content": [{"type": "thinking", "thinking": "Option A: x. Option B: y.", "signature": "s"},
                 {"type": "text", "text": "Hi"}]},
    {"type": "message", "model": "m", "stop_reason": "tool_use",
     "content": [{"type": "tool_use", "id": "toolu_1", "name": "read_file",
                  "input": {"path": "/etc/x", "amount": 3, "nested": {"a": [1, None, True]}}},
                 {"type": "tool_use", "id": "toolu_2", "name": "list_dir", "input": {}}]},
]


@pytest.mark.parametrize(("exchange", "problem"), [
    (None, "no exchange"),
    (exchange_pb2.Exchange(exchange_id="abc", agent_hash="ab" * 16), "exchange_id"),
    (exchange_pb2.Exchange(exchange_id="ab" * 16), "agent_hash is required"),
    (exchange_pb2.Exchange(exchange_id="ab" * 16, agent_hash="xyz" * 12), "agent_hash must be"),
    (exchange_pb2.Exchange(exchange_id="AB" * 16, agent_hash="cd" * 32), ""),
])
def test_ingest_validation(exchange: exchange_pb2.Exchange | None, problem: str) -> None:
    request = pb.IngestRequest() if exchange is None else pb.IngestRequest(exchange=exchange)
    result = validate(request)
    assert (problem in result) if problem else result == ""


def test_order_by_accepts_timestamp_either_way_and_nothing_else() -> None:
    assert parse_order_by("") is True
    assert parse_order_by("timestamp desc") is True
    assert parse_order_by(" Timestamp   ASC ") is False
    for bad in ("timestamp", "agent_id desc", "timestamp desc, trace_id"):
        with pytest.raises(InvalidArgument) as caught:
            parse_order_by(bad)
        assert caught.value.field == "order_by"


@pytest.mark.parametrize("response", RESPONSES)
def test_the_fast_conversion_equals_parse_dict(response: dict) -> None:
    extraction = extract(
        b"", json.dumps(response).encode(), http_status=200, streamed=True, outcome="complete"
    )
    now = datetime.now(UTC)
    for trace in build_traces(
        exchange_id="e" * 32,
        agent_id="smolt-1",
        session_id="s",
        card=CARD,
        extraction=extraction,
        analyses=None,
        exchange_started_at=now,
        exchange_ended_at=now,
        observed_at=now,
        conversation_turn=2,
        store_reasoning="redacted",
        analyzer_name="local",
        outcome="complete",
        http_status=200,
    ):
        trace["observation"]["executed"] = True
        reference = json_format.ParseDict(json.loads(json.dumps(trace)), trace_pb2.ApTrace(),
                                          ignore_unknown_fields=True)
        fast = trace_to_proto(json.loads(json.dumps(trace)))
        # Beside the Struct fields, the exact JSON text of the same values (see trace_proto).
        assert json.loads(fast.action.parameters_json) == trace["action"]["parameters"]
        assert json.loads(fast.context.metadata_json) == trace["context"]["metadata"]
        fast.action.ClearField("parameters_json")
        fast.context.ClearField("metadata_json")
        fast.context.ClearField("environment_json")
        for check in fast.escalation.triggers_checked:
            check.ClearField("value_observed_json")
        assert fast == reference


def test_unexpected_shapes_fall_back_to_parse_dict() -> None:
    odd = {"trace_id": "t", "timestamp": "2026-01-01T00:00:00Z",
           "observation": {"reasoning": {"present": True, "from_the_future": 1}}}
    assert trace_to_proto(odd).trace_id == "t"


def test_compute_reports_the_failed_step_instead_of_raising() -> None:
    job = Job(exchange_id="e" * 32, agent_id="smolt-1", session_id=None, card=CARD, payload=b"\xff\xff",
              store_reasoning="redacted", observed_at=datetime.now(UTC))
    result = compute(job)
    assert result.step == "decode" and result.error and result.traces == []
    empty = compute(Job(**{**job.__dict__, "payload": b""}))
    assert empty.step == "decode" and "missing" in empty.error
