"""Several sessions' usage in one read (GetSessionsUsage, `GET /v1/agents/{id}/usage/sessions`),
against the real services on both databases: the same figures as each session's own read, the
sessions without calls left out, one statement per table over the sessions' index ranges
whatever their number, the bound named in the error; and the agent page reads its sessions'
usage with it (one statement on `exchange_usage`, not one read per session)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from smoltbot.core.storage import open_database
from tests.integration.api.helpers import (
    Stack,
    anthropic_response,
    auth,
    ingest,
    make_exchange,
    new_credential,
    wait_for_traces,
)
from tests.integration.api.test_api_usage import SESSION, claude_code_session
from tests.support.query_plans import explain, index_reads, statements_on

OTHER = "sess-other"


async def _two_sessions(api: httpx.AsyncClient, stack: Stack) -> str:
    """An agent with SESSION (three calls, a sub-agent, one of unknown cost) and OTHER (two calls),
    and a second agent with a session of the same id (which must not count)."""
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    at = datetime.now(UTC) - timedelta(minutes=5)
    other = [make_exchange(stack, credential, anthropic_response(text=f"Answer {index}."), agent_id=agent_id,
                           session_hint=OTHER, at=at + timedelta(seconds=index)) for index in range(2)]
    await ingest(stack, *claude_code_session(stack, credential, agent_id), *other)
    await wait_for_traces(api, agent_id, 5)
    stranger = new_credential()
    stranger_id = (await api.post("/v1/agents/resolve", headers=auth(stranger))).json()["agent_id"]
    await ingest(stack, make_exchange(stack, stranger, anthropic_response(text="Mine."), agent_id=stranger_id,
                                      session_hint=OTHER))
    await wait_for_traces(api, stranger_id, 1)
    return agent_id


def _summary_of(detail: dict[str, Any]) -> dict[str, Any]:
    return {key: detail[key] for key in ("session_id", "turn_count", "first_seen", "last_seen", "total",
                                         "integrity")}


async def test_sessions_usage_agrees_with_each_sessions_own_read(
        api: httpx.AsyncClient, stack: Stack) -> None:
    agent_id = await _two_sessions(api, stack)
    with statements_on("exchange_usage") as usage_statements, statements_on("traces") as trace_statements:
        response = await api.get(f"/v1/agents/{agent_id}/usage/sessions",
                                 params={"session_id": [OTHER, "no-calls-here", SESSION, OTHER]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agent_id"] == agent_id
    # In the order asked, once each; the session without a recorded call is left out.
    assert [item["session_id"] for item in body["items"]] == [OTHER, SESSION]
    for item in body["items"]:
        detail = await api.get(f"/v1/sessions/{item['session_id']}", params={"agent_id": agent_id})
        assert detail.status_code == 200, detail.text
        assert item == _summary_of(detail.json())
    by_id = {item["session_id"]: item for item in body["items"]}
    assert by_id[SESSION]["total"]["calls"] == 3 and by_id[SESSION]["turn_count"] == 1
    assert by_id[SESSION]["total"]["unknown_cost_calls"] == 1
    assert by_id[SESSION]["integrity"]["traces"] == 3
    assert by_id[OTHER]["total"]["calls"] == 2 and by_id[OTHER]["integrity"]["traces"] == 2

    # One statement per table for all the sessions, each an index range per session.
    assert len(usage_statements) == 1 and len(trace_statements) == 1
    db = open_database(stack.settings.effective_database_url)
    try:
        [(statement, parameters)] = usage_statements
        plan = await explain(db, statement, parameters)
        reads = index_reads(plan, "exchange_usage")
        assert reads and all(index.startswith("ix_exchange_usage_session") and "session_id" in condition
                             for index, condition in reads), plan
        [(statement, parameters)] = trace_statements
        reads = index_reads(await explain(db, statement, parameters), "traces")
        assert reads and all(index == "ix_traces_session_timestamp" and "session_id" in condition
                             for index, condition in reads), reads
    finally:
        await db.close()


async def test_sessions_usage_bad_input_names_the_parameter(api: httpx.AsyncClient, stack: Stack) -> None:
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(new_credential()))).json()["agent_id"]
    too_many = await api.get(f"/v1/agents/{agent_id}/usage/sessions",
                             params={"session_id": [f"s-{index}" for index in range(101)]})
    assert too_many.status_code == 400, too_many.text
    error = too_many.json()["error"]
    assert error["field"] == "session_id" and "at most 100" in error["message"], error
    at_bound = await api.get(f"/v1/agents/{agent_id}/usage/sessions",
                             params={"session_id": [f"s-{index}" for index in range(100)]})
    assert at_bound.status_code == 200 and at_bound.json()["items"] == []
    control = await api.get(f"/v1/agents/{agent_id}/usage/sessions", params={"session_id": ["bad\x01id"]})
    assert control.status_code == 400 and control.json()["error"]["field"] == "session_id", control.text
    missing = await api.get(f"/v1/agents/{agent_id}/usage/sessions")
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "session_id", missing.text


async def test_agent_page_reads_its_sessions_usage_at_once(api: httpx.AsyncClient, stack: Stack) -> None:
    agent_id = await _two_sessions(api, stack)
    with statements_on("exchange_usage") as statements:
        page = await api.get(f"/agents/{agent_id}")
    assert page.status_code == 200, page.text
    # The page lists the sessions the Registry knows (both) and shows each one's usage.
    assert SESSION in page.text and OTHER in page.text
    assert len(statements) == 1, [statement for statement, _ in statements]
