"""Retention against a real Registry (the cards say each agent's period) on SQLite and
PostgreSQL: exactly what is past its time goes, nothing else; raw payloads have their own TTL;
with two observers no batch is done twice."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from smoltbot.core.tls import TlsConfig
from smoltbot.observer.metrics import ObserverMetrics
from smoltbot.observer.registry_client import RegistryClient
from smoltbot.observer.retention import Retention
from smoltbot.observer.retention_store import RetentionStore
from smoltbot.observer.tables import (
    drift_pending,
    exchange_payloads,
    exchange_usage,
    exchanges,
    retention_state,
    tool_executions,
    trace_violations,
    traces,
)
from smoltbot.observer.trace_store import TraceStore
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.test_drift import CARD
from tests.support.synthetic_traces import bulk_insert, exchange_rows, merge

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _card(days: int) -> str:
    return json.dumps({**CARD, "audit": {**CARD["audit"], "retention_days": days}})


async def _ids(stack: ObserverStack, table: sa.Table, column: str = "exchange_id") -> set[str]:
    async with stack.db.read() as conn:
        return {str(value) for value in (await conn.execute(sa.select(table.c[column]))).scalars()}


def _retention(stack: ObserverStack, **overrides: Any) -> tuple[Retention, RegistryClient]:
    settings = stack.observer_settings.model_copy(update={
        "retention_max_days": 60, "retention_min_days": 7, "payload_ttl_hours": 24,
        "retention_batch_size": 7, **overrides})
    registry = RegistryClient(settings.registry_address, card_ttl=0, tls=TlsConfig.from_settings(settings))
    return Retention(RetentionStore(stack.db), registry, settings), registry


async def test_retention_deletes_exactly_what_is_past_the_cards_period(observer_stack: ObserverStack) -> None:
    stack = observer_stack
    await stack.stop_observer()  # its own retention pass must not race this one
    # A: its card keeps 30 days; B: asks for 2, the operator's minimum is 7; C: declares none (0),
    # gets the operator's maximum, 60.
    agents = {}
    for name, days in (("a", 30), ("b", 2), ("c", 0)):
        agent_id, agent_hash = await stack.agent()
        await stack.put_card(agent_id, agent_hash, _card(days))
        agents[name] = (agent_id, agent_hash)
    periods = {"a": 30, "b": 7, "c": 60}
    ages = [0.5, 1, 6.9, 7.1, 20, 29.9, 30.1, 45, 59.9, 60.1, 90, 400]  # days before NOW
    parts, kept, gone = [], set(), set()
    index = 0
    for name, (agent_id, agent_hash) in agents.items():
        for age in ages:
            index += 1
            at = NOW - timedelta(days=age)
            part = exchange_rows(agent_id, agent_hash, at, index, report=True)
            parts.append(part)
            exchange_id = part["exchanges"][0]["exchange_id"]
            (gone if age > periods[name] else kept).add(exchange_id)
    # A record no agent has (the upstream refused the credential): the maximum applies.
    for age in (59, 61):
        index += 1
        part = exchange_rows("", "f" * 64, NOW - timedelta(days=age), index)
        for name in ("traces", "trace_violations", "drift_pending", "exchange_usage"):
            part[name] = []
        part["exchanges"][0]["agent_id"] = None
        parts.append(part)
        (gone if age > 60 else kept).add(part["exchanges"][0]["exchange_id"])
    await bulk_insert(stack.db, merge(parts))

    retention, registry = _retention(stack)
    try:
        report = await retention.run_pass(NOW)
    finally:
        await registry.close()
    metrics = ObserverMetrics()
    metrics.retention = retention
    scraped = (await metrics.render()).decode()

    assert await _ids(stack, exchanges) == kept
    unowned = {p["exchanges"][0]["exchange_id"] for p in parts if p["exchanges"][0]["agent_id"] is None}
    assert {t[:-2] for t in await _ids(stack, traces, "trace_id")} == kept - unowned
    assert {t[:-2] for t in await _ids(stack, drift_pending, "trace_id")} <= kept
    assert {t[:-2] for t in await _ids(stack, trace_violations, "trace_id")} <= kept
    assert await _ids(stack, exchange_usage) <= kept
    assert len(await _ids(stack, exchange_usage)) == len(kept) - 1
    assert {t[len("toolu_"):] for t in await _ids(stack, tool_executions, "tool_use_id")} == \
        await _ids(stack, exchange_usage)
    # Counted per agent, with the cut-off from which each agent's record is complete.
    expected = {agents[name][0]: sum(age > periods[name] for age in ages) for name in agents}
    assert report.traces == expected
    async with stack.db.read() as conn:
        rows = {row.agent_id: row for row in (await conn.execute(sa.select(retention_state))).all()}
    assert {agent_id: int(row.deleted_traces) for agent_id, row in rows.items()} == expected
    for agent_id, count in expected.items():  # and on /metrics, per agent
        assert f'smoltbot_retention_deleted_traces_total{{agent_id="{agent_id}"}} {count}.0' in scraped
    for name, (agent_id, _) in agents.items():
        assert rows[agent_id].since == NOW - timedelta(days=periods[name])

    # The integrity says over which period it holds.
    await stack.start_observer()
    assert stack.stub is not None
    served = await stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=agents["a"][0]))
    assert served.retained_since.ToDatetime(tzinfo=UTC) == NOW - timedelta(days=30)
    assert served.retention_deleted_traces == expected[agents["a"][0]]
    await stack.stop_observer()

    # A second pass at the same time finds nothing more to do.
    retention, registry = _retention(stack)
    try:
        again = await retention.run_pass(NOW)
    finally:
        await registry.close()
    assert again.batches == []


async def test_raw_payloads_go_after_their_ttl_whatever_the_outcome(observer_stack: ObserverStack) -> None:
    stack = observer_stack
    await stack.stop_observer()
    agent_id, agent_hash = await stack.agent()
    parts = []
    fresh, old_failed, old_pending = [], [], []
    for index, (hours, state) in enumerate([(1, "failed"), (23, "failed"), (25, "failed"), (100, "failed"),
                                            (30, "done"), (48, "pending")]):
        part = exchange_rows(agent_id, agent_hash, NOW - timedelta(hours=hours), 1000 + index,
                             payload=True, state=state)
        parts.append(part)
        exchange_id = part["exchanges"][0]["exchange_id"]
        if state == "pending":
            old_pending.append(exchange_id)
        elif hours > 24:
            old_failed.append(exchange_id)
        else:
            fresh.append(exchange_id)
    await bulk_insert(stack.db, merge(parts))
    retention, registry = _retention(stack)
    try:
        report = await retention.run_pass(NOW)
    finally:
        await registry.close()
    # Payloads older than 24 h are gone, failed or done; a payload still waiting in the queue is
    # kept (it is the work to do); the exchange records stay (they are within the card's period).
    assert await _ids(stack, exchange_payloads) == set(fresh) | set(old_pending)
    assert report.payloads == len(old_failed)
    assert len(await _ids(stack, exchanges)) == 6


async def test_two_observers_never_do_the_same_batch(observer_stack: ObserverStack) -> None:
    stack = observer_stack
    await stack.stop_observer()
    agent_id, agent_hash = await stack.agent()
    await stack.put_card(agent_id, agent_hash, _card(10))
    parts = [exchange_rows(agent_id, agent_hash, NOW - timedelta(days=20, minutes=index), 5000 + index,
                           report=index % 3 == 0) for index in range(300)]
    await bulk_insert(stack.db, merge(parts))
    first, first_registry = _retention(stack, retention_batch_size=5)
    second, second_registry = _retention(stack, retention_batch_size=5)
    try:
        one, two = await asyncio.gather(first.run_pass(NOW), second.run_pass(NOW))
    finally:
        await first_registry.close()
        await second_registry.close()
    done_by_one = {(batch.table, key) for batch in one.batches for key in batch.keys}
    done_by_two = {(batch.table, key) for batch in two.batches for key in batch.keys}
    assert done_by_one and done_by_two, "both observers should have had batches to do"
    assert not done_by_one & done_by_two
    assert sum(1 for table, _ in done_by_one | done_by_two if table == "traces") == 300
    assert one.traces.get(agent_id, 0) + two.traces.get(agent_id, 0) == 300
    state = await RetentionStore(stack.db).state(agent_id)
    assert state is not None and state.deleted_traces == 300
    assert await _ids(stack, traces, "trace_id") == set()


async def _brute_force(stack: ObserverStack, agent_id: str) -> tuple[list[int], int, dict[str, int]]:
    """All-time sums straight from the traces: what the counters must always agree with."""
    mine = sa.and_(traces.c.agent_id == agent_id, traces.c.record_kind == "decision")

    def flag(column: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((column, 1), else_=0)), 0)

    async with stack.db.read() as conn:
        row = (await conn.execute(sa.select(
            sa.func.count(), flag(traces.c.verified),
            sa.func.coalesce(sa.func.sum(traces.c.violation_count), 0), flag(traces.c.has_reasoning),
            flag(traces.c.model_analysis), flag(traces.c.failed)).where(mine))).one()
        activity = (await conn.execute(sa.select(sa.func.count()).where(
            traces.c.agent_id == agent_id, traces.c.record_kind == "activity"))).scalar_one()
        types = dict((await conn.execute(
            sa.select(trace_violations.c.type, sa.func.count())
            .join(traces, traces.c.trace_id == trace_violations.c.trace_id).where(mine)
            .group_by(trace_violations.c.type))).all())
    return [int(value) for value in row], int(activity), {str(k): int(v) for k, v in types.items()}


async def _served(stack: ObserverStack, agent_id: str) -> tuple[list[int], int, dict[str, int]]:
    window = (await TraceStore(stack.db).integrity(agent_id, 100)).all_time
    return ([window.total_traces, window.verified_traces, window.violation_count, window.with_reasoning,
             window.with_model_analysis, window.failed], window.activity, window.violations_by_type)


async def test_integrity_counters_stay_exact_through_roll_up_retention_and_new_traces(
        observer_stack: ObserverStack) -> None:
    stack = observer_stack
    await stack.stop_observer()
    agent_id, agent_hash = await stack.agent()
    await stack.put_card(agent_id, agent_hash, _card(30))
    now = datetime.now(UTC)

    def seed(start: int, ages: list[float],
             created_at: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
        parts = []
        for offset, age in enumerate(ages):
            part = exchange_rows(agent_id, agent_hash, now - timedelta(days=age), start + offset,
                                 violated=offset % 3 == 0)
            if created_at is not None:  # stored now, whenever the call happened
                part["traces"][0]["created_at"] = created_at
            if offset % 5 == 4:  # API activity: counted apart, never in the score
                part["traces"][0]["record_kind"] = "activity"
                part["trace_violations"] = []
                part["traces"][0]["violation_count"] = 0
            parts.append(part)
        return merge(parts)

    await bulk_insert(stack.db, seed(0, [day * 0.75 for day in range(60)]))
    assert await _served(stack, agent_id) == await _brute_force(stack, agent_id)

    retention, registry = _retention(stack, retention_max_days=365)
    try:
        report = await retention.run_pass(now)
        assert report.traces[agent_id] == sum(1 for day in range(60) if day * 0.75 > 30)
        async with stack.db.read() as conn:
            marked = (await conn.execute(sa.select(sa.func.count()).select_from(
                sa.table("integrity_marks")))).scalar_one()
        assert marked == 1  # counted from now on, not rescanned
        assert await _served(stack, agent_id) == await _brute_force(stack, agent_id)

        # Stored after the mark (calls of the last minutes, and late ones: a spool sent days later).
        await bulk_insert(stack.db, seed(1000, [0.0001, 0.0002, 0.0003, 5, 29], created_at=datetime.now(UTC)))
        assert await _served(stack, agent_id) == await _brute_force(stack, agent_id)

        # Twenty days on: traces counted by the counters are deleted, and taken out of them.
        later = now + timedelta(days=20)
        report = await retention.run_pass(later)
        assert report.traces[agent_id] > 0
        assert await _served(stack, agent_id) == await _brute_force(stack, agent_id)
        assert (await _served(stack, agent_id))[0][0] > 0
    finally:
        await registry.close()
