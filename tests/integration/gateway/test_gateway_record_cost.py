"""What cutting the record's cost per call (issue 16, round 7) must keep: a busy gateway's
exchanges wait longer and go in bigger batches while a slower moment goes back to the short
linger, and a record is measured against the limit whenever a bound of its size does not show
it within (a record too large through its headers alone is still refused)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.core.settings import Settings
from smoltbot.core.tls import client_tls
from smoltbot.gateway.capture import Capture, CaptureLimits, RecordTooLarge
from smoltbot.gateway.shipper import Shipper
from smoltbot.gateway.spool import Spool
from tests.integration.gateway.helpers import Services, wait_for
from tests.integration.gateway.test_gateway_dead_letter import exchange

pytestmark = pytest.mark.timeout(60)


async def test_after_a_batch_of_four_the_next_request_waits_the_busy_linger_and_a_small_one_does_not(
        services: Services, gateway_settings: Settings, tmp_path: Path) -> None:
    observer = await services.observer()
    address = f"127.0.0.1:{observer.port}"
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.open()
    linger, busy_linger = 0.05, 1.0
    shipper = Shipper(spool, address, tls=client_tls(gateway_settings, address), linger=linger,
                      busy_linger=busy_linger)
    shipper.start()
    try:
        await wait_for(lambda: shipper.observer_ready, 20, "the observer channel")
        shipper.submit(exchange())  # alone after a quiet moment: at once
        await wait_for(lambda: shipper.acked == 1, 20, "the first ack")
        for _ in range(4):  # within the linger: one batch of four, a busy gateway
            shipper.submit(exchange())
        await wait_for(lambda: shipper.acked == 5, 20, "the batch's acks")
        assert shipper.requests == 2 and shipper.batches == 1
        busy_since = time.monotonic()
        shipper.submit(exchange())
        await asyncio.sleep(0.3)  # past the linger, within the busy linger: still waiting
        assert shipper.requests == 2, "after a batch of four the next request went after the short linger"
        await wait_for(lambda: shipper.acked == 6, 20, "the exchange after the busy linger")
        assert time.monotonic() - busy_since >= busy_linger * 0.9
        # That request carried one exchange: the next waits the short linger again.
        slow_since = time.monotonic()
        shipper.submit(exchange())
        await wait_for(lambda: shipper.acked == 7, 20, "the exchange after the short linger")
        assert time.monotonic() - slow_since < busy_linger / 2
        assert shipper.requests == 4
    finally:
        await shipper.stop()
    assert sum((await observer.components.queue.exchange_counts()).values()) == 7


def _capture(limits: CaptureLimits, header_value: str, count: int) -> Capture:
    capture = Capture(agent_hash="a" * 64, session_hint="", method="POST", path="/v1/messages", query="",
                      request_headers=[(f"x-odd-{index}", header_value) for index in range(count)],
                      request_body=b"b" * limits.body_bytes, started_ns=time.time_ns(),
                      credential="sk-test-record-cost", limits=limits)
    capture.status = 200
    capture.response_headers = [("content-type", "application/json")]
    capture.add_chunk(b"{}")
    capture.finish(ExchangeOutcome.COMPLETE)
    return capture


def test_a_record_too_large_through_its_headers_alone_is_refused() -> None:
    # Bodies well within the limit; header values of bytes that are not UTF-8 (as aiohttp hands
    # them over: surrogate escapes) take 4 bytes a character in the record (U+FFFD and the raw byte).
    limits = CaptureLimits(record_bytes=1024 * 1024, body_bytes=512 * 1024, headers_bytes=200 * 1024)
    value = "\udce9" * 1000
    fits = _capture(limits, value, 20).to_exchange("gateway:1")
    assert fits.request.headers[0].raw_value == b"\xe9" * 1000
    assert fits.ByteSize() <= limits.record_bytes
    with pytest.raises(RecordTooLarge):
        _capture(limits, value, 190).to_exchange("gateway:1")
