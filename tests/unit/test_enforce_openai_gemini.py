"""The OpenAI (Chat Completions, Responses) and Gemini rewriters of gateway.enforce: whole answers
and streams in any chunking, built by the stand-ins' own reply builders and read back by the
gateway's reassemblers (which rebuild what the official SDKs accumulate)."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import pytest
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from smoltbot.core.aap.cards import normalize_card
from smoltbot.core.aap.enforcement import Verdict, check_tool_call
from smoltbot.gateway.capture import Capture
from smoltbot.gateway.enforce import CardCache, EnforcementMetrics, Enforcer
from smoltbot.gateway.enforce.calls import StreamEnforcer
from smoltbot.gateway.enforce.gemini import GeminiArrayEnforcer, GeminiSseEnforcer, rewrite_gemini
from smoltbot.gateway.enforce.nudges import Nudges, note_in_chat, note_in_gemini, note_in_responses
from smoltbot.gateway.enforce.openai_chat import ChatStreamEnforcer, rewrite_chat_completion
from smoltbot.gateway.enforce.openai_responses import ResponsesStreamEnforcer, rewrite_response
from smoltbot.gateway.enforce.texts import NUDGE_PREFIX, replacement_text
from smoltbot.gateway.providers import (
    ChatCompletionReassembler,
    GeminiArrayReassembler,
    GeminiReassembler,
    ResponsesReassembler,
)
from tests.support.gemini_standin import gemini_chunks, merged_response
from tests.support.openai_responses_wire import responses_events, responses_object
from tests.support.openai_standin import Plan, chat_chunks, chat_completion, plan_reply
from tests.support.standin_server import Seed, canonical

AGENT = "smolt-0123456789abcdef"
CARD = normalize_card({
    "integrity_mode": "enforce",
    "principal": {"type": "unspecified", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency"]},
    "autonomy": {"bounded_actions": [], "forbidden_actions": ["bash", "shell"], "escalation_triggers": [
        {"condition": 'parameters.target == "production"', "action": "escalate", "reason": "a human"}]},
    "audit": {"retention_days": 30, "queryable": False, "trace_format": "ap-trace-v1"},
}, agent_id=AGENT)


def decide(name: str, tool_input: Any, tool_use_id: str) -> Verdict:
    return check_tool_call(CARD, name, tool_input, tool_use_id)


def chat_tool(name: str, **fixed: str) -> dict[str, Any]:
    properties = {key: {"type": "string", "enum": [value]} for key, value in fixed.items()}
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object",
                                                                           "properties": properties}}}


BASH = chat_tool("bash", command="rm -rf /tmp/work")
WEATHER = chat_tool("get_weather", location="Paris")
DEPLOY = chat_tool("deploy", target="production")


def plan(tools: list[dict[str, Any]], scenario: str = "tool_calls",
         responses: bool = False) -> tuple[Plan, Any]:
    if responses:
        tools = [{"type": "function", **tool["function"]} for tool in tools]
        payload: dict[str, Any] = {"model": "gpt-5.1", "input": "go", "tools": tools}
    else:
        payload = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "go"}], "tools": tools}
    seed = canonical(payload)
    return plan_reply(scenario, Seed(seed), payload, {}, len(seed)), payload


def pieces(raw: bytes, size: int) -> list[bytes]:
    return [raw[i:i + size] for i in range(0, len(raw), size)] if size else [raw]


def run(enforcer: StreamEnforcer, chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    sent = [enforcer.feed(chunk) for chunk in chunks]
    return b"".join(sent) + enforcer.end(), sent


def chat_final(raw: bytes) -> dict[str, Any]:
    reassembler = ChatCompletionReassembler()
    reassembler.feed(raw)
    return json.loads(reassembler.close())


# --- Chat Completions --------------------------------------------------------------------------


def test_chat_whole_answer_forbidden_call_becomes_content_and_the_turn_stops() -> None:
    body = json.dumps(chat_completion(plan([BASH])[0])).encode()
    rewritten, records = rewrite_chat_completion(body, decide, replace=True)
    assert rewritten is not None
    choice = json.loads(rewritten)["choices"][0]
    arguments = {"command": "rm -rf /tmp/work"}
    assert choice["message"]["content"] == replacement_text("bash", arguments, decide("bash", arguments, ""))
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    assert [(r.name, r.verdict.decision, r.replaced) for r in records] == [("bash", "deny", True)]
    original = json.loads(body)
    assert {k: v for k, v in json.loads(rewritten).items() if k != "choices"} == {
        k: v for k, v in original.items() if k != "choices"}


def test_chat_whole_answer_keeps_allowed_calls_and_their_finish_reason() -> None:
    body = json.dumps(chat_completion(plan([WEATHER, DEPLOY])[0])).encode()
    rewritten, records = rewrite_chat_completion(body, decide, replace=True)
    assert rewritten is not None
    choice = json.loads(rewritten)["choices"][0]
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]
    assert choice["finish_reason"] == "tool_calls" and "explicit approval" in choice["message"]["content"]
    assert [(r.index, r.verdict.decision) for r in records] == [(0, "allow"), (1, "escalate")]
    allowed = json.dumps(chat_completion(plan([WEATHER])[0])).encode()
    assert rewrite_chat_completion(allowed, decide, replace=True)[0] is None
    assert rewrite_chat_completion(body, decide, replace=False)[0] is None  # nudge: judged only


@pytest.mark.parametrize("size", [0, 1, 7, 64])
@pytest.mark.parametrize("tools", [[BASH], [WEATHER], [WEATHER, BASH], [BASH, WEATHER], [DEPLOY, BASH]])
def test_chat_stream_ends_as_the_whole_answer_would(size: int, tools: list[dict[str, Any]]) -> None:
    the_plan = plan(tools)[0]
    raw = b"".join(chat_chunks(the_plan, include_usage=True))
    out, _ = run(ChatStreamEnforcer(decide, replace=True), pieces(raw, size))
    whole = json.dumps(chat_completion(the_plan)).encode()
    rewritten, _ = rewrite_chat_completion(whole, decide, replace=True)
    want = json.loads(rewritten or whole)["choices"][0]
    got = chat_final(out)["choices"][0]
    assert got["finish_reason"] == want["finish_reason"]
    assert got["message"].get("content") == want["message"].get("content")
    assert [(c["id"], c["function"]) for c in got["message"].get("tool_calls") or []] == [
        (c["id"], c["function"]) for c in want["message"].get("tool_calls") or []]
    if rewritten is None:
        assert out == raw  # nothing stopped: the client gets the bytes as they came


def test_chat_stream_text_passes_at_once_and_only_the_call_is_held() -> None:
    the_plan = plan([BASH])[0]
    the_plan.text = ["Let me", " clean up."]
    chunks = chat_chunks(the_plan, include_usage=False)
    enforcer = ChatStreamEnforcer(decide, replace=True)
    out, sent = run(enforcer, chunks)
    assert sent[:3] == chunks[:3]  # role, then text deltas: unchanged, unheld
    opening = next(i for i, c in enumerate(chunks) if b"tool_calls" in c)
    assert all(piece == b"" for piece in sent[opening:-2])  # the call's deltas, held to its end
    message = chat_final(out)["choices"][0]["message"]
    assert message["content"].startswith("Let me clean up.\n\n[smoltbot] Blocked a tool call")
    assert enforcer.records[0].replaced


def test_chat_stream_a_broken_stream_is_released_as_it_came() -> None:
    chunks = chat_chunks(plan([BASH])[0], include_usage=False)
    enforcer = ChatStreamEnforcer(decide, replace=True)
    cut = next(i for i, c in enumerate(chunks) if b"tool_calls" in c) + 2
    held = b"".join(enforcer.feed(c) for c in chunks[:cut])
    assert held + enforcer.release() == b"".join(chunks[:cut])


# --- Responses ---------------------------------------------------------------------------------


def responses_final(raw: bytes) -> dict[str, Any]:
    reassembler = ResponsesReassembler()
    reassembler.feed(raw)
    return json.loads(reassembler.close())


@pytest.mark.parametrize("scenario", ["tool_calls", "reasoning_tool_calls"])
@pytest.mark.parametrize("size", [0, 5, 100])
@pytest.mark.parametrize("tools", [[BASH], [WEATHER], [WEATHER, BASH], [DEPLOY, WEATHER]])
def test_responses_stream_ends_as_the_whole_answer_would(scenario: str, size: int,
                                                         tools: list[dict[str, Any]]) -> None:
    the_plan, payload = plan(tools, scenario, responses=True)
    raw = b"".join(responses_events(the_plan, payload))
    enforcer = ResponsesStreamEnforcer(decide, replace=True)
    out, _ = run(enforcer, pieces(raw, size))
    whole = json.dumps(responses_object(the_plan, payload)).encode()
    rewritten, records = rewrite_response(whole, decide, replace=True)
    assert [(r.index, r.name, r.verdict, r.replaced) for r in enforcer.records] == [
        (r.index, r.name, r.verdict, r.replaced) for r in records]
    want = json.loads(rewritten or whole)
    assert responses_final(out)["output"] == want["output"]
    if rewritten is None:
        assert out == raw
        return
    # the items the final event carries and the ones the stream built agree
    reassembler = ResponsesReassembler()
    reassembler.feed(out.split(b"event: response.completed")[0])
    built = json.loads(reassembler.close())["output"]
    assert built == want["output"]
    stopped = [item for item in want["output"] if item["type"] == "message"]
    assert stopped and stopped[0]["content"][0]["text"].startswith("[smoltbot]")
    assert stopped[0]["id"].startswith("msg_smoltbot_fc_")


def test_responses_stream_holds_only_the_call_events() -> None:
    the_plan, payload = plan([BASH], "reasoning_tool_calls", responses=True)
    events = responses_events(the_plan, payload)
    enforcer = ResponsesStreamEnforcer(decide, replace=True)
    sent = [enforcer.feed(event) for event in events]
    added = next(i for i, e in enumerate(events) if b'"type":"function_call"' in e)
    done = next(i for i, e in enumerate(events) if e.startswith(b"event: response.output_item.done")
                and b"function_call" in e)
    assert sent[:added] == events[:added]  # reasoning deltas: unchanged, at once
    assert all(s == b"" for s in sent[added:done])
    assert sent[done].count(b"event: ") == 6 and b"response.output_text.delta" in sent[done]


def test_responses_client_builtin_calls_are_judged_and_server_ones_are_not() -> None:
    response = {"id": "resp_1", "object": "response", "status": "completed", "output": [
        {"id": "lsc_1", "type": "local_shell_call", "call_id": "call_1", "status": "completed",
         "action": {"type": "exec", "command": ["rm", "-rf", "/"]}},
        {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search"}}]}
    rewritten, records = rewrite_response(json.dumps(response).encode(), decide, replace=False)
    assert rewritten is None
    assert [(r.name, r.tool_use_id, r.verdict.decision) for r in records] == [
        ("local_shell", "call_1", "allow")]


# --- Gemini ------------------------------------------------------------------------------------


def gemini_payload(*names: tuple[str, dict[str, str]]) -> dict[str, Any]:
    declarations = [{"name": name, "parameters": {"type": "OBJECT", "properties": {
        key: {"type": "STRING", "enum": [value]} for key, value in fixed.items()}}} for name, fixed in names]
    return {"contents": [{"role": "user", "parts": [{"text": "go"}]}],
            "tools": [{"functionDeclarations": declarations}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}


G_BASH = ("bash", {"command": "ls"})
G_WEATHER = ("get_weather", {"location": "Paris"})


def test_gemini_whole_answer_call_becomes_text_keeping_its_signature() -> None:
    payload = gemini_payload(G_BASH, G_WEATHER)
    chunks = gemini_chunks("thinking_function_call", Seed(canonical(payload)), payload, "gemini-2.5-pro")
    body = json.dumps(merged_response(chunks)).encode()
    rewritten, records = rewrite_gemini(body, decide, replace=True)
    assert rewritten is not None
    parts = json.loads(rewritten)["candidates"][0]["content"]["parts"]
    original = json.loads(body)["candidates"][0]["content"]["parts"]
    at = next(i for i, part in enumerate(original) if "functionCall" in part)
    assert parts[at]["text"].startswith("[smoltbot] Blocked") and "'bash'" in parts[at]["text"]
    assert parts[at]["thoughtSignature"] == original[at]["thoughtSignature"]
    assert parts[:at] == original[:at] and parts[at + 1:] == original[at + 1:]
    assert [(r.index, r.name, r.replaced) for r in records] == [(0, "bash", True), (1, "get_weather", False)]


@pytest.mark.parametrize("size", [0, 3, 50])
@pytest.mark.parametrize("array", [False, True])
def test_gemini_streams_end_as_the_whole_answer_would(size: int, array: bool) -> None:
    payload = gemini_payload(G_WEATHER, G_BASH)
    chunks = gemini_chunks("thinking_function_call", Seed(canonical(payload)), payload, "gemini-2.5-pro")
    encoded = [json.dumps(c, separators=(",", ":")).encode() for c in chunks]
    if array:
        raw = b"".join((b"[" if n == 0 else b"\n,\r\n") + item for n, item in enumerate(encoded)) + b"\n]"
        enforcer: StreamEnforcer = GeminiArrayEnforcer(decide, replace=True)
        reassembler: GeminiReassembler = GeminiArrayReassembler()
    else:
        raw = b"".join(b"data: " + item + b"\r\n\r\n" for item in encoded)
        enforcer, reassembler = GeminiSseEnforcer(decide, replace=True), GeminiReassembler()
    out, _ = run(enforcer, pieces(raw, size))
    reassembler.feed(out)
    got = json.loads(reassembler.close())
    rewritten, _ = rewrite_gemini(json.dumps(merged_response(chunks)).encode(), decide, replace=True)
    assert rewritten is not None
    assert got["candidates"][0]["content"] == json.loads(rewritten)["candidates"][0]["content"]
    assert [(r.index, r.name, r.replaced) for r in enforcer.records] == [
        (0, "get_weather", False), (1, "bash", True)]
    first_call = next(item for item in encoded if b"functionCall" in item)
    assert out.startswith(raw[:raw.index(first_call)])  # the thoughts before it: as they came


@pytest.mark.parametrize("array", [False, True])
def test_gemini_stream_without_a_stopped_call_is_byte_identical(array: bool) -> None:
    payload = gemini_payload(G_WEATHER)
    chunks = gemini_chunks("function_call", Seed(canonical(payload)), payload, "gemini-2.5-pro")
    text = gemini_chunks("text", Seed(b'{"a": "}\\"{"}'), payload, "m")
    encoded = [json.dumps(c).encode() for c in text + chunks]
    raw = (b"[" + b",\r\n".join(encoded) + b"]") if array else b"".join(b"data: " + e + b"\r\n\r\n"
                                                                         for e in encoded)
    for size in (1, 2, 13):
        enforcer = GeminiArrayEnforcer(decide, replace=True) if array else GeminiSseEnforcer(decide,
                                                                                             replace=True)
        out, _ = run(enforcer, pieces(raw, size))
        assert out == raw and [r.name for r in enforcer.records] == ["get_weather"]


def test_gemini_array_text_elements_go_out_as_each_completes() -> None:
    payload = gemini_payload(G_BASH)
    text = [json.dumps(c).encode() for c in gemini_chunks("text", Seed(b"x"), payload, "m")]
    enforcer = GeminiArrayEnforcer(decide, replace=True)
    assert enforcer.feed(b"[" + text[0]) == b"[" + text[0]
    assert enforcer.feed(b",\r\n" + text[1][:10]) == b",\r\n"
    assert enforcer.feed(text[1][10:]) == text[1]  # held only until its braces balance


# --- nudge notes -------------------------------------------------------------------------------


def test_nudge_notes_go_at_the_end_of_each_providers_conversation() -> None:
    note = NUDGE_PREFIX + " no"
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert note_in_chat(chat, note) and chat["messages"][-1] == {"role": "system", "content": note}
    developer = {"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "hi"}]}
    assert note_in_chat(developer, note) and developer["messages"][-1]["role"] == "developer"
    responses: dict[str, Any] = {"input": "hi", "instructions": "be good"}
    assert note_in_responses(responses, note)
    assert responses == {"instructions": "be good", "input": [
        {"role": "user", "content": "hi"}, {"type": "message", "role": "developer", "content": note}]}
    gemini = {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f"}}]}]}
    assert note_in_gemini(gemini, note)
    assert gemini["contents"][0]["parts"][-1] == {"text": note}
    assert not note_in_gemini({"contents": [{"role": "model", "parts": []}]}, note)


def test_a_pending_note_waits_for_a_request_that_can_take_it() -> None:
    nudges = Nudges()
    nudges.add(AGENT, "s", [("bash", decide("bash", {}, ""))])
    model_last = json.dumps({"contents": [{"role": "model", "parts": [{"text": "x"}]}]}).encode()
    assert nudges.apply(AGENT, "s", model_last, {}, note_in_gemini) == (model_last, "")
    body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    changed, note = nudges.apply(AGENT, "s", body, {}, note_in_chat)
    assert json.loads(changed)["messages"][-1] == {"role": "system", "content": note}
    assert nudges.pending == 0


# --- the filter chooses by call ----------------------------------------------------------------


@pytest.mark.parametrize(("provider", "path", "query", "content_type", "kind"), [
    ("openai", "/v1/chat/completions", "", "text/event-stream", "ChatStreamEnforcer"),
    ("openai", "/v1/responses", "", "text/event-stream", "ResponsesStreamEnforcer"),
    ("gemini", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "alt=sse", "text/event-stream",
     "GeminiSseEnforcer"),
    ("gemini", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "", "application/json",
     "GeminiArrayEnforcer"),
    ("gemini", "/v1beta/models/gemini-2.5-pro:generateContent", "", "application/json", None),
    ("openai", "/v1/embeddings", "", "application/json", "none"),
])
async def test_each_model_call_gets_its_providers_filter(provider: str, path: str, query: str,
                                                         content_type: str, kind: str | None) -> None:
    cards = CardCache("127.0.0.1:1")
    cards._unwatched[AGENT] = (CARD, time.monotonic())  # a card just read
    enforcer = Enforcer(cards, EnforcementMetrics(CollectorRegistry()))
    capture = Capture(agent_hash="a" * 64, session_hint="", method="POST", path=path, query=query,
                      request_headers=[], request_body=b"{}", started_ns=0, provider=provider)
    capture.agent_id = AGENT
    made = await enforcer.response_filter(capture, 200, {"content-type": content_type}, CIMultiDict())
    if kind == "none":
        assert made is None
        return
    assert made is not None
    stream = made._stream
    assert (type(stream).__name__ if stream is not None else None) == kind


# --- fail-open and nudge through the response filter, for each provider ------------------------


def provider_stream(kind: str) -> tuple[str, str, str, list[bytes]]:
    """(provider, path, query, the stream's writes) of an answer whose one call is forbidden."""
    if kind == "chat":
        return "openai", "/v1/chat/completions", "", chat_chunks(plan([BASH])[0], include_usage=True)
    if kind == "responses":
        the_plan, payload = plan([BASH], "reasoning_tool_calls", responses=True)
        return "openai", "/v1/responses", "", responses_events(the_plan, payload)
    payload = gemini_payload(G_BASH)
    chunks = gemini_chunks("thinking_function_call", Seed(canonical(payload)), payload, "gemini-2.5-pro")
    return ("gemini", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "alt=sse",
            [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks])


async def provider_filter(kind: str, *, replace: bool,
                          encoding: str = "") -> tuple[Any, Capture, list[bytes]]:
    provider, path, query, chunks = provider_stream(kind)
    cards = CardCache("127.0.0.1:1")
    card = {**CARD, "integrity_mode": "enforce" if replace else "nudge"}
    cards._unwatched[AGENT] = (card, time.monotonic())
    enforcer = Enforcer(cards, EnforcementMetrics(CollectorRegistry()))
    capture = Capture(agent_hash="a" * 64, session_hint="", method="POST", path=path, query=query,
                      request_headers=[], request_body=b"{}", started_ns=0, provider=provider)
    capture.agent_id = AGENT
    headers = {"content-type": "text/event-stream"}
    if encoding:
        headers["content-encoding"] = encoding
    made = await enforcer.response_filter(capture, 200, headers, CIMultiDict())
    assert made is not None
    return made, capture, chunks


@pytest.mark.parametrize("kind", ["chat", "responses", "gemini"])
async def test_a_broken_stream_releases_what_was_held_as_it_came_and_is_recorded(kind: str) -> None:
    made, capture, chunks = await provider_filter(kind, replace=True, encoding="gzip")
    # up to and including the call's first write (the chat and Responses calls are held from there;
    # a Gemini call comes whole in its chunk, judged at once: the break comes before it)
    marker = {"chat": b'"tool_calls"', "responses": b'"type":"function_call"',
              "gemini": b"functionCall"}[kind]
    cut = next(i for i, c in enumerate(chunks) if marker in c) + (kind != "gemini")
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    sent = [made.feed(compressor.compress(c) + compressor.flush(zlib.Z_SYNC_FLUSH)) for c in chunks[:cut]]
    if kind != "gemini":
        assert sent[-1] == b""  # held
    sent.append(made.feed(b"not gzip at all"))
    assert b"".join(sent) == b"".join(chunks[:cut])  # fail-open: everything went out unchanged
    assert capture.enforcement.not_enforced_reason.startswith("enforcement failed")


@pytest.mark.parametrize("kind", ["chat", "responses", "gemini"])
async def test_nudge_relays_every_byte_as_it_came_and_records_the_verdict(kind: str) -> None:
    made, capture, chunks = await provider_filter(kind, replace=False)
    raw = b"".join(chunks)
    out = b"".join(made.feed(raw[i:i + 40]) for i in range(0, len(raw), 40)) + made.end()
    assert out == raw
    calls = [(c.name, c.verdict, c.action) for c in capture.enforcement.tool_calls]
    assert calls == [("bash", "deny", "nudged")]


@pytest.mark.parametrize("kind", ["chat", "responses", "gemini"])
async def test_enforce_records_each_call_and_what_was_done(kind: str) -> None:
    made, capture, chunks = await provider_filter(kind, replace=True)
    out = b"".join(made.feed(c) for c in chunks) + made.end()
    assert b"[smoltbot] Blocked a tool call" in out
    (call,) = capture.enforcement.tool_calls
    assert (call.name, call.verdict, call.action, capture.enforcement.mode) == ("bash", "deny", "blocked",
                                                                               "enforce")
    assert call.tool_use_id.startswith("call_") or kind == "gemini"


def legacy_chunks(name: str, arguments: str) -> list[bytes]:
    """A stream of the deprecated `functions` API: one function_call in fragments."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    pieces = [arguments[i:i + 5] for i in range(0, len(arguments), 5)]
    return [chunk({"role": "assistant", "content": None, "function_call": {"name": name, "arguments": ""}}),
            *[chunk({"function_call": {"arguments": piece}}) for piece in pieces],
            chunk({}, "function_call"), b"data: [DONE]\n\n"]


@pytest.mark.parametrize(("name", "stopped"), [("bash", True), ("get_weather", False)])
def test_chat_the_deprecated_function_call_is_judged_too(name: str, stopped: bool) -> None:
    arguments = json.dumps({"command": "rm -rf /tmp/work"})
    chunks = legacy_chunks(name, arguments)
    enforcer = ChatStreamEnforcer(decide, replace=True)
    out, _ = run(enforcer, chunks)
    got = chat_final(out)["choices"][0]
    message = {"role": "assistant", "content": None, "function_call": {"name": name, "arguments": arguments}}
    whole = {"id": "chatcmpl-1", "object": "chat.completion",
             "choices": [{"index": 0, "finish_reason": "function_call", "message": message}]}
    rewritten, records = rewrite_chat_completion(json.dumps(whole).encode(), decide, replace=True)
    assert [(r.name, r.replaced) for r in records] == [(r.name, r.replaced) for r in enforcer.records] == [
        (name, stopped)]
    if not stopped:
        assert out == b"".join(chunks) and rewritten is None
        return
    assert rewritten is not None
    want = json.loads(rewritten)["choices"][0]
    assert "function_call" not in got["message"] and "function_call" not in want["message"]
    assert got["message"]["content"] == want["message"]["content"] == replacement_text(
        name, json.loads(arguments), decide(name, json.loads(arguments), ""))
    assert got["finish_reason"] == want["finish_reason"] == "stop"


def test_chat_content_sent_as_parts_keeps_its_parts() -> None:
    completion = chat_completion(plan([BASH])[0])
    completion["choices"][0]["message"]["content"] = [{"type": "text", "text": "Cleaning up."}]
    rewritten, _ = rewrite_chat_completion(json.dumps(completion).encode(), decide, replace=True)
    assert rewritten is not None
    content = json.loads(rewritten)["choices"][0]["message"]["content"]
    assert content[0] == {"type": "text", "text": "Cleaning up."}
    assert content[1]["type"] == "text" and content[1]["text"].startswith("[smoltbot] Blocked")


@pytest.mark.parametrize("responses", [False, True])
def test_custom_tool_calls_are_judged_on_their_text_streamed_and_not(responses: bool) -> None:
    custom = {"type": "custom", "custom": {"name": "bash"}}
    if responses:
        payload: dict[str, Any] = {"model": "gpt-5.1", "input": "go",
                                   "tools": [{"type": "custom", "name": "bash"}]}
    else:
        payload = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "go"}], "tools": [custom]}
    seed = canonical(payload)
    the_plan = plan_reply("tool_calls", Seed(seed), payload, {}, len(seed))
    if responses:
        raw = b"".join(responses_events(the_plan, payload))
        enforcer: StreamEnforcer = ResponsesStreamEnforcer(decide, replace=True)
        whole = json.dumps(responses_object(the_plan, payload)).encode()
        rewritten, records = rewrite_response(whole, decide, replace=True)
    else:
        raw = b"".join(chat_chunks(the_plan, include_usage=False))
        enforcer = ChatStreamEnforcer(decide, replace=True)
        whole = json.dumps(chat_completion(the_plan)).encode()
        rewritten, records = rewrite_chat_completion(whole, decide, replace=True)
    out, _ = run(enforcer, pieces(raw, 9))
    text = the_plan.calls[0].arguments
    assert [(r.name, r.replaced) for r in records] == [(r.name, r.replaced) for r in enforcer.records] == [
        ("bash", True)]
    assert rewritten is not None
    replacement = replacement_text("bash", {"input": text}, decide("bash", {"input": text}, ""))
    if responses:
        assert responses_final(out)["output"] == json.loads(rewritten)["output"]
        assert json.loads(rewritten)["output"][0]["content"][0]["text"] == replacement
    else:
        assert chat_final(out)["choices"][0]["message"]["content"] == replacement
        assert json.loads(rewritten)["choices"][0]["message"]["content"] == replacement


def test_responses_an_error_inside_a_held_call_still_reaches_the_client() -> None:
    the_plan, payload = plan([BASH], responses=True)
    events = responses_events(the_plan, payload)
    inside = next(i for i, e in enumerate(events) if b"function_call_arguments.delta" in e) + 1
    error = (b'event: error\ndata: {"type":"error","sequence_number":99,"code":"server_error",'
             b'"message":"x"}\n\n')
    enforcer = ResponsesStreamEnforcer(decide, replace=True)
    out, _ = run(enforcer, [*events[:inside], error])
    assert out.startswith(b"".join(events[:next(i for i, e in enumerate(events) if b'"function_call"' in e)]))
    assert out.endswith(error)  # after the replacement, as it came
    assert b"[smoltbot] Blocked a tool call" in out and enforcer.records[0].replaced


def test_anthropic_an_error_inside_a_held_tool_use_still_reaches_the_client() -> None:
    from smoltbot.gateway.enforce.anthropic import SseEnforcer

    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                  "content": [], "model": "m", "stop_reason": None}}
    tool = {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {}}
    error = event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    chunks = [event("message_start", start),
              event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": tool}),
              event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                  "type": "input_json_delta", "partial_json": '{"command": "ls'}}),
              error]
    enforcer = SseEnforcer(decide, replace=True)
    out, _ = run(enforcer, chunks)
    assert out.startswith(chunks[0]) and out.endswith(error)  # after the replacement, as it came
    assert b"[smoltbot] Blocked a tool call" in out and enforcer.records[0].replaced


def test_gemini_array_braces_and_quotes_inside_strings_do_not_cut_elements() -> None:
    tricky = 'he wrote "{" and \\"}\\" then a backslash \\\\ and } {'
    elements = [{"candidates": [{"content": {"parts": [{"text": tricky}], "role": "model"}}]},
                {"candidates": [{"content": {"parts": [{"functionCall": {"name": "bash", "args": {
                    "command": tricky}}}], "role": "model"}, "finishReason": "STOP"}]}]
    raw = b"[" + b",\r\n".join(json.dumps(e).encode() for e in elements) + b"]"
    for size in (1, 2, 3, 5, 8):
        enforcer = GeminiArrayEnforcer(decide, replace=True)
        out, sent = run(enforcer, pieces(raw, size))
        got = json.loads(out)
        assert got[0] == elements[0]
        assert got[1]["candidates"][0]["content"]["parts"][0]["text"].startswith("[smoltbot] Blocked")
        assert [r.name for r in enforcer.records] == ["bash"]
        first = raw.index(b",\r\n")
        assert b"".join(sent)[:first] == raw[:first]  # the first element went out whole, unchanged
