"""Protobuf -> the public API's response models (`smoltbot.api.schemas`). Timestamps convert
through `smoltbot.core.protoconv`, as in every service.

Traces, cards and drift alerts go through protobuf's JSON mapping with proto field names;
fields it leaves out when unset stay out. A trace's JSON values come from their exact `*_json`
twins, not from the Struct beside them (whose numbers are doubles).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from smoltbot.api.schemas import (
    AgentSummary,
    Card,
    DriftAlert,
    Integrity,
    IntegrityPoint,
    IntegrityWindow,
    Session,
    Trace,
)
from smoltbot.core.protoconv import timestamp_text
from smoltbot.v1 import agent_pb2, card_pb2, trace_pb2

__all__ = [
    "agent_summary",
    "card_out",
    "drift_alert_out",
    "integrity_out",
    "session_out",
    "trace_out",
]


def _proto_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def agent_summary(agent: agent_pb2.Agent) -> AgentSummary:
    return AgentSummary(
        agent_id=agent.agent_id,
        created_at=timestamp_text(agent, "created_at"),
        last_seen_at=timestamp_text(agent, "last_seen_at"),
        claimed=agent.claimed,
        claimed_at=timestamp_text(agent, "claimed_at"),
        active_card_id=agent.active_card_id or None,
    )


def _exact(data: dict[str, Any], key: str, text: str) -> None:
    # The *_json twin is the exact value; the Struct beside it only has doubles.
    data.pop(f"{key}_json", None)
    if text:
        data[key] = json.loads(text)


def trace_out(trace: trace_pb2.ApTrace) -> Trace:
    data = _proto_dict(trace)
    if "action" in data:
        _exact(data["action"], "parameters", trace.action.parameters_json)
    if "context" in data:
        _exact(data["context"], "environment", trace.context.environment_json)
        _exact(data["context"], "metadata", trace.context.metadata_json)
    for check, message in zip((data.get("escalation") or {}).get("triggers_checked") or [],
                              trace.escalation.triggers_checked, strict=False):
        _exact(check, "value_observed", message.value_observed_json)
    return Trace.model_validate(data)


def card_out(card: card_pb2.AlignmentCard) -> Card:
    return Card.model_validate(_proto_dict(card))


def drift_alert_out(alert: trace_pb2.DriftAlert) -> DriftAlert:
    return DriftAlert.model_validate(_proto_dict(alert))


def _window(window: trace_pb2.IntegrityWindow) -> IntegrityWindow:
    return IntegrityWindow(
        total_traces=window.total_traces,
        verified_traces=window.verified_traces,
        score=window.score if window.HasField("score") else None,
        violation_count=window.violation_count,
        violations_by_type=dict(window.violations_by_type),
        with_reasoning=window.with_reasoning,
        with_model_analysis=window.with_model_analysis,
        failed=window.failed,
        activity=window.activity,
    )


def integrity_out(score: trace_pb2.IntegrityScore) -> Integrity:
    return Integrity(
        agent_id=score.agent_id,
        window_size=score.window_size,
        computed_at=timestamp_text(score, "computed_at"),
        recent=_window(score.recent),
        all_time=_window(score.all_time),
        timeline=[
            IntegrityPoint(
                bucket_start=timestamp_text(point, "bucket_start"),
                total_traces=point.total_traces,
                verified_traces=point.verified_traces,
                score=point.verified_traces / point.total_traces if point.total_traces else None,
            )
            for point in score.timeline
        ],
        open_drift_alerts=score.open_drift_alerts,
    )


def _enum_word(enum: Any, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return "unspecified"


def session_out(session: agent_pb2.Session) -> Session:
    return Session(
        session_id=session.session_id,
        agent_id=session.agent_id,
        source=_enum_word(agent_pb2.SessionSource, session.source, "SESSION_SOURCE_"),
        status=_enum_word(agent_pb2.SessionStatus, session.status, "SESSION_STATUS_"),
        started_at=timestamp_text(session, "started_at"),
        last_activity_at=timestamp_text(session, "last_activity_at"),
        ended_at=timestamp_text(session, "ended_at"),
        turn_count=session.turn_count,
    )
