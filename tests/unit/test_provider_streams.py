"""Each provider's stream reassembly gives what that provider's official SDK gives, on the same bytes.

The bytes are the stand-ins' real streamed replies (tests/support/openai_standin.py,
gemini_standin.py), captured raw. The same bytes go to the SDK (openai-python through an
in-memory transport; google-genai through a replay server, since it builds its own client)
and to our reassembler, fed whole, one byte at a time and in random chunkings.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import httpx
import httpx2
import openai
import pytest
from aiohttp import web
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from smoltbot.gateway.providers import (
    ChatCompletionReassembler,
    GeminiArrayReassembler,
    GeminiReassembler,
    Reassembler,
    ResponsesReassembler,
    reassembler_for,
)
from tests.support.gemini_standin import GeminiStandin
from tests.support.openai_standin import OpenAIStandin

CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    },
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "shell",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
        },
    },
    {"type": "custom", "name": "apply_patch", "description": "Apply a patch"},
]
GEMINI_TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
            },
            {
                "name": "list_files",
                "parameters": {"type": "OBJECT", "properties": {"dir": {"type": "STRING"}}},
            },
        ]
    }
]


def chunkings(raw: bytes, seed: str) -> list[list[int] | None]:
    rng = random.Random(seed)
    return [None, [1] * len(raw), [rng.randint(1, 64) for _ in range(len(raw))]]


def feed(reassembler: Reassembler, raw: bytes, sizes: list[int] | None) -> Reassembler:
    if sizes is None:
        reassembler.feed(raw)
    else:
        position = 0
        for size in sizes:
            if position >= len(raw):
                break
            reassembler.feed(raw[position : position + size])
            position += size
    reassembler.close()
    return reassembler


def normalized(value: Any) -> Any:
    """None and absent are the same to the SDK's models; `parsed*` is client-side parsing."""
    if isinstance(value, dict):
        return {
            k: normalized(v)
            for k, v in value.items()
            if v is not None and k not in ("parsed", "parsed_arguments", "output_parsed")
        }
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


async def raw_stream(
    base_url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> bytes:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post(
            path,
            json=body,
            headers={"Authorization": "Bearer sk-test", "x-goog-api-key": "g-test", **(headers or {})},
        )
        return response.content


def sdk_openai(raw: bytes) -> openai.AsyncOpenAI:
    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url="http://replay.invalid/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(respond)),
    )


# --- Chat Completions -------------------------------------------------------------------------

CHAT_CASES = {
    "text": ("text", False),
    "text_usage": ("text", True),
    "tool_calls": ("tool_calls", True),
    "reasoning": ("reasoning", True),
    "refusal": ("refusal", False),
    "length": ("length", True),
}


@pytest.fixture
async def openai_standin():
    async with OpenAIStandin() as standin:
        yield standin


@pytest.fixture
async def gemini_standin():
    async with GeminiStandin() as standin:
        yield standin


