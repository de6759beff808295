"""End to end: the official anthropic SDK calls the Anthropic stand-in through the real gateway,
which ships each exchange to the real Observer (with the real Registry); every call becomes the
expected traces, streamed or not, with thinking, tags, redacted thinking, tool calls, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aap
import anthropic
import pytest
from google.protobuf import json_format

from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway, start_gateway
from smoltbot.v1 import trace_pb2
from tests.integration.observer.conftest import ObserverStack
from tests.support.anthropic_standin import AnthropicStandin

pytestmark = pytest.mark.timeout(60)

CREDENTIAL = "sk-ant-api03-through-the-gateway-0123456789"
MODEL = "claude-opus-4-7"
TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "name": "list_dir",
        "description": "List a directory",
        "input_schema": {"type": "object", "properties": {"dir": {"type": "string"}}, "required": ["dir"]},
    },
]


@pytest.fixture
async def standin() -> AsyncIterator[AnthropicStandin]:
    server = AnthropicStandin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def stack(standin: AnthropicStandin, settings_factory: Callable[..., Settings],
                database_url: str) -> AsyncIterator[tuple[ObserverStack, RunningGateway]]:
    observer_stack = ObserverStack(settings_factory(upstream_url=standin.base_url))
    gateway = None
    try:
        await observer_stack.start_registry()
        observer = await observer_stack.start_observer()
        gateway = await start_gateway(observer_stack.observer_settings, registry_address=
                                      f"127.0.0.1:{observer_stack.registry_port}",
                                      observer_address=f"127.0.0.1:{observer.port}")
        yield observer_stack, gateway
    finally:
        if gateway is not None:
            await gateway.stop()
        await observer_stack.close()


async def _call(client: anthropic.AsyncAnthropic, scenario: str, *, stream: bool, tools: bool = False) -> Any:
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 512,
        "messages": [{"role": "user", "content": f"Please help ({scenario}, {stream})."}],
        "extra_headers": {"x-standin-scenario": scenario},
    }
    if tools:
        kwargs["tools"] = TOOLS
    if stream:
        async with client.messages.stream(**kwargs) as events:
            return await events.get_final_message()
    return await client.messages.create(**kwargs)


async def test_sdk_calls_through_the_gateway_become_the_expected_traces(
        stack: tuple[ObserverStack, RunningGateway]) -> None:
    observer_stack, gateway = stack
    calls: list[tuple[str, bool, bool]] = [
        ("thinking", False, False), ("thinking", True, False),
        ("tags", False, False), ("tags", True, False),
        ("redacted_thinking", True, False),
        ("tool_use", False, True), ("thinking_tool_use", True, True),
        ("interleaved", True, True),
        ("error_429", False, False), ("error_529", True, False),
        ("mid_stream_error", True, False),
    ]
    failures = []
    async with anthropic.AsyncAnthropic(api_key=CREDENTIAL, base_url=gateway.base_url + "/anthropic",
                                        max_retries=0) as client:
        for scenario, stream, tools in calls:
            try:
                await _call(client, scenario, stream=stream, tools=tools)
            except anthropic.APIError as error:
                failures.append((scenario, type(error).__name__))
    assert {scenario for scenario, _ in failures} == {"error_429", "error_529", "mid_stream_error"}

    traces = await observer_stack.wait_for_traces(len(calls) + 1, order_by="timestamp asc", timeout=20)
    by_exchange: dict[str, list[trace_pb2.ApTrace]] = {}
    for trace in traces:
        by_exchange.setdefault(trace.observation.exchange_id, []).append(trace)
    assert len(by_exchange) == len(calls)
    got = dict(
        zip([f"{s}/{'stream' if st else 'json'}" for s, st, _ in calls], by_exchange.values(), strict=True)
    )
    agent_ids = {trace.agent_id for trace in traces}
    assert len(agent_ids) == 1 and next(iter(agent_ids)).startswith("smolt-")

    for name, found in got.items():
        for trace in found:
            aap.APTrace.from_dict(json_format.MessageToDict(trace, preserving_proto_field_name=True,
                                                            always_print_fields_with_no_presence=True))
            assert trace.observation.model == MODEL and trace.action.name != MODEL, name
            # An error status comes as a JSON body even when a stream was asked for.
            assert trace.observation.streamed == (name.endswith("/stream") and name != "error_529/stream"), (
                name
            )
            assert trace.context.session_id, name
            assert CREDENTIAL not in str(trace), name

    for name in ("thinking/json", "thinking/stream"):
        (trace,) = got[name]
        assert (trace.action.type, trace.action.name) == ("recommend", "respond")
        assert (
            trace.observation.reasoning.source == "thinking" and trace.observation.reasoning.signature_present
        )
        assert trace.observation.outcome == "complete" and trace.observation.stop_reason == "end_turn"
    for name in ("tags/json", "tags/stream"):
        (trace,) = got[name]
        assert trace.observation.reasoning.source == "tags" and trace.observation.reasoning.present
        assert "greeting" in trace.observation.reasoning.excerpt
    (hidden,) = got["redacted_thinking/stream"]
    assert hidden.observation.reasoning.redacted_blocks == 1
    (tool,) = got["tool_use/json"]
    assert (tool.action.type, tool.action.name) == ("execute", "read_file")
    assert tool.observation.tool_use_id.startswith("toolu_")
    (thought,) = got["thinking_tool_use/stream"]
    assert thought.action.name == "read_file" and thought.observation.reasoning.source == "thinking"
    first, second = got["interleaved/stream"]
    assert (first.action.name, second.action.name) == ("read_file", "list_dir")
    assert list(second.context.prior_trace_ids) == [first.trace_id]
    (limited,) = got["error_429/json"]
    assert (limited.observation.outcome, limited.observation.http_status) == ("upstream_error", 429)
    (overloaded,) = got["error_529/stream"]
    assert (overloaded.observation.outcome, overloaded.observation.http_status) == ("upstream_error", 529)
    (broken,) = got["mid_stream_error/stream"]
    assert broken.observation.outcome == "mid_stream_error"
    assert broken.action.parameters["error_type"] == "overloaded_error"
