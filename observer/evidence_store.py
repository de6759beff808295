"""The history ledger's storage (table `evidence_history`, migration 0009), and the reads and
writes the processor's evidence stage (observer/evidence_stage.py) makes of it.

Ordering, defined: an exchange's resent history is checked against the turns its session relayed
in calls that *started before this call started* (by the gateway's clock). Not "ended before": the
gateway stamps a call's end after the last byte went out, and a client may send its next call in
between; a call that overlapped this one cannot be in its history anyway, so counting it changes
nothing for an honest client. Rows are written once per exchange and never updated, so the answer
does not depend on which worker or observer processes what first, provided the earlier exchanges
are recorded by then. When one may not be (a call of the session that ended before this one ended
is still pending, or being processed elsewhere), the exchange waits: it goes back to the queue with
its attempt refunded, for at most `evidence_wait_seconds` after its call started; after that it is
checked with what there is and its check names the calls that were missing. A check that finds
something on a call that ended less than `evidence_grace_seconds` ago is done again after that:
a gateway may ship an earlier call (a long stream) after a later one. Exchanges of one
session in the same batch are computed in start order, each seeing the rows of those before it
(`pipeline.compute_many`). An exchange the observer has not received within that grace (a gateway
spooling it through an outage) cannot be waited for: a check that ran without its turn says
`unrelayed_turn` for it.

Retention deletes a session's oldest rows like any other data past its time, and notes the cut
(`evidence_cuts`, observer/retention_store.py); a job of that session carries it (`cut`), and its
check calls the turns before the first one the ledger still recognises unknown, not unrelayed.
The rows are read before the note, so a read that races a retention batch sees the note whenever
it missed the rows.

Rows hold digests and finding descriptions only: never content.
"""

from __future__ import annotations

import json
import logging
import threading
from bisect import bisect_left
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.evidence.canonical import DigestMemo
from smoltbot.core.evidence.exchange import EvidenceCarry, EvidenceInput, annotate, evaluate, ledger_key
from smoltbot.core.evidence.history import HistoryLedger
from smoltbot.core.evidence.readers import reader_for
from smoltbot.core.evidence.request_memo import RequestMemo
from smoltbot.core.identity import load_hash_secret
from smoltbot.core.settings import Settings
from smoltbot.core.storage import Database, insert_ignoring_conflicts, utcnow
from smoltbot.observer.tables import chunks, evidence_cuts, evidence_history, exchange_usage, exchanges

__all__ = ["MAX_DIVERGENCES", "SESSION_MEMOS", "Divergence", "EvidenceJob", "EvidenceRow", "EvidenceStore",
           "LedgerRow", "SessionHistory", "SessionLedger", "SessionMemo", "SessionMemos", "evidence_for"]

logger = logging.getLogger(__name__)

#: Rows of one session read for one check (the oldest are dropped beyond it; the ledger says so).
MAX_LEDGER_ROWS = 20_000
_ROW_ORDER = attrgetter("started_at", "exchange_id")
_STARTED = attrgetter("started_at")
_EXCHANGE_ID = attrgetter("exchange_id")
_h = evidence_history.c


@dataclass(frozen=True)
class LedgerRow:
    exchange_id: str
    #: When the call that relayed the turn started: the ledger's order.
    started_at: datetime
    #: The row's `ledger_json`, parsed in the worker (the event loop only passes it on).
    state_json: str


@dataclass(frozen=True)
class SessionLedger:
    """A session's ledger rows as read for a batch, in start order."""

    rows: list[LedgerRow]
    #: Why the session's oldest rows may be missing (retention, the read's bound); None: all there.
    cut: str | None = None


@dataclass(frozen=True)
class EvidenceRow:
    """What one exchange's evidence adds to the table (built in the worker, written by the processor)."""

    exchange_id: str
    agent_id: str
    session_id: str | None
    started_at: datetime
    relayed_at: datetime
    status: str
    diverged_at: int | None
    finding_count: int
    rewrite_count: int
    ledger_json: str
    check_json: str


@dataclass(frozen=True)
class Divergence:
    """One call of a session whose resent history diverged: its check as its traces carry it."""

    exchange_id: str
    started_at: datetime
    #: The call's conversation turn (None: outside a turn, or its usage row is gone).
    turn: int | None
    #: The first index in the call's `messages` that did not happen.
    diverged_at: int | None
    #: The check's `findings`, `rewrites` and `notes` (trace JSON, `HistoryCheck` in trace.proto).
    check: dict[str, Any]


