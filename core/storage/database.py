"""One async data layer over two backends: SQLite (embedded default) and PostgreSQL.

`open_database(url)` turns a settings URL into a `Database`. Every service writes through
`db.begin()` and reads through `db.read()`; both turn "the database is down" into
`core.errors.Unavailable`, so no servicer has to know a driver's exception types.

SQLite specifics, because they decide whether concurrent writers work at all:

* WAL, `busy_timeout` (10 s), `synchronous=NORMAL` and `foreign_keys=ON` on every connection.
* The driver's implicit transactions are switched off and we emit BEGIN ourselves: writes
  start with ``BEGIN IMMEDIATE`` so they take the write lock up front (a deferred transaction
  that reads and then writes fails with "database is locked" instead of waiting), reads with
  a plain deferred BEGIN so they never block writers. Writes of one process also queue on an
  asyncio lock, so they wait in line instead of spinning in SQLite's busy handler.
* Another process (a second observer, a backup, an `sqlite3` shell) may hold the write lock
  for longer than the busy timeout. A write that cannot take the lock is retried, with backoff,
  for up to `lock_wait` (2 minutes) before it fails as `Unavailable`; since the lock is taken
  at BEGIN, before the block runs, the retry never repeats half a transaction.
* A statement is one hand-off to the connection's thread (`_OneHandOffCursor`): aiosqlite's own
  cursor makes four (create, execute, fetch, close), each a put on its queue, a wake of its
  thread and a callback back to the event loop, all inside the write lock. The statement runs,
  its rows are fetched and its cursor closed in the thread, in one go; SQLAlchemy reads the rows
  from memory as it already did (it fetched them all right after executing).
  The rollback SQLAlchemy's pool issues when a connection comes back is skipped when the
  connection's thread last reported no transaction open (after a commit, as a rule).
* `Database.transact(body)` goes further for the hot write transactions (intake, result
  writes): BEGIN IMMEDIATE, the body and COMMIT run in the connection's thread in one hand-off,
  its statements one after another without returning to the event loop in between. The write
  lock is then held for as long as SQLite works, not for a round trip through a busy event
  loop per statement (at 50 exchanges/s it was held two thirds of the time, mostly waiting for
  the loop). The body must await nothing but its own statements (it fails if it does).
* A connection always rolls back before it closes (`_RollbackOnClose`): closed with a statement
  still unfinalized (its task cancelled mid-statement, SQLAlchemy then drops it by force),
  SQLite keeps it as a "zombie" until that statement is freed, open transaction and write lock
  included, and every write of every process waits.
* The database file is created 0600 (SQLite gives its WAL and SHM the same mode).
* Timestamps go through `UTCDateTime`, which keeps them timezone-aware UTC on both backends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import asyncpg
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction, create_async_engine
from sqlalchemy.pool import StaticPool

from smoltbot.core.data_dir import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, restrict
from smoltbot.core.errors import SmoltbotError, Unavailable

__all__ = [
    "Database",
    "Dialect",
    "UTCDateTime",
    "insert_ignoring_conflicts",
    "is_unavailable_error",
    "open_database",
    "utcnow",
]

logger = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgresql"]
_T = TypeVar("_T")

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
#: SQLite's own wait for a lock, per statement (the busy handler).
SQLITE_BUSY_TIMEOUT = 10.0
#: How long a write keeps retrying to take the write lock before it is `Unavailable`.
SQLITE_LOCK_WAIT = 120.0
#: Execution option carrying the BEGIN mode of an SQLite transaction (see `_sqlite_begin`).
_BEGIN_MODE = "smoltbot_sqlite_begin"
#: SQLite OperationalError messages that mean "busy or unreachable", not "bad SQL".
_SQLITE_OUTAGE_MESSAGES = ("locked", "busy", "unable to open", "disk i/o", "readonly", "disk is full")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both backends.

    SQLite has no timezone type: SQLAlchemy stores naive ISO text there, which sorts
    correctly as long as every value is UTC. So values are converted to UTC on the way in
    (naive ones are refused: they are always a bug) and marked UTC on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Database:
    """An AsyncEngine plus the backend rules above. Build it with `open_database`."""

    def __init__(self, engine: AsyncEngine, *, sqlite_path: Path | None = None,
                 lock_wait: float = SQLITE_LOCK_WAIT) -> None:
        self.engine = engine
        self.dialect: Dialect = "sqlite" if engine.dialect.name == "sqlite" else "postgresql"
        #: The database file on SQLite (None in memory and on PostgreSQL); migrations lock next to it.
        self.sqlite_path = sqlite_path
        self.lock_wait = lock_wait
        #: SQLite writes that had to wait for another process's lock beyond the busy timeout.
        self.lock_retries = 0
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back on any exception.

        Do not nest `begin()` blocks on SQLite: the second would wait for the first forever.
        """
        with _translate_outages():
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
                return
            async with self._write_lock, self._sqlite_write() as conn:
                yield conn

    async def transact(self, body: Callable[[AsyncConnection], Coroutine[Any, Any, _T]]) -> _T:
        """`body(conn)` in a write transaction, committed when it returns, as in `begin`.

        On SQLite the transaction runs in the connection's thread in one hand-off, BEGIN
        IMMEDIATE to COMMIT (see the module docstring), so the body must await nothing but
        `conn`'s statements: no other I/O, no sleep, no lock (it fails if it does).
        """
        with _translate_outages():
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    return await body(conn)
            async with self._write_lock:
                return await self._sqlite_transact(body)

    async def _sqlite_transact(self, body: Callable[[AsyncConnection], Coroutine[Any, Any, _T]]) -> _T:
        deadline = time.monotonic() + self.lock_wait
        delay = 0.05
        while True:
            conn = await self.engine.connect()
            began: list[bool] = []
            try:
                await conn.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
                raw = (await conn.get_raw_connection()).driver_connection
                assert isinstance(raw, _StopOnce)
                return await _through_cancel(raw.run_body(_in_transaction(conn, body, began)))
            except exc.OperationalError as error:
                # Busy at BEGIN IMMEDIATE (another process holds the lock beyond the busy
                # timeout): nothing ran yet, so the whole transaction is tried again.
                if began or not _is_sqlite_busy(error) or time.monotonic() + delay > deadline:
                    raise
                self.lock_retries += 1
                logger.info("the database is locked by another process; retrying in %.2fs", delay)
            finally:
                await asyncio.shield(conn.close())
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    @asynccontextmanager
    async def _sqlite_write(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a BEGIN IMMEDIATE transaction, retried while another process holds
        the write lock (see the module docstring)."""
        deadline = time.monotonic() + self.lock_wait
        delay = 0.05
        while True:
            conn = await self.engine.connect()
            try:
                await conn.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
                transaction = await conn.begin()
                break
            except exc.OperationalError as error:
                await conn.close()
                if not _is_sqlite_busy(error) or time.monotonic() + delay > deadline:
                    raise
                self.lock_retries += 1
                logger.info("the database is locked by another process; retrying in %.2fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except BaseException:
                await asyncio.shield(conn.close())
                raise
        # The end of the transaction is shielded: a task cancelled (again) while its commit or
        # rollback runs in the driver's thread would otherwise leave the connection out of the
        # pool with its BEGIN IMMEDIATE open, and SQLite's write lock with it: every later write
        # of every process would wait for it (seen as an observer stop hanging on its last write).
        try:
            yield conn
        except BaseException:
            await asyncio.shield(_end_transaction(conn, transaction, commit=False))
            raise
        else:
            await asyncio.shield(_end_transaction(conn, transaction, commit=True))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction: one consistent snapshot, never blocking writers on SQLite."""
        with _translate_outages():
            async with self.engine.connect() as conn, conn.begin():
                yield conn

    async def close(self) -> None:
        await self.engine.dispose()


async def _in_transaction(conn: AsyncConnection, body: Callable[[AsyncConnection], Coroutine[Any, Any, _T]],
                          began: list[bool]) -> _T:
    """`body(conn)` between BEGIN and COMMIT (rolled back if it raises); `began` gets an item
    once BEGIN went through."""
    async with conn.begin():
        began.append(True)
        return await body(conn)


async def _through_cancel(work: Coroutine[Any, Any, _T]) -> _T:
    """`work`'s result, waited for even when the caller is cancelled meanwhile (then raising
    CancelledError once it is done): a transaction running in the database's thread cannot be
    stopped halfway, and its connection must not be closed or reused under it."""
    run = asyncio.ensure_future(work)
    cancelled = False
    while not run.done():
        try:
            await asyncio.wait((run,))
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return run.result()


async def _end_transaction(conn: AsyncConnection, transaction: AsyncTransaction, *, commit: bool) -> None:
    try:
        if commit:
            await transaction.commit()
        else:
            await transaction.rollback()
    finally:
        await conn.close()


def open_database(url: str, *, echo: bool = False, sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT,
                  sqlite_lock_wait: float = SQLITE_LOCK_WAIT) -> Database:
    """A `Database` for ``sqlite:///PATH`` (the parent directory is created) or
    ``postgresql://USER:PASSWORD@HOST:PORT/DB`` (``postgres://`` and an explicit
    ``+asyncpg`` driver are accepted, and libpq's ``sslmode`` is passed to asyncpg as ``ssl``).

    No connection is made yet; the first query (usually `migrate`) opens one. On SQLite the
    database file is created (0600) and `sqlite_busy_timeout`/`sqlite_lock_wait` (seconds)
    bound how long a write waits for another process's lock.
    """
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise ValueError(f"not a database URL: {url!r}; use sqlite:///PATH or postgresql://...") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _open_sqlite(parsed, echo=echo, busy_timeout=sqlite_busy_timeout, lock_wait=sqlite_lock_wait)
    if backend in ("postgresql", "postgres"):
        return _open_postgresql(parsed, echo=echo)
    raise ValueError(f"unsupported database {backend!r}; use sqlite:///PATH or postgresql://...")


def _open_sqlite(url: URL, *, echo: bool, busy_timeout: float, lock_wait: float) -> Database:
    database = url.database or ""
    path: Path | None = None
    kwargs: dict[str, Any] = {}
    if database in ("", ":memory:") or database.startswith("file:"):
        # One shared connection: every pooled connection to :memory: would be its own database.
        kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"check_same_thread": False}
    else:
        path = Path(database).expanduser().resolve()
        _private_sqlite_files(path)
        database = str(path)
        kwargs["pool_size"] = 8
        kwargs["max_overflow"] = 8
    # The driver's `timeout` is SQLite's busy timeout, set before the first statement (the WAL
    # pragma below needs a lock too).
    kwargs.setdefault("connect_args", {})["timeout"] = busy_timeout
    kwargs["connect_args"]["async_creator_fn"] = _aiosqlite_connect
    engine = create_async_engine(url.set(drivername="sqlite+aiosqlite", database=database), echo=echo,
                                 hide_parameters=True, **kwargs)
    event.listen(engine.sync_engine, "connect", _sqlite_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return Database(engine, sqlite_path=path, lock_wait=lock_wait)


def _private_sqlite_files(path: Path) -> None:
    """The database file exists and is 0600 before SQLite opens it (its directory 0700 when we
    create it): SQLite gives the WAL and SHM files the database file's mode, so the raw
    exchanges in them are nobody else's to read either, whatever the process umask."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
    for suffix in ("", "-wal", "-shm", "-journal", ".migrate.lock"):
        restrict(path.with_name(path.name + suffix), PRIVATE_FILE_MODE)


class _RollbackOnClose(sqlite3.Connection):
    """An sqlite3 connection that ends its transaction before it closes.

    `close()` with a prepared statement not yet finalized (a cursor still referenced, e.g. from
    the traceback of a cancelled task) does not close: SQLite keeps the connection as a zombie,
    its transaction and write lock included, until the last statement is freed, which may be
    the next garbage collection or never. A rollback first releases the lock whatever is still
    referenced. Runs in aiosqlite's thread, after any statement still running there.
    """

    def close(self) -> None:
        try:
            if self.in_transaction:
                self.rollback()
        except sqlite3.Error:
            pass  # closing anyway: SQLite rolls back what it can
        super().close()


class _StopOnce(aiosqlite.Connection):
    """aiosqlite's connection, stopped at most once, with cursors that run a statement in one
    hand-off to its thread (`_OneHandOffCursor`).

    SQLAlchemy drops a connection whose task is cancelled mid-statement: a graceful `close()`,
    and `stop()` by force if that is cancelled too. aiosqlite's `close()` then stops the worker
    thread a second time, after it has already exited, and waits forever for it: the event
    loop can no longer shut down (a service stop, a test's teardown, hanging).
    """

    def stop(self) -> asyncio.Future[Any] | None:
        if not self._running:
            return None  # the worker takes nothing after its first stop
        return super().stop()

    def __del__(self) -> None:
        # aiosqlite warns (ResourceWarning), then stops the worker, which closes the connection
        # (rolling back first: `_RollbackOnClose`). The close is what matters and happens either
        # way; the warning surfaced as a random test's failure, in whichever test the garbage
        # collector ran, for a connection SQLAlchemy's pool let go of unclosed.
        if self._connection is not None:
            self.stop()

    #: False only when the thread said so last: no transaction is open on the connection.
    _maybe_in_transaction = True

    def cursor(self) -> _OneHandOffCursor:  # type: ignore[override]
        # Each statement one hand-off to the thread (`_OneHandOffCursor`), not four.
        return _OneHandOffCursor(self)

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._maybe_in_transaction = True  # whatever runs may open one, until the thread says
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    def _in_own_thread(self) -> bool:
        # True in a transaction run in the thread (`run_body`): its calls run right there.
        return threading.get_ident() == self._thread.ident

    async def commit(self) -> None:
        if self._in_own_thread():
            self._conn.commit()
        else:
            await super().commit()
        self._maybe_in_transaction = False

    async def run_body(self, body: Coroutine[Any, Any, _T]) -> _T:
        """A transaction body run to its end in this connection's thread (`Database.transact`)."""
        result: _T = await self._execute(_drive, body)
        return result

    async def rollback(self) -> None:
        # SQLAlchemy's pool rolls back every connection it takes back, after a commit too: a
        # hand-off to the thread for nothing, once per transaction. Skipped only when the last
        # word of the thread (a commit, a rollback, a statement's `in_transaction`) was "none open".
        if not self._maybe_in_transaction:
            return
        if self._in_own_thread():
            self._conn.rollback()
        else:
            await super().rollback()
        self._maybe_in_transaction = False


def _drive(body: Coroutine[Any, Any, _T]) -> _T:
    """In the connection's thread: a transaction body, run to its end. Its statements run right
    here (`_OneHandOffCursor` sees it is in its connection's thread), so it never suspends; if it
    does, it awaited something else, which only the event loop could finish."""
    try:
        body.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    except RuntimeError as error:  # asyncio's own calls here: there is no event loop in this thread
        if "no running event loop" not in str(error):
            raise
        raise RuntimeError(_AWAITED_OTHER) from error
    body.close()
    raise RuntimeError(_AWAITED_OTHER)


_AWAITED_OTHER = ("a transaction body run in the database's thread awaited something other than its own "
                  "statements; run it with Database.begin() instead")


def _run_statement(connection: aiosqlite.Connection, many: bool, sql: str,
                   parameters: Any) -> tuple[Any, int, int | None, list[Any], bool]:
    """In the connection's thread: a statement run, its rows fetched and its cursor closed;
    and whether a transaction is open after it."""
    cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        # After the fetch: with RETURNING, SQLite counts the rows as they are stepped through.
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows, connection._conn.in_transaction
    finally:
        cursor.close()


class _OneHandOffCursor:
    """aiosqlite's cursor interface (what SQLAlchemy's adapter calls), with each statement one
    hand-off to the connection's thread instead of four (see the module docstring). Its rows are
    held in memory until read, as SQLAlchemy's adapter holds them anyway; `close` has nothing
    left to do in the thread."""

    def __init__(self, connection: _StopOnce) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: list[Any] = []

    async def __aenter__(self) -> _OneHandOffCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _run(self, many: bool, sql: str, parameters: Any) -> _OneHandOffCursor:
        connection = self._connection
        if connection._in_own_thread():  # in a transaction run there (`_drive`)
            outcome = _run_statement(connection, many, sql, parameters)
        else:
            outcome = await connection._execute(_run_statement, connection, many, sql, parameters)
        (self.description, self.rowcount, self.lastrowid, self._rows,
         connection._maybe_in_transaction) = outcome
        return self

    async def execute(self, sql: str, parameters: Any = None) -> _OneHandOffCursor:
        return await self._run(False, sql, () if parameters is None else parameters)

    async def executemany(self, sql: str, parameters: Any) -> _OneHandOffCursor:
        return await self._run(True, sql, parameters)

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def close(self) -> None:
        self._rows = []


def _aiosqlite_connect(database: str, **kwargs: Any) -> aiosqlite.Connection:
    """SQLAlchemy's `async_creator_fn`: aiosqlite.connect with `_RollbackOnClose` and `_StopOnce`."""

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(database, factory=_RollbackOnClose, **kwargs)

    connection = _StopOnce(connector, 64)
    connection._thread.daemon = True  # as SQLAlchemy's own creator does: never blocks the exit
    return connection


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Stop the driver from issuing its own BEGIN (it would be DEFERRED, and too late for
    # PRAGMAs); `_sqlite_begin` emits ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _is_sqlite_busy(error: exc.OperationalError) -> bool:
    message = str(error.orig).lower()
    return "locked" in message or "busy" in message


def _sqlite_begin(conn: sa.Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_MODE, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _open_postgresql(url: URL, *, echo: bool) -> Database:
    query = dict(url.query)
    connect_args: dict[str, Any] = {"timeout": 10}
    # libpq spells it sslmode (Supabase's connection strings do); asyncpg calls it ssl.
    sslmode = query.pop("sslmode", None)
    if isinstance(sslmode, str):
        connect_args["ssl"] = sslmode
    engine = create_async_engine(
        url.set(drivername="postgresql+asyncpg", query=query),
        echo=echo,
        # Parameters (agent hashes among them) stay out of exception messages and logs.
        hide_parameters=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=10,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
    return Database(engine)


def is_unavailable_error(error: BaseException) -> bool:
    """True when `error` means the database is down, unreachable, overloaded or locked, i.e.
    worth retrying later, as opposed to a bug or a constraint violation."""
    if isinstance(error, (exc.TimeoutError, TimeoutError, ConnectionError)):
        return True
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if isinstance(error, exc.InterfaceError):
            return True
        if isinstance(error, exc.OperationalError):
            if error.orig is not None and type(error.orig).__module__.startswith(("sqlite3", "aiosqlite")):
                message = str(error.orig).lower()
                return any(part in message for part in _SQLITE_OUTAGE_MESSAGES)
            return True
        original = error.orig
        if original is not None and _is_asyncpg_outage(original):
            return True
    return False


def _is_asyncpg_outage(error: BaseException) -> bool:
    cause = getattr(error, "__cause__", None) or error
    return isinstance(cause, (
        asyncpg.PostgresConnectionError,  # connection lost or refused by the server
        asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, terminated
        asyncpg.TooManyConnectionsError,
        asyncpg.InterfaceError,
        OSError,
    ))


@contextmanager
def _translate_outages() -> Iterator[None]:
    """Turns outage errors raised inside the block into `Unavailable`."""
    try:
        yield
    except SmoltbotError:
        raise
    except Exception as error:
        if not is_unavailable_error(error):
            raise
        logger.warning("database unavailable: %s", getattr(error, "orig", None) or error)
        raise Unavailable("the database is unavailable; try again") from error


def insert_ignoring_conflicts(dialect: Dialect, table: sa.Table, *conflict_columns: sa.Column[Any]) -> Any:
    """``INSERT ... ON CONFLICT (conflict_columns) DO NOTHING`` for either backend.

    Add ``.values(...)`` and ``.returning(...)``: no row comes back when the row existed,
    which is how get-or-create stays race-free without catching IntegrityError.
    """
    columns = list(conflict_columns) or None
    if dialect == "sqlite":
        return sqlite_dialect.insert(table).on_conflict_do_nothing(index_elements=columns)
    return pg_dialect.insert(table).on_conflict_do_nothing(index_elements=columns)
