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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.storage import Database, Dialect, insert_ignoring_conflicts
from smoltbot.observer.accounting import ExchangeFacts
from smoltbot.observer.record_kinds import DECISION
from smoltbot.observer.tables import exchange_usage, traces

__all__ = ["GROUP_BYS", "PICO", "SessionUsage", "SubAgentUsage", "TurnUsage", "UsageStore", "UsageSums",
           "UsageToWrite", "picousd", "write_usage"]

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
    """One `exchange_usage` row per exchange, in call order, each trace given its turn."""
    for item in sorted(items, key=lambda i: (occurred_at[i.exchange_id], i.exchange_id)):
        at = occurred_at[item.exchange_id]
        turn = await _turn_of(conn, item, at)
        facts, usage, agent = item.facts, item.facts.usage, item.facts.sub_agent
        for trace in item.traces:
            if turn is not None:
                trace.setdefault("context", {})["conversation_turn"] = turn
            observation = trace.setdefault("observation", {})
            observation["session_rung"] = facts.session_rung
            if agent.is_sub_agent:
                observation["sub_agent_id"] = agent.agent_id
                observation["parent_agent_id"] = agent.parent_agent_id
                observation["sub_agent_type"] = agent.agent_type
        await conn.execute(insert_ignoring_conflicts(dialect, exchange_usage), [{
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
        }])


async def _turn_of(conn: AsyncConnection, item: UsageToWrite, at: datetime) -> int | None:
    if not item.session_id:
        return None
    in_session = sa.and_(exchange_usage.c.agent_id == item.agent_id,
                         exchange_usage.c.session_id == item.session_id,
                         exchange_usage.c.occurred_at <= at)
    current = (await conn.execute(
        sa.select(sa.func.max(exchange_usage.c.conversation_turn)).where(in_session)
    )).scalar_one_or_none()
    facts = item.facts
    if not facts.turn.starts_turn or facts.sub_agent.is_sub_agent:
        return int(current) if current is not None else 1
    last_start = (await conn.execute(
        sa.select(exchange_usage.c.turn_position, exchange_usage.c.conversation_turn)
        .where(in_session, exchange_usage.c.starts_turn.is_(True), exchange_usage.c.is_sub_agent.is_(False))
        .order_by(exchange_usage.c.occurred_at.desc(), exchange_usage.c.exchange_id.desc()).limit(1)
    )).first()
    if (last_start is not None and current is not None and last_start.conversation_turn == current
            and last_start.turn_position == facts.turn.position):
        return int(current)  # the same request again (a retry): the same turn
    return (int(current) if current is not None else 0) + 1


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
                .where(traces.c.agent_id == agent_id, traces.c.session_id == session_id,
                       traces.c.record_kind == DECISION)
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
