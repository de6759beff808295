"""Leases on claimed exchanges: renewed while held, taken over once their holder stops renewing.

No test here waits for a lease to run out: a zero-second lease has run out when it is taken,
and the processor's renewal is seen in the exchange's row."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from datetime import UTC, datetime

import sqlalchemy as sa

from smoltbot.observer.queue import ExchangeQueue, ExchangeRow
from smoltbot.observer.tables import exchanges

from .conftest import ObserverStack, new_hash
from .exchanges import make_exchange, message, text


async def _queued(queue: ExchangeQueue, count: int) -> list[str]:
    ids = [secrets.token_hex(16) for _ in range(count)]
    rows = [ExchangeRow(exchange_id, new_hash(), None, None, datetime.now(UTC), b"") for exchange_id in ids]
    assert await queue.insert_exchanges(rows) == set(ids)
    return ids


async def test_a_renewed_lease_keeps_its_exchanges_and_an_abandoned_one_is_taken_over(
        observer_stack: ObserverStack) -> None:
    await observer_stack.stop_observer()  # nobody else claims while we look
    queue = ExchangeQueue(observer_stack.db)
    ids = await _queued(queue, 2)

    # Zero-second leases have run out when they are taken: only a renewal keeps one.
    held = await queue.claim("observer-alive", 1, lease_seconds=0)
    assert await queue.renew("observer-alive", [held[0].exchange_id], lease_seconds=60) == 1
    abandoned = await queue.claim("observer-dead", 1, lease_seconds=0)
    assert {item.exchange_id for item in held + abandoned} == set(ids)

    # The dead observer's lease has expired, the renewed one has not.
    taken_over = await queue.claim("observer-other", 10, lease_seconds=60)
    assert [item.exchange_id for item in taken_over] == [abandoned[0].exchange_id]
    # The dead observer cannot renew what is no longer its own.
    assert await queue.renew("observer-dead", [abandoned[0].exchange_id], lease_seconds=1.0) == 0


async def _lease(
    stack: ObserverStack, exchange_id: str
) -> tuple[str | None, datetime | None, int, str | None]:
    async with stack.db.read() as conn:
        row = (await conn.execute(
            sa.select(exchanges.c.lease_owner, exchanges.c.lease_expires_at, exchanges.c.attempts,
                      exchanges.c.last_error)
            .where(exchanges.c.exchange_id == exchange_id))).one()
    return row[0], row[1], row[2], row[3]


async def test_the_processor_renews_the_leases_it_holds(observer_stack: ObserverStack) -> None:
    _, agent_hash = await observer_stack.agent()
    await observer_stack.stop_observer()
    # A Registry that takes connections and never answers: processing the exchange waits on it
    # (up to the observer's RPC deadline, 5 s) while the exchange stays leased. A new address:
    # gRPC shares connection state per address within a process.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        server = await observer_stack.start_observer(
            observer_lease_seconds=3.0, registry_address=f"127.0.0.1:{silent.getsockname()[1]}")
        processor = server.components.processor
        assert processor.lease_seconds == 3.0
        exchange = make_exchange(agent_hash, message(text("ok")))
        await observer_stack.ingest([exchange])

        deadline = time.monotonic() + 10
        first: datetime | None = None
        while True:
            owner, expires, attempts, error = await _lease(observer_stack, exchange.exchange_id)
            # Still the first claim: a retry records an error, and a new claim (which also moves
            # the expiry) counts an attempt.
            assert error is None and attempts <= 1, (
                f"the exchange was not held all along: {attempts}, {error}"
            )
            if owner == processor.owner and expires is not None:
                if first is None:
                    first = expires
                elif expires > first:
                    break  # renewed by its holder
            assert time.monotonic() < deadline, (
                f"the lease was never renewed (owner {owner}, until {expires})"
            )
            await asyncio.sleep(0.05)
        queue = ExchangeQueue(observer_stack.db)
        assert await queue.claim("observer-other", 10, lease_seconds=1.0) == [], \
            "a held exchange was taken over although its holder was renewing"
    finally:
        await observer_stack.stop_observer(grace=0.1)
        silent.close()
