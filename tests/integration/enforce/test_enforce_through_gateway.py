"""The card's enforce mode at the real gateway: the official SDK, streamed and not, against the
Anthropic stand-in, with a forbidden tool, an allowed tool and an escalate trigger. The client sees
the replacement or the original exactly (checked against the same call made directly); the traces
say blocked, allowed, escalated. An observe card relays byte for byte; a new card applies to the
next call within a second on a gateway that cached the old one."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import brotli  # type: ignore[import-untyped]
import httpx
import pytest

from smoltbot.core.aap.enforcement import check_tool_call
from smoltbot.gateway.enforce.texts import NUDGE_PREFIX, replacement_text
from tests.integration.enforce.conftest import MODEL, EnforceStack, card_json, tool

pytestmark = pytest.mark.timeout(90)

ENFORCE = card_json(
    "enforce", forbidden_actions=["bash"],
    escalation_triggers=[{"condition": 'parameters.target == "production"', "action": "escalate",
                          "reason": "production deploys need a human"}])
BASH = tool("Bash", command="rm -rf /tmp/work")
WEATHER = tool("get_weather", location="Paris")
DEPLOY = tool("deploy", target="production")


async def call(client: anthropic.AsyncAnthropic, tools: list[dict[str, Any]], *, stream: bool,
               scenario: str = "tool_use", text: str = "Please help.") -> anthropic.types.Message:
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 512, "tools": tools,
                              "messages": [{"role": "user", "content": text}],
                              "extra_headers": {"x-standin-scenario": scenario}}
    if stream:
        async with client.messages.stream(**kwargs) as events:
            return await events.get_final_message()
    return await client.messages.create(**kwargs)


def dump(message: anthropic.types.Message) -> dict[str, Any]:
    return message.model_dump(exclude_none=True)


async def test_forbidden_allowed_and_escalated_tool_calls_streamed_and_not(
        enforce_stack: EnforceStack) -> None:
    card = await enforce_stack.put_card(ENFORCE)
    stored = {"card_id": card, **json.loads(ENFORCE)}
    cases = [("Bash", [BASH], "blocked"), ("get_weather", [WEATHER], "allowed"),
             ("deploy", [DEPLOY], "escalated")]
    async with enforce_stack.client() as through, enforce_stack.client(direct=True) as direct:
        for stream in (False, True):
            for name, tools, action in cases:
                text = f"{name} {stream}"
                got = dump(await call(through, tools, stream=stream, scenario="thinking_tool_use", text=text))
                want = dump(await call(direct, tools, stream=stream, scenario="thinking_tool_use", text=text))
                if action == "allowed":
                    assert got == want, name
                    continue
                block = want["content"][2]
                verdict = check_tool_call(stored, name, block["input"])
                assert verdict.decision == ("deny" if action == "blocked" else "escalate")
                # thinking (signature and all) and the text before stay; the call becomes text
                assert got["content"][:2] == want["content"][:2], name
                replacement = replacement_text(name, block["input"], verdict)
                assert got["content"][2] == {"type": "text", "text": replacement}
                assert got["stop_reason"] == "end_turn" and want["stop_reason"] == "tool_use"
                assert {k: v for k, v in got.items() if k not in ("content", "stop_reason")} == {
                    k: v for k, v in want.items() if k not in ("content", "stop_reason")}
                if action == "escalated":
                    assert "explicit approval" in got["content"][2]["text"]

    # Counted by tool call: the fixture's first calls (one or more) each leave a reply trace.
    traces = await enforce_stack.observer.wait_for_traces(6, agent_id=enforce_stack.agent_id, timeout=30,
                                                          matching=lambda t: t.action.name != "respond")
    actions = sorted((t.action.name, t.enforcement.action, t.enforcement.verdict, t.observation.streamed)
                     for t in traces if t.action.name != "respond")
    assert actions == sorted([
        ("Bash", "blocked", "deny", False), ("Bash", "blocked", "deny", True),
        ("get_weather", "allowed", "allow", False), ("get_weather", "allowed", "allow", True),
        ("deploy", "escalated", "escalate", False), ("deploy", "escalated", "escalate", True)])
    for trace in traces:
        if trace.action.name == "Bash":
            # The observer checked what the model asked for: the card said deny, the gateway blocked it.
            assert not trace.verification.verified
            assert trace.enforcement.card_id == card and trace.enforcement.mode == "enforce"
    blocked = await enforce_stack.observer.list_traces(agent_id=enforce_stack.agent_id,
                                                       enforcement=["blocked"])
    assert sorted(t.action.name for t in blocked) == ["Bash", "Bash"]


async def raw_call(client: httpx.AsyncClient, url: str, stream: bool) -> bytes:
    body = {"model": MODEL, "max_tokens": 256, "stream": stream, "tools": [BASH],
            "messages": [{"role": "user", "content": "raw"}]}
    headers = {"x-api-key": "sk-ant-api03-enforce-0123456789abcdef", "anthropic-version": "2023-06-01",
               "x-standin-scenario": "thinking_tool_use"}
    async with client.stream("POST", url + "/v1/messages", json=body, headers=headers) as response:
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.aiter_raw()])


async def test_an_observe_card_relays_byte_for_byte(enforce_stack: EnforceStack) -> None:
    await enforce_stack.put_card(card_json("observe", forbidden_actions=["bash"]))
    async with httpx.AsyncClient() as client:
        for stream in (False, True):
            through = await raw_call(client, enforce_stack.gateway.base_url + "/anthropic", stream)
            direct = await raw_call(client, enforce_stack.standin.base_url, stream)
            assert through == direct  # compressed as the stand-in sent it (httpx asks for br)
            assert b'"Bash"' in brotli.decompress(through)
    traces = await enforce_stack.observer.wait_for_traces(2, agent_id=enforce_stack.agent_id, timeout=30,
                                                          matching=lambda t: t.action.name == "Bash")
    bash = [t for t in traces if t.action.name == "Bash"]
    assert len(bash) == 2 and {t.enforcement.action for t in bash} == {"not_enforced"}
    assert {t.enforcement.mode for t in bash} == {"observe"}
    # "The card said deny and the call went through": one query.
    went_through = await enforce_stack.observer.list_traces(
        agent_id=enforce_stack.agent_id, verified=False, enforcement=["allowed", "nudged", "not_enforced"])
    assert sorted(t.trace_id for t in went_through) == sorted(t.trace_id for t in bash)


async def test_a_new_card_applies_to_the_next_call_within_a_second(enforce_stack: EnforceStack) -> None:
    cards = enforce_stack.gateway.gateway.enforcer.cards
    async with enforce_stack.client() as client:
        first = await call(client, [BASH], stream=False)
        assert first.content[-1].type == "tool_use"  # the default card observes
        cached = cards.cached(enforce_stack.agent_id)
        assert cached is not None and cached["integrity_mode"] == "observe"
        # Not put_card: that waits for the gateway to know the card, which is what is timed here.
        await enforce_stack.observer.put_card(enforce_stack.agent_id, enforce_stack.agent_hash, ENFORCE)
        changed = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            answer = await call(client, [BASH], stream=True, text=f"again {attempts}")
            if answer.content[-1].type == "text":
                break
            assert time.monotonic() - changed < 1.0, "the new card did not apply within a second"
        assert time.monotonic() - changed < 1.0
        assert answer.stop_reason == "end_turn"


async def test_nudge_lets_the_call_through_and_tells_the_model_on_the_next_request(
        enforce_stack: EnforceStack) -> None:
    await enforce_stack.put_card(card_json("nudge", forbidden_actions=["bash"]))
    async with httpx.AsyncClient() as raw:  # nothing is changed: the bytes, compressed, as they came
        through = await raw_call(raw, enforce_stack.gateway.base_url + "/anthropic", True)
        assert through == await raw_call(raw, enforce_stack.standin.base_url, True)
    async with enforce_stack.client() as client:
        await call(client, [WEATHER], stream=False, scenario="echo", text="next")
    seen = enforce_stack.standin.requests[-1]  # what the gateway forwarded of "next"
    content = seen.json()["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "next"}
    assert content[1]["text"].startswith(NUDGE_PREFIX)
    traces = await enforce_stack.observer.wait_for_traces(1, agent_id=enforce_stack.agent_id, timeout=30,
                                                          matching=lambda t: t.action.name == "Bash")
    (bash,) = [t for t in traces if t.action.name == "Bash"]
    assert (bash.enforcement.action, bash.enforcement.verdict) == ("nudged", "deny")
    assert "'Bash'" in content[1]["text"]


async def metric(enforce_stack: EnforceStack, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(enforce_stack.gateway.base_url + "/metrics")).text
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


@pytest.mark.parametrize("policy", ["allow", "block"])
async def test_when_the_card_cannot_be_read_its_fail_policy_decides_logged_and_counted(
        enforce_stack: EnforceStack, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    card = json.loads(ENFORCE)
    card["extensions"] = {"smoltbot": {"enforcement": {"fail_policy": policy}}}
    await enforce_stack.put_card(json.dumps(card))
    async with enforce_stack.client() as client:
        blocked = await call(client, [BASH], stream=False, text="while the registry is up")
        assert blocked.content[-1].type == "text"
        await enforce_stack.observer.stop_registry()
        before = await metric(enforce_stack, "smoltbot_gateway_enforcement_card_unavailable_total")
        answer = await call(client, [BASH], stream=True, text="while the registry is down")
    assert await metric(enforce_stack, "smoltbot_gateway_enforcement_card_unavailable_total") == before + 1
    assert "the card could not be read" in caplog.text
    if policy == "allow":
        assert answer.content[-1].type == "tool_use" and answer.stop_reason == "tool_use"
    else:
        assert answer.content[-1].type == "text" and "could not be read" in answer.content[-1].text
    await enforce_stack.observer.start_registry()
    traces = await enforce_stack.observer.wait_for_traces(
        1, agent_id=enforce_stack.agent_id, timeout=30,
        matching=lambda t: t.action.name == "Bash" and t.observation.streamed)
    (down,) = [t for t in traces if t.action.name == "Bash" and t.observation.streamed]
    if policy == "allow":
        assert (down.enforcement.mode, down.enforcement.action) == ("unknown", "not_enforced")
        assert "could not be read" in down.enforcement.reason
    else:
        assert (down.enforcement.action, down.enforcement.verdict) == ("blocked", "deny")

