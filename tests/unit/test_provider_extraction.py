"""Extraction of OpenAI (Chat Completions, Responses) and Gemini replies: one decision per tool or
function call with its exact arguments, reasoning only from reasoning items and thought parts
(and said when it is only a summary), never from the reply text or the request's history."""

from __future__ import annotations

import json
from typing import Any

from smoltbot.observer import record_kinds
from smoltbot.observer.extraction import Extraction, extract
from smoltbot.observer.providers import wire_format
from smoltbot.observer.trace_builder import build_traces
from tests.support.gemini_standin import gemini_chunks, merged_response
from tests.support.openai_responses_wire import responses_object
from tests.support.openai_standin import chat_completion, plan_reply
from tests.support.standin_server import Seed

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"
TOOLS = [{"type": "function", "name": "run_tests",
          "parameters": {"properties": {"path": {"type": "string"}}}}]


def _read(provider: str, path: str, request: dict[str, Any], response: Any, **kw: Any) -> Extraction:
    return extract(json.dumps(request).encode(), json.dumps(response).encode(),
                   http_status=kw.pop("status", 200), streamed=kw.pop("streamed", False),
                   outcome=kw.pop("outcome", "complete"), provider=provider, path=path, **kw)


def _plan(scenario: str, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    return plan_reply(scenario, Seed(body), payload, {}, len(body))


def test_model_calls_of_every_provider_are_decisions_and_other_calls_activity() -> None:
    decisions = [("anthropic", "POST", "/v1/messages"), ("", "POST", "/v1/messages"),
                 ("openai", "POST", CHAT), ("openai", "POST", RESPONSES),
                 ("gemini", "POST", GEMINI), ("gemini", "POST", "/v1beta/models/g:streamGenerateContent")]
    activity = [("openai", "POST", "/v1/embeddings"), ("openai", "GET", "/v1/models"),
                ("openai", "POST", "/v1/files"), ("openai", "POST", "/v1/moderations"),
                ("openai", "POST", "/v1/batches"), ("openai", "GET", "/v1/responses/resp_1"),
                ("openai", "POST", "/v1/messages"), ("gemini", "POST", "/v1beta/models/g:countTokens"),
                ("gemini", "POST", "/v1beta/models/g:embedContent"), ("anthropic", "POST", CHAT)]
    assert [record_kinds.is_model_call(m, p, provider) for provider, m, p in decisions] == [True] * 6
    assert [record_kinds.is_model_call(m, p, provider) for provider, m, p in activity] == [False] * 10
    assert wire_format("gemini", "POST", GEMINI).api == "gemini.generate"  # type: ignore[union-attr]


def test_chat_tool_calls_are_one_decision_each_with_their_exact_arguments() -> None:
    payload = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "go"}],
               "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {
                   "properties": {"path": {"type": "string"}}}}},
                         {"type": "custom", "custom": {"name": "python"}}]}
    completion = chat_completion(_plan("tool_calls", payload))
    ex = _read("openai", CHAT, payload, completion)
    calls = completion["choices"][0]["message"]["tool_calls"]
    assert ex.provider == "openai" and ex.api == "openai.chat" and ex.model == "gpt-4.1"
    assert [(c.name, c.id, c.call_type) for c in ex.tool_calls] == [
        ("read_file", calls[0]["id"], "function"), ("python", calls[1]["id"], "custom")]
    assert ex.tool_calls[0].input == json.loads(calls[0]["function"]["arguments"])
    assert ex.tool_calls[1].input == {"input": calls[1]["custom"]["input"]}
    assert ex.request_tools == ["read_file", "python"]
    assert [d.kind for d in ex.decisions()] == ["tool", "tool"]


def test_chat_reasoning_is_never_read_from_the_reply_text_and_hidden_reasoning_is_said() -> None:
    payload = {"model": "o3", "messages": [{"role": "user", "content": "hi"}]}
    completion = chat_completion(_plan("text", payload))
    completion["choices"][0]["message"]["content"] = "<think>secret plan</think>Hello"
    completion["usage"]["completion_tokens_details"]["reasoning_tokens"] = 64
    ex = _read("openai", CHAT, payload, completion)
    assert ex.reasoning == [] and "secret plan" in ex.final_text
    assert any("64 reasoning tokens" in note for note in ex.missing)
    completion["choices"][0]["message"]["reasoning_content"] = "I should greet."
    ex = _read("openai", CHAT, payload, completion)
    assert [(s.source, s.text) for s in ex.reasoning] == [("reasoning_content", "I should greet.")]


