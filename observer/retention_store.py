"""Storage: deleting what is past its time, in small batches, and all of one agent's data.

Every retention batch is one short write transaction that deletes at most `limit` rows of one
table (a trace takes its violations and drift input along), so intake and processing wait for
one batch at most, never for a whole pass. On PostgreSQL a batch first takes a transaction-level
advisory lock (`pg_try_advisory_xact_lock`): with several observers exactly one of them does
each batch, and the others find the lock taken and wait for the next one. On SQLite the batch's
write transaction (BEGIN IMMEDIATE) already serialises it against every other writer.

What a batch deleted is counted per agent in `retention_state`, with the cut-off (`since`):
the agent's record is complete from then on. A batch of history-ledger rows also notes, per
session, the start of the newest call it deleted (`evidence_cuts`), so that a later check of the
session knows which turns the ledger can no longer vouch for (core/evidence/history.py); such a
note goes one retention period after the rows it stands for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.storage import Database, partitions, utcnow
from smoltbot.core.storage.partitions import PARTITIONED, Month
from smoltbot.observer import integrity_counters
from smoltbot.observer.tables import (
    chunks,
    drift_alerts,
    drift_pending,
    evidence_cuts,
    evidence_history,
    exchange_payloads,
    exchange_usage,
    exchanges,
    metadata,
    retention_state,
    tool_executions,
    trace_violations,
    traces,
)

__all__ = ["AgentRetention", "Batch", "RetentionStore"]

#: Same on every observer; apart from the migration lock's key.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"smoltbot.retention").digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class _Target:
    """One table retention deletes from: its key, the agent column, the time column, and which
    rows are eligible at all (an exchange still in the queue, an open alert, are not)."""

    table: sa.Table
    keys: tuple[str, ...]
    time: str
    only: Any = None


_TRACES = _Target(traces, ("trace_id",), "timestamp")
_EXCHANGES = _Target(exchanges, ("exchange_id",), "occurred_at", exchanges.c.state.in_(("done", "failed")))
#: Its time is the cut-off that deleted the session's rows; it goes by `cuts_cutoff`, a period later.
_CUTS = _Target(evidence_cuts, ("agent_id", "session_id"), "cut_before")
_TARGETS = (
    _TRACES,
    _Target(exchange_usage, ("exchange_id",), "occurred_at"),
    _Target(tool_executions, ("agent_id", "tool_use_id"), "reported_at"),
    _EXCHANGES,
    _Target(drift_alerts, ("alert_id",), "updated_at", drift_alerts.c.status == "resolved"),
    _Target(evidence_history, ("exchange_id",), "started_at"),
    _CUTS,
)


@dataclass
class Batch:
    """What one batch did. `busy`: another observer held the lock, nothing was done."""

    table: str = ""
    keys: list[tuple[Any, ...]] = field(default_factory=list)
    deleted: int = 0
    busy: bool = False
    #: A dropped month's partition (`table` is the partition): traces and all rows, per agent.
    traces_by_agent: dict[str, int] = field(default_factory=dict)
    rows_by_agent: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.busy and not self.keys


@dataclass(frozen=True)
class AgentRetention:
    agent_id: str
    since: datetime
    deleted_traces: int
    deleted_rows: int


class RetentionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def agents(self) -> list[str]:
        """Every agent with traces, usage rows, tool-execution reports or history-ledger rows,
        found by skipping along the agent_id indexes (one index seek per agent, not a scan of
        the tables)."""
        found: set[str] = set()
        async with self.db.read() as conn:
            for table in (traces, exchange_usage, tool_executions, evidence_history, evidence_cuts):
                found.update(await _distinct_agents(conn, table))
        return sorted(found)

    @asynccontextmanager
    async def _batch(self) -> AsyncIterator[AsyncConnection | None]:
        """A write transaction that is the only retention batch anywhere; None if another
        observer's batch holds the lock."""
        async with self.db.begin() as conn:
            if self.db.dialect == "postgresql":
                taken = (await conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"),
                                            {"key": _PG_LOCK_KEY})).scalar_one()
                if not taken:
                    yield None
                    return
            yield conn

    async def delete_batch(self, agent_id: str | None, cutoff: datetime, limit: int, *,
                           cuts_cutoff: datetime | None = None) -> Batch:
        """Deletes up to `limit` of the agent's rows older than `cutoff`, from the first table
        that still has some (traces first). `agent_id` None: exchange records with no agent.
        The agent's ledger-cut notes go when they stand for rows older than `cuts_cutoff` (None:
        they stay). An empty batch means nothing of the agent is past its time any more."""
        targets = _TARGETS if agent_id is not None else (_EXCHANGES,)
        async with self._batch() as conn:
            if conn is None:
                return Batch(busy=True)
            for target in targets:
                table = target.table
                before = cuts_cutoff if target is _CUTS else cutoff
                if before is None:
                    continue
                owner = table.c.agent_id.is_(None) if agent_id is None else table.c.agent_id == agent_id
                query = (sa.select(*(table.c[key] for key in target.keys))
                         .where(owner, table.c[target.time] < before)
                         .order_by(table.c[target.time]).limit(limit))
                if target.only is not None:
                    query = query.where(target.only)
                keys = [tuple(row) for row in (await conn.execute(query)).all()]
                if not keys:
                    continue
                deleted = await self._delete_keys(conn, target, keys, agent_id, before)
                if agent_id is not None:
                    await self._count(conn, agent_id, cutoff, deleted,
                                      traces_deleted=len(keys) if target is _TRACES else 0)
                return Batch(table.name, keys, deleted)
        return Batch()

    async def _delete_keys(self, conn: AsyncConnection, target: _Target, keys: list[tuple[Any, ...]],
                           agent_id: str | None, cutoff: datetime) -> int:
        table = target.table
        deleted = 0
        if table is traces:
            ids = [key[0] for key in keys]
            if agent_id is not None:  # out of the integrity counters first (they read the violations)
                await integrity_counters.take_out(conn, self.db.dialect, agent_id, ids)
            for child in (trace_violations, drift_pending):
                deleted += (await conn.execute(child.delete().where(child.c.trace_id.in_(ids)))).rowcount or 0
        if table is exchanges:
            ids = [key[0] for key in keys]
            deleted += await self._delete_payloads(conn, ids)
        if table is evidence_history and agent_id is not None:
            await self._note_cuts(conn, evidence_history.c.exchange_id.in_([key[0] for key in keys]), cutoff)
        where: Any
        if len(target.keys) == 1:
            where = table.c[target.keys[0]].in_([key[0] for key in keys])
        else:
            where = sa.tuple_(*(table.c[key] for key in target.keys)).in_(keys)
        # The time bound the keys were found by: on PostgreSQL it confines the delete to the months
        # before the cut-off instead of every month's partition.
        where = sa.and_(where, table.c[target.time] < cutoff)
        deleted += (await conn.execute(table.delete().where(where))).rowcount or 0
        return deleted

    async def _note_cuts(self, conn: AsyncConnection, where: Any, cutoff: datetime) -> None:
        """Notes, per session of the ledger rows about to go (those matching `where`), that its
        calls started before `cutoff` are gone (a later cut-off replaces an earlier one). In the
        deleting transaction, so a reader sees both or neither."""
        h = evidence_history.c
        sessions = (await conn.execute(
            sa.select(h.agent_id, h.session_id).distinct().where(where, h.session_id.is_not(None)))).all()
        if not sessions:
            return
        insert = (sqlite_dialect if self.db.dialect == "sqlite" else pg_dialect).insert(evidence_cuts)
        later = sa.case((evidence_cuts.c.cut_before < insert.excluded.cut_before, insert.excluded.cut_before),
                        else_=evidence_cuts.c.cut_before)
        for chunk in chunks(sessions):
            await conn.execute(insert.on_conflict_do_update(index_elements=["agent_id", "session_id"],
                                                            set_={"cut_before": later}),
                               [{"agent_id": agent_id, "session_id": session_id, "cut_before": cutoff}
                                for agent_id, session_id in chunk])

    async def _delete_payloads(self, conn: AsyncConnection, exchange_ids: Sequence[str]) -> int:
        """Raw payloads are the most private rows: on SQLite their bytes are zeroed in the file
        (secure_delete, for these statements only); the WAL keeps them until `checkpoint`."""
        secure = self.db.dialect == "sqlite"
        if secure:
            await conn.exec_driver_sql("PRAGMA secure_delete = ON")
        try:
            deleted = 0
            for chunk in chunks(list(exchange_ids)):
                deleted += (await conn.execute(exchange_payloads.delete().where(
                    exchange_payloads.c.exchange_id.in_(chunk)))).rowcount or 0
            return deleted
        finally:
            if secure:
                await conn.exec_driver_sql("PRAGMA secure_delete = OFF")

    async def _count(self, conn: AsyncConnection, agent_id: str, cutoff: datetime, deleted: int, *,
                     traces_deleted: int) -> None:
        now = utcnow()
        insert = (sqlite_dialect if self.db.dialect == "sqlite" else pg_dialect).insert(retention_state)
        await conn.execute(insert.values(
            agent_id=agent_id, since=cutoff, deleted_traces=traces_deleted, deleted_rows=deleted,
            updated_at=now,
        ).on_conflict_do_update(index_elements=["agent_id"], set_={
            # The record is complete from the latest cut-off on (a longer period later cannot
            # bring back what was deleted).
            "since": sa.case((retention_state.c.since < cutoff, cutoff), else_=retention_state.c.since),
            "deleted_traces": retention_state.c.deleted_traces + traces_deleted,
            "deleted_rows": retention_state.c.deleted_rows + deleted,
            "updated_at": now,
        }))

    async def roll_up(self, agent_id: str, to: datetime) -> Batch:
        """Counts the agent's traces created up to `to` into its integrity counters (a batch
        like the others: one observer at a time)."""
        async with self._batch() as conn:
            if conn is None:
                return Batch(busy=True)
            moved = await integrity_counters.roll_up(conn, self.db.dialect, agent_id, to)
            return Batch(integrity_counters.__name__, [(agent_id,)] if moved else [])

    async def expire_payloads(self, cutoff: datetime, limit: int) -> Batch:
        """Deletes up to `limit` raw payloads of exchanges received before `cutoff` that are no
        longer in the queue (done or failed: a failed exchange's payload is kept for an operator
        only until then)."""
        async with self._batch() as conn:
            if conn is None:
                return Batch(busy=True)
            ids = list((await conn.execute(
                sa.select(exchange_payloads.c.exchange_id)
                .join(exchanges, exchanges.c.exchange_id == exchange_payloads.c.exchange_id)
                .where(exchanges.c.received_at < cutoff, exchanges.c.state.in_(("done", "failed")))
                .limit(limit)
            )).scalars())
            if not ids:
                return Batch()
            return Batch(exchange_payloads.name, [(exchange_id,) for exchange_id in ids],
                         await self._delete_payloads(conn, ids))

    async def roll_forward(self, now: datetime) -> list[str]:
        """PostgreSQL: the month partitions still missing up to a few months after `now`."""
        return await partitions.roll_forward(self.db, now)

    async def months(self, table: str) -> list[Month]:
        """The months with a partition of `table`, oldest first (none on SQLite)."""
        if self.db.dialect != "postgresql":
            return []
        async with self.db.read() as conn:
            return await partitions.existing(conn, table)

    async def agents_in(self, table: str, month: Month) -> list[str]:
        """The agents with rows in the month's partition of `table` (one index seek each)."""
        async with self.db.read() as conn:
            return await _distinct_agents(conn, metadata.tables[table], _within(table, month))

    async def drop_partition(self, table: str, month: Month) -> Batch:
        """Drops the month's partition of `table` whole, having counted what it held per agent as a
        batch of row deletes would have: out of the integrity counters, into `retention_state`
        (the agent's record is complete from the month's end), a trace's violations and drift
        input deleted, ledger cuts noted. One transaction under the retention lock; inserts into
        this month (a late arrival, already past its time) wait for it; it waits at most
        `partitions.LOCK_TIMEOUT` for its locks (an empty batch then: left for the next pass)."""
        source = metadata.tables[table]
        name = partitions.partition_name(table, month)
        within = _within(table, month)
        try:
            async with self._batch() as conn:
                if conn is None:
                    return Batch(busy=True)
                await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{partitions.LOCK_TIMEOUT}'")
                await conn.exec_driver_sql(f"LOCK TABLE {name} IN SHARE MODE")
                held = {str(agent): int(count) for agent, count in (await conn.execute(
                    sa.select(source.c.agent_id, sa.func.count()).where(within)
                    .group_by(source.c.agent_id))).all()}
                rows = dict(held)
                if source is traces:
                    for agent_id in held:
                        await integrity_counters.take_out_where(conn, self.db.dialect, agent_id, within)
                    ids = sa.select(traces.c.trace_id).where(within).scalar_subquery()
                    for child in (trace_violations, drift_pending):
                        for (agent_id,) in (await conn.execute(
                                child.delete().where(child.c.trace_id.in_(ids)).returning(child.c.agent_id))).all():
                            rows[agent_id] = rows.get(agent_id, 0) + 1
                if source is evidence_history:
                    await self._note_cuts(conn, within, month.end)
                for agent_id, count in rows.items():
                    await self._count(conn, agent_id, month.end, count,
                                      traces_deleted=held.get(agent_id, 0) if source is traces else 0)
                await conn.exec_driver_sql(f"DROP TABLE {name}")
        except sa.exc.DBAPIError as error:
            # Its locks not had in time (left for the next pass), or another observer dropped it
            # since it was listed: nothing done here.
            if "lock timeout" not in str(error) and "does not exist" not in str(error):
                raise
            return Batch()
        return Batch(name, [(agent_id,) for agent_id in sorted(held)], sum(rows.values()),
                     traces_by_agent=held if source is traces else {}, rows_by_agent=rows)

    async def state(self, agent_id: str) -> AgentRetention | None:
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(retention_state).where(retention_state.c.agent_id == agent_id))).first()
        return None if row is None else _retention(row)

    async def states(self) -> list[AgentRetention]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(retention_state).order_by(retention_state.c.agent_id))).all()
        return [_retention(row) for row in rows]

    async def delete_agent(self, agent_id: str, agent_hash: str, limit: int) -> dict[str, int]:
        """Deletes every row of the agent in every observer table (any table with an agent_id
        column, so a table added later is covered too), and the exchange records and payloads of
        its credential hash (a refused call has no agent id). Batches of `limit` rows, children
        first; on SQLite with secure_delete. Returns rows deleted per table."""
        counts: dict[str, int] = {}
        mine = sa.or_(exchanges.c.agent_id == agent_id, exchanges.c.agent_hash == agent_hash)
        ordered = [trace_violations, drift_pending, *(
            table for table in metadata.sorted_tables
            if "agent_id" in table.c and table not in (trace_violations, drift_pending, exchanges)
        )]
        secure = self.db.dialect == "sqlite"
        while True:
            async with self.db.begin() as conn:
                if secure:
                    await conn.exec_driver_sql("PRAGMA secure_delete = ON")
                try:
                    ids = list((await conn.execute(
                        sa.select(exchange_payloads.c.exchange_id)
                        .join(exchanges, exchanges.c.exchange_id == exchange_payloads.c.exchange_id)
                        .where(mine).limit(limit))).scalars())
                    if ids:
                        done = await _delete_in(conn, exchange_payloads, exchange_payloads.c.exchange_id, ids)
                        counts[exchange_payloads.name] = counts.get(exchange_payloads.name, 0) + done
                        continue
                    for table in [*ordered, exchanges]:
                        key = _primary_key(table)
                        where = mine if table is exchanges else table.c.agent_id == agent_id
                        keys = [tuple(row) for row in (await conn.execute(
                            sa.select(*key).where(where).limit(limit))).all()]
                        if keys:
                            done = await _delete_in(conn, table, sa.tuple_(*key) if len(key) > 1 else key[0],
                                                    keys if len(key) > 1 else [k[0] for k in keys])
                            counts[table.name] = counts.get(table.name, 0) + done
                            break
                    else:
                        return counts
                finally:
                    if secure:
                        await conn.exec_driver_sql("PRAGMA secure_delete = OFF")

    async def checkpoint(self, attempts: int = 20) -> bool:
        """SQLite: copy the WAL into the database and truncate it, so deleted rows do not stay in
        old WAL frames. Retries while readers hold old snapshots; False if it never got through.
        True on PostgreSQL (nothing to do here; VACUUM reclaims dead rows)."""
        if self.db.dialect != "sqlite" or self.db.sqlite_path is None:
            return True
        for _ in range(attempts):
            async with self.db.engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                if raw is None:
                    continue
                cursor = await raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                busy, _frames, _moved = await cursor.fetchone()
                if not busy:
                    return True
            await asyncio.sleep(0.05)
        return False