@dataclass(frozen=True)
class SessionHistory:
    """A session's history checks, for reads: how many were made, checked out or diverged, and
    the calls whose check diverged (oldest first, at most `MAX_DIVERGENCES`)."""

    checked: int = 0
    intact: int = 0
    diverged: int = 0
    divergences: tuple[Divergence, ...] = ()


#: Diverged calls a session read lists (all are counted).
MAX_DIVERGENCES = 100


@dataclass(frozen=True)
class EvidenceJob:
    """The evidence part of a job for the worker (picklable): the key, the call's start, and the
    session's ledger rows read for its batch (the worker keeps those relayed before this start)."""

    key: bytes
    session_id: str | None
    started_at: datetime
    rows: tuple[LedgerRow, ...] = ()
    notes: tuple[str, ...] = ()
    #: `SessionLedger.cut` of the session's rows.
    cut: str | None = None

    def with_rows(self, more: Sequence[LedgerRow]) -> EvidenceJob:
        return replace(self, rows=(*self.rows, *more))


class SessionMemo:
    """What a worker keeps of one session between its calls: its last request (`RequestMemo`: the
    messages the next one resends unchanged are not parsed or read again), the digests of the
    blocks its last calls sent (`DigestMemo`), and its ledger as built from the rows it read last
    time, with their exchange ids. All only save time: a message reused is the one `json.loads`
    gives, a digest remembered is the digest, and a ledger is reused only when the rows read
    before it are the first of the rows read now (the same ids in the same order), with the rows
    after them added as `HistoryLedger.from_rows` would; any other case is built from all the
    rows again."""

    #: Roughly what one relayed turn of a kept ledger costs in memory (for `SessionMemos`' bound).
    TURN_BYTES = 600

    def __init__(self, key: bytes) -> None:
        self.digests = DigestMemo(key)
        self.requests = RequestMemo()
        #: Held by the call using the memo: two calls of one session checked at once on two threads
        #: (inline processing) must not interleave their changes; the second goes without it.
        self.in_use = threading.Lock()
        self._ids: tuple[str, ...] = ()
        self._ledger: HistoryLedger | None = None
        #: What the last check left the next one, and the rows its ledger holds from then on (the
        #: rows it was checked against, then its own).
        self._carry = EvidenceCarry()
        self._carried_rows: tuple[str, ...] | None = None

    @property
    def size(self) -> int:
        turns = len(self._ledger.turns) if self._ledger else 0
        return self.digests.size + self.requests.size + turns * self.TURN_BYTES

    def carry(self, ids: tuple[str, ...]) -> EvidenceCarry:
        """What the last check left for a call checked against the rows `ids` (in start order):
        its history check's point only when the rows the last check's ledger was built from are
        the first of these (a ledger of rows only grows when rows are added after them: what the
        last check found in the turns it knew stays true; `CheckPoint` checks the rest); the
        provenance sources' point whatever the rows."""
        kept = self._carried_rows
        if kept is None or ids[:len(kept)] != kept:
            self._carry.history = None
        self._carried_rows = None
        return self._carry

    def carried(self, ids: tuple[str, ...]) -> None:
        """The call checked against a ledger of the rows `ids` left its points (`carry`)."""
        self._carried_rows = ids

    def ledger(self, rows: Sequence[LedgerRow], ids: tuple[str, ...]) -> HistoryLedger | None:
        """The ledger of `rows` (in start order; `ids`: their exchange ids), not to be changed; None
        past its bounds."""
        kept = len(self._ids)
        if self._ledger is not None and ids[:kept] == self._ids:
            if kept == len(ids):
                return self._ledger
            ledger, new = self._ledger.copy(), rows[kept:]
        else:
            ledger, new = HistoryLedger(self.digests.key), rows
        for row in new:
            ledger.add_row(json.loads(row.state_json))
        if not ledger.row_built:
            self._ids, self._ledger = (), None
            return None
        self._ids, self._ledger = ids, ledger
        return ledger


