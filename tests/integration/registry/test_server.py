"""The Registry as a server: health, reflection, a non-Python client, outages."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from smoltbot.core.grpc_client import open_channel
from smoltbot.core.service_auth import ServiceCredential
from smoltbot.core.tls import TlsConfig
from smoltbot.registry.server import SERVICE_NAME, build_server
from smoltbot.v1 import registry_service_pb2 as pb
from smoltbot.v1.registry_service_pb2_grpc import RegistryServiceStub

from .conftest import RunningRegistry, assert_rpc_error, new_hash

REPO = Path(__file__).resolve().parents[3]


async def test_health_reports_serving_then_not_serving_on_stop(registry: RunningRegistry) -> None:
    health = health_pb2_grpc.HealthStub(registry.channel)
    for service in (SERVICE_NAME, ""):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE_NAME == "smoltbot.v1.RegistryService"

    await registry.stop()
    with pytest.raises(grpc.aio.AioRpcError):
        await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2)


async def test_reflection_lists_the_registry_service(registry: RunningRegistry) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(registry.channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await call.read()
    await call.done_writing()
    names = {service.name for service in answer.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_a_non_python_client_resolves_an_agent_with_buf_curl(registry: RunningRegistry) -> None:
    buf = shutil.which("buf")
    if buf is None:
        if os.environ.get("CI"):
            pytest.fail("buf is not installed (npm install -g @bufbuild/buf)")
        pytest.skip("buf is not installed")
    agent_hash = new_hash("c0ffee00")
    process = await asyncio.create_subprocess_exec(
        buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--schema", str(REPO / "proto"),
        "-d", json.dumps({"agent_hash": agent_hash}),
        "-H", f"smoltbot-service-credential: {ServiceCredential(home=registry.settings.home).value.decode()}",
        f"http://{registry.address}/smoltbot.v1.RegistryService/ResolveAgent",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()

    answer = json.loads(stdout)
    assert answer["agent"]["agentId"] == "smolt-c0ffee00"
    assert answer["created"] is True
    again = await registry.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=agent_hash))
    assert again.agent.agent_id == "smolt-c0ffee00" and not again.created


class TcpForwarder:
    """A loopback TCP relay to the database, to pull the plug on it mid-test."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def cut(self) -> None:
        """Stops listening and drops every relayed connection."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()


async def test_a_database_outage_is_unavailable_not_internal(
    postgres_server: Any, postgres_database: str, settings_factory: Any
) -> None:
    database_url = postgres_database
    forwarder = TcpForwarder("127.0.0.1", postgres_server.port)
    await forwarder.start()
    proxied = database_url.replace(f":{postgres_server.port}/", f":{forwarder.port}/")
    settings = settings_factory(database_url=proxied)
    server = await build_server(settings, address="127.0.0.1:0")
    await server.start()
    try:
        async with open_channel(f"127.0.0.1:{server.port}", TlsConfig.from_settings(settings)) as channel:
            stub = RegistryServiceStub(channel)
            resolved = await stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=new_hash()))
            assert resolved.created

            await forwarder.cut()
            for request in (pb.ResolveAgentRequest(agent_hash=new_hash()),
                            pb.ResolveAgentRequest(agent_hash=new_hash())):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ResolveAgent(request, timeout=30)
                assert_rpc_error(caught.value, grpc.StatusCode.UNAVAILABLE, reason="BACKEND_UNAVAILABLE")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetAgent(pb.GetAgentRequest(agent_id=resolved.agent.agent_id), timeout=30)
            assert_rpc_error(caught.value, grpc.StatusCode.UNAVAILABLE)
    finally:
        await server.stop(0)


async def test_an_unreachable_database_stops_the_start_with_a_plain_error(settings_factory: Any) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_factory(database_url=f"postgresql://smolt:hunter2@127.0.0.1:{port}/nowhere")
    with pytest.raises(OSError) as caught:
        await build_server(settings, address="127.0.0.1:0")
    assert "cannot use the database" in str(caught.value) and "hunter2" not in str(caught.value)


async def test_a_live_card_watch_ends_cleanly_when_the_registry_stops(registry: RunningRegistry) -> None:
    # A watch never ends by itself: before the Registry ended watches when draining, a stop waited
    # the whole grace for it and then aborted it (the watcher saw CANCELLED, not an end).
    watch = registry.stub.WatchCards(pb.WatchCardsRequest())
    first = await watch.read()
    assert first == pb.WatchCardsResponse()  # live
    stopping = asyncio.create_task(registry.server.stop(120.0))
    registry.stopped = True
    ended = await asyncio.wait_for(watch.read(), 30)
    assert ended is grpc.aio.EOF
    assert await watch.code() == grpc.StatusCode.OK
    await asyncio.wait_for(stopping, 30)
