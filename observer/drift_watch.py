"""Drift watch: each agent's traces through `core.aap.drift.DriftDetector`, in trace-time
order, with the detector's state persisted and one open alert per agent and direction.

Order: traces are stored as their exchanges finish, which under concurrency is not quite
trace-time order. So an agent's traces are fed only up to its *watermark*: the time of its
oldest exchange still pending or processing. Exchanges that reach the Observer late (a
gateway spool replayed after an outage) are fed when they arrive, after newer ones.

Concurrency: one pass per agent at a time, serialised by a row lock on the agent's
`drift_states` row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer), so
several observers can share a database. Each trace is fed exactly once: it is queued in
`drift_pending` when stored and leaves the queue when fed.

Failure traces (upstream errors, aborts, processing failures) and API activity (calls other
than POST /v1/messages, `record_kinds`) are not decisions of the agent: they are not queued
for the detector, and a queued trace that is not a decision is never fed to it.

Alerts: a finding for a direction that already has an open alert updates that alert (trace
ids, severity, similarity, updated_at, the references that saw it) instead of adding one;
the database's partial unique index holds the line. Alerts stay open until resolved by an
operator (there is no resolving RPC yet).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from smoltbot.core.aap.drift import DriftDetector, DriftFinding
from smoltbot.core.errors import Unavailable
from smoltbot.core.pagination import decode_page_token, next_page, page_size
from smoltbot.core.settings import Settings
from smoltbot.core.storage import Database, UTCDateTime, insert_ignoring_conflicts, utcnow
from smoltbot.observer.queries import validate_agent_id
from smoltbot.observer.record_kinds import DECISION
from smoltbot.observer.registry_client import RegistryClient, RegistryError
from smoltbot.observer.store import drift_alerts, drift_pending, drift_states, exchanges, traces

__all__ = ["DriftAlert", "DriftWatch"]

logger = logging.getLogger(__name__)

_PASS_LIMIT = 500
_MAX_ALERT_TRACE_IDS = 200
_SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3}


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


def _analysis(finding: DriftFinding) -> str:
    against = "its alignment card" if finding.reference == "card" else "its own early baseline"
    text = (f"{finding.sustained_traces} consecutive traces scored below {finding.threshold:.2f} similarity "
            f"against {against} (latest {finding.similarity:.2f}); direction: {finding.direction}.")
    indicators = "; ".join(str(item.get("description", "")) for item in finding.indicators if item.get("description"))
    return f"{text} {indicators}." if indicators else text


def _alert_from_row(row: Any) -> DriftAlert:
    details = json.loads(row.alert_json)
    return DriftAlert(
        alert_id=row.alert_id, agent_id=row.agent_id, card_id=row.card_id, direction=row.direction,
        severity=row.severity, similarity_score=float(row.similarity), sustained_traces=int(row.sustained_traces),
        trace_ids=list(details.get("trace_ids") or []), reference=row.reference, status=row.status,
        created_at=row.created_at, updated_at=row.updated_at, analysis=str(details.get("analysis") or ""),
        details=details,
    )


class DriftWatch:
    def __init__(self, db: Database, registry: RegistryClient, settings: Settings, *,
                 sweep_interval: float = 2.0, pass_interval: float = 0.25) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings
        self.sweep_interval = sweep_interval
        # Passes are coalesced: under load an agent's traces are fed in batches, not one by one.
        self.pass_interval = pass_interval
        self._dirty: set[str] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.alerts_raised = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="observer-drift")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def notify(self, agents: Iterable[tuple[str, str | None]]) -> None:
        """Agent ids that have new traces (with their credential hash, unused: kept for callers)."""
        for agent_id, _hash in agents:
            if agent_id:
                self._dirty.add(agent_id)
                self._ready.set()

    async def _loop(self) -> None:
        await self._sweep()
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), self.sweep_interval)
            except TimeoutError:
                await self._sweep()
            self._ready.clear()
            dirty, self._dirty = self._dirty, set()
            if not dirty:
                continue
            try:
                more = await self.run_agents(sorted(dirty))
            except (Unavailable, RegistryError) as error:
                logger.warning("drift postponed: %s", error)
                more = dirty
                await asyncio.sleep(min(self.sweep_interval, 1.0))
            except Exception:
                logger.exception("drift pass failed; retried at the next sweep")
                more = set()
            if more:
                self._dirty |= more
                self._ready.set()
            await asyncio.sleep(self.pass_interval)

    async def _sweep(self) -> None:
        # Catches agents whose traces were held back by the watermark, or written before a restart.
        try:
            async with self.db.read() as conn:
                agents = (await conn.execute(sa.select(drift_pending.c.agent_id).distinct())).scalars().all()
        except Exception as error:  # noqa: BLE001 - a sweep is best effort; the next one retries
            logger.warning("drift sweep failed: %s", error)
            return
        self._dirty.update(agents)

    async def run_agent(self, agent_id: str) -> bool:
        """One agent's pass (see `run_agents`)."""
        return bool(await self.run_agents([agent_id]))

    async def run_agents(self, agent_ids: list[str]) -> set[str]:
        """Feeds the agents' queued traces to their detectors, in one pass: a read transaction
        that finds the cards needed, then one write transaction. Returns the agents that may
        have more ready (a full batch, or a card fetched too late)."""
        async with self.db.read() as conn:
            hashes = await _hashes(conn, agent_ids)
            wanted: dict[str, set[str]] = {}
            for agent_id, card_id in (await conn.execute(
                sa.select(drift_pending.c.agent_id, drift_pending.c.card_id).distinct()
                .where(drift_pending.c.agent_id.in_(agent_ids))
            )).all():
                wanted.setdefault(agent_id, set()).add(card_id)
        if not wanted:
            return set()
        # Cards first, outside the write transaction: a slow Registry must not hold the lock.
        cards: dict[str, dict[str, Any] | None] = {}
        for agent_id, card_ids in wanted.items():
            for card_id in card_ids - cards.keys():
                cards[card_id] = await self.registry.card(agent_id, card_id) if card_id else None
        async with self.db.begin() as conn:
            return await self._feed(conn, sorted(wanted), hashes, cards)

    async def _feed(self, conn: Any, agent_ids: list[str], hashes: dict[str, str],
                    cards: dict[str, dict[str, Any] | None]) -> set[str]:
        now = utcnow()
        await conn.execute(insert_ignoring_conflicts(self.db.dialect, drift_states, drift_states.c.agent_id),
                           [{"agent_id": agent_id, "card_id": "", "observed": 0, "state_json": "", "updated_at": now}
                            for agent_id in agent_ids])
        # Row locks in agent order (no deadlocks); an agent another observer is feeding right
        # now is skipped: it is in good hands.
        states = dict((await conn.execute(
            sa.select(drift_states.c.agent_id, drift_states.c.state_json)
            .where(drift_states.c.agent_id.in_(agent_ids)).order_by(drift_states.c.agent_id)
            .with_for_update(skip_locked=True)
        )).all())
        watermarks = await _watermarks(conn, [hashes[a] for a in states if a in hashes])
        more: set[str] = set()
        updates: list[dict[str, Any]] = []
        fed: list[str] = []
        for agent_id, state_json in states.items():
            rows = (await conn.execute(_pending(agent_id, watermarks.get(hashes.get(agent_id, "")), sa.select(
                traces.c.trace_id, traces.c.card_id, traces.c.trace_json)))).all()
            if not rows:
                continue
            detector = DriftDetector(
                threshold=self.settings.drift_threshold, sustained=self.settings.drift_sustained,
                baseline_size=self.settings.drift_baseline_size,
                state=json.loads(state_json) if state_json else None,
            )
            findings: list[DriftFinding] = []
            for row in rows:
                if row.card_id not in cards:  # a card we did not fetch: next pass
                    more.add(agent_id)
                    break
                card = cards[row.card_id] or {"card_id": row.card_id}
                findings.extend(detector.observe(json.loads(row.trace_json), card))
                fed.append(row.trace_id)
            if len(rows) == _PASS_LIMIT:
                more.add(agent_id)
            for finding in findings:
                await self._record(conn, agent_id, finding, now)
            updates.append({
                "b_agent": agent_id, "b_card": str(detector.state.get("card_id") or ""),
                "b_observed": int(detector.state.get("observed") or 0),
                "b_state": json.dumps(detector.state, separators=(",", ":")),
            })
        if updates:
            await conn.execute(drift_states.update().where(drift_states.c.agent_id == sa.bindparam("b_agent")).values(
                card_id=sa.bindparam("b_card"), observed=sa.bindparam("b_observed"),
                state_json=sa.bindparam("b_state"), updated_at=now), updates)
        for start in range(0, len(fed), 500):
            await conn.execute(drift_pending.delete().where(drift_pending.c.trace_id.in_(fed[start:start + 500])))
        return more

    async def _record(self, conn: Any, agent_id: str, finding: DriftFinding, now: datetime) -> None:
        existing = (await conn.execute(
            sa.select(drift_alerts).where(drift_alerts.c.agent_id == agent_id,
                                          drift_alerts.c.direction == finding.direction,
                                          drift_alerts.c.status == "open")
        )).first()
        if existing is None:
            details = {
                "trace_ids": finding.trace_ids[-_MAX_ALERT_TRACE_IDS:],
                "analysis": _analysis(finding),
                "references": [finding.reference],
                "threshold": finding.threshold,
                "indicators": finding.indicators,
                "findings": 1,
            }
            await conn.execute(drift_alerts.insert().values(
                alert_id=f"da-{uuid.uuid4().hex}", agent_id=agent_id, card_id=finding.card_id,
                direction=finding.direction, reference=finding.reference, status="open",
                severity=finding.severity, similarity=finding.similarity,
                sustained_traces=finding.sustained_traces, created_at=now, updated_at=now,
                alert_json=json.dumps(details, separators=(",", ":")),
            ))
            self.alerts_raised += 1
            logger.warning("drift alert for %s: %s", agent_id, details["analysis"])
            return
        details = json.loads(existing.alert_json)
        trace_ids = list(dict.fromkeys([*(details.get("trace_ids") or []), *finding.trace_ids]))
        details["trace_ids"] = trace_ids[-_MAX_ALERT_TRACE_IDS:]
        details["references"] = sorted({*(details.get("references") or []), finding.reference})
        details["analysis"] = _analysis(finding)
        details["indicators"] = finding.indicators
        details["findings"] = int(details.get("findings") or 1) + 1
        severity = max(existing.severity, finding.severity, key=lambda s: _SEVERITY_RANK.get(s, 0))
        await conn.execute(drift_alerts.update().where(drift_alerts.c.alert_id == existing.alert_id).values(
            severity=severity, similarity=finding.similarity, card_id=finding.card_id or existing.card_id,
            sustained_traces=max(int(existing.sustained_traces), finding.sustained_traces), updated_at=now,
            alert_json=json.dumps(details, separators=(",", ":")),
        ))

    async def list_alerts(self, agent_id: str, size: int, token: str) -> tuple[list[DriftAlert], str]:
        """Alerts newest first (by creation), optionally of one agent; keyset-paginated."""
        validate_agent_id(agent_id)
        limit = page_size(size)
        scope = f"drift_alerts:{agent_id}"
        after = decode_page_token(token, scope=scope, types=(datetime, str))
        query = sa.select(drift_alerts)
        if agent_id:
            query = query.where(drift_alerts.c.agent_id == agent_id)
        if after is not None:
            query = query.where(sa.tuple_(drift_alerts.c.created_at, drift_alerts.c.alert_id)
                                < sa.tuple_(sa.literal(after[0], UTCDateTime()), sa.literal(after[1])))
        query = query.order_by(drift_alerts.c.created_at.desc(), drift_alerts.c.alert_id.desc()).limit(limit + 1)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        alerts = [_alert_from_row(row) for row in rows]
        return next_page(alerts, limit, scope=scope, key=lambda alert: (alert.created_at, alert.alert_id))


