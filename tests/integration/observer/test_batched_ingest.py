"""Batched Ingest: a request with `exchanges` stores each of them and is answered by one reply
with one ack per exchange, in order; a bad exchange is rejected alone; the single form is unchanged."""

from __future__ import annotations

import pytest

from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.exchanges import make_exchange, message, text

pytestmark = pytest.mark.timeout(60)

ACCEPTED, DUPLICATE, REJECTED = (
    pb.INGEST_STATUS_ACCEPTED,
    pb.INGEST_STATUS_DUPLICATE,
    pb.INGEST_STATUS_REJECTED,
)


async def test_a_batch_is_stored_and_acked_per_exchange_in_one_reply(observer_stack: ObserverStack) -> None:
    _, agent_hash = await observer_stack.agent()
    first, second, third = (make_exchange(agent_hash, message(text(f"answer {n}"))) for n in range(3))
    bad = make_exchange(agent_hash, message(text("bad")), exchange_id="not-hex")

    [single] = await observer_stack.ingest([first])
    assert (single.exchange_id, single.status, list(single.acks)) == (first.exchange_id, ACCEPTED, [])

    replies = await observer_stack.ingest([
        pb.IngestRequest(exchanges=[second, bad, first, second]),
        pb.IngestRequest(exchange=third, exchanges=[first]),
    ])
    assert len(replies) == 2
    batch, mixed = replies
    assert batch.exchange_id == "" and batch.status == pb.INGEST_STATUS_UNSPECIFIED
    assert [(ack.exchange_id, ack.status) for ack in batch.acks] == [
        (second.exchange_id, ACCEPTED), ("not-hex", REJECTED),
        (first.exchange_id, DUPLICATE), (second.exchange_id, DUPLICATE)]
    assert "exchange_id" in batch.acks[1].message
    assert [(ack.exchange_id, ack.status) for ack in mixed.acks] == [
        (third.exchange_id, ACCEPTED), (first.exchange_id, DUPLICATE)]
    await observer_stack.wait_finished([first.exchange_id, second.exchange_id, third.exchange_id])
    assert set(await observer_stack.exchange_states()) == {
        first.exchange_id, second.exchange_id, third.exchange_id}
