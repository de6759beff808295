"""Fail-open identity and at-least-once shipping with de-duplication: with the Registry or the
Observer down, calls succeed; every exchange reaches the Observer once it is back; the
credential is nowhere on disk or in the logs."""

from __future__ import annotations

import logging
from pathlib import Path

import anthropic
import httpx
import pytest

from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway
from tests.integration.gateway.helpers import CREDENTIAL, Services, metrics_of, unused_address, wait_for

pytestmark = pytest.mark.timeout(90)

MODEL = "claude-opus-4-7"


def messages(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"call number {n}"}]


async def burst(gateway: RunningGateway, count: int, *, bearer: bool = True) -> None:
    kwargs = {"api_key": CREDENTIAL} if bearer else {"default_headers": {"x-api-key": CREDENTIAL},
                                                    "api_key": "placeholder-overridden"}
    async with anthropic.AsyncAnthropic(base_url=gateway.base_url + "/anthropic", max_retries=0,
                                        **kwargs) as client:  # type: ignore[arg-type]
        for n in range(count):
            if n % 2:
                async with client.messages.stream(model=MODEL, max_tokens=50, messages=messages(n)) as stream:
                    await stream.get_final_message()
            else:
                await client.messages.create(model=MODEL, max_tokens=50, messages=messages(n))


async def test_registry_down_calls_still_succeed_without_identity_headers(
        services: Services, start, tmp_path: Path) -> None:
    observer = await services.observer()
    gateway = await start(registry=unused_address(), observer=f"127.0.0.1:{observer.port}")
    async with httpx.AsyncClient() as http:
        for _ in range(5):
            response = await http.post(gateway.base_url + "/anthropic/v1/messages",
                                       json={"model": MODEL, "max_tokens": 5, "messages": messages(0)},
                                       headers={"x-api-key": CREDENTIAL})
            assert response.status_code == 200
            assert "x-smoltbot-agent" not in response.headers
        health = (await http.get(gateway.base_url + "/health")).json()
    assert health["registry"]["reachable"] is False
    await wait_for(lambda: gateway.gateway.spool.depth == 0, 15, "the exchanges to be acked")


async def test_observer_down_for_a_burst_then_up_every_exchange_arrives_exactly_once(
        services: Services, start, gateway_settings: Settings) -> None:
    registry = await services.registry()
    observer_address = unused_address()
    gateway = await start(registry=f"127.0.0.1:{registry.port}", observer=observer_address)
    count = 24
    await burst(gateway, count)
    assert gateway.gateway.spool.depth == count
    spool_dir = Path(gateway_settings.home) / "spool"
    await wait_for(lambda: any(p.stat().st_size for p in spool_dir.glob("*.seg")), 5,
                   "the spool to be written")
    for path in spool_dir.iterdir():
        assert CREDENTIAL.encode() not in path.read_bytes(), f"credential in {path.name}"

    observer = await services.observer(observer_address)
    await wait_for(lambda: gateway.gateway.spool.depth == 0, 30, "the spool to drain")
    # exchange_id is the observer's primary key: N rows means every call arrived, none twice.
    assert sum((await observer.components.queue.exchange_counts()).values()) == count
    metrics = await metrics_of(gateway)
    assert metrics['smoltbot_gateway_exchanges_acked_total{status="accepted"}'] == count
    assert metrics.get('smoltbot_gateway_exchanges_acked_total{status="duplicate"}', 0) == 0
    assert metrics["smoltbot_gateway_spool_dropped_total"] == 0
    assert gateway.gateway.shipper.rejected == 0
    assert list(spool_dir.glob("*.seg")) == [] or gateway.gateway.spool.size_bytes < 1 << 20


async def test_spooled_exchanges_survive_a_gateway_restart_and_arrive_once(
        services: Services, start, gateway_settings: Settings) -> None:
    registry = await services.registry()
    observer_address = unused_address()
    first = await start(registry=f"127.0.0.1:{registry.port}", observer=observer_address)
    await burst(first, 6, bearer=False)
    await first.stop()
    assert list((Path(gateway_settings.home) / "spool").glob("*.seg"))

    observer = await services.observer(observer_address)
    second = await start(registry=f"127.0.0.1:{registry.port}", observer=observer_address)
    assert second.gateway.spool.depth == 6
    await wait_for(lambda: second.gateway.spool.depth == 0, 30, "the replayed spool to drain")
    assert sum((await observer.components.queue.exchange_counts()).values()) == 6
    metrics = await metrics_of(second)
    assert metrics['smoltbot_gateway_exchanges_acked_total{status="accepted"}'] == 6


