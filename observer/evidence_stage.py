"""The processor's evidence stage: what history integrity and provenance (docs/evidence.md) add
to the queue worker's round.

Before compute, each job gets its session's ledger rows; a call whose session has earlier calls
not recorded yet goes back to the queue (its attempt refunded: `EvidenceStore.jobs_for`). After
compute, a row whose history check found something is checked again once after the grace
(`EvidenceStore.check_again`), the model analyzer's answer kept so the second pass does not pay
for a second model call; any other row waits here until the writer stores it, in its own
transaction just before the traces.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta

from smoltbot.core.settings import Settings
from smoltbot.core.storage import Database, utcnow
from smoltbot.observer.analyzers import AnalysisResult
from smoltbot.observer.evidence_store import EvidenceRow, EvidenceStore
from smoltbot.observer.pipeline import Job, JobResult
from smoltbot.observer.queue import Finished, Retry

__all__ = ["EvidenceStage"]

# Model analyses kept for a history check done again (a few per second at most in practice).
_ANALYSES_KEPT = 1024
#: How soon a call that waits for its session's earlier calls is tried again.
_ORDERING_PAUSE = timedelta(seconds=0.2)


class EvidenceStage:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.store = EvidenceStore(db, settings)
        #: The model analyzer's answer for an exchange whose history check is done again after the
        #: grace: the second pass reuses it instead of paying for a second model call. Bounded; an
        #: entry this process cannot keep is just asked again.
        self._analyses_to_reuse: OrderedDict[str, AnalysisResult] = OrderedDict()
        #: Rows computed, waiting to be stored with their exchange's result.
        self._rows: dict[str, EvidenceRow] = {}

    @property
    def enabled(self) -> bool:
        return self.store.enabled

    async def with_ledgers(self, calls: Sequence[tuple[Job, datetime]],
                           results: dict[str, Finished | Retry]) -> list[Job]:
        """The jobs (each with the time of its call) given their session's ledger rows; a call
        whose session has earlier calls not yet recorded gets a refunded retry in `results` and is
        left out (evidence_store: ordering)."""
        jobs, waiting = await self.store.jobs_for(
            [(job.exchange_id, job.agent_id, job.session_id, call_at) for job, call_at in calls])
        for exchange_id, why in waiting.items():
            results[exchange_id] = Retry(exchange_id, utcnow() + _ORDERING_PAUSE, why, counted=False)
        return [dataclasses.replace(job, evidence=jobs.get(job.exchange_id))
                for job, _ in calls if job.exchange_id not in waiting]

    def held_back(self, result: JobResult, received_at: datetime) -> Retry | None:
        """After compute: a retry for a result whose history check must be done again (once
        earlier calls can be here), else None, its row kept for the writer."""
        row = result.evidence_row
        if row is None:
            return None
        if self.store.check_again(row, received_at):
            if result.model_analysis is not None:
                self._analyses_to_reuse[result.exchange_id] = result.model_analysis
                while len(self._analyses_to_reuse) > _ANALYSES_KEPT:
                    self._analyses_to_reuse.popitem(last=False)
            return Retry(result.exchange_id, utcnow() + self.store.grace,
                         "history check found something: checked again once earlier calls can be here",
                         counted=False)
        self._rows[result.exchange_id] = row
        return None

    def reused_analysis(self, exchange_id: str) -> AnalysisResult | None:
        """The model analysis kept by a held-back first pass (taken: used once)."""
        return self._analyses_to_reuse.pop(exchange_id, None)

    async def write(self, done: Sequence[Finished]) -> None:
        """The ledger rows of these results, in their own transaction before the traces': a row
        without its traces (their write failed, or the lease was lost) is the same row the next
        attempt writes."""
        await self.store.write([row for result in done if (row := self._rows.get(result.exchange_id))])

    def forget(self, exchange_id: str) -> None:
        """The exchange's result was handled (stored, retried or lost)."""
        self._rows.pop(exchange_id, None)
