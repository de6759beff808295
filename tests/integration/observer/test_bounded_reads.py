"""Reads that run on every scrape or list read a bounded range of an index, whatever the size
of history: checked on the statement's query plan on both databases (tests/support/query_plans.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from smoltbot.core.storage import Database
from smoltbot.observer import integrity_counters
from smoltbot.observer.queue import ExchangeQueue, queue_count_query
from smoltbot.observer.record_kinds import DECISION
from tests.support.query_plans import explain, index_reads, statements_on
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge


async def test_the_queue_gauge_counts_an_index_range_of_the_queue_states(db: Database) -> None:
    plan = await explain(db, queue_count_query())
    assert [index for index, _ in index_reads(plan, "exchanges")] == ["ix_exchanges_due"], plan


async def test_the_queue_gauge_counts_waiting_processing_and_failed_exchanges(db: Database) -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    states = ["done"] * 5 + ["pending"] * 2 + ["processing", "failed"]
    await bulk_insert(db, merge(exchange_rows("smolt-aaaa0001", "h" * 64, at, index, state=state)
                                for index, state in enumerate(states)))
    assert await ExchangeQueue(db).queue_counts() == {"pending": 2, "processing": 1, "failed": 1}


async def test_the_all_time_integrity_read_counts_only_the_traces_since_the_mark(db: Database) -> None:
    # The counters hold everything before the mark; what is added is read from the
    # (agent_id, created_at) index range after it. Grouped by the plain column, SQLite read the
    # agent's whole history in (agent_id, record_kind) order instead.
    agent = "smolt-aaaa0002"
    at = datetime.now(UTC) - timedelta(days=3)
    await bulk_insert(db, merge(exchange_rows(agent, "h" * 64, at + timedelta(minutes=index), index)
                                for index in range(40)))
    async with db.begin() as conn:
        await integrity_counters.roll_up(conn, db.dialect, agent, at + timedelta(days=1))
        await conn.execute(sa.text("ANALYZE traces"))
    with statements_on("traces") as seen:
        async with db.read() as conn:
            sums = await integrity_counters.all_time(conn, agent)
    assert sums.kind(DECISION)[0] == 40
    plans = [await explain(db, statement, parameters) for statement, parameters in seen]
    reads = [read for plan in plans for read in index_reads(plan, "traces")]
    assert reads and all(index == "ix_traces_agent_created" and "created_at" in condition
                         for index, condition in reads), plans
