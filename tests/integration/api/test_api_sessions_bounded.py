"""`GET /v1/agents/{id}/sessions`, the list behind `smoltbot sessions`, on both databases: most
recently active first, every session once across its pages (ties on the activity time broken by
the session id), and each page read as a range of `ix_sessions_agent_activity` from its cursor on,
not the agent's sessions from the start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from smoltbot.core.storage import open_database
from smoltbot.registry.store import sessions
from tests.integration.api.helpers import Stack, auth, new_credential
from tests.support.query_plans import explain, index_reads, statements_on


async def test_sessions_page_most_recent_first_each_page_an_index_range(
        api: httpx.AsyncClient, stack: Stack) -> None:
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(new_credential()))).json()["agent_id"]
    other = (await api.post("/v1/agents/resolve", headers=auth(new_credential()))).json()["agent_id"]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for index in range(40):
        # Three sessions share each activity time: the cursor must break ties by the session id.
        at = start + timedelta(minutes=index // 3)
        for owner in (agent_id, other):
            rows.append({"agent_id": owner, "session_id": f"sess-{index:03d}", "source": "client",
                         "status": "active", "started_at": at, "last_activity_at": at, "ended_at": None,
                         "turn_count": 1})
    db = open_database(stack.settings.effective_database_url)
    try:
        async with db.begin() as conn:
            await conn.execute(sa.insert(sessions), rows)
            await conn.exec_driver_sql("ANALYZE")
        seen: list[tuple[str, str]] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            with statements_on("sessions") as statements:
                response = await api.get(f"/v1/agents/{agent_id}/sessions", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            seen.extend((item["last_activity_at"], item["session_id"]) for item in body["items"])
            pages += 1
            if cursor is not None:  # a page after the first: the range from the cursor on
                listing = [(statement, parameters) for statement, parameters in statements
                           if "ORDER BY" in statement]
                assert listing
                for statement, parameters in listing:
                    reads = index_reads(await explain(db, statement, parameters), "sessions")
                    assert reads and all(index == "ix_sessions_agent_activity"
                                         and "last_activity_at" in condition for index, condition in reads), \
                        (statement, reads)
            cursor = body.get("next_cursor")
            if not cursor:
                break
    finally:
        await db.close()
    assert pages == 6
    expected = sorted(((start + timedelta(minutes=index // 3), f"sess-{index:03d}") for index in range(40)),
                      reverse=True)
    assert [session for _, session in seen] == [session for _, session in expected]
    assert [datetime.fromisoformat(at.replace("Z", "+00:00")) for at, _ in seen] == [at for at, _ in expected]
