"""The traces list's provider and enforcement filters read the columns migration 0011 adds,
through indexes whose range is the filter's value (checked on both databases' query plans, with
and without an agent), and the migration fills those columns from the traces stored before it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from smoltbot.core.storage import Database, migrate, open_database
from smoltbot.observer.tables import traces
from smoltbot.observer.trace_store import TraceStore
from tests.support.query_plans import explain, index_reads, statements_on
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge

AGENT = "smolt-0a0b0c0d"


@pytest.fixture
async def db(empty_database_url: str) -> AsyncIterator[Database]:
    """Empty: a test of the migration stops at the revision before it."""
    database = open_database(empty_database_url)
    try:
        yield database
    finally:
        await database.close()


def _rows(count: int, *, provider: str = "", action: str = "", offset: int = 0) -> dict[str, list[Any]]:
    """`count` exchanges of AGENT; their traces record `provider` and the gateway's `action`."""
    at = datetime.now(UTC) - timedelta(days=1)
    rows = merge(exchange_rows(AGENT, "h" * 64, at + timedelta(seconds=index), offset + index)
                 for index in range(count))
    for trace in rows["traces"]:
        document = json.loads(trace["trace_json"])
        if provider:
            document["observation"]["provider"] = provider
        if action:
            document["enforcement"] = {"mode": "enforce", "action": action}
        trace["trace_json"] = json.dumps(document)
    return rows


@pytest.mark.parametrize("agent_id", [AGENT, ""], ids=["agent", "all agents"])
async def test_a_filtered_list_reads_an_index_range_of_its_value(db: Database, agent_id: str) -> None:
    await migrate(db)
    # Enforcement on: most calls were allowed; a few went to OpenAI, a few were blocked.
    rows = merge([_rows(600, action="allowed"), _rows(10, provider="openai", offset=1000),
                  _rows(10, action="blocked", offset=2000)])
    for trace in rows["traces"]:  # as the observer writes them
        document = json.loads(trace["trace_json"])
        trace["provider"] = document["observation"].get("provider", "anthropic")
        trace["enforcement"] = (document.get("enforcement") or {}).get("action")
    await bulk_insert(db, rows)
    async with db.begin() as conn:  # the planner knows how rare the values are
        await conn.exec_driver_sql("ANALYZE traces")
    store = TraceStore(db)
    common: dict[str, Any] = {"agent_id": agent_id, "session_id": "", "verified": None, "since": None,
                              "until": None, "descending": True, "after": None, "limit": 51}
    for filters, column, found in (({"provider": "openai"}, "provider", 10),
                                   ({"enforcement": ["blocked", "nudged"]}, "enforcement", 10)):
        with statements_on("traces") as statements:
            assert len(await store.list_traces(**common, **filters)) == found
        [(statement, parameters)] = statements
        reads = index_reads(await explain(db, statement, parameters), "traces")
        assert reads and all(column in condition for _, condition in reads), (filters, reads)


async def test_the_migration_fills_the_columns_from_the_stored_traces(db: Database) -> None:
    await migrate(db, "0010")
    rows = merge([_rows(2), _rows(1, provider="openai", offset=10), _rows(1, provider="gemini", offset=20),
                  _rows(1, action="blocked", offset=30),
                  _rows(1, provider="openai", action="nudged", offset=40)])
    await bulk_insert(db, rows)
    await migrate(db)
    async with db.read() as conn:
        found = sorted(tuple(row) for row in (await conn.execute(
            sa.select(traces.c.provider, sa.func.coalesce(traces.c.enforcement, "")))).all())
    assert found == [("anthropic", ""), ("anthropic", ""), ("anthropic", "blocked"), ("gemini", ""),
                     ("openai", ""), ("openai", "nudged")]