def chat_request(scenario: str, include_usage: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": f"hi [[scenario:{scenario}]]"}],
        "tools": CHAT_TOOLS,
        "stream": True,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


@pytest.mark.parametrize("case", sorted(CHAT_CASES))
async def test_chat_completion_equals_the_sdks_accumulated_snapshot(openai_standin, case: str) -> None:
    scenario, include_usage = CHAT_CASES[case]
    body = chat_request(scenario, include_usage)
    raw = await raw_stream(openai_standin.base_url, "/v1/chat/completions", body)
    client = sdk_openai(raw)
    async with client.chat.completions.stream(
        model="gpt-4.1", messages=body["messages"], tools=CHAT_TOOLS
    ) as stream:
        async for _event in stream:
            pass
        expected = normalized(stream.current_completion_snapshot.to_dict())
    for sizes in chunkings(raw, case):
        ours = feed(ChatCompletionReassembler(), raw, sizes)
        assert normalized(json.loads(ours.close())) == expected, f"chunking {sizes and sizes[:5]}"
        assert ours.ended_cleanly and not ours.problems and ours.error_data is None
    if scenario == "tool_calls":
        calls = json.loads(ours.close())["choices"][0]["message"]["tool_calls"]
        assert [json.loads(c["function"]["arguments"]) for c in calls] == [
            {"location": "example", "unit": "c"},
            {"path": "example"},
        ]
    if include_usage:
        assert (
            json.loads(ours.close())["usage"] == expected["usage"] and expected["usage"]["total_tokens"] > 0
        )


async def test_chat_stream_reassembles_to_the_plain_reply(openai_standin) -> None:
    body = chat_request("reasoning_tool_calls", True)
    raw = await raw_stream(openai_standin.base_url, "/v1/chat/completions", body)
    plain = await raw_stream(openai_standin.base_url, "/v1/chat/completions", {**body, "stream": False})
    ours = normalized(json.loads(feed(ChatCompletionReassembler(), raw, None).close()))
    whole = normalized(json.loads(plain))
    whole["object"] = ours["object"]
    for choice in whole["choices"]:
        choice["message"].pop("annotations")
        for call in choice["message"]["tool_calls"]:
            call["index"] = ours["choices"][0]["message"]["tool_calls"][
                whole["choices"][0]["message"]["tool_calls"].index(call)
            ]["index"]
    assert ours == whole
    assert ours["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


async def test_chat_mid_stream_error_is_kept_and_the_sdk_raises_on_it(openai_standin) -> None:
    raw = await raw_stream(
        openai_standin.base_url, "/v1/chat/completions", chat_request("mid_stream_error", True)
    )
    ours = feed(ChatCompletionReassembler(), raw, [5] * len(raw))
    assert json.loads(ours.error_data or b"")["error"]["type"] == "server_error"
    assert not ours.ended_cleanly
    assert json.loads(ours.close())["choices"][0]["message"]["content"] == "Hello! This is the"
    with pytest.raises(openai.APIError):
        async with sdk_openai(raw).chat.completions.stream(model="gpt-4.1", messages=[]) as stream:
            await stream.get_final_completion()


async def test_chat_stream_cut_short_is_not_clean(openai_standin) -> None:
    raw = await raw_stream(openai_standin.base_url, "/v1/chat/completions", chat_request("text", True))
    cut = raw[: raw.index(b'"finish_reason":"stop"')]
    assert not feed(ChatCompletionReassembler(), cut, None).ended_cleanly
    assert feed(ChatCompletionReassembler(), raw.replace(b"data: [DONE]\n\n", b""), None).ended_cleanly


def test_chat_sse_rules_follow_the_sdk() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "a\u2028b"}, "finish_reason": None}],
    }
    data = json.dumps(chunk, ensure_ascii=False)
    raw = (
        b": comment\r\n"
        + f"data:{data}\r\n\r\n".encode()
        + b'data: {"object": "", "choices": []}\n\n'
        + b"data: [DONE]\n\n"
        + f"data: {data}\n\n".encode()
    )
    ours = feed(ChatCompletionReassembler(), raw, [3] * len(raw))
    assert (
        json.loads(ours.close())["choices"][0]["message"]["content"] == "a\u2028b"
    )  # U+2028 is not a line end
    assert ours.event_count == 4 and ours.ended_cleanly


# --- Responses --------------------------------------------------------------------------------

RESPONSES_CASES = ["text", "tool_calls", "reasoning", "reasoning_tool_calls", "web_search", "refusal"]


def responses_request(scenario: str) -> dict[str, Any]:
    return {
        "model": "gpt-5.1",
        "input": [{"role": "user", "content": f"hi [[scenario:{scenario}]]"}],
        "tools": RESPONSES_TOOLS,
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "stream": True,
    }


@pytest.mark.parametrize("scenario", RESPONSES_CASES)
async def test_response_equals_the_sdks_final_response(openai_standin, scenario: str) -> None:
    body = responses_request(scenario)
    raw = await raw_stream(openai_standin.base_url, "/v1/responses", body)
    async with sdk_openai(raw).responses.stream(model="gpt-5.1", input=body["input"]) as stream:
        expected = normalized((await stream.get_final_response()).to_dict())
    for sizes in chunkings(raw, scenario):
        ours = feed(ResponsesReassembler(), raw, sizes)
        assert normalized(json.loads(ours.close())) == expected, f"chunking {sizes and sizes[:5]}"
        assert ours.ended_cleanly and not ours.problems and ours.status == "completed"
    plain = await raw_stream(openai_standin.base_url, "/v1/responses", {**body, "stream": False})
    assert normalized(json.loads(plain)) == expected


