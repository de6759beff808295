"""The alert feed: finds new events in the records the observer has stored and queues one
delivery per event and subscription in the outbox.

The feed reads what is committed, never what is in flight: traces and their violations
(violations, missed escalations, records set aside), drift alerts, and call counts per window
(failure rate). Each pass reads from where the last one stopped minus
`alert_settle_seconds`, and queues with its read position in one transaction
(`AlertStore.enqueue`); an event read twice is queued once. So a restart, a crash or a second
observer loses and duplicates nothing, and an event whose transaction committed late (up to the
settle time after it was stamped) is still found. A subscription gets the events stored after
it was created, not the history before.

Failure rate: calls are counted in fixed windows of `alert_failure_window` seconds (aligned to
the Unix epoch, by when each call happened); a window with at least `alert_failure_min_calls`
calls whose failed share reaches a subscription's threshold raises one alert for that window.
The current window and the one before it are checked on each pass, so late records count.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.observer.alerts.events import (
    DRIFT,
    FAILURE_RATE,
    MISSED_ESCALATION,
    RECORD_SET_ASIDE,
    VIOLATION,
    AlertEvent,
    delivery_id_for,
    severity_rank,
)
from smoltbot.observer.alerts.store import AlertStore, NewDelivery, SubscriptionRow, ViolationRow

__all__ = ["AlertFeed"]

_TRACES, _DRIFT = "traces", "drift_alerts"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AlertFeed:
    def __init__(self, store: AlertStore, settings: Settings) -> None:
        self.store = store
        self.settle = timedelta(seconds=settings.alert_settle_seconds)
        self.window = settings.alert_failure_window
        self.min_calls = settings.alert_failure_min_calls

    async def run_once(self) -> int:
        """One pass; returns how many deliveries it queued that were not queued before."""
        now = utcnow()
        subscriptions = await self.store.all_subscriptions()
        by_agent: dict[str, list[SubscriptionRow]] = defaultdict(list)
        for subscription in subscriptions:
            by_agent[subscription.agent_id].append(subscription)
        wanted: list[tuple[SubscriptionRow, AlertEvent]] = []
        if not subscriptions:
            return 0  # nothing to look for, and nothing to write
        positions = {_TRACES: now, _DRIFT: now}
        # Nothing stored before the oldest subscription is wanted: after a long time without
        # any, the first pass does not read the whole history.
        floor = min(subscription.created_at for subscription in subscriptions) - self.settle
        traces_since = max((await self.store.read_to(_TRACES) or now) - self.settle, floor)
        drift_since = max((await self.store.read_to(_DRIFT) or now) - self.settle, floor)
        wanted += await self._trace_events(traces_since, by_agent)
        wanted += await self._drift_events(drift_since, by_agent)
        wanted += await self._failure_rate_events(now, by_agent)
        # A delivery is queued after its event was stored, so this holds every one of the
        # events read above that is already queued (bar failure-rate windows, which are few).
        queued = await self.store.queued_since(min(traces_since, drift_since))
        deliveries = [
            NewDelivery(
                delivery_id_for(subscription.subscription_id, event.event_key),
                subscription.subscription_id,
                event.agent_id,
                event.event,
                event.event_key,
                event.summary,
                event.to_json(),
            )
            for subscription, event in wanted
            # Re-reading the settle window finds mostly what was queued already: leave those
            # out here rather than have the insert ignore them (the insert still would).
            if (subscription.subscription_id, event.event_key) not in queued
        ]
        return await self.store.enqueue(deliveries, positions)

    @staticmethod
    def _for(
        by_agent: dict[str, list[SubscriptionRow]], agent_id: str, event: str, stored_at: datetime
    ) -> list[SubscriptionRow]:
        return [
            subscription
            for subscription in by_agent.get(agent_id, ())
            if event in subscription.events and stored_at >= subscription.created_at
        ]

    async def _trace_events(
        self, since: datetime, by_agent: dict[str, list[SubscriptionRow]]
    ) -> list[tuple[SubscriptionRow, AlertEvent]]:
        wanted: list[tuple[SubscriptionRow, AlertEvent]] = []
        per_trace: dict[str, list[ViolationRow]] = defaultdict(list)
        for row in await self.store.violations_since(since, by_agent):
            per_trace[row.trace_id].append(row)
        for trace_id, rows in per_trace.items():
            first = rows[0]
            for subscription in self._for(by_agent, first.agent_id, VIOLATION, first.stored_at):
                shown = [
                    row
                    for row in rows
                    if severity_rank(row.severity) >= severity_rank(subscription.min_severity)
                ]
                if not shown:
                    continue
                worst = max(shown, key=lambda row: severity_rank(row.severity)).severity
                types = ", ".join(dict.fromkeys(row.type for row in shown))
                wanted.append(
                    (
                        subscription,
                        AlertEvent(
                            VIOLATION,
                            trace_id,
                            first.agent_id,
                            _iso(first.timestamp),
                            f"{first.action_name or 'a decision'} broke its card: {types} ({worst})",
                            {
                                "trace_id": trace_id,
                                "action": first.action_name,
                                "violations": [{"type": row.type, "severity": row.severity} for row in shown],
                            },
                        ),
                    )
                )
            if any(row.type == "missed_escalation" for row in rows):
                for subscription in self._for(by_agent, first.agent_id, MISSED_ESCALATION, first.stored_at):
                    wanted.append(
                        (
                            subscription,
                            AlertEvent(
                                MISSED_ESCALATION,
                                trace_id,
                                first.agent_id,
                                _iso(first.timestamp),
                                f"{first.action_name or 'a decision'} went ahead without the escalation "
                                "its card requires",
                                {"trace_id": trace_id, "action": first.action_name},
                            ),
                        )
                    )
        for aside in await self.store.set_aside_since(since, by_agent):
            for subscription in self._for(by_agent, aside.agent_id, RECORD_SET_ASIDE, aside.stored_at):
                wanted.append(
                    (
                        subscription,
                        AlertEvent(
                            RECORD_SET_ASIDE,
                            aside.exchange_id,
                            aside.agent_id,
                            _iso(aside.timestamp),
                            f"a call's record was set aside ({aside.outcome}): it has no decision trace",
                            {"exchange_id": aside.exchange_id, "outcome": aside.outcome},
                        ),
                    )
                )
        return wanted

    async def _drift_events(
        self, since: datetime, by_agent: dict[str, list[SubscriptionRow]]
    ) -> list[tuple[SubscriptionRow, AlertEvent]]:
        wanted: list[tuple[SubscriptionRow, AlertEvent]] = []
        for row in await self.store.drift_alerts_since(since, by_agent):
            for subscription in self._for(by_agent, row.agent_id, DRIFT, row.created_at):
                wanted.append(
                    (
                        subscription,
                        AlertEvent(
                            DRIFT,
                            row.alert_id,
                            row.agent_id,
                            _iso(row.created_at),
                            f"sustained drift ({row.direction.replace('_', ' ')}, {row.severity}, "
                            f"similarity {row.similarity:.2f})",
                            {
                                "alert_id": row.alert_id,
                                "direction": row.direction,
                                "severity": row.severity,
                                "similarity": row.similarity,
                            },
                        ),
                    )
                )
        return wanted

    async def _failure_rate_events(
        self, now: datetime, by_agent: dict[str, list[SubscriptionRow]]
    ) -> list[tuple[SubscriptionRow, AlertEvent]]:
        agents = [
            agent_id for agent_id, subs in by_agent.items() if any(FAILURE_RATE in s.events for s in subs)
        ]
        if not agents:
            return []
        wanted: list[tuple[SubscriptionRow, AlertEvent]] = []
        current = int(now.timestamp() // self.window * self.window)
        for start_s in (current - int(self.window), current):
            start = datetime.fromtimestamp(start_s, UTC)
            end = start + timedelta(seconds=self.window)
            for agent_id, (calls, failed) in (await self.store.failure_counts(agents, start, end)).items():
                if calls < self.min_calls:
                    continue
                rate = failed / calls
                for subscription in self._for(by_agent, agent_id, FAILURE_RATE, end):
                    if rate < subscription.failure_rate_threshold:
                        continue
                    wanted.append(
                        (
                            subscription,
                            AlertEvent(
                                FAILURE_RATE,
                                _iso(start),
                                agent_id,
                                _iso(start),
                                f"{failed} of {calls} calls failed ({rate:.0%}) "
                                f"between {_iso(start)} and {_iso(end)}",
                                {
                                    "window_start": _iso(start),
                                    "window_end": _iso(end),
                                    "calls": calls,
                                    "failed": failed,
                                    "rate": round(rate, 4),
                                    "threshold": subscription.failure_rate_threshold,
                                },
                            ),
                        )
                    )
        return wanted
