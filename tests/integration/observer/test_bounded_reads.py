"""Reads that run on every scrape or list read a bounded range of an index, whatever the size
of history: checked on the statement's query plan on both databases (tests/support/query_plans.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from smoltbot.core.storage import Database, migrate, open_database
from smoltbot.observer.queue import ExchangeQueue, queue_count_query
from tests.support.query_plans import explain, index_reads
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = open_database(database_url)
    await migrate(database)
    try:
        yield database
    finally:
        await database.close()


async def test_the_queue_gauge_counts_an_index_range_of_the_queue_states(db: Database) -> None:
    plan = await explain(db, queue_count_query())
    assert [index for index, _ in index_reads(plan, "exchanges")] == ["ix_exchanges_due"], plan


async def test_the_queue_gauge_counts_waiting_processing_and_failed_exchanges(db: Database) -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    states = ["done"] * 5 + ["pending"] * 2 + ["processing", "failed"]
    await bulk_insert(db, merge(exchange_rows("smolt-aaaa0001", "h" * 64, at, index, state=state)
                                for index, state in enumerate(states)))
    assert await ExchangeQueue(db).queue_counts() == {"pending": 2, "processing": 1, "failed": 1}
