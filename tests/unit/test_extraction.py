"""Extraction: reasoning and actions from the new assistant turn only, and honest notes on what is missing."""

from __future__ import annotations

import json

from smoltbot.observer.extraction import extract

MODEL = "claude-opus-4-5-20251101"


def request(messages=None, tools=None, system=None, model="claude-sonnet-4-5"):
    body = {"model": model, "max_tokens": 2048, "messages": messages or [{"role": "user", "content": "Hi"}]}
    if tools is not None:
        body["tools"] = tools
    if system is not None:
        body["system"] = system
    return json.dumps(body).encode()


def message(content, stop_reason="end_turn", model=MODEL):
    return json.dumps(
        {
            "model": model,
            "id": "msg_01LAwUK3MeXUxoNW5ZgnPpGy",
            "type": "message",
            "role": "assistant",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 3182, "output_tokens": 237},
        }
    ).encode()


def run(content=None, *, body=None, req=None, status=200, streamed=False, outcome="complete", **kw):
    if body is None:
        body = message(content, **kw)
    return extract(
        req if req is not None else request(), body, http_status=status, streamed=streamed, outcome=outcome
    )


THINKING = {
    "type": "thinking",
    "thinking": "Let me analyze this step by step...",
    "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL",
}
REDACTED = {
    "type": "redacted_thinking",
    "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfW",
}
TOOL_USE = {
    "type": "tool_use",
    "id": "toolu_011MDRpaZRMRRjtFkJizD6nS",
    "name": "get_weather",
    "input": {"location": "San Francisco, CA", "units": "c"},
    "caller": {"type": "direct"},
}


def test_thinking_block_with_signature():
    ex = run([THINKING, {"type": "text", "text": "Based on my analysis..."}])
    assert ex.model == MODEL and ex.stop_reason == "end_turn" and ex.parsed
    assert [(s.source, s.text, s.signature_present) for s in ex.reasoning] == [
        ("thinking", "Let me analyze this step by step...", True)
    ]
    assert ex.final_text == "Based on my analysis..."
    assert ex.tool_calls == [] and ex.missing == []


def test_redacted_thinking_is_counted_but_has_no_content():
    ex = run([THINKING, REDACTED, {"type": "text", "text": "Done."}])
    assert ex.redacted_blocks == 1
    assert [s.source for s in ex.reasoning] == ["thinking", "redacted_thinking"]
    assert ex.reasoning[1].text == ""
    assert REDACTED["data"] not in ex.reasoning_text


def test_tool_use_and_server_tool_use_are_tool_calls():
    server = {
        "type": "server_tool_use",
        "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
        "name": "web_search",
        "input": {"query": "weather"},
    }
    result = {
        "type": "web_search_tool_result",
        "tool_use_id": server["id"],
        "content": [
            {
                "type": "web_search_result",
                "title": "t",
                "url": "https://x",
                "encrypted_content": "E",
                "page_age": None,
            }
        ],
    }
    ex = run([{"type": "text", "text": "Checking."}, server, result, TOOL_USE], stop_reason="tool_use")
    assert [(c.name, c.server, c.id) for c in ex.tool_calls] == [
        ("web_search", True, "srvtoolu_014hJH82Qum7Td6UV8gDXThB"),
        ("get_weather", False, "toolu_011MDRpaZRMRRjtFkJizD6nS"),
    ]
    assert ex.tool_calls[1].input == {"location": "San Francisco, CA", "units": "c"}
    assert ex.missing == []


def test_thinking_tags_inside_text_are_reasoning_and_removed_from_the_reply():
    ex = run(
        [
            {
                "type": "text",
                "text": "<thinking>The user wants X.</thinking>Here is X. <think>check</think>Done.",
            }
        ]
    )
    assert [(s.source, s.text) for s in ex.reasoning] == [("tags", "The user wants X."), ("tags", "check")]
    assert ex.final_text == "Here is X. Done."


def test_an_unclosed_tag_at_a_truncated_end_runs_to_the_end():
    ex = run(
        [{"type": "text", "text": "Sure. <thinking>I need to consider the risk of"}], stop_reason="max_tokens"
    )
    assert ex.reasoning[0].text == "I need to consider the risk of" and ex.reasoning[0].unclosed
    assert ex.final_text == "Sure."
    assert any("not closed" in m for m in ex.missing)


def test_conversation_history_is_never_read_as_reasoning():
    history = [
        {"role": "user", "content": "Delete the logs"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "OLD REASONING from an earlier turn", "signature": "S"},
                {"type": "text", "text": "<thinking>old tag reasoning</thinking>ok"},
                {"type": "tool_use", "id": "toolu_old", "name": "rm", "input": {"path": "/var/log"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_old", "content": "done"}]},
    ]
    ex = run(
        [{"type": "text", "text": "All done."}],
        req=request(messages=history, tools=[{"name": "rm", "input_schema": {}}], system="be careful"),
    )
    assert ex.reasoning == [] and ex.tool_calls == []
    assert "OLD REASONING" not in ex.reasoning_text
    assert ex.request_tools == ["rm"] and ex.system_prompt_chars == len("be careful")


def test_system_prompt_blocks_are_measured():
    ex = run(
        [{"type": "text", "text": "hi"}],
        req=request(
            system=[
                {"type": "text", "text": "x-anthropic-billing-header: cc"},
                {"type": "text", "text": "abc"},
            ]
        ),
    )
    assert ex.system_prompt_chars == len("x-anthropic-billing-header: cc") + 3


def test_truncated_stream_without_stop_reason_is_noted():
    body = json.dumps(
        {
            "model": MODEL,
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "partial"}],
            "stop_reason": None,
        }
    ).encode()
    ex = run(body=body, streamed=True, outcome="upstream_dropped")
    assert ex.stop_reason == ""
    assert any("without a stop_reason" in m for m in ex.missing)


