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
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.storage import Dialect, insert_ignoring_conflicts
from smoltbot.observer.accounting import ExchangeFacts
from smoltbot.observer.tables import exchange_usage

__all__ = ["PICO", "UsageToWrite", "picousd", "write_usage"]

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
