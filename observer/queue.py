"""The exchange queue: intake stores exchanges here, processors lease them, and their
traces are written here when they finish.

Queue protocol, the same on both backends:

* `insert_exchanges`: ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: the ids that come back
  were accepted, the others existed (the primary key, not a read-then-write, decides).
  With a processor of this process attached (`attach`) that has room, new rows are stored
  already leased to it, exactly as `claim` would mark them, and handed to it from memory: the
  exchange it just received needs no claim transaction and no second read of its payload
  (on SQLite every write transaction takes the one write lock, so at a steady trickle the claim
  was a third of the lock's work and of the delay before a trace is visible). Rows it has no
  room for stay pending for any observer's claim.
* `claim`: in one transaction, selects due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
  observers sharing a database never claim the same row; SQLite has one writer at a time),
  takes as many as fit a byte budget, and marks them processing under a lease (owner +
  expiry) with ``UPDATE ... RETURNING``. "Due" is pending with ``next_attempt_at <= now`` or
  processing with an expired lease (``next_attempt_at`` holds the expiry then).
  The payloads of the claimed rows are then read from `exchange_payloads`.
* `renew` extends the leases an owner still holds; `release` gives them back untouched.
* `finish`: in one transaction (on SQLite run in the database's thread in one go:
  `Database.transact`), locks the rows still leased to us, stores their traces
  (``ON CONFLICT DO NOTHING`` on trace_id and on (exchange_id, decision_index)) and queues them
  for the drift detector, marks the exchanges done (deleting their payloads) or failed, or puts
  them back to pending for a retry. A row whose lease we lost is left alone: whoever holds it
  now writes it.
* `scrub` (SQLite) truncates the WAL, so deleted payloads do not linger in old frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.outcomes import FAILURE_OUTCOMES
from smoltbot.core.storage import Database, insert_ignoring_conflicts, utcnow
from smoltbot.observer.accounting import ExchangeFacts
from smoltbot.observer.pipeline import dumps, with_turn
from smoltbot.observer.record_kinds import DECISION, TRACE_KINDS
from smoltbot.observer.tables import (
    chunks,
    drift_pending,
    exchange_payloads,
    exchanges,
    tool_executions,
    trace_violations,
    traces,
)
from smoltbot.observer.usage_store import UsageToWrite, write_usage

__all__ = [
    "QUEUE_STATES",
    "ClaimedExchange",
    "ExchangeQueue",
    "ExchangeRow",
    "FinishReport",
    "Finished",
    "LocalConsumer",
    "Retry",
    "ScrubSchedule",
    "StoredTrace",
]

logger = logging.getLogger(__name__)

_UNFINISHED = ("pending", "processing")

# The result write's statements, built once with bind parameters for what changes: building a
# statement and its cache key each time cost about 100 µs (an IN list, a select, an update),
# about what SQLite took to run it for a lone exchange.
_OWNED = (sa.select(exchanges.c.exchange_id, exchanges.c.occurred_at)
          .where(exchanges.c.exchange_id.in_(sa.bindparam("ids", expanding=True)),
                 exchanges.c.state == "processing", exchanges.c.lease_owner == sa.bindparam("owner"))
          .with_for_update())
_MARK_FINISHED = exchanges.update().where(exchanges.c.exchange_id == sa.bindparam("b_id")).values(
    state=sa.bindparam("b_state"), agent_id=sa.bindparam("b_agent"), session_id=sa.bindparam("b_session"),
    lease_owner=None, lease_expires_at=None, last_error=sa.bindparam("b_error"),
    finished_at=sa.bindparam("b_finished", type_=exchanges.c.finished_at.type),
)
_DROP_PAYLOADS = exchange_payloads.delete().where(
    exchange_payloads.c.exchange_id.in_(sa.bindparam("ids", expanding=True)))
_PUT_BACK = exchanges.update().where(exchanges.c.exchange_id == sa.bindparam("b_id")).values(
    state="pending", lease_owner=None, lease_expires_at=None,
    next_attempt_at=sa.bindparam("b_next", type_=exchanges.c.next_attempt_at.type),
    last_error=sa.bindparam("b_error"), attempts=exchanges.c.attempts - sa.bindparam("b_refund"),
)
_REPORTED_EXECUTIONS = sa.select(
    tool_executions.c.agent_id, tool_executions.c.tool_use_id, tool_executions.c.executed
).where(tool_executions.c.tool_use_id.in_(sa.bindparam("ids", expanding=True)))


class LocalConsumer(Protocol):
    """A processor in this process that takes new exchanges straight from intake."""

    owner: str
    lease_seconds: float

    def room(self) -> int:
        """How many more exchanges it can hold now (0 while stopping)."""
        ...

    def adopt(self, items: list[ClaimedExchange]) -> None:
        """Takes exchanges already leased to `owner` (committed), as if it had claimed them."""
        ...


@dataclass(frozen=True)
class ExchangeRow:
    """An exchange as intake stores it."""

    exchange_id: str
    agent_hash: str
    agent_id: str | None
    session_id: str | None
    occurred_at: datetime
    payload: bytes
    #: `record_kinds.exchange_kind` of the exchange.
    record_kind: str | None = None


@dataclass(frozen=True)
class ClaimedExchange:
    exchange_id: str
    agent_hash: str
    agent_id: str | None
    session_id: str | None
    payload: bytes
    #: This claim included (1 on the first try).
    attempts: int
    received_at: datetime
    last_error: str = ""
    #: As intake classified it; None for rows stored before record kinds (read the payload).
    record_kind: str | None = None


@dataclass
class StoredTrace:
    """A built trace (trace.proto JSON), its serialised form, and the columns derived from it."""

    trace: dict[str, Any]
    #: `trace` serialised (None: serialised when written), without its conversation turn when
    #: `turn_slot` is set: then it is `pipeline.dumps_with_turn_slot`'s text, with the usage facts.
    trace_json: str | None = None
    turn_slot: int = -1

    @property
    def trace_id(self) -> str:
        return str(self.trace["trace_id"])

    def with_usage(self) -> None:
        """After `write_usage` gave the trace its turn and usage facts: its text to store (the
        turn put in its slot, else serialised again)."""
        if self.trace_json is None or self.turn_slot < 0:
            self.trace_json = None
        else:
            turn = (self.trace.get("context") or {}).get("conversation_turn")
            self.trace_json = with_turn(self.trace_json, self.turn_slot, turn)
        self.turn_slot = -1

    def row(self, created_at: datetime) -> dict[str, Any]:
        trace = self.trace
        action = trace.get("action") or {}
        observation = trace.get("observation") or {}
        verification = trace.get("verification") or {}
        metadata_ = (trace.get("context") or {}).get("metadata") or {}
        outcome = str(observation.get("outcome") or "complete")
        kind = observation.get("record_kind") or DECISION
        if kind not in TRACE_KINDS:
            raise ValueError(f"a trace's record_kind must be one of {TRACE_KINDS}, not {kind!r}")
        return {
            "trace_id": trace["trace_id"],
            "exchange_id": metadata_.get("exchange_id") or observation.get("exchange_id"),
            "decision_index": int(metadata_.get("decision_index", observation.get("decision_index", 0))),
            "agent_id": trace.get("agent_id") or "",
            "session_id": str((trace.get("context") or {}).get("session_id") or "")[:256] or None,
            "card_id": trace.get("card_id") or "",
            "timestamp": _parse_time(trace["timestamp"]),
            "verified": bool(verification.get("verified")),
            "violation_count": len(verification.get("violations") or []),
            "action_type": str(action.get("type") or "")[:32],
            "action_name": str(action.get("name") or "")[:256],
            "tool_use_id": str(observation.get("tool_use_id") or "")[:256] or None,
            "executed": None,
            "has_reasoning": bool((observation.get("reasoning") or {}).get("present")),
            "model_analysis": observation.get("analyzer") == "anthropic" and not observation.get(
                "analysis_fallback_reason"),
            "failed": outcome in FAILURE_OUTCOMES,
            "outcome": outcome[:32],
            "created_at": created_at,
            "trace_json": self.trace_json or dumps(trace),
            "record_kind": kind,
            "provider": str(observation.get("provider") or "anthropic")[:16],
            "enforcement": str((trace.get("enforcement") or {}).get("action") or "")[:16] or None,
        }


@dataclass
class Finished:
    """An exchange whose processing ended: its traces, and whether it failed for good."""

    exchange_id: str
    agent_hash: str
    agent_id: str
    session_id: str | None
    traces: list[StoredTrace]
    failed: bool = False
    error: str = ""
    #: A model call's usage, cost and session facts (one `exchange_usage` row).
    facts: ExchangeFacts | None = None


@dataclass
class Retry:
    """An exchange to try again later. `counted` False gives the attempt back (an outage of
    a dependency is not the exchange's fault and must never turn it into a failure)."""

    exchange_id: str
    next_attempt_at: datetime
    error: str
    counted: bool = True


@dataclass
class FinishReport:
    #: Finished exchanges we still held the lease of, and so wrote.
    written: list[Finished] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


class ExchangeQueue:
    """The exchanges table as a work queue (see the module docstring). Every method runs its
    own transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._consumer: LocalConsumer | None = None
        #: New exchanges stored leased to the local consumer, and left pending (for benchmarks).
        self.handed_over = 0
        self.left_pending = 0

    def attach(self, consumer: LocalConsumer | None) -> None:
        """New exchanges go straight to `consumer` while it has room (None: all stay pending)."""
        self._consumer = consumer

    def detach(self, consumer: LocalConsumer) -> None:
        """`consumer` takes no more new exchanges (it is stopping)."""
        if self._consumer is consumer:
            self._consumer = None

    async def insert_exchanges(self, rows: Sequence[ExchangeRow]) -> set[str]:
        """Stores new exchanges; returns the ids that were new (the rest existed). New rows go to
        the attached consumer, leased, up to its room; the others are pending."""
        return (await self.insert_and_hand_over(rows))[0]

    async def insert_and_hand_over(self, rows: Sequence[ExchangeRow]) -> tuple[set[str], int]:
        """`insert_exchanges`, plus how many new rows were left pending (for a claim to find)."""
        if not rows:
            return set(), 0
        now = utcnow()
        consumer = self._consumer
        room = min(consumer.room(), len(rows)) if consumer is not None else 0
        values = [{
            "exchange_id": row.exchange_id,
            "agent_hash": row.agent_hash,
            "agent_id": row.agent_id,
            "session_id": row.session_id,
            "received_at": now,
            "occurred_at": row.occurred_at,
            "payload_bytes": len(row.payload),
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "record_kind": row.record_kind,
            "lease_owner": None,
            "lease_expires_at": None,
        } for row in rows]
        if room and consumer is not None:
            # As `claim` marks a row it takes (the first attempt).
            expires = datetime.fromtimestamp(now.timestamp() + consumer.lease_seconds, now.tzinfo)
            for value in values[:room]:
                value.update(state="processing", attempts=1, lease_owner=consumer.owner,
                             lease_expires_at=expires, next_attempt_at=expires)
        statement = insert_ignoring_conflicts(self.db.dialect, exchanges, exchanges.c.exchange_id).returning(
            exchanges.c.exchange_id)
        accepted: set[str] = set()

        async def store(conn: AsyncConnection) -> None:
            for chunk in chunks(values, 200):
                result = await conn.execute(statement, list(chunk))
                accepted.update(row[0] for row in result)
            payloads = [{"exchange_id": row.exchange_id, "payload": row.payload}
                        for row in rows if row.exchange_id in accepted]
            for chunk in chunks(payloads, 200):
                await conn.execute(exchange_payloads.insert(), list(chunk))

        await self.db.transact(store)
        leased = [row for row in rows[:room] if row.exchange_id in accepted]
        if leased and consumer is not None:
            # Unique ids: a batch with one id twice leases (and hands over) its first row only.
            handed = {row.exchange_id: ClaimedExchange(
                row.exchange_id, row.agent_hash, row.agent_id, row.session_id, row.payload, 1, now, "",
                row.record_kind) for row in leased}
            consumer.adopt(list(handed.values()))
            self.handed_over += len(handed)
        pending = len(accepted) - len({row.exchange_id for row in leased})
        self.left_pending += pending
        return accepted, pending

    async def claim(self, owner: str, limit: int, lease_seconds: float,
                    max_bytes: int = 1 << 62) -> list[ClaimedExchange]:
        """Leases up to `limit` due exchanges to `owner`, oldest due first, with payloads of at
        most `max_bytes` together (but always at least one exchange, however large)."""
        now = utcnow()
        expires = datetime.fromtimestamp(now.timestamp() + lease_seconds, now.tzinfo)
        due = (
            sa.select(exchanges.c.exchange_id, exchanges.c.payload_bytes)
            .where(exchanges.c.state.in_(_UNFINISHED), exchanges.c.next_attempt_at <= now)
            .order_by(exchanges.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

        # On SQLite run in the database's thread in one go (`Database.transact`), as `finish`.
        async def lease(conn: AsyncConnection) -> tuple[list[Any], dict[str, bytes]]:
            taken: list[str] = []
            total = 0
            for exchange_id, size in (await conn.execute(due)).all():
                if taken and total + size > max_bytes:
                    break
                taken.append(exchange_id)
                total += size
            if not taken:
                return [], {}
            rows = (
                await conn.execute(
                    exchanges.update()
                    .where(exchanges.c.exchange_id.in_(taken))
                    .values(
                        state="processing",
                        lease_owner=owner,
                        lease_expires_at=expires,
                        next_attempt_at=expires,
                        attempts=exchanges.c.attempts + 1,
                    )
                    .returning(
                        exchanges.c.exchange_id,
                        exchanges.c.agent_hash,
                        exchanges.c.agent_id,
                        exchanges.c.session_id,
                        exchanges.c.attempts,
                        exchanges.c.received_at,
                        exchanges.c.last_error,
                        exchanges.c.record_kind,
                    )
                )
            ).all()
            payloads: dict[str, bytes] = {}
            for chunk in chunks(taken):
                result = await conn.execute(
                    sa.select(exchange_payloads.c.exchange_id, exchange_payloads.c.payload).where(
                        exchange_payloads.c.exchange_id.in_(chunk)
                    )
                )
                payloads.update((exchange_id, bytes(payload)) for exchange_id, payload in result)
            return list(rows), payloads

        rows, payloads = await self.db.transact(lease)
        claimed = [ClaimedExchange(row.exchange_id, row.agent_hash, row.agent_id, row.session_id,
                                   payloads.get(row.exchange_id, b""), row.attempts, row.received_at,
                                   row.last_error or "", row.record_kind)
                   for row in rows]
        claimed.sort(key=lambda item: item.received_at)
        return claimed

    async def finish(self, owner: str, done: Sequence[Finished], retries: Sequence[Retry]) -> FinishReport:
        """Writes processing results in one transaction (see the module docstring)."""
        report = FinishReport()
        ids = [item.exchange_id for item in done] + [item.exchange_id for item in retries]
        if not ids:
            return report
        now = utcnow()

        # On SQLite the whole write runs in the database's thread in one go (`Database.transact`).
        async def write(conn: AsyncConnection) -> None:
            owned: dict[str, datetime] = {}
            for chunk in chunks(ids):
                owned.update((row.exchange_id, row.occurred_at) for row in await conn.execute(
                    _OWNED, {"ids": list(chunk), "owner": owner}))
            report.lost = [exchange_id for exchange_id in ids if exchange_id not in owned]
            written = [item for item in done if item.exchange_id in owned]
            # Before the traces: numbering the turns gives each trace its conversation_turn.
            await write_usage(conn, self.db.dialect, [
                UsageToWrite(item.exchange_id, item.agent_id, item.session_id, item.facts,
                             [stored.trace for stored in item.traces])
                for item in written if item.facts is not None and item.agent_id
            ], owned)
            for item in written:
                if item.facts is not None:
                    for stored in item.traces:
                        stored.with_usage()
            await self._write_traces(
                conn, [(item.agent_hash, t) for item in written for t in item.traces], now
            )
            if written:
                await conn.execute(_MARK_FINISHED, [{
                    "b_id": item.exchange_id,
                    "b_state": "failed" if item.failed else "done",
                    "b_agent": item.agent_id or None,
                    "b_session": item.session_id,
                    "b_error": item.error[:4000] or None,
                    "b_finished": now,
                } for item in written])
                # Done: the traces are the record, and the raw request body is not kept. A failed
                # exchange keeps its payload for an operator to look into.
                finished = [item.exchange_id for item in written if not item.failed]
                # SQLite: zero the deleted bytes instead of leaving them in free pages, for this
                # statement only (it costs I/O). Older WAL frames keep them until `scrub`;
                # PostgreSQL keeps dead tuples until VACUUM reuses their space.
                secure = bool(finished) and self.db.dialect == "sqlite"
                if secure:
                    await conn.exec_driver_sql("PRAGMA secure_delete = ON")
                for chunk in chunks(finished):
                    await conn.execute(_DROP_PAYLOADS, {"ids": list(chunk)})
                if secure:
                    await conn.exec_driver_sql("PRAGMA secure_delete = OFF")
            again = [item for item in retries if item.exchange_id in owned]
            if again:
                await conn.execute(_PUT_BACK, [
                    {"b_id": item.exchange_id, "b_next": item.next_attempt_at, "b_error": item.error[:4000],
                     "b_refund": 0 if item.counted else 1} for item in again])
            report.written = written

        await self.db.transact(write)
        return report

    async def scrub(self) -> None:
        """SQLite: checkpoint the WAL and truncate it, so raw payloads deleted since (zeroed in
        the database file by secure_delete) do not linger in old WAL frames either. Best effort:
        gives up after a quarter of a second when readers or writers are busy. No-op on
        PostgreSQL."""
        if self.db.dialect != "sqlite" or self.db.sqlite_path is None:
            return
        async with self.db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            if raw is None:  # the pool invalidated this connection: the next scrub uses another
                return
            await raw.execute("PRAGMA busy_timeout = 250")
            try:
                await raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                await raw.execute("PRAGMA busy_timeout = 10000")

    async def renew(self, owner: str, exchange_ids: Sequence[str], lease_seconds: float) -> int:
        """Extends the leases `owner` still holds on these exchanges; returns how many it held."""
        if not exchange_ids:
            return 0
        now = utcnow()
        expires = datetime.fromtimestamp(now.timestamp() + lease_seconds, now.tzinfo)

        async def extend(conn: AsyncConnection) -> int:
            renewed = 0
            for chunk in chunks(list(exchange_ids)):
                result = await conn.execute(
                    exchanges.update()
                    .where(exchanges.c.exchange_id.in_(chunk), exchanges.c.state == "processing",
                           exchanges.c.lease_owner == owner)
                    .values(lease_expires_at=expires, next_attempt_at=expires)
                )
                renewed += result.rowcount or 0
            return renewed

        return await self.db.transact(extend)

    async def release(self, owner: str, exchange_ids: Sequence[str]) -> None:
        """Gives leased exchanges back untouched (graceful stop): due now, the attempt refunded."""
        if not exchange_ids:
            return
        now = utcnow()

        async def give_back(conn: AsyncConnection) -> None:
            for chunk in chunks(list(exchange_ids)):
                await conn.execute(
                    exchanges.update()
                    .where(exchanges.c.exchange_id.in_(chunk), exchanges.c.state == "processing",
                           exchanges.c.lease_owner == owner)
                    .values(state="pending", lease_owner=None, lease_expires_at=None, next_attempt_at=now,
                            attempts=sa.case((exchanges.c.attempts > 0, exchanges.c.attempts - 1), else_=0))
                )

        await self.db.transact(give_back)

    async def _write_traces(self, conn: AsyncConnection, hashed: Sequence[tuple[str, StoredTrace]],
                            now: datetime) -> None:
        if not hashed:
            return
        stored = [item for _, item in hashed]
        rows = [item.row(now) for item in stored]
        # Executions the plugin reported before the trace existed.
        wanted = {(row["agent_id"], row["tool_use_id"]) for row in rows if row["tool_use_id"]}
        if wanted:
            reported: dict[tuple[str, str], bool] = {}
            tool_ids = sorted({tool_use_id for _, tool_use_id in wanted})
            for chunk in chunks(tool_ids):
                result = await conn.execute(_REPORTED_EXECUTIONS, {"ids": list(chunk)})
                for agent_id, tool_use_id, executed in result:
                    reported[(agent_id, tool_use_id)] = executed
            for row in rows:
                if row["tool_use_id"]:
                    row["executed"] = reported.get((row["agent_id"], row["tool_use_id"]))
        # While we hold an exchange's lease no trace of it can exist (traces and the done mark
        # are written together), so the conflict clause is only a safety net.
        for chunk in chunks(rows, 100):
            await conn.execute(insert_ignoring_conflicts(self.db.dialect, traces), list(chunk))
        violations = []
        for item, row in zip(stored, rows, strict=True):
            for position, violation in enumerate(
                (item.trace.get("verification") or {}).get("violations") or []
            ):
                violations.append({
                    "trace_id": row["trace_id"], "position": position, "agent_id": row["agent_id"],
                    "type": str(violation.get("type") or "unknown")[:64],
                    "severity": str(violation.get("severity") or "")[:16],
                })
        for chunk in chunks(violations, 200):
            await conn.execute(insert_ignoring_conflicts(self.db.dialect, trace_violations), list(chunk))
        # Failure traces and API activity are not decisions of the agent: the drift detector
        # never sees them.
        pending = [{"trace_id": row["trace_id"], "agent_id": row["agent_id"], "agent_hash": agent_hash,
                    "card_id": row["card_id"], "timestamp": row["timestamp"]}
                   for (agent_hash, _), row in zip(hashed, rows, strict=True)
                   if not row["failed"] and row["record_kind"] == DECISION]
        for chunk in chunks(pending, 200):
            await conn.execute(insert_ignoring_conflicts(self.db.dialect, drift_pending), list(chunk))

    async def record_counts(self) -> dict[str, int]:
        """Exchanges per record kind (decision, activity, auth_rejected, minimal), all time.
        Exchanges the upstream refused (auth_rejected) are counted here and nowhere public."""
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(exchanges.c.record_kind, sa.func.count()).group_by(exchanges.c.record_kind))).all()
        return {str(kind or "unclassified"): int(count) for kind, count in rows}

    async def exchange_counts(self) -> dict[str, int]:
        """Exchanges per state, all of them (for tests, benchmarks and logs: it reads the whole table)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(exchanges.c.state, sa.func.count()).group_by(exchanges.c.state))).all()
        return {state: int(count) for state, count in rows}

    async def queue_counts(self) -> dict[str, int]:
        """Exchanges waiting or being processed, and the dead letters (failed), per state: what the
        /metrics gauge shows at every scrape. Counted from `ix_exchanges_due`'s ranges of these
        states, so a scrape reads as many index entries as the queue holds, never the done
        exchanges (all of history, until retention)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(queue_count_query())).all()
        return {state: int(count) for state, count in rows}


#: The states `ExchangeQueue.queue_counts` counts (`done` is history, not queue).
QUEUE_STATES = (*_UNFINISHED, "failed")


def queue_count_query() -> sa.Select[Any]:
    return (sa.select(exchanges.c.state, sa.func.count()).where(exchanges.c.state.in_(QUEUE_STATES))
            .group_by(exchanges.c.state))


class ScrubSchedule:
    """Runs `ExchangeQueue.scrub` when the processor is idle after a burst, so deleted payloads
    become unreadable on disk off the path of the next claim, at most every `interval` seconds.
    A request inside that interval is not dropped: it runs when the interval is over."""

    def __init__(self, queue: ExchangeQueue, interval: float) -> None:
        self._queue = queue
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wanted = False
        self._scrubbed_at = float("-inf")

    def request(self) -> None:
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="observer-scrub")

    async def close(self) -> None:
        """Stops waiting; a scrub that was waiting out its interval runs now."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._wanted:
            await self._scrub()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._wanted:
            wait = self._scrubbed_at + self._interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wanted = False
            self._scrubbed_at = loop.time()
            await self._scrub()

    async def _scrub(self) -> None:
        try:
            await self._queue.scrub()
        except Exception as error:  # noqa: BLE001 - best effort; the next idle moment retries
            logger.debug("scrubbing the WAL failed: %s", error)
