"""`POST /v1/agents/{id}/drift/{alert_id}/acknowledge` against the real services: the owner (its
credential) acknowledges an alert that stays open; another credential is refused, an unknown
alert is not found, a malformed id is a 422, all in the one error shape."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from tests.integration.api.helpers import (
    Stack,
    anthropic_response,
    auth,
    ingest,
    make_exchange,
    new_credential,
)

FORBID_DELETE = {
    "card_version": "unified/2026-04-26", "autonomy_mode": "observe", "integrity_mode": "observe",
    "principal": {"type": "human", "identifier": "owner@example.com", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency"]},
    "autonomy": {"bounded_actions": ["read_file"], "forbidden_actions": ["delete_file"],
                 "escalation_triggers": [{"condition": 'action_name == "delete_file"', "action": "escalate",
                                          "reason": "destructive"}]},
    "audit": {"retention_days": 30, "queryable": False, "trace_format": "ap-trace-v1"},
}


async def drifting_agent(api: httpx.AsyncClient, stack: Stack) -> tuple[str, str, str]:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    stored = await api.put(f"/v1/agents/{agent_id}/card", json=FORBID_DELETE, headers=auth(credential))
    assert stored.status_code == 200, stored.text
    start = datetime.now(UTC) + timedelta(seconds=5)
    await ingest(stack, *(make_exchange(stack, credential, anthropic_response(
        tool=("delete_file", {"path": f"/data/{n}"})), agent_id=agent_id, at=start + timedelta(seconds=n))
        for n in range(5)))
    for _ in range(150):
        alerts = (await api.get(f"/v1/agents/{agent_id}/drift")).json()["items"]
        if alerts:
            return credential, agent_id, alerts[0]["alert_id"]
        await asyncio.sleep(0.1)
    raise AssertionError("no drift alert was raised")


async def test_the_owner_acknowledges_a_drift_alert(api: httpx.AsyncClient, stack: Stack) -> None:
    credential, agent_id, alert_id = await drifting_agent(api, stack)
    path = f"/v1/agents/{agent_id}/drift/{alert_id}/acknowledge"

    stranger = await api.post(path, headers=auth(new_credential()))
    assert stranger.status_code == 403 and stranger.json()["error"]["status"] == "PERMISSION_DENIED"
    anonymous = await api.post(path)
    assert anonymous.status_code == 401
    unknown = await api.post(f"/v1/agents/{agent_id}/drift/da-{'0' * 32}/acknowledge",
                             headers=auth(credential))
    assert unknown.status_code == 404 and unknown.json()["error"]["reason"] == "ALERT_NOT_FOUND"
    malformed = await api.post(f"/v1/agents/{agent_id}/drift/nope/acknowledge", headers=auth(credential))
    assert malformed.status_code == 422 and malformed.json()["error"]["field"] == "alert_id"

    acknowledged = await api.post(path, headers=auth(credential))
    assert acknowledged.status_code == 200, acknowledged.text
    body = acknowledged.json()
    assert body["alert_id"] == alert_id and body["status"] == "open" and body["acknowledged_at"]
    listed = (await api.get(f"/v1/agents/{agent_id}/drift")).json()["items"][0]
    assert listed["acknowledged_at"] == body["acknowledged_at"]
    again = (await api.post(path, headers=auth(credential))).json()
    assert again["acknowledged_at"] == body["acknowledged_at"]  # the first acknowledgement is kept
