"""The drift detector's storage: its queue of traces (`drift_pending`), each agent's detector
state (`drift_states`) and the alerts (`drift_alerts`). What the rows mean, and the order and
locking rules they serve, are in `observer.drift_watch`.

A pass reads everything it feeds from in one read transaction (`read_pass`: each agent's
state and the state's cursor, its queued traces, its open alerts), computes with no transaction
open, then writes in one short write transaction (`feed()`, a `DriftFeed`). The write is
conditional, since nothing is locked while the pass computes: an agent's state is saved only if
its cursor (`drift_states.observed`, the number of traces its detector has seen, which every
write that changes the state moves forward) is still the one the pass read, and the traces the
pass fed must all still be queued. Otherwise another pass (a second observer) fed the agent
meanwhile, or its traces were deleted, and this pass's result for it is dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.storage import Database, UTCDateTime, insert_ignoring_conflicts, utcnow
from smoltbot.observer.record_kinds import DECISION
from smoltbot.observer.tables import chunks, drift_alerts, drift_pending, drift_states, exchanges, traces

_T = TypeVar("_T")

__all__ = [
    "PASS_LIMIT", "AgentInput", "DetectorState", "DriftAlert", "DriftFeed", "DriftStore", "OpenAlert",
    "QueuedTrace",
]

#: Traces fed to one agent's detector per pass.
PASS_LIMIT = 500


@dataclass
class DriftAlert:
    alert_id: str
    agent_id: str
    card_id: str
    direction: str
    severity: str
    similarity_score: float
    sustained_traces: int
    trace_ids: list[str]
    reference: str
    status: str
    created_at: datetime
    updated_at: datetime
    analysis: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueuedTrace:
    """A trace waiting for the detector: its id, the card it was verified against, its JSON."""

    trace_id: str
    card_id: str
    trace_json: str


@dataclass(frozen=True)
class OpenAlert:
    """The open alert of an agent in one direction, as far as merging a new finding needs it."""

    alert_id: str
    card_id: str
    severity: str
    sustained_traces: int
    details: dict[str, Any]
    reference: str = ""
    direction: str = ""


@dataclass(frozen=True)
class DetectorState:
    agent_id: str
    card_id: str
    observed: int
    state_json: str


@dataclass(frozen=True)
class AgentInput:
    """What a pass reads for one agent, in one snapshot."""

    agent_id: str
    #: The state row's cursor (`drift_states.observed`) when read; None: the agent has no row yet.
    cursor: int | None
    #: The detector's state (JSON; "" for a new agent).
    state_json: str
    #: Its queued decisions before the watermark, in trace-time order, at most `PASS_LIMIT`.
    queued: list[QueuedTrace]
    open_alerts: list[OpenAlert]


def _alert_from_row(row: Any) -> DriftAlert:
    details = json.loads(row.alert_json)
    return DriftAlert(
        alert_id=row.alert_id,
        agent_id=row.agent_id,
        card_id=row.card_id,
        direction=row.direction,
        severity=row.severity,
        similarity_score=float(row.similarity),
        sustained_traces=int(row.sustained_traces),
        trace_ids=list(details.get("trace_ids") or []),
        reference=row.reference,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        analysis=str(details.get("analysis") or ""),
        details=details,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class DriftStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def agents_with_pending(self) -> list[str]:
        """Agents with traces queued for the detector."""
        async with self.db.read() as conn:
            return list((await conn.execute(sa.select(drift_pending.c.agent_id).distinct())).scalars().all())

    async def read_pass(self, agent_ids: list[str]) -> list[AgentInput]:
        """For each of these agents with queued traces, in agent order: its state and cursor,
        its queued decisions before its watermark and its open alerts, all in one snapshot."""
        async with self.db.read() as conn:
            hashes = dict((await conn.execute(
                sa.select(drift_pending.c.agent_id, sa.func.min(drift_pending.c.agent_hash))
                .where(drift_pending.c.agent_id.in_(agent_ids)).group_by(drift_pending.c.agent_id)
            )).all())
            if not hashes:
                return []
            agents = sorted(hashes)
            states = {row.agent_id: row for row in (await conn.execute(
                sa.select(drift_states.c.agent_id, drift_states.c.observed, drift_states.c.state_json)
                .where(drift_states.c.agent_id.in_(agents))
            )).all()}
            watermarks = await _watermarks(conn, sorted(set(hashes.values())))
            alerts: dict[str, list[OpenAlert]] = {}
            for row in (await conn.execute(
                sa.select(drift_alerts)
                .where(drift_alerts.c.agent_id.in_(agents), drift_alerts.c.status == "open")
                .order_by(drift_alerts.c.created_at, drift_alerts.c.alert_id)
            )).all():
                alerts.setdefault(row.agent_id, []).append(_open_alert(row))
            queued_by_agent = await _queued(
                conn, {agent_id: watermarks.get(agent_hash) for agent_id, agent_hash in hashes.items()})
            inputs = []
            for agent_id in agents:
                queued = queued_by_agent.get(agent_id)
                if not queued:
                    continue
                state = states.get(agent_id)
                inputs.append(AgentInput(
                    agent_id, None if state is None else int(state.observed),
                    "" if state is None else state.state_json, queued, alerts.get(agent_id, [])))
        return inputs

    async def feed(self, body: Callable[[DriftFeed], Coroutine[Any, Any, _T]]) -> _T:
        """`body` in the write transaction of a pass (`Database.transact`: on SQLite run in the
        database's thread in one go, so it holds the write lock only while SQLite works; the
        body awaits nothing but the feed's statements)."""
        return await self.db.transact(lambda conn: body(DriftFeed(conn, self.db)))

    async def acknowledge(self, agent_id: str, alert_id: str) -> DriftAlert | None:
        """Marks the agent's alert acknowledged by its owner (once: the first time is kept);
        None when the agent has no such alert. An acknowledged alert stays open until behaviour
        returns to its reference."""
        async with self.db.begin() as conn:
            return await _acknowledge(conn, agent_id, alert_id, utcnow())

    async def list_alerts(
        self, agent_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[DriftAlert]:
        """Alerts newest first (by creation), of one agent or all (""), after the keyset `after`."""
        query = sa.select(drift_alerts)
        if agent_id:
            query = query.where(drift_alerts.c.agent_id == agent_id)
        if after is not None:
            query = query.where(sa.tuple_(drift_alerts.c.created_at, drift_alerts.c.alert_id)
                                < sa.tuple_(sa.literal(after[0], UTCDateTime()), sa.literal(after[1])))
        query = query.order_by(drift_alerts.c.created_at.desc(), drift_alerts.c.alert_id.desc()).limit(limit)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_alert_from_row(row) for row in rows]


async def _acknowledge(conn: AsyncConnection, agent_id: str, alert_id: str,
                       now: datetime) -> DriftAlert | None:
    row = (await conn.execute(sa.select(drift_alerts).where(
        drift_alerts.c.alert_id == alert_id, drift_alerts.c.agent_id == agent_id).with_for_update())).first()
    if row is None:
        return None
    details = json.loads(row.alert_json)
    if not details.get("acknowledged_at"):
        details["acknowledged_at"] = now.isoformat()
        await conn.execute(drift_alerts.update().where(drift_alerts.c.alert_id == alert_id).values(
            alert_json=_dumps(details), updated_at=now))
    row = (await conn.execute(sa.select(drift_alerts).where(drift_alerts.c.alert_id == alert_id))).one()
    return _alert_from_row(row)


def _open_alert(row: Any) -> OpenAlert:
    return OpenAlert(row.alert_id, row.card_id, row.severity, int(row.sustained_traces),
                     json.loads(row.alert_json), row.reference, row.direction)


async def _watermarks(conn: AsyncConnection, agent_hashes: list[str]) -> dict[str, datetime]:
    """Per hash, the time of the agent's oldest unfinished exchange: traces from then on wait."""
    rows = (await conn.execute(
        sa.select(exchanges.c.agent_hash, sa.func.min(exchanges.c.occurred_at))
        .where(exchanges.c.agent_hash.in_(agent_hashes), exchanges.c.state.in_(("pending", "processing")))
        .group_by(exchanges.c.agent_hash)
    )).all()
    return {agent_hash: _aware(value) for agent_hash, value in rows if value is not None}


async def _queued(conn: AsyncConnection,
                  watermarks: dict[str, datetime | None]) -> dict[str, list[QueuedTrace]]:
    """Per agent (of `watermarks`: agent id to its watermark, None for none), its queued decisions
    before the watermark, in trace-time order, at most `PASS_LIMIT`: one statement for all."""
    held_back = [sa.and_(drift_pending.c.agent_id == agent_id,
                         drift_pending.c.timestamp >= sa.literal(watermark, UTCDateTime()))
                 for agent_id, watermark in watermarks.items() if watermark is not None]
    ranked = (
        sa.select(drift_pending.c.agent_id, traces.c.trace_id, traces.c.card_id, traces.c.trace_json,
                  sa.func.row_number().over(partition_by=drift_pending.c.agent_id,
                                            order_by=(drift_pending.c.timestamp, drift_pending.c.trace_id))
                  .label("position"))
        .select_from(drift_pending.join(traces, traces.c.trace_id == drift_pending.c.trace_id))
        .where(drift_pending.c.agent_id.in_(sorted(watermarks)), traces.c.record_kind == DECISION,
               *([sa.not_(sa.or_(*held_back))] if held_back else []))
    ).subquery()
    rows = (await conn.execute(
        sa.select(ranked.c.agent_id, ranked.c.trace_id, ranked.c.card_id, ranked.c.trace_json)
        .where(ranked.c.position <= PASS_LIMIT).order_by(ranked.c.agent_id, ranked.c.position)
    )).all()
    queued: dict[str, list[QueuedTrace]] = {}
    for agent_id, trace_id, card_id, trace_json in rows:
        queued.setdefault(agent_id, []).append(QueuedTrace(trace_id, card_id, trace_json))
    return queued


class DriftFeed:
    """The statements of a pass's write transaction. Its writes for an agent are valid only
    after `save_states` saved it and `drop_queued` dropped every trace it fed (see the module
    docstring)."""

    def __init__(self, conn: AsyncConnection, db: Database) -> None:
        self._conn = conn
        self._db = db

    async def save_states(self, states: list[tuple[DetectorState, int | None]], now: datetime) -> set[str]:
        """Saves each agent's detector state if its cursor is still the one given with it (None:
        if it still has no state row); returns the agents saved (the others' cursors moved: nothing
        of theirs is written). On PostgreSQL the rows are locked first, in agent order (two
        passes never deadlock), and stay locked until the transaction ends."""
        saved: set[str] = set()
        new = [state for state, cursor in states if cursor is None]
        if new:
            saved.update((await self._conn.execute(
                insert_ignoring_conflicts(self._db.dialect, drift_states, drift_states.c.agent_id)
                .values([{"agent_id": state.agent_id, "card_id": state.card_id, "observed": state.observed,
                          "state_json": state.state_json, "updated_at": now} for state in new])
                .returning(drift_states.c.agent_id))).scalars())
        known = sorted(((state, cursor) for state, cursor in states if cursor is not None),
                       key=lambda item: item[0].agent_id)
        for chunk in chunks(known, 100):
            ids = [state.agent_id for state, _ in chunk]
            if self._db.dialect == "postgresql":
                await self._conn.execute(
                    sa.select(drift_states.c.agent_id).where(drift_states.c.agent_id.in_(ids))
                    .order_by(drift_states.c.agent_id).with_for_update())

            def each(value: Any, kind: Any, chunk: Sequence[tuple[DetectorState, int]] = chunk) -> Any:
                return sa.case({state.agent_id: sa.literal(value(state), kind) for state, _ in chunk},
                               value=drift_states.c.agent_id)

            saved.update((await self._conn.execute(
                drift_states.update()
                .where(sa.tuple_(drift_states.c.agent_id, drift_states.c.observed).in_(
                    [(state.agent_id, cursor) for state, cursor in chunk]))
                .values(card_id=each(lambda state: state.card_id, sa.String()),
                        observed=each(lambda state: state.observed, sa.Integer()),
                        state_json=each(lambda state: state.state_json, sa.Text()), updated_at=now)
                .returning(drift_states.c.agent_id))).scalars())
        return saved

    async def drop_queued(self, trace_ids: list[str]) -> Counter[str]:
        """Fed traces leave the queue; how many were still there, per agent."""
        dropped: Counter[str] = Counter()
        for chunk in chunks(trace_ids):
            dropped.update((await self._conn.execute(
                drift_pending.delete().where(drift_pending.c.trace_id.in_(chunk))
                .returning(drift_pending.c.agent_id))).scalars())
        return dropped

    async def open_alerts(self, agent_id: str) -> list[OpenAlert]:
        """The agent's open alerts, locked on PostgreSQL (an owner's acknowledgement waits)."""
        rows = (await self._conn.execute(
            sa.select(drift_alerts)
            .where(drift_alerts.c.agent_id == agent_id, drift_alerts.c.status == "open")
            .order_by(drift_alerts.c.created_at, drift_alerts.c.alert_id).with_for_update()
        )).all()
        return [_open_alert(row) for row in rows]

    async def resolve_alert(self, alert_id: str, details: dict[str, Any], now: datetime) -> None:
        """Closes an open alert (behaviour went back to its reference); `details` says how."""
        await self._conn.execute(drift_alerts.update().where(
            drift_alerts.c.alert_id == alert_id, drift_alerts.c.status == "open",
        ).values(status="resolved", updated_at=now, alert_json=_dumps(details)))

    async def add_alert(self, *, alert_id: str, agent_id: str, card_id: str, direction: str, reference: str,
                        severity: str, similarity: float, sustained_traces: int, details: dict[str, Any],
                        now: datetime) -> None:
        await self._conn.execute(drift_alerts.insert().values(
            alert_id=alert_id, agent_id=agent_id, card_id=card_id, direction=direction, reference=reference,
            status="open", severity=severity, similarity=similarity, sustained_traces=sustained_traces,
            created_at=now, updated_at=now, alert_json=_dumps(details),
        ))

    async def update_alert(self, alert_id: str, *, card_id: str, severity: str, similarity: float,
                           sustained_traces: int, details: dict[str, Any], now: datetime) -> None:
        await self._conn.execute(drift_alerts.update().where(drift_alerts.c.alert_id == alert_id).values(
            severity=severity, similarity=similarity, card_id=card_id, sustained_traces=sustained_traces,
            updated_at=now, alert_json=_dumps(details),
        ))


def _aware(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite aggregates bypass the column type
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)
