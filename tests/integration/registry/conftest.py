"""A real Registry per test: `build_server` on 127.0.0.1:0 over the test's database (SQLite
and PostgreSQL, via `database_url`), driven through real grpc.aio stubs."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest
import sqlalchemy as sa

from smoltbot.core.errors import ERROR_DOMAIN, error_info_of
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.grpc_server import GrpcServer
from smoltbot.core.settings import Settings
from smoltbot.core.storage import Database, open_database
from smoltbot.core.tls import TlsConfig
from smoltbot.registry.server import build_server
from smoltbot.v1 import registry_service_pb2 as pb
from smoltbot.v1 import registry_service_pb2_grpc

REGISTRY_TABLES = ("agents", "agent_credentials", "agent_claims", "sessions", "alignment_cards")


def new_hash(prefix: str = "") -> str:
    """A random 64-hex agent hash starting with `prefix`."""
    return prefix + secrets.token_hex(32)[len(prefix):]


@dataclass
class RunningRegistry:
    server: GrpcServer
    settings: Settings
    channel: grpc.aio.Channel
    stub: registry_service_pb2_grpc.RegistryServiceStub
    #: A separate connection pool to the same database, for asserting on rows.
    db: Database
    stopped: bool = field(default=False)
    #: agent_id -> agent_hash of the agents `resolve` made: the proof their writes need.
    owners: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def counts(self) -> dict[str, int]:
        """Rows per registry table: compare before/after a failing call."""
        async with self.db.read() as conn:
            return {table: (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
                    for table in REGISTRY_TABLES}

    async def resolve(self, agent_hash: str | None = None) -> tuple[str, str]:
        """Creates (or finds) an agent; returns (agent_id, agent_hash)."""
        agent_hash = agent_hash or new_hash()
        response = await self.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=agent_hash))
        self.owners[response.agent.agent_id] = agent_hash
        return response.agent.agent_id, agent_hash

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.server.stop(1.0)


RegistryFactory = Callable[..., Awaitable[RunningRegistry]]


@pytest.fixture
async def registry_factory(database_url: str,
                           settings_factory: Callable[..., Settings]) -> AsyncIterator[RegistryFactory]:
    """Starts registries on this test's database (so every registry test runs on SQLite and
    on PostgreSQL): ``await registry_factory(**settings_overrides)`` (activity is flushed every
    50 ms unless ``registry_touch_interval`` says otherwise)."""
    running: list[RunningRegistry] = []

    async def start(**overrides: object) -> RunningRegistry:
        settings = settings_factory(**{"registry_touch_interval": 0.05, **overrides})
        server = await build_server(settings, address="127.0.0.1:0")
        await server.start()
        channel = open_channel(f"127.0.0.1:{server.port}", TlsConfig.from_settings(settings))
        registry = RunningRegistry(
            server,
            settings,
            channel,
            registry_service_pb2_grpc.RegistryServiceStub(channel),
            open_database(settings.effective_database_url),
        )
        running.append(registry)
        return registry

    yield start
    for registry in running:
        await registry.channel.close()
        await registry.stop()
        await registry.db.close()


@pytest.fixture
async def registry(registry_factory: RegistryFactory) -> RunningRegistry:
    return await registry_factory()


def assert_rpc_error(error: grpc.aio.AioRpcError, code: grpc.StatusCode, field: str | None = None,
                     reason: str | None = None) -> None:
    """The status code, and an ErrorInfo in our domain naming `field` in metadata and message."""
    assert error.code() == code, f"{error.code()} {error.details()}"
    info = error_info_of(error)
    assert info is not None, "no ErrorInfo in the status details"
    assert info.domain == ERROR_DOMAIN
    assert info.reason and info.reason == info.reason.upper()
    if reason is not None:
        assert info.reason == reason
    if field is not None:
        assert info.metadata["field"] == field
        assert field in (error.details() or "")
