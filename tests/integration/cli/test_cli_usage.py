"""`smoltbot sessions`, `smoltbot session <id>` and `smoltbot usage` over a Claude Code session with
a sub-agent that the real Observer recorded: plain text when piped, the API's JSON with --json,
unknown cost shown as such, one error line for a wrong session or grouping. `smoltbot drift` and
`smoltbot drift ack` over a real drift alert."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.api.helpers import anthropic_response, make_exchange
from tests.integration.api.test_api_drift_acknowledge import FORBID_DELETE
from tests.integration.api.test_api_usage import SESSION, claude_code_session
from tests.integration.cli.conftest import Cli, LocalStack, PutTraces
from tests.integration.cli.helpers import assert_one_error_line, fields_of


@pytest.fixture
async def recorded(local_stack: LocalStack, initialised: str, credential: str,
                   put_traces: PutTraces) -> list[dict[str, Any]]:
    exchanges = claude_code_session(local_stack.ingest_target, credential, initialised)
    return await put_traces(initialised, *exchanges)


async def test_usage_by_model_plain_and_json(cli: Cli, local_stack: LocalStack, initialised: str,
                                             recorded: list[dict[str, Any]]) -> None:
    plain = await cli("usage", "--by", "model")
    assert plain.exit_code == 0, plain.output
    lines = plain.stdout.splitlines()
    sonnet = next(line for line in lines if line.startswith("claude-sonnet-4-5-20250929"))
    assert "$0.00933" in sonnet and "5,000 read / 1,000 written" in sonnet
    unknown = next(line for line in lines if line.startswith("claude-unknown-7"))
    assert "$0 + 1 call of unknown cost" in unknown
    total = next(line for line in lines if line.startswith("total"))
    assert "$0.00933 + 1 call of unknown cost" in total and "6,115 in / 255 out" in total
    assert "\x1b[" not in plain.stdout  # plain when piped

    as_json = json.loads((await cli("usage", "--json", "--by", "session")).stdout)
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        expected = (await client.get(f"/v1/agents/{initialised}/usage",
                                     params={"group_by": "session"})).json()
    assert as_json == expected and [group["key"] for group in as_json["groups"]] == [SESSION]


async def test_sessions_and_one_session(cli: Cli, recorded: list[dict[str, Any]]) -> None:
    listed = await cli("sessions")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith(SESSION))
    assert "$0.00933 + 1 call of unknown cost" in row
    columns = [cell for cell in row.split("  ") if cell.strip()]
    assert [cell.strip() for cell in columns[2:4]] == ["1", "3"]  # turns counted from the calls, calls
    assert json.loads((await cli("sessions", "--json")).stdout)[0]["usage"]["calls"] == 3

    shown = await cli("session", SESSION)
    assert shown.exit_code == 0, shown.output
    fields = fields_of(shown.stdout)
    assert fields["turns"] == "1" and fields["calls"] == "3"
    assert fields["named by"] == "x-claude-code-session-id"
    assert fields["cost"] == "$0.00933 + 1 call of unknown cost"
    assert fields["prompt cache"] == "5,000 read / 1,000 written"
    sub_agent = next(line for line in shown.stdout.splitlines() if line.startswith("a7f3c2e19b"))
    assert "Explore" in sub_agent and "main agent" in sub_agent and "$0.00105" in sub_agent
    detail = json.loads((await cli("session", SESSION, "--json")).stdout)
    assert detail["sub_agents"][0]["sub_agent_id"] == "a7f3c2e19b"


async def test_wrong_session_and_grouping_are_one_error_line(cli: Cli, initialised: str) -> None:
    assert_one_error_line(await cli("session", "no-such-session"), "no-such-session", "smoltbot sessions")
    assert_one_error_line(await cli("usage", "--by", "week"), "--by", "day, model, session")
    assert_one_error_line(await cli("usage", "--since", "yesterday"), "--since", "2026-12-01")


async def test_drift_lists_alerts_and_the_owner_acknowledges_one(
        cli: Cli, local_stack: LocalStack, initialised: str, credential: str, put_traces: PutTraces) -> None:
    assert "No drift alerts" in (await cli("drift")).stderr
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        stored = await client.put(f"/v1/agents/{initialised}/card", json=FORBID_DELETE,
                                  headers={"x-api-key": credential})
        assert stored.status_code == 200, stored.text
    start = datetime.now(UTC) + timedelta(seconds=5)
    await put_traces(initialised, *(make_exchange(
        local_stack.ingest_target, credential, anthropic_response(tool=("delete_file", {"path": f"/d/{n}"})),
        agent_id=initialised, at=start + timedelta(seconds=n)) for n in range(5)))
    for _ in range(150):
        alerts = json.loads((await cli("drift", "--json")).stdout)
        if alerts:
            break
        await asyncio.sleep(0.1)
    (alert,) = alerts
    listed = await cli("drift")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(alert["alert_id"]))
    assert "open" in row and "acknowledged" not in row

    acked = await cli("drift", "ack", alert["alert_id"])
    assert acked.exit_code == 0, acked.output
    assert "Acknowledged" in acked.stdout and "closes by itself" in acked.stdout
    listed = await cli("drift")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(alert["alert_id"]))
    assert "open, acknowledged" in row
    assert_one_error_line(await cli("drift", "ack", "da-" + "0" * 32), "no drift alert", "smoltbot drift")
    assert_one_error_line(await cli("drift", "ack", alert["alert_id"], env={"ANTHROPIC_API_KEY": None}),
                          "credential")
