"""Storage for alerts: subscriptions, the delivery outbox, the feed's read position, and the
reads of the stored records the feed turns into events (traces, their violations, drift
alerts). The only module of `observer.alerts` that runs SQL (`observer/tables.py`'s rule).

The outbox protocol, the same on both backends and the same as the exchange queue's:

* `enqueue` inserts deliveries with ``ON CONFLICT (subscription_id, event_key) DO NOTHING``
  and moves the feed's read position, in one transaction: an event found twice (by a second
  pass, or by another observer) is queued once.
* `claim` selects due deliveries (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
  observers never take the same one) and leases them to one owner with ``UPDATE ... RETURNING``;
  a delivery whose lease expired (its observer died mid-send) is due again.
* `settle` records an attempt's result only while the owner still holds the lease.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from smoltbot.core.outcomes import UNREAD_OUTCOMES
from smoltbot.core.storage import Database, insert_ignoring_conflicts, utcnow
from smoltbot.observer.record_kinds import DECISION
from smoltbot.observer.tables import (
    alert_deliveries,
    alert_feed,
    alert_subscriptions,
    chunks,
    drift_alerts,
    trace_violations,
    traces,
)

__all__ = [
    "AlertStore",
    "ClaimedDelivery",
    "DeliveryRow",
    "DriftRow",
    "NewDelivery",
    "SetAsideRow",
    "SubscriptionRow",
    "ViolationRow",
]

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"


@dataclass(frozen=True)
class SubscriptionRow:
    subscription_id: str
    agent_id: str
    url: str
    secret: str
    events: tuple[str, ...]
    min_severity: str
    failure_rate_threshold: float
    format: str
    created_at: datetime


@dataclass(frozen=True)
class NewDelivery:
    delivery_id: str
    subscription_id: str
    agent_id: str
    event: str
    event_key: str
    summary: str
    event_json: str


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: str
    subscription_id: str
    agent_id: str
    event: str
    summary: str
    state: str
    attempts: int
    last_status: int
    last_error: str
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class ClaimedDelivery:
    delivery_id: str
    subscription_id: str
    event: str
    event_json: str
    #: Including this one.
    attempts: int
    url: str
    secret: str
    format: str


@dataclass(frozen=True)
class ViolationRow:
    trace_id: str
    agent_id: str
    timestamp: datetime
    stored_at: datetime
    action_name: str
    type: str
    severity: str


@dataclass(frozen=True)
class SetAsideRow:
    exchange_id: str
    agent_id: str
    timestamp: datetime
    stored_at: datetime
    outcome: str


@dataclass(frozen=True)
class DriftRow:
    alert_id: str
    agent_id: str
    direction: str
    severity: str
    similarity: float
    created_at: datetime


def _subscription(row: sa.Row[tuple[object, ...]]) -> SubscriptionRow:
    m = row._mapping
    return SubscriptionRow(
        m["subscription_id"],
        m["agent_id"],
        m["url"],
        m["secret"],
        tuple(event for event in str(m["events"]).split(",") if event),
        m["min_severity"],
        float(m["failure_rate_threshold"]),
        m["format"],
        m["created_at"],
    )


def _delivery(row: sa.Row[tuple[object, ...]]) -> DeliveryRow:
    m = row._mapping
    return DeliveryRow(
        m["delivery_id"],
        m["subscription_id"],
        m["agent_id"],
        m["event"],
        m["summary"],
        m["state"],
        int(m["attempts"]),
        int(m["last_status"]),
        m["last_error"],
        m["created_at"],
        m["next_attempt_at"],
        m["delivered_at"],
    )


class AlertStore:
    """Every method runs its own transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- subscriptions ---------------------------------------------------------------------

    async def add_subscription(self, row: SubscriptionRow) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                alert_subscriptions.insert().values(
                    subscription_id=row.subscription_id,
                    agent_id=row.agent_id,
                    url=row.url,
                    secret=row.secret,
                    events=",".join(row.events),
                    min_severity=row.min_severity,
                    failure_rate_threshold=row.failure_rate_threshold,
                    format=row.format,
                    created_at=row.created_at,
                )
            )

    async def list_subscriptions(
        self, agent_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[SubscriptionRow]:
        """The agent's subscriptions, oldest first."""
        query = sa.select(alert_subscriptions).where(alert_subscriptions.c.agent_id == agent_id)
        if after is not None:
            query = query.where(
                sa.tuple_(alert_subscriptions.c.created_at, alert_subscriptions.c.subscription_id)
                > sa.tuple_(*after)
            )
        query = query.order_by(alert_subscriptions.c.created_at, alert_subscriptions.c.subscription_id)
        async with self.db.read() as conn:
            return [_subscription(row) for row in await conn.execute(query.limit(limit))]

    async def all_subscriptions(self) -> list[SubscriptionRow]:
        async with self.db.read() as conn:
            return [_subscription(row) for row in await conn.execute(sa.select(alert_subscriptions))]

    async def delete_subscription(self, agent_id: str, subscription_id: str) -> bool:
        """Removes the subscription and its deliveries; False when the agent has no such one."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                alert_subscriptions.delete().where(
                    alert_subscriptions.c.agent_id == agent_id,
                    alert_subscriptions.c.subscription_id == subscription_id,
                )
            )
            if not result.rowcount:
                return False
            await conn.execute(
                alert_deliveries.delete().where(alert_deliveries.c.subscription_id == subscription_id)
            )
        return True

    # -- the feed ---------------------------------------------------------------------------

    async def read_to(self, source: str) -> datetime | None:
        async with self.db.read() as conn:
            return (
                await conn.execute(sa.select(alert_feed.c.read_to).where(alert_feed.c.source == source))
            ).scalar_one_or_none()

    async def enqueue(self, deliveries: Sequence[NewDelivery], positions: dict[str, datetime]) -> int:
        """Queues the deliveries not queued before and moves the feed's positions forward (never
        back), in one transaction. Returns how many were new."""
        now = utcnow()
        added = 0
        async with self.db.begin() as conn:
            # No conflict target: the delivery id is a digest of (subscription_id, event_key), so
            # a repeat conflicts on both unique keys at once, and either must be ignored.
            statement = insert_ignoring_conflicts(self.db.dialect, alert_deliveries).returning(
                alert_deliveries.c.delivery_id
            )
            values = [
                {
                    "delivery_id": item.delivery_id,
                    "subscription_id": item.subscription_id,
                    "agent_id": item.agent_id,
                    "event": item.event,
                    "event_key": item.event_key[:256],
                    "summary": item.summary[:512],
                    "event_json": item.event_json,
                    "state": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "last_status": 0,
                    "last_error": "",
                    "created_at": now,
                    "delivered_at": None,
                }
                for item in deliveries
            ]
            for chunk in chunks(values, 100):
                added += len((await conn.execute(statement, list(chunk))).all())
            for source, read_to in positions.items():
                moved = await conn.execute(
                    alert_feed.update()
                    .where(alert_feed.c.source == source, alert_feed.c.read_to < read_to)
                    .values(read_to=read_to)
                )
                if not moved.rowcount:
                    await conn.execute(
                        insert_ignoring_conflicts(self.db.dialect, alert_feed, alert_feed.c.source).values(
                            source=source, read_to=read_to
                        )
                    )
        return added

    async def queued_since(self, since: datetime) -> set[tuple[str, str]]:
        """(subscription_id, event_key) of the deliveries queued at or after `since`: what a feed
        pass reading events stored since then need not queue again."""
        query = sa.select(alert_deliveries.c.subscription_id, alert_deliveries.c.event_key).where(
            alert_deliveries.c.created_at >= since
        )
        async with self.db.read() as conn:
            return {(row.subscription_id, row.event_key) for row in await conn.execute(query)}

    async def violations_since(self, since: datetime, agent_ids: Iterable[str]) -> list[ViolationRow]:
        """Violations of decision traces stored at or after `since`, of these agents."""
        found: list[ViolationRow] = []
        async with self.db.read() as conn:
            for chunk in chunks(sorted(set(agent_ids))):
                query = (
                    sa.select(
                        traces.c.trace_id,
                        traces.c.agent_id,
                        traces.c.timestamp,
                        traces.c.created_at,
                        traces.c.action_name,
                        trace_violations.c.type,
                        trace_violations.c.severity,
                    )
                    .join(trace_violations, trace_violations.c.trace_id == traces.c.trace_id)
                    .where(
                        traces.c.created_at >= since,
                        traces.c.agent_id.in_(chunk),
                        traces.c.record_kind == DECISION,
                    )
                    .order_by(traces.c.created_at, traces.c.trace_id, trace_violations.c.position)
                )
                found.extend(ViolationRow(*row) for row in await conn.execute(query))
        return found

    async def set_aside_since(self, since: datetime, agent_ids: Iterable[str]) -> list[SetAsideRow]:
        """Exchanges stored at or after `since` whose record is a failure on smoltbot's side
        (capture_failed: the gateway sent a minimal record; processing_failed: the observer gave
        up), one row per exchange."""
        found: dict[str, SetAsideRow] = {}
        async with self.db.read() as conn:
            for chunk in chunks(sorted(set(agent_ids))):
                query = (
                    sa.select(
                        traces.c.exchange_id,
                        traces.c.agent_id,
                        traces.c.timestamp,
                        traces.c.created_at,
                        traces.c.outcome,
                    )
                    .where(
                        traces.c.created_at >= since,
                        traces.c.agent_id.in_(chunk),
                        traces.c.outcome.in_(sorted(UNREAD_OUTCOMES)),
                    )
                    .order_by(traces.c.created_at, traces.c.trace_id)
                )
                for row in await conn.execute(query):
                    found.setdefault(row.exchange_id, SetAsideRow(*row))
        return list(found.values())

    async def drift_alerts_since(self, since: datetime, agent_ids: Iterable[str]) -> list[DriftRow]:
        found: list[DriftRow] = []
        async with self.db.read() as conn:
            for chunk in chunks(sorted(set(agent_ids))):
                query = (
                    sa.select(
                        drift_alerts.c.alert_id,
                        drift_alerts.c.agent_id,
                        drift_alerts.c.direction,
                        drift_alerts.c.severity,
                        drift_alerts.c.similarity,
                        drift_alerts.c.created_at,
                    )
                    .where(drift_alerts.c.created_at >= since, drift_alerts.c.agent_id.in_(chunk))
                    .order_by(drift_alerts.c.created_at)
                )
                found.extend(DriftRow(*row) for row in await conn.execute(query))
        return found

    async def failure_counts(
        self, agent_ids: Iterable[str], start: datetime, end: datetime
    ) -> dict[str, tuple[int, int]]:
        """(calls, failed calls) per agent over calls that happened in [start, end): an exchange
        with several traces is one call, failed when any of its traces records a failure."""
        counts: dict[str, tuple[int, int]] = {}
        async with self.db.read() as conn:
            for chunk in chunks(sorted(set(agent_ids))):
                per_call = (
                    sa.select(
                        traces.c.agent_id,
                        traces.c.exchange_id,
                        sa.func.max(sa.case((traces.c.failed, 1), else_=0)).label("failed"),
                    )
                    .where(
                        traces.c.agent_id.in_(chunk), traces.c.timestamp >= start, traces.c.timestamp < end
                    )
                    .group_by(traces.c.agent_id, traces.c.exchange_id)
                    .subquery()
                )
                query = sa.select(
                    per_call.c.agent_id, sa.func.count(), sa.func.sum(per_call.c.failed)
                ).group_by(per_call.c.agent_id)
                for agent_id, calls, failed in await conn.execute(query):
                    counts[agent_id] = (int(calls), int(failed or 0))
        return counts

    # -- the outbox --------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
        """Leases up to `limit` due deliveries to `owner`, oldest due first."""
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds)
        due = (
            sa.select(alert_deliveries.c.delivery_id)
            .where(
                alert_deliveries.c.state.in_((PENDING, SENDING)), alert_deliveries.c.next_attempt_at <= now
            )
            .order_by(alert_deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self.db.begin() as conn:
            taken = list((await conn.execute(due)).scalars())
            if not taken:
                return []
            rows = (
                await conn.execute(
                    alert_deliveries.update()
                    .where(alert_deliveries.c.delivery_id.in_(taken))
                    .values(
                        state=SENDING,
                        lease_owner=owner,
                        lease_expires_at=expires,
                        next_attempt_at=expires,
                        attempts=alert_deliveries.c.attempts + 1,
                    )
                    .returning(
                        alert_deliveries.c.delivery_id,
                        alert_deliveries.c.subscription_id,
                        alert_deliveries.c.event,
                        alert_deliveries.c.event_json,
                        alert_deliveries.c.attempts,
                    )
                )
            ).all()
            subscriptions = {
                row.subscription_id: row
                for row in await conn.execute(
                    sa.select(
                        alert_subscriptions.c.subscription_id,
                        alert_subscriptions.c.url,
                        alert_subscriptions.c.secret,
                        alert_subscriptions.c.format,
                    ).where(alert_subscriptions.c.subscription_id.in_({row.subscription_id for row in rows}))
                )
            }
            # A subscription removed while its event was being queued: nothing to deliver to.
            orphans = [row.delivery_id for row in rows if row.subscription_id not in subscriptions]
            if orphans:
                await conn.execute(
                    alert_deliveries.delete().where(alert_deliveries.c.delivery_id.in_(orphans))
                )
        return [
            ClaimedDelivery(
                row.delivery_id,
                row.subscription_id,
                row.event,
                row.event_json,
                int(row.attempts),
                subscriptions[row.subscription_id].url,
                subscriptions[row.subscription_id].secret,
                subscriptions[row.subscription_id].format,
            )
            for row in rows
            if row.subscription_id in subscriptions
        ]

    async def settle(
        self,
        owner: str,
        delivery_id: str,
        *,
        delivered: bool,
        status: int,
        error: str,
        retry_at: datetime | None,
    ) -> bool:
        """Records one attempt: delivered, to be retried at `retry_at`, or (None) failed for
        good. False when `owner` no longer held the lease (someone else settles it)."""
        now = utcnow()
        if delivered:
            values = {"state": DELIVERED, "delivered_at": now, "last_error": ""}
        elif retry_at is not None:
            values = {"state": PENDING, "next_attempt_at": retry_at, "last_error": error[:512]}
        else:
            values = {"state": FAILED, "last_error": error[:512]}
        async with self.db.begin() as conn:
            result = await conn.execute(
                alert_deliveries.update()
                .where(
                    alert_deliveries.c.delivery_id == delivery_id,
                    alert_deliveries.c.state == SENDING,
                    alert_deliveries.c.lease_owner == owner,
                )
                .values(lease_owner=None, lease_expires_at=None, last_status=status, **values)
            )
        return bool(result.rowcount)

    async def release(self, owner: str, delivery_ids: Sequence[str]) -> None:
        """Gives leased deliveries back (a stopping observer): due now, the attempt refunded."""
        if not delivery_ids:
            return
        async with self.db.begin() as conn:
            for chunk in chunks(list(delivery_ids)):
                await conn.execute(
                    alert_deliveries.update()
                    .where(
                        alert_deliveries.c.delivery_id.in_(chunk),
                        alert_deliveries.c.state == SENDING,
                        alert_deliveries.c.lease_owner == owner,
                    )
                    .values(
                        state=PENDING,
                        lease_owner=None,
                        lease_expires_at=None,
                        next_attempt_at=utcnow(),
                        attempts=sa.case(
                            (alert_deliveries.c.attempts > 0, alert_deliveries.c.attempts - 1), else_=0
                        ),
                    )
                )

    async def list_deliveries(
        self, agent_id: str, subscription_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[DeliveryRow]:
        """Deliveries newest first, optionally of one subscription."""
        query = sa.select(alert_deliveries).where(alert_deliveries.c.agent_id == agent_id)
        if subscription_id:
            query = query.where(alert_deliveries.c.subscription_id == subscription_id)
        if after is not None:
            query = query.where(
                sa.tuple_(alert_deliveries.c.created_at, alert_deliveries.c.delivery_id) < sa.tuple_(*after)
            )
        query = query.order_by(alert_deliveries.c.created_at.desc(), alert_deliveries.c.delivery_id.desc())
        async with self.db.read() as conn:
            return [_delivery(row) for row in await conn.execute(query.limit(limit))]

    async def prune(self, before: datetime) -> int:
        """Deletes the history of deliveries that ended (delivered or failed) before `before`."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                alert_deliveries.delete().where(
                    alert_deliveries.c.state.in_((DELIVERED, FAILED)), alert_deliveries.c.created_at < before
                )
            )
        return int(result.rowcount or 0)

    async def delivery_counts(self) -> dict[str, int]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(alert_deliveries.c.state, sa.func.count()).group_by(alert_deliveries.c.state)
                )
            ).all()
        return {state: int(count) for state, count in rows}
