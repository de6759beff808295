"""On SQLite, a statement costs one hand-off to the driver's thread, not four (aiosqlite's
cursor: create, execute, fetch, close), with the same results: rows, counts (RETURNING
included), many-row inserts and errors. Every hand-off is a queue put, a wake of the thread and
a callback to the event loop, inside the write lock (docs/benchmarks.md, issue 16)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy import exc

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
