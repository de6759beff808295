"""On SQLite, a statement costs one hand-off to the driver's thread, not four (aiosqlite's
cursor: create, execute, fetch, close), with the same results: rows, counts (RETURNING
included), many-row inserts and errors. Every hand-off is a queue put, a wake of the thread and
a callback to the event loop, inside the write lock (docs/benchmarks.md, issue 16)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.storage import Database, open_database

pytestmark = pytest.mark.timeout(30)

_items = sa.Table("items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                  sa.Column("name", sa.String, nullable=False, unique=True))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'handoffs.db'}")
    async with database.begin() as conn:
        await conn.run_sync(_items.metadata.create_all)
    try:
        yield database
    finally:
        await database.close()


@contextmanager
def counted_handoffs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every function aiosqlite hands to a connection's thread while the block runs."""
    calls: list[Any] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    try:
        yield calls
    finally:
        monkeypatch.setattr(aiosqlite.Connection, "_execute", original)


async def test_a_statement_with_rows_is_one_handoff(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    async with db.begin() as conn:
        await conn.execute(_items.insert(), [{"name": f"n{i}"} for i in range(5)])
        with counted_handoffs(monkeypatch) as calls:
            rows = (await conn.execute(sa.select(_items.c.name).order_by(_items.c.id))).all()
        assert [row.name for row in rows] == [f"n{i}" for i in range(5)]
        assert len(calls) == 1
        with counted_handoffs(monkeypatch) as calls:
            result = await conn.execute(
                _items.update().where(_items.c.id <= 3).values(name=_items.c.name + "x"))
        assert result.rowcount == 3
        assert len(calls) == 1


async def test_results_are_the_drivers(db: Database) -> None:
    async with db.begin() as conn:
        returned = (await conn.execute(
            _items.insert().returning(_items.c.id, _items.c.name), [{"name": "a"}, {"name": "b"}])).all()
        assert sorted(name for _, name in returned) == ["a", "b"]
        # RETURNING: the count is known once the rows are stepped through (done in the thread).
        deleted = await conn.execute(_items.delete().where(_items.c.name == "a").returning(_items.c.id))
        assert len(deleted.all()) == 1
        single = await conn.execute(_items.insert().values(name="c"))
        assert single.inserted_primary_key is not None and single.inserted_primary_key[0] > 0
        assert (await conn.execute(sa.select(sa.func.count()).select_from(_items))).scalar_one() == 2
        first = await conn.execute(sa.select(_items.c.name).order_by(_items.c.name))
        assert first.first() is not None
    async with db.read() as conn:
        assert (await conn.execute(sa.select(_items.c.name).where(_items.c.name == "zz"))).first() is None
        names = (await conn.execute(sa.select(_items.c.name).order_by(_items.c.name))).scalars().all()
    assert names == ["b", "c"]


async def test_a_failed_statement_rolls_back_its_transaction(db: Database) -> None:
    with pytest.raises(exc.IntegrityError):
        async with db.begin() as conn:
            await conn.execute(_items.insert().values(name="dup"))
            await conn.execute(_items.insert().values(name="dup"))
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(_items))).scalar_one() == 0
    async with db.begin() as conn:  # the write lock and the connection are free again
        await conn.execute(_items.insert().values(name="dup"))


async def test_a_committed_transaction_is_not_rolled_back_again(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """BEGIN, the statement, COMMIT: the pool's rollback when the connection comes back has
    nothing to end after a commit, and costs no hand-off."""
    async with db.begin() as conn:  # the pool's connection made and set up outside the count
        await conn.execute(sa.select(1))
    with counted_handoffs(monkeypatch) as calls:
        async with db.begin() as conn:
            await conn.execute(_items.insert().values(name="one"))
    assert len(calls) == 3
    with counted_handoffs(monkeypatch) as calls:
        async with db.read() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(_items))).scalar_one() == 1
    assert len(calls) == 3


