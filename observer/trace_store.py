"""Traces as the Observer serves them: one trace, a keyset-paginated list, the integrity
aggregates (all time from the counters of `observer.integrity_counters` plus the traces created
since, the timeline from its hourly roll-ups likewise, the recent window by SQL over a bounded
index range; no trace is loaded; what they mean is in
`observer.integrity`), and the plugin's tool-execution reports, merged into traces as served.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.storage import Database, UTCDateTime, utcnow
from smoltbot.observer import integrity_counters
from smoltbot.observer.integrity import Integrity, IntegrityPoint, IntegrityWindow, timeline_grid
from smoltbot.observer.record_kinds import ACTIVITY, DECISION
from smoltbot.observer.tables import drift_alerts, retention_state, tool_executions, trace_violations, traces

__all__ = ["TraceStore", "served_trace"]


class TraceStore:
    """Reads over the traces table, and tool-execution reports. Every method runs its own
    transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(traces.c.trace_json, traces.c.executed).where(traces.c.trace_id == trace_id)
            )).first()
        return None if row is None else served_trace(row.trace_json, row.executed)

    async def list_traces(self, *, agent_id: str, session_id: str, verified: bool | None,
                          since: datetime | None, until: datetime | None, descending: bool,
                          after: tuple[datetime, str] | None, limit: int,
                          record_kind: str = "",
                          provider: str = "",
                          enforcement: Sequence[str] = ()) -> list[tuple[datetime, str, dict[str, Any]]]:
        """(timestamp, trace_id, trace) rows in (timestamp, trace_id) order, after the keyset `after`."""
        query = sa.select(traces.c.timestamp, traces.c.trace_id, traces.c.trace_json, traces.c.executed)
        if record_kind:
            query = query.where(traces.c.record_kind == record_kind)
        if provider:
            query = query.where(traces.c.provider == provider)
        if agent_id:
            query = query.where(traces.c.agent_id == agent_id)
        if session_id:
            query = query.where(traces.c.session_id == session_id)
        if verified is not None:
            query = query.where(traces.c.verified == verified)
        if since is not None:
            query = query.where(traces.c.timestamp >= since)
        if until is not None:
            query = query.where(traces.c.timestamp < until)
        key = sa.tuple_(traces.c.timestamp, traces.c.trace_id)
        if after is not None:
            position = sa.tuple_(sa.literal(after[0], UTCDateTime()), sa.literal(after[1]))
            query = query.where(key < position if descending else key > position)
        def page(select: Any, timestamp: Any, trace_id: Any) -> Any:
            order = (timestamp.desc(), trace_id.desc()) if descending else (timestamp.asc(), trace_id.asc())
            return select.order_by(*order).limit(limit)

        if len(enforcement) > 1:
            # One ordered index range per action (ix_traces_[agent_]enforcement_timestamp), merged:
            # an IN over the actions would read every matching trace to sort them.
            branches = [page(query.where(traces.c.enforcement == action), traces.c.timestamp,
                             traces.c.trace_id).subquery() for action in enforcement]
            merged = sa.union_all(*(sa.select(branch) for branch in branches)).subquery()
            query = page(sa.select(merged), merged.c.timestamp, merged.c.trace_id)
        else:
            if enforcement:
                query = query.where(traces.c.enforcement == enforcement[0])
            query = page(query, traces.c.timestamp, traces.c.trace_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.timestamp, row.trace_id, served_trace(row.trace_json, row.executed)) for row in rows]

    async def report_execution(self, agent_id: str, tool_use_id: str, executed: bool) -> int:
        """Records a reported tool execution; returns how many stored traces it marked."""
        now = utcnow()
        async with self.db.begin() as conn:
            upsert = (sqlite_dialect if self.db.dialect == "sqlite" else pg_dialect).insert(tool_executions)
            await conn.execute(upsert.values(agent_id=agent_id, tool_use_id=tool_use_id, executed=executed,
                                             reported_at=now).on_conflict_do_update(
                index_elements=["agent_id", "tool_use_id"], set_={"executed": executed, "reported_at": now}))
            result = await conn.execute(
                traces.update().where(traces.c.agent_id == agent_id, traces.c.tool_use_id == tool_use_id)
                .values(executed=executed))
            return int(result.rowcount or 0)

    async def integrity(self, agent_id: str, window: int) -> Integrity:
        """The agent's score; an agent with no traces gets zero totals and no score. One read
        snapshot: the windows, the violations and the timeline agree with each other."""
        now = utcnow()
        columns = [traces.c.trace_id, traces.c.verified, traces.c.violation_count, traces.c.has_reasoning,
                   traces.c.model_analysis, traces.c.failed, traces.c.timestamp]
        decisions = sa.and_(traces.c.agent_id == agent_id, traces.c.record_kind == DECISION)
        activity = sa.and_(traces.c.agent_id == agent_id, traces.c.record_kind == ACTIVITY)
        recent = (
            sa.select(*columns).where(decisions)
            .order_by(traces.c.timestamp.desc(), traces.c.trace_id.desc()).limit(window)
            .subquery("recent")
        )
        async with self.db.read() as conn:
            # All time from the counters plus the traces created since they were rolled up.
            totals = await integrity_counters.all_time(conn, agent_id)
            all_row = totals.kind(DECISION)
            # The window (one range of `ix_traces_agent_kind_covering`, migration 0013) read once
            # for its sums and its oldest decision.
            *recent_row, oldest_recent = (await conn.execute(
                sa.select(*_sums(recent), sa.func.min(recent.c.timestamp)))).one()
            all_activity = totals.kind(ACTIVITY)[0]
            recent_activity = all_activity if oldest_recent is None else (await conn.execute(
                sa.select(sa.func.count()).where(activity, traces.c.timestamp >= _aware(oldest_recent, now))
            )).scalar_one()
            all_types = {kind: count for kind, count in totals.violation_types.items() if count}
            recent_types = await _violation_types(conn, (
                sa.select(trace_violations.c.type, sa.func.count())
                .join(recent, recent.c.trace_id == trace_violations.c.trace_id)
            ))
            open_alerts = (await conn.execute(
                sa.select(sa.func.count()).select_from(drift_alerts)
                .where(drift_alerts.c.agent_id == agent_id, drift_alerts.c.status == "open")
            )).scalar_one()
            timeline = await self._timeline(conn, agent_id, now) if _as_int(all_row[0]) else []
            retained = (await conn.execute(
                sa.select(retention_state.c.since, retention_state.c.deleted_traces)
                .where(retention_state.c.agent_id == agent_id))).first()
        return Integrity(
            agent_id=agent_id, window_size=window, computed_at=now,
            recent=_window(recent_row, recent_types, int(recent_activity)),
            all_time=_window(all_row, all_types, int(all_activity)),
            timeline=timeline, open_drift_alerts=int(open_alerts),
            retained_since=retained.since if retained is not None else None,
            retention_deleted_traces=int(retained.deleted_traces) if retained is not None else 0,
        )

    async def _timeline(self, conn: AsyncConnection, agent_id: str, now: datetime) -> list[IntegrityPoint]:
        first = (await conn.execute(
            sa.select(sa.func.min(traces.c.timestamp))
            .where(traces.c.agent_id == agent_id, traces.c.record_kind == DECISION,
                   traces.c.timestamp >= now - _TIMELINE_SPAN)
        )).scalar_one_or_none()
        if first is None:
            return []
        origin, step = timeline_grid(_aware(first, now), now)
        # Per hour from the roll-ups and the traces since their mark (at most 168 rows and a few
        # minutes of traces, not the agent's week of decisions); buckets are whole hours.
        hours_per_step = int(step.total_seconds()) // 3600
        origin_hour = int(origin.timestamp()) // 3600
        counts: dict[int, tuple[int, int]] = {}
        for hour, (total, verified) in (await integrity_counters.hours(
                conn, self.db.dialect, agent_id, origin)).items():
            index = (hour - origin_hour) // hours_per_step
            before = counts.get(index, (0, 0))
            counts[index] = (before[0] + total, before[1] + verified)
        points = []
        index = 0
        while origin + index * step <= now:
            total, verified = counts.get(index, (0, 0))
            points.append(IntegrityPoint(origin + index * step, total, verified))
            index += 1
        return points


