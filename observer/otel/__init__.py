"""smoltbot.observer.otel: stored exchanges and their verified traces as OpenTelemetry GenAI spans.

`mapping` turns an exchange (`ExchangeExport`) into spans with ids derived from ours; `exporter`
ships them over OTLP (http/protobuf or grpc, the standard OTEL_EXPORTER_OTLP_* variables) through
a bounded queue that never blocks or fails tracing and counts what it drops; `from_records` builds
an `ExchangeExport` from a stored exchange (its traces, usage and payload), and `telemetry` is the
processor's after-commit hook that feeds /metrics and, when `otel_export` is on, the exporter.
"""

from smoltbot.observer.otel.exporter import ExportStats, SpanShipper, build_span_exporter, otlp_protocol
from smoltbot.observer.otel.mapping import (
    GENAI_SEMCONV,
    ExchangeExport,
    ToolCallExport,
    TurnKey,
    Verdict,
    content_capture_enabled,
    exchange_spans,
    turn_span,
)

__all__ = [
    "GENAI_SEMCONV",
    "ExchangeExport",
    "ExportStats",
    "SpanShipper",
    "ToolCallExport",
    "TurnKey",
    "Verdict",
    "build_span_exporter",
    "content_capture_enabled",
    "exchange_spans",
    "otlp_protocol",
    "turn_span",
]
