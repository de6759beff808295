"""How a statement reads a table, from the database's own query plan (EXPLAIN QUERY PLAN on
SQLite, EXPLAIN on PostgreSQL with sequential scans disabled: on a test's small tables the planner
would rightly scan them whatever indexes there are, so what is checked is whether an index can
serve the statement by a range, not what the planner picks at this size)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from smoltbot.core.storage import Database
from smoltbot.core.storage.partitions import unsuffixed

__all__ = ["explain", "index_reads", "statements_on"]


async def explain(db: Database, statement: sa.Executable | str, parameters: Any = None) -> str:
    """The plan of `statement`: a SQLAlchemy statement, or SQL text as the driver ran it with
    its `parameters` (as an engine event sees it)."""
    async with db.engine.connect() as conn:
        if not isinstance(statement, str):
            statement = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            parameters = None
        if db.dialect == "sqlite":
            rows = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters or ())).all()
            return "\n".join(str(row[-1]) for row in rows)
        await conn.exec_driver_sql("SET enable_seqscan = off")
        rows = (await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters or ())).all()
        return "\n".join([*(str(row[0]) for row in rows), await _empty_partitions(conn)])


async def _empty_partitions(conn: Any) -> str:
    """A last line naming the month partitions that hold no row (core/storage/partitions.py): the
    planner reads an empty table by any index at the same cost, so how it reads them says nothing
    about how it reads a month that has rows; `index_reads` leaves them out."""
    names = [str(name) for (name,) in (await conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE c.relkind = 'r'")).all()]
    empty = []
    for name in names:
        if not (await conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {name})")).scalar():
            empty.append(name)
    return _EMPTY + " ".join(empty)


_EMPTY = "empty partitions: "


def index_reads(plan: str, table: str) -> list[tuple[str, str]]:
    """How `plan` reads `table`: (index, condition) for each range of an index it reads (the
    condition on the index's leading columns), ("SCAN", "") for each full scan of the table or of
    an index."""
    found: list[tuple[str, str]] = []
    lines = plan.splitlines()
    empty = set(lines[-1].removeprefix(_EMPTY).split()) if lines and lines[-1].startswith(_EMPTY) else set()
    for number, line in enumerate(lines):
        sqlite = re.search(rf"\b(SEARCH|SCAN) {table}\b(?: USING (?:COVERING )?INDEX (\w+)(?: \((.*)\))?)?",
                           line)
        if sqlite:
            ranged = sqlite.group(1) == "SEARCH" and sqlite.group(2)
            found.append((sqlite.group(2), sqlite.group(3) or "") if ranged else ("SCAN", ""))
            continue
        postgres = re.search(r"(Seq Scan|Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)?"
                             r" (?:using|on) (\w+)(?: on (\w+))?", line)
        if not postgres:
            continue
        if postgres.group(3 if postgres.group(1) != "Seq Scan" else 2) in empty:
            continue
        if postgres.group(1) == "Seq Scan":
            if unsuffixed(postgres.group(2)) == table and (
                    postgres.group(2) == table or ("SCAN", "") not in found):
                found.append(("SCAN", ""))
            continue
        # A month partition's index is named after its table's (core/storage/partitions.py).
        index = unsuffixed(postgres.group(2))
        if (postgres.group(3) is None or unsuffixed(postgres.group(3)) != table) and not index.startswith(
                (f"ix_{table}_", f"{table}_")):
            continue
        conditions = []  # this node's index conditions, up to the next node
        for detail in lines[number + 1:]:
            if "->" in detail:
                break
            if "Index Cond:" in detail:
                conditions.append(detail.split("Index Cond:", 1)[1].strip())
        read = (index, " AND ".join(conditions)) if conditions else ("SCAN", "")
        if index != postgres.group(2):  # a month partition's: all read alike, one read of the table
            read = (read[0], re.sub(rf"\b{table}_\d+\.", "", read[1]))
            if read in found:
                continue
        found.append(read)
    return found



@contextmanager
def statements_on(table: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements that read `table` (FROM it) on every engine of this process meanwhile, as
    the driver ran them, with their parameters (for `explain`)."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if re.search(rf"\bFROM {table}\b", statement):
            seen.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
