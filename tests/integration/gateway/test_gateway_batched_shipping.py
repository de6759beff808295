"""Batched shipping: exchanges ready together go to the Observer in one Ingest message and come
back with one ack each; every exchange arrives exactly once, from a new observer or an old one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from smoltbot.core.settings import Settings
from smoltbot.observer.intake import validate
from smoltbot.v1 import observer_service_pb2 as pb
from smoltbot.v1 import observer_service_pb2_grpc
from tests.integration.gateway.helpers import Services, metrics_of, unused_address, wait_for
from tests.integration.gateway.test_gateway_shipping import burst

pytestmark = pytest.mark.timeout(90)


async def test_a_backlog_goes_to_the_observer_in_batches_and_arrives_exactly_once(
        services: Services, start, gateway_settings: Settings) -> None:
    registry = await services.registry()
    observer_address = unused_address()
    gateway = await start(registry=f"127.0.0.1:{registry.port}", observer=observer_address)
    count = 24
    await burst(gateway, count)
    assert gateway.gateway.spool.depth == count

    observer = await services.observer(observer_address)
    await wait_for(lambda: gateway.gateway.spool.depth == 0, 30, "the spool to drain")
    shipper = gateway.gateway.shipper
    assert shipper.batches >= 1, "the backlog went one exchange per message"
    assert shipper.acked == count
    assert sum((await observer.components.queue.exchange_counts()).values()) == count
    metrics = await metrics_of(gateway)
    assert metrics['smoltbot_gateway_exchanges_acked_total{status="accepted"}'] == count


class _PreBatchObserver(observer_service_pb2_grpc.ObserverServiceServicer):
    """Ingest as observers answered before batches: one reply per request, for its `exchange`
    alone (the real single-form validation, so a batch reads as "carries no exchange")."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.requests = 0

    async def Ingest(self, request_iterator: AsyncIterator[pb.IngestRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.IngestResponse]:
        async for request in request_iterator:
            self.requests += 1
            exchange_id = request.exchange.exchange_id
            problem = validate(pb.IngestRequest(exchange=request.exchange) if request.HasField("exchange")
                               else pb.IngestRequest())
            if problem:
                yield pb.IngestResponse(exchange_id=exchange_id, status=pb.INGEST_STATUS_REJECTED,
                                        message=problem)
                continue
            duplicate = exchange_id in self.stored
            self.stored.append(exchange_id)
            yield pb.IngestResponse(exchange_id=exchange_id, status=pb.INGEST_STATUS_DUPLICATE if duplicate
                                    else pb.INGEST_STATUS_ACCEPTED)


async def test_an_observer_from_before_batches_gets_every_exchange_one_by_one(
        services: Services, start) -> None:
    registry = await services.registry()
    observer_address = unused_address()
    gateway = await start(registry=f"127.0.0.1:{registry.port}", observer=observer_address)
    count = 12
    await burst(gateway, count)

    old = _PreBatchObserver()
    server = grpc.aio.server()
    observer_service_pb2_grpc.add_ObserverServiceServicer_to_server(old, server)
    server.add_insecure_port(observer_address)
    await server.start()
    try:
        await wait_for(lambda: gateway.gateway.spool.depth == 0, 30, "the spool to drain")
    finally:
        await server.stop(0)
    shipper = gateway.gateway.shipper
    assert shipper.batching is False
    assert sorted(old.stored) == sorted(set(old.stored)) and len(old.stored) == count
    assert shipper.rejected == 0 and shipper.set_aside == 0
