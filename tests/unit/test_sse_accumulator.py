"""The gateway's stream reassembly gives exactly the message the official SDK gives.

Each case is raw SSE bytes (shapes from the wire reference: real padding, pings, CRLF,
signature/citation/tool-input deltas, blocks that arrive whole). The same bytes go to the
`anthropic` SDK (through an in-memory HTTP transport) and to `MessageAccumulator`, fed in
several chunkings, and the two messages must be equal.
"""

from __future__ import annotations

import json
import random

import anthropic
import httpx2
import pytest

from smoltbot.gateway.sse import MessageAccumulator

START = {
    "type": "message_start",
    "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-opus-4-7", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 135, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1, "service_tier": "standard"},
    },
}


def event(name: str, data: dict[str, object] | str, *, pad: str = "") -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    if pad:
        text = text[:-1] + pad + "}"
    return f"event: {name}\ndata: {text}\n\n".encode()


def start_block(index: int, block: dict[str, object]) -> bytes:
    return event(
        "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
    )


def delta(index: int, body: dict[str, object]) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": body})


def stop_block(index: int) -> bytes:
    return event("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str | None, usage: dict[str, object], **extra: object) -> bytes:
    return event("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": stop_reason, "stop_sequence": None, **extra},
                                   "usage": usage})


MESSAGE_STOP = event("message_stop", {"type": "message_stop"})
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def text_stream() -> bytes:
    return b"".join(
        [
            event("message_start", START, pad="   "),
            start_block(0, {"type": "text", "text": ""}),
            PING,
            delta(0, {"type": "text_delta", "text": "Hello"}),
            delta(0, {"type": "text_delta", "text": ", world"}),
            stop_block(0),
            message_delta("end_turn", {"output_tokens": 10}),
            MESSAGE_STOP,
        ]
    )


def thinking_tool_stream() -> bytes:
    return b"".join(
        [
            event("message_start", START),
            start_block(0, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "step 1. "}),
            delta(0, {"type": "thinking_delta", "thinking": "step 2."}),
            delta(0, {"type": "signature_delta", "signature": "SIG-A"}),
            delta(0, {"type": "signature_delta", "signature": "SIG-B=="}),
            stop_block(0),
            start_block(1, {"type": "redacted_thinking", "data": "ENC=="}),
            stop_block(1),
            start_block(2, {"type": "text", "text": ""}),
            delta(2, {"type": "text_delta", "text": "<thin"}),
            delta(2, {"type": "text_delta", "text": "king>x</thinking> Hi"}),
            stop_block(2),
            start_block(
                3,
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {},
                    "caller": {"type": "direct"},
                },
            ),
            delta(3, {"type": "input_json_delta", "partial_json": ""}),
            delta(3, {"type": "input_json_delta", "partial_json": '{"location":'}),
            delta(3, {"type": "input_json_delta", "partial_json": ' "Paris", "units": "c"}'}),
            stop_block(3),
            start_block(4, {"type": "thinking", "thinking": ""}),
            delta(4, {"type": "thinking_delta", "thinking": "between tools"}),
            delta(4, {"type": "signature_delta", "signature": "SIG-C"}),
            stop_block(4),
            start_block(5, {"type": "tool_use", "id": "toolu_02", "name": "read_file", "input": {}}),
            delta(5, {"type": "input_json_delta", "partial_json": '{"path": "/etc/hosts"}'}),
            stop_block(5),
            message_delta("tool_use", {"output_tokens": 42}),
            message_delta(
                None,
                {"output_tokens": 50, "input_tokens": 140, "output_tokens_details": {"thinking_tokens": 30}},
            ),
            MESSAGE_STOP,
        ]
    )


def server_tool_citations_stream() -> bytes:
    citation = {"type": "web_search_result_location", "cited_text": "It is sunny.", "url": "https://e.example",
                "title": "Weather", "encrypted_index": "EI=="}
    return b"".join([
        event("message_start", START),
        start_block(0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
        delta(0, {"type": "input_json_delta", "partial_json": '{"query'}),
        delta(0, {"type": "input_json_delta", "partial_json": '": "weather paris"}'}),
        stop_block(0),
        start_block(1, {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
            {"type": "web_search_result", "title": "Weather", "url": "https://e.example",
             "encrypted_content": "EC==", "page_age": None}]}),
        stop_block(1),
        start_block(2, {"type": "text", "text": ""}),
        delta(2, {"type": "citations_delta", "citation": citation}),
        delta(2, {"type": "citations_delta", "citation": {**citation, "cited_text": "Warm."}}),
        delta(2, {"type": "text_delta", "text": "Sunny and warm."}),
        stop_block(2),
        message_delta("end_turn", {"output_tokens": 510, "input_tokens": 10682,
                                   "server_tool_use": {"web_search_requests": 1}},
                      container={"id": "container_1", "expires_at": "2026-02-25T20:07:37Z"}),
        MESSAGE_STOP,
    ])


def refusal_without_message_stop() -> bytes:
    return b"".join([
        event("message_start", START), start_block(0, {"type": "text", "text": ""}),
        delta(0, {"type": "text_delta", "text": "I can"}), stop_block(0),
        message_delta("refusal", {"output_tokens": 3},
                      stop_details={"type": "refusal", "category": "cyber", "explanation": "Refused."}),
    ])


def truncated_tool_json() -> bytes:
    return b"".join([
        event("message_start", START),
        start_block(0, {"type": "tool_use", "id": "toolu_9", "name": "write", "input": {}}),
        delta(0, {"type": "input_json_delta", "partial_json": '{"path": "a.txt", "content": "hel'}),
        message_delta("max_tokens", {"output_tokens": 4096}), MESSAGE_STOP,
    ])


