"""The integrity read reads only the agent's own index ranges, on both databases: its recent window
(the agent's last decisions, newest first) is one range of `ix_traces_agent_kind_covering`
(migration 0013). Before it, SQLite's planner served the window's order from
`ix_traces_kind_timestamp` and walked every agent's decisions newest first until it had found the
window's (x6.74 at 2 million traces over 200 agents: docs/benchmarks.md, Traces at scale)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from smoltbot.core.storage import Database
from smoltbot.observer import integrity_counters
from smoltbot.observer.record_kinds import ACTIVITY, DECISION
from smoltbot.observer.tables import traces
from smoltbot.observer.trace_store import TraceStore
from tests.support.query_plans import explain, index_reads, statements_on
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge

AGENTS = [f"smolt-{number:08x}" for number in range(12)]
WINDOW = 10


async def test_every_integrity_statement_reads_a_range_of_the_agents_own_rows(db: Database) -> None:
    # Agents' traces interleaved in time, as on a shared instance, rolled up as retention leaves them.
    # One record in five is API activity (not a decision), also interleaved.
    start = datetime.now(UTC) - timedelta(days=2)
    rows = merge(exchange_rows(agent, "h" * 64, start + timedelta(minutes=step), step * len(AGENTS) + number)
                 for step in range(50) for number, agent in enumerate(AGENTS))
    for table in ("exchanges", "traces"):
        for number, row in enumerate(rows[table]):
            if number // len(AGENTS) % 5 == 4:
                row["record_kind"] = ACTIVITY
    await bulk_insert(db, rows)
    async with db.begin() as conn:
        for agent in AGENTS:
            await integrity_counters.roll_up(conn, db.dialect, agent, start + timedelta(days=1))
        await conn.execute(sa.text("ANALYZE"))
    agent = AGENTS[3]
    with statements_on("traces") as seen:
        integrity = await TraceStore(db).integrity(agent, WINDOW)

    async with db.read() as conn:
        newest = (await conn.execute(
            sa.select(traces.c.verified, traces.c.violation_count)
            .where(traces.c.agent_id == agent, traces.c.record_kind == DECISION)
            .order_by(traces.c.timestamp.desc(), traces.c.trace_id.desc()).limit(WINDOW))).all()
    assert integrity.recent.total_traces == WINDOW
    assert integrity.recent.verified_traces == sum(1 for verified, _ in newest if verified)
    assert integrity.recent.violation_count == sum(count for _, count in newest)
    assert integrity.all_time.total_traces == 40

    assert seen
    window_reads = []
    for statement, parameters in seen:
        plan = await explain(db, statement, parameters)
        reads = index_reads(plan, "traces")
        # Each read of `traces` is a range that starts with the agent: never all agents' decisions
        # (`record_kind` or `timestamp` alone) and never a scan.
        assert reads and all(index != "SCAN" and "agent_id" in condition for index, condition in reads), \
            (statement, plan)
        if "LIMIT" in statement:
            window_reads.extend(reads)
    assert window_reads and {index for index, _ in window_reads} == {"ix_traces_agent_kind_covering"}, \
        window_reads
