"""The observer's Prometheus metrics, in a registry of its own (several observers in one process,
as in tests, never share one).

* `gen_ai_client_token_usage` and `gen_ai_client_operation_duration_seconds`: the GenAI semantic
  conventions' client histograms (`observer.otel.mapping.GENAI_SEMCONV`), with their buckets and
  attributes, named as OpenTelemetry's Prometheus compatibility rules name them (dots to
  underscores, the unit "s" as `_seconds`, "{token}" dropped). Observed from the exchanges the
  observer stores (the gateway sees the calls but reads no usage), once per exchange.
* the exchange queue by state (pending, processing, failed: failed exchanges are the observer's
  dead letters, stored as processing_failed traces), read from the database per scrape over an
  index range of those states (the done exchanges, all of history, are not counted: how many this
  observer processed is `smoltbot_observer_exchanges_processed`);
* what processing counted (exchanges stored, refused credentials, unproven callers);
* what retention deleted, per agent (from the database, so every observer's batches count), and
  the raw payloads this observer expired;
* OTLP export: spans submitted, exported, dropped by reason, queued, whether the endpoint is up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from smoltbot.observer.otel.mapping import provider_name
from smoltbot.observer.queue import QUEUE_STATES

if TYPE_CHECKING:
    from smoltbot.observer.otel.exporter import SpanShipper
    from smoltbot.observer.otel.mapping import ExchangeExport
    from smoltbot.observer.processor import Processor
    from smoltbot.observer.queue import ExchangeQueue
    from smoltbot.observer.retention import Retention
    from smoltbot.observer.retention_store import AgentRetention

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "ObserverMetrics"]

#: The semantic conventions' advice for gen_ai.client.token.usage and .operation.duration.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: gen_ai.request.model is left out: it is known only when the payload is read again (export on),
#: and a label that depends on a setting would split the series.
_GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_response_model")


class _Live(Collector):
    """Counters that live elsewhere (processor, span shipper), read at scrape time."""

    def __init__(self, metrics: ObserverMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        processor = self._metrics.processor
        if processor is not None:
            for name, value, text in (
                ("smoltbot_observer_exchanges_processed", processor.processed,
                 "Exchanges whose traces this observer stored."),
                ("smoltbot_observer_auth_rejected", processor.auth_rejected,
                 "Exchanges the upstream refused (401/403): counted, never traced."),
                ("smoltbot_observer_unproven", processor.unproven,
                 "Exchanges no upstream answered, from a credential no agent has: counted, never traced."),
            ):
                yield CounterMetricFamily(name, text, value=value)
        counts = self._metrics.queue_states
        if counts is not None:  # unknown during a database outage: absent, not zero
            states = GaugeMetricFamily("smoltbot_observer_exchanges", "Exchanges in the queue by state "
                                       "(failed: set aside as processing_failed traces; done "
                                       "exchanges are not counted).", labels=["state"])
            for state in QUEUE_STATES:
                states.add_metric([state], counts.get(state, 0))
            yield states
        retained = self._metrics.retention_states
        if retained is not None:  # from the database at each scrape: every observer's deletions
            traces = CounterMetricFamily(
                "smoltbot_retention_deleted_traces",
                "Traces retention deleted (past the card's audit.retention_days), per agent.",
                labels=["agent_id"])
            rows = CounterMetricFamily(
                "smoltbot_retention_deleted_rows",
                "Rows retention deleted (traces, violations, usage, drift, tool executions, exchange "
                "records), per agent.", labels=["agent_id"])
            for agent in retained:
                traces.add_metric([agent.agent_id], agent.deleted_traces)
                rows.add_metric([agent.agent_id], agent.deleted_rows)
            yield traces
            yield rows
        if self._metrics.retention is not None:
            yield CounterMetricFamily("smoltbot_retention_payloads_expired", "Raw exchange payloads this "
                                      "observer deleted after SMOLTBOT_PAYLOAD_TTL_HOURS.",
                                      value=self._metrics.retention.payloads_expired)
        shipper = self._metrics.shipper
        yield GaugeMetricFamily("smoltbot_otel_export_enabled", "1 when OTLP span export is on.",
                                value=1 if shipper is not None else 0)
        if shipper is None:
            return
        stats = shipper.stats
        yield CounterMetricFamily("smoltbot_otel_spans_submitted", "Spans handed to OTLP export.",
                                  value=stats.submitted)
        yield CounterMetricFamily("smoltbot_otel_spans_exported", "Spans the OTLP endpoint took.",
                                  value=stats.exported)
        dropped = CounterMetricFamily("smoltbot_otel_spans_dropped", "Spans not exported, by reason "
                                      "(the stored traces are not affected).", labels=["reason"])
        dropped.add_metric(["queue_full"], stats.dropped_queue_full)
        dropped.add_metric(["export_failed"], stats.dropped_export_failed)
        dropped.add_metric(["build_failed"], self._metrics.build_failures)
        yield dropped
        yield GaugeMetricFamily("smoltbot_otel_queue_depth", "Spans waiting for export.", value=stats.queued)
        yield GaugeMetricFamily("smoltbot_otel_endpoint_up", "0 while the OTLP endpoint does not take spans.",
                                value=0 if stats.endpoint_down else 1)


class ObserverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.token_usage = Histogram(
            "gen_ai_client_token_usage", "Tokens used per model call (GenAI semantic conventions; input "
            "includes cache reads and writes).", [*_GENAI_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS, registry=self.registry)
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "Duration of model calls as the gateway timed "
            "them (GenAI semantic conventions).", [*_GENAI_LABELS, "error_type"],
            buckets=DURATION_BUCKETS, registry=self.registry)
        self.processor: Processor | None = None
        self.shipper: SpanShipper | None = None
        self.queue: ExchangeQueue | None = None
        #: Exchanges by state at the last scrape; None when the database could not say.
        self.queue_states: dict[str, int] | None = None
        self.retention: Retention | None = None
        #: What retention deleted per agent, at the last scrape (None: unknown).
        self.retention_states: list[AgentRetention] | None = None
        #: Exchanges whose spans could not be built (logged; counted as dropped spans).
        self.build_failures = 0
        ProcessCollector(registry=self.registry)
        self.registry.register(_Live(self))

    def observe(self, exchange: ExchangeExport) -> None:
        """One stored model call into the two GenAI histograms."""
        labels = ("chat", provider_name(exchange.provider), exchange.response_model or "")
        seconds = (exchange.ended_at - exchange.started_at).total_seconds()
        self.duration.labels(*labels, exchange.error_type or "").observe(max(seconds, 0.0))
        usage = exchange.usage
        if usage is None:
            return
        parts = [usage.input, usage.cache_read, usage.cache_write]
        if any(part is not None for part in parts):
            self.token_usage.labels(*labels, "input").observe(sum(part or 0 for part in parts))
        if usage.output is not None:
            self.token_usage.labels(*labels, "output").observe(usage.output)

    async def render(self) -> bytes:
        if self.queue is not None:
            try:
                self.queue_states = await self.queue.queue_counts()
            except Exception:  # noqa: BLE001 - a scrape during a database outage still answers
                self.queue_states = None
        if self.retention is not None:
            try:
                self.retention_states = await self.retention.store.states()
            except Exception:  # noqa: BLE001 - as above
                self.retention_states = None
        return generate_latest(self.registry)
