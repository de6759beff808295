"""What every smoltbot gRPC server has in common: message limits, health, reflection,
error mapping, transport security (TLS, mutual TLS, plaintext only on loopback; see
`smoltbot.core.tls`), the service credential on every call but health checks (see
`smoltbot.core.service_auth`) and a graceful stop."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from smoltbot.core.errors import SmoltbotError, grpc_status_for
from smoltbot.core.request_ids import ReadRequestId
from smoltbot.core.service_auth import RequireServiceCredential
from smoltbot.core.settings import Settings
from smoltbot.core.signals import stop_signals
from smoltbot.core.tls import TlsConfig

__all__ = [
    "GRPC_MESSAGE_LIMIT",
    "GrpcServer",
    "grpc_errors",
    "grpc_message_limit",
    "new_grpc_server",
    "run_until_signalled",
]

logger = logging.getLogger(__name__)

#: Room for what wraps a record on the wire (IngestRequest, other RPCs' fields) beyond the record itself.
_ENVELOPE_BYTES = 1024 * 1024


def grpc_message_limit(max_exchange_bytes: int) -> int:
    """The gRPC message limit for records of up to `max_exchange_bytes` (Settings.max_exchange_bytes,
    which also caps what the gateway captures): one setting, so no record exceeds the transport."""
    return max_exchange_bytes + _ENVELOPE_BYTES


GRPC_MESSAGE_LIMIT = grpc_message_limit(Settings.model_fields["max_exchange_bytes"].default)
_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # gRPC sets SO_REUSEPORT by default, so a second server on a busy port would start and
    # silently share it; we want "address in use" instead.
    ("grpc.so_reuseport", 0),
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
C = TypeVar("C")
C2 = TypeVar("C2")


class GrpcServer(Generic[C]):
    """A started-or-not grpc.aio server with health and reflection, and the port it bound.

    `health_only` is the plaintext server answering grpc.health.v1 alone, when `health_port`
    asked for one. `components` are the service's running parts (its queue, workers, ...), for
    tests and benchmarks to look at; `new_grpc_server` gives None, `with_components` sets them.
    """

    def __init__(self, server: grpc.aio.Server, port: int, health_servicer: health.aio.HealthServicer,
                 service_names: Iterable[str], on_stop: Callable[[], Awaitable[None]] | None = None, *,
                 health_only: grpc.aio.Server | None = None, components: C,
                 on_draining: Callable[[], None] | None = None) -> None:
        self.server = server
        self.port = port
        self.health = health_servicer
        self.service_names = list(service_names)
        self.health_only = health_only
        self.components = components
        self._on_stop = on_stop
        self._on_draining = on_draining

    def with_components(self, components: C2) -> GrpcServer[C2]:
        """The same server (not started yet), carrying `components`."""
        return GrpcServer(self.server, self.port, self.health, self.service_names, self._on_stop,
                          health_only=self.health_only, components=components,
                          on_draining=self._on_draining)

    async def start(self) -> None:
        await self.server.start()
        if self.health_only is not None:
            await self.health_only.start()
        for name in [*self.service_names, ""]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 5.0) -> None:
        """Health goes NOT_SERVING first, so balancers drain us, then in-flight RPCs get `grace`."""
        for name in [*self.service_names, ""]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._on_draining is not None:
            # Streams that never end by themselves (the Registry's card watches) are ended now,
            # so they neither hold the stop for the whole grace nor end in an abort.
            self._on_draining()
        await self.server.stop(grace)
        if self.health_only is not None:
            await self.health_only.stop(0)
        if self._on_stop is not None:
            await self._on_stop()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def new_grpc_server(address: str, service_names: Iterable[str],
                    register: Callable[[grpc.aio.Server], None],
                    on_stop: Callable[[], Awaitable[None]] | None = None, *,
                    tls: TlsConfig | None = None, health_port: int = 0,
                    message_limit: int = GRPC_MESSAGE_LIMIT,
                    on_draining: Callable[[], None] | None = None) -> GrpcServer[None]:
    """Builds a server bound to `address` ("host:port", port 0 for an ephemeral one).

    `tls` (default: none) decides TLS or mutual TLS; without a certificate the server is
    plaintext and refuses any address but loopback unless `tls.allow_insecure`. When it carries
    a service credential, every call but health checks must present it (UNAUTHENTICATED).
    `health_port` > 0 also serves the health service alone, in plaintext, on that port of every
    interface, for probes that cannot speak TLS (Kubernetes' `grpc:` probe).
    """
    tls = tls or TlsConfig()
    tls.check_bind(address)
    credentials = tls.server_credentials()
    limits = [
        ("grpc.max_receive_message_length", message_limit),
        ("grpc.max_send_message_length", message_limit),
    ]
    # The request id first, so that even a refused call's log line carries it.
    interceptors: list[grpc.aio.ServerInterceptor] = [ReadRequestId()]
    if tls.credential is not None:
        interceptors.append(RequireServiceCredential(tls.credential))
    server = grpc.aio.server(options=[*limits, *_OPTIONS], interceptors=interceptors)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = _bind(server, address, credentials)
    if port == 0:
        raise OSError(f"could not bind gRPC server to {address}: address in use or not available")
    health_only: grpc.aio.Server | None = None
    if health_port:
        health_only = grpc.aio.server(options=[*limits, *_OPTIONS])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_only)
        if _bind(health_only, f"[::]:{health_port}", None) == 0:
            raise OSError(
                f"could not bind the gRPC health port {health_port}: address in use or not available"
            )
    logger.debug("gRPC server on %s: %s, %s", address,
                 "mutual TLS" if tls.requires_client_cert else "TLS" if tls.serves_tls else "plaintext",
                 "service credential required" if tls.credential is not None else "open to any caller")
    return GrpcServer(server, port, health_servicer, names, on_stop, health_only=health_only, components=None,
                      on_draining=on_draining)


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's way of saying the bind failed
        return 0


def grpc_errors(method: F) -> F:
    """Maps domain errors to rich gRPC statuses; anything unexpected is logged and INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except SmoltbotError as error:
            await context.abort_with_status(grpc_status_for(error))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return wrapper  # type: ignore[return-value]


async def run_until_signalled(server: GrpcServer[Any], grace: float = 5.0) -> None:
    """Starts the server and stops it gracefully on SIGINT/SIGTERM."""
    await server.start()
    try:
        async with stop_signals() as stop:
            await stop.wait()
    finally:
        await server.stop(grace)
