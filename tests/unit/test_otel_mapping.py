"""Exchanges and their verified traces as GenAI spans (observer/otel/mapping.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv
from opentelemetry.trace import SpanKind, StatusCode

from smoltbot.core.usage import TokenUsage
from smoltbot.observer.otel.mapping import (
    ExchangeExport,
    ToolCallExport,
    TurnKey,
    Verdict,
    content_capture_enabled,
    exchange_spans,
    span_id_for,
    trace_id_for,
    turn_span,
)

RESOURCE = Resource.create({"service.name": "smoltbot-observer"})
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TURN = TurnKey(agent_id="smolt-abc123", session_id="sess-1", turn=3)


def _exchange(**changes) -> ExchangeExport:
    exchange = ExchangeExport(
        exchange_id="ex-1", turn=TURN, provider="anthropic", request_model="claude-sonnet-4-5",
        response_model="claude-sonnet-4-5-20250929", started_at=T0, ended_at=T0 + timedelta(seconds=2),
        first_byte_at=T0 + timedelta(milliseconds=350), streamed=True, response_id="msg_01",
        finish_reasons=("tool_use",),
        usage=TokenUsage(provider="anthropic", input=100, cache_read=2000, cache_write_5m=300, output=50),
        tool_calls=(
            ToolCallExport(name="Bash", call_id="toolu_1", trace_id="tr-ex-1-0",
                           verdict=Verdict(verified=False, card_id="card-9",
                                           violation_types=("forbidden_action",), action_category="bounded",
                                           escalation_required=True),
                           arguments={"command": "ls"}),
            ToolCallExport(name="Read", call_id="toolu_2", trace_id="tr-ex-1-1",
                           verdict=Verdict(verified=True, card_id="card-9", action_category="bounded")),
        ),
        input_messages=[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
    )
    return replace(exchange, **changes)


def _by_name(spans):
    return {span.name: span for span in spans}


def test_chat_span_carries_the_genai_attributes_of_the_call() -> None:
    chat = _by_name(exchange_spans(_exchange(), resource=RESOURCE))["chat claude-sonnet-4-5"]
    assert chat.kind is SpanKind.CLIENT
    attrs = dict(chat.attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert attrs["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
    assert attrs["gen_ai.response.id"] == "msg_01"
    assert attrs["gen_ai.conversation.id"] == "sess-1" and attrs["session.id"] == "sess-1"
    assert attrs["gen_ai.response.finish_reasons"] == ["tool_use"]
    # input_tokens includes the cached parts, as the convention says; each cache part is named.
    assert attrs["gen_ai.usage.input_tokens"] == 2400
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 2000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 300
    assert attrs["gen_ai.usage.output_tokens"] == 50
    assert attrs["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.35)
    assert "error.type" not in attrs
    assert chat.start_time == int(T0.timestamp()) * 10**9
    assert chat.end_time - chat.start_time == 2 * 10**9


def test_unreported_usage_parts_are_left_out_not_zero() -> None:
    attrs = dict(exchange_spans(_exchange(usage=TokenUsage(provider="openai", output=7), streamed=False),
                                resource=RESOURCE)[0].attributes)
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert not {"gen_ai.usage.input_tokens", "gen_ai.usage.cache_read.input_tokens",
                "gen_ai.response.time_to_first_chunk"} & attrs.keys()


def test_tool_calls_are_execute_tool_spans_under_the_turn_with_their_verdicts() -> None:
    spans = _by_name(exchange_spans(_exchange(), resource=RESOURCE))
    bash, read, chat = spans["execute_tool Bash"], spans["execute_tool Read"], spans["chat claude-sonnet-4-5"]
    assert bash.kind is SpanKind.INTERNAL
    attrs = dict(bash.attributes)
    assert (attrs["gen_ai.operation.name"], attrs["gen_ai.tool.name"], attrs["gen_ai.tool.call.id"],
            attrs["gen_ai.tool.type"]) == ("execute_tool", "Bash", "toolu_1", "function")
    assert attrs["aap.verified"] is False and attrs["aap.card_id"] == "card-9"
    assert attrs["aap.violation_types"] == ["forbidden_action"]
    assert attrs["aap.action_category"] == "bounded" and attrs["aap.escalation_required"] is True
    assert attrs["aap.trace_id"] == "tr-ex-1-0"
    [event] = bash.events
    assert event.name == "gen_ai.evaluation.result"
    assert event.attributes["gen_ai.evaluation.name"] == "aap.card_verification"
    assert event.attributes["gen_ai.evaluation.score.label"] == "fail"
    assert event.attributes["gen_ai.evaluation.score.value"] == 0.0
    assert "forbidden_action" in event.attributes["gen_ai.evaluation.explanation"]
    assert event.attributes["gen_ai.response.id"] == "msg_01"
    assert read.events[0].attributes["gen_ai.evaluation.score.label"] == "pass"
    # All three hang under the turn's invoke_agent span, in the turn's trace.
    turn = turn_span([_exchange()], resource=RESOURCE)
    for span in (bash, read, chat):
        assert span.parent.span_id == turn.context.span_id
        assert span.context.trace_id == turn.context.trace_id
    assert len({bash.context.span_id, read.context.span_id, chat.context.span_id}) == 3


def test_a_reply_is_judged_on_the_chat_span() -> None:
    verdict = Verdict(verified=True, card_id="card-9", action_category="bounded")
    chat = exchange_spans(_exchange(tool_calls=(), reply_trace_id="tr-ex-1-0", reply_verdict=verdict),
                          resource=RESOURCE)[0]
    assert chat.attributes["aap.verified"] is True and chat.attributes["aap.trace_id"] == "tr-ex-1-0"
    assert [e.name for e in chat.events] == ["gen_ai.evaluation.result"]


def test_a_failed_call_sets_error_type_and_an_error_status() -> None:
    chat = exchange_spans(_exchange(error_type="upstream_error", tool_calls=()), resource=RESOURCE)[0]
    assert chat.attributes["error.type"] == "upstream_error"
    assert chat.status.status_code is StatusCode.ERROR


def test_ids_are_derived_so_processing_again_sends_the_same_spans() -> None:
    first = [(s.context.trace_id, s.context.span_id, s.parent.span_id)
             for s in exchange_spans(_exchange(), resource=RESOURCE)]
    again = [(s.context.trace_id, s.context.span_id, s.parent.span_id)
             for s in exchange_spans(_exchange(), resource=RESOURCE)]
    assert first == again
    # Another exchange of the same turn: same trace and parent, its own chat span.
    other = exchange_spans(_exchange(exchange_id="ex-2", tool_calls=()), resource=RESOURCE)[0]
    assert other.context.trace_id == first[0][0] and other.parent.span_id == first[0][2]
    assert other.context.span_id != first[0][1]
    # Another turn or another session is another trace.
    assert trace_id_for(replace(TURN, turn=4), "ex-1") != first[0][0]
    assert trace_id_for(replace(TURN, session_id="sess-2"), "ex-1") != first[0][0]
    assert span_id_for("chat", "ex-1") == first[0][1]


def test_an_exchange_without_a_known_turn_is_a_turn_of_its_own() -> None:
    loose = TurnKey(agent_id="smolt-abc123", session_id=None, turn=None)
    a = exchange_spans(_exchange(turn=loose, tool_calls=()), resource=RESOURCE)[0]
    b = exchange_spans(_exchange(turn=loose, exchange_id="ex-2", tool_calls=()), resource=RESOURCE)[0]
    assert a.context.trace_id != b.context.trace_id
    assert "gen_ai.conversation.id" not in a.attributes and "session.id" not in a.attributes


def test_turn_span_covers_the_turn_and_names_the_agent() -> None:
    second = _exchange(exchange_id="ex-2", started_at=T0 + timedelta(seconds=5),
                       ended_at=T0 + timedelta(seconds=9), error_type="client_abort")
    span = turn_span([second, _exchange()], resource=RESOURCE)
    assert span.name == "invoke_agent smolt-abc123" and span.parent is None
    assert span.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert span.attributes["gen_ai.agent.id"] == "smolt-abc123"
    assert span.attributes["smoltbot.exchange_count"] == 2
    assert span.attributes["error.type"] == "client_abort"
    assert (span.start_time, span.end_time - span.start_time) == (int(T0.timestamp()) * 10**9, 9 * 10**9)
    named = turn_span([_exchange(turn=replace(TURN, agent_name="billing-bot"))], resource=RESOURCE)
    assert named.name == "invoke_agent billing-bot"
    with pytest.raises(ValueError, match="different turns"):
        turn_span([_exchange(), _exchange(turn=replace(TURN, turn=9))], resource=RESOURCE)


def test_content_is_exported_only_when_the_operator_opts_in() -> None:
    plain = exchange_spans(_exchange(), resource=RESOURCE)
    assert not any(key.startswith(("gen_ai.input.", "gen_ai.output.", "gen_ai.tool.call.arguments"))
                   for span in plain for key in span.attributes)
    captured = _by_name(exchange_spans(_exchange(), resource=RESOURCE, capture_content=True))
    messages = json.loads(captured["chat claude-sonnet-4-5"].attributes["gen_ai.input.messages"])
    assert messages[0]["parts"][0]["content"] == "hi"
    arguments = captured["execute_tool Bash"].attributes["gen_ai.tool.call.arguments"]
    assert json.loads(arguments) == {"command": "ls"}


@pytest.mark.parametrize(("value", "enabled"), [
    (None, False), ("", False), ("false", False), ("NO_CONTENT", False), ("EVENT_ONLY", False),
    ("true", True), ("True", True), ("SPAN_ONLY", True), ("span_and_event", True),
])
def test_the_standard_content_capture_variable_decides(value, enabled) -> None:
    env = {} if value is None else {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value}
    assert content_capture_enabled(env) is enabled


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        exchange_spans(_exchange(started_at=datetime(2026, 3, 1, 12, 0, 0)), resource=RESOURCE)


def test_every_gen_ai_name_we_emit_is_in_the_pinned_conventions() -> None:
    # The pin (mapping.GENAI_SEMCONV): each gen_ai.* name we send exists in the pinned registry.
    pinned = {value for name, value in vars(semconv).items() if name.startswith("GEN_AI_")}
    pinned.add("gen_ai.evaluation.result")  # an event name, not an attribute
    spans = exchange_spans(_exchange(reply_trace_id="tr-x", reply_verdict=Verdict(True, "c")),
                           resource=RESOURCE, capture_content=True)
    spans.append(turn_span([_exchange()], resource=RESOURCE))
    used = {key for span in spans for key in span.attributes if key.startswith("gen_ai.")}
    used |= {key for span in spans for event in span.events for key in event.attributes
             if key.startswith("gen_ai.")}
    used |= {event.name for span in spans for event in span.events}
    assert used - pinned == set()
    assert {"gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.response.time_to_first_chunk", "gen_ai.tool.call.id"} <= used
