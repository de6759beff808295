"""The Observer process: storage, the exchange queue and its workers, drift watch, gRPC server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

import grpc

from smoltbot.core.grpc_server import GrpcServer, grpc_message_limit, new_grpc_server, run_until_signalled
from smoltbot.core.metrics_http import MetricsEndpoint
from smoltbot.core.settings import Settings
from smoltbot.core.storage import migrate, open_database
from smoltbot.core.tls import TlsConfig
from smoltbot.observer.alerts.servicer import AlertServicer
from smoltbot.observer.alerts.store import AlertStore
from smoltbot.observer.alerts.subscriptions import Subscriptions
from smoltbot.observer.alerts.worker import AlertWorker
from smoltbot.observer.analyzers import build_analyzer
from smoltbot.observer.drift_store import DriftStore
from smoltbot.observer.drift_watch import DriftWatch
from smoltbot.observer.intake import Intake
from smoltbot.observer.metrics import ObserverMetrics
from smoltbot.observer.otel.exporter import SpanShipper, otlp_protocol, resource_from_environment
from smoltbot.observer.otel.mapping import content_capture_enabled
from smoltbot.observer.otel.telemetry import ExchangeTelemetry
from smoltbot.observer.processor import Processor
from smoltbot.observer.queries import Queries
from smoltbot.observer.queue import ExchangeQueue, Finished
from smoltbot.observer.registry_client import RegistryClient
from smoltbot.observer.retention import Retention
from smoltbot.observer.retention_store import RetentionStore
from smoltbot.observer.servicer import ObserverServicer
from smoltbot.observer.trace_store import TraceStore
from smoltbot.v1 import (
    alert_service_pb2,
    alert_service_pb2_grpc,
    observer_service_pb2,
    observer_service_pb2_grpc,
)

__all__ = ["ALERT_SERVICE_NAME", "SERVICE_NAME", "ObserverParts", "ObserverServer", "build_server", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME = observer_service_pb2.DESCRIPTOR.services_by_name["ObserverService"].full_name
ALERT_SERVICE_NAME = alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name


@dataclass(frozen=True)
class ObserverParts:
    """The running parts of an Observer (`server.components`), for tests and benchmarks."""

    processor: Processor
    intake: Intake
    drift: DriftWatch
    queue: ExchangeQueue
    traces: TraceStore
    metrics: ObserverMetrics
    #: The /metrics HTTP site (None: `observer_metrics_port` 0).
    metrics_endpoint: MetricsEndpoint | None = None
    #: The alert feed and webhook sender.
    alerts: AlertWorker | None = None
    #: Retention and the integrity counters' roll-up (observer/retention.py).
    retention: Retention | None = None


#: An Observer's gRPC server, carrying its parts.
ObserverServer = GrpcServer[ObserverParts]


async def build_server(settings: Settings, *, address: str | None = None) -> ObserverServer:
    """An Observer bound to `address` (default `settings.observer_address`), not started yet;
    its workers already run (they only need the database).

    Opens and migrates the database first. `server.port` is the bound port; `server.stop()`
    stops intake, lets in-flight processing finish for up to `settings.observer_stop_grace`
    seconds, gives the other leased exchanges back to the queue and closes the database.
    """
    if settings.otel_export:
        # A bad protocol stops the observer here, with the variable and its values named (OSError:
        # what `smoltbot serve` reports as "could not start", without a traceback).
        try:
            otlp_protocol()
        except ValueError as error:
            raise OSError(f"SMOLTBOT_OTEL_EXPORT is on but {error}") from None
    db = open_database(settings.effective_database_url)
    registry: RegistryClient | None = None
    shipper: SpanShipper | None = None
    endpoint: MetricsEndpoint | None = None
    try:
        await migrate(db)
        queue = ExchangeQueue(db)
        traces = TraceStore(db)
        tls = TlsConfig.from_settings(settings)
        registry = RegistryClient(settings.registry_address, card_ttl=settings.observer_card_ttl, tls=tls)
        analyzer = build_analyzer(settings)
        metrics = ObserverMetrics()
        if settings.otel_export:
            shipper = SpanShipper.from_environment(max_queue=settings.otel_queue_size,
                                                   max_batch=settings.otel_batch_size)
        telemetry = ExchangeTelemetry(metrics, shipper, resource=resource_from_environment(),
                                      capture_content=content_capture_enabled())
        drift = DriftWatch(DriftStore(db), registry, settings, sweep_interval=settings.drift_sweep_interval)
        alert_store = AlertStore(db)
        alerts = AlertWorker(alert_store, settings, owner=f"alerts-{uuid.uuid4().hex[:16]}")

        def on_written(written: list[Finished]) -> None:
            drift.notify(item.agent_id for item in written)
            alerts.wake()
        processor = Processor(
            queue, registry, analyzer, settings, poll_interval=settings.observer_poll_interval,
            cpu_workers=settings.observer_cpu_workers, scrub_interval=settings.observer_scrub_interval,
            on_written=on_written,
            on_committed=telemetry.committed,
        )
        metrics.processor, metrics.queue, metrics.shipper = processor, queue, shipper
        metrics.registry.register(alerts.collector())
        intake = Intake(queue, on_stored=processor.wake)
        retention = Retention(RetentionStore(db), registry, settings)
        metrics.retention = retention
        servicer = ObserverServicer(intake, Queries(traces, registry, settings), drift, retention)
        alert_servicer = AlertServicer(Subscriptions(alert_store, registry, settings))

        def register(grpc_server: grpc.aio.Server) -> None:
            observer_service_pb2_grpc.add_ObserverServiceServicer_to_server(servicer, grpc_server)
            alert_service_pb2_grpc.add_AlertServiceServicer_to_server(alert_servicer, grpc_server)
        registry_client = registry
        span_shipper = shipper

        async def on_stop() -> None:
            try:
                await intake.stop()
                await processor.stop(settings.observer_stop_grace)
                await drift.stop()
                await retention.stop()
                await alerts.stop()
                await analyzer.close()
                await registry_client.close()
            finally:
                try:
                    if endpoint is not None:
                        await endpoint.stop()
                    if span_shipper is not None:
                        # Off the event loop: it waits (bounded) for queued spans to go out.
                        await asyncio.to_thread(span_shipper.close, 5.0)
                finally:
                    await db.close()

        server = new_grpc_server(
            address or settings.observer_address,
            [SERVICE_NAME, ALERT_SERVICE_NAME],
            register,
            on_stop,
            tls=tls,
            health_port=settings.grpc_health_port,
            # Exchanges as large as the gateway may capture (one setting for both sides).
            message_limit=grpc_message_limit(settings.max_exchange_bytes),
        )
        if settings.observer_metrics_port:
            endpoint = MetricsEndpoint(metrics.render, settings.metrics_host, settings.observer_metrics_port,
                                       what="observer")
            await endpoint.start()
        observer = server.with_components(
            ObserverParts(processor, intake, drift, queue, traces, metrics, endpoint, alerts, retention))
    except BaseException:
        if registry is not None:
            await registry.close()
        if shipper is not None:
            shipper.close(0)
        await db.close()
        raise
    intake.start()
    processor.start()
    drift.start()
    retention.start()
    alerts.start()
    logger.info("observer using %s (analyzer: %s, concurrency %d)", db.display_url, analyzer.name,
                settings.observer_concurrency)
    return observer


async def serve(settings: Settings) -> None:
    """Runs the Observer until SIGINT/SIGTERM."""
    server = await build_server(settings)
    host = (settings.observer_address.rpartition(":")[0] or "0.0.0.0").strip("[]")
    logger.info("observer listening on %s:%d", host, server.port)
    await run_until_signalled(server)
