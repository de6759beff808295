"""Reads that several pages need, shared by the /v1 routers and the dashboard, so that no
router imports another."""

from __future__ import annotations

from datetime import datetime

import grpc

from smoltbot.api.backends import ObserverStub
from smoltbot.api.convert import trace_out
from smoltbot.api.errors import BackendError
from smoltbot.api.schemas import TraceList
from smoltbot.core.protoconv import to_timestamp
from smoltbot.v1 import observer_service_pb2

__all__ = ["ORDERS", "list_trace_page", "trace_count"]

#: `order` values and the observer's order_by for each.
ORDERS = {"desc": "timestamp desc", "asc": "timestamp asc"}


async def trace_count(observer: ObserverStub, agent_id: str) -> int:
    """All-time traces of an agent; 0 for an agent the observer has not seen yet."""
    try:
        response = await observer.GetIntegrity(observer_service_pb2.GetIntegrityRequest(agent_id=agent_id))
    except BackendError as error:
        if error.code is grpc.StatusCode.NOT_FOUND:
            return 0
        raise
    return int(response.integrity.all_time.total_traces)


async def list_trace_page(observer: ObserverStub, *, agent_id: str = "", session_id: str | None = None,
                          verified: bool | None = None, since: datetime | None = None,
                          until: datetime | None = None, limit: int = 50, cursor: str | None = None,
                          order: str = "desc", record_kind: str | None = None,
                          provider: str | None = None,
                          enforcement: list[str] | None = None) -> TraceList:
    """One page of traces, filtered as the /v1/traces parameters say."""
    request = observer_service_pb2.ListTracesRequest(
        agent_id=agent_id, session_id=session_id or "", page_size=limit, page_token=cursor or "",
        order_by=ORDERS[order], record_kind=record_kind or "", provider=provider or "",
    )
    if verified is not None:
        request.verified = verified
    request.enforcement.extend(enforcement or ())
    if since is not None:
        request.since.CopyFrom(to_timestamp(since, "since"))
    if until is not None:
        request.until.CopyFrom(to_timestamp(until, "until"))
    response = await observer.ListTraces(request)
    return TraceList(items=[trace_out(trace) for trace in response.traces],
                     next_cursor=response.next_page_token or None)
