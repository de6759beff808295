"""Intake hands new exchanges straight to its own observer's processor, stored already leased,
while the processor has room; the rest stay pending for a claim (observer/queue.py)."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from smoltbot.observer.tables import exchanges
from smoltbot.v1 import observer_service_pb2 as pb

from .conftest import ObserverStack
from .exchanges import make_exchange, message, text


async def _rows(stack: ObserverStack, ids: list[str]) -> dict[str, tuple[str, int]]:
    async with stack.db.read() as conn:
        rows = (await conn.execute(sa.select(exchanges.c.exchange_id, exchanges.c.state, exchanges.c.attempts)
                                   .where(exchanges.c.exchange_id.in_(ids)))).all()
    return {row[0]: (row[1], row[2]) for row in rows}


async def test_a_new_exchange_reaches_the_processor_without_a_claim(observer_stack: ObserverStack) -> None:
    _, agent_hash = await observer_stack.agent()
    await observer_stack.stop_observer()
    # No poll: after its first look at the queue the claimer claims only when intake wakes it (or
    # a retry is due: the evidence stage's ordering puts back calls of a session processed side by
    # side, so it is off here).
    server = await observer_stack.start_observer(observer_poll_interval=3600.0, evidence_enabled=False)
    processor = server.components.processor
    deadline = time.monotonic() + 5
    while processor.claims < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    claims = processor.claims
    assert claims == 1

    sent = [make_exchange(agent_hash, message(text(f"answer {i}"))) for i in range(3)]
    await observer_stack.ingest(sent)
    ids = [exchange.exchange_id for exchange in sent]
    await observer_stack.wait_finished(ids)

    assert processor.claims == claims  # no claim transaction was needed
    assert processor.queue.handed_over == 3
    assert await _rows(observer_stack, ids) == {exchange_id: ("done", 1) for exchange_id in ids}
    traced = await observer_stack.traces_by_exchange(ids)
    assert {exchange_id: len(traces) for exchange_id, traces in traced.items()} == dict.fromkeys(ids, 1)


async def test_exchanges_beyond_the_processors_room_stay_pending_and_are_claimed(
        observer_stack: ObserverStack) -> None:
    _, agent_hash = await observer_stack.agent()
    processor = observer_stack.observer.components.processor  # type: ignore[union-attr]
    processor.capacity = 1  # room for one exchange at a time
    queue = processor.queue
    handed, pending = queue.handed_over, queue.left_pending

    sent = [make_exchange(agent_hash, message(text(f"answer {i}"))) for i in range(5)]
    await observer_stack.ingest([pb.IngestRequest(exchanges=sent)])  # one intake transaction
    ids = [exchange.exchange_id for exchange in sent]
    await observer_stack.wait_finished(ids)

    # One was handed over; the four the processor had no room for waited for claims.
    assert (queue.handed_over - handed, queue.left_pending - pending) == (1, 4)
    assert {state for state, _ in (await _rows(observer_stack, ids)).values()} == {"done"}
    traced = await observer_stack.traces_by_exchange(ids)
    assert {exchange_id: len(traces) for exchange_id, traces in traced.items()} == dict.fromkeys(ids, 1)
