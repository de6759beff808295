"""PostgreSQL: `traces`, `exchange_usage` and `evidence_history` partitioned by month of their time
column, so that retention drops a whole month instead of deleting its rows
(core/storage/partitions.py says how the partitions are named, kept and dropped). SQLite: nothing
changes.

Each table is made again as a partitioned table with the same columns and defaults, a partition
for every month from its oldest row's (at most `_BACKFILL_MONTHS` back; older rows go to the
default partition) to two months ahead, and a default partition; the rows are copied over, then
the keys and indexes are built once on the filled partitions (a sort each, not row-by-row
inserts). Row-level security and its policies are made again as the table had them (Supabase:
what its API roles may read), and each partition gets row-level security with no policy, so that
none can be read around them. Its primary key and unique keys gain the time column, as a
partitioned table's must; the
foreign keys from `trace_violations` and `drift_pending` to `traces` go (a key to a partitioned
table would need the time too; retention and the owner's deletion remove those rows themselves).

This copies every row of the three tables while the migration holds its lock at service start:
on a large database the upgrade takes as long as the copy (measured in docs/benchmarks.md).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from smoltbot.core.storage.partitions import (
    AHEAD,
    PARTITIONED,
    Month,
    default_name,
    months,
    partition_name,
    rename_indexes_statement,
)

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: Months before the current one that get a partition at most (older rows: default partition).
_BACKFILL_MONTHS = 36
#: The foreign keys to `traces`, made again on downgrade.
_KEYS_TO_TRACES = ("trace_violations", "drift_pending")


def _rows(sql: str, **parameters: object) -> list[Any]:
    return list(op.get_bind().execute(sa.text(sql), parameters).all())


def _constraints(table: str) -> list[tuple[str, str, list[str]]]:
    """(name, 'p' or 'u', columns) of the table's primary and unique keys."""
    return [(str(name), str(kind), list(columns)) for name, kind, columns in _rows(
        "SELECT c.conname, c.contype::text, array_agg(a.attname ORDER BY k.ord) FROM pg_constraint c "
        "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.conrelid = CAST(:table AS regclass) AND c.contype IN ('p', 'u') "
        "GROUP BY c.conname, c.contype", table=table)]


def _indexes(table: str) -> list[tuple[str, str]]:
    """(name, definition) of the table's indexes that no key owns."""
    return [(str(name), str(definition)) for name, definition in _rows(
        "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = CAST(:table AS regclass) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)", table=table)]


def _quoted(columns: list[str]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def _remake(table: str, *, partitioned: bool) -> None:
    column = PARTITIONED[table]
    old = f"{table}_before_0014"
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    keys, indexes = _constraints(old), _indexes(old)
    ((secured, forced),) = _rows("SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                                 "WHERE oid = CAST(:table AS regclass)", table=old)
    policies = _rows("SELECT policyname, permissive, roles, cmd, qual, with_check FROM pg_policies "
                     "WHERE schemaname = current_schema() AND tablename = :table", table=old)
    if partitioned:
        op.execute(f'CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY RANGE ("{column}")')
        op.execute(f"CREATE TABLE {default_name(table)} PARTITION OF {table} DEFAULT")
        current = Month.of(datetime.now(UTC))
        first, last = current, current.shifted(AHEAD)
        oldest = op.get_bind().execute(sa.text(f'SELECT min("{column}") FROM {old}')).scalar()
        if oldest is not None:
            first = min(current, max(Month.of(oldest), current.shifted(-_BACKFILL_MONTHS)))
        for month in months(first, last):
            op.execute(f"CREATE TABLE {partition_name(table, month)} PARTITION OF {table} "
                       f"FOR VALUES FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')")
    else:
        op.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {table} SELECT * FROM {old}")
    op.execute(f"DROP TABLE {old} CASCADE")  # with it the foreign keys to it
    for name, kind, columns in keys:
        if partitioned and column not in columns:
            columns = [*columns, column]
        if not partitioned and columns[-1] == column and len(columns) > 1:
            columns = columns[:-1]
        clause = "PRIMARY KEY" if kind == "p" else "UNIQUE"
        name = name.replace(old, table)
        op.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {clause} ({_quoted(columns)})')
    for _name, definition in indexes:  # a partitioned table's read "ON ONLY": this one's are whole
        for on in (f" ON ONLY public.{old} ", f" ON public.{old} ", f" ON ONLY {old} ", f" ON {old} "):
            definition = definition.replace(on, f" ON {table} ")
        op.execute(definition)
    # Row-level security as the table had it (Supabase: what its API roles may read), and on each
    # partition with no policy, so that none can be read around the table's policies.
    if secured:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    if forced:
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    for name, permissive, roles, command, using, check in policies:
        to = ", ".join(role if role == "public" else f'"{role}"' for role in roles)
        op.execute(f'CREATE POLICY "{name}" ON {table} AS {permissive} FOR {command} TO {to}'
                   + (f" USING ({using})" if using is not None else "")
                   + (f" WITH CHECK ({check})" if check is not None else ""))
    if partitioned:
        for partition in [default_name(table), *(str(name) for (name,) in _rows(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:table AS regclass) AND c.relkind = 'r'", table=table))]:
            op.execute(rename_indexes_statement(partition))
            if secured:
                op.execute(f"ALTER TABLE {partition} ENABLE ROW LEVEL SECURITY")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in PARTITIONED:
        _remake(table, partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in PARTITIONED:
        _remake(table, partitioned=False)
    for child in _KEYS_TO_TRACES:
        op.create_foreign_key(f"{child}_trace_id_fkey", child, "traces", ["trace_id"], ["trace_id"],
                              ondelete="CASCADE")
