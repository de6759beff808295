"""Protobuf -> the public API's response models (`smoltbot.api.schemas`). Timestamps convert
through `smoltbot.core.protoconv`, as in every service.

Traces, cards and drift alerts go through protobuf's JSON mapping with proto field names;
fields it leaves out when unset stay out. A trace's JSON values come from their exact `*_json`
twins, not from the Struct beside them (whose numbers are doubles).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from smoltbot.api.schemas import (
    AgentSummary,
    AgentUsage,
    Card,
    DriftAlert,
    Integrity,
    IntegrityPoint,
    IntegrityWindow,
    Session,
    SessionDetail,
    SessionDivergence,
    SessionHistory,
    SessionIntegrity,
    SessionSubAgent,
    SessionsUsage,
    SessionTurn,
    SessionUsageSummary,
    Trace,
    UsageGroup,
    UsageTotals,
)
from smoltbot.core.protoconv import timestamp_text
from smoltbot.v1 import agent_pb2, card_pb2, observer_service_pb2, trace_pb2

__all__ = [
    "agent_summary",
    "agent_usage_out",
    "card_out",
    "drift_alert_out",
    "integrity_out",
    "integrity_response_out",
    "session_detail_out",
    "session_history_out",
    "session_out",
    "sessions_usage_out",
    "trace_out",
    "usage_totals_out",
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
        history_sessions_checked=score.history_sessions_checked,
        history_sessions_intact=score.history_sessions_intact,
    )


def integrity_response_out(response: observer_service_pb2.GetIntegrityResponse) -> Integrity:
    """The integrity with the period it holds over (retention)."""
    integrity = integrity_out(response.integrity)
    integrity.retained_since = timestamp_text(response, "retained_since")
    integrity.retention_deleted_traces = response.retention_deleted_traces
    return integrity


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



def usage_totals_out(totals: observer_service_pb2.UsageTotals) -> UsageTotals:
    return UsageTotals(
        calls=totals.calls, input_tokens=totals.input_tokens, cache_read_tokens=totals.cache_read_tokens,
        cache_write_5m_tokens=totals.cache_write_5m_tokens,
        cache_write_1h_tokens=totals.cache_write_1h_tokens,
        cache_write_unknown_ttl_tokens=totals.cache_write_unknown_ttl_tokens,
        output_tokens=totals.output_tokens, reasoning_tokens=totals.reasoning_tokens,
        calls_without=dict(totals.calls_without), known_cost_usd=totals.known_cost_usd or "0",
        known_cost_calls=totals.known_cost_calls, unknown_cost_calls=totals.unknown_cost_calls,
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def agent_usage_out(response: observer_service_pb2.GetAgentUsageResponse, since: datetime | None,
                    until: datetime | None) -> AgentUsage:
    return AgentUsage.model_validate({
        "agent_id": response.agent_id, "group_by": response.group_by, "since": _iso(since),
        "until": _iso(until), "total": usage_totals_out(response.total),
        "groups": [UsageGroup(key=group.key, usage=usage_totals_out(group.usage),
                              turn_count=group.turn_count if response.group_by == "session" else None)
                   for group in response.groups],
    })


def session_detail_out(response: observer_service_pb2.GetSessionUsageResponse) -> SessionDetail:
    return SessionDetail(
        agent_id=response.agent_id, session_id=response.session_id,
        session_rungs=list(response.session_rungs),
        turn_count=response.turn_count, first_seen=timestamp_text(response, "first_seen") or "",
        last_seen=timestamp_text(response, "last_seen") or "", total=usage_totals_out(response.total),
        turns=[SessionTurn(turn=turn.turn if turn.HasField("turn") else None,
                           started_at=timestamp_text(turn, "started_at") or "",
                           ended_at=timestamp_text(turn, "ended_at") or "",
                           usage=usage_totals_out(turn.usage))
               for turn in response.turns],
        sub_agents=[SessionSubAgent(
            sub_agent_id=agent.sub_agent_id, parent_agent_id=agent.parent_agent_id,
            agent_type=agent.agent_type, source=agent.source,
            first_seen=timestamp_text(agent, "first_seen") or "",
            last_seen=timestamp_text(agent, "last_seen") or "", usage=usage_totals_out(agent.usage),
            traces=agent.traces, verified_traces=agent.verified_traces,
        ) for agent in response.sub_agents],
        integrity=_session_integrity(response.traces, response.verified_traces, response.violation_count),
        history=session_history_out(response.history),
    )


def _session_integrity(traces: int, verified: int, violations: int) -> SessionIntegrity:
    return SessionIntegrity(traces=traces, verified_traces=verified, violation_count=violations,
                            score=verified / traces if traces else None)


def sessions_usage_out(response: observer_service_pb2.GetSessionsUsageResponse) -> SessionsUsage:
    return SessionsUsage(agent_id=response.agent_id, items=[SessionUsageSummary(
        session_id=item.session_id, turn_count=item.turn_count,
        first_seen=timestamp_text(item, "first_seen") or "",
        last_seen=timestamp_text(item, "last_seen") or "", total=usage_totals_out(item.total),
        integrity=_session_integrity(item.traces, item.verified_traces, item.violation_count),
    ) for item in response.sessions])


def session_history_out(history: observer_service_pb2.GetSessionUsageResponse.History) -> SessionHistory:
    return SessionHistory(
        checked=history.checked, intact=history.intact, diverged=history.diverged,
        divergences=[SessionDivergence.model_validate({
            **_proto_dict(divergence), "started_at": timestamp_text(divergence, "started_at") or "",
            "turn": divergence.turn if divergence.HasField("turn") else None,
            "diverged_at": divergence.diverged_at if divergence.HasField("diverged_at") else None,
        }) for divergence in history.divergences])