async def test_response_without_output_in_completed_is_rebuilt_from_the_done_items(openai_standin) -> None:
    raw = await raw_stream(
        openai_standin.base_url, "/v1/responses", responses_request("reasoning_tool_calls")
    )
    head, _, tail = raw.rpartition(b"event: response.completed\ndata: ")
    completed = json.loads(tail)
    completed["response"]["output"] = None
    raw = head + b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n"
    async with sdk_openai(raw).responses.stream(model="gpt-5.1", input="hi") as stream:
        expected = normalized((await stream.get_final_response()).to_dict())
    ours = normalized(json.loads(feed(ResponsesReassembler(), raw, [11] * len(raw)).close()))
    assert ours == expected
    assert [item["type"] for item in ours["output"]] == ["reasoning", "function_call", "custom_tool_call"]
    assert ours["output"][0]["encrypted_content"].startswith("gAAAAA")


async def test_response_cut_by_an_error_event_keeps_the_partial_items(openai_standin) -> None:
    raw = await raw_stream(openai_standin.base_url, "/v1/responses", responses_request("mid_stream_error"))
    ours = feed(ResponsesReassembler(), raw, [9] * len(raw))
    assert json.loads(ours.error_data or b"")["type"] == "error"
    assert not ours.ended_cleanly and ours.status == "in_progress"
    final = json.loads(ours.close())
    assert final["output"][0]["content"][0]["text"] == "Hello! This is the"
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        async with sdk_openai(raw).responses.stream(model="gpt-5.1", input="hi") as stream:
            await stream.get_final_response()