class SessionMemos:
    """A worker process's `SessionMemo`s of the sessions it checked lately. Which worker or
    observer checks a call, and in which order, changes nothing but the time: a session checked
    elsewhere meanwhile is a miss, built from its rows. Bounded: the least recently used sessions
    go beyond `max_sessions`, or beyond `max_bytes` of what they hold. `max_sessions` 0: none is
    kept, every call is computed from scratch (`bench/evidence_cost.py` measures both)."""

    def __init__(self, max_sessions: int = 256, max_bytes: int = 64 << 20) -> None:
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._memos: OrderedDict[tuple[bytes, str], SessionMemo] = OrderedDict()
        self._lock = threading.Lock()  # inline processing may check two calls on two threads

    def for_call(self, key: bytes, session_id: str) -> SessionMemo | None:
        """The session's memo, its digests started on a new call, held for the call (`done`); None
        when none are kept, or when another call of the session holds it (then that call is
        computed without: the same answer)."""
        if self.max_sessions <= 0:
            return None
        with self._lock:
            memo = self._memos.pop((key, session_id), None) or SessionMemo(key)
            self._memos[(key, session_id)] = memo
            if not memo.in_use.acquire(blocking=False):
                return None
            memo.digests.next_call()
            return memo

    def done(self, memo: SessionMemo | None) -> None:
        """The call that got `memo` from `for_call` is over with it."""
        if memo is not None:
            memo.in_use.release()
        self.trim()

    def trim(self) -> None:
        with self._lock:
            total = sum(memo.size for memo in self._memos.values())
            while self._memos and (len(self._memos) > self.max_sessions or total > self.max_bytes):
                _, memo = self._memos.popitem(last=False)
                total -= memo.size


#: This process's memos (each worker process has its own).
SESSION_MEMOS = SessionMemos()


def evidence_for(given: EvidenceJob, *, exchange_id: str, agent_id: str, api: str, request_body: bytes,
                 response_body: bytes, relayed_at: datetime | None, card: dict[str, Any],
                 traces: list[dict[str, Any]], now: datetime) -> EvidenceRow | None:
    """Worker side: the exchange's evidence put on its traces, and its row for the ledger. None for
    calls the checks do not read (an API without a history reader, or a request that is not a JSON
    object)."""
    if reader_for(api) is None:
        return None
    ordered = sorted(given.rows, key=_ROW_ORDER)  # key and filter in C: a session's rows grow with it
    rows = ordered[:bisect_left(ordered, given.started_at, key=_STARTED)]
    memo = SESSION_MEMOS.for_call(given.key, given.session_id) if given.session_id else None
    try:
        ids = tuple(map(_EXCHANGE_ID, rows))
        ledger = memo.ledger(rows, ids) if memo is not None else None
        carry = memo.carry(ids) if memo is not None else None
        if carry is not None and ledger is None:
            carry.history = None  # past the memo's bounds, the ledger is not built from all the rows
        found = evaluate(request_body, response_body, card, EvidenceInput(
            given.key, () if ledger is not None else tuple(json.loads(row.state_json) for row in rows),
            session=bool(given.session_id), notes=given.notes, cut=given.cut, ledger=ledger),
            memo.digests if memo is not None else None, memo.requests if memo is not None else None, carry,
            api=api)
        if memo is not None and ledger is not None:
            memo.carried(ids)
    finally:
        SESSION_MEMOS.done(memo)
    if found is None:
        return None
    annotate(traces, found, card, now=now)
    history = found.history
    return EvidenceRow(
        exchange_id=exchange_id, agent_id=agent_id, session_id=given.session_id, started_at=given.started_at,
        relayed_at=max(relayed_at or given.started_at, given.started_at), status=found.status,
        diverged_at=found.diverged_at, finding_count=len(history.get("findings", ())),
        rewrite_count=len(history.get("rewrites", ())),
        ledger_json=json.dumps(found.row, separators=(",", ":")),
        check_json=json.dumps({k: history[k] for k in ("findings", "rewrites", "notes") if k in history},
                              ensure_ascii=False, separators=(",", ":")),
    )


