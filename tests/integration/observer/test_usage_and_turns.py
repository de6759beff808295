"""Tokens, cost, session rung and conversation turns per model call, through the real Observer
and Registry (SQLite and PostgreSQL): one `exchange_usage` row per exchange however many traces
it has, Anthropic prompt caching priced part by part, an unknown model's cost unknown (NULL, with
its reason), and every trace carrying its turn (a retry counted once, tool results inside a turn)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from smoltbot.core.pricing import PriceTableError
from smoltbot.observer.server import build_server
from smoltbot.v1 import exchange_pb2
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.exchanges import make_exchange, message, text, tool_use

pytestmark = pytest.mark.timeout(60)

SESSION = "6b1c7e52-3c1f-4f0e-9d7a-2f1e0c9b8a71"
#: Anthropic's documented shape: input_tokens excludes both cache parts.
CACHED_USAGE = {"input_tokens": 3, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 10000,
                "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 150}


def _request(messages: list[dict[str, Any]], model: str = "claude-opus-4-8") -> bytes:
    return json.dumps({"model": model, "max_tokens": 1024, "messages": messages}).encode()


def _call(agent_hash: str, messages: list[dict[str, Any]], reply: dict[str, Any], at: datetime,
          *, headers: dict[str, str] | None = None) -> exchange_pb2.Exchange:
    exchange = make_exchange(agent_hash, reply, request=_request(messages, reply["model"]), ended_at=at,
                             session_hint=SESSION)
    for name, value in {"x-claude-code-session-id": SESSION, **(headers or {})}.items():
        exchange.request.headers.append(exchange_pb2.HttpHeader(name=name, value=value))
    return exchange


def _reply(*content: dict[str, Any], usage: dict[str, Any], model: str = "claude-opus-4-8") -> dict[str, Any]:
    reply = message(*content, stop_reason="tool_use", model=model)
    reply["usage"] = usage
    return reply


async def test_usage_cost_and_turns_per_exchange(observer_stack: ObserverStack) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    prompt = [{"role": "user", "content": "Fix the failing test"}]
    two_tools = _reply(tool_use("read_file", {"path": "a.py"}), tool_use("read_file", {"path": "b.py"}),
                       usage=CACHED_USAGE)
    first = _call(agent_hash, prompt, two_tools, t0)
    retry = _call(agent_hash, prompt, two_tools, t0 + timedelta(seconds=5))
    after_tools = [
        *prompt,
        {"role": "assistant", "content": [tool_use("read_file", {"path": "a.py"}, "toolu_1")]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x = 1"}]},
    ]
    tool_turn = _call(agent_hash, after_tools, _reply(text("Fixed."), usage={"input_tokens": 40,
                                                                            "output_tokens": 10}),
                      t0 + timedelta(seconds=10))
    second_prompt = [*after_tools, {"role": "assistant", "content": "Fixed."},
                     {"role": "user", "content": "Now run the linter"}]
    unknown_model = _call(agent_hash, second_prompt,
                          _reply(text("Ok."), usage={"input_tokens": 7, "output_tokens": 2},
                                 model="claude-nonexistent-9"), t0 + timedelta(seconds=20))
    exchanges = [first, retry, tool_turn, unknown_model]
    await observer_stack.ingest(exchanges)
    by_exchange = await observer_stack.traces_by_exchange([e.exchange_id for e in exchanges],
                                                          agent_id=agent_id)

    # Every trace carries its turn and the rung that named its session.
    turns = {exchange_id: {t.context.conversation_turn for t in traces}
             for exchange_id, traces in by_exchange.items()}
    assert turns == {first.exchange_id: {1}, retry.exchange_id: {1}, tool_turn.exchange_id: {1},
                     unknown_model.exchange_id: {2}}
    assert len(by_exchange[first.exchange_id]) == 2
    for traces in by_exchange.values():
        for trace in traces:
            assert trace.context.HasField("conversation_turn")
            assert trace.observation.session_rung == "x-claude-code-session-id"
            assert trace.context.session_id == SESSION

    async with observer_stack.db.read() as conn:
        rows = {row.exchange_id: row for row in (await conn.execute(
            sa.text("SELECT * FROM exchange_usage WHERE agent_id = :a"), {"a": agent_id})).all()}
    # One row per exchange: the two traces of `first` do not count its tokens twice.
    assert set(rows) == {e.exchange_id for e in exchanges}
    cached = rows[first.exchange_id]
    assert (cached.input_tokens, cached.cache_read_tokens, cached.cache_write_5m_tokens,
            cached.cache_write_1h_tokens, cached.output_tokens) == (3, 10000, 2000, 0, 150)
    assert cached.reasoning_tokens is None  # not reported, which is not 0
    # claude-opus-4-8: 3*$5 + 2000*$6.25 + 10000*$0.50 + 150*$25 per million tokens.
    assert Decimal(cached.cost_usd) == Decimal("0.021265")
    assert cached.cost_picousd == 21_265_000_000
    assert cached.price_checked == "2026-12-02" and cached.session_rung == "x-claude-code-session-id"
    assert rows[tool_turn.exchange_id].cache_read_tokens is None
    assert Decimal(rows[tool_turn.exchange_id].cost_usd) == Decimal("0.00045")  # 40*$5 + 10*$25
    unknown = rows[unknown_model.exchange_id]
    assert unknown.cost_usd is None and unknown.cost_picousd is None
    assert "not in the price table" in unknown.cost_reason and "claude-nonexistent-9" in unknown.cost_reason
    assert (unknown.input_tokens, unknown.output_tokens) == (7, 2)


async def test_a_bad_price_table_override_stops_the_observer(observer_stack: ObserverStack,
                                                             tmp_path: Path) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_text('schema = 1\n[[model]]\nprovider = "anthropic"\nmodel = "claude-x"\ninput = 1\n')
    with pytest.raises(PriceTableError, match=r"prices\.toml.*checked must be the date"):
        await build_server(observer_stack.observer_settings.model_copy(update={"price_table_path": str(bad)}),
                           address="127.0.0.1:0")


async def test_an_operator_price_overrides_the_shipped_one(observer_stack: ObserverStack,
                                                           tmp_path: Path) -> None:
    override = tmp_path / "prices.toml"
    override.write_text('schema = 1\n[[model]]\nprovider = "anthropic"\nmodel = "claude-opus-4-8"\n'
                        'checked = 2026-12-01\nsource = "our contract"\ninput = 1\noutput = 2\n')
    await observer_stack.stop_observer()
    await observer_stack.start_observer(price_table_path=str(override))
    _, agent_hash = await observer_stack.agent()
    call = _call(agent_hash, [{"role": "user", "content": "hi"}],
                 _reply(text("Hello."), usage={"input_tokens": 1000, "output_tokens": 1000}),
                 datetime.now(UTC))
    await observer_stack.ingest([call])
    await observer_stack.wait_finished([call.exchange_id])
    async with observer_stack.db.read() as conn:
        row = (await conn.execute(sa.text("SELECT cost_usd, price_checked FROM exchange_usage "
                                          "WHERE exchange_id = :e"), {"e": call.exchange_id})).one()
    assert (Decimal(row.cost_usd), row.price_checked) == (Decimal("0.003"), "2026-12-01")
