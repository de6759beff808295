"""Usage, cost and session position of model calls (table `exchange_usage`): written with an
exchange's traces (`write_usage`, called by `ExchangeQueue.finish` inside its transaction), and
read back as per-session detail and roll-ups (`UsageStore`).

Conversation turns are numbered here, in the write transaction, in call order within the session:
a main-agent call whose conversation ends in a new user prompt (`core.sessions.starts_user_turn`)
starts the next turn, unless it repeats the last turn start's position in the conversation (a
retry of the same request, counted once); every other call (tool results, sub-agent calls) is in
the session's current turn, and a session first seen mid-turn starts at turn 1. Calls processed
out of order keep the number they were given; the session view counts its turns from all rows.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.storage import Database, Dialect, UTCDateTime, insert_ignoring_conflicts
from smoltbot.observer.accounting import ExchangeFacts
from smoltbot.observer.pipeline import annotate_usage
from smoltbot.observer.record_kinds import DECISION
from smoltbot.observer.tables import chunks, exchange_usage, traces

__all__ = ["GROUP_BYS", "PICO", "SessionSummary", "SessionUsage", "SubAgentUsage", "TurnUsage", "UsageStore",
           "UsageSums", "UsageToWrite", "picousd", "write_usage"]

#: cost_picousd is USD * 10**12: every price in the table (USD per million tokens, at most a few
#: decimals, times a batch factor) gives an integer there, so SQL sums stay exact.
PICO = Decimal(10) ** 12


@dataclass(frozen=True)
class UsageToWrite:
    exchange_id: str
    agent_id: str
    session_id: str | None
    facts: ExchangeFacts
    #: The traces of the exchange (trace.proto JSON dicts), given their conversation_turn here.
    traces: Sequence[dict[str, Any]]


def picousd(cost_usd: str | None) -> int | None:
    """The exact cost in integer pico-dollars (rounded half-even below 1e-12 USD)."""
    if cost_usd is None:
        return None
    return int((Decimal(cost_usd) * PICO).to_integral_value())


async def write_usage(conn: AsyncConnection, dialect: Dialect, items: Sequence[UsageToWrite],
                      occurred_at: dict[str, datetime]) -> None:
    """One `exchange_usage` row per exchange, in call order, each trace given its turn.

    A batch costs one read for all the sessions it touches (what each session holds around the
    batch's calls, `_SessionTurns`; one per 100 sessions) and one multi-row insert, however many
    calls it carries: numbering call by call with two reads and an insert each cost most of a
    result write, and a read per session was still most of its statements (on SQLite each one is
    several hand-offs to the driver's thread while the write lock is held)."""
    if not items:
        return
    ordered = sorted(items, key=lambda i: (occurred_at[i.exchange_id], i.exchange_id))
    sessions: dict[tuple[str, str], _SessionTurns] = {}
    for item in ordered:
        if item.session_id:
            key = (item.agent_id, item.session_id)
            at = occurred_at[item.exchange_id]
            known = sessions.get(key)
            sessions[key] = _SessionTurns(at, at) if known is None else _SessionTurns(known.low, at)
    await _SessionTurns.load_all(conn, sessions)
    rows = []
    for item in ordered:
        at = occurred_at[item.exchange_id]
        turns = sessions[(item.agent_id, item.session_id)] if item.session_id else None
        turn = turns.turn_of(item, at) if turns is not None else None
        facts, usage, agent = item.facts, item.facts.usage, item.facts.sub_agent
        for trace in item.traces:
            if turn is not None:
                trace.setdefault("context", {})["conversation_turn"] = turn
            annotate_usage(trace, facts)
        rows.append({
            "exchange_id": item.exchange_id,
            "agent_id": item.agent_id,
            "session_id": item.session_id,
            "occurred_at": at,
            "api": facts.api,
            "provider": usage.provider[:16],
            "model": facts.model[:256],
            "input_tokens": usage.input,
            "cache_read_tokens": usage.cache_read,
            "cache_write_5m_tokens": usage.cache_write_5m,
            "cache_write_1h_tokens": usage.cache_write_1h,
            "cache_write_unknown_ttl_tokens": usage.cache_write_unknown_ttl,
            "output_tokens": usage.output,
            "reasoning_tokens": usage.reasoning,
            "price_conditions": ",".join(sorted(usage.conditions))[:1024],
            "cost_usd": facts.cost_usd,
            "cost_picousd": picousd(facts.cost_usd),
            "cost_reason": facts.cost_reason[:256],
            "price_checked": facts.price_checked[:10],
            "session_rung": facts.session_rung[:48],
            "sub_agent_source": agent.source[:16],
            "sub_agent_id": agent.agent_id or None,
            "parent_agent_id": agent.parent_agent_id or None,
            "agent_type": agent.agent_type[:256],
            "request_kind": agent.request_kind[:256],
            "is_sub_agent": agent.is_sub_agent,
            "starts_turn": facts.turn.starts_turn,
            "turn_position": facts.turn.position,
            "conversation_turn": turn,
        })
    for chunk in chunks(rows, 500):
        await conn.execute(insert_ignoring_conflicts(dialect, exchange_usage), list(chunk))


#: Sessions read in one statement (three selects each: SQLite allows 500 in a compound select).
_SESSIONS_PER_READ = 100


@dataclass(frozen=True, slots=True)
class _Call:
    """A row of `exchange_usage` as turn numbering reads it."""

    at: datetime
    exchange_id: str
    turn: int | None
    #: A main-agent call that starts a user turn.
    starts_turn: bool
    position: int | None


class _SessionTurns:
    """A session's turns as the calls of one batch see them.

    A call's number depends on the session's calls at or before it: their highest turn and
    their latest main-agent turn start (its position and turn). One read per session takes both
    as they stand before the batch's earliest call (`low`), and every call stored in the batch's
    span [`low`, `high`]; the batch's calls are then numbered in call order, each seeing the
    stored calls at or before it and the batch's calls before it, as when each was numbered with
    reads of its own.
    """

    def __init__(self, low: datetime, high: datetime) -> None:
        self.low, self.high = low, high
        self._stored: list[_Call] = []  # in the span, in call order
        self._stored_ids: set[str] = set()
        self._next = 0  # the first stored call not seen yet
        self._max: int | None = None
        self._last_start: _Call | None = None

    @staticmethod
    async def load_all(conn: AsyncConnection, sessions: dict[tuple[str, str], _SessionTurns]) -> None:
        """`load` of every session, in one statement per `_SESSIONS_PER_READ` sessions."""
        listed = list(sessions.items())
        for chunk in chunks(listed, _SESSIONS_PER_READ):
            parameters: dict[str, Any] = {}
            for index, ((agent_id, session_id), turns) in enumerate(chunk):
                parameters.update({f"agent_{index}": agent_id, f"session_{index}": session_id,
                                   f"low_{index}": turns.low, f"high_{index}": turns.high})
            rows = (await conn.execute(_turns_read(len(chunk)), parameters)).all()
            for index, part, at, exchange_id, turn, starts, sub_agent, position in rows:
                chunk[int(index)][1]._take(int(part), at, exchange_id, turn, starts, sub_agent, position)
            for _, turns in chunk:
                turns._stored.sort(key=lambda call: (call.at, call.exchange_id))

    async def load(self, conn: AsyncConnection, agent_id: str, session_id: str) -> None:
        await _SessionTurns.load_all(conn, {(agent_id, session_id): self})

    def _take(self, part: int, at: datetime, exchange_id: Any, turn: Any, starts: Any, sub_agent: Any,
              position: Any) -> None:
        if part == 0:
            self._max = None if turn is None else int(turn)
            return
        call = _Call(at, str(exchange_id), None if turn is None else int(turn),
                     bool(starts) and not bool(sub_agent), None if position is None else int(position))
        if part == 1:
            self._last_start = call
        else:
            self._stored.append(call)
            self._stored_ids.add(call.exchange_id)

    def turn_of(self, item: UsageToWrite, at: datetime) -> int:
        """The call's turn (calls come in call order), and the call counted as seen."""
        stored = self._stored
        while self._next < len(stored) and stored[self._next].at <= at:
            self._see(stored[self._next])
            self._next += 1
        current, turn_start = self._max, item.facts.turn
        starts = bool(turn_start.starts_turn) and not item.facts.sub_agent.is_sub_agent
        last = self._last_start
        if not starts:
            turn = current if current is not None else 1
        elif (last is not None and current is not None and last.turn == current
              and last.position == turn_start.position):
            turn = current  # the same request again (a retry): the same turn
        else:
            turn = (current if current is not None else 0) + 1
        if item.exchange_id not in self._stored_ids:  # stored already: seen as stored (its insert is a no-op)
            self._see(_Call(at, item.exchange_id, turn, starts, turn_start.position))
        return turn

    def _see(self, call: _Call) -> None:
        if call.turn is not None and (self._max is None or call.turn > self._max):
            self._max = call.turn
        last = self._last_start
        if call.starts_turn and (last is None or (call.at, call.exchange_id) > (last.at, last.exchange_id)):
            self._last_start = call


@functools.lru_cache(maxsize=_SESSIONS_PER_READ)
def _turns_read(sessions: int) -> Any:
    """The read of `sessions` sessions' turns (`_SessionTurns.load_all`), its values bound by name
    (`agent_<i>`, `session_<i>`, `low_<i>`, `high_<i>`). Built once per number of sessions and
    kept: building the union of three selects per session cost most of a result write's time in
    Python (a saturated profile: 105 of its 310 samples), while running it cost 13; a kept
    statement also keeps SQLAlchemy's cache key, memoised on it."""
    return sa.union_all(*(part for index in range(sessions) for part in _session_selects(index)))


def _session_selects(index: int) -> list[Any]:
    """The three parts of session `index`'s read (its rows tagged with `index`, its place in the
    union): its calls in the batch's span, its last turn start before, its highest turn."""
    usage = exchange_usage.c
    agent_id = sa.bindparam(f"agent_{index}", type_=sa.String())
    session_id = sa.bindparam(f"session_{index}", type_=sa.String())
    low = sa.bindparam(f"low_{index}", type_=UTCDateTime())
    high = sa.bindparam(f"high_{index}", type_=UTCDateTime())
    session = sa.and_(usage.agent_id == agent_id, usage.session_id == session_id)
    columns = (usage.occurred_at, usage.exchange_id, usage.conversation_turn, usage.starts_turn,
               usage.is_sub_agent, usage.turn_position)
    tag: Any = sa.literal_column(str(int(index))).label("session_index")
    # First: the union's rows are typed (and times converted) by its first select.
    in_span = (sa.select(tag, sa.literal_column("2").label("part"), *columns)
               .where(session, usage.occurred_at >= low, usage.occurred_at <= high))
    before_start = (sa.select(tag, sa.literal_column("1").label("part"), *columns)
                    .where(session, usage.occurred_at < low, usage.starts_turn.is_(True),
                           usage.is_sub_agent.is_(False))
                    .order_by(usage.occurred_at.desc(), usage.exchange_id.desc()).limit(1).subquery())
    # The highest turn before `low`: when every stored call is older than `low` (the usual
    # case), the session's highest turn, from the end of ix_exchange_usage_session_turn
    # (migration 0008); else read from the session's rows before `low`. Only the branch
    # taken is evaluated (SQLite and PostgreSQL both run uncorrelated subqueries lazily).
    in_session = sa.select(sa.func.max(usage.conversation_turn)).where(session)
    latest = sa.select(sa.func.max(usage.occurred_at)).where(session).scalar_subquery()
    highest = sa.case((latest < low, in_session.scalar_subquery()),
                      else_=in_session.where(usage.occurred_at < low).scalar_subquery())
    kinds = (UTCDateTime(), sa.String(), sa.Boolean(), sa.Boolean(), sa.Integer())
    nothing = [sa.cast(sa.null(), kind) for kind in kinds]
    before_max: Any = sa.select(tag, sa.literal_column("0").label("part"), nothing[0], nothing[1],
                                highest, *nothing[2:])
    return [in_span, sa.select(before_start), before_max]


_PARTS = ("input_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
          "cache_write_unknown_ttl_tokens", "output_tokens", "reasoning_tokens")
GROUP_BYS = ("day", "model", "session")


@dataclass
class UsageSums:
    """A roll-up: each token part summed over the calls that reported it, `calls_without` counting
    the calls that did not (a partial sum is never passed off as the whole); the cost of the calls
    whose cost is known, exact, and how many calls have an unknown cost."""

    calls: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    calls_without: dict[str, int] = field(default_factory=dict)
    known_cost_usd: Decimal = Decimal(0)
    known_cost_calls: int = 0
    unknown_cost_calls: int = 0
    #: Distinct conversation turns among the calls (meaningful for one session's calls).
    turns: int = 0

    @property
    def known_cost_text(self) -> str:
        text = f"{self.known_cost_usd:f}"
        return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass
class TurnUsage:
    turn: int | None
    started_at: datetime
    ended_at: datetime
    usage: UsageSums


@dataclass
class SubAgentUsage:
    sub_agent_id: str
    parent_agent_id: str
    agent_type: str
    source: str
    first_seen: datetime
    last_seen: datetime
    usage: UsageSums
    traces: int = 0
    verified_traces: int = 0


@dataclass
class SessionUsage:
    agent_id: str
    session_id: str
    rungs: list[str]
    first_seen: datetime
    last_seen: datetime
    total: UsageSums
    turns: list[TurnUsage]
    sub_agents: list[SubAgentUsage]
    traces: int
    verified_traces: int
    violations: int


@dataclass
class SessionSummary:
    """A session's totals as `SessionUsage` has them, without its turns and sub-agents."""

    session_id: str
    turn_count: int
    first_seen: datetime
    last_seen: datetime
    total: UsageSums
    traces: int
    verified_traces: int
    violations: int


def _session_decisions(agent_id: str, session_id: str) -> Any:
    """The condition for a session's decision traces, readable only by its session_id range
    (`ix_traces_session_timestamp`): agent and kind compared as expressions, since a planner
    without fresh statistics (or SQLite's, whatever they say) takes `ix_traces_agent_kind_covering`
    for `agent_id = ? AND record_kind = ?`, i.e. all the agent's decisions, for a few rows."""
    return sa.and_(traces.c.session_id == session_id,
                   traces.c.agent_id + sa.literal_column("''") == agent_id,
                   traces.c.record_kind + sa.literal_column("''") == DECISION)


def _sum_columns() -> list[Any]:
    columns: list[Any] = [sa.func.count().label("calls")]
    for part in _PARTS:
        column = exchange_usage.c[part]
        columns.append(sa.func.coalesce(sa.func.sum(column), 0).label(part))
        columns.append(sa.func.coalesce(sa.func.sum(sa.case((column.is_(None), 1), else_=0)), 0)
                       .label(f"without_{part}"))
    columns.append(sa.func.coalesce(sa.func.sum(exchange_usage.c.cost_picousd), 0).label("picousd"))
    columns.append(sa.func.count(exchange_usage.c.cost_picousd).label("known_cost_calls"))
    return columns


def _sums(row: Any) -> UsageSums:
    calls = int(row.calls)
    known = int(row.known_cost_calls)
    return UsageSums(
        calls=calls,
        tokens={part: int(getattr(row, part)) for part in _PARTS},
        calls_without={part: int(getattr(row, f"without_{part}")) for part in _PARTS
                       if int(getattr(row, f"without_{part}"))},
        known_cost_usd=Decimal(int(row.picousd)) / PICO,
        known_cost_calls=known,
        unknown_cost_calls=calls - known,
    )


def _time(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite aggregates bypass the column type
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class UsageStore:
    """Roll-ups of `exchange_usage` (SQL sums of the known parts plus counts of the unknown)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def agent_usage(self, agent_id: str, since: datetime | None, until: datetime | None,
                          group_by: str) -> tuple[UsageSums, list[tuple[str, UsageSums]]]:
        """The agent's total in [since, until) and its groups (by UTC day, model or session)."""
        where = [exchange_usage.c.agent_id == agent_id]
        if since is not None:
            where.append(exchange_usage.c.occurred_at >= since)
        if until is not None:
            where.append(exchange_usage.c.occurred_at < until)
        key: Any
        if group_by == "day":
            key = (sa.func.substr(sa.cast(exchange_usage.c.occurred_at, sa.String), 1, 10)
                   if self.db.dialect == "sqlite"
                   else sa.func.to_char(sa.func.timezone("UTC", exchange_usage.c.occurred_at), "YYYY-MM-DD"))
        elif group_by == "model":
            key = exchange_usage.c.model
        else:
            key = sa.func.coalesce(exchange_usage.c.session_id, "")
        async with self.db.read() as conn:
            total = _sums((await conn.execute(sa.select(*_sum_columns()).where(*where))).one())
            turns = sa.func.count(sa.distinct(exchange_usage.c.conversation_turn)).label("turns")
            rows = (await conn.execute(
                sa.select(key.label("group_key"), *_sum_columns(), turns).where(*where)
                .group_by(sa.text("group_key")).order_by(sa.text("group_key"))
            )).all()
        groups = []
        for row in rows:
            sums = _sums(row)
            sums.turns = int(row.turns)
            groups.append((str(row.group_key), sums))
        return total, groups

    async def session_agents(self, session_id: str) -> list[str]:
        """The agents that have calls in a session of this id (at most two: enough to be ambiguous)."""
        async with self.db.read() as conn:
            return list((await conn.execute(
                sa.select(exchange_usage.c.agent_id).where(exchange_usage.c.session_id == session_id)
                .group_by(exchange_usage.c.agent_id).limit(2)
            )).scalars())

    async def session_summaries(self, agent_id: str, session_ids: Sequence[str]) -> list[SessionSummary]:
        """The totals of the agent's sessions among `session_ids` that have recorded calls, in the
        order given: one statement over `exchange_usage` and one over `traces`, each a UNION ALL of
        one aggregate per session over that session's own index range (`ix_exchange_usage_session`,
        `ix_traces_session_timestamp`), as `session` reads one. Not an `IN` list grouped by session:
        on a small table PostgreSQL's planner reads the agent's whole range and filters the sessions,
        and a plan that depends on the table's statistics is not one a test can hold. The caller
        bounds the count (SQLite allows 500 parts in a compound select)."""
        wanted = list(dict.fromkeys(session_ids))
        if not wanted:
            return []
        first, last = sa.func.min(exchange_usage.c.occurred_at), sa.func.max(exchange_usage.c.occurred_at)
        # Turns as `session` counts them: the distinct numbered turns (a call outside one has none).
        turns = sa.func.count(sa.distinct(exchange_usage.c.conversation_turn)).label("turn_count")
        verified = sa.func.coalesce(sa.func.sum(sa.case((traces.c.verified, 1), else_=0)), 0)

        def position(index: int) -> Any:
            return sa.literal(index, sa.Integer()).label("position")

        async with self.db.read() as conn:
            usage_rows = {int(row.position): row for row in (await conn.execute(sa.union_all(*(
                sa.select(position(index), *_sum_columns(), first.label("first"), last.label("last"), turns)
                .where(exchange_usage.c.agent_id == agent_id, exchange_usage.c.session_id == session_id)
                for index, session_id in enumerate(wanted))))).all() if int(row.calls)}
            if not usage_rows:
                return []
            trace_rows = {int(row[0]): row for row in (await conn.execute(sa.union_all(*(
                sa.select(position(index), sa.func.count(), verified,
                          sa.func.coalesce(sa.func.sum(traces.c.violation_count), 0))
                .where(_session_decisions(agent_id, wanted[index]))
                for index in sorted(usage_rows))))).all()}
        found = []
        for index, row in sorted(usage_rows.items()):
            counted = trace_rows.get(index)
            found.append(SessionSummary(
                session_id=wanted[index], turn_count=int(row.turn_count), first_seen=_time(row.first),
                last_seen=_time(row.last), total=_sums(row),
                traces=int(counted[1]) if counted is not None else 0,
                verified_traces=int(counted[2]) if counted is not None else 0,
                violations=int(counted[3]) if counted is not None else 0))
        return found

    async def session(self, agent_id: str, session_id: str) -> SessionUsage | None:
        in_session = sa.and_(exchange_usage.c.agent_id == agent_id, exchange_usage.c.session_id == session_id)
        first, last = sa.func.min(exchange_usage.c.occurred_at), sa.func.max(exchange_usage.c.occurred_at)
        async with self.db.read() as conn:
            total_row = (await conn.execute(
                sa.select(*_sum_columns(), first.label("first"), last.label("last")).where(in_session)
            )).one()
            if not int(total_row.calls):
                return None
            rungs = sorted(str(r) for r in (await conn.execute(
                sa.select(exchange_usage.c.session_rung).where(in_session).distinct())).scalars())
            turn_rows = (await conn.execute(
                sa.select(exchange_usage.c.conversation_turn.label("turn"), *_sum_columns(),
                          first.label("first"), last.label("last"))
                .where(in_session).group_by(exchange_usage.c.conversation_turn)
                .order_by(first)
            )).all()
            agent_key = (exchange_usage.c.sub_agent_id, exchange_usage.c.parent_agent_id,
                         exchange_usage.c.agent_type, exchange_usage.c.sub_agent_source)
            sub_rows = (await conn.execute(
                sa.select(*agent_key, *_sum_columns(), first.label("first"), last.label("last"))
                .where(in_session, exchange_usage.c.is_sub_agent.is_(True))
                .group_by(*agent_key).order_by(first)
            )).all()
            verified = sa.func.coalesce(sa.func.sum(sa.case((traces.c.verified, 1), else_=0)), 0)
            sub_traces = {row[0]: (int(row[1]), int(row[2])) for row in (await conn.execute(
                sa.select(exchange_usage.c.sub_agent_id, sa.func.count(), verified)
                .join(traces, traces.c.exchange_id == exchange_usage.c.exchange_id)
                .where(in_session, exchange_usage.c.is_sub_agent.is_(True))
                .group_by(exchange_usage.c.sub_agent_id)
            )).all()}
            trace_row = (await conn.execute(
                sa.select(sa.func.count(), verified,
                          sa.func.coalesce(sa.func.sum(traces.c.violation_count), 0))
                .where(_session_decisions(agent_id, session_id))
            )).one()
        sub_agents = []
        for row in sub_rows:
            counted = sub_traces.get(row.sub_agent_id, (0, 0))
            sub_agents.append(SubAgentUsage(
                sub_agent_id=row.sub_agent_id or "", parent_agent_id=row.parent_agent_id or "",
                agent_type=row.agent_type, source=row.sub_agent_source, first_seen=_time(row.first),
                last_seen=_time(row.last), usage=_sums(row), traces=counted[0], verified_traces=counted[1]))
        return SessionUsage(
            agent_id=agent_id, session_id=session_id, rungs=rungs,
            first_seen=_time(total_row.first), last_seen=_time(total_row.last), total=_sums(total_row),
            turns=[TurnUsage(row.turn, _time(row.first), _time(row.last), _sums(row)) for row in turn_rows],
            sub_agents=sub_agents, traces=int(trace_row[0]), verified_traces=int(trace_row[1]),
            violations=int(trace_row[2]),
        )
