"""A busy SQLite database loses nothing: while another process holds the write lock, the
Registry's and the Observer's writes wait (SQLite's busy timeout, then retries with backoff) and
land once it is released.

The lock is held the way another program would hold it: a plain `sqlite3` connection in
`BEGIN IMMEDIATE`, from a thread of the test.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from smoltbot.core.settings import Settings
from smoltbot.core.storage import open_database
from smoltbot.v1 import agent_pb2
from smoltbot.v1 import registry_service_pb2 as rpb
from tests.integration.observer.conftest import ObserverStack, new_hash
from tests.integration.observer.exchanges import make_exchange, message, text

pytestmark = pytest.mark.timeout(90)

CARD = json.dumps({
    "principal": {"type": "human", "identifier": "owner@example.com", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency"]},
    "autonomy": {"bounded_actions": [], "escalation_triggers": []},
    "audit": {"retention_days": 30, "queryable": True, "query_endpoint": "http://127.0.0.1:8000/v1"},
})


@asynccontextmanager
async def write_lock_held(path: Path, seconds: float) -> AsyncIterator[threading.Event]:
    """Another connection holds the database's write lock for `seconds` once the event is set.

    The waits run off the event loop: a write of the services under test may hold the lock at
    that moment, and it can only commit while the loop runs (blocking the loop here deadlocked
    the two until the holder's busy timeout ran out).
    """
    taken = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            connection.execute("BEGIN IMMEDIATE")
            taken.set()
            time.sleep(seconds)
            connection.execute("COMMIT")
        finally:
            connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    taken_in_time = await asyncio.to_thread(taken.wait, 40)
    assert taken_in_time, "could not take the write lock"  # its own busy timeout is 30 s
    try:
        yield taken
    finally:
        await asyncio.to_thread(thread.join)


async def test_a_write_waits_out_a_lock_held_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    db = open_database(f"sqlite:///{path}", sqlite_busy_timeout=0.2, sqlite_lock_wait=20)
    try:
        async with db.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
        started = time.monotonic()
        async with write_lock_held(path, 1.5), db.begin() as conn:
            await conn.execute(sa.text("INSERT INTO notes (body) VALUES ('after the lock')"))
        waited = time.monotonic() - started
        async with db.read() as conn:
            assert (await conn.execute(sa.text("SELECT body FROM notes"))).scalars().all() == [
                "after the lock"
            ]
        assert db.lock_retries > 0, "the busy timeout (0.2 s) alone cannot have waited 1.5 s"
        assert 1.0 < waited < 10, waited
    finally:
        await db.close()


async def test_registry_and_observer_writes_during_a_held_lock_all_land(
        settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(observer_max_attempts=2)
    assert settings.effective_database_url.startswith("sqlite:///")
    path = Path(settings.effective_database_url.removeprefix("sqlite:///"))
    stack = ObserverStack(settings)
    try:
        await stack.start_registry()
        await stack.start_observer()
        stub = stack.registry_stub
        assert stub is not None
        known_id, known_hash = await stack.agent()
        exchanges = [make_exchange(known_hash, message(text(f"answer {n}"))) for n in range(20)]
        new_agent_hash = new_hash()

        async with write_lock_held(path, 3.0):
            started = time.monotonic()
            created, acks, card, session, claimed = await asyncio.wait_for(asyncio.gather(
                stub.ResolveAgent(rpb.ResolveAgentRequest(agent_hash=new_agent_hash)),
                stack.ingest(exchanges),
                stub.PutCard(rpb.PutCardRequest(agent_id=known_id, agent_hash=known_hash, card_json=CARD)),
                stub.ReportSessionEvent(rpb.ReportSessionEventRequest(
                    agent_id=known_id, agent_hash=known_hash, session_id="ses-locked",
                    event=agent_pb2.SESSION_EVENT_STARTED)),
                stub.ClaimAgent(rpb.ClaimAgentRequest(agent_id=known_id, agent_hash=known_hash)),
            ), timeout=60)
            waited = time.monotonic() - started
        assert waited > 1.0, "the writes did not wait for the lock at all"

        assert created.created
        assert [ack.exchange_id for ack in acks] == [exchange.exchange_id for exchange in exchanges]
        assert {ack.status for ack in acks} == {1}  # ACCEPTED
        assert card.card.agent_id == known_id and session.session.session_id == "ses-locked"
        assert claimed.agent.claimed
        traces = await stack.traces_by_exchange([exchange.exchange_id for exchange in exchanges], timeout=30)
        assert all(len(found) == 1 for found in traces.values()), traces
        check = open_database(settings.effective_database_url)
        try:
            async with check.read() as conn:
                states = (
                    await conn.execute(sa.text("SELECT state, count(*) FROM exchanges GROUP BY state"))
                ).all()
        finally:
            await check.close()
        assert dict(states) == {"done": 20}
    finally:
        await stack.close()


async def test_a_write_cancelled_in_a_statement_does_not_keep_the_write_lock(tmp_path: Path) -> None:
    # Cancelled twice while its statement runs in the driver's thread, SQLAlchemy drops the
    # connection by force: SQLite then closed it as a "zombie", transaction and write lock
    # included, until the garbage collector freed the statement. Every later write of every
    # process waited (the 60 s teardown hangs after a service stop).
    path = tmp_path / "cancelled.db"
    db = open_database(f"sqlite:///{path}", sqlite_busy_timeout=0.2, sqlite_lock_wait=0.5)
    slow = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) "
            "SELECT count(*) FROM n")
    collecting = gc.isenabled()
    gc.disable()  # what a pending collection would otherwise free is what held the lock
    try:
        async with db.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))

        async def write() -> None:
            async with db.begin() as conn:
                await conn.execute(sa.text("INSERT INTO notes (body) VALUES ('cancelled')"))
                await conn.execute(sa.text(slow))

        task = asyncio.create_task(write())
        await asyncio.sleep(0.2)
        for _ in range(3):
            task.cancel()
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await task
        other = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO notes (body) VALUES ('after')")
            other.execute("COMMIT")
            assert [row[0] for row in other.execute("SELECT body FROM notes")] == ["after"]
        finally:
            other.close()
    finally:
        if collecting:
            gc.enable()
        await db.close()