async def _delete_in(conn: AsyncConnection, table: sa.Table, column: Any, keys: list[Any]) -> int:
    deleted = 0
    for chunk in chunks(keys):
        deleted += (await conn.execute(table.delete().where(column.in_(chunk)))).rowcount or 0
    return deleted


def _primary_key(table: sa.Table) -> list[sa.Column[Any]]:
    return list(table.primary_key.columns)


async def _distinct_agents(conn: AsyncConnection, table: sa.Table, where: Any = None) -> list[str]:
    # A loose index scan: each query seeks the next agent id after the last one in the index.
    column = table.c.agent_id
    where = sa.true() if where is None else where
    agents: list[str] = []
    last = (await conn.execute(sa.select(sa.func.min(column)).where(where))).scalar_one_or_none()
    while last is not None:
        agents.append(str(last))
        last = (await conn.execute(
            sa.select(sa.func.min(column)).where(where, column > last))).scalar_one_or_none()
    return agents


def _within(table: str, month: Month) -> Any:
    """The rows of `table` in `month` (on PostgreSQL: its partition alone)."""
    column = metadata.tables[table].c[PARTITIONED[table]]
    return sa.and_(column >= month.start, column < month.end)


def _retention(row: Any) -> AgentRetention:
    return AgentRetention(row.agent_id, row.since, int(row.deleted_traces), int(row.deleted_rows))
