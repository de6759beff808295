"""Tokens, cost, turns and sub-agents: one session in full, and an agent's usage over time."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from smoltbot.api.convert import agent_usage_out, session_detail_out, sessions_usage_out
from smoltbot.api.dependencies import AgentIdPath, Observer, SessionIdPath
from smoltbot.api.errors import READ_ERRORS
from smoltbot.api.schemas import AgentUsage, DateTime, SessionDetail, SessionsUsage
from smoltbot.core.ids import AGENT_ID_PATTERN
from smoltbot.core.protoconv import to_timestamp
from smoltbot.v1 import observer_service_pb2

__all__ = ["router"]

router = APIRouter(tags=["usage"], responses=READ_ERRORS)

GroupBy = Annotated[Literal["day", "model", "session"],
                    Query(description="Group by UTC day, model or session.")]


@router.get("/v1/sessions/{session_id}", response_model=SessionDetail,
            summary="One session: its turns, sub-agents, tokens, cost and integrity")
async def get_session(
    session_id: SessionIdPath, observer: Observer,
    agent_id: Annotated[str | None, Query(
        pattern=AGENT_ID_PATTERN,
        description="The agent whose session it is; needed only when several agents have one of this id.",
    )] = None,
) -> SessionDetail:
    """Tokens per part (prompt caching apart), exact cost with the calls of unknown cost counted
    apart, the turns in order, the sub-agents (with their parent) rolled up into the total."""
    response = await observer.GetSessionUsage(observer_service_pb2.GetSessionUsageRequest(
        agent_id=agent_id or "", session_id=session_id))
    return session_detail_out(response)


@router.get("/v1/agents/{agent_id}/usage/sessions", response_model=SessionsUsage,
            summary="Several sessions' tokens, cost, turn count and integrity at once")
async def get_sessions_usage(
    agent_id: AgentIdPath, observer: Observer,
    session_id: Annotated[list[str], Query(
        description="A session of the agent; repeat for each (at most 100: the Observer's bound, "
                    "a 400 naming `session_id` past it).",
    )],
) -> SessionsUsage:
    """The totals of a page of sessions (e.g. those `GET /v1/agents/{agent_id}/sessions` lists) in one
    read; `GET /v1/sessions/{session_id}` has each one's turns, sub-agents and history."""
    response = await observer.GetSessionsUsage(observer_service_pb2.GetSessionsUsageRequest(
        agent_id=agent_id, session_ids=session_id))
    return sessions_usage_out(response)


@router.get("/v1/agents/{agent_id}/usage", response_model=AgentUsage,
            summary="An agent's tokens and cost, grouped by day, model or session")
async def get_agent_usage(
    agent_id: AgentIdPath, observer: Observer,
    since: Annotated[DateTime | None, Query(description="Calls at or after this time (RFC 3339).")] = None,
    until: Annotated[DateTime | None, Query(description="Calls before this time (RFC 3339).")] = None,
    group_by: GroupBy = "day",
) -> AgentUsage:
    request = observer_service_pb2.GetAgentUsageRequest(agent_id=agent_id, group_by=group_by)
    if since is not None:
        request.since.CopyFrom(to_timestamp(since, "since"))
    if until is not None:
        request.until.CopyFrom(to_timestamp(until, "until"))
    return agent_usage_out(await observer.GetAgentUsage(request), since, until)
