"""The query RPCs: ListTraces (filters, order, keyset pages, errors), GetTrace, GetIntegrity,
ReportToolExecution."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from smoltbot.core.errors import error_info_of
from smoltbot.v1 import exchange_pb2
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack, new_hash
from tests.integration.observer.exchanges import error_body, make_exchange, message, text, thinking, tool_use
from tests.integration.observer.test_verification_through_service import STRICT_CARD


def _stamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_list_traces_filters_orders_and_pages(observer_stack: ObserverStack) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    other_id, other_hash = await observer_stack.agent()
    await observer_stack.put_card(agent_id, agent_hash, json.dumps(STRICT_CARD))
    # Calls are checked against the card in force when they started: date them after the card.
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)
    sent = []
    for i in range(30):
        name = "read_file" if i % 3 else "delete_file"  # every third one violates the card
        sent.append(
            make_exchange(
                agent_hash,
                message(tool_use(name, {"path": f"/f{i}"}), stop_reason="tool_use"),
                ended_at=start + timedelta(minutes=i),
                session_id="s-even" if i % 2 == 0 else "",
                session_hint="" if i % 2 == 0 else "s-odd",
            )
        )
    sent.append(make_exchange(other_hash, message(text("hi")), ended_at=start))
    await observer_stack.ingest(sent)
    await observer_stack.wait_finished([e.exchange_id for e in sent])
    stub = observer_stack.stub
    assert stub is not None

    everything = await observer_stack.list_traces(agent_id=agent_id, page_size=7)
    assert len(everything) == 30
    stamps = [t.timestamp.ToDatetime() for t in everything]
    assert stamps == sorted(stamps, reverse=True), "newest first by default"
    ascending = await observer_stack.list_traces(agent_id=agent_id, page_size=4, order_by="timestamp asc")
    assert [t.trace_id for t in ascending] == [t.trace_id for t in reversed(everything)]
    assert [
        t.trace_id for t in await observer_stack.list_traces(agent_id=agent_id, order_by="TIMESTAMP  DESC")
    ] == [t.trace_id for t in everything]

    failing = await observer_stack.list_traces(agent_id=agent_id, verified=False)
    assert len(failing) == 10 and all(t.action.name == "delete_file" for t in failing)
    assert len(await observer_stack.list_traces(agent_id=agent_id, verified=True)) == 20
    assert {t.context.session_id for t in await observer_stack.list_traces(session_id="s-even")} == {"s-even"}
    assert len(await observer_stack.list_traces(session_id="s-odd", agent_id=agent_id)) == 15
    window = await observer_stack.list_traces(agent_id=agent_id, since=_stamp(start + timedelta(minutes=10)),
                                              until=_stamp(start + timedelta(minutes=20)))
    assert len(window) == 10, "since inclusive, until exclusive"
    assert {t.agent_id for t in await observer_stack.list_traces(page_size=1000)} == {agent_id, other_id}

    # Page tokens belong to their query; sizes are validated and capped.
    page = await stub.ListTraces(pb.ListTracesRequest(agent_id=agent_id, page_size=5))
    error = await _error(
        stub.ListTraces(pb.ListTracesRequest(agent_id=other_id, page_token=page.next_page_token))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(error).metadata["field"] == "page_token"
    error = await _error(stub.ListTraces(pb.ListTracesRequest(order_by="agent_id")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "order_by" in error.details()
    assert error_info_of(error).metadata["field"] == "order_by"
    error = await _error(stub.ListTraces(pb.ListTracesRequest(page_size=-1)))
    assert (
        error.code() == grpc.StatusCode.INVALID_ARGUMENT
        and error_info_of(error).metadata["field"] == "page_size"
    )
    assert len((await stub.ListTraces(pb.ListTracesRequest(page_size=5000))).traces) == 31
    assert len((await stub.ListTraces(pb.ListTracesRequest(agent_id=agent_id))).traces) == 30  # default 50


async def test_get_trace_of_an_unknown_id_is_not_found(observer_stack: ObserverStack) -> None:
    assert observer_stack.stub is not None
    error = await _error(observer_stack.stub.GetTrace(pb.GetTraceRequest(trace_id="tr-nope-0")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_info_of(error).reason == "TRACE_NOT_FOUND"


async def test_integrity_scores_with_coverage_and_an_unknown_agent_has_none(
    observer_stack: ObserverStack,
) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    await observer_stack.put_card(agent_id, agent_hash, json.dumps(STRICT_CARD))
    # Calls are checked against the card in force when they started, so these are dated just
    # after the card was stored (a call starts 0.9 s before it ends); the timeline's hourly
    # buckets are checked with a second agent below.
    now = datetime.now(UTC)
    sent = [
        make_exchange(
            agent_hash,
            message(thinking("Read it."), tool_use("read_file", {"path": "/a"}), stop_reason="tool_use"),
            ended_at=now + timedelta(seconds=1),
        ),
        make_exchange(
            agent_hash,
            message(tool_use("delete_file", {"path": "/a"}), stop_reason="tool_use"),
            ended_at=now + timedelta(seconds=2),
        ),
        make_exchange(
            agent_hash,
            message(tool_use("shell_exec", {"cmd": "ls"}), stop_reason="tool_use"),
            ended_at=now + timedelta(seconds=3),
        ),
        make_exchange(
            agent_hash,
            error_body("overloaded_error", "Overloaded"),
            status=529,
            outcome=exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR,
            ended_at=now + timedelta(seconds=4),
        ),
    ]
    await observer_stack.ingest(sent)
    await observer_stack.wait_finished([e.exchange_id for e in sent])
    assert observer_stack.stub is not None
    score = (await observer_stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=agent_id))).integrity
    for window in (score.recent, score.all_time):
        assert window.total_traces == 4
        # read_file, and the failure (no agent action, so no action checks)
        assert window.verified_traces == 2
        assert window.score == pytest.approx(0.5)
        assert window.with_reasoning == 1
        assert window.with_model_analysis == 0
        assert window.failed == 1
        assert window.violations_by_type["forbidden_action"] == 1
        assert window.violations_by_type["unbounded_action"] == 2
        assert window.violation_count == sum(window.violations_by_type.values())
    assert score.window_size == observer_stack.settings.integrity_window
    assert sum(point.total_traces for point in score.timeline) == 4
    assert sum(point.verified_traces for point in score.timeline) == 2

    # The timeline: hourly buckets, oldest first, over calls spread across the last hours (an
    # agent on its default card, which is in force for calls before any other card).
    spread_id, spread_hash = await observer_stack.agent()
    spread = [
        make_exchange(
            spread_hash,
            message(tool_use("read_file", {"path": "/a"}), stop_reason="tool_use"),
            ended_at=datetime.now(UTC) - ago,
        )
        for ago in (timedelta(hours=3), timedelta(hours=2), timedelta(hours=1), timedelta(minutes=5))
    ]
    await observer_stack.ingest(spread)
    await observer_stack.wait_finished([e.exchange_id for e in spread])
    spread_score = (
        await observer_stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=spread_id))
    ).integrity
    assert sum(point.total_traces for point in spread_score.timeline) == 4
    assert sum(point.verified_traces for point in spread_score.timeline) == 4
    buckets = [point.bucket_start.ToDatetime() for point in spread_score.timeline]
    assert buckets == sorted(buckets) and len(buckets) >= 4

    unknown = (
        await observer_stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id="smolt-00000000"))
    ).integrity
    assert unknown.all_time.total_traces == 0 and not unknown.all_time.HasField("score")
    assert unknown.recent.total_traces == 0 and not unknown.recent.HasField("score")
    assert list(unknown.timeline) == []


async def test_the_recent_window_covers_the_last_traces_only(observer_stack: ObserverStack) -> None:
    await observer_stack.stop_observer()
    await observer_stack.start_observer(integrity_window=3)
    agent_id, agent_hash = await observer_stack.agent()
    await observer_stack.put_card(agent_id, agent_hash, json.dumps(STRICT_CARD))
    start = datetime.now(UTC) + timedelta(minutes=1)  # after the card: it is in force for every call
    names = ["delete_file", "delete_file", "read_file", "read_file", "read_file"]
    sent = [make_exchange(agent_hash, message(tool_use(name, {"path": "/x"}), stop_reason="tool_use"),
                          ended_at=start + timedelta(minutes=i)) for i, name in enumerate(names)]
    await observer_stack.ingest(sent)
    await observer_stack.wait_finished([e.exchange_id for e in sent])
    assert observer_stack.stub is not None
    score = (await observer_stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=agent_id))).integrity
    assert (score.recent.total_traces, score.recent.verified_traces, score.recent.score) == (3, 3, 1.0)
    assert (score.all_time.total_traces, score.all_time.verified_traces) == (5, 3)
    assert dict(score.recent.violations_by_type) == {}
    assert score.all_time.violations_by_type["forbidden_action"] == 2


async def test_tool_executions_are_reported_with_proof_of_ownership(observer_stack: ObserverStack) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    _, stranger_hash = await observer_stack.agent()
    early = make_exchange(agent_hash, message(tool_use("read_file", {"path": "/a"}, "toolu_early"),
                                              stop_reason="tool_use"))
    late = make_exchange(agent_hash, message(tool_use("read_file", {"path": "/b"}, "toolu_late"),
                                             stop_reason="tool_use"))
    stub = observer_stack.stub
    assert stub is not None
    # Reported before its trace exists (the plugin can be faster than the Observer).
    await stub.ReportToolExecution(pb.ReportToolExecutionRequest(
        agent_id=agent_id, agent_hash=agent_hash, tool_use_id="toolu_early", executed=True))
    await observer_stack.ingest([early, late])
    found = await observer_stack.traces_by_exchange([early.exchange_id, late.exchange_id])
    assert found[early.exchange_id][0].observation.executed is True
    assert not found[late.exchange_id][0].observation.HasField("executed")
    await stub.ReportToolExecution(pb.ReportToolExecutionRequest(
        agent_id=agent_id, agent_hash=agent_hash, tool_use_id="toolu_late", executed=False))
    trace = (await stub.GetTrace(pb.GetTraceRequest(trace_id=f"tr-{late.exchange_id}-0"))).trace
    assert trace.observation.HasField("executed") and trace.observation.executed is False

    for request, code in (
        (pb.ReportToolExecutionRequest(agent_id=agent_id, tool_use_id="toolu_late", executed=True),
         grpc.StatusCode.UNAUTHENTICATED),
        (pb.ReportToolExecutionRequest(agent_id=agent_id, agent_hash=stranger_hash, tool_use_id="toolu_late",
                                       executed=True), grpc.StatusCode.PERMISSION_DENIED),
        # Right prefix, wrong hash: only the Registry can tell.
        (pb.ReportToolExecutionRequest(agent_id=agent_id, agent_hash=agent_id.removeprefix("smolt-")
                                       + new_hash()[len(agent_id) - 6:], tool_use_id="toolu_late",
                                       executed=True), grpc.StatusCode.PERMISSION_DENIED),
        (pb.ReportToolExecutionRequest(agent_id=agent_id, agent_hash=agent_hash, tool_use_id="",
                                       executed=True), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        error = await _error(stub.ReportToolExecution(request))
        assert error.code() == code, (request, error.details())
    trace = (await stub.GetTrace(pb.GetTraceRequest(trace_id=f"tr-{late.exchange_id}-0"))).trace
    assert trace.observation.executed is False, "refused reports change nothing"
