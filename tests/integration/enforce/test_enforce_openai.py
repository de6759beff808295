"""The card's enforce and nudge modes for OpenAI at the real gateway: the official openai SDK,
Chat Completions and Responses, streamed and not, against the OpenAI stand-in, with a forbidden
tool, an allowed tool and an escalate trigger. The client sees the replacement or the original
exactly (checked against the same call made directly); the traces say blocked, allowed,
escalated. Under a nudge card nothing changes and the session's next request carries the note;
an observe card relays byte for byte."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from smoltbot.core.aap.enforcement import check_tool_call
from smoltbot.gateway.enforce.texts import NUDGE_PREFIX, replacement_text
from tests.integration.enforce.conftest import OPENAI_KEY, ProviderStack, card_json

pytestmark = pytest.mark.timeout(90)

ENFORCE = card_json(
    "enforce", forbidden_actions=["bash"],
    escalation_triggers=[{"condition": 'parameters.target == "production"', "action": "escalate",
                          "reason": "production deploys need a human"}])


def function(name: str, **fixed: str) -> dict[str, Any]:
    """A Chat tool the stand-in calls with exactly `fixed` as its arguments (one-value enums)."""
    properties = {key: {"type": "string", "enum": [value]} for key, value in fixed.items()}
    return {"type": "function", "function": {"name": name, "description": f"the {name} tool",
                                             "parameters": {"type": "object", "properties": properties}}}


BASH = function("bash", command="rm -rf /tmp/work")
WEATHER = function("get_weather", location="Paris")
DEPLOY = function("deploy", target="production")
CASES = [("bash", BASH, "blocked", "deny"), ("get_weather", WEATHER, "allowed", "allow"),
         ("deploy", DEPLOY, "escalated", "escalate")]
SESSION = {"x-smoltbot-session": "enforce-openai"}


def responses_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", **tool["function"]}


async def chat(client: openai.AsyncOpenAI, tools: list[dict[str, Any]], *, stream: bool, text: str,
               scenario: str = "tool_calls") -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}],
                              "tools": tools, "extra_headers": {"x-standin-scenario": scenario, **SESSION}}
    if stream:
        async with client.chat.completions.stream(**kwargs) as events:
            completion = await events.get_final_completion()
    else:
        completion = await client.chat.completions.create(**kwargs)
    return completion.model_dump(exclude_none=True)


async def responses(client: openai.AsyncOpenAI, tools: list[dict[str, Any]], *, stream: bool,
                    text: str, scenario: str = "reasoning_tool_calls") -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": "gpt-5.1", "input": text, "reasoning": {"summary": "auto"},
                              "tools": [responses_tool(t) for t in tools],
                              "extra_headers": {"x-standin-scenario": scenario, **SESSION}}
    if stream:
        async with client.responses.stream(**kwargs) as events:
            response = await events.get_final_response()
    else:
        response = await client.responses.create(**kwargs)
    return response.model_dump(exclude_none=True)


async def judged(stack: ProviderStack, count: int) -> list[tuple[str, str, str, bool]]:
    traces = await stack.observer.wait_for_traces(count, agent_id=stack.openai[0], timeout=30)
    return sorted((t.action.name, t.enforcement.action, t.enforcement.verdict, t.observation.streamed)
                  for t in traces if t.action.name != "respond")


def expected(*, streams: tuple[bool, ...] = (False, True)) -> list[tuple[str, str, str, bool]]:
    return sorted((name, action, verdict, stream) for stream in streams for name, _, action, verdict in CASES)


async def test_chat_completions_forbidden_allowed_and_escalated_streamed_and_not(
        provider_stack: ProviderStack) -> None:
    card = await provider_stack.put_card(provider_stack.openai, ENFORCE)
    stored = {"card_id": card, **json.loads(ENFORCE)}
    async with provider_stack.openai_client() as through, provider_stack.openai_client(direct=True) as direct:
        for stream in (False, True):
            for name, tool, action, _ in CASES:
                text = f"{name} {stream}"
                got = await chat(through, [tool], stream=stream, text=text)
                want = await chat(direct, [tool], stream=stream, text=text)
                if action == "allowed":
                    assert got == want, name
                    continue
                (call,) = want["choices"][0]["message"]["tool_calls"]
                arguments = json.loads(call["function"]["arguments"])
                replacement = replacement_text(name, arguments, check_tool_call(stored, name, arguments))
                message = got["choices"][0]["message"]
                assert message["content"] == replacement and "tool_calls" not in message
                assert got["choices"][0]["finish_reason"] == "stop"
                assert want["choices"][0]["finish_reason"] == "tool_calls"
                assert {k: v for k, v in got.items() if k != "choices"} == {
                    k: v for k, v in want.items() if k != "choices"}
                if action == "escalated":
                    assert "explicit approval" in message["content"]
    assert await judged(provider_stack, 6) == expected()
    blocked = await provider_stack.observer.list_traces(agent_id=provider_stack.openai[0],
                                                        enforcement=["blocked"])
    assert sorted(t.action.name for t in blocked) == ["bash", "bash"]
    assert all(t.enforcement.card_id == card and not t.verification.verified for t in blocked)


async def test_responses_forbidden_allowed_and_escalated_streamed_and_not(
        provider_stack: ProviderStack) -> None:
    card = await provider_stack.put_card(provider_stack.openai, ENFORCE)
    stored = {"card_id": card, **json.loads(ENFORCE)}
    async with provider_stack.openai_client() as through, provider_stack.openai_client(direct=True) as direct:
        for stream in (False, True):
            for name, tool, action, _ in CASES:
                text = f"{name} {stream}"
                got = await responses(through, [tool], stream=stream, text=text)
                want = await responses(direct, [tool], stream=stream, text=text)
                if action == "allowed":
                    assert got == want, name
                    continue
                reasoning, call = want["output"]
                assert call["type"] == "function_call" and reasoning["type"] == "reasoning"
                arguments = json.loads(call["arguments"])
                replacement = replacement_text(name, arguments, check_tool_call(stored, name, arguments))
                assert got["output"][0] == reasoning  # the reasoning item (summary and all) stays
                assert got["output"][1] == {
                    "id": "msg_smoltbot_" + call["id"], "type": "message", "status": "completed",
                    "role": "assistant", "content": [{"type": "output_text", "annotations": [],
                                                      "logprobs": [], "text": replacement}]}
                assert {k: v for k, v in got.items() if k != "output"} == {
                    k: v for k, v in want.items() if k != "output"}
    assert await judged(provider_stack, 6) == expected()


async def raw_chat(client: httpx.AsyncClient, url: str, stream: bool, text: str,
                   api: str = "chat/completions") -> bytes:
    body: dict[str, Any] = {"model": "gpt-4.1", "stream": stream}
    if api == "responses":
        body.update(tools=[responses_tool(BASH)], input=text)
    else:
        body.update(tools=[BASH], messages=[{"role": "user", "content": text}])
    headers = {"authorization": f"Bearer {OPENAI_KEY}", "x-standin-scenario": "tool_calls", **SESSION}
    async with client.stream("POST", f"{url}/v1/{api}", json=body, headers=headers) as response:
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.aiter_raw()])


async def test_an_observe_card_relays_openai_answers_byte_for_byte(provider_stack: ProviderStack) -> None:
    await provider_stack.put_card(provider_stack.openai, card_json("observe", forbidden_actions=["bash"]))
    async with httpx.AsyncClient() as client:
        for api in ("chat/completions", "responses"):
            for stream in (False, True):
                through = await raw_chat(client, provider_stack.gateway.base_url + "/openai", stream,
                                         "observe", api)
                direct = await raw_chat(client, provider_stack.openai_standin.base_url, stream,
                                        "observe", api)
                assert through == direct
                assert b'"bash"' in through
    traces = await provider_stack.observer.wait_for_traces(4, agent_id=provider_stack.openai[0], timeout=30)
    assert {(t.enforcement.mode, t.enforcement.action) for t in traces} == {("observe", "not_enforced")}


async def test_nudge_lets_openai_calls_through_and_tells_the_model_on_the_next_request(
        provider_stack: ProviderStack) -> None:
    await provider_stack.put_card(provider_stack.openai, card_json("nudge", forbidden_actions=["bash"]))
    async with httpx.AsyncClient() as raw:  # nothing is changed: the bytes as they came
        through = await raw_chat(raw, provider_stack.gateway.base_url + "/openai", True, "nudged")
        assert through == await raw_chat(raw, provider_stack.openai_standin.base_url, True, "nudged")
    async with provider_stack.openai_client() as client:
        await chat(client, [WEATHER], stream=False, text="next", scenario="text")
        seen = provider_stack.openai_standin.requests[-1].json()  # what the gateway forwarded of "next"
        assert seen["messages"][0] == {"role": "user", "content": "next"}
        assert seen["messages"][-1]["role"] == "system"
        assert seen["messages"][-1]["content"].startswith(NUDGE_PREFIX) and "'bash'" in seen["messages"][-1][
            "content"]
        # A Responses call of the session after a nudged call gets it as a last developer item.
        await responses(client, [BASH], stream=True, text="nudged again")
        await responses(client, [WEATHER], stream=False, text="and next", scenario="text")
        seen = provider_stack.openai_standin.requests[-1].json()
        assert seen["input"][0] == {"role": "user", "content": "and next"}
        assert seen["input"][-1]["role"] == "developer" and seen["input"][-1]["content"].startswith(
            NUDGE_PREFIX)
    traces = await provider_stack.observer.wait_for_traces(4, agent_id=provider_stack.openai[0], timeout=30)
    nudged = sorted((t.action.name, t.enforcement.action, t.enforcement.verdict) for t in traces
                    if t.action.name == "bash")
    assert nudged == [("bash", "nudged", "deny"), ("bash", "nudged", "deny")]


async def test_a_request_continuing_a_response_gets_its_stopped_calls_outputs(
        provider_stack: ProviderStack) -> None:
    # OpenAI keeps the stored response with the call in it, and refuses a continuation that does
    # not answer it; the client never saw it, so the gateway answers it with what the client got.
    await provider_stack.put_card(provider_stack.openai, ENFORCE)
    async with provider_stack.openai_client() as client, provider_stack.openai_client(direct=True) as plain:
        for stream in (False, True):
            got = await responses(client, [BASH, WEATHER], stream=stream, text=f"continue {stream}")
            stopped = next(item for item in got["output"] if item["type"] == "message")
            allowed = next(item for item in got["output"] if item["type"] == "function_call")
            direct = await responses(plain, [BASH, WEATHER], stream=stream, text=f"continue {stream}")
            (call,) = [i for i in direct["output"] if i["type"] == "function_call" and i["name"] == "bash"]
            await client.responses.create(
                model="gpt-5.1", previous_response_id=got["id"], extra_headers=SESSION,
                input=[{"type": "function_call_output", "call_id": allowed["call_id"], "output": "sunny"}])
            seen = provider_stack.openai_standin.requests[-1].json()
            assert seen["input"] == [
                {"type": "function_call_output", "call_id": call["call_id"],
                 "output": stopped["content"][0]["text"]},
                {"type": "function_call_output", "call_id": allowed["call_id"], "output": "sunny"}]
        # a request that continues no such response is forwarded as it was
        await client.responses.create(model="gpt-5.1", previous_response_id="resp_other", input="hi",
                                      extra_headers=SESSION)
        assert provider_stack.openai_standin.requests[-1].json()["input"] == "hi"
