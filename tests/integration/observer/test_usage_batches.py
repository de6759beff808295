"""Turn numbering and usage rows written a batch at a time (`usage_store.write_usage`, in the
transaction `ExchangeQueue.finish` stores traces in), on SQLite and PostgreSQL:

* a batch gives every call the turn it gets when calls are numbered one by one with the session's
  rows read before each (`_numbered_one_by_one`, the rule as first written, kept here as the
  reference), whatever the batches, their order and the calls already stored around them;
* the statements a batch costs do not grow with its calls (one read per session, one insert);
* a trace serialised ahead of its numbering (`pipeline.dumps_with_turn_slot`, in the worker
  process) is stored as exactly the text of the trace with its turn.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.sessions import SubAgent, TurnStart
from smoltbot.core.storage import Database
from smoltbot.core.usage import TokenUsage
from smoltbot.observer.accounting import ExchangeFacts
from smoltbot.observer.pipeline import Job, JobResult, dumps, serialise
from smoltbot.observer.queue import StoredTrace
from smoltbot.observer.tables import exchange_usage
from smoltbot.observer.usage_store import UsageToWrite, write_usage

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SUB = SubAgent(source="claude_code", agent_id="sub-1", parent_agent_id="main", agent_type="Explore",
               is_sub_agent=True)


def _facts(starts: bool | None, position: int | None, sub_agent: bool = False) -> ExchangeFacts:
    return ExchangeFacts(api="anthropic.messages", model="claude-sonnet-4-5",
                         usage=TokenUsage("anthropic", input=10, output=5), session_rung="x-smoltbot-session",
                         sub_agent=SUB if sub_agent else SubAgent(), turn=TurnStart(starts, position))


def _trace(exchange_id: str) -> dict[str, Any]:
    return {"trace_id": f"tr-{exchange_id}-0", "context": {"metadata": {"exchange_id": exchange_id}},
            "observation": {"exchange_id": exchange_id}}


async def _numbered_one_by_one(conn: AsyncConnection, agent_id: str, session_id: str | None,
                               facts: ExchangeFacts, at: datetime) -> int | None:
    """The reference: a call's turn read from the session's rows at or before it."""
    if not session_id:
        return None
    usage = exchange_usage.c
    in_session = sa.and_(usage.agent_id == agent_id, usage.session_id == session_id, usage.occurred_at <= at)
    current = (await conn.execute(sa.select(sa.func.max(usage.conversation_turn)).where(in_session))
               ).scalar_one_or_none()
    if not facts.turn.starts_turn or facts.sub_agent.is_sub_agent:
        return int(current) if current is not None else 1
    last_start = (await conn.execute(
        sa.select(usage.turn_position, usage.conversation_turn)
        .where(in_session, usage.starts_turn.is_(True), usage.is_sub_agent.is_(False))
        .order_by(usage.occurred_at.desc(), usage.exchange_id.desc()).limit(1))).first()
    if (last_start is not None and current is not None and last_start.conversation_turn == current
            and last_start.turn_position == facts.turn.position):
        return int(current)
    return (int(current) if current is not None else 0) + 1


async def _write_one_by_one(db: Database, batch: list[UsageToWrite], at: dict[str, datetime]) -> None:
    async with db.begin() as conn:
        for item in sorted(batch, key=lambda i: (at[i.exchange_id], i.exchange_id)):
            turn = await _numbered_one_by_one(conn, item.agent_id, item.session_id, item.facts,
                                              at[item.exchange_id])
            await conn.execute(exchange_usage.insert().values(
                exchange_id=item.exchange_id, agent_id=item.agent_id, session_id=item.session_id,
                occurred_at=at[item.exchange_id], api="anthropic.messages", provider="anthropic", model="m",
                price_conditions="", cost_reason="", price_checked="", session_rung="", sub_agent_source="",
                agent_type="", request_kind="", is_sub_agent=item.facts.sub_agent.is_sub_agent,
                starts_turn=item.facts.turn.starts_turn, turn_position=item.facts.turn.position,
                conversation_turn=turn))


async def _turns(db: Database, agent_id: str) -> list[tuple[str, int | None]]:
    async with db.read() as conn:
        rows = (await conn.execute(
            sa.select(exchange_usage.c.exchange_id, exchange_usage.c.conversation_turn)
            .where(exchange_usage.c.agent_id == agent_id))).all()
    return sorted((exchange_id[-4:], turn) for exchange_id, turn in rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batches_number_turns_as_calls_numbered_one_by_one(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    calls = []
    for n in range(60):
        # Ties in time, retries (the same position again), sub-agents, tool results (no start),
        # bodies that cannot be read (None), calls without a session.
        at = T0 + timedelta(seconds=rng.choice([n, n, n - 1, max(0, n - 5)]))
        kind = rng.random()
        facts = (_facts(True, rng.choice([0, 2, 2, 4]), sub_agent=kind < 0.1) if kind < 0.55
                 else _facts(None, None) if kind < 0.6 else _facts(False, None))
        session = rng.choice(["s-1", "s-1", "s-2", None])
        calls.append((f"{seed:02x}{n:030x}", session, facts, at))
    # Processed out of call order: batches of a few calls, in shuffled order.
    rng.shuffle(calls)
    batches: list[list[tuple[str, str | None, ExchangeFacts, datetime]]] = []
    while calls:
        size = rng.randint(1, 12)
        batches.append(calls[:size])
        del calls[:size]

    times: dict[str, datetime] = {}
    written: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        reference, batched = [], []
        for exchange_id, session, facts, at in batch:
            for agent_id, items in (("smolt-reference", reference), ("smolt-batched", batched)):
                key = f"{agent_id[6:8]}{exchange_id[2:]}"
                times[key] = at
                traces = [_trace(key)]
                written[key] = traces
                items.append(UsageToWrite(key, agent_id, session, facts, traces))
        await _write_one_by_one(db, reference, times)
        async with db.begin() as conn:
            await write_usage(conn, db.dialect, batched, times)

    expected = await _turns(db, "smolt-reference")
    assert await _turns(db, "smolt-batched") == expected
    assert any(turn and turn > 2 for _, turn in expected)  # the sequence did number several turns
    for key, traces in written.items():
        if key.startswith("ba"):
            turn = dict(expected).get(key[-4:])
            assert traces[0]["context"].get("conversation_turn") == turn
            assert traces[0]["observation"]["session_rung"] == "x-smoltbot-session"


async def test_a_batch_costs_the_same_statements_whatever_its_size(db: Database) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", count)

    async def cost(calls: int, first: int) -> int:
        items, times = [], {}
        for n in range(first, first + calls):
            exchange_id = f"{n:032x}"
            times[exchange_id] = T0 + timedelta(seconds=n)
            items.append(UsageToWrite(exchange_id, "smolt-a", f"s-{n % 2}", _facts(n % 3 == 0, n),
                                      [_trace(exchange_id)]))
        statements.clear()
        async with db.begin() as conn:
            await write_usage(conn, db.dialect, items, times)
        return len([s for s in statements if "exchange_usage" in s])

    small, large = await cost(4, 0), await cost(200, 100)
    assert small == large == 2  # the two sessions read in one statement, one insert


def test_a_trace_serialised_before_its_turn_is_stored_as_the_trace_with_its_turn() -> None:
    facts = _facts(True, 0, sub_agent=True)
    job = Job(exchange_id="e" * 32, agent_id="smolt-1", session_id="s", card={}, payload=b"",
              store_reasoning="full", observed_at=T0)
    tricky = {"note": '","conversation_turn":-7340033', "conversation_turn": -7_340_033}
    at = "2026-12-01T12:00:00Z"
    for trace, slotted in (
        ({"trace_id": "t", "timestamp": at, "context": {"session_id": "s"},
          "observation": {"outcome": "complete"}}, True),
        # The marker's text inside strings does not confuse it.
        ({"trace_id": "t", "timestamp": at, "action": {"parameters": {"note": tricky["note"]}},
          "context": {"session_id": "s"}, "observation": {}}, True),
        # A tool argument of the marker's key and value: no slot, serialised again when written.
        ({"trace_id": "t", "timestamp": at, "action": {"parameters": tricky},
          "context": {"session_id": "s"}, "observation": {}}, False),
        ({"trace_id": "t", "timestamp": at, "context": {}, "observation": {}}, False),
    ):
        for turn in (None, 1, 12):
            result = JobResult("e" * 32, traces=[json.loads(json.dumps(trace))], facts=facts)
            serialise(result, job)
            assert (result.turn_slots[0] >= 0) is slotted
            stored = StoredTrace(result.traces[0], result.trace_json[0], result.turn_slots[0])
            # What write_usage does to the trace in the main process.
            if turn is not None:
                stored.trace.setdefault("context", {})["conversation_turn"] = turn
            stored.with_usage()
            assert stored.row(T0)["trace_json"] == dumps(stored.trace)
            assert stored.trace["observation"]["sub_agent_id"] == "sub-1"
