"""The shipper sends at most one Ingest request per `linger`: exchanges that finish meanwhile go
with the next request as a batch (one request and one ack for many calls, where each cost more
than the call it recorded: issue 16), while the first exchange after a quiet moment goes at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from smoltbot.core.settings import Settings
from smoltbot.core.tls import client_tls
from smoltbot.gateway.shipper import Shipper
from smoltbot.gateway.spool import Spool
from tests.integration.gateway.helpers import Services, wait_for
from tests.integration.gateway.test_gateway_dead_letter import exchange

pytestmark = pytest.mark.timeout(60)


async def test_exchanges_of_the_next_moment_go_with_one_request_and_a_lone_one_at_once(
        services: Services, gateway_settings: Settings, tmp_path: Path) -> None:
    observer = await services.observer()
    address = f"127.0.0.1:{observer.port}"
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.open()
    linger = 1.0
    shipper = Shipper(spool, address, tls=client_tls(gateway_settings, address), linger=linger)
    shipper.start()
    try:
        await wait_for(lambda: shipper.observer_ready, 20, "the observer channel")
        started = time.monotonic()
        shipper.submit(exchange())
        await wait_for(lambda: shipper.acked == 1, 20, "the first exchange's ack")
        assert time.monotonic() - started < linger / 2, "a lone exchange waited for the linger"
        assert shipper.requests == 1
        # Three calls finishing 20 ms apart, each after the previous request went out: without
        # a linger each goes alone (the stream is idle), with one they wait and go together.
        for _ in range(3):
            await asyncio.sleep(0.02)
            shipper.submit(exchange())
        assert shipper.requests == 1
        await wait_for(lambda: spool.depth == 0, 20, "the spool to drain")
        assert shipper.requests == 2 and shipper.batches == 1 and shipper.acked == 4
        assert time.monotonic() - started >= linger
    finally:
        await shipper.stop()
    assert sum((await observer.components.queue.exchange_counts()).values()) == 4


async def test_without_a_linger_each_exchange_that_finds_the_stream_idle_goes_alone(
        services: Services, gateway_settings: Settings, tmp_path: Path) -> None:
    observer = await services.observer()
    address = f"127.0.0.1:{observer.port}"
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.open()
    shipper = Shipper(spool, address, tls=client_tls(gateway_settings, address), linger=0)
    shipper.start()
    try:
        await wait_for(lambda: shipper.observer_ready, 20, "the observer channel")
        for count in range(1, 4):
            shipper.submit(exchange())
            await wait_for(lambda: shipper.acked == count, 20, "the ack")  # noqa: B023 - awaited here
        assert shipper.requests == 3 and shipper.batches == 0
    finally:
        await shipper.stop()
