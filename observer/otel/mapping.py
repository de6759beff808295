"""One exchange and its verified traces as OpenTelemetry spans, after the GenAI semantic conventions.

The pin (`GENAI_SEMCONV`): the `gen_ai.*` names as published in OpenTelemetry semantic conventions
1.44.0 (development status), as shipped by `opentelemetry-semantic-conventions` 0.66b2; a unit test
checks every name below against that package. The GenAI group has since moved to its own repository
(semantic-conventions-genai), which has no release yet and renames some names (cache_creation ->
cache_write): we move when it releases, not before.

The tree of one user turn:

    invoke_agent {agent}          INTERNAL  one per (agent, session, turn)      `turn_span`
      chat {model}                CLIENT    one per exchange (model call)       `exchange_spans`
      execute_tool {tool}         INTERNAL  one per tool call the model made    `exchange_spans`

Verification travels twice: a `gen_ai.evaluation.result` event per verdict on the span it judges,
and `aap.*` attributes on that span, for backends that show attributes only. A trace that is a
tool call is judged on its `execute_tool` span; a reply (no tool call) on the `chat` span.

Ids are derived from ours (SHA-256 of a labelled key), never random, so exporting an exchange twice
sends the same span ids and a backend keeps one span: the trace id and the `invoke_agent` span id
from (agent, session, turn) (from the exchange id when the turn is unknown, which makes the
exchange a turn of its own), the `chat` span id from the exchange id, an `execute_tool` span id
from the exchange id and the tool call id.

Message content (`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.system_instructions`,
`gen_ai.tool.call.arguments`/`.result`) is set only when the operator opts in with the standard
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (`content_capture_enabled`). Content given here
must already be redacted (the trace builder's redaction): this module adds nothing and removes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from smoltbot.core.usage import TokenUsage

__all__ = [
    "CAPTURE_CONTENT_VARIABLE",
    "EVALUATION_EVENT",
    "EVALUATION_NAME",
    "GENAI_SEMCONV",
    "SCHEMA_URL",
    "ExchangeExport",
    "ToolCallExport",
    "TurnKey",
    "Verdict",
    "content_capture_enabled",
    "exchange_spans",
    "provider_name",
    "span_id_for",
    "trace_id_for",
    "turn_span",
]

GENAI_SEMCONV = "OpenTelemetry semantic conventions 1.44.0, gen_ai registry (development)"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
CAPTURE_CONTENT_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: Values of the content-capture variable that put content on spans: the boolean form, and the
#: span forms of the newer enumerated one (NO_CONTENT and EVENT_ONLY keep spans free of it).
_CAPTURE_ON = frozenset({"true", "1", "span_only", "span_and_event"})
EVALUATION_EVENT = "gen_ai.evaluation.result"
#: gen_ai.evaluation.name of our verdicts: the check of a trace against the agent's alignment card.
EVALUATION_NAME = "aap.card_verification"
_SCOPE = InstrumentationScope("smoltbot.observer.otel", "0.1.0", SCHEMA_URL)
#: Our provider names -> gen_ai.provider.name well-known values.
_PROVIDERS = {"gemini": "gcp.gemini", "google": "gcp.gemini", "xai": "x_ai"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The check of one AAP trace against the agent's card."""

    verified: bool
    card_id: str
    violation_types: tuple[str, ...] = ()
    action_category: str | None = None
    escalation_required: bool = False


@dataclass(frozen=True, slots=True)
class ToolCallExport:
    """One tool call the model asked for, with the trace that records it."""

    name: str
    call_id: str
    trace_id: str
    #: gen_ai.tool.type: "function" (run by the agent), "extension" (run by the provider: server
    #: tools), "datastore".
    type: str = "function"
    verdict: Verdict | None = None
    #: Content, exported only under content capture: the (redacted) input, and the result if known.
    arguments: Any = None
    result: Any = None


@dataclass(frozen=True, slots=True)
class TurnKey:
    """Which user turn an exchange belongs to; session and turn None when they are unknown."""

    agent_id: str
    session_id: str | None
    turn: int | None
    agent_name: str | None = None


@dataclass(frozen=True, slots=True)
class ExchangeExport:
    """One model call and its traces, as the observer stored them."""

    exchange_id: str
    turn: TurnKey
    provider: str
    request_model: str | None
    response_model: str | None
    started_at: datetime
    ended_at: datetime
    #: When the first byte of the answer came back (time to first chunk, streams only).
    first_byte_at: datetime | None = None
    streamed: bool = False
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    usage: TokenUsage | None = None
    #: error.type when the call failed: our outcome ("upstream_error", "client_abort", ...) or the
    #: provider's error type; None when it succeeded.
    error_type: str | None = None
    tool_calls: tuple[ToolCallExport, ...] = ()
    #: The trace of a reply (a decision that is no tool call), judged on the chat span.
    reply_trace_id: str | None = None
    reply_verdict: Verdict | None = None
    #: Content in the semantic conventions' message shapes, exported only under content capture.
    input_messages: Sequence[Mapping[str, Any]] | None = None
    output_messages: Sequence[Mapping[str, Any]] | None = None
    system_instructions: Sequence[Mapping[str, Any]] | None = None
    extra_attributes: Mapping[str, str | int | float | bool] = field(default_factory=dict)


