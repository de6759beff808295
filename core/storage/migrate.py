"""Applies the Alembic chain in `core/storage/migrations` to a `Database`, at service start.

Several services may start at once on one database (`smoltbot up` starts them together), so
the upgrade is serialised: by an exclusive `flock` on ``<database file>.migrate.lock`` on
SQLite, and by a session-level ``pg_advisory_lock`` on PostgreSQL. The second process then
finds the schema at head and does nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from smoltbot.core.storage.database import Database

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "migrate"]

logger = logging.getLogger(__name__)

#: Inside the package, so migrations ship with every install (not only a checkout).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Arbitrary but fixed: every smoltbot process must use the same advisory lock key.
_PG_LOCK_KEY = 0x736D6F6C74  # "smolt"


def alembic_config() -> Config:
    """An Alembic config for our chain; no alembic.ini is needed or read."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(db: Database) -> str | None:
    """The revision the database is at (None before the first migration)."""
    async with db.read() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def migrate(db: Database, revision: str = "head") -> None:
    """Upgrades the database to `revision` (default: the newest), safely from many processes."""
    if db.dialect == "sqlite":
        lock_fd = await _lock_file(db.sqlite_path)
        try:
            await _upgrade(db, revision)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)  # closing releases the flock
        return
    await _upgrade(db, revision)


async def _upgrade(db: Database, revision: str) -> None:
    # Not db.begin(): Alembic manages its own transaction on the connection we lend it.
    async with db.engine.connect() as conn:
        await conn.run_sync(_upgrade_sync, revision, db.dialect)


def _upgrade_sync(conn: sa.Connection, revision: str, dialect: str) -> None:
    if dialect == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
        # The advisory lock is held by the session, so it survives this commit; Alembic then
        # begins and commits its own transaction.
        conn.commit()
    try:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)  # Alembic logs each step it runs
        conn.commit()
    finally:
        if dialect == "postgresql":
            if conn.in_transaction():
                conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
            conn.commit()


async def _lock_file(database_path: Path | None) -> int | None:
    if database_path is None:  # in-memory: only this process can see it
        return None
    lock_path = database_path.with_name(database_path.name + ".migrate.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # flock blocks; in a thread so the event loop keeps serving while we wait our turn.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd
