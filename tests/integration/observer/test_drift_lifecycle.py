"""A drift alert's life through the service: the agent's owner acknowledges it (proved by the
agent's credential hash; another's is refused, an unknown alert is not found) and it stays open;
it closes by itself once the agent's behaviour is back in line for `drift_sustained` traces, and
not before."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from smoltbot.v1 import exchange_pb2
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack, new_hash
from tests.integration.observer.test_drift import CARD, _alerts, _calls


async def _send(stack: ObserverStack, agent_id: str, exchanges: list[exchange_pb2.Exchange]) -> None:
    await stack.ingest(exchanges)
    await stack.wait_finished([e.exchange_id for e in exchanges])
    await stack.wait_drift_settled(agent_id)


async def test_an_alert_is_acknowledged_by_its_owner_and_closes_when_behaviour_returns(
        observer_stack: ObserverStack) -> None:
    start = datetime.now(UTC) + timedelta(minutes=1)  # after the card: in force for every call
    agent_id, agent_hash = await observer_stack.agent()
    await observer_stack.put_card(agent_id, agent_hash, json.dumps(CARD))
    await _send(observer_stack, agent_id,
                _calls(agent_hash, ["read_file", "list_dir"] * 5 + ["delete_file"] * 5, start))
    (alert,) = await _alerts(observer_stack, agent_id)
    assert alert.status == "open" and not alert.HasField("acknowledged_at")

    stub = observer_stack.stub
    assert stub is not None
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AcknowledgeDriftAlert(pb.AcknowledgeDriftAlertRequest(
            agent_id=agent_id, agent_hash=new_hash(), alert_id=alert.alert_id))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.AcknowledgeDriftAlert(pb.AcknowledgeDriftAlertRequest(
            agent_id=agent_id, agent_hash=agent_hash, alert_id="da-" + "0" * 32))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    acknowledged = (await stub.AcknowledgeDriftAlert(pb.AcknowledgeDriftAlertRequest(
        agent_id=agent_id, agent_hash=agent_hash, alert_id=alert.alert_id))).alert
    assert acknowledged.status == "open" and acknowledged.HasField("acknowledged_at")

    # Two traces back in line: not yet (drift_sustained is 3).
    later = start + timedelta(minutes=5)
    await _send(observer_stack, agent_id, _calls(agent_hash, ["read_file", "list_dir"], later))
    (still,) = await _alerts(observer_stack, agent_id)
    assert still.status == "open"
    # A third: behaviour is back against every reference the alert was raised against.
    await _send(observer_stack, agent_id, _calls(agent_hash, ["read_file"], later + timedelta(minutes=1)))
    (closed,) = await _alerts(observer_stack, agent_id)
    assert closed.alert_id == alert.alert_id and closed.status == "resolved"
    assert closed.HasField("resolved_at") and closed.HasField("acknowledged_at")
    assert "Closed by itself" in closed.resolution
    integrity = (await stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=agent_id))).integrity
    assert integrity.open_drift_alerts == 0

    # Drift again later: a new alert opens (the closed one stays closed).
    again = _calls(agent_hash, ["delete_file"] * 4, later + timedelta(minutes=2))
    await _send(observer_stack, agent_id, again)
    alerts = await _alerts(observer_stack, agent_id)
    assert sorted(a.status for a in alerts) == ["open", "resolved"]
