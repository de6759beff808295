"""The API's gRPC backends: the Registry and the Observer, called through their generated,
typed stubs (`await registry.GetAgent(request)` is a `GetAgentResponse` to a type checker).

Every call on their channels goes through one client interceptor, `BackendCalls`: it gives the
call the API's deadline (unless the caller chose one) and turns any failure into a
`BackendError` naming the service, so an outage reads "the registry service is unavailable"
(`smoltbot.api.errors`). The request id goes with every call too, as it does on every smoltbot
channel (`smoltbot.core.request_ids`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from smoltbot.api.errors import BackendError
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import alert_service_pb2_grpc, observer_service_pb2_grpc, registry_service_pb2_grpc

if TYPE_CHECKING:
    # The stubs' grpc.aio flavour exists for type checkers only (mypy-protobuf); at run time the
    # one stub class serves both kinds of channel.
    from smoltbot.v1.alert_service_pb2_grpc import AlertServiceAsyncStub as AlertStub
    from smoltbot.v1.observer_service_pb2_grpc import ObserverServiceAsyncStub as ObserverStub
    from smoltbot.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub as RegistryStub
else:
    from smoltbot.v1.alert_service_pb2_grpc import AlertServiceStub as AlertStub
    from smoltbot.v1.observer_service_pb2_grpc import ObserverServiceStub as ObserverStub
    from smoltbot.v1.registry_service_pb2_grpc import RegistryServiceStub as RegistryStub

__all__ = ["AlertStub", "BackendCalls", "Backends", "ObserverStub", "RegistryStub"]


class BackendCalls(grpc.aio.UnaryUnaryClientInterceptor):
    """Deadline and error translation for every unary call to one service (all the API makes)."""

    def __init__(self, service: str, address: str, timeout: float) -> None:
        self.service = service
        self.address = address
        self.timeout = timeout

    async def intercept_unary_unary(self, continuation: Callable[..., Awaitable[Any]],
                                    client_call_details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        details = client_call_details
        if details.timeout is None:
            details = grpc.aio.ClientCallDetails(details.method, self.timeout, details.metadata,
                                                 details.credentials, details.wait_for_ready)
        try:
            call = await continuation(details, request)
            return await call
        except grpc.aio.AioRpcError as error:
            raise BackendError(
                self.service, self.address, error.code(), error.details() or "", error
            ) from None
        except grpc.aio.UsageError as error:  # the channel was closed under us (shutdown)
            raise BackendError(self.service, self.address, grpc.StatusCode.UNAVAILABLE, str(error)) from None


@dataclass
class Backends:
    """The two services as the routes use them, and their channels (health probes, closing)."""

    registry: RegistryStub
    observer: ObserverStub
    registry_channel: grpc.aio.Channel
    observer_channel: grpc.aio.Channel
    #: The Observer process also serves AlertService (webhooks), on the same channel.
    alerts: AlertStub = field(init=False)

    def __post_init__(self) -> None:
        self.alerts = alert_service_pb2_grpc.AlertServiceStub(self.observer_channel)

    @classmethod
    def open(cls, registry_address: str, observer_address: str, tls: TlsConfig, timeout: float) -> Backends:
        registry_channel = open_channel(registry_address, tls,
                                        interceptors=[BackendCalls("registry", registry_address, timeout)])
        observer_channel = open_channel(observer_address, tls,
                                        interceptors=[BackendCalls("observer", observer_address, timeout)])
        return cls(registry=registry_service_pb2_grpc.RegistryServiceStub(registry_channel),
                   observer=observer_service_pb2_grpc.ObserverServiceStub(observer_channel),
                   registry_channel=registry_channel, observer_channel=observer_channel)

    async def close(self, grace: float = 1.0) -> None:
        await asyncio.gather(
            self.registry_channel.close(grace=grace), self.observer_channel.close(grace=grace)
        )
