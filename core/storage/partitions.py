"""The monthly partitions of the observer's largest tables on PostgreSQL (migration 0014).

On PostgreSQL `traces`, `exchange_usage` and `evidence_history` are partitioned by the month of
their time column (`PARTITIONED`): one partition per calendar month (UTC), named
``<table>_pYYYYMM``, and ``<table>_default`` for rows outside every month that has one, so an
insert never fails for want of a partition. Retention (`retention_store.drop_partition`) drops a
whole month once every agent with rows in it is past its period, instead of deleting its rows one
batch at a time; what is not a whole month (an agent with a shorter period, the default partition)
is deleted by rows as on SQLite, which has no partitions.

`roll_forward` keeps a partition for the current month and the `AHEAD` after it (each retention
pass and each observer start call it). A month that gets its partition late takes its rows out of
the default partition in the same transaction. Each partition's indexes are named after the
parent's (``<index>_pYYYYMM``), so a query plan says which index it read.

A partitioned table's unique keys must contain the partition key: on PostgreSQL the primary key of
`traces` is (trace_id, timestamp) and its (exchange_id, decision_index) key includes the timestamp.
Both still say what they said before, since a trace's time is taken from its exchange: a trace
written again has the same time, so it is the same row. Foreign keys to `traces` cannot exist
(they would need the timestamp too); retention and the owner's deletion delete a trace's
violations and drift input themselves, as they always did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.storage.database import Database

__all__ = [
    "AHEAD",
    "PARTITIONED",
    "Month",
    "attach_statements",
    "default_name",
    "is_partition",
    "months",
    "partition_name",
    "rename_indexes_statement",
    "roll_forward",
    "unsuffixed",
]

#: The partitioned tables and their time column (the partition key).
PARTITIONED = {"traces": "timestamp", "exchange_usage": "occurred_at", "evidence_history": "started_at"}
#: Months after the current one that always have a partition.
AHEAD = 2
#: How long partition maintenance waits for a lock before it gives up until the next pass (intake
#: queued behind a waiting DROP or ATTACH waits too, so the wait is kept short).
LOCK_TIMEOUT = "2s"

_NAME = re.compile(rf"^({'|'.join(PARTITIONED)})_(p\d{{6}}|default)$")
_SUFFIX = re.compile(r"_(p\d{6}|default)$")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    @classmethod
    def parse(cls, suffix: str) -> Month:
        """From a partition's suffix, ``pYYYYMM``."""
        return cls(int(suffix[1:5]), int(suffix[5:7]))

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    @property
    def suffix(self) -> str:
        return f"p{self.year:04d}{self.month:02d}"

    def next(self) -> Month:
        return self.shifted(1)

    def shifted(self, count: int) -> Month:
        """`count` calendar months later (earlier when negative)."""
        index = self.year * 12 + self.month - 1 + count
        return Month(index // 12, index % 12 + 1)


def months(first: Month, last: Month) -> list[Month]:
    """Every month from `first` to `last`, both included."""
    found = []
    month = first
    while month <= last:
        found.append(month)
        month = month.next()
    return found


def partition_name(table: str, month: Month) -> str:
    return f"{table}_{month.suffix}"


def default_name(table: str) -> str:
    return f"{table}_default"


def is_partition(name: str) -> bool:
    """Whether a table name is one of the partitions (schema comparisons skip them)."""
    return _NAME.match(name) is not None


def unsuffixed(name: str) -> str:
    """A partition's name, or one of its indexes', without the month (`traces_p202612` ->
    `traces`, `ix_traces_timestamp_default` -> `ix_traces_timestamp`); any other name as it is."""
    return _SUFFIX.sub("", name)


def _literal(moment: datetime) -> str:
    return f"'{moment.isoformat()}'"


def attach_statements(table: str, month: Month) -> list[str]:
    """The month's partition, made with the month's rows the default partition holds (none, unless
    the month's partition came late) and attached, with row-level security as the table has it.
    ATTACH takes only a SHARE UPDATE EXCLUSIVE lock on the parent, so intake goes on; it scans the
    new table (its moved rows) and the default."""
    name, column, default = partition_name(table, month), PARTITIONED[table], default_name(table)
    within = f'"{column}" >= {_literal(month.start)} AND "{column}" < {_literal(month.end)}'
    return [
        f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)",
        f"WITH moved AS (DELETE FROM {default} WHERE {within} RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved",
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({_literal(month.start)}) "
        f"TO ({_literal(month.end)})",
        # Row-level security with no policy where the table has it: a partition read by name (a
        # Supabase API role) cannot get around the table's policies.
        f"DO $$ BEGIN IF (SELECT relrowsecurity FROM pg_class WHERE oid = '{table}'::regclass) THEN "
        f"EXECUTE 'ALTER TABLE {name} ENABLE ROW LEVEL SECURITY'; END IF; END $$",
    ]


def rename_indexes_statement(partition: str) -> str:
    """One statement that names each index of `partition` after the parent's index it belongs to
    (``<parent index>_<suffix>``), instead of PostgreSQL's made-up names."""
    suffix = partition.rsplit("_", 1)[1]
    return f"""
DO $$
DECLARE found record;
BEGIN
  FOR found IN
    SELECT child.relname AS child, parent.relname AS parent
    FROM pg_index x
    JOIN pg_class child ON child.oid = x.indexrelid
    JOIN pg_inherits i ON i.inhrelid = child.oid
    JOIN pg_class parent ON parent.oid = i.inhparent
    WHERE x.indrelid = '{partition}'::regclass AND child.relname <> parent.relname || '_{suffix}'
  LOOP
    EXECUTE format('ALTER INDEX %I RENAME TO %I', found.child, found.parent || '_{suffix}');
  END LOOP;
END $$"""


async def existing(conn: AsyncConnection, table: str) -> list[Month]:
    """The months that have a partition of `table`, oldest first."""
    rows = (await conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:table AS regclass) AND c.relkind = 'r'"),
        {"table": table})).scalars().all()
    return sorted(Month.parse(name.rsplit("_", 1)[1]) for name in rows
                  if is_partition(name) and not name.endswith("_default"))


async def create(conn: AsyncConnection, table: str, month: Month) -> None:
    """In the caller's transaction: the month's partition of `table`, its indexes named."""
    await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    for statement in attach_statements(table, month):
        await conn.exec_driver_sql(statement)
    await conn.exec_driver_sql(rename_indexes_statement(partition_name(table, month)))


async def roll_forward(db: Database, now: datetime, *, tables: Iterable[str] = PARTITIONED,
                       first: Month | None = None) -> list[str]:
    """Makes the missing partitions from `first` (default: the current month) to `AHEAD` months
    after the current one; the names of those it made. Nothing on SQLite. A partition whose locks
    could not be had in time is left for the next call (its rows wait in the default partition)."""
    if db.dialect != "postgresql":
        return []
    current = Month.of(now)
    last = current.shifted(AHEAD)
    made = []
    for table in tables:
        async with db.read() as conn:
            have = set(await existing(conn, table))
        for month in months(first or current, last):
            if month in have:
                continue
            try:
                async with db.begin() as conn:
                    await create(conn, table, month)
            except sa.exc.DBAPIError as error:
                if "lock timeout" not in str(error) and "already exists" not in str(error):
                    raise
                continue
            made.append(partition_name(table, month))
    return made
