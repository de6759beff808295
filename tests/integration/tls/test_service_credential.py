"""The service credential: the Registry and the Observer answer only callers that present the
installation's credential; health checks stay open.

Real servers (`build_server`) from settings, as `smoltbot serve` builds them; every RPC of both
services is found from the descriptors, so an RPC added later is covered too.
"""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smoltbot.core.errors import error_info_of
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.service_auth import (
    SERVICE_CREDENTIAL_FILE,
    ServiceCredential,
    ServiceCredentialError,
)
from smoltbot.core.settings import Settings
from smoltbot.core.storage import open_database
from smoltbot.core.tls import TlsConfig
from smoltbot.observer.server import build_server as build_observer
from smoltbot.registry.server import build_server as build_registry
from smoltbot.v1 import observer_service_pb2, registry_service_pb2, registry_service_pb2_grpc

pytestmark = pytest.mark.timeout(60)

OTHER_CREDENTIAL = ServiceCredential("someone-elses-guess-0123456789abcdef0123456789")


@dataclass
class Services:
    settings: Settings
    registry: str
    observer: str


@pytest.fixture
async def services(settings_factory: Callable[..., Settings]) -> AsyncIterator[Services]:
    settings = settings_factory()
    registry = await build_registry(settings, address="127.0.0.1:0")
    await registry.start()
    registry_address = f"127.0.0.1:{registry.port}"
    observer = await build_observer(settings.model_copy(update={"registry_address": registry_address}),
                                    address="127.0.0.1:0")
    await observer.start()
    try:
        yield Services(settings, registry_address, f"127.0.0.1:{observer.port}")
    finally:
        await observer.stop(0.5)
        await registry.stop(0.5)


def every_method() -> list[tuple[str, str, bool, bool]]:
    """(service, path, client streaming, server streaming) of every RPC we serve."""
    found = []
    for module, service in (
        (registry_service_pb2, "RegistryService"),
        (observer_service_pb2, "ObserverService"),
    ):
        descriptor = module.DESCRIPTOR.services_by_name[service]
        for method in descriptor.methods:
            found.append((service, f"/{descriptor.full_name}/{method.name}", method.client_streaming,
                          method.server_streaming))
    return found


async def call_raw(
    channel: grpc.aio.Channel, path: str, client_streaming: bool, server_streaming: bool
) -> None:
    """Calls `path` with one empty request message, whatever its shape."""
    if client_streaming and server_streaming:
        call = channel.stream_stream(path)(iter([b""]), timeout=5)
        async for _ in call:
            pass
    elif client_streaming:
        await channel.stream_unary(path)(iter([b""]), timeout=5)
    elif server_streaming:
        async for _ in channel.unary_stream(path)(b"", timeout=5):
            pass
    else:
        await channel.unary_unary(path)(b"", timeout=5)


