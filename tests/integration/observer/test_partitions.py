"""PostgreSQL's month partitions (migration 0014, core/storage/partitions.py): an existing database
is converted with every row kept, months get their partitions ahead of time (and late ones take
their rows out of the default partition), and retention drops a month whole once every agent with
rows in it is past its period, counting what it held exactly as row deletes do; with two
observers each month is dropped once. SQLite has no partitions (test_retention covers its rows)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from smoltbot.core.storage import Database, insert_ignoring_conflicts, migrate, open_database, partitions
from smoltbot.core.storage.migrate import alembic_config
from smoltbot.core.storage.partitions import AHEAD, Month
from smoltbot.observer.retention_store import RetentionStore
from smoltbot.observer.tables import (
    drift_pending,
    evidence_cuts,
    evidence_history,
    exchange_usage,
    retention_state,
    trace_violations,
    traces,
)
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.test_retention import _brute_force, _card, _retention, _served
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge


@pytest.fixture
def database_url(postgres_database: str) -> Iterator[str]:
    """This module's tests run on PostgreSQL alone (the observer stack's database too)."""
    yield postgres_database


def _mid(month: Month, hours: int = 0) -> datetime:
    return month.start + timedelta(days=14, hours=hours)


async def _where(db: Database, table: str) -> dict[str, int]:
    """Rows of `table` per partition it is stored in."""
    async with db.read() as conn:
        rows = (await conn.execute(sa.text(
            f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1"))).all()
    return {str(name): int(count) for name, count in rows}


async def _scalar(db: Database, sql: str) -> Any:
    async with db.read() as conn:
        return (await conn.execute(sa.text(sql))).scalar()


async def _downgrade(db: Database, revision: str) -> None:
    def run(conn: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        conn.commit()

    async with db.engine.connect() as conn:
        await conn.run_sync(run)


def _evidence(agent_id: str, exchange_id: str, session_id: str, at: datetime) -> dict[str, Any]:
    return {"exchange_id": exchange_id, "agent_id": agent_id, "session_id": session_id, "started_at": at,
            "relayed_at": at, "status": "verified", "diverged_at": None, "finding_count": 0,
            "rewrite_count": 0, "ledger_json": "{}", "check_json": "{}"}


async def test_an_existing_database_is_converted_with_every_row_in_its_month(postgres_database: str) -> None:
    db = open_database(postgres_database)
    try:
        await migrate(db, "0013")
        now = datetime.now(UTC)
        current = Month.of(now)
        ages = {"recent": current, "two_months": current.shifted(-2),
                "ancient": current.shifted(-40)}  # beyond the 36 months backfilled
        parts = [exchange_rows("smolt-aaaa0001", "a" * 64, _mid(month), index, violated=True)
                 for index, month in enumerate(ages.values())]
        await bulk_insert(db, merge(parts))
        async with db.begin() as conn:
            await conn.execute(evidence_history.insert(), [_evidence(
                "smolt-aaaa0001", part["exchanges"][0]["exchange_id"], "s1", _mid(month))
                for part, month in zip(parts, ages.values(), strict=True)])

        policies = "SELECT tablename, policyname, permissive, roles, cmd, qual FROM pg_policies ORDER BY 1, 2"
        async with db.read() as conn:
            before = (await conn.execute(sa.text(policies))).all()
        await migrate(db)

        # Row-level security as before, and on every partition (no policy: nothing read around it).
        async with db.read() as conn:
            assert (await conn.execute(sa.text(policies))).all() == before
            unsecured = (await conn.execute(sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity "
                "AND c.relname <> 'alembic_version'"))).scalars().all()
        assert unsecured == []
        assert {"traces", "exchange_usage"} <= {row[0] for row in before}
        first = current.shifted(-36)
        expected = {partitions.partition_name("traces", month) for month in
                    partitions.months(first, current.shifted(AHEAD))}
        async with db.read() as conn:
            have = await partitions.existing(conn, "traces")
        assert {partitions.partition_name("traces", month) for month in have} == expected
        for table in ("traces", "exchange_usage", "evidence_history"):
            assert await _where(db, table) == {
                partitions.partition_name(table, ages["recent"]): 1,
                partitions.partition_name(table, ages["two_months"]): 1,
                partitions.default_name(table): 1,
            }
        assert await _scalar(db, "SELECT count(*) FROM trace_violations") == 3
        assert await _scalar(db, "SELECT count(*) FROM drift_pending") == 3
        # The keys hold the month; no foreign key points at traces any more.
        assert await _scalar(db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE conname = 'traces_pkey'") == 'PRIMARY KEY (trace_id, "timestamp")'
        assert await _scalar(db, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                                 "AND confrelid = 'traces'::regclass") == 0
        # Each partition's indexes are named after its table's.
        recent = partitions.partition_name("traces", ages["recent"])
        assert await _scalar(db, f"SELECT count(*) FROM pg_indexes WHERE tablename = '{recent}' "
                                 f"AND indexname = 'ix_traces_agent_timestamp_{ages['recent'].suffix}'") == 1
        # A trace written again (same id, same time) is still the same row.
        row = parts[0]["traces"][0]
        async with db.begin() as conn:
            await conn.execute(insert_ignoring_conflicts(db.dialect, traces), [row])
        assert await _scalar(db, "SELECT count(*) FROM traces") == 3

        await _downgrade(db, "0013")  # and back: one plain table again, its foreign keys restored
        assert await _scalar(db, "SELECT count(*) FROM traces") == 3
        assert await _scalar(db, "SELECT relkind::text FROM pg_class WHERE relname = 'traces'") == "r"
        assert await _scalar(db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE conname = 'traces_pkey'") == "PRIMARY KEY (trace_id)"
        assert await _scalar(db, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                                 "AND confrelid = 'traces'::regclass") == 2
    finally:
        await db.close()


async def test_a_month_that_gets_its_partition_late_takes_its_rows_from_the_default(db: Database) -> None:
    now = datetime.now(UTC)
    later = Month.of(now).shifted(AHEAD + 3)  # no partition yet: its rows go to the default
    await bulk_insert(db, merge([exchange_rows("smolt-aaaa0001", "a" * 64, _mid(later, index), index)
                                 for index in range(5)]))
    assert await _where(db, "traces") == {"traces_default": 5}

    made = await partitions.roll_forward(db, later.start)
    assert partitions.partition_name("traces", later) in made
    assert await _where(db, "traces") == {partitions.partition_name("traces", later): 5}
    assert await _where(db, "exchange_usage") == {partitions.partition_name("exchange_usage", later): 5}
    assert await partitions.roll_forward(db, later.start) == []  # nothing left to make
    async with db.read() as conn:
        indexes = set((await conn.execute(sa.text(
            "SELECT indexname FROM pg_indexes WHERE tablename = :name"),
            {"name": partitions.partition_name("traces", later)})).scalars())
    assert f"ix_traces_agent_kind_covering_{later.suffix}" in indexes
    assert all(name.endswith(later.suffix) for name in indexes), indexes
    assert await _scalar(db, "SELECT relrowsecurity FROM pg_class WHERE relname = "
                             f"'{partitions.partition_name('traces', later)}'") is True


async def test_retention_drops_a_month_whole_once_every_agent_in_it_is_past_its_period(
        observer_stack: ObserverStack) -> None:
    stack = observer_stack
    await stack.stop_observer()
    now = datetime.now(UTC)
    shared = Month.of(now - timedelta(days=200))  # a (30 days) and b (365 days): b keeps it
    alone = Month.of(now - timedelta(days=100))  # a's alone: dropped whole
    (a, a_hash), (b, b_hash) = await stack.agent(), await stack.agent()
    await stack.put_card(a, a_hash, _card(365))
    await stack.put_card(b, b_hash, _card(365))
    await partitions.roll_forward(stack.db, now, first=shared)
    parts, evidence, index = [], [], 0
    for agent_id, agent_hash, month, count in ((a, a_hash, shared, 6), (b, b_hash, shared, 4),
                                               (a, a_hash, alone, 9), (a, a_hash, Month.of(now), 3),
                                               (b, b_hash, Month.of(now), 2)):
        for hour in range(count):
            index += 1
            at = min(_mid(month, hour), now - timedelta(hours=1 + hour))
            part = exchange_rows(agent_id, agent_hash, at, index, violated=hour % 2 == 0)
            parts.append(part)
            evidence.append(_evidence(agent_id, part["exchanges"][0]["exchange_id"],
                                      f"sess-{agent_id}-{month.suffix}", at))
    await bulk_insert(stack.db, merge(parts))
    async with stack.db.begin() as conn:
        await conn.execute(evidence_history.insert(), evidence)

    # A first pass keeps everything (both cards: 365 days) and counts it into the integrity counters.
    retention, registry = _retention(stack, retention_max_days=400)
    try:
        assert (await retention.run_pass(now)).traces == {}
    finally:
        await registry.close()
    await stack.put_card(a, a_hash, _card(30))
    first, first_registry = _retention(stack, retention_max_days=400)
    second, second_registry = _retention(stack, retention_max_days=400)
    try:
        one, two = await asyncio.gather(first.run_pass(now), second.run_pass(now))
    finally:
        await first_registry.close()
        await second_registry.close()

    dropped = [batch.table for report in (one, two) for batch in report.batches if batch.table[-7:-6] == "p"]
    assert sorted(dropped) == sorted(partitions.partition_name(table, alone)
                                     for table in ("traces", "exchange_usage", "evidence_history"))
    async with stack.db.read() as conn:
        assert alone not in await partitions.existing(conn, "traces")
        assert shared in await partitions.existing(conn, "traces")
    # Exactly what is past its time is gone: a's rows of both months (one month dropped, the
    # other's rows deleted), nothing of b's, nothing recent.
    assert await _where(stack.db, "traces") == {partitions.partition_name("traces", shared): 4,
                                                partitions.partition_name("traces", Month.of(now)): 5}
    async with stack.db.read() as conn:
        left = {table.name: set((await conn.execute(sa.select(table.c.agent_id))).scalars())
                for table in (traces, exchange_usage, evidence_history, trace_violations, drift_pending)}
        counted = {row.agent_id: row for row in (await conn.execute(sa.select(retention_state))).all()}
        cuts = {(row.agent_id, row.session_id): row.cut_before
                for row in (await conn.execute(sa.select(evidence_cuts))).all()}
        violations_of_a = (await conn.execute(sa.select(sa.func.count()).select_from(trace_violations)
                                              .where(trace_violations.c.agent_id == a))).scalar_one()
    assert all(names == {a, b} for names in left.values()), left
    assert violations_of_a == 2  # of a's 3 recent traces, hours 0 and 2
    # Counted as row deletes are: per agent, in the report and in retention_state.
    assert one.traces.get(a, 0) + two.traces.get(a, 0) == 15
    assert not one.traces.get(b) and not two.traces.get(b)
    assert counted[a].deleted_traces == 15 and b not in counted
    assert counted[a].since == now - timedelta(days=30)
    # The ledger's cut for the dropped month's session says its calls are gone; a cut goes itself
    # one period after what it stands for (retention_store), so it may be gone already.
    assert cuts.get((a, f"sess-{a}-{alone.suffix}")) == (
        alone.end if alone.end >= now - timedelta(days=60) else None)
    # The integrity counters lost exactly the dropped traces.
    for agent_id in (a, b):
        assert await _served(stack, agent_id) == await _brute_force(stack, agent_id)


async def test_a_month_is_kept_while_an_agent_in_it_has_no_known_period(
        observer_stack: ObserverStack) -> None:
    stack = observer_stack
    await stack.stop_observer()
    now = datetime.now(UTC)
    month = Month.of(now - timedelta(days=100))
    a, a_hash = await stack.agent()
    b, b_hash = "smolt-ffff0001", "f" * 64
    await stack.put_card(a, a_hash, _card(30))
    await partitions.roll_forward(stack.db, now, first=month)
    # b's rows are there, but the Registry knows no such agent, so no period of b's: no guess.
    await bulk_insert(stack.db, merge([exchange_rows(a, a_hash, _mid(month), 1),
                                       exchange_rows(b, b_hash, _mid(month, 1), 2)]))
    retention, registry = _retention(stack, retention_max_days=400)
    try:
        report = await retention.run_pass(now)
    finally:
        await registry.close()
    assert b in report.skipped
    async with stack.db.read() as conn:
        assert month in await partitions.existing(conn, "traces")
    assert await _where(stack.db, "traces") == {partitions.partition_name("traces", month): 1}
    assert report.traces == {a: 1}
    # Past the operator's longest period the month goes, whatever the cards say.
    retention, registry = _retention(stack, retention_max_days=60)
    try:
        report = await retention.run_pass(now)
    finally:
        await registry.close()
    assert partitions.partition_name("traces", month) in {batch.table for batch in report.batches}
    assert report.traces == {b: 1}


async def test_a_dropped_months_ledger_sessions_get_their_cut(db: Database) -> None:
    now = datetime.now(UTC)
    month = Month.of(now - timedelta(days=100))
    await partitions.roll_forward(db, now, first=month)
    async with db.begin() as conn:
        await conn.execute(evidence_history.insert(), [
            _evidence("smolt-aaaa0001", f"{index:032x}", f"s{index % 2}", _mid(month, index))
            for index in range(4)])
    batch = await RetentionStore(db).drop_partition("evidence_history", month)
    assert batch.table == partitions.partition_name("evidence_history", month)
    assert batch.rows_by_agent == {"smolt-aaaa0001": 4} and batch.traces_by_agent == {}
    async with db.read() as conn:
        cuts = {(row.agent_id, row.session_id): row.cut_before
                for row in (await conn.execute(sa.select(evidence_cuts))).all()}
        assert month not in await partitions.existing(conn, "evidence_history")
    assert cuts == {("smolt-aaaa0001", "s0"): month.end, ("smolt-aaaa0001", "s1"): month.end}
