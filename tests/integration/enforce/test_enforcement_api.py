"""The enforcement record over REST and on the dashboard: "the card said deny and the call went
through" is one GET /v1 query; the trace page shows what the gateway did. Real API, Registry and
Observer on both databases."""

from __future__ import annotations

import json

import httpx
import pytest

from smoltbot.v1 import exchange_pb2
from tests.integration.api.helpers import (
    Stack,
    anthropic_response,
    auth,
    ingest,
    make_exchange,
    new_credential,
    wait_for_traces,
)
from tests.integration.enforce.conftest import card_json

pytestmark = pytest.mark.timeout(60)


def with_enforcement(exchange: exchange_pb2.Exchange, mode: str, action: str,
                     verdict: str) -> exchange_pb2.Exchange:
    tool_use = next(b for b in json.loads(exchange.response.body)["content"] if b["type"] == "tool_use")
    exchange.enforcement.mode = mode
    exchange.enforcement.tool_calls.add(tool_use_id=tool_use["id"], name=tool_use["name"], index=0,
                                        verdict=verdict, action=action, reason="forbidden_actions")
    return exchange


async def test_what_the_card_denied_and_went_through_is_one_query_and_shown_on_the_trace_page(
        api: httpx.AsyncClient, stack: Stack) -> None:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    card = json.loads(card_json("enforce", forbidden_actions=["delete_file"]))
    put = await api.put(f"/v1/agents/{agent_id}/card", headers=auth(credential), json=card)
    assert put.status_code == 200, put.text

    def call(tool: str, path: str) -> exchange_pb2.Exchange:
        answer = anthropic_response(tool=(tool, {"path": path}))
        return make_exchange(stack, credential, answer, agent_id=agent_id)

    await ingest(
        stack,
        with_enforcement(call("delete_file", "logs/old.log"), "enforce", "blocked", "deny"),
        with_enforcement(call("delete_file", "a"), "observe", "not_enforced", "deny"),
        with_enforcement(call("read_file", "b"), "enforce", "allowed", "allow"),
    )
    traces = await wait_for_traces(api, agent_id, 3)
    assert {t["enforcement"]["action"] for t in traces} == {"blocked", "not_enforced", "allowed"}

    went_through = await api.get(f"/v1/agents/{agent_id}/traces", params=[
        ("verified", "false"), ("enforcement", "allowed"), ("enforcement", "nudged"),
        ("enforcement", "not_enforced")])
    assert went_through.status_code == 200, went_through.text
    (found,) = went_through.json()["items"]
    assert found["action"]["parameters"] == {"path": "a"}
    assert found["enforcement"] == {"mode": "observe", "verdict": "deny", "action": "not_enforced",
                                    "reason": "forbidden_actions", "card_id": ""}
    blocked = await api.get("/v1/traces", params={"agent_id": agent_id, "enforcement": "blocked"})
    assert [t["action"]["parameters"] for t in blocked.json()["items"]] == [{"path": "logs/old.log"}]
    refused = await api.get("/v1/traces", params={"enforcement": "ignored"})
    assert refused.status_code == 422 and refused.json()["error"]["field"].startswith("enforcement")

    (stopped,) = blocked.json()["items"]
    page = await api.get(f"/agents/{agent_id}/traces/{stopped['trace_id']}")
    assert page.status_code == 200
    assert 'data-testid="enforcement"' in page.text and "blocked" in page.text
