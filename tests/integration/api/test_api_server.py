"""The API under a real uvicorn server on an ephemeral port, wired to the real services:
plain HTTP, and Schemathesis against its own /openapi.json."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from smoltbot.api.app import RunningApi, start_api
from tests.integration.api.helpers import Stack, auth, new_credential, seed_agent

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "artifacts" / "api"


@pytest.fixture
async def server(stack: Stack) -> AsyncIterator[RunningApi]:
    running = await start_api(stack.settings, "127.0.0.1", 0, registry_address=stack.registry_address,
                              observer_address=stack.observer_address)
    try:
        yield running
    finally:
        await running.stop()


async def test_real_server_serves_the_api_with_request_ids_and_health(server: RunningApi) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        health = await client.get("/health")
        assert health.json() == {"status": "ok", "registry": "serving", "observer": "serving"}
        credential = new_credential()
        resolved = await client.post(
            "/v1/agents/resolve", headers={**auth(credential), "x-request-id": "req-42"}
        )
        assert resolved.status_code == 200
        assert resolved.headers["x-request-id"] == "req-42"
        agent = await client.get(f"/v1/agents/{resolved.json()['agent_id']}")
        assert agent.json()["trace_count"] == 0
        page = await client.get("/")
        assert page.status_code == 200 and resolved.json()["agent_id"] in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "smoltbot"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.timeout(150)
async def test_schemathesis_finds_no_server_error_and_no_response_off_its_schema(server: RunningApi,
                                                                                 stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        seeded = await seed_agent(client, stack)  # so reads and writes can find something, not only 404s
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = await _run([
        str(schemathesis), "run", f"{server.base_url}/openapi.json",
        "--checks", "all",
        # Valid-but-unknown values are answered 4xx on purpose: a forged cursor is 400, a
        # random agent id 404, a write with a random credential 403.
        "--exclude-checks", "positive_data_acceptance",
        # The seeded agent's credential: stateful runs resolve it and write to that agent.
        "-H", f"x-api-key: {seeded.credential}",
        # One worker: hypothesis' lambda introspection is not thread-safe on Python 3.11.
        "--max-examples", "15", "--seed", "20261124", "--workers", "1",
        "--generation-database", "none", "--request-timeout", "10", "--max-time", "30",
        "--report", "junit", "--report-junit-path", str(ARTIFACTS / "schemathesis.xml"),
        "--no-color",
    ])
    assert result.returncode == 0, result.stdout[-6000:]


async def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    import asyncio

    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"}
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, env=env)
    stdout, _ = await process.communicate()
    return subprocess.CompletedProcess(argv, process.returncode or 0, stdout.decode(errors="replace"), "")
