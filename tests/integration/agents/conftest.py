"""Real agents through the real gateway: the OpenAI stand-in as the upstream, a real Registry and
Observer on PostgreSQL (one backend: these tests prove the agents, not the storage)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway, start_gateway
from tests.integration.observer.conftest import ObserverStack
from tests.support.openai_standin import OpenAIStandin


@dataclass
class OpenAIThroughGateway:
    standin: OpenAIStandin
    stack: ObserverStack
    gateway: RunningGateway

    @property
    def openai_base_url(self) -> str:
        """What an agent's OPENAI_BASE_URL (or Codex's provider base_url) is set to."""
        return self.gateway.base_url + "/openai/v1"


@pytest.fixture
def database_url(postgres_database: str) -> str:
    return postgres_database


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings of the whole stack beyond the stand-in's URL (a test module may override this)."""
    return {}


@pytest.fixture
async def openai_gateway(settings_factory: Callable[..., Settings], database_url: str,
                         settings_overrides: dict[str, Any]) -> AsyncIterator[OpenAIThroughGateway]:
    async with OpenAIStandin() as standin:
        stack = ObserverStack(settings_factory(openai_upstream_url=standin.base_url, **settings_overrides))
        gateway = None
        try:
            await stack.start_registry()
            observer = await stack.start_observer()
            gateway = await start_gateway(stack.observer_settings,
                                          registry_address=f"127.0.0.1:{stack.registry_port}",
                                          observer_address=f"127.0.0.1:{observer.port}")
            yield OpenAIThroughGateway(standin, stack, gateway)
        finally:
            if gateway is not None:
                await gateway.stop()
            await stack.close()