def test_tool_input_that_is_not_json_is_noted_and_kept_raw():
    broken = {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "write_file",
        "input": '{"path": "/tmp/a", "content": "x',
    }
    ex = run([broken], stop_reason="max_tokens")
    call = ex.tool_calls[0]
    assert call.input == {} and not call.input_valid and call.raw_input.startswith('{"path"')
    assert not call.finished and call.unfinished_reason == "its input does not parse as JSON"
    assert any(note.startswith("tool input of 'write_file' was not valid JSON") and "not executed" in note
               for note in ex.missing)


def test_tool_input_given_as_a_json_string_is_parsed():
    ex = run([{"type": "tool_use", "id": "t", "name": "x", "input": '{"a": 1}'}], stop_reason="tool_use")
    assert ex.tool_calls[0].input == {"a": 1} and ex.tool_calls[0].input_valid


def test_unknown_block_types_are_listed_as_missing():
    ex = run([{"type": "hologram", "data": 1}, {"type": "hologram"}, {"type": "text", "text": "hi"}])
    assert "unknown content block type 'hologram' (2x) not read" in ex.missing


def test_empty_and_non_json_bodies():
    ex = run(body=b"", outcome="upstream_unreachable", status=0)
    assert "response body is empty" in ex.missing and not ex.parsed
    assert ex.model == "claude-sonnet-4-5"  # from the request
    ex = run(body=b"<html>502 Bad Gateway</html>", status=502, outcome="upstream_error")
    assert "response body is not JSON" in ex.missing
    assert ex.error_message.startswith("<html>502")


def test_no_content_is_noted():
    ex = run([])
    assert "response has no content" in ex.missing and ex.parsed


def test_non_utf8_bytes_are_decoded_with_replacement():
    body = message([{"type": "text", "text": "caf\u00e9 PLACEHOLDER"}]).replace(b"PLACEHOLDER", b"\xff\xfe")
    ex = run(body=body)
    assert ex.parsed and ex.final_text.startswith("café")
    assert any("not valid UTF-8" in m for m in ex.missing)


def test_anthropic_error_body_is_captured():
    body = json.dumps(
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "This request would exceed your organization's rate limit",
            },
            "request_id": "req_011CYK5mje9HkutJtmfPzzNC",
        }
    ).encode()
    ex = run(body=body, status=429, outcome="upstream_error")
    assert ex.error_type == "rate_limit_error" and "rate limit" in ex.error_message
    assert not ex.parsed
    assert [d.kind for d in ex.decisions()] == ["failure"]


def test_mid_stream_error_keeps_the_partial_message_and_the_error():
    partial = json.dumps(
        {
            "model": MODEL,
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [THINKING],
            "stop_reason": None,
        }
    ).encode()
    error = b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    ex = extract(
        request(), partial, http_status=200, streamed=True, outcome="mid_stream_error", stream_error=error
    )
    assert ex.error_type == "overloaded_error" and ex.reasoning[0].source == "thinking"
    assert [d.kind for d in ex.decisions()] == ["failure"]


def test_giant_thinking_block_is_read_whole():
    big = "I will reason carefully. " * 200_000  # 5 MB
    ex = run([{"type": "thinking", "thinking": big, "signature": "S"}, {"type": "text", "text": "ok"}])
    assert len(ex.reasoning_text) == len(big)


def test_omitted_thinking_is_signed_but_empty():
    ex = run([{"type": "thinking", "thinking": "", "signature": "SIG"}, {"type": "text", "text": "ok"}])
    assert ex.signature_present and ex.reasoning_text == ""
    assert any("no text" in m for m in ex.missing)


def test_decisions_one_per_tool_call_with_interleaved_reasoning():
    content = [
        {"type": "thinking", "thinking": "First read the file.", "signature": "A"},
        {"type": "tool_use", "id": "t1", "name": "read_file", "input": {"path": "a"}},
        {"type": "thinking", "thinking": "Now write it.", "signature": "B"},
        {"type": "tool_use", "id": "t2", "name": "write_file", "input": {"path": "a"}},
        {"type": "tool_use", "id": "t3", "name": "notify", "input": {}},
    ]
    decisions = run(content, stop_reason="tool_use").decisions()
    assert [(d.kind, d.index, d.tool_call.name) for d in decisions] == [
        ("tool", 0, "read_file"),
        ("tool", 1, "write_file"),
        ("tool", 2, "notify"),
    ]
    assert [[s.text for s in d.reasoning] for d in decisions] == [
        ["First read the file."],
        ["Now write it."],
        ["Now write it."],
    ]


def test_decisions_for_a_reply_and_for_failures():
    assert [d.kind for d in run([{"type": "text", "text": "hi"}]).decisions()] == ["reply"]
    assert [d.kind for d in run(body=b"not json").decisions()] == ["unreadable"]
    ex = run([TOOL_USE, TOOL_USE], stop_reason="tool_use")
    assert [d.kind for d in ex.decisions("processing_failed")] == ["failure"]
