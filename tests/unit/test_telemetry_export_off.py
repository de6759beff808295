"""The GenAI histograms with OTLP export off (observer/otel/telemetry.py): built from the call's
figures alone (`from_records.figures_of`), without the spans' input, and the same as with export on
for every kind of stored call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import generate_latest

from smoltbot.core.sessions import SubAgent, TurnStart
from smoltbot.core.usage import TokenUsage
from smoltbot.observer.accounting import ExchangeFacts
from smoltbot.observer.metrics import ObserverMetrics
from smoltbot.observer.otel.exporter import SpanShipper
from smoltbot.observer.otel.telemetry import ExchangeTelemetry
from smoltbot.observer.queue import Finished, StoredTrace

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class _Nowhere(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _facts(model: str, usage: TokenUsage) -> ExchangeFacts:
    return ExchangeFacts(api="openai.chat" if model.startswith("gpt") else "anthropic.messages", model=model,
                         usage=usage, session_rung="x-smoltbot-session", sub_agent=SubAgent(),
                         turn=TurnStart(True, 1))


def _finished(index: int, observation: dict[str, Any], facts: ExchangeFacts | None,
              kinds: tuple[str, ...] = ("reply",), agent_id: str = "smolt-a") -> Finished:
    exchange_id = f"{index:032x}"
    traces = [StoredTrace({
        "trace_id": f"tr-{exchange_id}-{position}", "agent_id": agent_id,
        "action": {"type": "tool_call" if kind == "tool" else "reply", "name": "read_file"},
        "context": {"session_id": "sess-1", "conversation_turn": 2,
                    "metadata": {"exchange_id": exchange_id, "decision_kind": kind,
                                 "tool_use_id": f"t{position}"}},
        "observation": observation, "verification": {"verified": True, "violations": []},
    }) for position, kind in enumerate(kinds)]
    return Finished(exchange_id, "0" * 64, agent_id, "sess-1", traces, facts=facts)


def _calls() -> list[Finished]:
    def at(seconds: float) -> str:
        return (T0 + timedelta(seconds=seconds)).isoformat()

    usage = TokenUsage("anthropic", input=10, cache_read=900, cache_write_5m=20, output=40)
    return [
        # A tool call and a reply, with usage.
        _finished(1, {"outcome": "complete", "model": "claude-opus-4-8", "exchange_started_at": at(0),
                      "exchange_ended_at": at(1.5), "record_kind": "decision"},
                  _facts("claude-opus-4-8", usage), kinds=("tool", "reply")),
        # A failure: error_type, and the usage it reported.
        _finished(2, {"outcome": "upstream_error", "exchange_started_at": at(0),
                      "exchange_ended_at": at(0.2), "record_kind": "decision"},
                  _facts("claude-opus-4-8", TokenUsage("anthropic", input=5))),
        # Another provider, the model from the facts, the output alone reported.
        _finished(3, {"outcome": "complete", "exchange_started_at": at(0), "exchange_ended_at": at(3)},
                  _facts("gpt-5", TokenUsage("openai", output=7))),
        # No usage reported; only the end is known.
        _finished(4, {"outcome": "complete", "model": "claude-opus-4-8", "exchange_ended_at": at(2)},
                  _facts("claude-opus-4-8", TokenUsage("anthropic"))),
        # Only when it was observed: a duration of zero.
        _finished(5, {"outcome": "capture_failed", "observed_at": at(4), "record_kind": "minimal",
                      "request_path": "/v1/messages"}, None),
        # API activity: no GenAI operation.
        _finished(6, {"outcome": "complete", "record_kind": "activity", "exchange_started_at": at(0),
                      "exchange_ended_at": at(0.1), "request_path": "/v1/models"}, None),
        # A refused credential leaves no trace.
        Finished(f"{7:032x}", "0" * 64, "", None, []),
    ]


def _histograms(metrics: ObserverMetrics) -> list[str]:
    return sorted(line for line in generate_latest(metrics.registry).decode().splitlines()
                  if line.startswith("gen_ai_client_") and "_created{" not in line)


def test_the_histograms_are_the_same_with_export_off_as_with_it_on() -> None:
    off = ExchangeTelemetry(ObserverMetrics())
    shipper = SpanShipper(_Nowhere(), max_queue=10_000, max_batch=512)
    on = ExchangeTelemetry(ObserverMetrics(), shipper)
    try:
        for telemetry in (off, on):
            telemetry.committed(_calls(), {})
            telemetry.committed(_calls()[:2], {})  # processed again: counted again, as before
    finally:
        shipper.close(5)
    assert off.metrics.build_failures == on.metrics.build_failures == 0
    seen = _histograms(off.metrics)
    assert seen == _histograms(on.metrics)
    counts = {line.split(" ")[0]: float(line.split(" ")[1]) for line in seen if "_count{" in line}

    def duration(error: str, model: str = "claude-opus-4-8") -> float:
        return counts[f'gen_ai_client_operation_duration_seconds_count{{error_type="{error}",'
                      f'gen_ai_operation_name="chat",gen_ai_provider_name="anthropic",'
                      f'gen_ai_response_model="{model}"}}']

    assert duration("") == 3
    assert duration("upstream_error") == 2
    assert duration("capture_failed", model="") == 1
    assert counts['gen_ai_client_token_usage_count{gen_ai_operation_name="chat",gen_ai_provider_name='
                  '"anthropic",gen_ai_response_model="claude-opus-4-8",gen_ai_token_type="input"}'] == 4
    # The API activity call is no GenAI operation: no series without a model and an error.
    assert not any('error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="anthropic",'
                   'gen_ai_response_model=""' in line for line in seen)