async def _hashes(conn: Any, agent_ids: list[str]) -> dict[str, str]:
    """The credential hash of each agent with queued traces."""
    rows = (await conn.execute(
        sa.select(drift_pending.c.agent_id, sa.func.min(drift_pending.c.agent_hash))
        .where(drift_pending.c.agent_id.in_(agent_ids)).group_by(drift_pending.c.agent_id)
    )).all()
    return {agent_id: agent_hash for agent_id, agent_hash in rows}


async def _watermarks(conn: Any, agent_hashes: list[str]) -> dict[str, datetime]:
    """Per hash, the time of the agent's oldest unfinished exchange: traces from then on wait."""
    if not agent_hashes:
        return {}
    rows = (await conn.execute(
        sa.select(exchanges.c.agent_hash, sa.func.min(exchanges.c.occurred_at))
        .where(exchanges.c.agent_hash.in_(agent_hashes), exchanges.c.state.in_(("pending", "processing")))
        .group_by(exchanges.c.agent_hash)
    )).all()
    return {agent_hash: _aware(value) for agent_hash, value in rows if value is not None}


def _pending(agent_id: str, watermark: datetime | None, query: Any) -> Any:
    """`query` (over traces) restricted to the agent's queued traces before the watermark, in order."""
    query = query.select_from(drift_pending.join(traces, traces.c.trace_id == drift_pending.c.trace_id)).where(
        drift_pending.c.agent_id == agent_id, traces.c.record_kind == DECISION)
    if watermark is not None:
        query = query.where(drift_pending.c.timestamp < sa.literal(watermark, UTCDateTime()))
    return query.order_by(drift_pending.c.timestamp, drift_pending.c.trace_id).limit(_PASS_LIMIT)


def _aware(value: datetime) -> datetime:
    if isinstance(value, str):  # SQLite aggregates bypass the column type
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)
