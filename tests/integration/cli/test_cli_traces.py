"""`smoltbot logs` (with --follow) and `smoltbot integrity` over traces the real Observer built."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.api.helpers import anthropic_response, make_exchange
from tests.integration.cli.conftest import Cli, LocalStack, PutTraces
from tests.integration.cli.helpers import assert_nowhere

FORBIDDING_CARD = {
    "card_version": "unified/2026-04-26",
    "autonomy_mode": "observe",
    "integrity_mode": "observe",
    "principal": {"type": "human", "identifier": "owner@example.com", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency", "harm_prevention"]},
    "autonomy": {"bounded_actions": [], "forbidden_actions": ["delete_file"], "escalation_triggers": []},
    "audit": {"retention_days": 90, "queryable": True, "trace_format": "ap-trace-v1",
              "query_endpoint": "http://127.0.0.1:8000/v1/traces"},
}


async def _forbid_delete(local_stack: LocalStack, agent_id: str, credential: str) -> None:
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        response = await client.put(f"/v1/agents/{agent_id}/card", json=FORBIDDING_CARD,
                                    headers={"x-api-key": credential})
    assert response.status_code == 200, response.text


def _exchanges(
    local_stack: LocalStack, credential: str, agent_id: str, session: str = "sess-cli-1"
) -> list[Any]:
    # Calls are checked against the card in force when they started: date them after the card.
    now = datetime.now(UTC) + timedelta(seconds=40)
    target = local_stack.ingest_target
    return [
        make_exchange(target, credential, anthropic_response(
            thinking="The retry loop never stops; the backoff lives in client.py, so read it first.",
            text="Let me look at the retry logic.", tool=("read_file", {"path": "src/client.py"})),
            agent_id=agent_id, session_hint=session, at=now - timedelta(seconds=30)),
        make_exchange(target, credential, anthropic_response(
            text="The loop retries on every status, including 400s. It should stop on client errors."),
            agent_id=agent_id, session_hint=session, at=now - timedelta(seconds=20)),
        make_exchange(target, credential, anthropic_response(
            thinking="The old log file is in the way; deleting it is quickest.",
            tool=("delete_file", {"path": "logs/old.log"})),
            agent_id=agent_id, session_hint=session, at=now - timedelta(seconds=10)),
    ]


@pytest.fixture
async def traced(cli: Cli, local_stack: LocalStack, initialised: str, credential: str,
                 put_traces: PutTraces) -> list[dict[str, Any]]:
    """Three traces of the initialised agent, the newest a forbidden delete_file; newest first."""
    await _forbid_delete(local_stack, initialised, credential)
    return await put_traces(initialised, *_exchanges(local_stack, credential, initialised))


async def test_logs_lists_traces_newest_first_with_action_verification_violations_and_decision(
        cli: Cli, traced: list[dict[str, Any]], credential: str) -> None:
    result = await cli("logs")

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["TIME", "ACTION", "VERIFIED", "VIOLATIONS", "DECISION"]
    assert len(rows) == 3
    assert "execute delete_file" in rows[0] and "FAIL" in rows[0] and "forbidden_action" in rows[0]
    assert "execute read_file" in rows[2] and "pass" in rows[2]
    assert "respond" in rows[1]
    stamp = datetime.fromisoformat(traced[0]["timestamp"]).astimezone()
    assert rows[0].startswith(stamp.strftime("%Y-%m-%d %H:%M:%S"))
    assert_nowhere(credential, result.stdout, result.stderr)


async def test_logs_json_is_the_api_traces_newest_first(cli: Cli, traced: list[dict[str, Any]]) -> None:
    result = await cli("logs", "--json")

    assert result.exit_code == 0, result.output
    traces = json.loads(result.stdout)
    assert [t["trace_id"] for t in traces] == [t["trace_id"] for t in traced]
    assert traces[0]["verification"]["violations"][0]["type"] == "forbidden_action"
    assert traces[2]["observation"]["reasoning"]["present"] is True


async def test_logs_limit_and_session_filter(
    cli: Cli,
    local_stack: LocalStack,
    traced: list[dict[str, Any]],
    initialised: str,
    credential: str,
    put_traces: PutTraces,
) -> None:
    await put_traces(
        initialised, *_exchanges(local_stack, credential, initialised, session="sess-cli-other")[:1]
    )
    session_id = traced[0]["context"]["session_id"]

    limited = json.loads((await cli("logs", "--json", "-n", "1")).stdout)
    by_session = json.loads((await cli("logs", "--json", "--session", session_id)).stdout)
    everything = json.loads((await cli("logs", "--json", "-n", "100")).stdout)

    assert len(limited) == 1
    assert len(everything) == 4
    assert {t["trace_id"] for t in by_session} == {t["trace_id"] for t in traced}
    assert all(t["context"]["session_id"] == session_id for t in by_session)


async def test_logs_of_an_agent_without_traces_says_so(cli: Cli, initialised: str) -> None:
    result = await cli("logs")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "No traces yet" in result.stderr
    assert json.loads((await cli("logs", "--json")).stdout) == []


async def test_logs_rejects_an_out_of_range_limit(cli: Cli, initialised: str) -> None:
    result = await cli("logs", "-n", "0")

    assert result.exit_code == 2  # a usage error, reported by Typer
    assert "Traceback" not in result.output


def _interruptible() -> None:
    # Ctrl-C as a terminal delivers it: a test run started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt in the child.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _read_line(stream: asyncio.StreamReader, timeout: float = 20.0) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout)
    assert line, "the follow process closed its output"
    return line.decode()


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "table"])
async def test_logs_follow_prints_the_last_n_then_new_traces_as_they_land_until_ctrl_c(
        cli: Cli, local_stack: LocalStack, initialised: str, credential: str, put_traces: PutTraces,
        json_mode: bool) -> None:
    first, second, third = _exchanges(local_stack, credential, initialised)
    existing = await put_traces(initialised, first, second)  # newest first: the reply, then read_file
    args = ["logs", "--follow", "-n", "1", "--interval", "0.2"] + (["--json"] if json_mode else [])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smoltbot.cli.main", *args, env=cli.subprocess_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=_interruptible)
    assert process.stdout is not None and process.stderr is not None
    try:
        if not json_mode:
            assert (await _read_line(process.stdout)).split() == ["TIME", "ACTION", "VERIFIED", "VIOLATIONS",
                                                                   "DECISION"]
        line = await _read_line(process.stdout)
        if json_mode:
            assert json.loads(line)["trace_id"] == existing[0]["trace_id"]
        else:
            assert "recommend respond" in line
        await asyncio.sleep(0.5)  # a few polls: the older read_file trace is not new, so not printed

        landed = await put_traces(initialised, third)
        new = [trace for trace in landed if trace["trace_id"] not in {t["trace_id"] for t in existing}]
        assert len(new) == 1
        line = await _read_line(process.stdout)
        if json_mode:
            assert json.loads(line)["trace_id"] == new[0]["trace_id"]
        else:
            assert "execute delete_file" in line
    finally:
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    assert out == b""  # nothing else, nothing twice
    assert "Traceback" not in err.decode()
    assert_nowhere(credential, err.decode())


async def test_integrity_shows_score_totals_violations_and_coverage(cli: Cli, local_stack: LocalStack,
                                                                    traced: list[dict[str, Any]],
                                                                    initialised: str) -> None:
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        expected = (await client.get(f"/v1/integrity/{initialised}")).json()

    result = await cli("integrity")

    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip())
                                              for line in result.stdout.splitlines()[2:]) if len(cells) == 3}
    total = expected["all_time"]["total_traces"]
    verified = expected["all_time"]["verified_traces"]
    assert total == 3
    assert rows["verified"] == [f"{verified} / {total}"] * 2
    assert rows["forbidden_action"] == ["1", "1"]
    assert rows["with reasoning"] == [f"{expected['all_time']['with_reasoning']} / {total}"] * 2
    assert rows["score"] == [f"{expected['all_time']['score'] * 100:.1f}%"] * 2
    assert "RECENT (LAST 100)" in result.stdout
    assert f"{expected['all_time']['score'] * 100:.1f}%" in result.stdout
    assert "forbidden_action" in result.stdout
    assert "with reasoning" in result.stdout
    assert "open drift alerts: 0" in result.stdout

    as_json = json.loads((await cli("integrity", "--json")).stdout)
    assert as_json["all_time"] == expected["all_time"]


async def test_integrity_says_over_which_period_it_holds_once_retention_deleted_traces(
        cli: Cli, local_stack: LocalStack, traced: list[dict[str, Any]], initialised: str) -> None:
    from smoltbot.core.storage import open_database
    from smoltbot.core.tls import TlsConfig
    from smoltbot.observer.registry_client import RegistryClient
    from smoltbot.observer.retention import Retention
    from smoltbot.observer.retention_store import RetentionStore

    settings = local_stack.settings
    db = open_database(settings.effective_database_url)
    registry = RegistryClient(local_stack.registry_address, card_ttl=0, tls=TlsConfig.from_settings(settings))
    # A pass a year and a half from now: every trace of the agent is past any retention period.
    later = datetime.now(UTC) + timedelta(days=550)
    try:
        await Retention(RetentionStore(db), registry, settings).run_pass(later)
    finally:
        await registry.close()
        await db.close()
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        served = (await client.get(f"/v1/integrity/{initialised}")).json()
    assert served["retention_deleted_traces"] == len(traced) and served["retained_since"]

    result = await cli("integrity")

    assert result.exit_code == 0, result.output
    assert "ALL TIME" not in result.stdout.upper()
    assert f"retention: {len(traced)} older traces deleted" in result.stdout
    assert "No traces yet" not in result.stderr


async def test_integrity_of_an_agent_without_traces_is_not_an_error(cli: Cli, initialised: str) -> None:
    result = await cli("integrity")

    assert result.exit_code == 0, result.output
    assert "No traces yet" in result.stderr
