"""SMOLTBOT_ANALYZER=anthropic against the Anthropic stand-in (the official SDK with a base_url):
structured output parsed when the reply is the forced tool call, the local analysis with a
stated reason when it is not, when the API fails, when it is too slow, and once the circuit
breaker is open. The stand-in picks its behaviour from a ``[[scenario:...]]`` marker in the
last user message, which is the analyzer's prompt, which quotes the agent's reply text."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from smoltbot.core.settings import Settings
from smoltbot.observer.anthropic_analyzer import ANALYSIS_TOOL
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.exchanges import make_exchange, message, text, thinking, tool_use
from tests.support.anthropic_standin import AnthropicStandin


@pytest.fixture
async def standin() -> AsyncIterator[AnthropicStandin]:
    server = AnthropicStandin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def model_stack(standin: AnthropicStandin, settings_factory: Callable[..., Settings],
                      database_url: str) -> AsyncIterator[ObserverStack]:
    settings = settings_factory(
        analyzer="anthropic",
        analyzer_base_url=standin.base_url,
        analyzer_api_key="sk-ant-test-analyzer-key",
        analyzer_model="claude-haiku-4-5",
        analyzer_timeout=1.0,
        observer_max_attempts=2,
    )
    stack = ObserverStack(settings)
    try:
        await stack.start_registry()
        await stack.start_observer()
        yield stack
    finally:
        await stack.close()


def _turn(agent_hash: str, marker: str, *tools: str) -> object:
    blocks = [thinking("Option A: read the file. Option B: ask first. I choose A to be transparent.")]
    blocks += [tool_use(name, {"path": f"/srv/{name}.txt"}) for name in tools]
    if not tools:
        blocks.append(text(f"Done. {marker}"))
    else:
        blocks.insert(1, text(marker))
    return make_exchange(agent_hash, message(*blocks, stop_reason="tool_use" if tools else "end_turn"))


async def test_structured_output_from_the_model_becomes_the_trace_decision(
        model_stack: ObserverStack, standin: AnthropicStandin) -> None:
    agent_id, agent_hash = await model_stack.agent()
    reply = _turn(agent_hash, "[[scenario:tool_use]]")
    calls = _turn(agent_hash, "[[scenario:tool_use]]", "read_file", "list_dir")
    await model_stack.ingest([reply, calls])
    found = await model_stack.traces_by_exchange([reply.exchange_id, calls.exchange_id], timeout=20)
    traces = found[reply.exchange_id] + found[calls.exchange_id]
    assert len(traces) == 3
    for trace in traces:
        assert trace.observation.analyzer == "anthropic", trace.observation.analysis_fallback_reason
        assert not trace.observation.analysis_fallback_reason
        # The stand-in fills the schema's fields with placeholders: "example", 42 (read as 42%).
        assert trace.decision.selection_reasoning == "example"
        assert trace.decision.confidence == pytest.approx(0.42)
        assert trace.decision.selected == "taken"
        assert trace.decision.alternatives_considered[0].option_id == "taken"
    integrity = (await model_stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=agent_id))).integrity
    assert integrity.all_time.with_model_analysis == 3

    analyzer_calls = [r for r in standin.requests if r.path.endswith("/messages")]
    assert len(analyzer_calls) == 3, "one call per decision"
    body = analyzer_calls[0].json()
    assert body["model"] == "claude-haiku-4-5"
    assert body["tool_choice"] == {"type": "tool", "name": ANALYSIS_TOOL}
    assert body["tools"][0]["input_schema"]["properties"]["selected"]["enum"] == ["taken"]
    assert analyzer_calls[0].credential == "sk-ant-test-analyzer-key"
    assert "OLD-TURN-THINKING" not in body["messages"][0]["content"]


async def test_when_the_model_fails_the_local_analysis_is_used_and_the_trace_says_why(
        model_stack: ObserverStack, standin: AnthropicStandin) -> None:
    _, agent_hash = await model_stack.agent()
    prose = _turn(agent_hash, "plain text reply")  # the stand-in's default: text, no tool call
    overloaded = _turn(agent_hash, "[[scenario:error_529]]")
    slow = _turn(agent_hash, "[[scenario:tool_use+slow]] [[delay:3000]]")
    await model_stack.ingest([prose])
    await model_stack.ingest([overloaded])
    await model_stack.ingest([slow])
    found = await model_stack.traces_by_exchange(
        [prose.exchange_id, overloaded.exchange_id, slow.exchange_id], timeout=20
    )
    reasons = {}
    for name, exchange in (("prose", prose), ("overloaded", overloaded), ("slow", slow)):
        (trace,) = found[exchange.exchange_id]
        assert trace.observation.analyzer == "local"
        assert trace.decision.selection_reasoning and trace.decision.HasField("confidence")
        reasons[name] = trace.observation.analysis_fallback_reason
    assert f"no {ANALYSIS_TOOL} tool call" in reasons["prose"]
    assert "529" in reasons["overloaded"] or "Overloaded" in reasons["overloaded"]
    assert "timed out" in reasons["slow"]

    # Three failures in a row: the breaker is open and the model is not called at all.
    before = len(standin.requests)
    later = _turn(agent_hash, "[[scenario:tool_use]]")
    await model_stack.ingest([later])
    (trace,) = (await model_stack.traces_by_exchange([later.exchange_id]))[later.exchange_id]
    assert "circuit breaker open" in trace.observation.analysis_fallback_reason
    assert len(standin.requests) == before