def test_chat_call_cut_at_the_token_limit_is_not_finished() -> None:
    payload = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "go"}]}
    completion = chat_completion(_plan("tool_calls", payload))
    completion["choices"][0]["finish_reason"] = "length"
    completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"location": "Par'
    ex = _read("openai", CHAT, payload, completion)
    assert [(c.finished, c.input_valid) for c in ex.tool_calls] == [(False, False)]
    trace = _traces(ex)[0]
    assert trace["action"]["type"] == "recommend" and trace["observation"]["executed"] is False


def test_responses_reasoning_summary_then_calls_and_the_summary_is_said_to_be_one() -> None:
    payload = {"model": "gpt-5.1", "input": "go", "tools": TOOLS, "reasoning": {"summary": "auto"}}
    response = responses_object(_plan("reasoning_tool_calls", payload), payload)
    ex = _read("openai", RESPONSES, payload, response)
    assert ex.api == "openai.responses" and ex.stop_reason == "completed"
    assert [(c.name, c.call_type, c.server) for c in ex.tool_calls] == [("run_tests", "function_call", False)]
    assert ex.tool_calls[0].input == json.loads(response["output"][1]["arguments"])
    assert [s.source for s in ex.reasoning] == ["reasoning_summary"] and ex.summary_only
    assert any("only a summary of the reasoning" in note for note in ex.missing)
    trace = _traces(ex)[0]
    assert trace["observation"]["reasoning"]["summary_only"] is True
    assert trace["observation"]["reasoning"]["source"] == "reasoning_summary"
    assert "The user wants" in trace["observation"]["reasoning"]["text"]
    assert (trace["observation"]["provider"], trace["observation"]["api"]) == ("openai", "openai.responses")
    assert trace["context"]["environment"]["provider"] == "openai"


def test_responses_builtin_and_custom_calls_are_traced_with_what_they_asked_for() -> None:
    payload = {"model": "gpt-5.1-codex", "input": [
        # History: an earlier turn's call and its output are never read again.
        {"type": "function_call", "call_id": "call_old", "name": "old_tool", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_old", "output": "done"}]}
    output = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA..."},
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": "retry loop"}},
        {"type": "local_shell_call", "id": "lsh_1", "call_id": "call_ls", "status": "completed",
         "action": {"type": "exec", "command": ["bash", "-lc", "ls -la"], "working_directory": "/repo",
                    "timeout_ms": 1000, "env": {}}},
        {"type": "shell_call", "id": "sh_1", "call_id": "call_sh", "status": "completed",
         "action": {"commands": ["pytest -q"], "timeout_ms": 60000}},
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_patch", "name": "apply_patch",
         "input": "*** Begin Patch\n*** End Patch", "status": "completed"},
        {"type": "function_call", "id": "fc_1", "call_id": "call_cut", "name": "read_file",
         "arguments": '{"path": "a', "status": "in_progress"},
    ]
    response = {"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5.1-codex",
                "output": output, "error": None}
    ex = _read("openai", RESPONSES, payload, response)
    assert [(c.name, c.id, c.server, c.finished) for c in ex.tool_calls] == [
        ("web_search", "ws_1", True, True), ("local_shell", "call_ls", False, True),
        ("shell", "call_sh", False, True), ("apply_patch", "call_patch", False, True),
        ("read_file", "call_cut", False, False)]
    assert ex.tool_calls[1].input == {"action": output[2]["action"]}
    assert ex.tool_calls[3].input == {"input": "*** Begin Patch\n*** End Patch"}
    assert [s.source for s in ex.reasoning] == ["encrypted_reasoning"] and ex.redacted_blocks == 1
    traces = _traces(ex)
    assert [t["action"]["type"] for t in traces] == ["execute"] * 4 + ["recommend"]
    assert traces[1]["action"]["parameters"]["action"]["command"] == ["bash", "-lc", "ls -la"]
    assert traces[1]["context"]["metadata"]["call_type"] == "local_shell_call"
    assert all(t["observation"]["reasoning"]["redacted_blocks"] == 1 for t in traces[:1])


def test_a_failed_response_is_one_failure_trace_even_with_http_200() -> None:
    payload = {"model": "gpt-5.1", "input": "go"}
    response = responses_object(_plan("failed", payload), payload)
    ex = _read("openai", RESPONSES, payload, response)
    assert ex.failure == "response_failed" and ex.error_type == "server_error"
    [trace] = _traces(ex)
    assert trace["action"]["name"] == "response_failed"
    assert trace["observation"]["outcome"] == "upstream_error"
    assert "response_failed" in trace["observation"]["outcome_detail"]


def test_openai_error_bodies_are_read_as_errors() -> None:
    body = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                      "code": "rate_limit_exceeded"}}
    ex = _read("openai", CHAT, {"model": "gpt-4.1"}, body, status=429, outcome="upstream_error")
    assert (ex.error_type, ex.error_message) == ("requests", "Rate limit reached")
    [trace] = _traces(ex, outcome="upstream_error")
    assert trace["action"]["name"] == "upstream_error"
    assert trace["action"]["parameters"]["error_message"] == "Rate limit reached"