async def test_a_connection_given_back_in_a_transaction_is_rolled_back(db: Database, tmp_path: Path) -> None:
    """Closed with its transaction open (no commit), a connection still rolls back: its write is
    gone and the write lock is free at once."""
    conn = await db.engine.connect()
    await conn.execution_options(smoltbot_sqlite_begin="IMMEDIATE")
    await conn.execute(_items.insert().values(name="never"))
    await conn.close()
    other = sqlite3.connect(tmp_path / "handoffs.db", isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # "database is locked" if the first still held it
        assert other.execute("SELECT count(*) FROM items").fetchone() == (0,)
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_transaction_body_runs_in_one_handoff(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Database.transact`: BEGIN, the whole body and COMMIT in one hand-off; the body's
    statements and results as in any transaction."""
    async def body(conn: AsyncConnection) -> list[str]:
        await conn.execute(_items.insert(), [{"name": f"n{i}"} for i in range(3)])
        await conn.execute(_items.update().where(_items.c.name == "n0").values(name="first"))
        rows = await conn.execute(sa.select(_items.c.name).order_by(_items.c.id))
        return [row.name for row in rows]

    async with db.begin() as conn:
        await conn.execute(sa.select(1))
    with counted_handoffs(monkeypatch) as calls:
        assert await db.transact(body) == ["first", "n1", "n2"]
    assert len(calls) == 1


async def test_a_failed_body_rolls_back(db: Database) -> None:
    async def body(conn: AsyncConnection) -> None:
        await conn.execute(_items.insert().values(name="dup"))
        await conn.execute(_items.insert().values(name="dup"))

    with pytest.raises(exc.IntegrityError):
        await db.transact(body)

    async def waits(conn: AsyncConnection) -> None:
        await conn.execute(_items.insert().values(name="kept?"))
        await asyncio.sleep(0.01)  # not a statement: only the event loop could finish it

    with pytest.raises(RuntimeError, match="other than its own statements"):
        await db.transact(waits)
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(_items))).scalar_one() == 0


async def test_a_cancelled_caller_waits_for_the_transaction_to_end_whole(db: Database) -> None:
    """The transaction in the thread cannot stop halfway: the cancelled caller waits for it to
    end (committed, as if the cancel came just after), then gets CancelledError; both rows or
    none, and the write lock free."""
    started = threading.Event()

    async def body(conn: AsyncConnection) -> None:
        await conn.execute(_items.insert().values(name="cancelled"))
        started.set()
        await conn.execute(sa.text("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                                   "WHERE x < 300000) SELECT count(*) FROM c"))
        await conn.execute(_items.insert().values(name="cancelled too"))

    task = asyncio.create_task(db.transact(body))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(_items))).scalar_one() in (0, 2)
    async with db.begin() as conn:  # the lock is free
        await conn.execute(_items.insert().values(name="after"))


async def test_a_transaction_waits_for_another_process_holding_the_lock(db: Database, tmp_path: Path) -> None:
    """Busy at BEGIN IMMEDIATE beyond SQLite's busy timeout: retried, then committed once the other
    process lets go (as `begin` does; tests/integration/test_sqlite_locked.py drives the services)."""
    quick = open_database(f"sqlite:///{tmp_path / 'handoffs.db'}", sqlite_busy_timeout=0.05)
    other = sqlite3.connect(tmp_path / "handoffs.db", isolation_level=None, timeout=5)
    try:
        other.execute("BEGIN IMMEDIATE")

        async def body(conn: AsyncConnection) -> None:
            await conn.execute(_items.insert().values(name="waited"))

        task = asyncio.create_task(quick.transact(body))
        await asyncio.sleep(0.4)
        assert not task.done()
        other.execute("COMMIT")
        await asyncio.wait_for(task, 10)
        assert quick.lock_retries > 0
    finally:
        other.close()
        await quick.close()
    async with db.read() as conn:
        names = (await conn.execute(sa.select(_items.c.name))).scalars().all()
    assert names == ["waited"]
