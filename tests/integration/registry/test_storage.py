"""The shared storage layer on both backends: migrations, row-level security, timestamps."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc

from smoltbot.core.storage import (
    UTCDateTime,
    current_revision,
    head_revision,
    is_unavailable_error,
    migrate,
    open_database,
)

from .conftest import REGISTRY_TABLES


async def test_concurrent_starts_migrate_once_to_head(empty_database_url: str) -> None:
    databases = [open_database(empty_database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate(db) for db in databases))
        assert await current_revision(databases[0]) == head_revision() is not None
        await migrate(databases[0])  # at head: a no-op
        async with databases[0].read() as conn:
            tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
        assert set(REGISTRY_TABLES) <= tables
    finally:
        for db in databases:
            await db.close()


async def test_only_agents_and_cards_are_publicly_readable_on_postgresql(postgres_database: str) -> None:
    db = open_database(postgres_database)
    try:
        await migrate(db, "0001")
        async with db.read() as conn:
            secured = dict((await conn.execute(sa.text(
                "SELECT tablename, rowsecurity FROM pg_tables WHERE schemaname = 'public'"))).all())
            policies = (await conn.execute(sa.text(
                "SELECT tablename, cmd, qual FROM pg_policies WHERE schemaname = 'public'"))).all()
        assert all(secured[table] for table in REGISTRY_TABLES)
        # Credentials, claims and sessions have RLS and no policy: invisible to anon roles.
        registry_policies = sorted(
            (table, cmd, qual) for table, cmd, qual in policies if table in REGISTRY_TABLES
        )
        assert registry_policies == [("agents", "SELECT", "true"), ("alignment_cards", "SELECT", "true")]
    finally:
        await db.close()


async def test_timestamps_round_trip_as_aware_utc_and_sort_by_instant(database_url: str) -> None:
    db = open_database(database_url)
    table = sa.Table("stamps", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("at", UTCDateTime()))
    plus_two = timezone(timedelta(hours=2))
    early = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=plus_two)  # 10:00 UTC
    late = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    try:
        async with db.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
            await conn.execute(sa.insert(table), [{"id": 1, "at": late}, {"id": 2, "at": early}])
        async with db.read() as conn:
            rows = (await conn.execute(sa.select(table.c.id, table.c.at).order_by(table.c.at))).all()
            later_than = (await conn.execute(sa.select(table.c.id).where(
                table.c.at > datetime(2026, 3, 1, 10, 30, tzinfo=UTC)))).scalars().all()
        assert [row.id for row in rows] == [2, 1]
        assert rows[0].at == early and rows[0].at.tzinfo == UTC
        assert later_than == [1]
        with pytest.raises(exc.StatementError):
            async with db.begin() as conn:
                await conn.execute(sa.insert(table).values(id=3, at=datetime(2026, 1, 1)))
    finally:
        await db.close()


def test_outage_errors_are_told_apart_from_bugs() -> None:
    locked = exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    no_table = exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: nope"))
    duplicate = exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert is_unavailable_error(locked)
    assert is_unavailable_error(ConnectionRefusedError())
    assert is_unavailable_error(exc.TimeoutError())
    assert not is_unavailable_error(no_table)
    assert not is_unavailable_error(duplicate)
    assert not is_unavailable_error(ValueError())


def test_open_database_understands_settings_urls(tmp_path: Path) -> None:
    sqlite_db = open_database(f"sqlite:///{tmp_path}/nested/dir/x.db")
    postgres_db = open_database("postgres://user:secret@db.example.com:5432/app?sslmode=require")
    assert sqlite_db.dialect == "sqlite" and sqlite_db.sqlite_path is not None
    assert sqlite_db.sqlite_path.parent.is_dir()
    assert postgres_db.dialect == "postgresql"
    assert postgres_db.engine.url.drivername == "postgresql+asyncpg"
    assert "secret" not in postgres_db.display_url and "sslmode" not in str(postgres_db.engine.url)
    with pytest.raises(ValueError):
        open_database("mysql://nope")
    with pytest.raises(ValueError):
        open_database("not a url")
