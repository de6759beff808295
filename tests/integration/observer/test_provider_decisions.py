"""OpenAI (Chat Completions, Responses) and Gemini model calls through the real gateway to the
stand-ins, made by the official SDKs (openai, google-genai; create and stream, with tools and
reasoning), become the same decisions as Anthropic's: one execute trace per tool or function
call with its exact arguments, reasoning from reasoning items and thought parts (summary_only
said), earlier turns' calls never counted again, provider and model on every trace, failures
traced as failures, and other API calls (embeddings, countTokens) recorded as activity."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from google import genai
from google.genai import types

from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway, start_gateway
from smoltbot.v1 import trace_pb2
from tests.integration.observer.conftest import ObserverStack
from tests.support.gemini_standin import GeminiStandin
from tests.support.openai_standin import OpenAIStandin

pytestmark = pytest.mark.timeout(90)

OPENAI_KEY = "sk-proj-provider-decisions-0123456789abcdefghij"
GEMINI_KEY = "AIzaSyProviderDecisions0123456789abcdefgh"
READ_FILE = {"type": "function", "function": {"name": "read_file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}}}}
RUN_TESTS = {"type": "function", "function": {"name": "run_tests", "parameters": {
    "type": "object", "properties": {"target": {"type": "string"}, "verbose": {"type": "boolean"}}}}}


@pytest.fixture
async def stack(settings_factory: Callable[..., Settings],
                database_url: str) -> AsyncIterator[tuple[ObserverStack, RunningGateway]]:
    async with OpenAIStandin() as openai_standin, GeminiStandin() as gemini_standin:
        stack = ObserverStack(settings_factory(openai_upstream_url=openai_standin.base_url,
                                               gemini_upstream_url=gemini_standin.base_url))
        gateway = None
        try:
            await stack.start_registry()
            observer = await stack.start_observer()
            gateway = await start_gateway(stack.observer_settings,
                                          registry_address=f"127.0.0.1:{stack.registry_port}",
                                          observer_address=f"127.0.0.1:{observer.port}")
            yield stack, gateway
        finally:
            if gateway is not None:
                await gateway.stop()
            await stack.close()


async def _by_exchange(stack: ObserverStack, count: int, **fields: Any) -> list[list[trace_pb2.ApTrace]]:
    """The traces of `count` exchanges, grouped by exchange in the order the calls were made."""
    traces = await stack.wait_for_traces(count, order_by="timestamp asc", timeout=30, **fields)
    groups: dict[str, list[trace_pb2.ApTrace]] = {}
    for trace in traces:
        groups.setdefault(trace.observation.exchange_id, []).append(trace)
    await stack.wait_finished(groups)
    traces = await stack.list_traces(page_size=1000, order_by="timestamp asc", **fields)
    groups = {}
    for trace in traces:
        groups.setdefault(trace.observation.exchange_id, []).append(trace)
    return [sorted(group, key=lambda t: t.observation.decision_index) for group in groups.values()]


def _parameters(trace: trace_pb2.ApTrace) -> Any:
    return json.loads(trace.action.parameters_json)


def _scenario(name: str) -> dict[str, str]:
    return {"x-standin-scenario": name}


async def test_openai_chat_tool_calls_through_the_gateway_are_execute_traces(
        stack: tuple[ObserverStack, RunningGateway]) -> None:
    observer, gateway = stack
    async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=gateway.base_url + "/openai/v1",
                                  max_retries=0) as client:
        first = await client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "Check the repo."}],
            tools=[READ_FILE, RUN_TESTS], extra_headers=_scenario("tool_calls"))  # type: ignore[list-item]
        calls = first.choices[0].message.tool_calls or []
        # The next turn sends the earlier calls and their results back, and streams: only the new
        # call of this turn is a decision.
        history: list[Any] = [{"role": "user", "content": "Check the repo."},
                              first.choices[0].message.model_dump(exclude_none=True)]
        history += [{"role": "tool", "tool_call_id": call.id, "content": "ok"} for call in calls]
        async with client.chat.completions.stream(
                model="gpt-4.1", messages=history, tools=[RUN_TESTS],  # type: ignore[list-item]
                extra_headers={**_scenario("tool_calls"), "x-standin-tool-args": '{"target": "unit"}'},
                stream_options={"include_usage": True}) as stream:
            second = await stream.get_final_completion()
        embedded = await client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert embedded.data

    plain, streamed, embedding = await _by_exchange(observer, 4)
    assert [(t.action.type, t.action.name) for t in plain] == [
        ("execute", "read_file"), ("execute", "run_tests")]
    arguments = [json.loads(c.function.arguments) for c in calls]  # type: ignore[union-attr]
    assert [_parameters(t) for t in plain] == arguments
    assert [t.observation.tool_use_id for t in plain] == [c.id for c in calls]
    second_call = (second.choices[0].message.tool_calls or [])[0]
    assert [(t.action.type, t.action.name, _parameters(t)) for t in streamed] == [
        ("execute", "run_tests", {"target": "unit"})]
    assert streamed[0].observation.tool_use_id == second_call.id and streamed[0].observation.streamed
    for trace in (*plain, *streamed):
        observation = trace.observation
        assert (observation.provider, observation.api, observation.record_kind) == (
            "openai", "openai.chat", "decision")
        assert observation.model == first.model and observation.outcome == "complete"
        assert trace.context.environment["provider"] == "openai"
    [activity] = embedding
    assert (activity.observation.record_kind, activity.observation.provider) == ("activity", "openai")
    assert activity.observation.request_path == "/v1/embeddings"


async def test_openai_responses_reasoning_and_calls_through_the_gateway(
        stack: tuple[ObserverStack, RunningGateway]) -> None:
    observer, gateway = stack
    tools: Any = [{"type": "function", "name": "run_tests", "parameters": {
        "type": "object", "properties": {"target": {"type": "string"}}}}]
    async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=gateway.base_url + "/openai/v1",
                                  max_retries=0) as client:
        created = await client.responses.create(
            model="gpt-5.1", input="Run the tests.", tools=tools, reasoning={"summary": "auto"},
            include=["reasoning.encrypted_content"], extra_headers=_scenario("reasoning_tool_calls"))
        async with client.responses.stream(
                model="gpt-5.1", input="Run the tests again.", tools=tools, reasoning={"summary": "auto"},
                extra_headers=_scenario("reasoning_tool_calls")) as stream:
            streamed_response = await stream.get_final_response()
        with pytest.raises(openai.InternalServerError):
            await client.responses.create(model="gpt-5.1", input="x", extra_headers=_scenario("error_500"))
        failed = await client.responses.create(model="gpt-5.1", input="x", extra_headers=_scenario("failed"))
    assert failed.status == "failed"

    plain, streamed, upstream_error, response_failed = await _by_exchange(observer, 4)
    for group, response in ((plain, created), (streamed, streamed_response)):
        call = next(item for item in response.output if item.type == "function_call")
        summary = next(item for item in response.output if item.type == "reasoning").summary
        [trace] = group
        assert (trace.action.type, trace.action.name) == ("execute", "run_tests")
        assert _parameters(trace) == json.loads(call.arguments)  # type: ignore[union-attr]
        assert trace.observation.tool_use_id == call.call_id  # type: ignore[union-attr]
        reasoning = trace.observation.reasoning
        assert reasoning.present and reasoning.summary_only and reasoning.source == "reasoning_summary"
        assert reasoning.text == "\n\n".join(part.text for part in summary)
        assert "only a summary of the reasoning" in " ".join(trace.observation.missing)
        assert (trace.observation.provider, trace.observation.api) == ("openai", "openai.responses")
        assert trace.observation.model == response.model
    [error] = upstream_error
    assert (error.action.name, error.observation.outcome, error.observation.http_status) == (
        "upstream_error", "upstream_error", 500)
    assert error.observation.provider == "openai" and error.observation.record_kind == "decision"
    [failure] = response_failed
    assert (failure.action.type, failure.action.name, failure.observation.outcome) == (
        "recommend", "response_failed", "upstream_error")
    assert _parameters(failure)["error_type"] == "server_error"


def _gemini(base_url: str, http: httpx.AsyncClient) -> genai.Client:
    # Our own httpx client: with aiohttp installed, google-genai would subclass aiohttp.ClientSession.
    return genai.Client(api_key=GEMINI_KEY, http_options=types.HttpOptions(
        base_url=base_url, httpx_async_client=http, retry_options=types.HttpRetryOptions(attempts=1)))


async def test_gemini_function_calls_and_thoughts_through_the_gateway(
        stack: tuple[ObserverStack, RunningGateway]) -> None:
    observer, gateway = stack
    weather = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", parameters=types.Schema(type="OBJECT", properties={
            "city": types.Schema(type="STRING"), "days": types.Schema(type="INTEGER")}))])
    config = types.GenerateContentConfig(
        http_options=types.HttpOptions(headers=_scenario("thinking_function_call")), tools=[weather],
        thinking_config=types.ThinkingConfig(include_thoughts=True),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    async with httpx.AsyncClient() as http:
        client = _gemini(gateway.base_url + "/gemini", http)
        plain = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="weather?",
                                                         config=config)
        stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash",
                                                                 contents="weather?", config=config)
        chunks = [chunk async for chunk in stream]
        counted = await client.aio.models.count_tokens(model="gemini-2.5-flash", contents="weather?")
    assert counted.total_tokens and chunks

    generated, streamed, count = await _by_exchange(observer, 3)
    call = (plain.function_calls or [])[0]
    thoughts = [part.text for part in plain.candidates[0].content.parts  # type: ignore[index,union-attr]
                if part.thought]
    for group in (generated, streamed):
        [trace] = group
        assert (trace.action.type, trace.action.name) == ("execute", "get_weather")
        assert _parameters(trace) == call.args
        reasoning = trace.observation.reasoning
        assert reasoning.summary_only and reasoning.source == "thought_summary"
        assert reasoning.signature_present
        assert reasoning.text == "\n\n".join(text.strip() for text in thoughts if text)
        assert (trace.observation.provider, trace.observation.api, trace.observation.model) == (
            "gemini", "gemini.generate", plain.model_version)
    assert streamed[0].observation.streamed
    [activity] = count
    assert (activity.observation.record_kind, activity.observation.provider) == ("activity", "gemini")
