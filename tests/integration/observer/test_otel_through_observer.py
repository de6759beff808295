"""OTLP export and /metrics through a real Observer and Registry (SQLite and PostgreSQL): a processed
exchange reaches an in-process OTLP receiver as its GenAI span tree, with exact attributes;
processing it again sends the same ids; with the endpoint down every call is still traced, the
drops are counted in /metrics and logged once. /metrics is scraped with httpx and parsed with
prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from smoltbot.observer.otel.mapping import TurnKey, span_id_for, trace_id_for
from smoltbot.v1 import exchange_pb2
from tests.integration.observer.conftest import ObserverStack, free_port
from tests.integration.observer.exchanges import error_body, make_exchange, message, text, tool_use
from tests.integration.observer.test_usage_and_turns import CACHED_USAGE, SESSION, _call
from tests.integration.test_otel_export import Received, _attrs, _grpc_receiver, _http_receiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


async def scrape(url: str) -> dict[str, Any]:
    """The samples of a /metrics page by (name, sorted labels)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def _metrics_url(stack: ObserverStack) -> str:
    assert stack.observer is not None and stack.observer.components.metrics_endpoint is not None
    return stack.observer.components.metrics_endpoint.url


@pytest.fixture(params=["http/protobuf", "grpc"])
async def otlp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    received = Received()
    if request.param == "grpc":
        server, endpoint = await _grpc_receiver(received)
    else:
        runner, endpoint = await _http_receiver(received)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", request.param)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "observer-under-test")
    yield received
    if request.param == "grpc":
        await server.stop(None)
    else:
        await runner.cleanup()


def _tool_reply() -> dict[str, Any]:
    reply = message(text("Reading it."), tool_use("read_file", {"path": "a.py"}, "toolu_1"),
                    stop_reason="tool_use", model="claude-opus-4-8")
    reply["usage"] = CACHED_USAGE
    return reply


async def _exported_stack(stack: ObserverStack) -> None:
    await stack.stop_observer()
    await stack.start_observer(otel_export=True, observer_metrics_port=free_port(), otel_batch_size=8)


