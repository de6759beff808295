"""Leases on claimed exchanges: renewed while held, taken over once their holder stops renewing."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

from smoltbot.observer.store import ExchangeRow, Store

from .conftest import ObserverStack, new_hash


async def _queued(store: Store, count: int) -> list[str]:
    ids = [secrets.token_hex(16) for _ in range(count)]
    rows = [ExchangeRow(exchange_id, new_hash(), None, None, datetime.now(UTC), b"") for exchange_id in ids]
    assert await store.insert_exchanges(rows) == set(ids)
    return ids


async def test_a_renewed_lease_keeps_its_exchanges_and_an_abandoned_one_is_taken_over(
        observer_stack: ObserverStack) -> None:
    await observer_stack.stop_observer()  # nobody else claims while we look
    store = Store(observer_stack.db)
    ids = await _queued(store, 2)

    held = await store.claim("observer-alive", 1, lease_seconds=1.0)
    abandoned = await store.claim("observer-dead", 1, lease_seconds=1.0)
    assert {item.exchange_id for item in held + abandoned} == set(ids)

    await asyncio.sleep(0.6)
    assert await store.renew("observer-alive", [held[0].exchange_id], lease_seconds=1.0) == 1
    await asyncio.sleep(0.6)
    # 1.2 s after the claims: the dead observer's lease has expired, the renewed one has not.
    taken_over = await store.claim("observer-other", 10, lease_seconds=1.0)
    assert [item.exchange_id for item in taken_over] == [abandoned[0].exchange_id]
    # The dead observer cannot renew what is no longer its own.
    assert await store.renew("observer-dead", [abandoned[0].exchange_id], lease_seconds=1.0) == 0


async def test_the_processor_renews_the_leases_it_holds(observer_stack: ObserverStack) -> None:
    await observer_stack.stop_observer()
    store = Store(observer_stack.db)
    server = await observer_stack.start_observer(observer_lease_seconds=3.0)
    processor = server.processor
    assert processor.lease_seconds == 3.0
    await processor.stop(grace=0.1)  # its loops stop; we drive the renewal by hand below
    ids = await _queued(store, 1)
    claimed = await store.claim(processor.owner, 1, lease_seconds=0.5)
    processor._held[claimed[0].exchange_id] = claimed[0]
    renewer = asyncio.create_task(processor._renew_loop())
    try:
        await asyncio.sleep(1.5)  # three lease periods of the claim, one renewal round at least
        assert await store.claim("observer-other", 10, lease_seconds=1.0) == [], \
            "a held exchange was taken over although its holder was renewing"
    finally:
        renewer.cancel()
        await asyncio.gather(renewer, return_exceptions=True)
        processor._held.clear()
    assert ids == [claimed[0].exchange_id]
