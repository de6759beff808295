"""Usage roll-ups (`observer.usage_store`) as observer_service.proto messages."""

from __future__ import annotations

from google.protobuf import json_format

from smoltbot.core.protoconv import to_timestamp
from smoltbot.observer.evidence_store import SessionHistory
from smoltbot.observer.usage_store import SessionSummary, SessionUsage, UsageSums
from smoltbot.v1 import observer_service_pb2 as pb

__all__ = ["history_to_proto", "session_summary_to_proto", "session_to_proto", "usage_to_proto"]


def usage_to_proto(sums: UsageSums) -> pb.UsageTotals:
    return pb.UsageTotals(
        calls=sums.calls, calls_without=sums.calls_without, known_cost_usd=sums.known_cost_text,
        known_cost_calls=sums.known_cost_calls, unknown_cost_calls=sums.unknown_cost_calls,
        **sums.tokens,
    )


def history_to_proto(history: SessionHistory) -> pb.GetSessionUsageResponse.History:
    """A session's history checks; each divergence's findings as its traces carry them (the check
    JSON is the trace's `HistoryCheck` JSON: read into the same proto messages)."""
    found = pb.GetSessionUsageResponse.History(checked=history.checked, intact=history.intact,
                                               diverged=history.diverged)
    for divergence in history.divergences:
        message = found.divergences.add(exchange_id=divergence.exchange_id,
                                        started_at=to_timestamp(divergence.started_at))
        if divergence.turn is not None:
            message.turn = divergence.turn
        if divergence.diverged_at is not None:
            message.diverged_at = divergence.diverged_at
        json_format.ParseDict({k: divergence.check[k] for k in ("findings", "rewrites", "notes")
                               if k in divergence.check}, message, ignore_unknown_fields=True)
    return found


def session_to_proto(session: SessionUsage, history: SessionHistory) -> pb.GetSessionUsageResponse:
    turns = []
    for turn in session.turns:
        message = pb.SessionTurn(started_at=to_timestamp(turn.started_at),
                                 ended_at=to_timestamp(turn.ended_at), usage=usage_to_proto(turn.usage))
        if turn.turn is not None:
            message.turn = turn.turn
        turns.append(message)
    return pb.GetSessionUsageResponse(
        agent_id=session.agent_id, session_id=session.session_id, session_rungs=session.rungs,
        turn_count=sum(1 for turn in session.turns if turn.turn is not None),
        first_seen=to_timestamp(session.first_seen), last_seen=to_timestamp(session.last_seen),
        total=usage_to_proto(session.total), turns=turns,
        sub_agents=[pb.SessionSubAgent(
            sub_agent_id=agent.sub_agent_id, parent_agent_id=agent.parent_agent_id,
            agent_type=agent.agent_type, source=agent.source, first_seen=to_timestamp(agent.first_seen),
            last_seen=to_timestamp(agent.last_seen),
            usage=usage_to_proto(agent.usage), traces=agent.traces, verified_traces=agent.verified_traces,
        ) for agent in session.sub_agents],
        traces=session.traces, verified_traces=session.verified_traces, violation_count=session.violations,
        history=history_to_proto(history),
    )


def session_summary_to_proto(session: SessionSummary) -> pb.SessionUsageSummary:
    return pb.SessionUsageSummary(
        session_id=session.session_id, turn_count=session.turn_count,
        first_seen=to_timestamp(session.first_seen), last_seen=to_timestamp(session.last_seen),
        total=usage_to_proto(session.total), traces=session.traces,
        verified_traces=session.verified_traces, violation_count=session.violations)
