"""Drift watch: each agent's traces through `core.aap.drift.DriftDetector`, in trace-time
order, with the detector's state persisted and one open alert per agent and direction. Its
rows are read and written through `observer.drift_store`.

Order: traces are stored as their exchanges finish, which under concurrency is not quite
trace-time order. So an agent's traces are fed only up to its *watermark*: the time of its
oldest exchange still pending or processing. Exchanges that reach the Observer late (a
gateway spool replayed after an outage) are fed when they arrive, after newer ones.

A pass (`run_agents`) has three steps, so that it holds no lock while it works: it reads each
agent's state, queued traces and open alerts in one read transaction (`DriftStore.read_pass`),
fetches the cards those traces were verified against, parses the traces and runs the detectors
with no transaction open (in slices: the event loop keeps serving intake and result writes),
then writes the states, alerts and queue in one short write transaction. On SQLite that write is
all a pass takes of the one write lock (it used to hold it while parsing: 8 to 35 ms a pass at
50 exchanges/s, up to 350 ms, with intake and result writes waiting behind it).

Concurrency: several observers can share a database, and two passes may feed the same agent at
once. Each trace is fed exactly once: it is queued in `drift_pending` when stored and leaves the
queue when fed. A pass's write for an agent is conditional (`DriftFeed.save_states`): the agent's
state is saved only if its cursor (`drift_states.observed`, which every saved pass moves forward)
is still the one the pass read; if it moved, another pass fed the agent meanwhile and this one's
result for it is dropped unwritten and the agent is run again. If some trace the pass fed has
left the queue (retention, the owner deleting the agent's data), the write transaction is rolled
back and redone without that agent. So no alert is recorded twice and no input is lost.

Failure traces (upstream errors, aborts, processing failures) and API activity (calls other
than POST /v1/messages, `record_kinds`) are not decisions of the agent: they are not queued
for the detector, and a queued trace that is not a decision is never fed to it.

Alerts: a finding for a direction that already has an open alert updates that alert (trace
ids, severity, similarity, updated_at, the references that saw it) instead of adding one;
the database's partial unique index holds the line. The agent's owner can acknowledge an alert
(it stays open); an alert closes by itself ("resolved") once every reference it was raised
against has seen `drift_sustained` consecutive traces at or above the threshold again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from smoltbot.core.aap.drift import DriftDetector, DriftFinding
from smoltbot.core.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable
from smoltbot.core.ids import validate_agent_hash
from smoltbot.core.pagination import decode_page_token, next_page, page_size
from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.observer.drift_store import (
    PASS_LIMIT,
    AgentInput,
    DetectorState,
    DriftAlert,
    DriftFeed,
    DriftStore,
    OpenAlert,
)
from smoltbot.observer.registry_client import RegistryClient, RegistryError
from smoltbot.observer.validation import validate_agent_id

__all__ = ["DriftPlan", "DriftWatch"]

logger = logging.getLogger(__name__)

_MAX_ALERT_TRACE_IDS = 200
#: The longest a pass's detectors run on the event loop before they let it serve others.
_SLICE = 0.002
_SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3}


_REFERENCE_NAMES = {"card": "the alignment card", "baseline": "the agent's baseline"}
#: Where drift watch keeps, in the detector's persisted state, how many consecutive traces per
#: reference have scored at or above the threshold (the detector itself only tracks runs below).
_RECOVERY_KEY = "watch_recovery"


def _recovery(state: dict[str, Any]) -> dict[str, int]:
    stored = state.get(_RECOVERY_KEY)
    recovery = {"card": 0, "baseline": 0}
    if isinstance(stored, dict):
        recovery.update({key: int(value) for key, value in stored.items() if key in recovery})
    state[_RECOVERY_KEY] = recovery
    return recovery


def _count_recovery(state: dict[str, Any], recovery: dict[str, int], baseline_ready: bool) -> None:
    """After one trace: a reference whose run below the threshold is empty scored at or above
    it (the baseline only once it exists)."""
    runs = state.get("runs") or {}
    for reference in ("card", "baseline"):
        if reference == "baseline" and not baseline_ready:
            continue
        below = int((runs.get(reference) or {}).get("length") or 0)
        recovery[reference] = recovery[reference] + 1 if below == 0 else 0
    state[_RECOVERY_KEY] = recovery


def _recovered(references: list[str], recovery: dict[str, int], needed: int) -> bool:
    """Behaviour is back against every reference an alert was raised against."""
    return bool(references) and all(recovery.get(ref, 0) >= needed for ref in references)


def _references(alert: OpenAlert) -> list[str]:
    return list(alert.details.get("references") or [alert.reference])


@dataclass
class _Outcome:
    """One agent's part of a pass, computed with no transaction open."""

    agent_id: str
    #: The state row's cursor the pass read (None: no row yet); the write is conditional on it.
    cursor: int | None
    state: DetectorState
    fed: list[str]
    findings: list[DriftFinding]
    recovery: dict[str, int]
    #: Some open alert (as read) may close: the write reads the agent's open alerts.
    resolving: bool


