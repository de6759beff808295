"""ObserverService over gRPC: converts protos to domain calls and back, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc

from smoltbot.core.errors import SmoltbotError, Unavailable, grpc_status_for
from smoltbot.core.grpc_server import grpc_errors
from smoltbot.core.protoconv import from_timestamp, to_timestamp
from smoltbot.observer.drift_store import DriftAlert
from smoltbot.observer.drift_watch import DriftWatch
from smoltbot.observer.intake import Intake
from smoltbot.observer.integrity import Integrity, IntegrityWindow
from smoltbot.observer.queries import Queries
from smoltbot.observer.retention import Retention
from smoltbot.observer.trace_proto import trace_to_proto
from smoltbot.observer.usage_convert import session_summary_to_proto, session_to_proto, usage_to_proto
from smoltbot.v1 import observer_service_pb2 as pb
from smoltbot.v1 import observer_service_pb2_grpc, trace_pb2

__all__ = ["ObserverServicer", "alert_to_proto", "integrity_to_proto"]

logger = logging.getLogger(__name__)

#: Requests read ahead of their acks per stream: the gateway's in-flight window is 1024.
_STREAM_WINDOW = 4096


def _window_to_proto(window: IntegrityWindow) -> trace_pb2.IntegrityWindow:
    message = trace_pb2.IntegrityWindow(
        total_traces=window.total_traces,
        verified_traces=window.verified_traces,
        violation_count=window.violation_count,
        violations_by_type=window.violations_by_type,
        with_reasoning=window.with_reasoning,
        with_model_analysis=window.with_model_analysis,
        failed=window.failed,
        activity=window.activity,
    )
    if window.score is not None:
        message.score = window.score
    return message


def integrity_to_proto(integrity: Integrity) -> trace_pb2.IntegrityScore:
    return trace_pb2.IntegrityScore(
        agent_id=integrity.agent_id,
        recent=_window_to_proto(integrity.recent),
        all_time=_window_to_proto(integrity.all_time),
        window_size=integrity.window_size,
        computed_at=to_timestamp(integrity.computed_at),
        timeline=[
            trace_pb2.IntegrityPoint(
                bucket_start=to_timestamp(point.bucket_start),
                total_traces=point.total_traces,
                verified_traces=point.verified_traces,
            )
            for point in integrity.timeline
        ],
        open_drift_alerts=integrity.open_drift_alerts,
    )


def alert_to_proto(alert: DriftAlert) -> trace_pb2.DriftAlert:
    message = trace_pb2.DriftAlert(
        alert_id=alert.alert_id,
        agent_id=alert.agent_id,
        card_id=alert.card_id,
        direction=alert.direction,
        severity=alert.severity,
        similarity_score=alert.similarity_score,
        sustained_traces=alert.sustained_traces,
        trace_ids=alert.trace_ids,
        reference=alert.reference,
        status=alert.status,
        created_at=to_timestamp(alert.created_at),
        updated_at=to_timestamp(alert.updated_at),
        analysis=alert.analysis,
        resolution=str(alert.details.get("resolution") or ""),
    )
    for field in ("acknowledged_at", "resolved_at"):
        when = _detail_time(alert.details.get(field))
        if when is not None:
            getattr(message, field).CopyFrom(to_timestamp(when))
    return message


def _detail_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class ObserverServicer(observer_service_pb2_grpc.ObserverServiceServicer):
    def __init__(self, intake: Intake, queries: Queries, drift: DriftWatch,
                 retention: Retention | None = None) -> None:
        self._intake = intake
        self._queries = queries
        self._drift = drift
        self._retention = retention

    async def Ingest(self, request_iterator: AsyncIterator[pb.IngestRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.IngestResponse]:
        # Reading runs ahead of acking, so the next batch gathers while this one is written.
        # One reply per request: a single exchange's ack, or a batch's acks (observer/intake.py).
        acks: asyncio.Queue[asyncio.Future[pb.IngestResponse] | None] = asyncio.Queue(_STREAM_WINDOW)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await acks.put(self._intake.answer(request))
            finally:
                await acks.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                future = await acks.get()
                if future is None:
                    break
                try:
                    reply = await future
                except SmoltbotError as error:
                    await context.abort_with_status(grpc_status_for(error))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("storing exchanges failed")
                    await context.abort(
                        grpc.StatusCode.INTERNAL, "could not store exchanges; see the server log"
                    )
                yield reply
            await reader  # surfaces a broken request stream
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            # Acks nobody will read (the stream ended): consume their outcome quietly.
            while not acks.empty():
                pending = acks.get_nowait()
                if pending is not None:
                    pending.add_done_callback(_consume)

    @grpc_errors
    async def ListTraces(
        self, request: pb.ListTracesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTracesResponse:
        traces, token = await self._queries.list_traces(
            agent_id=request.agent_id, session_id=request.session_id,
            verified=request.verified if request.HasField("verified") else None,
            since=from_timestamp(request, "since"), until=from_timestamp(request, "until"),
            size=request.page_size,
            token=request.page_token, order_by=request.order_by, record_kind=request.record_kind,
            provider=request.provider,
            enforcement=list(request.enforcement),
        )
        return pb.ListTracesResponse(
            traces=[trace_to_proto(trace) for trace in traces], next_page_token=token
        )

    @grpc_errors
    async def GetTrace(
        self, request: pb.GetTraceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTraceResponse:
        return pb.GetTraceResponse(trace=trace_to_proto(await self._queries.get_trace(request.trace_id)))

    @grpc_errors
    async def GetIntegrity(self, request: pb.GetIntegrityRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetIntegrityResponse:
        integrity = await self._queries.integrity(request.agent_id)
        response = pb.GetIntegrityResponse(integrity=integrity_to_proto(integrity),
                                           retention_deleted_traces=integrity.retention_deleted_traces)
        checked, intact = await self._queries.history_sessions(request.agent_id)
        response.integrity.history_sessions_checked = checked
        response.integrity.history_sessions_intact = intact
        if integrity.retained_since is not None:
            response.retained_since.CopyFrom(to_timestamp(integrity.retained_since))
        return response

    @grpc_errors
    async def ListDriftAlerts(self, request: pb.ListDriftAlertsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListDriftAlertsResponse:
        alerts, token = await self._drift.list_alerts(request.agent_id, request.page_size, request.page_token)
        return pb.ListDriftAlertsResponse(
            alerts=[alert_to_proto(alert) for alert in alerts], next_page_token=token
        )

    @grpc_errors
    async def AcknowledgeDriftAlert(self, request: pb.AcknowledgeDriftAlertRequest,
                                    context: grpc.aio.ServicerContext) -> pb.AcknowledgeDriftAlertResponse:
        alert = await self._drift.acknowledge(request.agent_id, request.agent_hash, request.alert_id)
        return pb.AcknowledgeDriftAlertResponse(alert=alert_to_proto(alert))

    @grpc_errors
    async def GetAgentUsage(self, request: pb.GetAgentUsageRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetAgentUsageResponse:
        since = from_timestamp(request, "since")
        until = from_timestamp(request, "until")
        total, groups, group_by = await self._queries.agent_usage(request.agent_id, since, until,
                                                                  request.group_by)
        return pb.GetAgentUsageResponse(
            agent_id=request.agent_id, group_by=group_by, total=usage_to_proto(total),
            groups=[pb.UsageGroup(key=key, usage=usage_to_proto(sums),
                                  turn_count=sums.turns if group_by == "session" else 0)
                    for key, sums in groups])

    @grpc_errors
    async def GetSessionUsage(self, request: pb.GetSessionUsageRequest,
                              context: grpc.aio.ServicerContext) -> pb.GetSessionUsageResponse:
        return session_to_proto(*await self._queries.session_usage(request.agent_id, request.session_id))

    @grpc_errors
    async def GetSessionsUsage(self, request: pb.GetSessionsUsageRequest,
                               context: grpc.aio.ServicerContext) -> pb.GetSessionsUsageResponse:
        found = await self._queries.sessions_usage(request.agent_id, list(request.session_ids))
        return pb.GetSessionsUsageResponse(agent_id=request.agent_id,
                                           sessions=[session_summary_to_proto(item) for item in found])

    @grpc_errors
    async def DeleteAgentData(self, request: pb.DeleteAgentDataRequest,
                              context: grpc.aio.ServicerContext) -> pb.DeleteAgentDataResponse:
        if self._retention is None:
            raise Unavailable("this observer cannot delete data")
        deleted = await self._retention.delete_agent(request.agent_id, request.agent_hash)
        return pb.DeleteAgentDataResponse(deleted_rows=deleted)

    @grpc_errors
    async def ReportToolExecution(self, request: pb.ReportToolExecutionRequest,
                                  context: grpc.aio.ServicerContext) -> pb.ReportToolExecutionResponse:
        await self._queries.report_tool_execution(request.agent_id, request.agent_hash, request.tool_use_id,
                                                  request.executed)
        return pb.ReportToolExecutionResponse()


def _consume(future: asyncio.Future[pb.IngestResponse]) -> None:
    if not future.cancelled():
        future.exception()
