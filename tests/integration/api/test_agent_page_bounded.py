"""The agent page reads the usage of the sessions it shows, not the agent's whole history: every
statement it runs on `exchange_usage` reads a range of an index by agent and session (checked on
each statement's query plan, on both databases), and the sessions shown still carry their calls
and cost."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from smoltbot.core.storage import open_database
from tests.integration.api.helpers import Stack, auth, hash_of, new_credential
from tests.support.query_plans import explain, index_reads, statements_on
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge


async def test_the_agent_page_reads_the_usage_of_the_sessions_it_shows_only(
        stack: Stack, api: httpx.AsyncClient) -> None:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    now = datetime.now(UTC)
    # 40 sessions of 50 calls: the Registry knows the last two (the page shows those).
    db = open_database(stack.settings.effective_database_url)
    try:
        await bulk_insert(db, merge(
            exchange_rows(agent_id, hash_of(stack, credential), now - timedelta(minutes=2000 - index), index,
                          session_id=f"sess-{index // 50}") for index in range(2000)))
        for number in (38, 39):
            report = {"agent_id": agent_id, "session_id": f"sess-{number}", "event": "started",
                      "occurred_at": (now - timedelta(minutes=100 - number % 2)).isoformat()}
            assert (await api.post("/v1/sessions", json=report, headers=auth(credential))).status_code == 200

        with statements_on("exchange_usage") as statements:
            page = await api.get(f"/agents/{agent_id}")
        assert page.status_code == 200
        summaries = re.findall(r'data-testid="session-summary">([^<]*)', page.text)
        assert len(summaries) == 2 and all("50 calls" in summary for summary in summaries), summaries

        assert statements
        async with db.begin() as conn:  # the planner knows how selective a session is
            await conn.exec_driver_sql("ANALYZE exchange_usage")
        for statement, parameters in statements:
            reads = index_reads(await explain(db, statement, parameters), "exchange_usage")
            plan = await explain(db, statement, parameters)
            assert reads and all("session_id" in condition for _, condition in reads), (statement, plan)
    finally:
        await db.close()
