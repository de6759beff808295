"""observer.accounting: the request read down to its last conversation element (its index kept,
the history never built), the API of a call, and a call's facts from a captured exchange."""

from __future__ import annotations

import json
from typing import Any

from smoltbot.core.usage import API_ANTHROPIC_MESSAGES, API_GEMINI, API_OPENAI_CHAT, API_OPENAI_RESPONSES
from smoltbot.observer.accounting import api_of, facts_of, is_other_model_call, last_item_request
from smoltbot.v1 import exchange_pb2


def _exchange(provider: str, path: str, request: dict[str, Any], response: dict[str, Any],
              **headers: str) -> exchange_pb2.Exchange:
    return exchange_pb2.Exchange(
        provider=provider,
        request=exchange_pb2.CapturedRequest(
            method="POST", path=path, body=json.dumps(request).encode(),
            headers=[exchange_pb2.HttpHeader(name=name, value=value) for name, value in headers.items()]),
        response=exchange_pb2.CapturedResponse(status=200, body=json.dumps(response).encode()),
    )


def test_last_item_request_keeps_metadata_model_and_the_last_message_with_its_index() -> None:
    history = [{"role": "user", "content": "x" * 1000}, {"role": "assistant", "content": "ok"},
               {"role": "user", "content": "Now the tests"}]
    body = json.dumps({"model": "m", "metadata": {"user_id": "u"}, "messages": history,
                       "tools": [1]}).encode()
    cut = json.loads(last_item_request(body))
    assert cut == {"model": "m", "metadata": {"user_id": "u"},
                   "messages": [{"role": "user", "content": "Now the tests"}], "_last_index_messages": 2}
    assert json.loads(last_item_request(b'{"messages": []}')) == {"messages": [], "_last_index_messages": -1}
    assert last_item_request(b"not json") == b"{}"


def test_api_of_each_provider_path() -> None:
    assert api_of("anthropic", "/v1/messages") == API_ANTHROPIC_MESSAGES
    assert api_of("openai", "/v1/chat/completions") == API_OPENAI_CHAT
    assert api_of("openai", "/v1/responses") == API_OPENAI_RESPONSES
    assert api_of("gemini", "/v1beta/models/gemini-2.5-flash:generateContent") == API_GEMINI


def test_facts_of_an_anthropic_turn_start_and_a_tool_result() -> None:
    prompt = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
              {"role": "user", "content": "c"}]
    reply = {"model": "claude-opus-4-8", "usage": {"input_tokens": 3, "output_tokens": 4}}
    facts = facts_of(_exchange("anthropic", "/v1/messages", {"model": "claude-opus-4-8", "messages": prompt},
                               reply, **{"x-claude-code-session-id": "s1"}))
    assert (facts.turn.starts_turn, facts.turn.position) == (True, 2)
    assert facts.session_rung == "x-claude-code-session-id" and facts.model == "claude-opus-4-8"
    assert (facts.usage.input, facts.usage.output) == (3, 4) and not facts.sub_agent.is_sub_agent
    result = [*prompt, {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x",
                                                           "input": {}}]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}]
    after_tool = facts_of(_exchange("anthropic", "/v1/messages", {"messages": result}, reply))
    assert after_tool.turn.starts_turn is False


def test_facts_of_an_openai_chat_call_keep_cached_tokens_apart() -> None:
    # OpenAI's documented example: 2006 prompt tokens, of which 1920 cached.
    response = {"model": "gpt-5.4", "usage": {"prompt_tokens": 2006, "completion_tokens": 300,
                                              "prompt_tokens_details": {"cached_tokens": 1920}}}
    exchange = _exchange("openai", "/v1/chat/completions",
                         {"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}]}, response,
                         **{"session-id": "codex-1"})
    assert is_other_model_call(exchange)
    facts = facts_of(exchange)
    assert (facts.usage.input, facts.usage.cache_read, facts.usage.output) == (86, 1920, 300)
    assert facts.session_rung == "session-id" and facts.turn.starts_turn is True
    assert not is_other_model_call(_exchange("openai", "/v1/models", {}, {}))
