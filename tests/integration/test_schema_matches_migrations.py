"""The services' SQLAlchemy tables (what their queries are built from) and the schema the
migrations create agree, on SQLite and on PostgreSQL: the same tables, the same columns, with the
same types and nullability. Indexes, foreign keys and unique constraints live in the migrations
alone (see core/storage/migrations/metadata.py)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from smoltbot.core.storage import migrate, open_database
from smoltbot.core.storage.migrations.metadata import service_metadata
from smoltbot.core.storage.partitions import is_partition

#: Differences about what only the migrations declare.
_MIGRATIONS_ONLY = {"add_index", "remove_index", "add_fk", "remove_fk", "add_constraint", "remove_constraint"}


def _not_a_partition(name: str | None, type_: str, _parent: Any) -> bool:
    # PostgreSQL's month partitions (migration 0014) are part of their table, not tables of their own.
    return not (type_ == "table" and name is not None and is_partition(name))


def _differences(connection: sa.Connection, metadata: list[sa.MetaData]) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                           "include_name": _not_a_partition})
    found = []
    for difference in compare_metadata(context, metadata):
        # Column changes come grouped in a list of ("modify_...", ...) tuples.
        items = difference if isinstance(difference, list) else [difference]
        found.extend(item for item in items if item[0] not in _MIGRATIONS_ONLY)
    return found


async def _compare(database_url: str, metadata: list[sa.MetaData]) -> list[Any]:
    db = open_database(database_url)
    try:
        await migrate(db)
        async with db.engine.connect() as conn:
            return await conn.run_sync(_differences, metadata)
    finally:
        await db.close()


async def test_the_tables_the_code_queries_are_the_tables_the_migrations_create(
        empty_database_url: str) -> None:
    metadata = service_metadata()
    assert {table for tables in metadata for table in tables.tables} >= {"agents", "exchanges", "traces"}
    assert await _compare(empty_database_url, metadata) == []


async def test_a_column_the_migrations_do_not_create_is_found(database_url: str) -> None:
    # The comparison itself can fail: a table with one column more than the migrated one.
    (registry, observer) = service_metadata()
    extended = sa.MetaData()
    for table in [*registry.tables.values(), *observer.tables.values()]:
        copy = table.to_metadata(extended)
        if copy.name == "traces":
            copy.append_column(sa.Column("not_migrated", sa.Integer(), nullable=True))
    differences = await _compare(database_url, [extended])
    assert [(item[0], item[2], item[3].name) for item in differences] == [
        ("add_column", "traces", "not_migrated")
    ]
