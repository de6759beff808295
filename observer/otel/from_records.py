"""The mapping's input (`ExchangeExport`) from what the processor has once an exchange's traces are
stored: the `Finished` result (its traces, with the conversation turn the write numbered, and its
usage facts) and the exchange's payload, read again for what no trace keeps (the provider, the
time of the first byte, the request model, the response id).

Read from the payload only: the envelope, the response's id and the request's model (top-level
keys found by `scan_object`, which skips the conversation history without building it; the
request only up to 64 KiB); a payload that cannot be decoded exports what the traces say.
Which span judges which trace:

* a tool call (`decision_kind` "tool", finished) -> an `execute_tool` span with its verdict;
  a call the model did not finish is no execution and gets no span (the chat span has it all);
* a reply -> the verdict on the `chat` span;
* a failure, an unreadable answer, API activity, a minimal record -> a `chat` span with
  `error.type` (the outcome) when the call failed, and no verdict: nothing was judged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError

from smoltbot.core.outcomes import FAILURE_OUTCOMES
from smoltbot.core.usage import TokenUsage
from smoltbot.observer.accounting import api_of
from smoltbot.observer.otel.mapping import ExchangeExport, ToolCallExport, TurnKey, Verdict
from smoltbot.observer.pipeline import scan_object, time_of
from smoltbot.observer.queue import Finished
from smoltbot.observer.record_kinds import ACTIVITY
from smoltbot.v1 import exchange_pb2

__all__ = ["CallEnvelope", "CallFigures", "envelope_of", "export_of", "figures_of", "provider_of_api"]

#: Request bodies above this are not scanned for their model: the scan costs ~6 us per KiB on the
#: event loop (bench/otel_export_cost.py), and the history a long session resends is most of the
#: body. Above it gen_ai.request.model is left out; the response model names the span.
_SCAN_LIMIT = 64 * 1024
#: Our decision kinds that carry a verdict of the agent's behaviour.
_JUDGED = ("tool", "reply")


@dataclass(frozen=True, slots=True)
class CallEnvelope:
    """What the stored exchange says beyond its traces."""

    provider: str = ""
    started_at: datetime | None = None
    first_byte_at: datetime | None = None
    ended_at: datetime | None = None
    request_model: str | None = None
    response_id: str | None = None


def provider_of_api(api: str) -> str:
    """Our provider name from a `core.usage` API name ("openai.chat" -> "openai")."""
    return api.partition(".")[0] or "anthropic"


def _string(raw: bytes | None) -> str | None:
    if not raw or raw[:1] != b'"':
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, str) and value else None


def _gemini_model(path: str) -> str | None:
    # /v1beta/models/gemini-2.5-flash:generateContent
    _, found, rest = path.partition("/models/")
    return rest.split(":", 1)[0] or None if found else None


def envelope_of(payload: bytes) -> CallEnvelope | None:
    """The envelope of a stored exchange; None when the payload is missing or cannot be decoded."""
    if not payload:
        return None
    try:
        exchange = exchange_pb2.Exchange.FromString(payload)
    except DecodeError:
        return None
    provider = exchange.provider or "anthropic"
    request_model: str | None = None
    if provider == "gemini":
        request_model = _gemini_model(exchange.request.path)
    elif len(exchange.request.body) <= _SCAN_LIMIT:
        request_model = _string(scan_object(exchange.request.body, (b"model",)).get(b"model"))
    response_id: str | None = None
    if not exchange.response.streamed and exchange.response.body:
        key = b"responseId" if provider == "gemini" else b"id"
        response_id = _string(scan_object(exchange.response.body, (key,)).get(key))
    timings = exchange.timings if exchange.HasField("timings") else None
    return CallEnvelope(
        provider=provider,
        started_at=time_of(timings, "started_at"),
        first_byte_at=time_of(timings, "first_byte_at"),
        ended_at=time_of(timings, "ended_at"),
        request_model=request_model,
        response_id=response_id,
    )


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _verdict(trace: Mapping[str, Any]) -> Verdict | None:
    observation = trace.get("observation") or {}
    metadata = (trace.get("context") or {}).get("metadata") or {}
    if metadata.get("decision_kind") not in _JUDGED or observation.get("outcome") in FAILURE_OUTCOMES:
        return None
    verification = trace.get("verification") or {}
    return Verdict(
        verified=bool(verification.get("verified")),
        card_id=str(verification.get("card_id") or trace.get("card_id") or ""),
        violation_types=tuple(str(v.get("type", "")) for v in verification.get("violations") or []
                              if isinstance(v, Mapping)),
        action_category=(trace.get("action") or {}).get("category") or None,
        escalation_required=bool((trace.get("escalation") or {}).get("required")),
    )


@dataclass(frozen=True, slots=True)
class CallFigures:
    """What both the GenAI histograms and the spans read of a stored call: all the histograms need,
    so with export off nothing else is built (`ExchangeTelemetry`)."""

    provider: str
    response_model: str | None
    started_at: datetime
    ended_at: datetime
    #: The call's outcome when it failed, else None.
    error_type: str | None
    usage: TokenUsage | None
    outcome: str
    #: API activity (GET /v1/models, ...): no GenAI operation.
    activity: bool


def figures_of(finished: Finished, envelope: CallEnvelope | None = None) -> CallFigures | None:
    """The call's figures; None when it left no trace (a refused credential)."""
    if not finished.traces or not finished.agent_id:
        return None
    envelope = envelope or CallEnvelope()
    first = finished.traces[0].trace
    observation = first.get("observation") or {}
    facts = finished.facts
    if envelope.provider:
        provider = envelope.provider
    elif facts is not None:
        provider = provider_of_api(facts.api)
    else:
        environment = (first.get("context") or {}).get("environment") or {}
        path = str(observation.get("request_path") or environment.get("request_path") or "")
        provider = provider_of_api(api_of("", path))
    started = envelope.started_at or _time(observation.get("exchange_started_at"))
    ended = envelope.ended_at or _time(observation.get("exchange_ended_at"))
    # When the call was observed only when it says neither (parsing a time is most of the cost here).
    started = started or ended or _time(observation.get("observed_at")) or datetime.now(UTC)
    ended = max(ended or started, started)
    outcome = str(observation.get("outcome") or "")
    return CallFigures(
        provider=provider,
        response_model=str(observation.get("model") or (facts.model if facts is not None else "")) or None,
        started_at=started,
        ended_at=ended,
        error_type=outcome if outcome in FAILURE_OUTCOMES else None,
        usage=facts.usage if facts is not None and facts.usage.reported else None,
        outcome=outcome,
        activity=observation.get("record_kind") == ACTIVITY,
    )