_TIMELINE_SPAN = timedelta(days=7)


def _as_int(value: Any) -> int:
    return int(value or 0)


def _aware(value: Any, now: datetime) -> datetime:
    if isinstance(value, str):  # SQLite aggregates bypass the column type
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=now.tzinfo)


def _sums(source: Any) -> list[Any]:
    def total(column: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((column, 1), else_=0)), 0)

    return [
        sa.func.count(),
        total(source.c.verified),
        sa.func.coalesce(sa.func.sum(source.c.violation_count), 0),
        total(source.c.has_reasoning),
        total(source.c.model_analysis),
        total(source.c.failed),
    ]


async def _violation_types(conn: AsyncConnection, query: sa.Select[Any]) -> dict[str, int]:
    rows = (await conn.execute(query.group_by(trace_violations.c.type))).all()
    return {str(kind): int(count) for kind, count in rows}


def _window(row: Any, by_type: dict[str, int], activity: int) -> IntegrityWindow:
    return IntegrityWindow(
        total_traces=_as_int(row[0]), verified_traces=_as_int(row[1]), violation_count=_as_int(row[2]),
        violations_by_type=by_type, with_reasoning=_as_int(row[3]), with_model_analysis=_as_int(row[4]),
        failed=_as_int(row[5]), activity=activity,
    )


def served_trace(trace_json: str, executed: bool | None) -> dict[str, Any]:
    """The stored trace as served: the plugin's execution report merged into its observation."""
    trace: dict[str, Any] = json.loads(trace_json)
    if executed is not None:
        trace.setdefault("observation", {})["executed"] = executed
    return trace