async def test_graceful_stop_flushes_the_spool_to_the_observer(
        services: Services, start, gateway_settings: Settings) -> None:
    registry = await services.registry()
    observer = await services.observer()
    gateway = await start(registry=f"127.0.0.1:{registry.port}", observer=f"127.0.0.1:{observer.port}")
    await burst(gateway, 4)
    shipper = gateway.gateway.shipper
    await gateway.stop()
    assert gateway.gateway.spool.depth == 0
    assert shipper.acked == 4
    assert sum((await observer.components.queue.exchange_counts()).values()) == 4
    assert list((Path(gateway_settings.home) / "spool").glob("*.seg")) == []


async def test_the_credential_appears_in_no_log_line_and_no_file(
        stack: RunningGateway, gateway_settings: Settings, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.DEBUG):
        await burst(stack, 4, bearer=True)
        await burst(stack, 4, bearer=False)
        async with httpx.AsyncClient() as http:  # errors and aborts log more than successes
            await http.post(stack.base_url + "/anthropic/v1/messages", json={"model": MODEL},
                            headers={"x-api-key": CREDENTIAL, "x-standin-scenario": "error_401"})
            await http.post(stack.base_url + "/anthropic/v1/messages", json={"model": MODEL},
                            headers={"authorization": f"Bearer {CREDENTIAL}", "x-standin-scenario": "drop",
                                     "content-type": "application/json"})
        await wait_for(lambda: stack.gateway.spool.depth == 0, 30, "the exchanges to be acked")
    await stack.stop()
    captured = capfd.readouterr()
    assert caplog.records, "logging was captured"
    for record in caplog.records:
        assert CREDENTIAL not in record.getMessage()
    assert CREDENTIAL not in captured.err and CREDENTIAL not in captured.out
    # Every file the services and the gateway left: data dir (spool, secret, SQLite by default)
    # and the test's database, wherever it lives. (Spool files holding unshipped exchanges are
    # grepped in the observer-down test, while they exist.)
    needle = CREDENTIAL.encode()
    files = [path for path in Path(gateway_settings.home).rglob("*") if path.is_file()]
    database_url = gateway_settings.effective_database_url
    if database_url.startswith("sqlite:///"):
        database = Path(database_url.removeprefix("sqlite:///"))
        files += [p for p in database.parent.glob(database.name + "*") if p.is_file()]
    for path in files:
        assert needle not in path.read_bytes(), f"credential found in {path}"


async def test_health_and_metrics(stack: RunningGateway) -> None:
    await burst(stack, 2)
    await wait_for(lambda: stack.gateway.spool.depth == 0, 15, "the exchanges to be acked")
    async with httpx.AsyncClient() as http:
        health = (await http.get(stack.base_url + "/health")).json()
        metrics_text = (await http.get(stack.base_url + "/metrics")).text
    assert health["status"] == "ok" and health["version"]
    assert health["registry"]["reachable"] is True
    assert health["observer"]["reachable"] is True
    assert health["spool"]["depth"] == 0
    for name in ("smoltbot_gateway_requests_total", "smoltbot_gateway_request_duration_seconds_bucket",
                 "smoltbot_gateway_active_streams", "smoltbot_gateway_exchanges_shipped_total",
                 "smoltbot_gateway_exchanges_acked_total", "smoltbot_gateway_spool_depth",
                 "smoltbot_gateway_spool_dropped_total"):
        assert name in metrics_text
    assert 'smoltbot_gateway_requests_total{status="200"} 2.0' in metrics_text


async def test_a_stopped_gateway_leaves_no_ingest_stream_task_behind(start) -> None:
    """With the observer away, each Ingest stream ends before the shipper: gRPC's task that feeds the
    stream must end with it (else "Task was destroyed but it is pending!" and "aclose(): asynchronous
    generator is already running" at every stop)."""
    import asyncio

    gateway = await start(registry=unused_address(), observer=unused_address())
    await wait_for(lambda: gateway.gateway.shipper._task is not None, 5, "the shipper to start")
    await asyncio.sleep(0.3)  # a few stream attempts against the absent observer
    await gateway.stop()

    def feeders() -> list[asyncio.Task[object]]:
        return [task for task in asyncio.all_tasks()
                if "_consume_request_iterator" in repr(task.get_coro()) and not task.done()]

    await wait_for(lambda: not feeders(), 2, "gRPC's request feeders to end")