def provider_name(provider: str) -> str:
    """gen_ai.provider.name of one of our provider names ("gemini" -> "gcp.gemini")."""
    return _PROVIDERS.get(provider, provider)


def content_capture_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the operator opted in to message content on spans (off unless set)."""
    value = (os.environ if env is None else env).get(CAPTURE_CONTENT_VARIABLE, "")
    return value.strip().lower() in _CAPTURE_ON


def _digest(*parts: str, size: int) -> int:
    key = "\x1f".join(parts).encode()
    value = int.from_bytes(hashlib.sha256(key).digest()[:size], "big")
    return value or 1  # all-zero ids are invalid in OTLP; a zero digest prefix is 2**-64 unlikely


def _turn_parts(turn: TurnKey, exchange_id: str) -> tuple[str, ...]:
    if turn.session_id is None or turn.turn is None:
        return ("exchange", exchange_id)
    return ("turn", turn.agent_id, turn.session_id, str(turn.turn))


def trace_id_for(turn: TurnKey, exchange_id: str) -> int:
    """The OTel trace id (128 bits) of the turn an exchange belongs to."""
    return _digest("smoltbot.trace", *_turn_parts(turn, exchange_id), size=16)


def span_id_for(kind: str, *parts: str) -> int:
    """A 64-bit span id from our own ids: kind is "turn", "chat" or "tool"."""
    return _digest("smoltbot.span", kind, *parts, size=8)


def _turn_span_id(turn: TurnKey, exchange_id: str) -> int:
    return span_id_for("turn", *_turn_parts(turn, exchange_id))


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("exchange times must be timezone-aware")
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _common(turn: TurnKey) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.agent.id": turn.agent_id}
    if turn.agent_name:
        attributes["gen_ai.agent.name"] = turn.agent_name
    if turn.session_id:
        attributes["gen_ai.conversation.id"] = turn.session_id
        attributes["session.id"] = turn.session_id
    return attributes


def _verdict_attributes(verdict: Verdict, trace_id: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "aap.trace_id": trace_id,
        "aap.verified": verdict.verified,
        "aap.card_id": verdict.card_id,
        "aap.violation_types": list(verdict.violation_types),
        "aap.escalation_required": verdict.escalation_required,
    }
    if verdict.action_category:
        attributes["aap.action_category"] = verdict.action_category
    return attributes


def _evaluation(verdict: Verdict, trace_id: str, response_id: str | None, at: int) -> Event:
    if verdict.verified:
        explanation = f"consistent with alignment card {verdict.card_id}"
    else:
        explanation = (f"violates alignment card {verdict.card_id}: "
                       + (", ".join(verdict.violation_types) or "unverified"))
    if verdict.escalation_required:
        explanation += "; escalation required"
    attributes: dict[str, Any] = {
        "gen_ai.evaluation.name": EVALUATION_NAME,
        "gen_ai.evaluation.score.label": "pass" if verdict.verified else "fail",
        "gen_ai.evaluation.score.value": 1.0 if verdict.verified else 0.0,
        "gen_ai.evaluation.explanation": explanation,
        "aap.trace_id": trace_id,
    }
    if response_id:
        attributes["gen_ai.response.id"] = response_id
    return Event(EVALUATION_EVENT, attributes, timestamp=at)


def _usage_attributes(usage: TokenUsage) -> dict[str, int]:
    # gen_ai.usage.input_tokens includes the cached parts ("SHOULD be included"); TokenUsage keeps
    # them apart (`input` is the uncached part), so the total is their sum.
    attributes: dict[str, int] = {}
    input_parts = [usage.input, usage.cache_read, usage.cache_write]
    if any(part is not None for part in input_parts):
        attributes["gen_ai.usage.input_tokens"] = sum(part or 0 for part in input_parts)
    if usage.output is not None:
        attributes["gen_ai.usage.output_tokens"] = usage.output
    if usage.cache_read is not None:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read
    if usage.cache_write is not None:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write
    if usage.reasoning is not None:
        attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning
    return attributes


def _status(error_type: str | None) -> Status:
    return Status(StatusCode.ERROR, error_type) if error_type else Status(StatusCode.UNSET)


def _chat_span(exchange: ExchangeExport, resource: Resource, capture_content: bool) -> ReadableSpan:
    turn = exchange.turn
    trace_id = trace_id_for(turn, exchange.exchange_id)
    model = exchange.request_model or exchange.response_model
    start, end = _ns(exchange.started_at), _ns(exchange.ended_at)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name(exchange.provider),
        **_common(turn),
        "gen_ai.request.stream": exchange.streamed,
        "smoltbot.exchange_id": exchange.exchange_id,
    }
    if exchange.request_model:
        attributes["gen_ai.request.model"] = exchange.request_model
    if exchange.response_model:
        attributes["gen_ai.response.model"] = exchange.response_model
    if exchange.response_id:
        attributes["gen_ai.response.id"] = exchange.response_id
    if exchange.finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = list(exchange.finish_reasons)
    if exchange.streamed and exchange.first_byte_at is not None:
        seconds = (_ns(exchange.first_byte_at) - start) / 1e9
        attributes["gen_ai.response.time_to_first_chunk"] = max(seconds, 0.0)
    if exchange.usage is not None:
        attributes.update(_usage_attributes(exchange.usage))
    if exchange.error_type:
        attributes["error.type"] = exchange.error_type
    if capture_content:
        for name, value in (("gen_ai.input.messages", exchange.input_messages),
                            ("gen_ai.output.messages", exchange.output_messages),
                            ("gen_ai.system_instructions", exchange.system_instructions)):
            if value is not None:
                attributes[name] = _json(list(value))
    events: list[Event] = []
    if exchange.reply_verdict is not None and exchange.reply_trace_id:
        attributes.update(_verdict_attributes(exchange.reply_verdict, exchange.reply_trace_id))
        events.append(_evaluation(exchange.reply_verdict, exchange.reply_trace_id, exchange.response_id,
                                  end))
    attributes.update(exchange.extra_attributes)
    return ReadableSpan(
        name=f"chat {model}" if model else "chat",
        context=_context(trace_id, span_id_for("chat", exchange.exchange_id)),
        parent=_context(trace_id, _turn_span_id(turn, exchange.exchange_id)),
        resource=resource, attributes=attributes, events=events, kind=SpanKind.CLIENT,
        status=_status(exchange.error_type), start_time=start, end_time=end, instrumentation_scope=_SCOPE,
    )


def _tool_span(exchange: ExchangeExport, call: ToolCallExport, resource: Resource,
               capture_content: bool) -> ReadableSpan:
    turn = exchange.turn
    trace_id = trace_id_for(turn, exchange.exchange_id)
    # The agent runs the tool after the model's answer; we only see that answer, so the span is
    # the instant the call was asked for (its end), not a measured execution.
    at = _ns(exchange.ended_at)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        **_common(turn),
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.call_id,
        "gen_ai.tool.type": call.type,
        "smoltbot.exchange_id": exchange.exchange_id,
    }
    if capture_content:
        if call.arguments is not None:
            attributes["gen_ai.tool.call.arguments"] = _json(call.arguments)
        if call.result is not None:
            attributes["gen_ai.tool.call.result"] = _json(call.result)
    events: list[Event] = []
    if call.verdict is not None:
        attributes.update(_verdict_attributes(call.verdict, call.trace_id))
        events.append(_evaluation(call.verdict, call.trace_id, exchange.response_id, at))
    return ReadableSpan(
        name=f"execute_tool {call.name}",
        context=_context(trace_id, span_id_for("tool", exchange.exchange_id, call.call_id)),
        parent=_context(trace_id, _turn_span_id(turn, exchange.exchange_id)),
        resource=resource, attributes=attributes, events=events, kind=SpanKind.INTERNAL,
        status=Status(StatusCode.UNSET), start_time=at, end_time=at, instrumentation_scope=_SCOPE,
    )


def exchange_spans(exchange: ExchangeExport, *, resource: Resource,
                   capture_content: bool = False) -> list[ReadableSpan]:
    """The `chat` span of one exchange and an `execute_tool` span per tool call, all children of
    the turn's `invoke_agent` span (`turn_span`, which may be exported before or after them)."""
    spans = [_chat_span(exchange, resource, capture_content)]
    spans += [_tool_span(exchange, call, resource, capture_content) for call in exchange.tool_calls]
    return spans


