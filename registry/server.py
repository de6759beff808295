"""The Registry process: storage, migrations, domain objects and the gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exc

from smoltbot.core.errors import Unavailable
from smoltbot.core.grpc_server import GrpcServer, new_grpc_server, run_until_signalled
from smoltbot.core.metrics_http import MetricsEndpoint
from smoltbot.core.settings import Settings
from smoltbot.core.storage import migrate, open_database
from smoltbot.core.tls import TlsConfig
from smoltbot.registry.agents import Agents
from smoltbot.registry.cards import Cards
from smoltbot.registry.metrics import RegistryMetrics
from smoltbot.registry.servicer import RegistryServicer
from smoltbot.registry.sessions import Sessions
from smoltbot.v1 import registry_service_pb2, registry_service_pb2_grpc

__all__ = ["SERVICE_NAME", "RegistryParts", "build_server", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


@dataclass(frozen=True)
class RegistryParts:
    """The running parts of a Registry (`server.components`), for tests."""

    metrics: RegistryMetrics
    #: The /metrics HTTP site (None: `registry_metrics_port` 0).
    metrics_endpoint: MetricsEndpoint | None = None


async def build_server(settings: Settings, *, address: str | None = None) -> GrpcServer[RegistryParts]:
    """A Registry bound to `address` (default `settings.registry_address`), not started yet.

    Opens and migrates the database first. `server.port` is the bound port; `server.stop()`
    writes pending touches and closes the database. `settings.registry_touch_interval` is how
    often coalesced TouchAgent writes are flushed.
    """
    db = open_database(settings.effective_database_url)
    endpoint: MetricsEndpoint | None = None
    try:
        try:
            await migrate(db)
        except (OSError, exc.SQLAlchemyError, Unavailable) as error:
            # OSError is what `smoltbot serve` reports as "could not start" without a traceback.
            cause = getattr(error, "orig", None) or error
            raise OSError(f"cannot use the database {db.display_url}: {cause}") from error
        cards = Cards(db, public_api_url=settings.effective_public_api_url)
        agents = Agents(db, cards.insert_default, touch_interval=settings.registry_touch_interval)
        sessions = Sessions(db, agents, idle=timedelta(minutes=settings.session_idle_minutes))
        servicer = RegistryServicer(agents, sessions, cards)
        metrics = RegistryMetrics(db, agents)

        async def on_stop() -> None:
            try:
                if endpoint is not None:
                    await endpoint.stop()
                await agents.touches.stop()
            except Exception as error:  # noqa: BLE001 - stopping goes on; the loss is logged
                logger.error("could not write %d pending agent/session touches: %s",
                             agents.touches.pending, error)
            finally:
                await db.close()

        server = new_grpc_server(
            address or settings.registry_address,
            [SERVICE_NAME],
            lambda grpc_server: registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
                servicer, grpc_server),
            on_stop=on_stop,
            tls=TlsConfig.from_settings(settings), health_port=settings.grpc_health_port,
            on_draining=cards.feed.close,
        )
        if settings.registry_metrics_port:
            endpoint = MetricsEndpoint(metrics.render, settings.metrics_host, settings.registry_metrics_port,
                                       what="registry")
            await endpoint.start()
        registry = server.with_components(RegistryParts(metrics, endpoint))
    except BaseException:
        await db.close()
        raise
    agents.touches.start()
    logger.info("registry using %s", db.display_url)
    return registry


async def serve(settings: Settings) -> None:
    """Runs the Registry until SIGINT/SIGTERM."""
    server = await build_server(settings)
    host = (settings.registry_address.rpartition(":")[0] or "0.0.0.0").strip("[]")
    logger.info("registry listening on %s:%d", host, server.port)
    await run_until_signalled(server)
