"""Fixtures for the gateway's integration tests: the Anthropic stand-in, the real Registry and
Observer services, and gateways started in-process on ephemeral ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway, start_gateway
from tests.integration.gateway.helpers import Services, unused_address
from tests.support.anthropic_standin import AnthropicStandin


@pytest.fixture
async def standin() -> AsyncIterator[AnthropicStandin]:
    server = AnthropicStandin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def gateway_settings(settings_factory: Callable[..., Settings], standin: AnthropicStandin) -> Settings:
    return settings_factory(upstream_url=standin.base_url)


@pytest.fixture
async def services(gateway_settings: Settings) -> AsyncIterator[Services]:
    running = Services(gateway_settings)
    yield running
    await running.stop_all()


@pytest.fixture
async def start(gateway_settings: Settings) -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    """start(registry=..., observer=..., **settings overrides) -> a running gateway."""
    gateways: list[RunningGateway] = []

    async def _start(*, registry: str, observer: str, **overrides: Any) -> RunningGateway:
        settings = gateway_settings.model_copy(update=overrides) if overrides else gateway_settings
        gateway = await start_gateway(settings, registry_address=registry, observer_address=observer)
        gateways.append(gateway)
        return gateway

    yield _start
    for gateway in gateways:
        await gateway.stop()


@pytest.fixture
async def stack(services: Services, start: Callable[..., Awaitable[RunningGateway]]) -> RunningGateway:
    """A gateway with the real Registry and Observer up."""
    registry = await services.registry()
    observer = await services.observer()
    return await start(registry=f"127.0.0.1:{registry.port}", observer=f"127.0.0.1:{observer.port}")


@pytest.fixture
async def lone_gateway(start: Callable[..., Awaitable[RunningGateway]]) -> RunningGateway:
    """A gateway whose Registry and Observer are down: its exchanges stay in the spool, where tests
    read them."""
    return await start(registry=unused_address(), observer=unused_address())
