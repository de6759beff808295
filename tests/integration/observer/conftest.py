"""A real Registry and a real Observer per test, on the test's database (SQLite and PostgreSQL
via ``database_url``), driven through real grpc.aio stubs.

``observer_stack`` gives an `ObserverStack`: ingest exchanges over a real Ingest stream, wait
for their traces through ListTraces, restart the Observer or take the Registry down and up
again on the same port.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from smoltbot.core.grpc_client import open_channel
from smoltbot.core.settings import Settings
from smoltbot.core.storage import Database, migrate, open_database
from smoltbot.core.tls import TlsConfig
from smoltbot.observer.server import ObserverServer
from smoltbot.observer.server import build_server as build_observer
from smoltbot.registry.server import build_server as build_registry
from smoltbot.v1 import (
    exchange_pb2,
    observer_service_pb2_grpc,
    registry_service_pb2_grpc,
    trace_pb2,
)
from smoltbot.v1 import (
    observer_service_pb2 as pb,
)
from smoltbot.v1 import (
    registry_service_pb2 as rpb,
)


def new_hash() -> str:
    return secrets.token_hex(32)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ObserverStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry_port = free_port()
        self.registry: Any = None
        self.observer: ObserverServer | None = None
        self._registry_channel: grpc.aio.Channel | None = None
        self._observer_channel: grpc.aio.Channel | None = None
        self.registry_stub: registry_service_pb2_grpc.RegistryServiceStub | None = None
        self.stub: observer_service_pb2_grpc.ObserverServiceStub | None = None
        #: The test's own connection pool, for asserting on rows.
        self.db: Database = open_database(settings.effective_database_url)
        #: Settings every Observer this stack starts gets (beyond the stack's own fast timings).
        self.observer_overrides: dict[str, Any] = {}

    @property
    def observer_settings(self) -> Settings:
        """The Observer's settings: the test's, with fast timings, pointing at the stack's Registry."""
        return self.settings.model_copy(update={
            "registry_address": f"127.0.0.1:{self.registry_port}", "observer_poll_interval": 0.2,
            "drift_sweep_interval": 0.3, "observer_card_ttl": 0.2, "observer_scrub_interval": 1.0,
            **self.observer_overrides,
        })

    async def start_registry(self) -> None:
        self.registry = await build_registry(
            self.settings.model_copy(update={"registry_touch_interval": 0.05}),
            address=f"127.0.0.1:{self.registry_port}",
        )
        await self.registry.start()
        if self._registry_channel is None:
            self._registry_channel = open_channel(f"127.0.0.1:{self.registry_port}",
                                                  TlsConfig.from_settings(self.settings))
            self.registry_stub = registry_service_pb2_grpc.RegistryServiceStub(self._registry_channel)

    async def stop_registry(self) -> None:
        if self.registry is not None:
            await self.registry.stop(0.2)
            self.registry = None

    async def start_observer(self, **overrides: Any) -> ObserverServer:
        settings = (
            self.observer_settings.model_copy(update=overrides) if overrides else self.observer_settings
        )
        self.observer = await build_observer(settings, address="127.0.0.1:0")
        await self.observer.start()
        if self._observer_channel is not None:
            await self._observer_channel.close()
        self._observer_channel = open_channel(f"127.0.0.1:{self.observer.port}",
                                              TlsConfig.from_settings(settings), message_limit=96 << 20)
        self.stub = observer_service_pb2_grpc.ObserverServiceStub(self._observer_channel)
        return self.observer

    async def stop_observer(self, grace: float = 0.5) -> None:
        if self.observer is not None:
            await self.observer.stop(grace)
            self.observer = None

    async def close(self) -> None:
        await self.stop_observer()
        await self.stop_registry()
        for channel in (self._observer_channel, self._registry_channel):
            if channel is not None:
                await channel.close()
        await self.db.close()

    # -- registry ------------------------------------------------------------------------

    async def agent(self, agent_hash: str | None = None) -> tuple[str, str]:
        """A new agent: (agent_id, agent_hash)."""
        agent_hash = agent_hash or new_hash()
        assert self.registry_stub is not None
        response = await self.registry_stub.ResolveAgent(rpb.ResolveAgentRequest(agent_hash=agent_hash))
        return response.agent.agent_id, agent_hash

    async def put_card(self, agent_id: str, agent_hash: str, card_json: str) -> str:
        assert self.registry_stub is not None
        response = await self.registry_stub.PutCard(rpb.PutCardRequest(
            agent_id=agent_id, agent_hash=agent_hash, card_json=card_json))
        return response.card.card_id

    # -- observer ------------------------------------------------------------------------

    async def ingest(
        self, exchanges: Iterable[exchange_pb2.Exchange | pb.IngestRequest]
    ) -> list[pb.IngestResponse]:
        """Sends exchanges over one Ingest stream; returns the acks, in order."""
        requests = [item if isinstance(item, pb.IngestRequest) else pb.IngestRequest(exchange=item)
                    for item in exchanges]
        assert self.stub is not None
        call = self.stub.Ingest()
        acks: list[pb.IngestResponse] = []

        async def send() -> None:
            for request in requests:
                await call.write(request)
            await call.done_writing()

        sender = asyncio.create_task(send())
        async for ack in call:
            acks.append(ack)
        await sender
        return acks

    async def list_traces(self, **fields: Any) -> list[trace_pb2.ApTrace]:
        """Every page of ListTraces with these fields."""
        assert self.stub is not None
        out: list[trace_pb2.ApTrace] = []
        token = ""
        while True:
            response = await self.stub.ListTraces(pb.ListTracesRequest(page_token=token, **fields))
            out.extend(response.traces)
            token = response.next_page_token
            if not token:
                return out

    async def wait_for_traces(
        self, count: int, *, timeout: float = 15.0,
        matching: Callable[[trace_pb2.ApTrace], bool] | None = None, **fields: Any
    ) -> list[trace_pb2.ApTrace]:
        """All the traces `fields` select, once at least `count` of them (of those `matching`,
        when given: a count of all traces also counts setup calls, whose number can vary)."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.list_traces(page_size=1000, **fields)
            counted = len(found) if matching is None else sum(1 for trace in found if matching(trace))
            if counted >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} traces, found {counted} ({fields})")
            await asyncio.sleep(0.05)

    async def traces_of(
        self, exchange_id: str, *, timeout: float = 15.0, agent_id: str = ""
    ) -> list[trace_pb2.ApTrace]:
        """The traces of one exchange, waiting until its exchange is finished."""
        await self.wait_finished([exchange_id], timeout=timeout)
        found = [
            t
            for t in await self.list_traces(page_size=1000, agent_id=agent_id, order_by="timestamp asc")
            if t.observation.exchange_id == exchange_id
        ]
        return sorted(found, key=lambda t: t.observation.decision_index)

    async def traces_by_exchange(self, exchange_ids: Iterable[str], *, timeout: float = 15.0,
                                 agent_id: str = "") -> dict[str, list[trace_pb2.ApTrace]]:
        """The traces of several exchanges, once all of them are finished: {exchange_id: traces}."""
        ids = list(exchange_ids)
        await self.wait_finished(ids, timeout=timeout)
        grouped: dict[str, list[trace_pb2.ApTrace]] = {exchange_id: [] for exchange_id in ids}
        for trace in await self.list_traces(page_size=1000, agent_id=agent_id, order_by="timestamp asc"):
            if trace.observation.exchange_id in grouped:
                grouped[trace.observation.exchange_id].append(trace)
        return {
            key: sorted(value, key=lambda t: t.observation.decision_index) for key, value in grouped.items()
        }

    async def exchange_states(self, exchange_ids: Iterable[str] | None = None) -> dict[str, str]:
        query = sa.text("SELECT exchange_id, state FROM exchanges")
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        wanted = set(exchange_ids) if exchange_ids is not None else None
        return {row[0]: row[1] for row in rows if wanted is None or row[0] in wanted}

    async def wait_finished(self, exchange_ids: Iterable[str], *, timeout: float = 15.0) -> None:
        ids = list(exchange_ids)
        deadline = time.monotonic() + timeout
        while True:
            states = await self.exchange_states(ids)
            if len(states) == len(ids) and all(state in ("done", "failed") for state in states.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"exchanges not finished: {states}")
            await asyncio.sleep(0.05)

    async def wait_drift_settled(self, agent_id: str, *, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            async with self.db.read() as conn:
                pending = (await conn.execute(sa.text(
                    "SELECT count(*) FROM drift_pending WHERE agent_id = :a"), {"a": agent_id})).scalar_one()
            if pending == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{pending} traces of {agent_id} never reached the drift detector")
            await asyncio.sleep(0.05)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The test's database, migrated, without any service on it."""
    database = open_database(database_url)
    await migrate(database)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def observer_stack(
    database_url: str, settings_factory: Callable[..., Settings]
) -> AsyncIterator[ObserverStack]:
    stack = ObserverStack(settings_factory(observer_max_attempts=2))
    try:
        await stack.start_registry()
        await stack.start_observer()
        yield stack
    finally:
        await stack.close()
