"""Sessions, tokens and cost through the API, against the real services (SQLite and PostgreSQL):
`GET /v1/sessions/{id}` with its turns, a Claude Code sub-agent nested and rolled up, prompt
caching priced part by part, an unknown model's cost counted apart; `GET /v1/agents/{id}/usage`
grouped by day, model and session; errors in the one error shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

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

SESSION = "c0f4a0d2-7d7e-4b8e-9a51-0e5d3f6f0a11"
SONNET = "claude-sonnet-4-5-20250929"


def _usage(response: dict[str, Any], usage: dict[str, Any], model: str = SONNET) -> dict[str, Any]:
    return {**response, "usage": usage, "model": model}


def _claude_code(exchange: exchange_pb2.Exchange, messages: list[dict[str, Any]], model: str = SONNET,
                 **headers: str) -> exchange_pb2.Exchange:
    exchange.request.body = json.dumps({"model": model, "max_tokens": 4096, "messages": messages}).encode()
    for name, value in {"x-claude-code-session-id": SESSION, **headers}.items():
        exchange.request.headers.append(exchange_pb2.HttpHeader(name=name.replace("_", "-"), value=value))
    return exchange


def claude_code_session(stack: Stack, credential: str, agent_id: str) -> list[exchange_pb2.Exchange]:
    """A Claude Code session: a prompt answered with a Task call (prompt caching), the Explore
    sub-agent's call, then the main agent again on the tool result with a model not in the table."""
    at = datetime.now(UTC) - timedelta(minutes=2)
    prompt = [{"role": "user", "content": "Why does the retry loop never stop?"}]
    main = make_exchange(stack, credential, _usage(
        anthropic_response(text="Let me ask an explorer.", tool=("Task", {"prompt": "Find the retry loop"})),
        {"input_tokens": 10, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 5000,
         "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
         "output_tokens": 200}), agent_id=agent_id, session_hint=SESSION, at=at)
    sub = make_exchange(stack, credential, _usage(
        anthropic_response(text="The loop is in client.py, line 40."),
        {"input_tokens": 100, "output_tokens": 50}),
        agent_id=agent_id, session_hint=SESSION, at=at + timedelta(seconds=10))
    after = make_exchange(stack, credential, _usage(
        anthropic_response(text="Found it."), {"input_tokens": 5, "output_tokens": 5},
        model="claude-unknown-7"),
        agent_id=agent_id, session_hint=SESSION, at=at + timedelta(seconds=20))
    _claude_code(main, prompt)
    _claude_code(sub, [{"role": "user", "content": "Find the retry loop"}],
                 **{"x-claude-code-agent-id": "a7f3c2e19b", "x-claude-code-agent-type": "Explore"})
    task_call = {"type": "tool_use", "id": "toolu_1", "name": "Task",
                 "input": {"prompt": "Find the retry loop"}}
    task_result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "line 40"}
    _claude_code(after, [*prompt, {"role": "assistant", "content": [task_call]},
                         {"role": "user", "content": [task_result]}], model="claude-unknown-7")
    return [main, sub, after]


async def _session_with_sub_agent(api: httpx.AsyncClient, stack: Stack) -> str:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    await ingest(stack, *claude_code_session(stack, credential, agent_id))
    await wait_for_traces(api, agent_id, 3)
    return agent_id


async def test_session_detail_with_a_nested_sub_agent(api: httpx.AsyncClient, stack: Stack) -> None:
    agent_id = await _session_with_sub_agent(api, stack)
    response = await api.get(f"/v1/sessions/{SESSION}", params={"agent_id": agent_id})
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["agent_id"] == agent_id and session["session_rungs"] == ["x-claude-code-session-id"]
    # The sub-agent's own prompt and the tool result start no turn: one user turn.
    assert session["turn_count"] == 1 and [t["turn"] for t in session["turns"]] == [1]
    total = session["total"]
    assert (total["calls"], total["input_tokens"], total["cache_read_tokens"], total["cache_write_5m_tokens"],
            total["output_tokens"]) == (3, 115, 5000, 1000, 255)
    # The two calls that sent no cache fields are counted as silent on them, not as zero.
    assert total["calls_without"] == {"cache_read_tokens": 2, "cache_write_5m_tokens": 2,
                                      "cache_write_1h_tokens": 2, "cache_write_unknown_ttl_tokens": 3,
                                      "reasoning_tokens": 3}
    # Sonnet 4.5: 10*$3 + 1000*$3.75 + 5000*$0.30 + 200*$15, plus the sub-agent's 100*$3 + 50*$15.
    assert Decimal(total["known_cost_usd"]) == Decimal("0.00828") + Decimal("0.00105")
    assert (total["known_cost_calls"], total["unknown_cost_calls"]) == (2, 1)
    [sub] = session["sub_agents"]
    assert (sub["sub_agent_id"], sub["agent_type"], sub["source"]) == ("a7f3c2e19b", "Explore", "claude_code")
    assert sub["usage"]["calls"] == 1 and Decimal(sub["usage"]["known_cost_usd"]) == Decimal("0.00105")
    assert sub["traces"] == 1
    assert session["integrity"]["traces"] == 3

    # Only one agent has this session id: agent_id may be left out.
    assert (await api.get(f"/v1/sessions/{SESSION}")).json()["agent_id"] == agent_id
    missing = await api.get("/v1/sessions/no-such-session")
    assert missing.status_code == 404 and missing.json()["error"]["reason"] == "SESSION_NOT_FOUND"
    traces = (await api.get(f"/v1/agents/{agent_id}/traces", params={"limit": 10})).json()["items"]
    sub_traces = [t for t in traces if t["observation"].get("sub_agent_id")]
    assert [t["observation"]["sub_agent_type"] for t in sub_traces] == ["Explore"]
    assert all(t["context"]["conversation_turn"] == 1 for t in traces)


async def test_agent_usage_grouped_by_day_model_and_session(api: httpx.AsyncClient, stack: Stack) -> None:
    agent_id = await _session_with_sub_agent(api, stack)
    by_model = (await api.get(f"/v1/agents/{agent_id}/usage", params={"group_by": "model"})).json()
    groups = {group["key"]: group["usage"] for group in by_model["groups"]}
    assert set(groups) == {SONNET, "claude-unknown-7"}
    assert groups["claude-unknown-7"]["unknown_cost_calls"] == 1
    assert groups["claude-unknown-7"]["known_cost_usd"] == "0"
    assert Decimal(groups[SONNET]["known_cost_usd"]) == Decimal("0.00933")
    assert by_model["total"]["calls"] == 3
    by_session = (await api.get(f"/v1/agents/{agent_id}/usage", params={"group_by": "session"})).json()
    assert [group["key"] for group in by_session["groups"]] == [SESSION]
    assert by_session["groups"][0]["turn_count"] == 1
    assert by_model["groups"][0]["turn_count"] is None
    by_day = (await api.get(f"/v1/agents/{agent_id}/usage")).json()
    assert by_day["group_by"] == "day"
    assert [group["key"] for group in by_day["groups"]] == [datetime.now(UTC).date().isoformat()] or \
        len(by_day["groups"]) == 2  # a run across UTC midnight
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    empty = (await api.get(f"/v1/agents/{agent_id}/usage", params={"since": future})).json()
    assert empty["total"]["calls"] == 0 and empty["groups"] == []

    bad = await api.get(f"/v1/agents/{agent_id}/usage", params={"group_by": "week"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "group_by"
    backwards = await api.get(f"/v1/agents/{agent_id}/usage",
                              params={"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"})
    assert backwards.status_code == 400 and backwards.json()["error"]["field"] == "until"