async def test_failed_and_incomplete_responses_are_final_too(openai_standin) -> None:
    failed = feed(
        ResponsesReassembler(),
        await raw_stream(openai_standin.base_url, "/v1/responses", responses_request("failed")),
        None,
    )
    assert failed.ended_cleanly and failed.status == "failed"
    assert json.loads(failed.close())["error"]["code"] == "server_error"
    incomplete = feed(
        ResponsesReassembler(),
        await raw_stream(openai_standin.base_url, "/v1/responses", responses_request("length")),
        None,
    )
    assert incomplete.status == "incomplete"
    assert json.loads(incomplete.close())["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_reasoning_summaries_of_an_unfinished_item_are_joined(openai_standin) -> None:
    raw = await raw_stream(
        openai_standin.base_url, "/v1/responses", responses_request("reasoning_tool_calls")
    )
    cut = raw[: raw.index(b"event: response.reasoning_summary_part.done")]
    final = json.loads(feed(ResponsesReassembler(), cut, [4] * len(cut)).close())
    assert final["output"][0]["summary"] == [
        {"type": "summary_text", "text": final["output"][0]["summary"][0]["text"]}
    ]
    assert final["output"][0]["summary"][0]["text"].startswith("**Working out the request**")


# --- Gemini -----------------------------------------------------------------------------------

GEMINI_CASES = ["text", "thinking", "function_call", "thinking_function_call", "max_tokens"]


def gemini_request(scenario: str) -> dict[str, Any]:
    return {
        "contents": [{"role": "user", "parts": [{"text": f"hi [[scenario:{scenario}]]"}]}],
        "tools": GEMINI_TOOLS,
        "generationConfig": {"thinkingConfig": {"includeThoughts": True}},
        "cachedContent": "cachedContents/standin",
    }


@pytest.fixture
async def replay():
    """A server that answers any request with the bytes last put in `state["raw"]`."""
    state: dict[str, Any] = {"raw": b"", "type": "text/event-stream"}

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=state["raw"], headers={"Content-Type": state["type"]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


@pytest.fixture
async def genai_client():
    """google-genai on an httpx client of our own (closed after the test): with aiohttp installed
    it would subclass aiohttp.ClientSession, which aiohttp deprecates (an error under our filters)."""
    http = httpx.AsyncClient(timeout=30)

    def make(base_url: str) -> genai.Client:
        return genai.Client(
            api_key="g-test",
            http_options=genai_types.HttpOptions(
                base_url=base_url,
                retry_options=genai_types.HttpRetryOptions(attempts=1),
                httpx_async_client=http,
            ),
        )

    yield make
    await http.aclose()


@pytest.mark.parametrize("scenario", GEMINI_CASES)
async def test_gemini_merge_equals_the_sdks_chunks_taken_together(
    gemini_standin, replay, genai_client, scenario: str
) -> None:
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    body = gemini_request(scenario)
    raw = await raw_stream(gemini_standin.base_url, path, body)
    replay["raw"] = raw
    chunks = [
        chunk
        async for chunk in await genai_client(replay["url"]).aio.models.generate_content_stream(
            model="gemini-2.5-flash", contents="hi"
        )
    ]
    for sizes in chunkings(raw, scenario):
        ours = feed(GeminiReassembler(), raw, sizes)
        assert ours.ended_cleanly and not ours.problems and ours.event_count == len(chunks)
        merged = json.loads(ours.close())
        parts = merged["candidates"][0]["content"]["parts"]
        sdk_parts = [p for c in chunks for p in c.candidates[0].content.parts]
        assert "".join(p["text"] for p in parts if "text" in p and not p.get("thought")) == "".join(
            p.text for p in sdk_parts if p.text is not None and not p.thought
        )
        assert "".join(p["text"] for p in parts if p.get("thought")) == "".join(
            p.text for p in sdk_parts if p.thought
        )
        assert [p["functionCall"] for p in parts if "functionCall" in p] == [
            p.function_call.model_dump(exclude_none=True) for p in sdk_parts if p.function_call
        ]
        signatures = [p["thoughtSignature"] for p in parts if "thoughtSignature" in p]
        assert signatures == [
            base64.b64encode(p.thought_signature).decode() for p in sdk_parts if p.thought_signature
        ]
        assert merged["candidates"][0]["finishReason"] == chunks[-1].candidates[0].finish_reason.value
        usage = genai_types.GenerateContentResponseUsageMetadata.model_validate(merged["usageMetadata"])
        assert usage == chunks[-1].usage_metadata
        assert merged["responseId"] == chunks[-1].response_id
    plain = await raw_stream(gemini_standin.base_url, "/v1beta/models/gemini-2.5-flash:generateContent", body)
    assert merged == json.loads(plain)  # the merged stream is the non-streamed reply
    if scenario.startswith("thinking"):
        assert usage.thoughts_token_count and usage.cached_content_token_count


async def test_gemini_mid_stream_error_is_kept_and_the_sdk_raises_on_it(
    gemini_standin, replay, genai_client
) -> None:
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    raw = await raw_stream(gemini_standin.base_url, path, gemini_request("mid_stream_error"))
    ours = feed(GeminiReassembler(), raw, [3] * len(raw))
    assert json.loads(ours.error_data or b"")["error"]["status"] == "INTERNAL"
    assert not ours.ended_cleanly
    assert json.loads(ours.close())["candidates"][0]["content"]["parts"] == [{"text": "Hello! This is the"}]
    replay["raw"] = raw
    with pytest.raises(genai_errors.APIError):
        async for _chunk in await genai_client(replay["url"]).aio.models.generate_content_stream(
            model="gemini-2.5-flash", contents="hi"
        ):
            pass


async def test_gemini_json_array_stream_merges_the_same(gemini_standin) -> None:
    body = gemini_request("thinking_function_call")
    sse = await raw_stream(gemini_standin.base_url, "/v1beta/models/m:streamGenerateContent?alt=sse", body)
    array = await raw_stream(gemini_standin.base_url, "/v1beta/models/m:streamGenerateContent", body)
    assert array.startswith(b"[{") and array.endswith(b"]")
    expected = feed(GeminiReassembler(), sse, None).close()
    for sizes in chunkings(array, "array"):
        ours = feed(GeminiArrayReassembler(), array, sizes)
        assert ours.close() == expected and not ours.problems


# --- limits, linearity, the interface ---------------------------------------------------------


@pytest.mark.parametrize("provider", ["chat", "responses", "gemini"])
async def test_limit_truncates_content_but_applies_the_end(
    openai_standin, gemini_standin, provider: str
) -> None:
    headers = {"x-standin-scenario": "tiny_deltas", "x-standin-deltas": "20000"}
    if provider == "chat":
        raw = await raw_stream(
            openai_standin.base_url, "/v1/chat/completions", chat_request("text", True), headers
        )
        make: type[Reassembler] = ChatCompletionReassembler
    elif provider == "responses":
        raw = await raw_stream(openai_standin.base_url, "/v1/responses", responses_request("text"), headers)
        make = ResponsesReassembler
    else:
        raw = await raw_stream(
            gemini_standin.base_url,
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            gemini_request("text"),
            headers,
        )
        make = GeminiReassembler
    whole = feed(make(), raw, None)
    cut = feed(make(limit=1000), raw, None)
    assert not whole.truncated and cut.truncated and cut.ended_cleanly
    assert len(whole.close()) > 20_000 and len(cut.close()) < 6_000
    final = json.loads(cut.close())
    if provider == "chat":
        assert final["usage"]["total_tokens"] > 0 and final["choices"][0]["finish_reason"] == "stop"
        content = final["choices"][0]["message"]["content"]
        assert 500 < len(content) < 1000 and ("abcdefghij" * 100).startswith(content)
    elif provider == "responses":
        assert final["status"] == "completed" and final["usage"]["total_tokens"] > 0
    else:
        assert (
            final["candidates"][0]["finishReason"] == "STOP" and final["usageMetadata"]["totalTokenCount"] > 0
        )


async def test_many_tiny_deltas_in_tiny_chunks(openai_standin) -> None:
    headers = {"x-standin-scenario": "tiny_deltas", "x-standin-deltas": "3000"}
    raw = await raw_stream(openai_standin.base_url, "/v1/responses", responses_request("text"), headers)
    ours = feed(ResponsesReassembler(), raw, [2] * len(raw))
    assert json.loads(ours.close())["output"][0]["content"][0]["text"] == ("abcdefghij" * 300)


def test_reassembler_for_picks_the_module_from_the_call() -> None:
    assert isinstance(reassembler_for("openai", "/v1/chat/completions"), ChatCompletionReassembler)
    assert isinstance(reassembler_for("openai", "/v1/responses"), ResponsesReassembler)
    assert isinstance(
        reassembler_for("gemini", "/v1beta/models/x:streamGenerateContent", "alt=sse&key=k"),
        GeminiReassembler,
    )
    assert (
        type(reassembler_for("gemini", "/v1beta/models/x:streamGenerateContent", ""))
        is GeminiArrayReassembler
    )
    assert reassembler_for("anthropic", "/v1/messages").kind == "anthropic"
    assert reassembler_for("openai", "/v1/embeddings") is None
    assert reassembler_for("gemini", "/v1beta/models/x:generateContent") is None


async def test_chat_deltas_that_repeat_type_and_fragment_several_indexes_in_one_chunk() -> None:
    # Some servers repeat "type" on every tool-call fragment, and one chunk may carry fragments of
    # several calls: `type` replaces (never concatenates) and each fragment goes to its index.
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def call(index: int, arguments: str, **first: Any) -> dict[str, Any]:
        return {"index": index, "type": "function", "function": {"arguments": arguments, **first}}

    raw = b"".join(
        [
            chunk({"role": "assistant", "content": None}),
            chunk({"tool_calls": [call(0, "", name="a"), call(0, '{"x":'), call(1, "", name="b")]}),
            chunk({"tool_calls": [call(1, '{"y": 2}'), call(0, " 1}")]}),
            chunk({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    async with sdk_openai(raw).chat.completions.stream(model="m", messages=[]) as stream:
        expected = normalized((await stream.get_final_completion()).to_dict())
    ours = normalized(json.loads(feed(ChatCompletionReassembler(), raw, [3] * len(raw)).close()))
    assert ours == expected
    assert [c["type"] for c in ours["choices"][0]["message"]["tool_calls"]] == ["function", "function"]
    assert [c["function"]["arguments"] for c in ours["choices"][0]["message"]["tool_calls"]] == [
        '{"x": 1}',
        '{"y": 2}',
    ]


def test_gemini_a_thought_signature_closes_its_part() -> None:
    def chunk(*parts: dict[str, Any], finish: str | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return b"data: " + json.dumps({"candidates": [candidate]}).encode() + b"\r\n\r\n"

    raw = b"".join(
        [
            chunk({"text": "plan ", "thought": True}),
            chunk({"text": "one", "thought": True, "thoughtSignature": "S1"}),
            chunk({"text": "plan two", "thought": True}),
            chunk({"text": "Hi"}),
            chunk({"text": " there"}),
            chunk({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "S2"}),
            chunk({"text": "done"}),
            chunk({"text": "", "thoughtSignature": "S3"}, finish="STOP"),
        ]
    )
    parts = json.loads(feed(GeminiReassembler(), raw, [5] * len(raw)).close())["candidates"][0]["content"][
        "parts"
    ]
    assert parts == [
        {"text": "plan one", "thought": True, "thoughtSignature": "S1"},
        {"text": "plan two", "thought": True},
        {"text": "Hi there"},
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "S2"},
        {"text": "done", "thoughtSignature": "S3"},
    ]