def turn_span(exchanges: Iterable[ExchangeExport], *, resource: Resource) -> ReadableSpan:
    """The `invoke_agent` span of one user turn, over the exchanges seen in it (all of one turn).

    Export it once the turn is over (its span id is fixed, so a later, longer export of the same
    turn replaces rather than adds). The turn fails (error.type) when its last call failed.
    """
    ordered = sorted(exchanges, key=lambda e: (e.started_at, e.exchange_id))
    if not ordered:
        raise ValueError("a turn span needs at least one exchange")
    first, last = ordered[0], max(ordered, key=lambda e: e.ended_at)
    turn = first.turn
    keys = {trace_id_for(e.turn, e.exchange_id) for e in ordered}
    if len(keys) != 1:
        raise ValueError("the exchanges given belong to different turns")
    agent = turn.agent_name or turn.agent_id
    error_type = ordered[-1].error_type
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": provider_name(first.provider),
        **_common(turn),
        "smoltbot.exchange_count": len(ordered),
    }
    if turn.turn is not None:
        attributes["smoltbot.turn"] = turn.turn
    if error_type:
        attributes["error.type"] = error_type
    trace_id = trace_id_for(turn, first.exchange_id)
    return ReadableSpan(
        name=f"invoke_agent {agent}",
        context=_context(trace_id, _turn_span_id(turn, first.exchange_id)),
        parent=None, resource=resource, attributes=attributes, events=(), kind=SpanKind.INTERNAL,
        status=_status(error_type), start_time=_ns(first.started_at), end_time=_ns(last.ended_at),
        instrumentation_scope=_SCOPE,
    )
