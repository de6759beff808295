"""One bad exchange never stops the others: what the real observer cannot take (rejected, too large
for its transport) is retried a bounded number of times, set aside on disk (0600), counted,
shown in /health, recorded by a minimal record, and the stream moves on."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from smoltbot.core.ids import new_exchange_id
from smoltbot.core.settings import Settings
from smoltbot.core.tls import client_tls
from smoltbot.gateway.dead_letter import DeadLetters
from smoltbot.gateway.shipper import Shipper
from smoltbot.gateway.spool import Spool
from smoltbot.v1 import exchange_pb2
from tests.integration.gateway.helpers import Services, metrics_of, unused_address, wait_for

pytestmark = pytest.mark.timeout(120)

AGENT_HASH = "ab" * 32


def exchange(agent_hash: str = AGENT_HASH) -> exchange_pb2.Exchange:
    record = exchange_pb2.Exchange(exchange_id=new_exchange_id(), agent_hash=agent_hash)
    record.request.method, record.request.path = "POST", "/v1/messages"
    record.timings.started_at.GetCurrentTime()
    return record


async def test_a_rejected_exchange_is_retried_then_set_aside_and_the_others_go_through(
        services: Services, gateway_settings: Settings, tmp_path: Path) -> None:
    observer = await services.observer()
    address = f"127.0.0.1:{observer.port}"
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.open()
    letters = DeadLetters(tmp_path / "dead-letter")
    letters.open()
    set_aside: list[tuple[str, str]] = []
    shipper = Shipper(spool, address, tls=client_tls(gateway_settings, address), dead_letters=letters,
                      max_attempts=3, on_set_aside=lambda eid, _payload, why: set_aside.append((eid, why)))
    shipper.start()
    good = [exchange() for _ in range(3)]
    bad = exchange(agent_hash="")  # the observer answers REJECTED
    for record in (good[0], bad, good[1], good[2]):
        shipper.submit(record)
    try:
        await wait_for(lambda: spool.depth == 0, 30, "the spool to drain")
    finally:
        await shipper.stop()
    assert sum((await observer.components.queue.exchange_counts()).values()) == 3
    assert shipper.rejected == 3 and shipper.set_aside == 1
    assert set_aside == [(bad.exchange_id, set_aside[0][1])] and "rejected" in set_aside[0][1]
    stored = letters.directory / f"{bad.exchange_id}.ingest"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(letters.directory.stat().st_mode) == 0o700
    assert bad.exchange_id.encode() in stored.read_bytes()
    assert "3 attempts" in (letters.directory / f"{bad.exchange_id}.reason").read_text()


# aiohttp warns when the relay hands it a body over 1 MiB as bytes (gateway/proxy.py's business).
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
async def test_an_exchange_too_large_for_the_observer_is_set_aside_and_recorded_minimally(
        services: Services, start, tmp_path: Path) -> None:
    # A gateway configured for larger records than the observer takes: the observer's transport
    # refuses the record (RESOURCE_EXHAUSTED), which used to break the stream on every resend.
    registry = await services.registry()
    observer = await services.observer()
    big = 256 * 1024 * 1024
    gateway = await start(registry=f"127.0.0.1:{registry.port}", observer=f"127.0.0.1:{observer.port}",
                          max_exchange_bytes=big, max_request_bytes=big)
    url = gateway.base_url + "/anthropic/v1/messages"
    small = {"model": "claude-opus-4-7", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    huge = json.dumps({**small, "messages": [{"role": "user", "content": "x" * (100 * 1024 * 1024)}]})
    async with httpx.AsyncClient(timeout=60) as http:
        first = await http.post(url, content=huge, headers={"x-api-key": "sk-test-huge",
                                                            "content-type": "application/json"})
        assert first.status_code == 413  # the stand-in's limit: relayed unchanged
        for _ in range(3):
            reply = await http.post(url, json=small, headers={"x-api-key": "sk-test-small"})
            assert reply.status_code == 200
    await wait_for(lambda: gateway.gateway.spool.depth == 0, 60, "every record to be acked or set aside")
    # Four calls, four records: three whole, one minimal that says what failed.
    assert sum((await observer.components.queue.exchange_counts()).values()) == 4
    shipper = gateway.gateway.shipper
    assert shipper.set_aside == 1
    letters = list(gateway.gateway.dead_letters.directory.glob("*.reason"))
    assert len(letters) == 1 and "RESOURCE_EXHAUSTED" in letters[0].read_text()
    metrics = await metrics_of(gateway)
    assert metrics["smoltbot_gateway_exchanges_set_aside_total"] == 1
    assert metrics["smoltbot_gateway_capture_failures_total"] == 1
    async with httpx.AsyncClient() as http:
        health = (await http.get(gateway.base_url + "/health")).json()
    assert health["dead_letter"]["count"] == 1


async def test_a_record_over_the_transport_limit_is_never_sent(services: Services, gateway_settings: Settings,
                                                               tmp_path: Path) -> None:
    address = unused_address()
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.open()
    letters = DeadLetters(tmp_path / "dead-letter")
    letters.open()
    shipper = Shipper(spool, address, tls=client_tls(gateway_settings, address), dead_letters=letters,
                      max_payload_bytes=10_000)
    oversized = exchange()
    oversized.request.body = b"z" * 20_000
    shipper.submit(oversized)
    shipper.submit(exchange())
    assert spool.depth == 1 and letters.count == 1 and shipper.set_aside == 1
    await spool.close()
