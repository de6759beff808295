"""A Claude Code session with a sub-agent, reproduced through the real gateway with Claude Code's
request shapes (x-claude-code-session-id on every request, metadata.user_id's JSON session_id,
x-claude-code-agent-id / -parent-agent-id / -agent-type on the sub-agents' requests, the
`claude-cli` user agent), the official SDK calling the Anthropic stand-in: the sub-agents' traces
nest under the parent session, their tokens and cost count in its totals exactly as the provider
reported them, and a sub-agent is checked against the same card as its parent (what the parent
may not do, the sub-agent may not either)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from smoltbot.core.identity import agent_hash
from smoltbot.core.pricing import load_price_table
from smoltbot.core.usage import anthropic_usage
from smoltbot.gateway import RunningGateway
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.test_through_gateway import MODEL, stack, standin  # noqa: F401 - fixtures
from tests.integration.observer.test_verification_through_service import STRICT_CARD

pytestmark = pytest.mark.timeout(90)

CREDENTIAL = "sk-ant-api03-claude-code-sub-agents-0123456789"
SESSION = str(uuid.UUID("5f0c9b1e-2d3a-4c5b-8e7f-9a0b1c2d3e4f"))
#: The parent may not list directories: neither may its sub-agents.
CARD = {**STRICT_CARD, "autonomy": {"bounded_actions": ["Task", "read_file", "respond"],
                                    "forbidden_actions": ["list_dir"], "escalation_triggers": []}}
TASK = {"name": "Task", "description": "Launch a sub-agent", "input_schema": {
    "type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}}
LIST_DIR = {"name": "list_dir", "description": "List a directory", "input_schema": {
    "type": "object", "properties": {"dir": {"type": "string"}}, "required": ["dir"]}}


def _claude_code_headers(scenario: str, **sub_agent: str) -> dict[str, str]:
    return {"x-standin-scenario": scenario, "x-claude-code-session-id": SESSION, "x-app": "cli",
            "user-agent": "claude-cli/2.1.80 (external, cli)", **sub_agent}


async def _call(client: anthropic.AsyncAnthropic, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]], scenario: str, **sub_agent: str) -> Any:
    user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": SESSION})
    async with client.messages.stream(model=MODEL, max_tokens=512, messages=messages, tools=tools,
                                      metadata={"user_id": user_id},
                                      extra_headers=_claude_code_headers(scenario, **sub_agent)) as events:
        return await events.get_final_message()


async def test_a_claude_code_sub_agent_nests_in_its_session_and_counts_in_its_totals(
        stack: tuple[ObserverStack, RunningGateway]) -> None:  # noqa: F811 - the fixture
    observer_stack, gateway = stack
    agent_id, agent_hash_ = await observer_stack.agent(
        agent_hash(CREDENTIAL, observer_stack.settings.hash_secret.encode()))
    await observer_stack.put_card(agent_id, agent_hash_, json.dumps(CARD))
    prompt = [{"role": "user", "content": "Find out why the retry loop never stops."}]
    replies = []
    async with anthropic.AsyncAnthropic(api_key=CREDENTIAL, base_url=gateway.base_url + "/anthropic",
                                        max_retries=0) as client:
        # The main agent starts an Explore sub-agent with the Task tool...
        replies.append(await _call(client, prompt, [TASK], "tool_use"))
        explore = {"x-claude-code-agent-id": "agent-a1b2c3", "x-claude-code-agent-type": "Explore"}
        # ...which lists a directory (forbidden by the parent's card) and answers...
        task = [{"role": "user", "content": "Find the retry loop in this repository."}]
        replies.append(await _call(client, task, [LIST_DIR], "tool_use", **explore))
        replies.append(await _call(client, task, [LIST_DIR], "text", **explore))
        # ...and a nested sub-agent of the Explore agent answers too.
        nested = {"x-claude-code-agent-id": "agent-d4e5f6", "x-claude-code-parent-agent-id": "agent-a1b2c3",
                  "x-claude-code-agent-type": "general-purpose"}
        read = [{"role": "user", "content": "Read client.py"}]
        replies.append(await _call(client, read, [], "text", **nested))
        # The main agent goes on with the Task result, then the user asks something new.
        task_use = replies[0].content[-1]
        answer = [block.model_dump() for block in replies[0].content]
        after = [*prompt, {"role": "assistant", "content": answer},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": task_use.id,
                                               "content": "The loop is in client.py."}]}]
        replies.append(await _call(client, after, [TASK], "text"))
        second = [*after, {"role": "assistant", "content": "It retries on 400s."},
                  {"role": "user", "content": "Fix it, please."}]
        replies.append(await _call(client, second, [TASK], "text"))

    traces = await observer_stack.wait_for_traces(len(replies), agent_id=agent_id, order_by="timestamp asc")
    assert {trace.context.session_id for trace in traces} == {SESSION}
    assert {trace.observation.session_rung for trace in traces} == {"x-claude-code-session-id"}
    by_agent = {trace.observation.sub_agent_id: trace for trace in traces if trace.observation.sub_agent_id}
    assert set(by_agent) == {"agent-a1b2c3", "agent-d4e5f6"}
    assert by_agent["agent-d4e5f6"].observation.parent_agent_id == "agent-a1b2c3"
    # Two user turns; the sub-agents' prompts and the tool result start none.
    assert sorted({trace.context.conversation_turn for trace in traces}) == [1, 2]
    assert all(trace.context.conversation_turn == 1 for trace in traces if trace.observation.sub_agent_id)
    # The sub-agent's list_dir is a violation of the parent's card.
    listing = next(t for t in traces if t.action.name == "list_dir")
    assert listing.observation.sub_agent_id == "agent-a1b2c3" and not listing.verification.verified
    assert "forbidden_action" in {v.type for v in listing.verification.violations}
    assert listing.card_id == traces[0].card_id

    assert observer_stack.stub is not None
    session = await observer_stack.stub.GetSessionUsage(pb.GetSessionUsageRequest(session_id=SESSION))
    assert session.agent_id == agent_id and session.turn_count == 2
    assert session.violation_count >= 1 and session.verified_traces < session.traces
    # Totals are exactly the provider's usage as the SDK received it, sub-agents included.
    usages = [anthropic_usage(reply.usage.model_dump()) for reply in replies]
    assert session.total.calls == len(replies)
    assert session.total.input_tokens == sum(u.input or 0 for u in usages)
    assert session.total.output_tokens == sum(u.output or 0 for u in usages)
    prices = load_price_table()
    expected = sum((prices.cost(u, MODEL).usd or Decimal(0) for u in usages), Decimal(0))
    assert Decimal(session.total.known_cost_usd) == expected and session.total.unknown_cost_calls == 0
    agents = {agent.sub_agent_id: agent for agent in session.sub_agents}
    assert set(agents) == {"agent-a1b2c3", "agent-d4e5f6"}
    assert (agents["agent-a1b2c3"].usage.calls, agents["agent-a1b2c3"].agent_type) == (2, "Explore")
    assert agents["agent-a1b2c3"].traces == 2 and agents["agent-a1b2c3"].verified_traces == 1
    assert agents["agent-d4e5f6"].parent_agent_id == "agent-a1b2c3"
    sub_cost = sum((prices.cost(u, MODEL).usd or Decimal(0) for u in usages[1:4]), Decimal(0))
    assert sum(Decimal(a.usage.known_cost_usd) for a in session.sub_agents) == sub_cost
