"""Drift through the service: a drifting agent raises exactly one alert, a stable one none,
alerts stay one per agent and direction, and the detector's state survives a restart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from smoltbot.v1 import exchange_pb2
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.exchanges import make_exchange, message, thinking, tool_use

CARD = {
    "card_version": "unified/2026-04-26",
    "autonomy_mode": "observe",
    "integrity_mode": "observe",
    "principal": {"type": "human", "identifier": "ops@example.com", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency", "harm_prevention", "principal_benefit"]},
    "autonomy": {
        "bounded_actions": ["read_file", "list_dir"],
        "forbidden_actions": ["delete_file"],
        "escalation_triggers": [{"condition": 'action_name == "delete_file"', "action": "escalate",
                                 "reason": "destructive"}],
    },
    "audit": {"retention_days": 30, "queryable": False, "trace_format": "ap-trace-v1"},
}


def _calls(agent_hash: str, names: list[str], start: datetime) -> list[exchange_pb2.Exchange]:
    return [
        make_exchange(
            agent_hash,
            message(
                thinking(f"Next I call {name}."), tool_use(name, {"path": f"/p{i}"}), stop_reason="tool_use"
            ),
            ended_at=start + timedelta(seconds=i),
        )
        for i, name in enumerate(names)
    ]


async def _alerts(stack: ObserverStack, agent_id: str) -> list[pb.DriftAlert]:
    assert stack.stub is not None
    return list((await stack.stub.ListDriftAlerts(pb.ListDriftAlertsRequest(agent_id=agent_id))).alerts)


async def test_a_drifting_agent_raises_exactly_one_alert_and_a_stable_one_none(
    observer_stack: ObserverStack,
) -> None:
    start = datetime.now(UTC) + timedelta(minutes=1)  # after the card below: it is in force for every call
    stable_id, stable_hash = await observer_stack.agent()
    drifting_id, drifting_hash = await observer_stack.agent()
    for agent_id, agent_hash in ((stable_id, stable_hash), (drifting_id, drifting_hash)):
        await observer_stack.put_card(agent_id, agent_hash, json.dumps(CARD))

    stable = _calls(stable_hash, ["read_file", "list_dir"] * 8, start)
    # Ten ordinary calls (the baseline), then a sustained run of forbidden, escalating ones,
    # sent newest first: the detector must still see them in trace-time order.
    drifting = _calls(drifting_hash, ["read_file", "list_dir"] * 5 + ["delete_file"] * 6, start)
    await observer_stack.ingest([*stable, *reversed(drifting)])
    await observer_stack.wait_finished([e.exchange_id for e in [*stable, *drifting]])
    await observer_stack.wait_drift_settled(stable_id)
    await observer_stack.wait_drift_settled(drifting_id)

    assert await _alerts(observer_stack, stable_id) == []
    (alert,) = await _alerts(observer_stack, drifting_id)
    assert alert.agent_id == drifting_id and alert.status == "open"
    assert alert.direction in ("autonomy_expansion", "value_drift", "principal_misalignment", "unknown")
    assert alert.severity in ("low", "medium", "high")
    assert alert.sustained_traces >= 3
    assert alert.similarity_score < 0.30
    delete_traces = {f"tr-{e.exchange_id}-0" for e in drifting[10:]}
    assert set(alert.trace_ids) <= delete_traces and len(alert.trace_ids) >= 3
    assert alert.analysis
    integrity = (
        await observer_stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=drifting_id))
    ).integrity
    assert integrity.open_drift_alerts == 1

    # More drift later, after a restart: the open alert is updated, never duplicated.
    await observer_stack.stop_observer()
    await observer_stack.start_observer()
    more = _calls(drifting_hash, ["delete_file"] * 4, start + timedelta(minutes=5))
    await observer_stack.ingest(more)
    await observer_stack.wait_finished([e.exchange_id for e in more])
    await observer_stack.wait_drift_settled(drifting_id)
    (updated,) = await _alerts(observer_stack, drifting_id)
    assert updated.alert_id == alert.alert_id
    async with observer_stack.db.read() as conn:
        state = (await conn.execute(sa.text("SELECT observed FROM drift_states WHERE agent_id = :a"),
                                    {"a": drifting_id})).scalar_one()
    assert state == len(drifting) + len(more), "each trace reached the detector exactly once"


async def test_drift_alerts_are_listed_newest_first_and_paginated(observer_stack: ObserverStack) -> None:
    start = datetime.now(UTC) + timedelta(minutes=1)  # after the cards below: in force for every call
    agents = []
    for _ in range(3):
        agent_id, agent_hash = await observer_stack.agent()
        await observer_stack.put_card(agent_id, agent_hash, json.dumps(CARD))
        agents.append((agent_id, agent_hash))
    for agent_id, agent_hash in agents:  # one after the other: creation order is known
        sent = _calls(agent_hash, ["delete_file"] * 4, start)
        await observer_stack.ingest(sent)
        await observer_stack.wait_finished([e.exchange_id for e in sent])
        await observer_stack.wait_drift_settled(agent_id)
    assert observer_stack.stub is not None
    first = await observer_stack.stub.ListDriftAlerts(pb.ListDriftAlertsRequest(page_size=2))
    second = await observer_stack.stub.ListDriftAlerts(pb.ListDriftAlertsRequest(
        page_size=2, page_token=first.next_page_token))
    listed = [*first.alerts, *second.alerts]
    assert not second.next_page_token
    assert [alert.agent_id for alert in listed] == [agent_id for agent_id, _ in reversed(agents)]
