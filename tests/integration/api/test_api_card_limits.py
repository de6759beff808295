"""Card limits through the REST API (which stores cards through the Registry): a 400 naming the
field and the limit, and the active card unchanged."""

from __future__ import annotations

import httpx

from smoltbot.core.aap.cards import MAX_CARD_BYTES, MAX_ESCALATION_TRIGGERS
from smoltbot.core.aap.conditions import MAX_CONDITION_TERMS
from tests.integration.api.helpers import auth, new_credential

CARD = {
    "card_version": "unified/2026-04-26",
    "principal": {"type": "human", "identifier": "alice", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency"]},
    "autonomy": {"bounded_actions": [], "escalation_triggers": []},
    "audit": {"retention_days": 30, "queryable": False},
}


async def test_cards_over_a_limit_get_400_naming_the_field_and_the_limit(api: httpx.AsyncClient) -> None:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    url = f"/v1/agents/{agent_id}/card"
    active = (await api.get(url)).json()
    trigger = {"condition": 'action_name == "x"', "action": "escalate", "reason": "r"}
    heavy_condition = " or ".join(f"a == {i}" for i in range(MAX_CONDITION_TERMS + 1))
    cases = [
        ({**CARD, "autonomy": {"escalation_triggers": [trigger] * (MAX_ESCALATION_TRIGGERS + 1)}},
         "autonomy.escalation_triggers", "MAX_ESCALATION_TRIGGERS"),
        ({**CARD, "autonomy": {"escalation_triggers": [{**trigger, "condition": heavy_condition}]}},
         "autonomy.escalation_triggers[0].condition", "MAX_CONDITION_TERMS"),
        ({**CARD, "extensions": {"blob": "x" * MAX_CARD_BYTES}}, "body", "MAX_CARD_BYTES"),
    ]
    for card, field, limit in cases:
        response = await api.put(url, json=card, headers=auth(credential))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["field"] == field, error
        assert limit in error["message"], error
    assert (await api.get(url)).json()["card_id"] == active["card_id"]
    # At the limit, the same card is stored.
    response = await api.put(url, json={**CARD, "autonomy": {"bounded_actions": [],
        "escalation_triggers": [trigger] * MAX_ESCALATION_TRIGGERS}}, headers=auth(credential))
    assert response.status_code == 200, response.text
