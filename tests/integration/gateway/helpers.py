"""Helpers shared by the gateway's integration tests."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway
from smoltbot.gateway.spool import Spool
from smoltbot.v1 import exchange_pb2, observer_service_pb2
from tests.support.waiting import wait_until

CREDENTIAL = "sk-ant-api03-gateway-SECRET-7f3a9c2e1b"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unused_address() -> str:
    """An address where nothing listens (for a service that is down)."""
    return f"127.0.0.1:{free_port()}"


class Services:
    """Starts the real Registry/Observer on demand and stops whatever it started. The Observer
    is pointed at the Registry started before it, if any."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: list[Any] = []

    async def registry(self, address: str = "127.0.0.1:0") -> Any:
        from smoltbot.registry.server import build_server

        server = await self._start(build_server, self.settings, address)
        self.settings = self.settings.model_copy(update={"registry_address": f"127.0.0.1:{server.port}"})
        return server

    async def observer(self, address: str = "127.0.0.1:0") -> Any:
        from smoltbot.observer.server import build_server

        return await self._start(build_server, self.settings, address)

    async def _start(self, build: Callable[..., Awaitable[Any]], settings: Settings, address: str) -> Any:
        server = await build(settings, address=address)
        await server.start()
        self._running.append(server)
        return server

    async def stop(self, server: Any) -> None:
        self._running.remove(server)
        await server.stop()

    async def stop_all(self) -> None:
        for server in reversed(self._running):
            await server.stop()
        self._running.clear()


def spooled_exchanges(home: Path, scratch: Path) -> list[exchange_pb2.Exchange]:
    """The exchanges waiting in a gateway's spool, oldest first (read from a copy of it)."""
    copy = scratch / f"spool-copy-{time.monotonic_ns()}"
    shutil.copytree(home / "spool", copy)
    spool = Spool(copy, 1 << 40)
    spool.open()
    exchanges = []
    for record in spool.unacked():
        request = observer_service_pb2.IngestRequest.FromString(spool.payload_of(record))
        exchanges.append(request.exchange)
    return exchanges


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    return await wait_until(condition, timeout=timeout, what=what)


async def spooled_on_disk(home: Path, scratch: Path, count: int, timeout: float = 10.0,
                          ) -> list[exchange_pb2.Exchange]:
    """The spooled exchanges once at least `count` are in the spool's files (the spool counts a
    record when it is queued and writes it on a later loop turn)."""

    def written() -> tuple[list[exchange_pb2.Exchange]] | None:
        found = spooled_exchanges(home, scratch)
        return (found,) if len(found) >= count else None

    (found,) = await wait_until(written, timeout=timeout, what=f"{count} exchanges in the spool's files")
    return found


async def wait_for_spooled(gateway: RunningGateway, count: int, scratch: Path,
                           timeout: float = 10.0) -> list[exchange_pb2.Exchange]:
    home = Path(gateway.gateway.settings.home)
    await wait_for(lambda: gateway.gateway.spool.depth >= count, timeout, f"{count} spooled exchanges")
    return await spooled_on_disk(home, scratch, count, timeout)


async def metrics_of(gateway: RunningGateway) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(gateway.base_url + "/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