@dataclass
class DriftPlan:
    """A pass read and computed, not yet written (`DriftWatch.plan`, then `DriftWatch.apply`)."""

    outcomes: list[_Outcome] = field(default_factory=list)
    #: Agents that may have more ready (a full batch).
    more: set[str] = field(default_factory=set)


class _InputGone(Exception):
    """A trace the pass fed left the queue before the write: the write transaction is rolled back."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.agent_id = agent_id


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
        """One pass over these agents: their queued traces fed to their detectors (see the module
        docstring). Returns the agents that may have more ready (a full batch, or another pass
        fed them meanwhile)."""
        return await self.apply(await self.plan(agent_ids))

    async def plan(self, agent_ids: list[str]) -> DriftPlan:
        """A pass's reading and computing: a read transaction, then the cards (a slow Registry
        holds no transaction open), then the detectors."""
        inputs = await self.store.read_pass(agent_ids)
        cards: dict[str, dict[str, Any] | None] = {}
        for agent in inputs:
            for trace in agent.queued:
                if trace.card_id not in cards:
                    cards[trace.card_id] = (
                        await self.registry.card(agent.agent_id, trace.card_id) if trace.card_id else None)
        outcomes = await self._compute(inputs, cards)
        return DriftPlan(outcomes, {agent.agent_id for agent in inputs if len(agent.queued) == PASS_LIMIT})

    async def _compute(self, inputs: list[AgentInput],
                       cards: dict[str, dict[str, Any] | None]) -> list[_Outcome]:
        """The detectors over the queued traces, on the event loop in slices of `_SLICE` seconds:
        intake and result writes run in between. (In a thread it was worse: every wait of the
        event loop, for SQLite's driver thread too, then handed the GIL to the detectors for up
        to the 5 ms switch interval; visibility p95 x1.5 to x1.7 in bench/observer_throughput.py.)"""
        outcomes = []
        resume = time.perf_counter() + _SLICE
        for agent in inputs:
            detector = DriftDetector(
                threshold=self.settings.drift_threshold, sustained=self.settings.drift_sustained,
                baseline_size=self.settings.drift_baseline_size,
                state=json.loads(agent.state_json) if agent.state_json else None,
            )
            findings: list[DriftFinding] = []
            recovery = _recovery(detector.state)
            for trace in agent.queued:
                if time.perf_counter() >= resume:
                    await asyncio.sleep(0)
                    resume = time.perf_counter() + _SLICE
                card = cards[trace.card_id] or {"card_id": trace.card_id}
                baseline_ready = int(detector.state.get("baseline_count") or 0) >= detector.baseline_size
                findings.extend(detector.observe(json.loads(trace.trace_json), card))
                _count_recovery(detector.state, recovery, baseline_ready)
            state = DetectorState(
                agent.agent_id, str(detector.state.get("card_id") or ""),
                int(detector.state.get("observed") or 0), json.dumps(detector.state, separators=(",", ":")),
            )
            resolving = any(_recovered(_references(alert), recovery, self.settings.drift_sustained)
                            for alert in agent.open_alerts)
            fed = [trace.trace_id for trace in agent.queued]
            outcomes.append(_Outcome(agent.agent_id, agent.cursor, state, fed, findings, recovery, resolving))
        return outcomes

    async def apply(self, plan: DriftPlan) -> set[str]:
        """A pass's write: one transaction, conditional per agent (see the module docstring).
        Returns the agents to run again."""
        more = set(plan.more)
        outcomes = plan.outcomes
        while outcomes:
            notes: list[str] = []
            try:
                moved = await self.store.feed(
                    functools.partial(self._write, outcomes=outcomes, now=utcnow(), notes=notes))
            except _InputGone as gone:  # rolled back: again, without that agent
                more.add(gone.agent_id)
                outcomes = [outcome for outcome in outcomes if outcome.agent_id != gone.agent_id]
                continue
            for note in notes:
                logger.warning("%s", note)
            return more | moved
        return more

    async def _write(self, feed: DriftFeed, outcomes: list[_Outcome], now: datetime,
                     notes: list[str]) -> set[str]:
        """A handful of statements for all agents (the pass's share of the write lock): states,
        queue, then alerts where there are findings or an alert may close."""
        saved = await feed.save_states([(outcome.state, outcome.cursor) for outcome in outcomes], now)
        mine = [outcome for outcome in outcomes if outcome.agent_id in saved]
        dropped = await feed.drop_queued([trace_id for outcome in mine for trace_id in outcome.fed])
        for outcome in mine:
            if dropped[outcome.agent_id] != len(outcome.fed):
                raise _InputGone(outcome.agent_id)
        for outcome in mine:
            if not outcome.findings and not outcome.resolving:
                continue
            alerts = {alert.direction: alert for alert in await feed.open_alerts(outcome.agent_id)}
            for finding in outcome.findings:
                await self._record(feed, outcome.agent_id, finding, alerts, now, notes)
            await self._resolve_recovered(feed, outcome.agent_id, list(alerts.values()), outcome.recovery,
                                          now)
        return {outcome.agent_id for outcome in outcomes} - saved

    async def _record(self, feed: DriftFeed, agent_id: str, finding: DriftFinding,
                      alerts: dict[str, OpenAlert], now: datetime, notes: list[str]) -> None:
        """A finding opens an alert for its direction, or updates the one open (`alerts`: the
        agent's open alerts by direction, kept current)."""
        existing = alerts.get(finding.direction)
        if existing is None:
            details: dict[str, Any] = {
                "trace_ids": finding.trace_ids[-_MAX_ALERT_TRACE_IDS:],
                "analysis": _analysis(finding),
                "references": [finding.reference],
                "threshold": finding.threshold,
                "indicators": finding.indicators,
                "findings": 1,
            }
            alert_id = f"da-{uuid.uuid4().hex}"
            await feed.add_alert(
                alert_id=alert_id,
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
            alerts[finding.direction] = OpenAlert(alert_id, finding.card_id, finding.severity,
                                                  finding.sustained_traces, details, finding.reference,
                                                  finding.direction)
            notes.append(f"drift alert for {agent_id}: {details['analysis']}")
            return
        details = dict(existing.details)
        trace_ids = list(dict.fromkeys([*(details.get("trace_ids") or []), *finding.trace_ids]))
        details["trace_ids"] = trace_ids[-_MAX_ALERT_TRACE_IDS:]
        details["references"] = sorted({*(details.get("references") or []), finding.reference})
        details["analysis"] = _analysis(finding)
        details["indicators"] = finding.indicators
        details["findings"] = int(details.get("findings") or 1) + 1
        severity = max(existing.severity, finding.severity, key=lambda s: _SEVERITY_RANK.get(s, 0))
        card_id = finding.card_id or existing.card_id
        sustained = max(existing.sustained_traces, finding.sustained_traces)
        await feed.update_alert(
            existing.alert_id,
            card_id=card_id,
            severity=severity,
            similarity=finding.similarity,
            sustained_traces=sustained,
            details=details,
            now=now,
        )
        alerts[finding.direction] = OpenAlert(existing.alert_id, card_id, severity, sustained, details,
                                              existing.reference, existing.direction)

    async def _resolve_recovered(self, feed: DriftFeed, agent_id: str, alerts: list[OpenAlert],
                                 recovery: dict[str, int], now: datetime) -> None:
        """Closes the agent's open alerts whose every reference has seen `drift_sustained`
        consecutive traces at or above the threshold since (behaviour is back)."""
        for alert in alerts:
            references = _references(alert)
            if not _recovered(references, recovery, self.settings.drift_sustained):
                continue
            details = dict(alert.details)
            details["resolved_at"] = now.isoformat()
            details["resolution"] = (
                f"Closed by itself: the last {min(recovery.get(ref, 0) for ref in references)} traces scored "
                f"at or above {self.settings.drift_threshold:.2f} similarity against "
                f"{' and '.join(_REFERENCE_NAMES.get(ref, ref) for ref in sorted(references))}.")
            await feed.resolve_alert(alert.alert_id, details, now)
            logger.info("drift alert %s of %s closed: behaviour returned", alert.alert_id, agent_id)

    async def acknowledge(self, agent_id: str, agent_hash: str, alert_id: str) -> DriftAlert:
        """The agent's owner (who holds its credential) acknowledges one of its alerts."""
        if not agent_hash:
            raise Unauthenticated("agent_hash is required to acknowledge an alert on behalf of an agent")
        validate_agent_hash(agent_hash)
        validate_agent_id(agent_id, required=True)
        if not alert_id or len(alert_id) > 48 or not alert_id.isprintable():
            raise InvalidArgument("alert_id", "must be a drift alert id (da-...)")
        await self.registry.check_owner(agent_id, agent_hash.lower())
        alert = await self.store.acknowledge(agent_id, alert_id)
        if alert is None:
            raise NotFound(f"agent {agent_id} has no drift alert {alert_id!r}", reason="ALERT_NOT_FOUND",
                           alert_id=alert_id)
        return alert

    async def list_alerts(self, agent_id: str, size: int, token: str) -> tuple[list[DriftAlert], str]:
        """Alerts newest first (by creation), optionally of one agent; keyset-paginated."""
        validate_agent_id(agent_id)
        limit = page_size(size)
        scope = f"drift_alerts:{agent_id}"
        after = decode_page_token(token, scope=scope, types=(datetime, str))
        alerts = await self.store.list_alerts(agent_id, after, limit + 1)
        return next_page(alerts, limit, scope=scope, key=lambda alert: (alert.created_at, alert.alert_id))
