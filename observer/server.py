"""The Observer process: storage, the exchange queue and its workers, drift watch, gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from smoltbot.core.grpc_server import GrpcServer, grpc_message_limit, new_grpc_server, run_until_signalled
from smoltbot.core.settings import Settings
from smoltbot.core.storage import migrate, open_database
from smoltbot.core.tls import TlsConfig
from smoltbot.observer.analyzers import build_analyzer
from smoltbot.observer.drift_store import DriftStore
from smoltbot.observer.drift_watch import DriftWatch
from smoltbot.observer.intake import Intake
from smoltbot.observer.processor import Processor
from smoltbot.observer.queries import Queries
from smoltbot.observer.queue import ExchangeQueue
from smoltbot.observer.registry_client import RegistryClient
from smoltbot.observer.servicer import ObserverServicer
from smoltbot.observer.trace_store import TraceStore
from smoltbot.v1 import observer_service_pb2, observer_service_pb2_grpc

__all__ = ["SERVICE_NAME", "ObserverParts", "ObserverServer", "build_server", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME = observer_service_pb2.DESCRIPTOR.services_by_name["ObserverService"].full_name


@dataclass(frozen=True)
class ObserverParts:
    """The running parts of an Observer (`server.components`), for tests and benchmarks."""

    processor: Processor
    intake: Intake
    drift: DriftWatch
    queue: ExchangeQueue
    traces: TraceStore


#: An Observer's gRPC server, carrying its parts.
ObserverServer = GrpcServer[ObserverParts]


async def build_server(settings: Settings, *, address: str | None = None) -> ObserverServer:
    """An Observer bound to `address` (default `settings.observer_address`), not started yet;
    its workers already run (they only need the database).

    Opens and migrates the database first. `server.port` is the bound port; `server.stop()`
    stops intake, lets in-flight processing finish for up to `settings.observer_stop_grace`
    seconds, gives the other leased exchanges back to the queue and closes the database.
    """
    db = open_database(settings.effective_database_url)
    registry: RegistryClient | None = None
    try:
        await migrate(db)
        queue = ExchangeQueue(db)
        traces = TraceStore(db)
        tls = TlsConfig.from_settings(settings)
        registry = RegistryClient(settings.registry_address, card_ttl=settings.observer_card_ttl, tls=tls)
        analyzer = build_analyzer(settings)
        drift = DriftWatch(DriftStore(db), registry, settings, sweep_interval=settings.drift_sweep_interval)
        processor = Processor(
            queue, registry, analyzer, settings, poll_interval=settings.observer_poll_interval,
            cpu_workers=settings.observer_cpu_workers, scrub_interval=settings.observer_scrub_interval,
            on_written=lambda written: drift.notify(item.agent_id for item in written),
        )
        intake = Intake(queue, on_stored=processor.wake)
        servicer = ObserverServicer(intake, Queries(traces, registry, settings), drift)
        registry_client = registry

        async def on_stop() -> None:
            try:
                await intake.stop()
                await processor.stop(settings.observer_stop_grace)
                await drift.stop()
                await analyzer.close()
                await registry_client.close()
            finally:
                await db.close()

        observer = new_grpc_server(
            address or settings.observer_address,
            [SERVICE_NAME],
            lambda grpc_server: observer_service_pb2_grpc.add_ObserverServiceServicer_to_server(
                servicer, grpc_server
            ),
            on_stop,
            tls=tls,
            health_port=settings.grpc_health_port,
            # Exchanges as large as the gateway may capture (one setting for both sides).
            message_limit=grpc_message_limit(settings.max_exchange_bytes),
        ).with_components(ObserverParts(processor, intake, drift, queue, traces))
    except BaseException:
        if registry is not None:
            await registry.close()
        await db.close()
        raise
    intake.start()
    processor.start()
    drift.start()
    logger.info("observer using %s (analyzer: %s, concurrency %d)", db.display_url, analyzer.name,
                settings.observer_concurrency)
    return observer


async def serve(settings: Settings) -> None:
    """Runs the Observer until SIGINT/SIGTERM."""
    server = await build_server(settings)
    host = (settings.observer_address.rpartition(":")[0] or "0.0.0.0").strip("[]")
    logger.info("observer listening on %s:%d", host, server.port)
    await run_until_signalled(server)
