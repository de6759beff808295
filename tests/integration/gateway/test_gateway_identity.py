"""An agent exists only for a credential the upstream accepted: a call the upstream answers with
401 or 403 creates no agent and no session in the (real) Registry, and its exchange is still
recorded, under the credential's hash alone. An accepted call then creates the agent as before."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from smoltbot.core.grpc_client import open_channel
from smoltbot.core.identity import agent_hash
from smoltbot.core.settings import Settings
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import exchange_pb2, registry_service_pb2, registry_service_pb2_grpc
from tests.integration.gateway.helpers import Services, unused_address, wait_for_spooled
from tests.support.anthropic_standin import AnthropicStandin

pytestmark = pytest.mark.timeout(60)

MODEL = "claude-opus-4-7"
BODY = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]}
ACCEPTED = "sk-ant-api03-accepted-key-0123456789"
REVOKED = "sk-ant-api03-revoked-key-9876543210"


async def list_agents(settings: Settings, address: str) -> list[str]:
    async with open_channel(address, TlsConfig.from_settings(settings)) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        reply = await stub.ListAgents(registry_service_pb2.ListAgentsRequest(page_size=1000))
    return [agent.agent_id for agent in reply.agents]


async def get_agent_code(settings: Settings, address: str, agent_id: str) -> grpc.StatusCode:
    async with open_channel(address, TlsConfig.from_settings(settings)) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        try:
            await stub.GetAgent(registry_service_pb2.GetAgentRequest(agent_id=agent_id))
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_a_call_the_upstream_refuses_creates_no_agent_and_is_recorded_by_hash_alone(
        services: Services, start, standin: AnthropicStandin, gateway_settings: Settings,
        tmp_path: Path) -> None:
    standin.accepted_keys = {ACCEPTED}
    registry = await services.registry()
    address = f"127.0.0.1:{registry.port}"
    # The Observer is down, so the exchanges stay in the spool where the test reads them (and no
    # Observer resolves anything on its own).
    gateway = await start(registry=address, observer=unused_address())
    url = gateway.base_url + "/anthropic/v1"
    async with httpx.AsyncClient() as client:
        refused = [
            await client.post(url + "/messages", json=BODY, headers={"x-api-key": REVOKED}),
            await client.get(url + "/models", headers={"authorization": "Bearer " + REVOKED}),
            await client.post(url + "/messages", json=BODY, headers={
                "x-api-key": ACCEPTED, "x-standin-scenario": "error_403",
                "x-claude-code-session-id": "s-403"}),
        ]
        for reply in refused:
            assert reply.status_code in (401, 403), reply.text
            assert reply.json()["error"]["type"] in ("authentication_error", "permission_error")
            assert "x-smoltbot-agent" not in reply.headers and "x-smoltbot-session" not in reply.headers
        # Give a lookup that (wrongly) went on in the background time to land.
        exchanges = await wait_for_spooled(gateway, 3, tmp_path)
        assert await list_agents(gateway_settings, address) == []
        secret = gateway_settings.hash_secret.encode()
        for credential in (REVOKED, ACCEPTED):
            hashed = agent_hash(credential, secret)
            code = await get_agent_code(gateway_settings, address, "smolt-" + hashed[:8])
            assert code == grpc.StatusCode.NOT_FOUND
        hashes = [agent_hash(REVOKED, secret)] * 2 + [agent_hash(ACCEPTED, secret)]
        assert [e.agent_hash for e in exchanges] == hashes
        assert all(e.agent_id == "" and e.session_id == "" for e in exchanges)
        assert all(e.outcome == exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR for e in exchanges)

        # Accepted: the agent and its session exist, named in the response headers.
        for _ in range(50):
            accepted = await client.post(url + "/messages", json=BODY, headers={"x-api-key": ACCEPTED})
            assert accepted.status_code == 200
            if "x-smoltbot-agent" in accepted.headers:
                break
        agent_id = accepted.headers["x-smoltbot-agent"]
        assert accepted.headers["x-smoltbot-session"]
    expected = "smolt-" + agent_hash(ACCEPTED, secret)[:8]
    assert await list_agents(gateway_settings, address) == [agent_id] == [expected]
