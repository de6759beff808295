"""Prometheus /metrics of the registry (its own HTTP port) and of the API (on the API's port),
served by the real services, scraped with httpx and parsed with prometheus_client's own parser.
The observer's is covered in tests/integration/observer/test_otel_through_observer.py, the
gateway's in the gateway tests."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from smoltbot.api.app import start_api
from smoltbot.core.settings import Settings
from smoltbot.registry.server import build_server as build_registry
from tests.integration.observer.conftest import free_port
from tests.integration.observer.test_otel_through_observer import scrape

pytestmark = pytest.mark.timeout(60)


async def test_registry_and_api_serve_prometheus_metrics(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(registry_metrics_port=free_port())
    registry = await build_registry(settings, address="127.0.0.1:0")
    await registry.start()
    registry_address = f"127.0.0.1:{registry.port}"
    api = await start_api(settings, registry_address=registry_address, observer_address="127.0.0.1:1")
    try:
        endpoint = registry.components.metrics_endpoint
        assert endpoint is not None and endpoint.port == settings.registry_metrics_port
        assert endpoint.url == f"http://127.0.0.1:{settings.registry_metrics_port}/metrics"
        before = await scrape(endpoint.url)
        assert before[("smoltbot_registry_agents", ())] == 0
        assert ("process_cpu_seconds_total", ()) in before

        async with httpx.AsyncClient(base_url=api.base_url) as client:
            # No observer behind this API: answered 503, counted under its route all the same.
            unknown = await client.get("/v1/agents/smolt-00000000")
            await client.get("/no/such/page")
        samples = await scrape(f"{api.base_url}/metrics")
        route = (("method", "GET"), ("route", "/v1/agents/{agent_id}"), ("status", str(unknown.status_code)))
        assert samples[("smoltbot_api_requests_total", route)] == 1
        assert samples[("smoltbot_api_requests_total",
                        (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
        assert samples[("smoltbot_api_request_duration_seconds_count",
                        (("route", "/v1/agents/{agent_id}"),))] == 1
    finally:
        await api.stop()
        await registry.stop(0.2)
    # Stopped with the registry: the port is free again.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(endpoint.url)


async def test_metrics_ports_are_off_by_default(settings_factory: Callable[..., Settings]) -> None:
    registry = await build_registry(settings_factory(), address="127.0.0.1:0")
    try:
        assert registry.components.metrics_endpoint is None
    finally:
        await registry.stop(0.2)


async def test_a_taken_metrics_port_stops_the_registry_naming_it(
        settings_factory: Callable[..., Settings]) -> None:
    first = await build_registry(settings_factory(registry_metrics_port=free_port()), address="127.0.0.1:0")
    try:
        port = first.components.metrics_endpoint.port  # type: ignore[union-attr]
        with pytest.raises(OSError, match=rf"registry's /metrics on 127.0.0.1:{port}.*pick another port"):
            await build_registry(settings_factory(registry_metrics_port=port), address="127.0.0.1:0")
    finally:
        await first.stop(0.2)
