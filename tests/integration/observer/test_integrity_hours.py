"""The integrity timeline from per-hour roll-ups (migration 0012, observer/integrity_counters.py),
on both databases: it equals the timeline computed from the raw traces on random data, through
roll-ups, late traces, retention and the owner's deletion; the roll-ups equal the raw per-hour
counts of the traces before the mark; its statements read the traces created since the mark, not
the agent's week; and the migration fills the roll-ups of the traces stored before it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from smoltbot.core.storage import Database, migrate, open_database
from smoltbot.observer import integrity_counters
from smoltbot.observer.integrity import IntegrityPoint, timeline_grid
from smoltbot.observer.retention_store import RetentionStore
from smoltbot.observer.tables import integrity_hours, integrity_marks, traces
from smoltbot.observer.trace_store import TraceStore
from tests.support.query_plans import explain, index_reads, statements_on
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge

AGENT = "smolt-0e0f0a0b"
OTHER = "smolt-0e0f0a0c"
HASH = "ab" * 32


@pytest.fixture
async def db(empty_database_url: str) -> AsyncIterator[Database]:
    """Empty: a test of the migration stops at the revision before it."""
    database = open_database(empty_database_url)
    try:
        yield database
    finally:
        await database.close()


def _random_rows(rng: random.Random, agent_id: str, now: datetime, count: int, first_index: int, *,
                 days: float, created_now: bool = False) -> dict[str, list[dict[str, Any]]]:
    """`count` exchanges of the agent at random times of the last `days` days: some verified, some
    API activity, some a few hundred milliseconds before an hour ends (the hour is the floor);
    `created_now`: stored now, whatever their time (a spool sent late)."""
    parts = []
    for offset in range(count):
        if rng.random() < 0.2:
            hours_back = timedelta(hours=rng.randrange(int(days * 24)))
            hour = now.replace(minute=0, second=0, microsecond=0) - hours_back
            at = hour - timedelta(milliseconds=rng.randrange(1, 900))
        else:
            at = now - timedelta(seconds=rng.uniform(0, days * 86400))
        part = exchange_rows(agent_id, HASH, at, first_index + offset, violated=rng.random() < 0.3)
        trace = part["traces"][0]
        if created_now:
            trace["created_at"] = datetime.now(UTC)
        if rng.random() < 0.15:
            trace["record_kind"] = "activity"
            trace["violation_count"] = 0
            part["trace_violations"] = []
        parts.append(part)
    return merge(parts)


async def _raw(db: Database, agent_id: str, now: datetime) -> list[IntegrityPoint]:
    """The timeline as `observer.integrity` defines it, from every decision of the agent."""
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(traces.c.timestamp, traces.c.verified).where(
            traces.c.agent_id == agent_id, traces.c.record_kind == "decision"))).all()
    times = [(at if at.tzinfo else at.replace(tzinfo=UTC), bool(verified)) for at, verified in rows]
    recent = [at for at, _ in times if at >= now - timedelta(days=7)]
    if not recent:
        return []
    origin, step = timeline_grid(min(recent), now)
    points = []
    while origin + len(points) * step <= now:
        start = origin + len(points) * step
        inside = [verified for at, verified in times if start <= at < start + step]
        points.append(IntegrityPoint(start, len(inside), sum(inside)))
    return points


async def _served(db: Database, agent_id: str) -> tuple[list[IntegrityPoint], list[IntegrityPoint]]:
    """(the timeline served, the timeline computed from the raw traces at the same moment)."""
    served = await TraceStore(db).integrity(agent_id, 50)
    return served.timeline, await _raw(db, agent_id, served.computed_at)


Hours = dict[int, tuple[int, int]]


async def _rolled(db: Database, agent_id: str) -> tuple[Hours, Hours]:
    """(the agent's roll-ups, the raw per-hour counts of its decisions created before its mark)."""
    async with db.read() as conn:
        table = {int(hour): (int(total), int(verified)) for hour, total, verified in (await conn.execute(
            sa.select(integrity_hours.c.hour, integrity_hours.c.traces, integrity_hours.c.verified)
            .where(integrity_hours.c.agent_id == agent_id))).all()}
        mark = (await conn.execute(sa.select(integrity_marks.c.rolled_to)
                                   .where(integrity_marks.c.agent_id == agent_id))).scalar_one_or_none()
        rows = (await conn.execute(
            sa.select(traces.c.timestamp, traces.c.verified, traces.c.created_at)
            .where(traces.c.agent_id == agent_id, traces.c.record_kind == "decision"))).all()
    raw: Hours = {}
    for at, verified, created in rows:
        if mark is None or created >= mark:
            continue
        hour = int(at.timestamp()) // 3600
        total, passed = raw.get(hour, (0, 0))
        raw[hour] = (total + 1, passed + int(bool(verified)))
    return table, raw


async def test_the_timeline_from_hourly_roll_ups_equals_the_raw_timeline(db: Database) -> None:
    await migrate(db)
    rng = random.Random(20)
    now = datetime.now(UTC)
    store = RetentionStore(db)
    # Ten days of one agent (hourly and 6-hourly grids both occur below), another agent beside it.
    await bulk_insert(db, merge([_random_rows(rng, AGENT, now, 400, 0, days=10),
                                 _random_rows(rng, OTHER, now, 100, 5000, days=10)]))
    timeline, raw = await _served(db, AGENT)
    assert timeline == raw and sum(point.total_traces for point in raw) > 100

    for agent_id in (AGENT, OTHER):
        assert not (await store.roll_up(agent_id, now - integrity_counters.LAG)).busy
    table, counted = await _rolled(db, AGENT)
    assert table == counted and len(table) > 100
    assert (await _served(db, AGENT))[0] == (await _served(db, AGENT))[1]

    # Stored after the mark: calls of the last minutes and late ones with old trace times.
    await bulk_insert(db, merge([_random_rows(rng, AGENT, now, 60, 1000, days=8, created_now=True)]))
    timeline, raw = await _served(db, AGENT)
    assert timeline == raw

    # Retention: what is older than 6.5 days goes, counted (before the mark) and not (after it).
    while not (await store.delete_batch(AGENT, now - timedelta(days=6.5), 37)).empty:
        pass
    table, counted = await _rolled(db, AGENT)
    assert table == counted and all(total > 0 for total, _ in table.values())
    timeline, raw = await _served(db, AGENT)
    assert timeline == raw

    # The next roll-up takes the late traces in; another retention cut; still exact.
    assert not (await store.roll_up(AGENT, datetime.now(UTC) + timedelta(seconds=1))).busy
    while not (await store.delete_batch(AGENT, now - timedelta(days=1.5), 50)).empty:
        pass
    table, counted = await _rolled(db, AGENT)
    assert table == counted
    timeline, raw = await _served(db, AGENT)
    assert timeline == raw and timeline[1].bucket_start - timeline[0].bucket_start == timedelta(hours=1)

    # The owner's deletion leaves no roll-up of the agent, and the other agent's alone.
    await store.delete_agent(AGENT, HASH, 100)
    assert await _rolled(db, AGENT) == ({}, {})
    assert await _served(db, AGENT) == ([], [])
    table, counted = await _rolled(db, OTHER)
    assert table == counted and table
    assert (await _served(db, OTHER))[0] == (await _served(db, OTHER))[1]


async def test_the_timeline_reads_the_traces_since_the_mark_not_the_agents_week(db: Database) -> None:
    await migrate(db)
    now = datetime.now(UTC)
    # Other agents' traces interleaved with AGENT's, as on any shared instance (with AGENT's
    # alone, PostgreSQL rightly finds a walk of all traces by time as selective as a seek into
    # AGENT's decisions).
    agents = [AGENT, OTHER, *(f"smolt-0e0f0b{number:02x}" for number in range(8))]
    await bulk_insert(db, merge(
        exchange_rows(agent, HASH, now - timedelta(minutes=20 * index), len(agents) * index + other)
        for index in range(300) for other, agent in enumerate(agents)))
    async with db.begin() as conn:
        await integrity_counters.roll_up(conn, db.dialect, AGENT, now - integrity_counters.LAG)
        await conn.exec_driver_sql("ANALYZE")
    store = TraceStore(db)
    with statements_on("traces") as seen:
        async with db.read() as conn:
            points = await store._timeline(conn, AGENT, now)
    assert sum(point.total_traces for point in points) == sum(
        1 for index in range(300) if now - timedelta(minutes=20 * index) >= points[0].bucket_start)
    assert seen
    for statement, parameters in seen:
        reads = index_reads(await explain(db, statement, parameters), "traces")
        if "min(" in statement.lower():  # where the timeline starts: one seek into the agent's decisions
            # (of its decisions, or of its traces by time: both start at the agent)
            # Either index serves it; PostgreSQL's month partitions may each take one of them.
            assert reads and {index for index, _ in reads} <= {"ix_traces_agent_kind_covering",
                                                               "ix_traces_agent_timestamp"}, reads
            assert "agent_id" in reads[0][1], reads
        else:  # the counts: the traces created since the mark
            assert reads and all(index == "ix_traces_agent_created" and "created_at" in condition
                                 for index, condition in reads), (statement, reads)


async def test_the_migration_fills_the_roll_ups_of_the_traces_before_each_mark(db: Database) -> None:
    await migrate(db, "0011")
    rng = random.Random(12)
    now = datetime.now(UTC)
    await bulk_insert(db, merge([_random_rows(rng, AGENT, now, 200, 0, days=5),
                                 _random_rows(rng, OTHER, now, 50, 5000, days=5)]))
    async with db.begin() as conn:  # as the 0007 pass left it: marks, and the counters' own rows
        await conn.execute(sa.insert(integrity_marks), [
            {"agent_id": AGENT, "rolled_to": now - timedelta(days=2)}])
    await migrate(db)
    table, counted = await _rolled(db, AGENT)
    assert table == counted and table
    assert await _rolled(db, OTHER) == ({}, {})  # no mark: counted from its traces, as before
    assert (await _served(db, AGENT))[0] == (await _served(db, AGENT))[1]
