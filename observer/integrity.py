"""Integrity scores: what share of an agent's traces passed verification, and how much of
what they did could be seen at all. `TraceStore.integrity` computes them without loading a
trace: all time from per-agent counters (`integrity_counters`) plus the traces created since,
the recent window and the timeline by SQL over bounded index ranges; this module says what
they are.

`recent` covers the agent's last `window` traces (by trace time), `all_time` all of them that
are still kept: retention deletes traces past the card's `audit.retention_days`
(`observer.retention`), and `retained_since` says from when on the record is complete.
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

__all__ = ["Integrity", "IntegrityPoint", "IntegrityWindow", "timeline_grid"]

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
    #: Retention deleted the agent's traces before this time (None: nothing deleted yet), so
    #: `all_time` is "since then"; and how many traces it deleted.
    retained_since: datetime | None = None
    retention_deleted_traces: int = 0


def timeline_grid(first: datetime, now: datetime) -> tuple[datetime, timedelta]:
    """The timeline's first bucket start and its step, for an agent whose first trace in the
    span is at `first`: hourly up to two days back, else 6-hourly buckets aligned on the day."""
    step = timedelta(hours=1) if now - first <= _HOURLY_UP_TO else timedelta(hours=6)
    hours = int(step.total_seconds() // 3600)
    origin = first.replace(minute=0, second=0, microsecond=0)
    origin -= timedelta(hours=origin.hour % hours)
    return origin, step
