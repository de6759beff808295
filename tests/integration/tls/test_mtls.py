"""gRPC between services over TLS and mutual TLS, with a CA and certificates made by the test.

The Registry is the real one (`build_server`) configured through settings, as `smoltbot serve`
configures it; clients are `open_channel` with a `TlsConfig`, as the services build them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smoltbot.core.grpc_client import open_channel
from smoltbot.core.service_auth import ServiceCredential
from smoltbot.core.settings import Settings
from smoltbot.core.tls import InsecureTransportError, TlsConfig, TlsError
from smoltbot.registry.server import build_server as build_registry
from smoltbot.v1 import registry_service_pb2, registry_service_pb2_grpc
from tests.integration.tls.conftest import SERVICE_TOKEN, Pki

#: The installation's own service credential (what the services present to each other).
OUR_CREDENTIAL = ServiceCredential(SERVICE_TOKEN)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[3]


async def list_agents(address: str, tls: TlsConfig | None, *,
                      credential: ServiceCredential | None = OUR_CREDENTIAL,
                      ) -> registry_service_pb2.ListAgentsResponse:
    """ListAgents over `tls`, with the services' credential unless told otherwise."""
    channel = open_channel(address, dataclasses.replace(tls or TlsConfig(), credential=credential))
    try:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        return await stub.ListAgents(registry_service_pb2.ListAgentsRequest(page_size=1), timeout=5)
    finally:
        await channel.close()


