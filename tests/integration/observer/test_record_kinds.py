"""What an exchange records, through the real Observer and Registry: only model calls are
decisions; other API calls are activity outside integrity and drift; a refused credential
touches no agent and leaves nothing public; a minimal record is a capture_failed trace; an
unfinished tool call is never an execution; JSON values keep their exact type and value."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from smoltbot.v1 import exchange_pb2
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack, new_hash
from tests.integration.observer.exchanges import make_exchange, message, text, tool_use

pytestmark = pytest.mark.timeout(60)


def _call(agent_hash: str, method: str, path: str, *, status: int = 200, body: bytes = b'{"data": []}',
          agent_id: str = "") -> exchange_pb2.Exchange:
    exchange = make_exchange(agent_hash, body, status=status, agent_id=agent_id,
                             outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE if status < 400
                             else exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR)
    exchange.request.method, exchange.request.path = method, path
    exchange.request.body = b"" if method == "GET" else b'{"model": "claude-sonnet-4-5", "messages": []}'
    return exchange


async def test_only_model_calls_are_decisions(observer_stack: ObserverStack) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    decision = make_exchange(agent_hash, message(text("Done.")))
    others = [
        _call(agent_hash, "GET", "/v1/models"),
        _call(agent_hash, "POST", "/v1/messages/count_tokens", body=b'{"input_tokens": 42}'),
        _call(agent_hash, "POST", "/v1/messages/batches"),
        _call(agent_hash, "GET", "/v1/files"),
        _call(agent_hash, "GET", "/v1/no-such-endpoint", status=404,
              body=b'{"type":"error","error":{"type":"not_found_error","message":"Not found"}}'),
        _call(agent_hash, "GET", "/v1/messages"),  # a GET is never a model call
    ]
    # The same path through another provider's prefix (/openai/v1/messages) is not an Anthropic
    # model call: activity until the observer reads that provider's wire format.
    elsewhere = make_exchange(agent_hash, message(text("Done.")))
    elsewhere.provider = "openai"
    others.append(elsewhere)
    await observer_stack.ingest([decision, *others])
    await observer_stack.wait_finished([e.exchange_id for e in [decision, *others]])

    traces = await observer_stack.list_traces(agent_id=agent_id, page_size=100)
    kinds = {t.observation.exchange_id: t.observation.record_kind for t in traces}
    assert kinds == {decision.exchange_id: "decision", **{e.exchange_id: "activity" for e in others}}
    for trace in traces:
        if trace.observation.record_kind != "activity":
            continue
        # Visible as what it was, never as a verified decision.
        assert trace.action.name == "api_activity"
        assert not trace.verification.verified and list(trace.verification.checks_performed) == []
        assert trace.observation.request_path.startswith("/v1/")
        assert trace.observation.analyzer == ""
    models = next(t for t in traces if t.observation.request_path == "/v1/models")
    assert (models.observation.request_method, models.observation.http_status) == ("GET", 200)

    activity_only = await observer_stack.list_traces(agent_id=agent_id, record_kind="activity")
    decisions_only = await observer_stack.list_traces(agent_id=agent_id, record_kind="decision")
    assert len(activity_only) == len(others) and [t.trace_id for t in decisions_only] == [
        f"tr-{decision.exchange_id}-0"]

    assert observer_stack.stub is not None
    score = (await observer_stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=agent_id))).integrity
    for window in (score.all_time, score.recent):
        assert (window.total_traces, window.verified_traces, window.failed) == (1, 1, 0)
        assert window.activity == len(others)
    assert sum(point.total_traces for point in score.timeline) == 1

    await observer_stack.wait_drift_settled(agent_id)
    async with observer_stack.db.read() as conn:
        observed = (await conn.execute(sa.text("SELECT observed FROM drift_states WHERE agent_id = :a"),
                                       {"a": agent_id})).scalar_one()
    assert observed == 1  # the drift detector saw the one decision only

    with pytest.raises(Exception) as caught:
        await observer_stack.list_traces(agent_id=agent_id, record_kind="decisions")
    assert "record_kind" in str(caught.value)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_credential_touches_no_agent_and_leaves_nothing_public(
        observer_stack: ObserverStack, status: int) -> None:
    stranger = new_hash()
    refused = _call(
        stranger,
        "POST",
        "/v1/messages",
        status=status,
        body=b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}',
    )
    # An agent the gateway had cached, whose key the upstream now refuses: no trace either.
    known_id, known_hash = await observer_stack.agent()
    revoked = _call(known_hash, "GET", "/v1/models", status=status, agent_id=known_id,
                    body=b'{"type":"error","error":{"type":"permission_error","message":"no"}}')
    await observer_stack.ingest([refused, revoked])
    await observer_stack.wait_finished([refused.exchange_id, revoked.exchange_id])

    async with observer_stack.db.read() as conn:
        credentials = (await conn.execute(sa.text(
            "SELECT count(*) FROM agent_credentials WHERE agent_hash = :h"), {"h": stranger})).scalar_one()
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT exchange_id, state, agent_id, record_kind, last_error FROM exchanges "
                    "WHERE exchange_id IN (:a, :b)"
                ),
                {"a": refused.exchange_id, "b": revoked.exchange_id},
            )
        ).all()
    assert credentials == 0, "an agent was created for a credential the upstream refused"
    all_traces = await observer_stack.list_traces(page_size=1000)
    assert {refused.exchange_id, revoked.exchange_id}.isdisjoint(
        t.observation.exchange_id for t in all_traces
    )
    assert {(row.state, row.agent_id, row.record_kind) for row in rows} == {("done", None, "auth_rejected")}
    assert all(str(status) in row.last_error for row in rows)
    assert observer_stack.observer is not None
    assert observer_stack.observer.components.processor.auth_rejected == 2
    assert (await observer_stack.observer.components.queue.record_counts())["auth_rejected"] == 2


async def test_a_call_no_upstream_answered_creates_no_agent_but_counts_for_a_known_one(
        observer_stack: ObserverStack) -> None:
    """Unreachable upstream or a client gone before the answer (status 0): the credential is
    unproven. A stranger's call creates no agent and leaves no trace; a known agent's call is
    still recorded under it."""
    def unanswered(agent_hash: str, outcome: int) -> exchange_pb2.Exchange:
        exchange = make_exchange(agent_hash, b"", status=0, outcome=outcome,
                                 outcome_detail="upstream unreachable: ClientConnectorError")
        exchange.request.body = b'{"model": "claude-sonnet-4-5", "messages": []}'
        return exchange

    stranger = new_hash()
    unreachable = unanswered(stranger, exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE)
    aborted = unanswered(stranger, exchange_pb2.EXCHANGE_OUTCOME_CLIENT_ABORT)
    known_id, known_hash = await observer_stack.agent()
    known = unanswered(known_hash, exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE)
    await observer_stack.ingest([unreachable, aborted, known])
    await observer_stack.wait_finished([unreachable.exchange_id, aborted.exchange_id, known.exchange_id])

    async with observer_stack.db.read() as conn:
        credentials = (await conn.execute(sa.text(
            "SELECT count(*) FROM agent_credentials WHERE agent_hash = :h"), {"h": stranger})).scalar_one()
    assert credentials == 0, "an agent was created for a credential no upstream accepted"
    traced = {t.observation.exchange_id: t for t in await observer_stack.list_traces(page_size=1000)}
    assert unreachable.exchange_id not in traced and aborted.exchange_id not in traced
    assert traced[known.exchange_id].agent_id == known_id
    assert observer_stack.observer is not None
    assert observer_stack.observer.components.processor.unproven == 2


async def test_a_minimal_record_is_a_failure_trace_that_says_what_failed(
    observer_stack: ObserverStack,
) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    failure = "response body could not be captured: decoder error (zstd: corrupt frame)"
    minimal = make_exchange(agent_hash, None, request=b"")
    minimal.capture_failure = failure
    minimal_activity = _call(agent_hash, "GET", "/v1/models", body=b"")
    minimal_activity.capture_failure = "the exchange exceeded the spool: shipped as a minimal record"
    await observer_stack.ingest([minimal, minimal_activity])
    await observer_stack.wait_finished([minimal.exchange_id, minimal_activity.exchange_id])

    (trace,) = await observer_stack.traces_of(minimal.exchange_id)
    assert trace.observation.outcome == "capture_failed" and trace.action.name == "capture_failed"
    assert (
        failure in trace.observation.outcome_detail and "complete (200)" in trace.observation.outcome_detail
    )
    assert any(failure in note for note in trace.observation.missing)
    assert trace.observation.record_kind == "decision"
    assert trace.verification.verified is False and list(trace.verification.checks_performed) == []
    assert trace.verification.warnings[0].type == "not_verified"
    (activity,) = await observer_stack.traces_of(minimal_activity.exchange_id)
    assert (activity.observation.record_kind, activity.observation.outcome) == ("activity", "capture_failed")

    assert observer_stack.stub is not None
    window = (
        await observer_stack.stub.GetIntegrity(pb.GetIntegrityRequest(agent_id=agent_id))
    ).integrity.all_time
    assert (window.total_traces, window.verified_traces, window.failed, window.activity) == (1, 0, 1, 1)


async def test_an_unfinished_tool_call_is_traced_as_not_executed(observer_stack: ObserverStack) -> None:
    _, agent_hash = await observer_stack.agent()
    cut = make_exchange(agent_hash, message(
        tool_use("read_file", {"path": "/etc/hosts"}),
        tool_use("delete_file", {"path": "/var/da"}),  # the gateway parsed the partial input
        stop_reason="max_tokens"))
    unparsed = make_exchange(agent_hash, message(
        {"type": "tool_use", "id": "toolu_unparsed", "name": "delete_file", "input": '{"path": "/var/d'},
        stop_reason="tool_use"))
    streamed = make_exchange(agent_hash, message(tool_use("delete_file", {"pa": 1}), stop_reason=None),
                             streamed=True)
    await observer_stack.ingest([cut, unparsed, streamed])
    grouped = await observer_stack.traces_by_exchange(
        [cut.exchange_id, unparsed.exchange_id, streamed.exchange_id]
    )

    finished, unfinished = grouped[cut.exchange_id]
    assert (finished.action.type, finished.action.name) == ("execute", "read_file")
    assert not finished.observation.HasField("executed")
    for trace in (unfinished, *grouped[unparsed.exchange_id], *grouped[streamed.exchange_id]):
        assert (trace.action.type, trace.action.name) == ("recommend", "delete_file"), (
            trace.observation.missing
        )
        assert trace.observation.HasField("executed") and trace.observation.executed is False
        assert trace.context.metadata["tool_call_finished"] is False
        assert any("not executed" in note for note in trace.observation.missing)
    assert any("max_tokens" in note for note in unfinished.observation.missing)
    assert any("stream ended" in note for note in grouped[streamed.exchange_id][0].observation.missing)


EXACT = {"big": 1234567890123456789, "int": 5, "float": 5.0, "half": -0.5, "huge": 10**30,
         "beyond_double": 10**400, "nested": {"list": [1, 2.0, 3, 1e-7], "flag": True, "none": None}}


async def test_json_values_keep_their_exact_type_and_value_over_grpc(observer_stack: ObserverStack) -> None:
    _, agent_hash = await observer_stack.agent()
    exchange = make_exchange(
        agent_hash, json.dumps(message(tool_use("transfer", EXACT), stop_reason="tool_use")).encode()
    )
    await observer_stack.ingest([exchange])
    (listed,) = await observer_stack.traces_of(exchange.exchange_id)
    assert observer_stack.stub is not None
    got = (await observer_stack.stub.GetTrace(pb.GetTraceRequest(trace_id=listed.trace_id))).trace
    for trace in (listed, got):
        parameters = json.loads(trace.action.parameters_json)
        assert parameters == EXACT
        assert type(parameters["int"]) is int and type(parameters["float"]) is float
        assert json.loads(trace.context.metadata_json)["decision_index"] == 0
        assert type(json.loads(trace.context.metadata_json)["decision_index"]) is int
        # The Struct beside it carries what a double can (the number beyond one as its text).
        assert trace.action.parameters["beyond_double"] == str(10**400)
