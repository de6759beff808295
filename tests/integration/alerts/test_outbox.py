"""The outbox on both databases: an event queued twice is one delivery, the feed's position
only moves forward, and a delivery whose sender died (lease never settled) is taken over by
another observer once the lease runs out, the dead one's late answer being ignored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from smoltbot.core.storage import migrate, open_database, utcnow
from smoltbot.observer.alerts.events import delivery_id_for
from smoltbot.observer.alerts.store import AlertStore, NewDelivery, SubscriptionRow


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[AlertStore]:
    db = open_database(database_url)
    await migrate(db)
    try:
        yield AlertStore(db)
    finally:
        await db.close()


def _delivery(subscription_id: str, key: str) -> NewDelivery:
    return NewDelivery(
        delivery_id_for(subscription_id, key),
        subscription_id,
        "smolt-0a1b",
        "drift",
        key,
        "drift",
        '{"event":"drift","agent_id":"smolt-0a1b","summary":"s","data":{}}',
    )


async def test_an_event_queued_twice_is_one_delivery_and_positions_only_move_forward(
    store: AlertStore,
) -> None:
    subscription = SubscriptionRow(
        "as-01",
        "smolt-0a1b",
        "https://hooks.example.com/x",
        "whsec_x",
        ("drift",),
        "low",
        0.5,
        "json",
        utcnow(),
    )
    await store.add_subscription(subscription)
    now = utcnow()
    assert await store.enqueue([_delivery("as-01", "drift:da-1")], {"traces": now}) == 1
    assert (
        await store.enqueue(
            [_delivery("as-01", "drift:da-1"), _delivery("as-01", "drift:da-2")],
            {"traces": now - timedelta(minutes=5)},
        )
        == 1
    )
    assert await store.read_to("traces") == now
    assert await store.queued_since(now - timedelta(minutes=1)) == {
        ("as-01", "drift:da-1"),
        ("as-01", "drift:da-2"),
    }


async def test_a_dead_senders_lease_runs_out_and_another_sends_it(store: AlertStore) -> None:
    await store.add_subscription(
        SubscriptionRow(
            "as-02",
            "smolt-0a1b",
            "https://hooks.example.com/x",
            "whsec_x",
            ("drift",),
            "low",
            0.5,
            "json",
            utcnow(),
        )
    )
    await store.enqueue([_delivery("as-02", "drift:da-9")], {})
    (taken,) = await store.claim("observer-a", 10, lease_seconds=0.3)
    assert taken.attempts == 1 and taken.secret == "whsec_x"
    assert await store.claim("observer-b", 10, lease_seconds=5) == []  # leased to a
    await asyncio.sleep(0.4)  # a died without answering: its lease runs out
    (again,) = await store.claim("observer-b", 10, lease_seconds=5)
    assert again.delivery_id == taken.delivery_id and again.attempts == 2
    # a's late answer is ignored; b's counts.
    assert not await store.settle(
        "observer-a", taken.delivery_id, delivered=True, status=204, error="", retry_at=None
    )
    assert await store.settle(
        "observer-b", taken.delivery_id, delivered=False, status=500, error="HTTP 500", retry_at=None
    )
    (row,) = await store.list_deliveries("smolt-0a1b", "as-02", None, 10)
    assert (row.state, row.attempts, row.last_status) == ("failed", 2, 500)