def test_gemini_function_calls_and_thought_summaries() -> None:
    payload = {"contents": [{"role": "user", "parts": [{"text": "go"}]},
                            {"role": "model", "parts": [{"functionCall": {"name": "old", "args": {}}}]}],
               "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {
                   "properties": {"city": {"type": "STRING"}}}}]}],
               "systemInstruction": {"parts": [{"text": "Be brief."}]},
               "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    chunks = gemini_chunks("thinking_function_call", Seed(b"x"), payload, "gemini-2.5-flash")
    response = merged_response(chunks)
    ex = _read("gemini", GEMINI, payload, response)
    assert ex.provider == "gemini" and ex.model == "gemini-2.5-flash" and ex.stop_reason == "STOP"
    assert [(c.name, c.input, c.call_type) for c in ex.tool_calls] == [
        ("get_weather", response["candidates"][0]["content"]["parts"][-1]["functionCall"]["args"],
         "functionCall")]
    assert ex.request_tools == ["get_weather"] and ex.system_prompt_chars == len("Be brief.")
    assert {s.source for s in ex.reasoning} == {"thought_summary"} and ex.summary_only
    [trace] = _traces(ex)
    assert trace["action"] == {"type": "execute", "name": "get_weather", "category": "bounded",
                               "parameters": ex.tool_calls[0].input}
    assert trace["observation"]["reasoning"]["summary_only"] is True


def test_gemini_without_thought_summaries_says_the_model_thought() -> None:
    payload = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    response = merged_response(gemini_chunks("thinking", Seed(b"y"), payload, "gemini-2.5-pro"))
    ex = _read("gemini", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", payload, response,
               streamed=True)
    assert ex.reasoning == [] and ex.tool_calls == [] and ex.final_text.startswith("Hello!")
    assert any("thought tokens" in note for note in ex.missing)
    assert [d.kind for d in ex.decisions()] == ["reply"]


def test_gemini_error_and_blocked_prompt_are_failures() -> None:
    error = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}
    ex = _read("gemini", GEMINI, {}, error, status=429, outcome="upstream_error")
    assert (ex.error_type, ex.error_message) == ("RESOURCE_EXHAUSTED", "Resource has been exhausted")
    ex = _read("gemini", GEMINI, {}, {"promptFeedback": {"blockReason": "SAFETY"}})
    assert ex.failure == "prompt_blocked"
    [trace] = _traces(ex)
    assert trace["observation"]["outcome"] == "upstream_error" and trace["action"]["name"] == "prompt_blocked"


def _traces(ex: Extraction, outcome: str = "complete") -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 3, tzinfo=UTC)
    return build_traces(exchange_id="e" * 32, agent_id="smolt-1", session_id=None, card={}, extraction=ex,
                        analyses=None, exchange_started_at=now, exchange_ended_at=now, observed_at=now,
                        conversation_turn=None, store_reasoning="full", analyzer_name="local",
                        outcome=outcome, http_status=ex.http_status, environment={})


def test_the_model_analyzer_is_told_when_the_reasoning_is_only_a_summary() -> None:
    from smoltbot.observer.anthropic_analyzer import _prompt

    payload = {"model": "gpt-5.1", "input": "go", "tools": TOOLS, "reasoning": {"summary": "auto"}}
    response = responses_object(_plan("reasoning_tool_calls", payload), payload)
    ex = _read("openai", RESPONSES, payload, response)
    prompt = _prompt(ex, ex.decisions(), 0, {})
    assert "provider's summary of its reasoning" in prompt and "(openai)" in prompt
    anthropic = _read("anthropic", "/v1/messages", {"model": "claude"}, {
        "type": "message", "content": [{"type": "thinking", "thinking": "Plan.", "signature": "s"},
                                       {"type": "text", "text": "Done."}], "stop_reason": "end_turn"})
    assert "summary" not in _prompt(anthropic, anthropic.decisions(), 0, {})
