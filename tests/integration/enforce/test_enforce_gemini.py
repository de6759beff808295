"""The card's enforce and nudge modes for Gemini at the real gateway: the official google-genai SDK,
generateContent and its `alt=sse` stream (and the JSON-array stream, by raw HTTP), against the
Gemini stand-in, with a forbidden function, an allowed one and an escalate trigger. The client
sees the replacement or the original exactly (checked against the same call made directly);
the traces say blocked, allowed, escalated. Under a nudge card nothing changes and
the session's next request carries the note."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google.genai import types

from smoltbot.core.aap.enforcement import check_tool_call
from smoltbot.gateway.enforce.texts import NUDGE_PREFIX, replacement_text
from tests.integration.enforce.conftest import GEMINI_KEY, ProviderStack, card_json

pytestmark = pytest.mark.timeout(90)

ENFORCE = card_json(
    "enforce", forbidden_actions=["bash"],
    escalation_triggers=[{"condition": 'parameters.target == "production"', "action": "escalate",
                          "reason": "production deploys need a human"}])
SESSION = {"x-smoltbot-session": "enforce-gemini"}
MODEL = "gemini-2.5-pro"


def declaration(name: str, **fixed: str) -> types.FunctionDeclaration:
    """A function the stand-in calls with exactly `fixed` as its args (one-value enums)."""
    return types.FunctionDeclaration(name=name, description=f"the {name} function", parameters=types.Schema(
        type="OBJECT", properties={key: types.Schema(type="STRING", enum=[value])
                                   for key, value in fixed.items()}))


BASH = declaration("bash", command="rm -rf /tmp/work")
WEATHER = declaration("get_weather", location="Paris")
DEPLOY = declaration("deploy", target="production")
CASES = [("bash", BASH, "blocked", "deny"), ("get_weather", WEATHER, "allowed", "allow"),
         ("deploy", DEPLOY, "escalated", "escalate")]


def config(function: types.FunctionDeclaration, scenario: str) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-standin-scenario": scenario, **SESSION}),
        tools=[types.Tool(function_declarations=[function])],
        thinking_config=types.ThinkingConfig(include_thoughts=True),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))


async def generate(stack: ProviderStack, http: httpx.AsyncClient, function: types.FunctionDeclaration, *,
                   stream: bool, text: str, direct: bool = False,
                   scenario: str = "thinking_function_call") -> list[dict[str, Any]]:
    """The answer's chunks as the SDK gives them (one for a plain call)."""
    client = stack.gemini_client(http, direct=direct)
    if not stream:
        answer = await client.aio.models.generate_content(model=MODEL, contents=text,
                                                          config=config(function, scenario))
        return [answer.model_dump(exclude_none=True, exclude={"sdk_http_response"})]
    chunks = await client.aio.models.generate_content_stream(model=MODEL, contents=text,
                                                             config=config(function, scenario))
    return [chunk.model_dump(exclude_none=True, exclude={"sdk_http_response"}) async for chunk in chunks]


