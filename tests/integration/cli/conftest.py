"""The CLI against a real local stack, in a temporary HOME.

* ``local_stack``: the real Registry and Observer gRPC services, the real API served by
  uvicorn on an ephemeral port, and the real gateway, all in this process, on SQLite (the
  API's own tests cover PostgreSQL; the CLI only speaks HTTP).
* ``cli``: runs ``smoltbot ...`` in-process with ``typer.testing.CliRunner`` (in a worker
  thread, so the services keep serving on the test's event loop), with HOME, SMOLTBOT_HOME,
  SMOLTBOT_API_URL and ANTHROPIC_API_KEY set for the test.
* ``put_traces``: sends exchanges to the Observer's Ingest stream, as the gateway does, and
  waits until their traces can be read through the API.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from typer.testing import CliRunner, Result

from smoltbot.cli.main import app
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.settings import Settings
from smoltbot.core.tls import TlsConfig
from tests.integration.api.helpers import Stack, ingest
from tests.support.anthropic_standin import AnthropicStandin

#: Environment variables a developer's shell may set that would change what the CLI does.
_ISOLATED_ENV = ("SMOLTBOT_API_URL", "SMOLTBOT_GATEWAY_URL", "SMOLTBOT_API_PORT", "SMOLTBOT_GATEWAY_PORT",
                 "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "SMOLTBOT_DEBUG",
                 "EDITOR", "VISUAL")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the CLI talks HTTP to the API, whose own tests run on both databases."""
    return f"sqlite:///{tmp_path / 'db' / 'smoltbot.db'}"


def unused_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalStack:
    settings: Settings
    api_url: str
    gateway_url: str
    registry_address: str
    observer_address: str
    observer_channel: grpc.aio.Channel

    @property
    def ingest_target(self) -> Stack:
        return Stack(self.settings, self.registry_address, self.observer_address, self.observer_channel)


@pytest.fixture
async def local_stack(settings_factory: Callable[..., Settings]) -> AsyncIterator[LocalStack]:
    from smoltbot.api.app import start_api
    from smoltbot.gateway import start_gateway
    from smoltbot.observer.server import build_server as build_observer
    from smoltbot.registry.server import build_server as build_registry

    # The API checks credentials with the upstream before `smoltbot init` creates an agent.
    upstream = AnthropicStandin()
    settings = settings_factory(upstream_url=await upstream.start())
    registry = await build_registry(settings, address="127.0.0.1:0")
    await registry.start()
    registry_address = f"127.0.0.1:{registry.port}"
    settings = settings.model_copy(update={"registry_address": registry_address})
    observer = await build_observer(settings, address="127.0.0.1:0")
    await observer.start()
    observer_address = f"127.0.0.1:{observer.port}"
    settings = settings.model_copy(update={"observer_address": observer_address})
    api = await start_api(settings, registry_address=registry_address, observer_address=observer_address)
    gateway = await start_gateway(
        settings, registry_address=registry_address, observer_address=observer_address
    )
    channel = open_channel(observer_address, TlsConfig.from_settings(settings))
    try:
        yield LocalStack(
            settings, api.base_url, gateway.base_url, registry_address, observer_address, channel
        )
    finally:
        await channel.close()
        await gateway.stop()
        await api.stop()
        await observer.stop(0.5)
        await registry.stop(0.5)
        await upstream.stop()


@dataclass
class Cli:
    """`await cli("logs", "--json")` runs the command in-process and returns Typer's Result."""

    home: Path
    env: dict[str, str]
    runner: CliRunner = field(default_factory=CliRunner)

    @property
    def smoltbot_home(self) -> Path:
        return Path(self.env["SMOLTBOT_HOME"])

    @property
    def config_path(self) -> Path:
        return self.smoltbot_home / "config.json"

    async def __call__(self, *args: str, env: dict[str, str | None] | None = None,
                       input: str | None = None) -> Result:
        merged: dict[str, str | None] = {**self.env, **(env or {})}
        return await asyncio.to_thread(self.runner.invoke, app, list(args), env=merged, input=input,
                                       catch_exceptions=True)

    def subprocess_env(self, **overrides: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in _ISOLATED_ENV}
        env.update(self.env)
        env.update(overrides)
        return env


@pytest.fixture
def credential() -> str:
    return f"sk-ant-api03-cli-SECRET-{secrets.token_hex(16)}"


@pytest.fixture
def cli(tmp_path: Path, local_stack: LocalStack, credential: str,
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    home = tmp_path / "user"
    home.mkdir()
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {
        "HOME": str(home),
        "SMOLTBOT_HOME": str(home / ".smoltbot"),
        "SMOLTBOT_API_URL": local_stack.api_url,
        "ANTHROPIC_API_KEY": credential,
        "NO_COLOR": "1",
    }
    return Cli(home, env)


@pytest.fixture
async def initialised(cli: Cli, local_stack: LocalStack) -> str:
    """`smoltbot init` done; returns the agent id."""
    result = await cli("init", "--yes", "--gateway", local_stack.gateway_url)
    assert result.exit_code == 0, result.output
    import json

    agent_id: str = json.loads(cli.config_path.read_text())["agent_id"]
    return agent_id


async def wait_for_traces(
    api_url: str, agent_id: str, count: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Polls the public API until the agent has at least `count` traces (the observer works async)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=api_url) as client:
        while True:
            response = await client.get(f"/v1/agents/{agent_id}/traces", params={"limit": 1000})
            if response.status_code == 200 and len(response.json()["items"]) >= count:
                items: list[dict[str, Any]] = response.json()["items"]
                return items
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{agent_id} has no {count} traces after {timeout}s: {response.text[:500]}"
                )
            await asyncio.sleep(0.1)


PutTraces = Callable[..., Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def put_traces(local_stack: LocalStack, credential: str) -> PutTraces:
    """`await put_traces(agent_id, exchange, ...)`: ingest, then wait until all their traces are readable."""

    async def put(agent_id: str, *exchanges: Any, expect: int | None = None) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
            before = (await client.get(f"/v1/agents/{agent_id}/traces", params={"limit": 1000})).json()[
                "items"
            ]
        await ingest(local_stack.ingest_target, *exchanges)
        return await wait_for_traces(local_stack.api_url, agent_id, len(before) + (expect or len(exchanges)))

    return put
