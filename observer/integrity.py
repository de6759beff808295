"""Integrity scores: what share of an agent's traces passed verification, and how much of
what they did could be seen at all. Computed by SQL aggregates over indexed columns; no
trace is loaded.

`recent` covers the agent's last `window` traces (by trace time), `all_time` all of them.
Beside the score, coverage says how much it means: traces with readable reasoning, traces
analysed by the model analyzer (not a fallback), and traces that record a failure. So
"100% of 3 traces, none with reasoning" reads differently from a real score.

Only decisions count (traces of model calls, `record_kinds`). API activity (count_tokens,
models, files, ...) is counted apart, in `activity`: never in the totals, the score, the
coverage, the violations or the timeline. In `recent`, activity is what happened since the
oldest decision of the window (all of it when the agent has no decision yet).

The timeline is verified/total per bucket, oldest first, from the agent's first trace (at
most 7 days back) to now: hourly buckets when that span is up to 2 days, else 6-hourly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from smoltbot.core.storage import Database, utcnow
from smoltbot.observer.record_kinds import ACTIVITY, DECISION
from smoltbot.observer.store import drift_alerts, trace_violations, traces

__all__ = ["Integrity", "IntegrityPoint", "IntegrityWindow", "compute_integrity"]

_TIMELINE_SPAN = timedelta(days=7)
_HOURLY_UP_TO = timedelta(days=2)


@dataclass
class IntegrityWindow:
    total_traces: int = 0
    verified_traces: int = 0
    violation_count: int = 0
    violations_by_type: dict[str, int] = field(default_factory=dict)
    with_reasoning: int = 0
    with_model_analysis: int = 0
    failed: int = 0
    #: API activity records (not decisions) in the same span.
    activity: int = 0

    @property
    def score(self) -> float | None:
        return self.verified_traces / self.total_traces if self.total_traces else None


@dataclass
class IntegrityPoint:
    bucket_start: datetime
    total_traces: int
    verified_traces: int


@dataclass
class Integrity:
    agent_id: str
    window_size: int
    computed_at: datetime
    recent: IntegrityWindow
    all_time: IntegrityWindow
    timeline: list[IntegrityPoint]
    open_drift_alerts: int


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


def _window(row: Any, by_type: dict[str, int], activity: int) -> IntegrityWindow:
    return IntegrityWindow(
        total_traces=_as_int(row[0]), verified_traces=_as_int(row[1]), violation_count=_as_int(row[2]),
        violations_by_type=by_type, with_reasoning=_as_int(row[3]), with_model_analysis=_as_int(row[4]),
        failed=_as_int(row[5]), activity=activity,
    )


async def compute_integrity(db: Database, agent_id: str, window: int) -> Integrity:
    """The agent's score; an agent with no traces gets zero totals and no score."""
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
    async with db.read() as conn:
        all_row = (await conn.execute(sa.select(*_sums(traces)).where(decisions))).one()
        recent_row = (await conn.execute(sa.select(*_sums(recent)))).one()
        oldest_recent = (await conn.execute(sa.select(sa.func.min(recent.c.timestamp)))).scalar_one_or_none()
        all_activity = (await conn.execute(sa.select(sa.func.count()).where(activity))).scalar_one()
        recent_activity = all_activity if oldest_recent is None else (await conn.execute(
            sa.select(sa.func.count()).where(activity, traces.c.timestamp >= _aware(oldest_recent, now))
        )).scalar_one()
        all_types = dict((await conn.execute(
            sa.select(trace_violations.c.type, sa.func.count())
            .join(traces, traces.c.trace_id == trace_violations.c.trace_id)
            .where(trace_violations.c.agent_id == agent_id, traces.c.record_kind == DECISION)
            .group_by(trace_violations.c.type)
        )).all())
        recent_types = dict((await conn.execute(
            sa.select(trace_violations.c.type, sa.func.count())
            .join(recent, recent.c.trace_id == trace_violations.c.trace_id)
            .group_by(trace_violations.c.type)
        )).all())
        open_alerts = (await conn.execute(
            sa.select(sa.func.count()).select_from(drift_alerts)
            .where(drift_alerts.c.agent_id == agent_id, drift_alerts.c.status == "open")
        )).scalar_one()
        timeline = await _timeline(conn, db.dialect, agent_id, now) if _as_int(all_row[0]) else []
    return Integrity(
        agent_id=agent_id, window_size=window, computed_at=now,
        recent=_window(recent_row, {k: int(v) for k, v in recent_types.items()}, int(recent_activity)),
        all_time=_window(all_row, {k: int(v) for k, v in all_types.items()}, int(all_activity)),
        timeline=timeline, open_drift_alerts=int(open_alerts),
    )


async def _timeline(conn: Any, dialect: str, agent_id: str, now: datetime) -> list[IntegrityPoint]:
    start_limit = now - _TIMELINE_SPAN
    first = (await conn.execute(
        sa.select(sa.func.min(traces.c.timestamp))
        .where(traces.c.agent_id == agent_id, traces.c.record_kind == DECISION,
               traces.c.timestamp >= start_limit)
    )).scalar_one_or_none()
    if first is None:
        return []
    if isinstance(first, str):  # SQLite aggregates bypass the column type
        first = datetime.fromisoformat(first).replace(tzinfo=now.tzinfo)
    step = timedelta(hours=1) if now - first <= _HOURLY_UP_TO else timedelta(hours=6)
    hours = int(step.total_seconds() // 3600)
    origin = first.replace(minute=0, second=0, microsecond=0)
    origin -= timedelta(hours=origin.hour % hours)
    # Bucket index = whole steps since `origin`, computed in SQL from epoch seconds.
    if dialect == "sqlite":
        seconds = sa.func.strftime("%s", traces.c.timestamp).cast(sa.Integer)
    else:
        seconds = sa.cast(sa.func.extract("epoch", traces.c.timestamp), sa.BigInteger)
    # Never negative (timestamp >= origin), so integer division is the floor on both backends.
    bucket = (seconds - int(origin.timestamp())) // int(step.total_seconds())
    rows = (await conn.execute(
        sa.select(bucket.label("bucket"), sa.func.count(),
                  sa.func.coalesce(sa.func.sum(sa.case((traces.c.verified, 1), else_=0)), 0))
        .where(traces.c.agent_id == agent_id, traces.c.record_kind == DECISION, traces.c.timestamp >= origin)
        .group_by(sa.text("bucket"))
    )).all()
    counts = {int(row[0]): (int(row[1]), int(row[2])) for row in rows}
    points = []
    index = 0
    while origin + index * step <= now:
        total, verified = counts.get(index, (0, 0))
        points.append(IntegrityPoint(origin + index * step, total, verified))
        index += 1
    return points