async def test_a_processed_exchange_arrives_as_its_span_tree(observer_stack: ObserverStack,
                                                             otlp: Received) -> None:
    await _exported_stack(observer_stack)
    agent_id, agent_hash = await observer_stack.agent()
    at = datetime.now(UTC) - timedelta(minutes=1)
    reply = _tool_reply()
    call = _call(agent_hash, [{"role": "user", "content": "Fix the failing test"}], reply, at)
    await observer_stack.ingest([call])
    (trace,) = (await observer_stack.traces_by_exchange([call.exchange_id], agent_id=agent_id))[
        call.exchange_id]
    await wait_until(lambda: len(otlp.all_spans()) >= 3, timeout=10)
    spans = otlp.spans()
    assert set(spans) == {"chat claude-opus-4-8", "execute_tool read_file", f"invoke_agent {agent_id}"}
    chat, tool, turn = (spans["chat claude-opus-4-8"], spans["execute_tool read_file"],
                        spans[f"invoke_agent {agent_id}"])
    key = TurnKey(agent_id, SESSION, 1)
    trace_id = trace_id_for(key, call.exchange_id).to_bytes(16, "big")
    assert {chat.trace_id, tool.trace_id, turn.trace_id} == {trace_id}
    assert chat.span_id == span_id_for("chat", call.exchange_id).to_bytes(8, "big")
    assert chat.parent_span_id == tool.parent_span_id == turn.span_id
    assert turn.parent_span_id == b""
    started = at - timedelta(milliseconds=900)
    assert chat.start_time_unix_nano == int(started.timestamp() * 1_000_000) * 1000
    assert chat.end_time_unix_nano == int(at.timestamp() * 1_000_000) * 1000
    assert _attrs(chat) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
        "gen_ai.agent.id": agent_id, "gen_ai.conversation.id": SESSION, "session.id": SESSION,
        "gen_ai.request.stream": False, "smoltbot.exchange_id": call.exchange_id,
        "gen_ai.request.model": "claude-opus-4-8", "gen_ai.response.model": "claude-opus-4-8",
        "gen_ai.response.id": reply["id"],
        "gen_ai.response.finish_reasons": ["tool_use"],
        "gen_ai.usage.input_tokens": 3 + 10000 + 2000, "gen_ai.usage.output_tokens": 150,
        "gen_ai.usage.cache_read.input_tokens": 10000, "gen_ai.usage.cache_creation.input_tokens": 2000,
        "smoltbot.outcome": "complete", "smoltbot.record_kind": "decision", "http.response.status_code": 200,
    }
    verdict = trace.verification
    assert _attrs(tool) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.agent.id": agent_id,
        "gen_ai.conversation.id": SESSION, "session.id": SESSION, "gen_ai.tool.name": "read_file",
        "gen_ai.tool.call.id": "toolu_1", "gen_ai.tool.type": "function",
        "smoltbot.exchange_id": call.exchange_id, "aap.trace_id": trace.trace_id,
        "aap.verified": verdict.verified, "aap.card_id": verdict.card_id,
        "aap.violation_types": [v.type for v in verdict.violations],
        "aap.escalation_required": trace.escalation.required, "aap.action_category": "bounded",
    }
    (event,) = tool.events
    assert event.name == "gen_ai.evaluation.result"
    assert _attrs(event)["gen_ai.evaluation.score.label"] == ("pass" if verdict.verified else "fail")
    assert _attrs(turn)["gen_ai.operation.name"] == "invoke_agent"
    assert _attrs(turn)["smoltbot.turn"] == 1
    resource = _attrs(otlp.requests[0].resource_spans[0].resource)
    assert resource["service.name"] == "observer-under-test"

    # Processed again (as after a lost lease): the same ids, so a backend keeps one span each.
    first_ids = sorted((span.trace_id, span.span_id) for span in otlp.all_spans())
    async with observer_stack.db.begin() as conn:
        await conn.execute(sa.text("INSERT INTO exchange_payloads (exchange_id, payload) "
                                   "VALUES (:e, :p)"),
                           {"e": call.exchange_id, "p": call.SerializeToString()})
        await conn.execute(sa.text("UPDATE exchanges SET state = 'pending', attempts = 0, "
                                   "lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = :now "
                                   "WHERE exchange_id = :e"),
                           {"e": call.exchange_id, "now": datetime.now(UTC) - timedelta(seconds=1)})
    await wait_until(lambda: len(otlp.all_spans()) >= 6, timeout=10)
    assert sorted((span.trace_id, span.span_id) for span in otlp.all_spans()) == sorted(first_ids * 2)

    # /metrics: the GenAI histograms of the exchanges processed (twice here), the export counters.
    samples = await scrape(_metrics_url(observer_stack))
    labels = (("gen_ai_operation_name", "chat"), ("gen_ai_provider_name", "anthropic"),
              ("gen_ai_response_model", "claude-opus-4-8"))
    assert samples[("gen_ai_client_token_usage_count", (*labels, ("gen_ai_token_type", "input")))] == 2
    assert samples[("gen_ai_client_token_usage_sum", (*labels, ("gen_ai_token_type", "output")))] == 300
    duration = tuple(sorted((*labels, ("error_type", ""))))
    assert samples[("gen_ai_client_operation_duration_seconds_count", duration)] == 2
    assert samples[("gen_ai_client_operation_duration_seconds_sum", duration)] == pytest.approx(1.8)
    assert samples[("smoltbot_otel_spans_submitted_total", ())] == 6
    assert samples[("smoltbot_otel_spans_exported_total", ())] == 6
    assert samples[("smoltbot_otel_spans_dropped_total", (("reason", "export_failed"),))] == 0
    assert samples[("smoltbot_otel_endpoint_up", ())] == 1
    assert samples[("smoltbot_observer_exchanges_processed_total", ())] == 2  # twice, as above
    assert samples[("smoltbot_observer_exchanges", (("state", "pending"),))] == 0
    assert samples[("smoltbot_observer_exchanges", (("state", "failed"),))] == 0