async def assert_refused(address: str, tls: TlsConfig | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_agents(address, tls)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
async def mtls_registry(mtls_settings: Callable[..., Settings]) -> AsyncIterator[str]:
    server = await build_registry(mtls_settings(), address="127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0.5)


async def test_a_client_with_a_certificate_from_the_ca_is_served(mtls_registry: str, pki: Pki) -> None:
    tls = TlsConfig.from_files(pki.client.cert, pki.client.key, pki.ca.ca)
    reply = await list_agents(mtls_registry, tls)
    assert list(reply.agents) == []
    # By name too: the certificate carries "localhost".
    port = mtls_registry.rpartition(":")[2]
    assert list((await list_agents(f"localhost:{port}", tls)).agents) == []


async def test_a_client_with_a_certificate_but_no_service_credential_is_unauthenticated(
        mtls_registry: str, pki: Pki) -> None:
    tls = TlsConfig.from_files(pki.client.cert, pki.client.key, pki.ca.ca)
    for credential in (None, ServiceCredential("another-installation-service-token-0123456789")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_agents(mtls_registry, tls, credential=credential)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_client_without_a_certificate_is_refused(mtls_registry: str, pki: Pki) -> None:
    await assert_refused(mtls_registry, TlsConfig.from_files(ca=pki.ca.ca))


async def test_a_client_certificate_from_another_ca_is_refused(mtls_registry: str, pki: Pki) -> None:
    await assert_refused(
        mtls_registry, TlsConfig.from_files(pki.outsider_client.cert, pki.outsider_client.key, pki.ca.ca)
    )


async def test_an_expired_client_certificate_is_refused(mtls_registry: str, pki: Pki) -> None:
    expired = pki.ca.issue("expired-client", expired=True)
    await assert_refused(mtls_registry, TlsConfig.from_files(expired.cert, expired.key, pki.ca.ca))


async def test_a_plaintext_client_is_refused(mtls_registry: str) -> None:
    await assert_refused(mtls_registry, None)


async def test_the_client_refuses_a_server_its_ca_did_not_sign(mtls_registry: str, pki: Pki) -> None:
    # A valid client certificate, but the client trusts only the outsider CA: the server's
    # certificate does not verify, so nothing is sent.
    await assert_refused(mtls_registry, TlsConfig.from_files(pki.client.cert, pki.client.key,
                                                             pki.outsider_ca.ca))


async def test_the_client_checks_the_server_name(mtls_settings: Callable[..., Settings], pki: Pki) -> None:
    elsewhere = pki.ca.issue("elsewhere", hosts=("registry.example.internal",))
    server = await build_registry(mtls_settings(tls_cert=str(elsewhere.cert), tls_key=str(elsewhere.key)),
                                  address="127.0.0.1:0")
    await server.start()
    try:
        address = f"127.0.0.1:{server.port}"
        await assert_refused(address, TlsConfig.from_files(pki.client.cert, pki.client.key, pki.ca.ca))
        named = TlsConfig.from_files(pki.client.cert, pki.client.key, pki.ca.ca,
                                     server_name="registry.example.internal")
        assert list((await list_agents(address, named)).agents) == []
    finally:
        await server.stop(0.5)


async def test_tls_without_a_ca_serves_clients_without_certificates(
        settings_factory: Callable[..., Settings], pki: Pki) -> None:
    server = await build_registry(settings_factory(tls_cert=str(pki.server.cert), tls_key=str(pki.server.key),
                                                   service_token=SERVICE_TOKEN), address="127.0.0.1:0")
    await server.start()
    try:
        address = f"127.0.0.1:{server.port}"
        assert list((await list_agents(address, TlsConfig.from_files(ca=pki.ca.ca))).agents) == []
        await assert_refused(address, None)
    finally:
        await server.stop(0.5)


async def test_a_list_of_tls_servers_is_balanced_with_one_name(mtls_settings: Callable[..., Settings],
                                                                pki: Pki) -> None:
    servers = [await build_registry(mtls_settings(), address="127.0.0.1:0") for _ in range(2)]
    for server in servers:
        await server.start()
    try:
        addresses = ",".join(f"127.0.0.1:{server.port}" for server in servers)
        tls = TlsConfig.from_files(pki.client.cert, pki.client.key, pki.ca.ca)
        for _ in range(4):
            assert list((await list_agents(addresses, tls)).agents) == []
        # Different hosts cannot share the one name grpc checks without being told which.
        with pytest.raises(TlsError, match="SMOLTBOT_TLS_SERVER_NAME"):
            open_channel("10.0.0.1:50051,10.0.0.2:50051", tls)
    finally:
        for server in servers:
            await server.stop(0.5)


async def test_the_health_port_answers_probes_in_plaintext_and_serves_nothing_else(
        mtls_settings: Callable[..., Settings]) -> None:
    from tests.integration.gateway.helpers import free_port

    health_port = free_port()
    server = await build_registry(mtls_settings(grpc_health_port=health_port), address="127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await registry_service_pb2_grpc.RegistryServiceStub(channel).ListAgents(
                    registry_service_pb2.ListAgentsRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        await server.stop(0.5)
        # Stopping says NOT_SERVING first, then the health port goes away with the server.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    finally:
        await server.stop(0)


# --------------------------------------------------------------------------- plaintext rules


async def test_plaintext_beyond_loopback_refuses_to_start(settings_factory: Callable[..., Settings]) -> None:
    with pytest.raises(InsecureTransportError, match=r"refusing to serve plaintext gRPC on 0\.0\.0\.0:0"):
        await build_registry(settings_factory(), address="0.0.0.0:0")
    server = await build_registry(settings_factory(allow_insecure_grpc=True), address="0.0.0.0:0")
    await server.stop(0)


async def test_a_client_refuses_plaintext_to_another_host() -> None:
    with pytest.raises(InsecureTransportError, match=r"10\.1\.2\.3 is not loopback"):
        open_channel("10.1.2.3:50051")
    with pytest.raises(InsecureTransportError):
        open_channel("dns:///registry.internal:50051")
    await open_channel("10.1.2.3:50051", TlsConfig(allow_insecure=True)).close()
    for loopback in ("127.0.0.1:1", "localhost:1", "[::1]:1", "127.0.0.1:1,127.0.0.2:1"):
        await open_channel(loopback).close()


def test_bad_tls_files_are_named_in_the_error(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TlsError, match="must be set together"):
        TlsConfig.from_files(pki.client.cert, None, pki.ca.ca)
    with pytest.raises(TlsError, match=r"cannot read SMOLTBOT_TLS_CA \(.*missing.pem\)"):
        TlsConfig.from_files(ca=tmp_path / "missing.pem")
    not_pem = tmp_path / "key.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(TlsError, match=r"SMOLTBOT_TLS_KEY .* is not a PEM file"):
        TlsConfig.from_files(pki.client.cert, not_pem)
    # A key must never end up in a log line through repr().
    assert "PRIVATE" not in repr(TlsConfig.from_files(pki.client.cert, pki.client.key))


def test_serve_explains_a_plaintext_bind_beyond_loopback(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SMOLTBOT_")}
    env.update(SMOLTBOT_HOME=str(tmp_path / "home"), SMOLTBOT_HASH_SECRET="x")
    done = subprocess.run(
        [sys.executable, "-m", "smoltbot.cli.main", "serve", "registry", "--listen", "0.0.0.0:0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "error: registry: refusing to serve plaintext gRPC on 0.0.0.0:0" in done.stderr
    assert "SMOLTBOT_ALLOW_INSECURE_GRPC=true" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- the whole stack


async def test_the_whole_stack_works_over_mutual_tls(
    mtls_settings: Callable[..., Settings], pki: Pki
) -> None:
    """Registry and Observer serve mutual TLS; the Observer, the gateway and the API reach them
    with their client certificates; an agent's call becomes a trace readable through the API."""
    from smoltbot.api.app import start_api
    from smoltbot.gateway import start_gateway
    from smoltbot.observer.server import build_server as build_observer
    from tests.support.anthropic_standin import AnthropicStandin

    standin = AnthropicStandin()
    await standin.start()
    settings = mtls_settings(upstream_url=standin.base_url)
    registry = await build_registry(settings, address="127.0.0.1:0")
    await registry.start()
    settings = settings.model_copy(update={"registry_address": f"127.0.0.1:{registry.port}"})
    observer = await build_observer(settings.model_copy(update={"observer_poll_interval": 0.1}),
                                    address="127.0.0.1:0")
    await observer.start()
    # The gateway and API have only a client certificate.
    clients = settings.model_copy(update={"observer_address": f"127.0.0.1:{observer.port}",
                                          "tls_cert": str(pki.client.cert), "tls_key": str(pki.client.key)})
    gateway = await start_gateway(clients)
    api = await start_api(clients)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post(f"{gateway.base_url}/anthropic/v1/messages", headers={
                "x-api-key": "sk-ant-api03-tls-SECRET-1", "anthropic-version": "2023-06-01",
            }, json={"model": "claude-haiku-4-5", "max_tokens": 64,
                     "messages": [{"role": "user", "content": "hello over mTLS"}]})
            assert reply.status_code == 200
            agent_id = reply.headers["x-smoltbot-agent"]
            assert agent_id, "the gateway resolved the agent through the Registry over mutual TLS"
            for _ in range(100):
                traces = (await http.get(f"{api.base_url}/v1/agents/{agent_id}/traces")).json()
                if traces.get("items"):
                    break
                await asyncio.sleep(0.1)
            assert len(traces["items"]) == 1, traces
            health = (await http.get(f"{gateway.base_url}/health")).json()
            assert health["registry"]["reachable"] and health["observer"]["reachable"]
    finally:
        await gateway.stop()
        await api.stop()
        await observer.stop(0.5)
        await registry.stop(0.5)
        await standin.stop()
