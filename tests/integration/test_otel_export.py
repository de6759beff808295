"""OTLP export of GenAI spans to real in-process receivers, over gRPC and over HTTP (protobuf).

The receivers are the OTLP collector contract itself: a gRPC server implementing
opentelemetry.proto.collector.trace.v1.TraceService, and an aiohttp endpoint at /v1/traces
decoding ExportTraceServiceRequest. (Arize Phoenix as a real backend is not installed here.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from smoltbot.core.usage import TokenUsage
from smoltbot.observer.otel.exporter import SpanShipper, resource_from_environment
from smoltbot.observer.otel.mapping import (
    ExchangeExport,
    ToolCallExport,
    TurnKey,
    Verdict,
    exchange_spans,
    turn_span,
)
from tests.support.waiting import wait_until

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Received:
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []

    def spans(self) -> dict[str, object]:
        return {span.name: span for request in self.requests for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans for span in scope_spans.spans}

    def all_spans(self) -> list:
        return [span for request in self.requests for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans for span in scope_spans.spans]


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    async def Export(self, request, context):
        self.received.requests.append(request)
        self.received.headers.append({key: value for key, value in context.invocation_metadata()})
        return trace_service_pb2.ExportTraceServiceResponse()


async def _grpc_receiver(received: Received) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"http://127.0.0.1:{port}"


async def _http_receiver(received: Received) -> tuple[web.AppRunner, str]:
    async def traces(request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.requests.append(message)
        received.headers.append({key.lower(): value for key, value in request.headers.items()})
        body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture(params=["grpc", "http/protobuf"])
async def receiver(request, monkeypatch) -> AsyncIterator[Received]:
    received = Received()
    if request.param == "grpc":
        server, endpoint = await _grpc_receiver(received)
    else:
        runner, endpoint = await _http_receiver(received)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", request.param)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team-key=team%20one")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "observer-under-test")
    yield received
    if request.param == "grpc":
        await server.stop(None)
    else:
        await runner.cleanup()


def _exchange() -> ExchangeExport:
    return ExchangeExport(
        exchange_id="ex-42", turn=TurnKey("smolt-abc123", "sess-1", 2), provider="anthropic",
        request_model="claude-sonnet-4-5", response_model="claude-sonnet-4-5-20250929", started_at=T0,
        ended_at=T0 + timedelta(seconds=1), first_byte_at=T0 + timedelta(milliseconds=200), streamed=True,
        finish_reasons=("tool_use",),
        usage=TokenUsage(provider="anthropic", input=10, cache_read=90, cache_write_1h=5, output=20),
        tool_calls=(ToolCallExport(name="Bash", call_id="toolu_9", trace_id="tr-ex-42-0",
                                   verdict=Verdict(False, "card-1", ("forbidden_action",), "bounded",
                                                   True)),),
    )


def _attrs(span) -> dict[str, object]:
    def value(any_value: AnyValue) -> object:
        kind = any_value.WhichOneof("value")
        if kind == "array_value":
            return [value(v) for v in any_value.array_value.values]
        return getattr(any_value, kind)
    return {kv.key: value(kv.value) for kv in span.attributes}


def _shipper() -> SpanShipper:
    return SpanShipper.from_environment(max_queue=64, max_batch=16)


async def _flush(shipper: SpanShipper) -> None:
    assert await asyncio.to_thread(shipper.flush, 10.0)


async def test_the_span_tree_arrives_with_exact_ids_parents_and_attributes(receiver: Received) -> None:
    resource = resource_from_environment()
    spans = [*exchange_spans(_exchange(), resource=resource), turn_span([_exchange()], resource=resource)]
    shipper = _shipper()
    try:
        assert shipper.submit(spans) == 3
        await wait_until(lambda: len(receiver.all_spans()) == 3, what="three spans at the receiver")
        await _flush(shipper)
    finally:
        await asyncio.to_thread(shipper.close, 5.0)
    got = receiver.spans()
    agent, chat = got["invoke_agent smolt-abc123"], got["chat claude-sonnet-4-5"]
    tool = got["execute_tool Bash"]
    by_name = {span.name: span for span in spans}
    for name, span in got.items():
        sent = by_name[name]
        assert span.trace_id == sent.context.trace_id.to_bytes(16, "big")
        assert span.span_id == sent.context.span_id.to_bytes(8, "big")
    assert agent.parent_span_id == b""
    assert chat.parent_span_id == agent.span_id and tool.parent_span_id == agent.span_id
    assert chat.kind == chat.SPAN_KIND_CLIENT and tool.kind == tool.SPAN_KIND_INTERNAL
    chat_attrs = _attrs(chat)
    assert chat_attrs["gen_ai.operation.name"] == "chat"
    assert chat_attrs["gen_ai.provider.name"] == "anthropic"
    assert chat_attrs["gen_ai.conversation.id"] == "sess-1" and chat_attrs["session.id"] == "sess-1"
    assert chat_attrs["gen_ai.usage.input_tokens"] == 105
    assert chat_attrs["gen_ai.usage.cache_read.input_tokens"] == 90
    assert chat_attrs["gen_ai.usage.cache_creation.input_tokens"] == 5
    assert chat_attrs["gen_ai.usage.output_tokens"] == 20
    assert chat_attrs["gen_ai.response.finish_reasons"] == ["tool_use"]
    assert chat_attrs["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.2)
    tool_attrs = _attrs(tool)
    assert [tool_attrs[f"gen_ai.tool.{key}"] for key in ("name", "call.id", "type")] == \
        ["Bash", "toolu_9", "function"]
    assert tool_attrs["aap.verified"] is False and tool_attrs["aap.escalation_required"] is True
    assert tool_attrs["aap.violation_types"] == ["forbidden_action"]
    [event] = tool.events
    assert event.name == "gen_ai.evaluation.result"
    assert _attrs(event)["gen_ai.evaluation.score.label"] == "fail"
    # The resource and the headers come from the standard variables.
    resource_attrs = _attrs(receiver.requests[0].resource_spans[0].resource)
    assert resource_attrs["service.name"] == "observer-under-test"
    assert receiver.headers[0]["x-team-key"] == "team one"


async def test_exporting_an_exchange_again_sends_the_same_span_ids(receiver: Received) -> None:
    resource = resource_from_environment()
    shipper = _shipper()
    try:
        shipper.submit(exchange_spans(_exchange(), resource=resource))
        shipper.submit(exchange_spans(_exchange(), resource=resource))
        await wait_until(lambda: len(receiver.all_spans()) == 4, what="both exports at the receiver")
    finally:
        await asyncio.to_thread(shipper.close, 5.0)
    ids = [(span.trace_id, span.span_id) for span in receiver.all_spans()]
    assert len(set(ids)) == 2
    assert shipper.stats.exported == 4 and shipper.stats.dropped == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_with_the_endpoint_down_spans_are_dropped_and_counted_without_blocking(
        protocol, monkeypatch, caplog) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # seconds, as the Python SDK reads it
    caplog.set_level(logging.DEBUG)
    resource = resource_from_environment()
    shipper = SpanShipper.from_environment(max_queue=4, max_batch=2)
    try:
        began = time.monotonic()
        taken = sum(shipper.submit(exchange_spans(_exchange(), resource=resource)) for _ in range(20))
        assert time.monotonic() - began < 0.5, "submit must not wait for the endpoint"
        assert 0 < taken < 40
        await _flush(shipper)
        stats = shipper.stats
    finally:
        await asyncio.to_thread(shipper.close, 5.0)
    assert stats.submitted == 40 and stats.exported == 0
    assert stats.dropped == 40 and stats.dropped_queue_full == 40 - taken
    assert stats.dropped_export_failed == taken and stats.endpoint_down
    ours = [r for r in caplog.records
            if r.name == "smoltbot.observer.otel.exporter" and r.levelno >= logging.WARNING]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert "is not taking spans" in ours[0].getMessage()
    sdk_lines = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")
                 and r.levelno >= logging.WARNING]
    assert sdk_lines == []


async def test_the_endpoint_coming_back_is_logged_once_and_spans_flow_again(monkeypatch, caplog) -> None:
    received = Received()
    server, endpoint = await _grpc_receiver(received)
    port = int(endpoint.rsplit(":", 1)[1])
    await server.stop(None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    caplog.set_level(logging.INFO, logger="smoltbot.observer.otel.exporter")
    resource = resource_from_environment()
    shipper = SpanShipper.from_environment(max_queue=64, max_batch=16)
    try:
        shipper.submit(exchange_spans(_exchange(), resource=resource))
        await _flush(shipper)
        assert shipper.stats.endpoint_down
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(received), server)
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        await server.start()

        async def exported_again() -> bool:
            # gRPC's reconnect backoff may refuse a batch or two after the restart: keep offering.
            if shipper.stats.queued == 0:
                shipper.submit(exchange_spans(_exchange(), resource=resource))
            await asyncio.sleep(0.05)
            return shipper.stats.exported > 0

        await wait_until(exported_again, timeout=20, what="export after recovery")
    finally:
        await asyncio.to_thread(shipper.close, 5.0)
        await server.stop(None)
    messages = [r.getMessage() for r in caplog.records if r.name == "smoltbot.observer.otel.exporter"]
    assert sum("is not taking spans" in m for m in messages) == 1
    assert sum("takes spans again" in m for m in messages) == 1