class EvidenceStore:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.enabled = settings.evidence_enabled
        self.wait = timedelta(seconds=settings.evidence_wait_seconds)
        self.grace = timedelta(seconds=settings.evidence_grace_seconds)
        self._settings = settings
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        """The ledger's key (read once, when the first check needs it; reads never do)."""
        if self._key is None:
            self._key = ledger_key(load_hash_secret(self._settings.home, self._settings.hash_secret))
        return self._key

    # -- the processor's stage ---------------------------------------------------------------------

    async def rows_before(self, wanted: Sequence[tuple[str, str, datetime]]
                          ) -> dict[tuple[str, str], SessionLedger]:
        """Per (agent, session): ledger rows of calls started before the latest of the given call
        starts, in start order (the worker keeps those before each call's own start), and whether
        the session's oldest rows may be missing."""
        latest: dict[tuple[str, str], datetime] = {}
        for agent_id, session_id, started_at in wanted:
            key = (agent_id, session_id)
            latest[key] = max(latest.get(key, started_at), started_at)
        found: dict[tuple[str, str], list[LedgerRow]] = {}
        if not latest:
            return {}
        async with self.db.read() as conn:
            for (agent_id, session_id), until in latest.items():
                rows = (await conn.execute(
                    sa.select(_h.exchange_id, _h.started_at, _h.ledger_json)
                    .where(_h.agent_id == agent_id, _h.session_id == session_id,
                           _h.started_at < until)
                    .order_by(_h.started_at.desc(), _h.exchange_id.desc())
                    .limit(MAX_LEDGER_ROWS)
                )).all()
                found[(agent_id, session_id)] = [
                    LedgerRow(r.exchange_id, r.started_at, r.ledger_json) for r in reversed(rows)]
            cuts = await self._cuts(conn, list(latest))  # after the rows: see the module's doc
        return {key: SessionLedger(rows, cuts.get(key) or (
            f"only the session's newest {MAX_LEDGER_ROWS} calls were read" if len(rows) >= MAX_LEDGER_ROWS
            else None)) for key, rows in found.items()}

    @staticmethod
    async def _cuts(conn: AsyncConnection, sessions: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        cuts: dict[tuple[str, str], str] = {}
        wanted = set(sessions)
        for chunk in chunks(sorted(wanted)):
            for row in await conn.execute(
                sa.select(evidence_cuts).where(evidence_cuts.c.agent_id.in_({a for a, _ in chunk}),
                                               evidence_cuts.c.session_id.in_({s for _, s in chunk}))
            ):
                if (row.agent_id, row.session_id) in wanted:
                    cuts[(row.agent_id, row.session_id)] = (
                        "retention deleted the ledger rows of the session's calls started before "
                        f"{row.cut_before:%Y-%m-%dT%H:%M:%SZ}")
        return cuts

    async def jobs_for(self, calls: Sequence[tuple[str, str, str | None, datetime]]
                       ) -> tuple[dict[str, EvidenceJob], dict[str, str]]:
        """For the calls of a batch, (exchange_id, agent_id, session_id, started_at): their evidence
        jobs, and those that must wait for earlier calls of their session (exchange_id: why)."""
        sessions = sorted({session for _, _, session, _ in calls if session})
        unfinished = await self.unfinished_before(sessions)
        in_batch = {exchange_id for exchange_id, *_ in calls}
        # When each call of the batch ended (intake's occurred_at; the batch is still unfinished).
        ended = {other: at for rows in unfinished.values() for at, other in rows if other in in_batch}
        waiting: dict[str, str] = {}
        notes: dict[str, tuple[str, ...]] = {}
        # Start order: a call waits when an earlier call of its session, in this batch, waits.
        for exchange_id, _, session_id, started_at in sorted(calls, key=lambda c: (c[3], c[0])):
            if not session_id:
                continue
            until = ended.get(exchange_id, started_at)
            earlier = sorted(other for at, other in unfinished.get(session_id, ())
                             if at < until and other not in in_batch)
            earlier += sorted(other for other, _, session, start in calls
                              if session == session_id and start < started_at and other in waiting)
            if not earlier:
                continue
            if self.expired(started_at):
                listed = ", ".join(earlier[:5])
                notes[exchange_id] = (f"checked without {len(earlier)} earlier calls of the session not "
                                      f"recorded within {self.wait.total_seconds():g}s: {listed}",)
            else:
                waiting[exchange_id] = f"waiting for earlier calls of the session: {', '.join(earlier[:5])}"
        ledgers = await self.rows_before([(agent_id, session_id, started_at)
                                          for exchange_id, agent_id, session_id, started_at in calls
                                          if session_id and exchange_id not in waiting])
        jobs = {}
        for exchange_id, agent_id, session_id, started_at in calls:
            if exchange_id in waiting:
                continue
            ledger = ledgers.get((agent_id, session_id)) if session_id else None
            jobs[exchange_id] = EvidenceJob(self.key, session_id, started_at,
                                            tuple(ledger.rows) if ledger else (), notes.get(exchange_id, ()),
                                            ledger.cut if ledger else None)
        return jobs, waiting

    async def unfinished_before(self, sessions: Sequence[str]) -> dict[str, list[tuple[datetime, str]]]:
        """Per session: (occurred_at, exchange_id) of its exchanges not yet recorded (pending or
        being processed). `occurred_at` is when the call ended (intake: ended, else started)."""
        found: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        if not sessions:
            return found
        async with self.db.read() as conn:
            for chunk in chunks(sorted(set(sessions))):
                for row in await conn.execute(
                    sa.select(exchanges.c.session_id, exchanges.c.occurred_at, exchanges.c.exchange_id)
                    .where(exchanges.c.session_id.in_(chunk),
                           exchanges.c.state.in_(("pending", "processing")))
                ):
                    found[row.session_id].append((row.occurred_at, row.exchange_id))
        return found

    async def write(self, rows: Sequence[EvidenceRow]) -> None:
        """Stores rows (again: the same row, since a check is deterministic; the first one stays)."""
        if not rows:
            return
        # No conflict target: on PostgreSQL the key is (exchange_id, started_at), as a month
        # partition's must be (migration 0014); a call's start is its own, so it is the same row.
        async with self.db.begin() as conn:
            for chunk in chunks(list(rows), 200):
                await conn.execute(
                    insert_ignoring_conflicts(self.db.dialect, evidence_history),
                    [row.__dict__ for row in chunk],
                )

    def check_again(self, row: EvidenceRow, received_at: datetime) -> bool:
        """A check that found something, on a call this observer received a moment ago: a gateway
        ships each call when its capture is complete, so an earlier call of the session (a long
        stream) may reach the observer after this one. Such a check is done again after
        `evidence_grace_seconds`. Measured from `received_at` (the observer's own clock, stamped at
        intake), not from the call's times: a gateway's clock ahead of ours would otherwise hold the
        exchange back for as long as the skew."""
        return row.status == "diverged" and utcnow() - received_at < self.grace

    def expired(self, started_at: datetime) -> bool:
        """An exchange has waited long enough for earlier calls of its session to be recorded."""
        return utcnow() - started_at >= self.wait

    # -- reads -------------------------------------------------------------------------------------

    async def session_history(self, agent_id: str, session_id: str) -> SessionHistory:
        """The session's checks: the rows its calls wrote (the check each call's traces carry), so
        a divergence here is the one its trace and the session page show."""
        async with self.db.read() as conn:
            counts = (await conn.execute(
                sa.select(_h.status, sa.func.count())
                .where(_h.agent_id == agent_id, _h.session_id == session_id)
                .group_by(_h.status)
            )).all()
            diverged = (await conn.execute(
                sa.select(_h.exchange_id, _h.started_at, _h.diverged_at, _h.check_json,
                          exchange_usage.c.conversation_turn)
                .select_from(evidence_history.outerjoin(
                    exchange_usage, exchange_usage.c.exchange_id == _h.exchange_id))
                .where(_h.agent_id == agent_id, _h.session_id == session_id,
                       _h.status == "diverged")
                .order_by(_h.started_at, _h.exchange_id).limit(MAX_DIVERGENCES)
            )).all()
        by_status = {status: int(count) for status, count in counts}
        return SessionHistory(
            checked=by_status.get("intact", 0) + by_status.get("diverged", 0),
            intact=by_status.get("intact", 0), diverged=by_status.get("diverged", 0),
            divergences=tuple(Divergence(r.exchange_id, r.started_at, r.conversation_turn, r.diverged_at,
                                         json.loads(r.check_json)) for r in diverged))

    async def agent_sessions(self, agent_id: str) -> tuple[int, int]:
        """(sessions checked, sessions whose history checks out: no check of theirs diverged)."""
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((sa.column("bad") == 0, 1),
                                                                                else_=0)), 0))
                .select_from(
                    sa.select(_h.session_id,
                              sa.func.sum(sa.case((_h.status == "diverged", 1), else_=0))
                              .label("bad"))
                    .where(_h.agent_id == agent_id, _h.session_id.is_not(None),
                           _h.status != "unchecked")
                    .group_by(_h.session_id).subquery())
            )).one()
        return int(row[0]), int(row[1])
