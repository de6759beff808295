"""What the observer tells the outside about each exchange once its traces are stored: the GenAI
histograms of /metrics (always) and, when `otel_export` is on, its spans over OTLP.

`ExchangeTelemetry.committed` is the processor's `on_committed` hook: called after the transaction
that stored the traces, never inside it, and it never raises (a failure to build spans is logged
and counted as dropped; the stored record is the truth, export is a copy of it).

Turn spans: the `invoke_agent` span of a user turn is sent again, with the same span id, each
time an exchange of that turn is stored, covering the exchanges this observer has seen of it so
far (a bounded memory of recent turns). OTLP has no "span update": backends that key spans by id
(Langfuse, Phoenix) keep one; an append-only store (Jaeger, Tempo) may keep each version, all with
the same id, the last the longest. The alternative, waiting for the turn to end, needs an end
the observer cannot see (the next user message may never come).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from smoltbot.observer.metrics import ObserverMetrics
from smoltbot.observer.otel.exporter import SpanShipper
from smoltbot.observer.otel.from_records import envelope_of, export_of, figures_of
from smoltbot.observer.otel.mapping import ExchangeExport, TurnKey, exchange_spans, turn_span
from smoltbot.observer.queue import Finished

__all__ = ["ExchangeTelemetry"]

logger = logging.getLogger(__name__)

_TurnId = tuple[str, str, int]


class ExchangeTelemetry:
    def __init__(self, metrics: ObserverMetrics, shipper: SpanShipper | None = None, *,
                 resource: Resource | None = None, capture_content: bool = False,
                 remembered_turns: int = 1024) -> None:
        self.metrics = metrics
        self.shipper = shipper
        self.resource = resource or Resource.create({"service.name": "smoltbot-observer"})
        self.capture_content = capture_content
        self._turns: OrderedDict[_TurnId, dict[str, ExchangeExport]] = OrderedDict()
        self._remembered = remembered_turns
        self._build_failed_logged = False

    def committed(self, written: Sequence[Finished], payloads: Mapping[str, bytes]) -> None:
        """Stored exchanges (with the payloads they were read from, when still held)."""
        for finished in written:
            try:
                self._one(finished, payloads.get(finished.exchange_id, b""))
            except Exception:  # export is a copy; the stored record is not affected
                self.metrics.build_failures += 1
                if not self._build_failed_logged:
                    self._build_failed_logged = True
                    logger.exception("could not build the spans of exchange %s; counted as dropped "
                                     "(smoltbot_otel_spans_dropped{reason=\"build_failed\"}), logged once",
                                     finished.exchange_id)

    def _one(self, finished: Finished, payload: bytes) -> None:
        # The payload is read again only for export: the histograms need nothing beyond the traces.
        envelope = envelope_of(payload) if payload and self.shipper is not None else None
        figures = figures_of(finished, envelope)
        if figures is None:
            return
        if self.shipper is None:
            # Export off: the histograms' figures only (tool calls, verdicts and the turn's
            # memory are for spans: building them cost two thirds of this hook).
            if not figures.activity:  # API activity (GET /v1/models, ...) is no GenAI operation
                self.metrics.observe(ExchangeExport(
                    finished.exchange_id, TurnKey(finished.agent_id, finished.session_id, None),
                    figures.provider, None, figures.response_model, figures.started_at, figures.ended_at,
                    usage=figures.usage, error_type=figures.error_type))
            return
        exchange = export_of(finished, envelope, figures=figures)
        if exchange is None:
            return
        if not figures.activity:
            self.metrics.observe(exchange)
        spans: list[ReadableSpan] = exchange_spans(exchange, resource=self.resource,
                                                   capture_content=self.capture_content)
        spans.append(turn_span(self._turn_of(exchange), resource=self.resource))
        self.shipper.submit(spans)

    def _turn_of(self, exchange: ExchangeExport) -> list[ExchangeExport]:
        turn = exchange.turn
        if turn.session_id is None or turn.turn is None:
            return [exchange]
        key = (turn.agent_id, turn.session_id, turn.turn)
        seen = self._turns.pop(key, None) or {}
        # Only what the turn span reads is kept (no tool calls, content or verdicts).
        seen[exchange.exchange_id] = replace(exchange, tool_calls=(), reply_verdict=None, usage=None,
                                             input_messages=None, output_messages=None,
                                             system_instructions=None, extra_attributes={})
        self._turns[key] = seen
        while len(self._turns) > self._remembered:
            self._turns.popitem(last=False)
        return list(seen.values())
