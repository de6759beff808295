"""Exchanges of every kind, sent over a real Ingest stream, become the expected traces, read
back through ListTraces and GetTrace, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import aap
import sqlalchemy as sa
from google.protobuf import json_format

from smoltbot.v1 import exchange_pb2, trace_pb2
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.exchanges import (
    MODEL,
    error_body,
    make_exchange,
    message,
    redacted_thinking,
    request_body,
    text,
    thinking,
    tool_use,
)

SECRET = "sk-ant-api03-abcdefghijklmnop0123456789-SECRETVALUE"


def as_dict(trace: trace_pb2.ApTrace) -> dict[str, Any]:
    return json_format.MessageToDict(
        trace, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _cases(agent_hash: str) -> dict[str, tuple[exchange_pb2.Exchange, ...]]:
    """name -> (non-streamed, streamed) exchanges of that kind (one when only one exists)."""
    def both(response: dict[str, Any], **kwargs: Any) -> tuple[exchange_pb2.Exchange, ...]:
        return (make_exchange(agent_hash, response, **kwargs),
                make_exchange(agent_hash, response, streamed=True, **kwargs))

    giant = "Let me weigh this carefully. " * 110_000  # ~3.2 MB of thinking
    return {
        "thinking": both(
            message(
                thinking("The user wants a greeting. I will answer honestly."), text("Hello! How can I help?")
            )
        ),
        "redacted": both(message(redacted_thinking(), text("Done."))),
        "tags": both(
            message(
                text(
                    "<thinking>Option A: answer directly. Option B: ask a question. "
                    "I pick A.</thinking>The answer is 42."
                )
            )
        ),
        "tool": both(
            message(
                thinking("I should read the config file."),
                tool_use("read_file", {"path": "/etc/app.conf", "api_key": SECRET}),
                stop_reason="tool_use",
            )
        ),
        "tools": both(
            message(
                thinking("Read both files."),
                tool_use("read_file", {"path": "/a"}),
                tool_use("read_file", {"path": "/b"}),
                tool_use("delete_file", {"path": "/c"}),
                stop_reason="tool_use",
            )
        ),
        "rate_limited": (
            make_exchange(
                agent_hash,
                error_body("rate_limit_error", "Number of requests exceeded"),
                status=429,
                outcome=exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR,
            ),
        ),
        "overloaded": (
            make_exchange(
                agent_hash,
                error_body("overloaded_error", "Overloaded"),
                status=529,
                outcome=exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR,
            ),
        ),
        "mid_stream_error": (
            make_exchange(
                agent_hash,
                message(text("Partial ans"), stop_reason=None),
                streamed=True,
                outcome=exchange_pb2.EXCHANGE_OUTCOME_MID_STREAM_ERROR,
                stream_error=error_body("overloaded_error", "Overloaded"),
            ),
        ),
        "client_abort": (
            make_exchange(
                agent_hash,
                message(text("Half a rep"), stop_reason=None),
                streamed=True,
                outcome=exchange_pb2.EXCHANGE_OUTCOME_CLIENT_ABORT,
                outcome_detail="client disconnected after 3 events",
            ),
        ),
        "truncated": (
            make_exchange(
                agent_hash, message(text("<thinking>Cut off mid-th"), stop_reason=None), streamed=True
            ),
        ),
        "unknown_block": both(message(text("Here."), {"type": "hologram", "data": "???"})),
        "giant_thinking": (make_exchange(agent_hash, message(thinking(giant), text("Decided."))),),
        "no_content": both(message()),
        "unreachable": (
            make_exchange(
                agent_hash,
                None,
                status=0,
                outcome=exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE,
                outcome_detail="connect timeout",
            ),
        ),
    }


async def test_exchanges_of_every_kind_become_the_expected_traces(observer_stack: ObserverStack) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    cases = _cases(agent_hash)
    sent = [exchange for group in cases.values() for exchange in group]
    acks = await observer_stack.ingest(sent)
    assert [ack.status for ack in acks] == [pb.INGEST_STATUS_ACCEPTED] * len(sent)
    assert [ack.exchange_id for ack in acks] == [exchange.exchange_id for exchange in sent]

    by_exchange = await observer_stack.traces_by_exchange([exchange.exchange_id for exchange in sent],
                                                          agent_id=agent_id)
    traces = {
        name: [by_exchange[exchange.exchange_id] for exchange in group] for name, group in cases.items()
    }

    for name, runs in traces.items():
        for exchange, found in zip(cases[name], runs, strict=True):
            assert found, name
            for index, trace in enumerate(found):
                # Every trace: AAP-valid, linked, carrying its exchange and its verification.
                data = as_dict(trace)
                aap.APTrace.from_dict(data)
                assert trace.trace_id == f"tr-{exchange.exchange_id}-{index}"
                assert trace.agent_id == agent_id
                assert trace.context.metadata["exchange_id"] == exchange.exchange_id
                assert list(trace.context.prior_trace_ids) == ([f"tr-{exchange.exchange_id}-{index - 1}"]
                                                               if index else [])
                assert trace.context.session_id, "the session is resolved when the gateway left it empty"
                assert trace.verification.verified, (name, list(trace.verification.violations))
                assert trace.observation.streamed == exchange.response.streamed
                assert trace.observation.http_status == exchange.response.status
                assert "OLD-TURN-THINKING" not in trace.observation.reasoning.text
                assert trace.action.name != MODEL
                fetched = (
                    await observer_stack.stub.GetTrace(pb.GetTraceRequest(trace_id=trace.trace_id))
                ).trace
                assert fetched == trace

    def only(name: str, run: int = 0) -> trace_pb2.ApTrace:
        found = traces[name][run]
        assert len(found) == 1, name
        return found[0]

    # The rows as stored, not only as served, are AAP traces.
    async with observer_stack.db.read() as conn:
        stored = (await conn.execute(sa.text("SELECT trace_json FROM traces"))).scalars().all()
    assert len(stored) == sum(len(found) for runs in traces.values() for found in runs)
    for text_ in stored:
        aap.APTrace.from_dict(json.loads(text_))

    for run in (0, 1):
        reply = only("thinking", run)
        assert (reply.action.type, reply.action.name) == ("recommend", "respond")
        assert reply.observation.model == MODEL
        assert reply.observation.outcome == "complete"
        assert reply.observation.reasoning.present and reply.observation.reasoning.source == "thinking"
        assert reply.observation.reasoning.signature_present
        assert reply.observation.analyzer == "local"

        hidden = only("redacted", run)
        assert hidden.observation.reasoning.redacted_blocks == 1
        assert "redacted_thinking" in hidden.observation.reasoning.source
        assert not hidden.observation.reasoning.present

        tagged = only("tags", run)
        assert tagged.observation.reasoning.source == "tags" and tagged.observation.reasoning.present
        assert len(tagged.decision.alternatives_considered) >= 2

        tool = only("tool", run)
        assert (tool.action.type, tool.action.name) == ("execute", "read_file")
        assert tool.action.parameters["path"] == "/etc/app.conf"
        assert SECRET not in str(as_dict(tool)), "secrets in tool input are redacted"
        assert tool.action.target.identifier == "/etc/app.conf"
        assert tool.observation.tool_use_id.startswith("toolu_")

        several = traces["tools"][run]
        assert [t.action.name for t in several] == ["read_file", "read_file", "delete_file"]
        assert {t.context.metadata["exchange_id"] for t in several} == {cases["tools"][run].exchange_id}

        unknown = only("unknown_block", run)
        assert any("hologram" in item for item in unknown.observation.missing)

        empty = only("no_content", run)
        assert any("no content" in item for item in empty.observation.missing)

    for name, status, error_type in (
        ("rate_limited", 429, "rate_limit_error"),
        ("overloaded", 529, "overloaded_error"),
    ):
        failed = only(name)
        assert failed.observation.outcome == "upstream_error" and failed.action.name == "upstream_error"
        assert failed.observation.http_status == status
        assert failed.action.parameters["error_type"] == error_type

    assert only("mid_stream_error").observation.outcome == "mid_stream_error"
    assert only("mid_stream_error").action.parameters["error_type"] == "overloaded_error"
    abort = only("client_abort")
    assert abort.observation.outcome == "client_abort"
    assert abort.observation.outcome_detail == "client disconnected after 3 events"
    assert any("truncated" in item for item in only("truncated").observation.missing)
    assert only("unreachable").observation.outcome == "upstream_unreachable"
    giant = only("giant_thinking")
    assert giant.observation.reasoning.chars > 3_000_000
    assert len(giant.observation.reasoning.excerpt) < 1000


async def test_request_history_is_never_read_as_this_turns_reasoning(observer_stack: ObserverStack) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    exchange = make_exchange(
        agent_hash, message(text("Both files listed.")), request=request_body(history=True)
    )
    await observer_stack.ingest([exchange])
    (trace,) = await observer_stack.traces_of(exchange.exchange_id, agent_id=agent_id)
    assert not trace.observation.reasoning.present
    assert trace.observation.reasoning.source == "none"