async def test_with_the_endpoint_down_every_call_is_still_traced(
        observer_stack: ObserverStack, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    await _exported_stack(observer_stack)
    agent_id, agent_hash = await observer_stack.agent()
    at = datetime.now(UTC) - timedelta(minutes=1)
    calls = [_call(agent_hash, [{"role": "user", "content": f"task {i}"}], _tool_reply(),
                   at + timedelta(seconds=i)) for i in range(3)]
    with caplog.at_level(logging.INFO):
        await observer_stack.ingest(calls)
        traced = await observer_stack.traces_by_exchange([c.exchange_id for c in calls], agent_id=agent_id)
        assert len(traced) == 3
        url = _metrics_url(observer_stack)

        async def all_dropped() -> bool:
            samples = await scrape(url)
            return samples[("smoltbot_otel_spans_dropped_total", (("reason", "export_failed"),))] == 9

        deadline = asyncio.get_running_loop().time() + 15
        while not await all_dropped():
            assert asyncio.get_running_loop().time() < deadline, "the drops were never counted"
            await asyncio.sleep(0.1)
    samples = await scrape(url)
    assert samples[("smoltbot_otel_spans_submitted_total", ())] == 9
    assert samples[("smoltbot_otel_spans_exported_total", ())] == 0
    assert samples[("smoltbot_otel_endpoint_up", ())] == 0
    down = [r for r in caplog.records if "is not taking spans" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING


async def test_a_bad_otlp_protocol_stops_the_observer_naming_the_fix(
        observer_stack: ObserverStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from smoltbot.observer.server import build_server

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    fix = r"OTEL_EXPORTER_OTLP_PROTOCOL='http/json'.*use one of http/protobuf, grpc"
    with pytest.raises(OSError, match=fix):
        await build_server(observer_stack.observer_settings.model_copy(update={"otel_export": True}),
                           address="127.0.0.1:0")


@pytest.mark.parametrize("otlp", ["http/protobuf"], indirect=True)
async def test_failures_minimal_records_and_activity_are_chat_spans_without_a_verdict(
        observer_stack: ObserverStack, otlp: Received) -> None:
    await _exported_stack(observer_stack)
    _, agent_hash = await observer_stack.agent()
    overloaded = make_exchange(agent_hash, error_body("overloaded_error", "Overloaded"), status=529,
                               outcome=exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR)
    minimal = make_exchange(agent_hash, None, request=b"")
    minimal.capture_failure = "response body could not be captured: decoder error"
    activity = make_exchange(agent_hash, b'{"data": []}')
    activity.request.method, activity.request.path, activity.request.body = "GET", "/v1/models", b""
    calls = [overloaded, minimal, activity]
    await observer_stack.ingest(calls)
    await observer_stack.wait_finished([c.exchange_id for c in calls])
    await wait_until(lambda: len(otlp.all_spans()) >= 6, timeout=10)
    chats = {_attrs(s)["smoltbot.exchange_id"]: s for s in otlp.all_spans()
             if _attrs(s)["gen_ai.operation.name"] == "chat"}
    assert set(chats) == {c.exchange_id for c in calls}
    assert [s for s in otlp.all_spans() if _attrs(s)["gen_ai.operation.name"] == "execute_tool"] == []
    for span in chats.values():
        assert not span.events and not any(key.startswith("aap.") for key in _attrs(span))
    assert _attrs(chats[overloaded.exchange_id])["error.type"] == "upstream_error"
    assert _attrs(chats[overloaded.exchange_id])["http.response.status_code"] == 529
    assert chats[overloaded.exchange_id].status.code == 2  # STATUS_CODE_ERROR
    assert _attrs(chats[minimal.exchange_id])["error.type"] == "capture_failed"
    assert "error.type" not in _attrs(chats[activity.exchange_id])
    assert _attrs(chats[activity.exchange_id])["smoltbot.record_kind"] == "activity"
    # No session or turn is known for these: each is a turn (a trace) of its own.
    assert len({s.trace_id for s in chats.values()}) == 3
    # The two model calls are GenAI operations in /metrics; the API activity is not.
    samples = await scrape(_metrics_url(observer_stack))
    durations = {dict(labels).get("error_type"): value for (name, labels), value in samples.items()
                 if name == "gen_ai_client_operation_duration_seconds_count"}
    assert durations == {"upstream_error": 1, "capture_failed": 1}