def export_of(finished: Finished, envelope: CallEnvelope | None = None, *,
              agent_name: str | None = None, figures: CallFigures | None = None) -> ExchangeExport | None:
    """The exchange as the mapping's input; None when it left no trace (a refused credential).
    `figures`: `figures_of(finished, envelope)`, when the caller has them already."""
    figures = figures or figures_of(finished, envelope)
    if figures is None:
        return None
    envelope = envelope or CallEnvelope()
    traces: Sequence[Mapping[str, Any]] = [stored.trace for stored in finished.traces]
    first = traces[0]
    observation = first.get("observation") or {}
    turn = (first.get("context") or {}).get("conversation_turn")
    outcome = figures.outcome
    tool_calls: list[ToolCallExport] = []
    reply_trace_id: str | None = None
    reply_verdict: Verdict | None = None
    for trace in traces:
        metadata = (trace.get("context") or {}).get("metadata") or {}
        kind = metadata.get("decision_kind")
        trace_observation = trace.get("observation") or {}
        if kind == "tool":
            if trace_observation.get("executed") is False or metadata.get("tool_call_finished") is False:
                continue
            action = trace.get("action") or {}
            tool_calls.append(ToolCallExport(
                name=str(action.get("name") or "tool"),
                call_id=str(metadata.get("tool_use_id") or trace["trace_id"]),
                trace_id=str(trace["trace_id"]),
                type="extension" if metadata.get("server_tool") else "function",
                verdict=_verdict(trace),
                arguments=action.get("parameters"),
            ))
        elif kind == "reply" and reply_trace_id is None:
            reply_trace_id, reply_verdict = str(trace["trace_id"]), _verdict(trace)
    stop_reason = str(observation.get("stop_reason") or "")
    extra: dict[str, str | int | float | bool] = {"smoltbot.outcome": outcome} if outcome else {}
    record_kind = observation.get("record_kind")
    if record_kind:
        extra["smoltbot.record_kind"] = str(record_kind)
    http_status = observation.get("http_status")
    if isinstance(http_status, int) and http_status:
        extra["http.response.status_code"] = http_status
    return ExchangeExport(
        exchange_id=finished.exchange_id,
        turn=TurnKey(finished.agent_id, finished.session_id, turn if isinstance(turn, int) else None,
                     agent_name),
        provider=figures.provider,
        request_model=envelope.request_model,
        response_model=figures.response_model,
        started_at=figures.started_at,
        ended_at=figures.ended_at,
        first_byte_at=envelope.first_byte_at,
        streamed=bool(observation.get("streamed")),
        response_id=envelope.response_id,
        finish_reasons=(stop_reason,) if stop_reason else (),
        usage=figures.usage,
        error_type=figures.error_type,
        tool_calls=tuple(tool_calls),
        reply_trace_id=reply_trace_id,
        reply_verdict=reply_verdict,
        extra_attributes=extra,
    )
