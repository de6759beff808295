"""`smoltbot agent delete-data` against the real stack: it asks first (no answer, nothing
deleted), needs the agent's credential, and with it deletes the agent's traces and the agent."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.api.helpers import anthropic_response, make_exchange
from tests.integration.cli.conftest import Cli, LocalStack, PutTraces
from tests.integration.cli.helpers import assert_one_error_line


@pytest.fixture
async def recorded(local_stack: LocalStack, initialised: str, credential: str,
                   put_traces: PutTraces) -> list[dict[str, Any]]:
    exchange = make_exchange(local_stack.ingest_target, credential, anthropic_response(
        text="Reading it.", tool=("read_file", {"path": "notes.txt"})), agent_id=initialised)
    return await put_traces(initialised, exchange)


async def test_the_owner_deletes_the_agents_data(cli: Cli, local_stack: LocalStack, initialised: str,
                                                 recorded: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        assert len((await client.get(f"/v1/agents/{initialised}/traces")).json()["items"]) == 1

        declined = await cli("agent", "delete-data", input="n\n")
        assert declined.exit_code == 1 and "nothing deleted" in declined.output
        assert_one_error_line(await cli("agent", "delete-data", "--yes", env={"ANTHROPIC_API_KEY": None}),
                              "credential")
        assert (await client.get(f"/v1/agents/{initialised}")).status_code == 200

        deleted = await cli("agent", "delete-data", "--yes", "--json")
        assert deleted.exit_code == 0, deleted.output
        body = json.loads(deleted.stdout)
        assert body["agent_id"] == initialised
        assert body["deleted_rows"]["traces"] == 1 and body["deleted_rows"]["agents"] == 1
        assert (await client.get(f"/v1/agents/{initialised}")).status_code == 404
        assert (await client.get("/v1/traces", params={"agent_id": initialised})).json()["items"] == []

        again = await cli("agent", "delete-data", "--yes")
        assert again.exit_code == 0, again.output
        assert "Deleted" in again.stdout
