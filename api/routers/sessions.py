"""/v1/sessions: session events reported by agent plugins, and an agent's sessions."""

from __future__ import annotations

from fastapi import APIRouter

from smoltbot.api.convert import session_out
from smoltbot.api.dependencies import AgentIdPath, CallerHash, Cursor, Limit, Registry, require_owner
from smoltbot.api.errors import READ_ERRORS, WRITE_ERRORS
from smoltbot.api.schemas import Session, SessionList, SessionReport
from smoltbot.api.strict_json import StrictJsonRoute
from smoltbot.core.protoconv import to_timestamp
from smoltbot.v1 import agent_pb2, registry_service_pb2

__all__ = ["router"]

router = APIRouter(tags=["sessions"], responses=READ_ERRORS, route_class=StrictJsonRoute)

_EVENTS = {
    "started": agent_pb2.SESSION_EVENT_STARTED,
    "turn": agent_pb2.SESSION_EVENT_TURN,
    "ended": agent_pb2.SESSION_EVENT_ENDED,
}


@router.post("/v1/sessions", response_model=Session, responses=WRITE_ERRORS,
             summary="Report a session start, turn or end (agent plugins)")
async def report_session_event(report: SessionReport, registry: Registry, caller_hash: CallerHash) -> Session:
    require_owner(report.agent_id, caller_hash)
    request = registry_service_pb2.ReportSessionEventRequest(
        agent_id=report.agent_id, agent_hash=caller_hash, session_id=report.session_id,
        event=_EVENTS[report.event],
    )
    if report.turn_count is not None:
        request.turn_count = report.turn_count
    if report.occurred_at is not None:
        request.occurred_at.CopyFrom(to_timestamp(report.occurred_at, "occurred_at"))
    response = await registry.ReportSessionEvent(request)
    return session_out(response.session)


@router.get(
    "/v1/agents/{agent_id}/sessions", response_model=SessionList, summary="Sessions, most recent first"
)
async def list_sessions(
    agent_id: AgentIdPath, registry: Registry, limit: Limit = 50, cursor: Cursor = None
) -> SessionList:
    response = await registry.ListSessions(registry_service_pb2.ListSessionsRequest(
        agent_id=agent_id, page_size=limit, page_token=cursor or ""))
    return SessionList(items=[session_out(session) for session in response.sessions],
                       next_cursor=response.next_page_token or None)
