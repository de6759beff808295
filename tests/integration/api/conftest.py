"""The API wired to a real Registry and Observer on a real database (SQLite and PostgreSQL).

* ``stack``: both gRPC services started on ephemeral ports over the test's ``database_url``,
  and the Anthropic stand-in as the upstream (``stack.upstream``; it accepts any key unless a
  test sets ``stack.upstream.accepted_keys``), which `POST /v1/agents/resolve` asks first.
* ``api``: an ``httpx.AsyncClient`` on the API app (ASGI transport, lifespan run), wired to
  ``stack``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from smoltbot.api.app import create_app
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.settings import Settings
from smoltbot.core.tls import TlsConfig
from tests.integration.api.helpers import Stack
from tests.support.anthropic_standin import AnthropicStandin


@pytest.fixture
async def stack(settings_factory: Callable[..., Settings], database_url: str) -> AsyncIterator[Stack]:
    from smoltbot.observer.server import build_server as build_observer
    from smoltbot.registry.server import build_server as build_registry

    upstream = AnthropicStandin()
    settings = settings_factory(upstream_url=await upstream.start())
    registry = await build_registry(settings, address="127.0.0.1:0")
    await registry.start()
    registry_address = f"127.0.0.1:{registry.port}"
    observer_settings = settings.model_copy(update={"registry_address": registry_address,
                                                    "observer_stop_grace": 1.0})
    observer = await build_observer(observer_settings, address="127.0.0.1:0")
    await observer.start()
    observer_address = f"127.0.0.1:{observer.port}"
    channel = open_channel(observer_address, TlsConfig.from_settings(settings))
    try:
        yield Stack(observer_settings.model_copy(update={"observer_address": observer_address}),
                    registry_address, observer_address, channel, upstream)
    finally:
        await channel.close()
        await observer.stop(0.5)
        await registry.stop(0.5)
        await upstream.stop()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack.settings, registry_address=stack.registry_address,
                     observer_address=stack.observer_address)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client
