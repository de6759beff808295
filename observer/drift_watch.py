"""Drift watch: each agent's traces through `core.aap.drift.DriftDetector`, in trace-time
order, with the detector's state persisted and one open alert per agent and direction. Its
rows are read and written through `observer.drift_store`.

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
from datetime import datetime
from typing import Any

from smoltbot.core.aap.drift import DriftDetector, DriftFinding
from smoltbot.core.errors import Unavailable
from smoltbot.core.pagination import decode_page_token, next_page, page_size
from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.observer.drift_store import PASS_LIMIT, DetectorState, DriftAlert, DriftFeed, DriftStore
from smoltbot.observer.registry_client import RegistryClient, RegistryError
from smoltbot.observer.validation import validate_agent_id

__all__ = ["DriftWatch"]

logger = logging.getLogger(__name__)

_MAX_ALERT_TRACE_IDS = 200
_SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3}


def _analysis(finding: DriftFinding) -> str:
    against = "its alignment card" if finding.reference == "card" else "its own early baseline"
    text = (f"{finding.sustained_traces} consecutive traces scored below {finding.threshold:.2f} similarity "
            f"against {against} (latest {finding.similarity:.2f}); direction: {finding.direction}.")
    indicators = "; ".join(
        str(item.get("description", "")) for item in finding.indicators if item.get("description")
    )
    return f"{text} {indicators}." if indicators else text


class DriftWatch:
    def __init__(self, store: DriftStore, registry: RegistryClient, settings: Settings, *,
                 sweep_interval: float = 2.0, pass_interval: float = 0.25) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.sweep_interval = sweep_interval
        # Passes are coalesced: under load an agent's traces are fed in batches, not one by one.
        self.pass_interval = pass_interval
        self._dirty: set[str] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="observer-drift")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def notify(self, agent_ids: Iterable[str]) -> None:
        """Agents that have new traces."""
        for agent_id in agent_ids:
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
            agents = await self.store.agents_with_pending()
        except Exception as error:  # noqa: BLE001 - a sweep is best effort; the next one retries
            logger.warning("drift sweep failed: %s", error)
            return
        self._dirty.update(agents)

    async def run_agents(self, agent_ids: list[str]) -> set[str]:
        """Feeds the agents' queued traces to their detectors, in one pass: a read transaction
        that finds the cards needed, then one write transaction. Returns the agents that may
        have more ready (a full batch, or a card fetched too late)."""
        hashes, wanted = await self.store.pending_cards(agent_ids)
        if not wanted:
            return set()
        # Cards first, outside the write transaction: a slow Registry must not hold the lock.
        cards: dict[str, dict[str, Any] | None] = {}
        for agent_id, card_ids in wanted.items():
            for card_id in card_ids - cards.keys():
                cards[card_id] = await self.registry.card(agent_id, card_id) if card_id else None
        async with self.store.feed() as feed:
            return await self._feed(feed, sorted(wanted), hashes, cards)

    async def _feed(self, feed: DriftFeed, agent_ids: list[str], hashes: dict[str, str],
                    cards: dict[str, dict[str, Any] | None]) -> set[str]:
        now = utcnow()
        states = await feed.lock_states(agent_ids, now)
        watermarks = await feed.watermarks([hashes[a] for a in states if a in hashes])
        more: set[str] = set()
        updates: list[DetectorState] = []
        fed: list[str] = []
        for agent_id, state_json in states.items():
            queued = await feed.queued(agent_id, watermarks.get(hashes.get(agent_id, "")))
            if not queued:
                continue
            detector = DriftDetector(
                threshold=self.settings.drift_threshold, sustained=self.settings.drift_sustained,
                baseline_size=self.settings.drift_baseline_size,
                state=json.loads(state_json) if state_json else None,
            )
            findings: list[DriftFinding] = []
            for trace in queued:
                if trace.card_id not in cards:  # a card we did not fetch: next pass
                    more.add(agent_id)
                    break
                card = cards[trace.card_id] or {"card_id": trace.card_id}
                findings.extend(detector.observe(json.loads(trace.trace_json), card))
                fed.append(trace.trace_id)
            if len(queued) == PASS_LIMIT:
                more.add(agent_id)
            for finding in findings:
                await self._record(feed, agent_id, finding, now)
            updates.append(DetectorState(
                agent_id, str(detector.state.get("card_id") or ""), int(detector.state.get("observed") or 0),
                json.dumps(detector.state, separators=(",", ":")),
            ))
        await feed.save_states(updates, now)
        await feed.drop_queued(fed)
        return more

    async def _record(self, feed: DriftFeed, agent_id: str, finding: DriftFinding, now: datetime) -> None:
        existing = await feed.open_alert(agent_id, finding.direction)
        if existing is None:
            details: dict[str, Any] = {
                "trace_ids": finding.trace_ids[-_MAX_ALERT_TRACE_IDS:],
                "analysis": _analysis(finding),
                "references": [finding.reference],
                "threshold": finding.threshold,
                "indicators": finding.indicators,
                "findings": 1,
            }
            await feed.add_alert(
                alert_id=f"da-{uuid.uuid4().hex}",
                agent_id=agent_id,
                card_id=finding.card_id,
                direction=finding.direction,
                reference=finding.reference,
                severity=finding.severity,
                similarity=finding.similarity,
                sustained_traces=finding.sustained_traces,
                details=details,
                now=now,
            )
            logger.warning("drift alert for %s: %s", agent_id, details["analysis"])
            return
        details = existing.details
        trace_ids = list(dict.fromkeys([*(details.get("trace_ids") or []), *finding.trace_ids]))
        details["trace_ids"] = trace_ids[-_MAX_ALERT_TRACE_IDS:]
        details["references"] = sorted({*(details.get("references") or []), finding.reference})
        details["analysis"] = _analysis(finding)
        details["indicators"] = finding.indicators
        details["findings"] = int(details.get("findings") or 1) + 1
        severity = max(existing.severity, finding.severity, key=lambda s: _SEVERITY_RANK.get(s, 0))
        await feed.update_alert(
            existing.alert_id,
            card_id=finding.card_id or existing.card_id,
            severity=severity,
            similarity=finding.similarity,
            sustained_traces=max(existing.sustained_traces, finding.sustained_traces),
            details=details,
            now=now,
        )

    async def list_alerts(self, agent_id: str, size: int, token: str) -> tuple[list[DriftAlert], str]:
        """Alerts newest first (by creation), optionally of one agent; keyset-paginated."""
        validate_agent_id(agent_id)
        limit = page_size(size)
        scope = f"drift_alerts:{agent_id}"
        after = decode_page_token(token, scope=scope, types=(datetime, str))
        alerts = await self.store.list_alerts(agent_id, after, limit + 1)
        return next_page(alerts, limit, scope=scope, key=lambda alert: (alert.created_at, alert.alert_id))
