"""The Observer process: storage, the exchange queue and its workers, drift watch, gRPC server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from smoltbot.core.grpc_server import GrpcServer, new_grpc_server, run_until_signalled
from smoltbot.core.settings import Settings
from smoltbot.core.storage import migrate, open_database
from smoltbot.core.tls import TlsConfig
from smoltbot.observer.drift_watch import DriftWatch
from smoltbot.observer.intake import Intake
from smoltbot.observer.model_analyzer import build_analyzer
from smoltbot.observer.processor import Processor
from smoltbot.observer.queries import Queries
from smoltbot.observer.registry_client import RegistryClient
from smoltbot.observer.servicer import ObserverServicer
from smoltbot.observer.store import Store
from smoltbot.v1 import observer_service_pb2, observer_service_pb2_grpc

__all__ = ["SERVICE_NAME", "ObserverServer", "build_server", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME = observer_service_pb2.DESCRIPTOR.services_by_name["ObserverService"].full_name


class ObserverServer(GrpcServer):
    """A `GrpcServer` that also exposes its running parts, for tests and benchmarks."""

    def __init__(self, base: GrpcServer, on_stop: Callable[[], Awaitable[None]], *, processor: Processor,
                 intake: Intake, drift: DriftWatch, store: Store) -> None:
        super().__init__(base.server, base.port, base.health, base.service_names, on_stop)
        self.processor = processor
        self.intake = intake
        self.drift = drift
        self.store = store


async def build_server(settings: Settings, *, address: str | None = None, poll_interval: float = 1.0,
                       drift_sweep_interval: float = 2.0, card_ttl: float = 5.0,
                       lease_seconds: float | None = None, stop_grace: float = 5.0,
                       cpu_workers: int | None = None, scrub_interval: float = 5.0) -> ObserverServer:
    """An Observer bound to `address` (default `settings.observer_address`), not started yet;
    its workers already run (they only need the database).

    `cpu_workers`: processes that read and analyse exchanges beside the event loop (None: one
    per core beyond the first, at most 4; 0: all inline). `scrub_interval`: least seconds
    between two WAL truncations that wipe deleted payloads (SQLite).

    Opens and migrates the database first. `server.port` is the bound port; `server.stop()`
    stops intake, lets in-flight processing finish for up to `stop_grace` seconds, gives the
    other leased exchanges back to the queue and closes the database.
    """
    db = open_database(settings.effective_database_url)
    registry: RegistryClient | None = None
    try:
        await migrate(db)
        store = Store(db)
        tls = TlsConfig.from_settings(settings)
        registry = RegistryClient(settings.registry_address, card_ttl=card_ttl, tls=tls)
        analyzer = build_analyzer(settings)
        drift = DriftWatch(db, registry, settings, sweep_interval=drift_sweep_interval)
        processor = Processor(
            store, registry, analyzer, settings, poll_interval=poll_interval, lease_seconds=lease_seconds,
            cpu_workers=cpu_workers, scrub_interval=scrub_interval,
            on_written=lambda written: drift.notify((item.agent_id, item.agent_hash) for item in written),
        )
        intake = Intake(store, on_stored=processor.wake)
        servicer = ObserverServicer(intake, Queries(db, store, registry, settings), drift)
        registry_client = registry

        async def on_stop() -> None:
            try:
                await intake.stop()
                await processor.stop(stop_grace)
                await drift.stop()
                await analyzer.close()
                await registry_client.close()
            finally:
                await db.close()

        base = new_grpc_server(
            address or settings.observer_address,
            [SERVICE_NAME],
            lambda grpc_server: observer_service_pb2_grpc.add_ObserverServiceServicer_to_server(servicer, grpc_server),
            tls=tls, health_port=settings.grpc_health_port,
        )
        observer = ObserverServer(base, on_stop, processor=processor, intake=intake, drift=drift, store=store)
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