def parts(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    return list(chunk["candidates"][0]["content"]["parts"])


async def test_generate_content_forbidden_allowed_and_escalated_streamed_and_not(
        provider_stack: ProviderStack) -> None:
    card = await provider_stack.put_card(provider_stack.gemini, ENFORCE)
    stored = {"card_id": card, **json.loads(ENFORCE)}
    before = {action: await metric_of(provider_stack, action)
              for action in ("blocked", "allowed", "escalated")}
    async with httpx.AsyncClient() as http:
        for stream in (False, True):
            for name, function, action, _ in CASES:
                text = f"{name} {stream}"
                got = await generate(provider_stack, http, function, stream=stream, text=text)
                want = await generate(provider_stack, http, function, stream=stream, text=text, direct=True)
                if action == "allowed":
                    assert got == want, name
                    continue
                assert len(got) == len(want)
                for got_chunk, want_chunk in zip(got, want, strict=True):
                    calls = [p for p in parts(want_chunk) if "function_call" in p]
                    if not calls:
                        assert got_chunk == want_chunk  # thoughts and the rest: as they came
                        continue
                    (call,) = calls
                    args = call["function_call"]["args"]
                    replacement = replacement_text(name, args, check_tool_call(stored, name, args))
                    at = parts(want_chunk).index(call)
                    # the text takes the call's place and keeps its thought signature
                    assert parts(got_chunk)[at] == {"text": replacement,
                                                    "thought_signature": call["thought_signature"]}
                    rest = [p for i, p in enumerate(parts(got_chunk)) if i != at]
                    assert rest == [p for i, p in enumerate(parts(want_chunk)) if i != at]
                    assert got_chunk["candidates"][0]["finish_reason"] == "STOP"
                    if action == "escalated":
                        assert "explicit approval" in replacement
    after = {action: await metric_of(provider_stack, action) for action in before}
    assert {action: after[action] - before[action] for action in before} == {
        "blocked": 2, "allowed": 2, "escalated": 2}
    traces = await provider_stack.observer.wait_for_traces(6, agent_id=provider_stack.gemini[0], timeout=30)
    calls = [t for t in traces if t.action.name != "respond"]
    # Gemini calls carry no id: the observer matches the records to the traces by name and order.
    assert sorted((t.action.name, t.enforcement.action, t.enforcement.verdict, t.observation.streamed)
                  for t in calls) == sorted((name, action, verdict, stream) for stream in (False, True)
                                            for name, _, action, verdict in CASES)
    assert {(t.enforcement.mode, t.enforcement.card_id) for t in calls} == {("enforce", card)}
    blocked = await provider_stack.observer.list_traces(agent_id=provider_stack.gemini[0],
                                                        enforcement=["blocked"])
    assert sorted(t.action.name for t in blocked) == ["bash", "bash"]


async def metric_of(stack: ProviderStack, action: str = "", name: str = "") -> float:
    """A gateway counter: tool calls judged with `action`, or the metric `name`."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(stack.gateway.base_url + "/metrics")).text
    name = name + " " if name else f'smoltbot_gateway_enforcement_tool_calls_total{{action="{action}"}}'
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name))


async def raw_array(client: httpx.AsyncClient, url: str, text: str) -> bytes:
    body = {"contents": [{"role": "user", "parts": [{"text": text}]}],
            "tools": [{"functionDeclarations": [BASH.model_dump(exclude_none=True, mode="json")]}]}
    headers = {"x-goog-api-key": GEMINI_KEY, "x-standin-scenario": "function_call", **SESSION}
    async with client.stream("POST", url + f"/v1beta/models/{MODEL}:streamGenerateContent", json=body,
                             headers=headers) as response:
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.aiter_raw()])


async def test_the_json_array_stream_is_enforced_too(provider_stack: ProviderStack) -> None:
    await provider_stack.put_card(provider_stack.gemini, ENFORCE)
    async with httpx.AsyncClient() as client:
        through = await raw_array(client, provider_stack.gateway.base_url + "/gemini", "array")
        direct = await raw_array(client, provider_stack.gemini_standin.base_url, "array")
    got, want = json.loads(through), json.loads(direct)
    assert len(got) == len(want) and got[:-1] == want[:-1]
    (call,) = want[-1]["candidates"][0]["content"]["parts"]
    args = call["functionCall"]["args"]
    assert got[-1]["candidates"][0]["content"]["parts"] == [
        {"text": replacement_text("bash", args, check_tool_call(json.loads(ENFORCE), "bash", args))}]
    assert {k: v for k, v in got[-1].items() if k != "candidates"} == {
        k: v for k, v in want[-1].items() if k != "candidates"}


async def test_an_observe_card_relays_gemini_answers_byte_for_byte(provider_stack: ProviderStack) -> None:
    await provider_stack.put_card(provider_stack.gemini, card_json("observe", forbidden_actions=["bash"]))
    async with httpx.AsyncClient() as client:
        through = await raw_array(client, provider_stack.gateway.base_url + "/gemini", "observed")
        assert through == await raw_array(client, provider_stack.gemini_standin.base_url, "observed")
        assert b'"bash"' in through
    traces = await provider_stack.observer.wait_for_traces(1, agent_id=provider_stack.gemini[0], timeout=30)
    assert {(t.enforcement.mode, t.enforcement.action) for t in traces} == {("observe", "not_enforced")}


async def test_nudge_lets_gemini_calls_through_and_tells_the_model_on_the_next_request(
        provider_stack: ProviderStack) -> None:
    await provider_stack.put_card(provider_stack.gemini, card_json("nudge", forbidden_actions=["bash"]))
    async with httpx.AsyncClient() as http:
        got = await generate(provider_stack, http, BASH, stream=True, text="nudged")
        assert got == await generate(provider_stack, http, BASH, stream=True, text="nudged", direct=True)
        await generate(provider_stack, http, WEATHER, stream=False, text="next", scenario="text")
    seen = provider_stack.gemini_standin.requests[-1].json()  # what the gateway forwarded of "next"
    last = seen["contents"][-1]["parts"]
    assert last[0] == {"text": "next"}
    assert last[-1]["text"].startswith(NUDGE_PREFIX) and "'bash'" in last[-1]["text"]
    assert await metric_of(provider_stack, name="smoltbot_gateway_enforcement_nudges_delivered_total") == 1
