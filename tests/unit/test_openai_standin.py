"""The OpenAI stand-in, driven by the official `openai` SDK: the SDK parses what the stand-in meant."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import openai
import pytest

from tests.support.openai_standin import OpenAIStandin

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "shell",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def standin():
    async with OpenAIStandin(accepted_keys={"sk-good"}) as server:
        yield server


@pytest.fixture
async def client(standin):
    async with openai.AsyncOpenAI(api_key="sk-good", base_url=standin.base_url + "/v1", max_retries=0) as sdk:
        yield sdk


def scenario(name: str) -> dict[str, dict[str, str]]:
    return {"extra_headers": {"x-standin-scenario": name}}


async def test_chat_create_and_stream_give_the_same_completion(client, standin) -> None:
    messages = [{"role": "user", "content": "hello"}]
    plain = await client.chat.completions.create(model="gpt-4.1", messages=messages)
    async with client.chat.completions.stream(
        model="gpt-4.1", messages=messages, stream_options={"include_usage": True}
    ) as stream:
        streamed = await stream.get_final_completion()
    assert plain.choices[0].message.content == streamed.choices[0].message.content
    assert plain.choices[0].message.content.startswith(
        "Hello! This is the OpenAI stand-in answering request "
    )
    assert (
        plain.id == streamed.id and plain.usage == streamed.usage and plain.choices[0].finish_reason == "stop"
    )
    assert standin.requests[-1].json()["stream"] is True
    assert standin.requests[-1].credential == "sk-good"


async def test_chat_tool_calls_with_fragmented_arguments_parse_whole(client, standin) -> None:
    async with client.chat.completions.stream(
        model="gpt-4.1", messages=[{"role": "user", "content": "x"}], tools=TOOLS, **scenario("tool_calls")
    ) as stream:
        deltas = [event async for event in stream if event.type == "tool_calls.function.arguments.delta"]
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"location": "example", "days": 42}
    assert len(deltas) > 2 and final.choices[0].finish_reason == "tool_calls"
    plain = await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "x"}], tools=TOOLS, **scenario("tool_calls")
    )
    assert plain.choices[0].message.tool_calls[0].function.arguments == call.function.arguments


async def test_chat_reasoning_model_reports_reasoning_tokens(client) -> None:
    reply = await client.chat.completions.create(
        model="o3",
        messages=[{"role": "user", "content": "x"}],
        reasoning_effort="high",
        **scenario("reasoning"),
    )
    assert reply.usage.completion_tokens_details.reasoning_tokens > 0
    assert reply.usage.completion_tokens > reply.usage.completion_tokens_details.reasoning_tokens


async def test_responses_create_and_stream_with_reasoning_and_tools(client) -> None:
    kwargs = dict(
        model="gpt-5.1",
        input="list files",
        tools=RESPONSES_TOOLS,
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        extra_headers={
            "x-standin-scenario": "reasoning_tool_calls",
            "x-standin-tool-args": '{"command": ["bash", "-lc", "ls"]}',
        },
    )
    plain = await client.responses.create(**kwargs)
    async with client.responses.stream(**kwargs) as stream:
        summary_deltas = [e.delta async for e in stream if e.type == "response.reasoning_summary_text.delta"]
        streamed = await stream.get_final_response()
    assert plain.to_dict() == streamed.to_dict() | {"output": plain.to_dict()["output"]}
    reasoning, call = streamed.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content.startswith("gAAAAA")
    assert "".join(summary_deltas) == "".join(part.text for part in reasoning.summary)
    assert call.type == "function_call" and json.loads(call.arguments) == {"command": ["bash", "-lc", "ls"]}
    assert streamed.usage.output_tokens_details.reasoning_tokens > 0


async def test_responses_web_search_and_custom_tool_items(client) -> None:
    searched = await client.responses.create(
        model="gpt-5.1", input="x", tools=[{"type": "web_search"}], **scenario("web_search")
    )
    assert [item.type for item in searched.output] == ["web_search_call", "message"]
    assert searched.output[1].content[0].annotations[0].type == "url_citation"
    custom = await client.responses.create(
        model="gpt-5.1",
        input="x",
        **scenario("tool_calls"),
        tools=[{"type": "custom", "name": "apply_patch"}],
    )
    assert custom.output[0].type == "custom_tool_call" and custom.output[0].input.startswith("print(")


async def test_responses_failed_and_mid_stream_error(client) -> None:
    async with client.responses.stream(model="gpt-5.1", input="x", **scenario("failed")) as stream:
        events = [event.type async for event in stream]
    assert events[-1] == "response.failed"
    async with client.responses.stream(model="gpt-5.1", input="x", **scenario("mid_stream_error")) as stream:
        events = [event async for event in stream]
    assert events[-1].type == "error" and events[-1].code == "server_error"


async def test_models_and_embeddings(client) -> None:
    models = [model.id async for model in client.models.list()]
    assert "gpt-4.1" in models and (await client.models.retrieve("o3")).id == "o3"
    embedded = await client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"]
    )  # base64 by default
    again = await client.embeddings.create(
        model="text-embedding-3-small", input=["a"], encoding_format="float"
    )
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) == 8
    assert embedded.data[0].embedding == pytest.approx(again.data[0].embedding, abs=1e-6)


async def test_credentials_missing_and_rejected_get_openais_401(standin) -> None:
    async with httpx.AsyncClient(base_url=standin.base_url) as http:
        missing = await http.post("/v1/chat/completions", json={"model": "gpt-4.1", "messages": []})
    assert missing.status_code == 401 and missing.json()["error"]["message"].startswith(
        "You didn't provide an API key"
    )
    async with openai.AsyncOpenAI(
        api_key="sk-wrong-key-12345", base_url=standin.base_url + "/v1", max_retries=0
    ) as bad:
        with pytest.raises(openai.AuthenticationError) as refused:
            await bad.models.list()
    assert refused.value.code == "invalid_api_key" and "sk-wrong" in refused.value.message


async def test_errors_in_openais_shape(client) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="gpt-4.1", messages=[], **scenario("error_429"))
    assert (
        limited.value.response.headers["retry-after"] == "1" and limited.value.code == "rate_limit_exceeded"
    )
    with pytest.raises(openai.InternalServerError) as failed:
        await client.responses.create(model="gpt-5.1", input="x", **scenario("error_500"))
    assert failed.value.type == "server_error" and failed.value.response.headers["x-request-id"].startswith(
        "req_"
    )
    with pytest.raises(openai.APIError, match="server had an error"):
        async with client.chat.completions.stream(
            model="gpt-4.1", messages=[], **scenario("mid_stream_error")
        ) as stream:
            await stream.get_final_completion()
    with pytest.raises(openai.BadRequestError, match="unknown stand-in scenario"):
        await client.chat.completions.create(model="gpt-4.1", messages=[], **scenario("nope"))


async def test_marker_in_the_message_chooses_the_scenario(client) -> None:
    reply = await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "stop [[scenario:length]]"}]
    )
    assert reply.choices[0].finish_reason == "length"


def test_runs_standalone() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_standin"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("LISTENING http://127.0.0.1:")
        reply = httpx.get(line.split()[1] + "/v1/models", headers={"Authorization": "Bearer k"}, timeout=10)
        assert reply.json()["object"] == "list"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


async def test_delay_between_events(client) -> None:
    started = asyncio.get_running_loop().time()
    async with client.chat.completions.stream(
        model="gpt-4.1", messages=[], extra_headers={"x-standin-delay-ms": "20"}
    ) as stream:
        await stream.get_final_completion()
    assert asyncio.get_running_loop().time() - started >= 0.1
