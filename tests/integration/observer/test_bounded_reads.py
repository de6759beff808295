"""Reads that run on every scrape or page view read a bounded range of an index, whatever the
size of history: checked on the statement's query plan on both databases (EXPLAIN QUERY PLAN on
SQLite, EXPLAIN on PostgreSQL with sequential scans disabled, since on tables this small the
planner would rightly scan them whatever indexes there are)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from smoltbot.core.storage import Database, migrate, open_database
from smoltbot.observer.queue import ExchangeQueue, queue_count_query
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = open_database(database_url)
    await migrate(database)
    try:
        yield database
    finally:
        await database.close()


async def _plan(db: Database, statement: sa.Executable) -> str:
    async with db.engine.connect() as conn:
        sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if db.dialect == "sqlite":
            rows = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")).all()
            return "\n".join(str(row[-1]) for row in rows)
        await conn.exec_driver_sql("SET enable_seqscan = off")
        rows = (await conn.exec_driver_sql(f"EXPLAIN {sql}")).all()
        return "\n".join(str(row[0]) for row in rows)


def _reads(plan: str, table: str) -> list[str]:
    """How `plan` reads `table`: the name of each index it reads a range of (a condition on the
    index's leading columns), "SCAN" for each full scan (of the table or of an index)."""
    found = []
    lines = plan.splitlines()
    for number, line in enumerate(lines):
        sqlite = re.search(rf"\b(SEARCH|SCAN) {table}\b(?: USING (?:COVERING )?INDEX (\w+))?", line)
        if sqlite:
            found.append(sqlite.group(2) if sqlite.group(1) == "SEARCH" and sqlite.group(2) else "SCAN")
            continue
        postgres = re.search(r"(Seq Scan|Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)?"
                             r" (?:using|on) (\w+)(?: on (\w+))?", line)
        if not postgres:
            continue
        if postgres.group(1) == "Seq Scan":
            if postgres.group(2) == table:
                found.append("SCAN")
            continue
        index = postgres.group(2)
        if postgres.group(3) != table and not index.startswith((f"ix_{table}_", f"{table}_")):
            continue
        node = []  # this node's detail lines, up to the next node
        for detail in lines[number + 1:]:
            if "->" in detail:
                break
            node.append(detail)
        found.append(index if any("Index Cond" in detail for detail in node) else "SCAN")
    return found


async def test_the_queue_gauge_counts_an_index_range_of_the_queue_states(db: Database) -> None:
    plan = await _plan(db, queue_count_query())
    assert _reads(plan, "exchanges") == ["ix_exchanges_due"], plan


async def test_the_queue_gauge_counts_waiting_processing_and_failed_exchanges(db: Database) -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    states = ["done"] * 5 + ["pending"] * 2 + ["processing", "failed"]
    await bulk_insert(db, merge(exchange_rows("smolt-aaaa0001", "h" * 64, at, index, state=state)
                                for index, state in enumerate(states)))
    assert await ExchangeQueue(db).queue_counts() == {"pending": 2, "processing": 1, "failed": 1}