def crlf(stream: bytes) -> bytes:
    return stream.replace(b"\n", b"\r\n")


CASES = {
    "text": text_stream(),
    "thinking_tools": thinking_tool_stream(),
    "server_tool_citations": server_tool_citations_stream(),
    "refusal_no_message_stop": refusal_without_message_stop(),
    "truncated_tool_json": truncated_tool_json(),
    "crlf": crlf(thinking_tool_stream()),
    "comments_and_unknown_events": b": keep-alive\n\n"
    + text_stream().replace(
        b"event: content_block_stop",
        b'event: future_event\ndata: {"type":"future_event"}\n\nevent: content_block_stop',
        1,
    ),
}


async def sdk_final_message(raw: bytes) -> dict[str, object]:
    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(respond)) as http:
        client = anthropic.AsyncAnthropic(api_key="sk-test", base_url="http://standin.invalid",
                                          http_client=http, max_retries=0)
        async with client.messages.stream(model="claude-opus-4-7", max_tokens=1024,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            final = await stream.get_final_message()
    return final.to_dict(mode="json")


def accumulate(raw: bytes, chunk_sizes: list[int] | None = None) -> MessageAccumulator:
    accumulator = MessageAccumulator()
    if chunk_sizes is None:
        accumulator.feed(raw)
    else:
        position = 0
        sizes = iter(chunk_sizes)
        while position < len(raw):
            size = next(sizes, 7)
            accumulator.feed(raw[position:position + size])
            position += size
    accumulator.close()
    return accumulator


@pytest.mark.parametrize("name", sorted(CASES))
async def test_reassembled_message_equals_the_sdks_final_message(name: str) -> None:
    raw = CASES[name]
    expected = await sdk_final_message(raw)
    rng = random.Random(name)
    chunkings: list[list[int] | None] = [None, [1] * len(raw), [rng.randint(1, 40) for _ in range(len(raw))]]
    for chunking in chunkings:
        ours = json.loads(accumulate(raw, chunking).final_message_json())
        assert ours == expected, f"chunking {chunking and chunking[:5]}"


async def test_models_built_from_both_results_dump_identically() -> None:
    raw = CASES["thinking_tools"]
    expected = anthropic.types.Message.model_validate(await sdk_final_message(raw))
    ours = anthropic.types.Message.model_validate(json.loads(accumulate(raw).final_message_json()))
    assert ours.model_dump() == expected.model_dump()


def test_mid_stream_error_event_is_kept_verbatim_and_the_partial_message_survives() -> None:
    error = '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    raw = b"".join(
        [
            event("message_start", START),
            start_block(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "partial"}),
            f"event: error\ndata: {error}\n\n".encode(),
        ]
    )
    accumulator = accumulate(raw)
    assert accumulator.error_data == error.encode()
    assert json.loads(accumulator.final_message_json())["content"] == [{"type": "text", "text": "partial"}]
    assert not accumulator.ended_cleanly


async def test_sdk_raises_on_the_same_mid_stream_error() -> None:
    error = '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    raw = event("message_start", START) + f"event: error\ndata: {error}\n\n".encode()
    with pytest.raises(anthropic.APIStatusError):
        await sdk_final_message(raw)


def test_event_count_includes_pings_and_clean_end_detection() -> None:
    accumulator = accumulate(CASES["text"])
    assert accumulator.event_count == 8
    assert accumulator.ended_cleanly and accumulator.saw_message_stop


def test_claude_code_rule_stop_reason_without_open_block_counts_as_complete() -> None:
    assert accumulate(CASES["refusal_no_message_stop"]).ended_cleanly


def test_stream_cut_inside_a_block_is_not_complete() -> None:
    raw = b"".join([event("message_start", START), start_block(0, {"type": "text", "text": ""}),
                    delta(0, {"type": "text_delta", "text": "cut"})])
    assert not accumulate(raw).ended_cleanly


def test_an_unterminated_last_event_is_dropped_like_the_sdk_does() -> None:
    raw = CASES["text"] + b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"x"}}'
    assert json.loads(accumulate(raw).final_message_json())["stop_reason"] == "end_turn"


def test_no_message_start_gives_an_empty_body() -> None:
    assert accumulate(PING + stop_block(0)).final_message_json() == b""


def _tiny_stream(count: int) -> bytes:
    from tests.support.anthropic_standin import _tiny_delta_chunks

    start = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
             b'"role":"assistant","model":"x","content":[],"stop_reason":null,"stop_sequence":null,'
             b'"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
             b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
             b'"content_block":{"type":"text","text":""}}\n\n')
    end = (b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
           b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
           b'"stop_sequence":null},"usage":{"output_tokens":7}}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    return start + b"".join(_tiny_delta_chunks(count, b"\n")) + end


def test_many_tiny_deltas_in_any_chunking_are_all_kept() -> None:
    raw = _tiny_stream(200_000)
    accumulator = accumulate(raw, [1, 3, 65536, 4096, 7] * (len(raw) // 10000))
    message = json.loads(accumulator.final_message_json())
    assert message["content"][0]["text"] == ("abcdefghij" * 20_000)
    assert accumulator.ended_cleanly and not accumulator.truncated


def test_content_beyond_the_limit_is_left_out_but_the_message_still_ends() -> None:
    accumulator = MessageAccumulator(limit=1000)
    accumulator.feed(_tiny_stream(5000))
    accumulator.close()
    message = json.loads(accumulator.final_message_json())
    assert accumulator.truncated and len(message["content"][0]["text"]) == 1000
    assert message["stop_reason"] == "end_turn" and message["usage"]["output_tokens"] == 7
