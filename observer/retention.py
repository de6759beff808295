"""Retention as each agent's card declares it, and the owner's deletion of an agent's data.

Each pass (every `SMOLTBOT_RETENTION_INTERVAL` seconds, the first five minutes after start)
goes over every agent with stored data and deletes, in batches of `SMOLTBOT_RETENTION_BATCH_SIZE` rows, its
traces (with their violations and drift input), usage rows, tool-execution reports, finished
exchange records, resolved drift alerts and history-ledger rows older than its period: the card's
`audit.retention_days`, kept between `SMOLTBOT_RETENTION_MIN_DAYS` and
`SMOLTBOT_RETENTION_MAX_DAYS`; a card that declares none (0, the AAP placeholder) gets the
maximum, and so do exchange records that have no agent. Raw exchange payloads have their own
short period, `SMOLTBOT_PAYLOAD_TTL_HOURS`, whatever the exchange's outcome (a payload still
waiting in the queue is the work to do, and stays). When the Registry cannot say which card is
in force (down, or no such agent), that agent waits for the next pass: nothing is deleted on a
guess. Where it deletes a session's oldest ledger rows it notes the cut (`evidence_cuts`), so
that a later check of the session calls the turns it can no longer vouch for unknown instead of
unrelayed; the note goes one more period later.

Batches are short transactions with a pause between them, so intake goes on during a pass; with
several observers exactly one does each batch (`retention_store`). What was deleted is counted
per agent (`retention_state`, served in /metrics and as the integrity's `since`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from smoltbot.core.errors import Unauthenticated
from smoltbot.core.ids import validate_agent_hash
from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.core.storage.partitions import PARTITIONED
from smoltbot.observer.integrity_counters import LAG
from smoltbot.observer.registry_client import RegistryClient, RegistryError, RegistryUnavailable
from smoltbot.observer.retention_store import Batch, RetentionStore
from smoltbot.observer.validation import validate_agent_id

__all__ = ["PassReport", "Retention", "RetentionPolicy"]

logger = logging.getLogger(__name__)

#: Between two batches: lets intake and processing take the write lock (SQLite) in between.
_BATCH_PAUSE = 0.01
#: Seconds from start to the first pass (at most `retention_interval`).
_FIRST_PASS_DELAY = 300.0
#: How long a batch waits when another observer's batch holds the lock.
_BUSY_PAUSE = 0.05


@dataclass(frozen=True)
class RetentionPolicy:
    max_days: int
    min_days: int
    payload_ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(max_days=max(settings.retention_max_days, settings.retention_min_days),
                   min_days=settings.retention_min_days,
                   payload_ttl=timedelta(hours=settings.payload_ttl_hours))

    def days_for(self, card: dict[str, Any] | None) -> int:
        """The period of an agent whose card in force is `card` (None: no card)."""
        declared = 0
        if card is not None:
            audit = card.get("audit") or {}
            try:
                declared = int(audit.get("retention_days") or 0)
            except (TypeError, ValueError):
                declared = 0
        if declared <= 0:
            return self.max_days
        return min(max(declared, self.min_days), self.max_days)


@dataclass
class PassReport:
    """What one pass deleted: per agent (traces, all rows), and payloads."""

    traces: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    payloads: int = 0
    #: Agents left for the next pass because the Registry could not be asked.
    skipped: list[str] = field(default_factory=list)
    #: Every batch this observer did (table, keys): for tests of the one-batch-one-observer rule.
    batches: list[Batch] = field(default_factory=list)


class Retention:
    """The background task, and the owner's deletion."""

    def __init__(self, store: RetentionStore, registry: RegistryClient, settings: Settings) -> None:
        self.store = store
        self.registry = registry
        self.policy = RetentionPolicy.from_settings(settings)
        self.interval = settings.retention_interval
        self.batch_size = settings.retention_batch_size
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        #: Counted by this observer since it started (the exact per-agent totals are in the database).
        self.payloads_expired = 0
        self.passes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        # The month partitions first (PostgreSQL), so that intake's rows land in their month's.
        try:
            await self.store.roll_forward(utcnow())
        except Exception:  # a database outage: the first pass makes them
            logger.warning("could not make this month's partitions; the next pass tries again", exc_info=True)
        # Not at once: a process that starts and stops again (a restart loop, a test) leaves the
        # data alone, and start-up is not slowed by a pass.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), min(self.interval, _FIRST_PASS_DELAY))
        while not self._stopping.is_set():
            try:
                await self.run_pass()
            except Exception:  # a database outage: the next pass tries again
                logger.warning("retention pass failed; next one in %.0fs", self.interval, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def run_pass(self, now: datetime | None = None) -> PassReport:
        """Deletes everything past its time as of `now`, batch by batch."""
        now = now or utcnow()
        report = PassReport()
        made = await self.store.roll_forward(now)  # PostgreSQL's month partitions
        if made:
            logger.info("retention made the month partitions %s", ", ".join(made))
        periods: dict[str, timedelta] = {}
        for agent_id in await self.store.agents():
            try:
                card = await self.registry.active_card(agent_id)
            except (RegistryUnavailable, RegistryError) as error:
                report.skipped.append(agent_id)
                logger.warning("retention skips %s this pass: %s", agent_id, error)
                continue
            periods[agent_id] = timedelta(days=self.policy.days_for(card))
        await self._drop_months(report, now, periods)
        for agent_id, period in periods.items():
            await self._drain(report, agent_id, now - period, cuts_cutoff=now - 2 * period)
        for agent_id in await self.store.agents():
            while not self._stopping.is_set():
                batch = await self.store.roll_up(agent_id, now - LAG)
                if not batch.busy:
                    break
                await asyncio.sleep(_BUSY_PAUSE)
        await self._drain(report, None, now - timedelta(days=self.policy.max_days))
        while not self._stopping.is_set():
            batch = await self.store.expire_payloads(now - self.policy.payload_ttl, self.batch_size)
            if batch.busy:
                await asyncio.sleep(_BUSY_PAUSE)
                continue
            if batch.empty:
                break
            report.batches.append(batch)
            report.payloads += batch.deleted
            self.payloads_expired += batch.deleted
            await asyncio.sleep(_BATCH_PAUSE)
        self.passes += 1
        if report.traces or report.payloads:
            logger.info("retention deleted %d traces of %d agents, %d other rows, %d payloads",
                        sum(report.traces.values()), len(report.traces),
                        sum(report.rows.values()) - sum(report.traces.values()), report.payloads)
        return report

    async def _drop_months(self, report: PassReport, now: datetime, periods: dict[str, timedelta]) -> None:
        """PostgreSQL: drops each month's partition that every agent with rows in it is past
        its period for (or that is older than the longest period, whatever the cards say)."""
        shortest = timedelta(days=self.policy.min_days)
        longest = timedelta(days=self.policy.max_days)
        for table in PARTITIONED:
            for month in await self.store.months(table):
                if month.end > now - shortest or self._stopping.is_set():
                    break  # this month and the later ones are within every agent's period
                if month.end > now - longest:
                    agents = await self.store.agents_in(table, month)
                    # An empty month stays until then too: a late row of its time goes there.
                    if not agents or not all(agent in periods and month.end <= now - periods[agent]
                                             for agent in agents):
                        continue  # an agent keeps rows of it (or its card is unknown this pass)
                while True:
                    batch = await self.store.drop_partition(table, month)
                    if not batch.busy:
                        break
                    await asyncio.sleep(_BUSY_PAUSE)
                    if self._stopping.is_set():
                        return
                if batch.empty:
                    logger.info("retention could not drop %s's partition of %s this pass (busy)",
                                table, month.suffix)
                    continue
                report.batches.append(batch)
                for agent_id, count in batch.rows_by_agent.items():
                    report.rows[agent_id] = report.rows.get(agent_id, 0) + count
                for agent_id, count in batch.traces_by_agent.items():
                    report.traces[agent_id] = report.traces.get(agent_id, 0) + count
                await asyncio.sleep(_BATCH_PAUSE)

    async def _drain(self, report: PassReport, agent_id: str | None, cutoff: datetime, *,
                     cuts_cutoff: datetime | None = None) -> None:
        while not self._stopping.is_set():
            batch = await self.store.delete_batch(agent_id, cutoff, self.batch_size, cuts_cutoff=cuts_cutoff)
            if batch.busy:
                await asyncio.sleep(_BUSY_PAUSE)
                continue
            if batch.empty:
                return
            report.batches.append(batch)
            key = agent_id or ""
            report.rows[key] = report.rows.get(key, 0) + batch.deleted
            if batch.table == "traces":
                report.traces[key] = report.traces.get(key, 0) + len(batch.keys)
            await asyncio.sleep(_BATCH_PAUSE)

    async def delete_agent(self, agent_id: str, agent_hash: str) -> dict[str, int]:
        """Every row of the agent's in the observer's tables, now; then the SQLite WAL truncated.
        Only for the agent's owner: `agent_hash` must be its credential hash."""
        if not agent_hash:
            raise Unauthenticated("agent_hash is required to delete an agent's data")
        agent_hash = validate_agent_hash(agent_hash).lower()
        validate_agent_id(agent_id, required=True)
        await self.registry.check_owner(agent_id, agent_hash)
        counts = await self.store.delete_agent(agent_id, agent_hash, self.batch_size)
        self.registry.forget(agent_id, agent_hash)
        if not await self.store.checkpoint():
            logger.warning("deleted the data of %s, but the WAL could not be truncated yet (busy readers); "
                           "the next truncation wipes it", agent_id)
        logger.info("deleted the data of %s at its owner's request: %d rows", agent_id, sum(counts.values()))
        return counts
