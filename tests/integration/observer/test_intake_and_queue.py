"""Intake that loses nothing: acks after storage, duplicates, rejections, restarts with work
in flight, a crashed observer's leases, a Registry outage, a step that keeps failing."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from smoltbot.core.grpc_client import open_channel
from smoltbot.core.tls import TlsConfig
from smoltbot.observer.server import build_server as build_observer
from smoltbot.observer.tables import exchanges as exchanges_table
from smoltbot.v1 import exchange_pb2, observer_service_pb2_grpc
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack, new_hash
from tests.integration.observer.exchanges import make_exchange, message, text, thinking, tool_use

ACCEPTED, DUPLICATE, REJECTED = (
    pb.INGEST_STATUS_ACCEPTED,
    pb.INGEST_STATUS_DUPLICATE,
    pb.INGEST_STATUS_REJECTED,
)


def _reply(agent_hash: str, **kwargs: object) -> exchange_pb2.Exchange:
    return make_exchange(agent_hash, message(thinking("Answer briefly."), text("Sure.")), **kwargs)  # type: ignore[arg-type]


async def _trace_counts(stack: ObserverStack) -> Counter[str]:
    async with stack.db.read() as conn:
        rows = (await conn.execute(sa.text("SELECT exchange_id FROM traces"))).scalars().all()
    return Counter(rows)


async def test_resent_exchanges_are_acked_as_duplicates_and_traced_once(
    observer_stack: ObserverStack,
) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    first = make_exchange(agent_hash, message(tool_use("read_file", {"path": "/a"}),
                                              tool_use("read_file", {"path": "/b"}), stop_reason="tool_use"))
    second = _reply(agent_hash)
    acks = await observer_stack.ingest([first, first, second, first])
    assert [ack.status for ack in acks] == [ACCEPTED, DUPLICATE, ACCEPTED, DUPLICATE]
    await observer_stack.wait_finished([first.exchange_id, second.exchange_id])
    # A gateway reconnecting re-sends what it had in flight, on a new stream; also upper-cased.
    upper = exchange_pb2.Exchange()
    upper.CopyFrom(second)
    upper.exchange_id = second.exchange_id.upper()
    acks = await observer_stack.ingest([first, upper])
    assert [(ack.exchange_id, ack.status) for ack in acks] == [(first.exchange_id, DUPLICATE),
                                                               (upper.exchange_id, DUPLICATE)]
    # Traces come only from stored exchanges: two rows, both finished, so no trace is on its way.
    assert await observer_stack.exchange_states() == {first.exchange_id: "done", second.exchange_id: "done"}
    assert await _trace_counts(observer_stack) == Counter({first.exchange_id: 2, second.exchange_id: 1})
    assert len(await observer_stack.list_traces(agent_id=agent_id)) == 3


async def test_invalid_exchanges_are_rejected_with_a_reason_and_the_stream_goes_on(
        observer_stack: ObserverStack) -> None:
    _, agent_hash = await observer_stack.agent()
    bad_id = _reply(agent_hash, exchange_id="not-hex")
    no_hash = _reply("", exchange_id=None)
    bad_hash = _reply("xyz" * 20)
    good = _reply(agent_hash)
    acks = await observer_stack.ingest([bad_id, no_hash, pb.IngestRequest(), bad_hash, good])
    assert [ack.status for ack in acks] == [REJECTED, REJECTED, REJECTED, REJECTED, ACCEPTED]
    assert "exchange_id" in acks[0].message and acks[0].exchange_id == "not-hex"
    assert "agent_hash" in acks[1].message
    assert "no exchange" in acks[2].message
    assert "agent_hash" in acks[3].message
    await observer_stack.wait_finished([good.exchange_id])
    assert set(await observer_stack.exchange_states()) == {good.exchange_id}


async def test_a_restart_mid_processing_loses_nothing_and_duplicates_nothing(
    observer_stack: ObserverStack,
) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    await observer_stack.stop_observer()
    await observer_stack.start_observer(observer_concurrency=1)
    start = datetime.now(UTC)
    sent = [
        make_exchange(
            agent_hash,
            message(
                thinking("Step."),
                tool_use("read_file", {"path": f"/f{i}"}),
                tool_use("read_file", {"path": f"/g{i}"}),
                stop_reason="tool_use",
            ),
            ended_at=start + timedelta(milliseconds=i),
        )
        for i in range(300)
    ]
    acks = await observer_stack.ingest(sent)
    assert {ack.status for ack in acks} == {ACCEPTED}
    # Stop at once: most of the 300 are still pending or being processed.
    await observer_stack.stop_observer(grace=0.2)
    states = Counter((await observer_stack.exchange_states()).values())
    assert states["processing"] == 0, "a graceful stop gives its leases back"
    assert states["pending"] > 0, f"the test needs work left at the stop: {states}"

    # A crashed observer held some exchanges under a lease that has since expired.
    crashed = [exchange.exchange_id for exchange in sent[-20:]]
    async with observer_stack.db.begin() as conn:
        await conn.execute(exchanges_table.update().where(exchanges_table.c.exchange_id.in_(crashed)).values(
            state="processing", lease_owner="observer-crashed", attempts=1,
            lease_expires_at=datetime.now(UTC) - timedelta(seconds=1),
            next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))

    await observer_stack.start_observer()
    await observer_stack.wait_finished([exchange.exchange_id for exchange in sent], timeout=30)
    counts = await _trace_counts(observer_stack)
    assert counts == Counter({exchange.exchange_id: 2 for exchange in sent})
    listed = await observer_stack.list_traces(agent_id=agent_id, page_size=250)
    assert len(listed) == 600 == len({trace.trace_id for trace in listed})


async def test_two_observers_sharing_a_database_process_each_exchange_once(
    observer_stack: ObserverStack,
) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    first = observer_stack.observer
    assert first is not None and observer_stack.stub is not None
    first_stub = observer_stack.stub
    second = await build_observer(
        observer_stack.observer_settings.model_copy(update={"observer_poll_interval": 0.1}),
        address="127.0.0.1:0",
    )
    await second.start()
    try:
        async with open_channel(f"127.0.0.1:{second.port}",
                                TlsConfig.from_settings(observer_stack.settings)) as channel:
            second_stub = observer_service_pb2_grpc.ObserverServiceStub(channel)
            sent = [_reply(agent_hash) for _ in range(200)]
            for stub, half in ((first_stub, sent[:100]), (second_stub, sent[100:])):
                observer_stack.stub = stub
                assert {ack.status for ack in await observer_stack.ingest(half)} == {ACCEPTED}
            # Each observer also sees the other's exchanges as duplicates.
            observer_stack.stub = second_stub
            assert {ack.status for ack in await observer_stack.ingest(sent[:5])} == {DUPLICATE}
            observer_stack.stub = first_stub
            await observer_stack.wait_finished([e.exchange_id for e in sent], timeout=30)
    finally:
        await second.stop(0.5)
    assert await _trace_counts(observer_stack) == Counter({e.exchange_id: 1 for e in sent})
    assert first.components.processor.processed + second.components.processor.processed == 200
    assert len(await observer_stack.list_traces(agent_id=agent_id)) == 200


async def test_registry_down_keeps_exchanges_pending_until_it_is_back(observer_stack: ObserverStack) -> None:
    agent_hash = new_hash()  # never seen by the Registry: the gateway failed open
    await observer_stack.stop_registry()
    sent = [_reply(agent_hash, session_hint="support-chat-7"), _reply(agent_hash)]
    acks = await observer_stack.ingest(sent)
    assert {ack.status for ack in acks} == {ACCEPTED}
    # Each exchange has been tried, has met the outage and is back in the queue.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with observer_stack.db.read() as conn:
            tried = (
                await conn.execute(
                    sa.text(
                        "SELECT count(*) FROM exchanges WHERE state = 'pending' AND last_error IS NOT NULL"
                    )
                )
            ).scalar_one()
        if tried == len(sent):
            break
        assert asyncio.get_running_loop().time() < deadline, "the exchanges were never tried"
        await asyncio.sleep(0.05)
    states = await observer_stack.exchange_states()
    assert set(states.values()) <= {"pending", "processing"}
    async with observer_stack.db.read() as conn:
        attempts = (await conn.execute(sa.text("SELECT max(attempts) FROM exchanges"))).scalar_one()
        assert (await conn.execute(sa.text("SELECT count(*) FROM traces"))).scalar_one() == 0
    assert attempts <= 1, "waiting for the Registry does not use up attempts"

    await observer_stack.start_registry()
    found = await observer_stack.traces_by_exchange([exchange.exchange_id for exchange in sent], timeout=20)
    agent_id, _ = await observer_stack.agent(agent_hash)
    named, inferred = found[sent[0].exchange_id][0], found[sent[1].exchange_id][0]
    assert named.agent_id == inferred.agent_id == agent_id
    assert named.context.session_id == "support-chat-7"
    assert inferred.context.session_id and inferred.context.session_id != "support-chat-7"


async def test_a_step_that_keeps_failing_becomes_a_processing_failed_trace(
    observer_stack: ObserverStack,
) -> None:
    _, agent_hash = await observer_stack.agent()
    # The gateway named an agent the Registry does not know: GetActiveCard fails every time.
    exchange = _reply(agent_hash, agent_id="smolt-0000000000000000")
    await observer_stack.ingest([exchange])
    (trace,) = (await observer_stack.traces_by_exchange([exchange.exchange_id], timeout=20))[
        exchange.exchange_id
    ]
    assert trace.observation.outcome == "processing_failed"
    assert trace.action.name == "processing_failed"
    assert "get active card" in trace.observation.outcome_detail
    assert "after 2 attempts" in trace.observation.outcome_detail
    assert trace.agent_id == "smolt-0000000000000000"
    states = await observer_stack.exchange_states([exchange.exchange_id])
    assert states == {exchange.exchange_id: "failed"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_raw_exchanges_do_not_linger_in_the_database_files(observer_stack: ObserverStack) -> None:
    _, agent_hash = await observer_stack.agent()
    marker = "sk-ant-api03-RAWPAYLOAD-" + secrets.token_hex(12)
    exchange = make_exchange(agent_hash, message(thinking(f"The key is {marker}."), text("ok")),
                             request=json.dumps({"model": "m", "messages": [
                                 {"role": "user", "content": f"use {marker}"}]}).encode())
    path = Path(observer_stack.settings.effective_database_url.removeprefix("sqlite:///"))
    # The second exchange is traced right after the first one's scrub: it is scrubbed too,
    # once the minimum interval between scrubs is over.
    for timeout in (5, 5):
        await observer_stack.ingest([exchange])
        await observer_stack.wait_finished([exchange.exchange_id])
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = [p.name for p in path.parent.glob(path.name + "*") if marker.encode() in p.read_bytes()]
            if not found:
                break
            assert asyncio.get_running_loop().time() < deadline, f"the raw secret is still in {found}"
            await asyncio.sleep(0.1)
        marker = "sk-ant-api03-RAWPAYLOAD-" + secrets.token_hex(12)
        exchange = make_exchange(agent_hash, message(thinking(f"The key is {marker}."), text("ok")))


async def test_health_and_reflection_are_served(observer_stack: ObserverStack) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    assert observer_stack.observer is not None
    async with open_channel(f"127.0.0.1:{observer_stack.observer.port}",
                            TlsConfig.from_settings(observer_stack.settings)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(health_pb2.HealthCheckRequest(service="smoltbot.v1.ObserverService"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for response in call:
            names = {service.name for service in response.list_services_response.service}
            assert "smoltbot.v1.ObserverService" in names
            break


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_row_level_security_on_postgresql(observer_stack: ObserverStack) -> None:
    async with observer_stack.db.read() as conn:
        secured = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT relname, relrowsecurity FROM pg_class WHERE relname IN ('exchanges', "
                        "'exchange_payloads', 'traces', 'trace_violations', 'drift_pending', 'drift_states', "
                        "'drift_alerts', 'tool_executions')"
                    )
                )
            ).all()
        )
        policies = {(row[0], row[1]) for row in (await conn.execute(sa.text(
            "SELECT tablename, cmd FROM pg_policies WHERE schemaname = 'public'"))).all()}
    assert secured == dict.fromkeys(secured, True) and len(secured) == 8
    public = {table for table, _ in policies}
    assert {"traces", "drift_alerts"} <= public
    assert not public & {"exchanges", "exchange_payloads", "drift_pending", "drift_states", "tool_executions"}
    assert all(
        cmd == "SELECT" for table, cmd in policies if table in ("traces", "trace_violations", "drift_alerts")
    )