async def registry_rows(settings: Settings) -> dict[str, int]:
    db = open_database(settings.effective_database_url)
    try:
        async with db.read() as conn:
            return {table: (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
                    for table in ("agents", "sessions", "alignment_cards", "exchanges")}
    finally:
        await db.close()


@pytest.mark.parametrize("credential", [None, OTHER_CREDENTIAL], ids=["without", "wrong"])
async def test_every_rpc_refuses_a_caller_without_the_credential(
    services: Services, credential: ServiceCredential | None
) -> None:
    before = await registry_rows(services.settings)
    wrong = []
    for service, path, client_streaming, server_streaming in every_method():
        address = services.registry if service == "RegistryService" else services.observer
        async with open_channel(address, TlsConfig(credential=credential)) as channel:
            try:
                await call_raw(channel, path, client_streaming, server_streaming)
            except grpc.aio.AioRpcError as error:
                info = error_info_of(error)
                expected = (
                    "SERVICE_CREDENTIAL_MISSING" if credential is None else "SERVICE_CREDENTIAL_INVALID"
                )
                if error.code() != grpc.StatusCode.UNAUTHENTICATED or info is None or info.reason != expected:
                    wrong.append(f"{path}: {error.code().name} {error.details()}")
                elif "SMOLTBOT_SERVICE_TOKEN" not in (error.details() or ""):
                    wrong.append(f"{path}: the message does not say what to set: {error.details()}")
            else:
                wrong.append(f"{path}: answered")
    assert not wrong, "\n".join(wrong)
    assert await registry_rows(services.settings) == before


STRANGER_STREAMS = r"""
import asyncio, collections, json, sys
import grpc

async def main(address):
    outcomes = collections.Counter()
    async with grpc.aio.insecure_channel(address) as channel:
        ingest = channel.stream_stream("/smoltbot.v1.ObserverService/Ingest")
        for _ in range(int(sys.argv[2])):
            try:
                async for _ack in ingest(iter([b"\x0a\x00"]), timeout=5):
                    pass
                outcomes["ANSWERED"] += 1
            except grpc.aio.AioRpcError as error:
                outcomes[error.code().name] += 1
    print(json.dumps(outcomes))

asyncio.run(main(sys.argv[1]))
"""


async def test_a_refused_stream_always_reads_as_the_refusal_not_a_transport_error(services: Services) -> None:
    # A refusal sent while the client's grpc was still writing its message reached it as INTERNAL
    # ("Failed execute_batch"), without the hint, about one call in fifteen. The client runs in
    # its own process: on the server's event loop the race does not happen.
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STRANGER_STREAMS, services.observer, "200",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(done.communicate(), 50)
    assert done.returncode == 0, err.decode()
    assert json.loads(out) == {"UNAUTHENTICATED": 200}


async def test_a_refused_stream_that_never_stops_sending_is_still_refused(services: Services) -> None:
    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield b"\x0a\x00"
            await asyncio.sleep(0.01)

    async with open_channel(services.observer, TlsConfig(credential=None)) as channel:
        ingest = channel.stream_stream("/smoltbot.v1.ObserverService/Ingest")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ack in ingest(forever(), timeout=10):
                pass
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reflection_is_gated_and_health_is_open(services: Services) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for address in (services.registry, services.observer):
        async with open_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_services_sharing_a_data_dir_share_a_private_generated_credential(services: Services) -> None:
    path = services.settings.home / SERVICE_CREDENTIAL_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64  # 256 bits in hex
    async with open_channel(services.registry, TlsConfig.from_settings(services.settings)) as channel:
        reply = await registry_service_pb2_grpc.RegistryServiceStub(channel).ResolveAgent(
            registry_service_pb2.ResolveAgentRequest(agent_hash="ab" * 32), timeout=5)
    assert reply.created


async def test_a_configured_credential_works_across_data_dirs_and_a_different_one_does_not(
        settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    token = "deployment-service-token-0123456789abcdef"
    server_settings = settings_factory(service_token=token)
    registry = await build_registry(server_settings, address="127.0.0.1:0")
    await registry.start()
    address = f"127.0.0.1:{registry.port}"
    try:
        elsewhere = settings_factory(home=tmp_path / "another-machine", service_token=token)
        for settings, code in (
            (elsewhere, None),
            (settings_factory(home=tmp_path / "another-install"), grpc.StatusCode.UNAUTHENTICATED),
        ):
            async with open_channel(address, TlsConfig.from_settings(settings)) as channel:
                stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
                request = registry_service_pb2.ListAgentsRequest(page_size=1)
                if code is None:
                    await stub.ListAgents(request, timeout=5)
                    continue
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ListAgents(request, timeout=5)
                assert caught.value.code() == code
        assert not (server_settings.home / SERVICE_CREDENTIAL_FILE).exists(), "configured: no file is made"
    finally:
        await registry.stop(0.5)


def test_a_weak_configured_credential_is_refused_with_what_to_do(
    settings_factory: Callable[..., Settings],
) -> None:
    with pytest.raises(ServiceCredentialError, match=r"at least 32 characters.*token_hex"):
        TlsConfig.from_settings(settings_factory(service_token="short"))
    with pytest.raises(ServiceCredentialError, match="printable ASCII"):
        TlsConfig.from_settings(settings_factory(service_token="x" * 40 + "\n"))
    assert "deployment" not in repr(TlsConfig(credential=ServiceCredential("deployment-" + "0" * 40)))


def test_processes_starting_at_once_agree_on_one_credential(tmp_path: Path) -> None:
    values: list[bytes] = []
    barrier = threading.Barrier(16)

    def read() -> None:
        barrier.wait()
        values.append(ServiceCredential(home=tmp_path / "home").value)

    threads = [threading.Thread(target=read) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(values) == 16 and len(set(values)) == 1
    assert [path.name for path in (tmp_path / "home").iterdir()] == [SERVICE_CREDENTIAL_FILE], "no leftovers"
