"""/v1/traces: AAP decision traces and API activity records, filtered and paginated; tool executions
reported by plugins."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from smoltbot.api.convert import trace_out
from smoltbot.api.dependencies import (
    AgentIdPath,
    CallerHash,
    Cursor,
    Limit,
    Observer,
    TraceIdPath,
    require_owner,
)
from smoltbot.api.errors import READ_ERRORS, WRITE_ERRORS
from smoltbot.api.reads import list_trace_page
from smoltbot.api.schemas import DateTime, ToolExecution, ToolExecutionReport, Trace, TraceList
from smoltbot.core.ids import AGENT_ID_PATTERN, MAX_SESSION_ID_LENGTH, SESSION_ID_PATTERN
from smoltbot.v1 import observer_service_pb2

__all__ = ["router"]

router = APIRouter(tags=["traces"], responses=READ_ERRORS)

Order = Annotated[
    Literal["desc", "asc"], Query(description="By timestamp: newest first (desc) or oldest first.")
]
SessionFilter = Annotated[str | None, Query(pattern=SESSION_ID_PATTERN, max_length=MAX_SESSION_ID_LENGTH,
                                            description="Only traces of this session.")]
VerifiedFilter = Annotated[bool | None, Query(description="Only traces that passed (true) or failed (false) "
                                                          "verification.")]
Since = Annotated[DateTime | None, Query(description="Only traces at or after this time (RFC 3339).")]
Until = Annotated[DateTime | None, Query(description="Only traces before this time (RFC 3339).")]
KindFilter = Annotated[Literal["decision", "activity"] | None, Query(
    description="Only decisions (model calls) or only API activity (other calls); both when absent.")]
ProviderFilter = Annotated[Literal["anthropic", "openai", "gemini"] | None, Query(
    description="Only calls to this provider; all when absent.")]
EnforcementFilter = Annotated[
    list[Literal["allowed", "blocked", "escalated", "nudged", "not_enforced"]] | None, Query(
        description="Only traces on which the gateway did one of these (repeat the parameter for several); "
                    "with verified=false, enforcement=allowed&enforcement=nudged&enforcement=not_enforced "
                    "lists what the card said no to and went through (docs/enforce.md).")]


@router.get("/v1/traces", response_model=TraceList, response_model_exclude_unset=True,
            summary="Traces, newest first, filtered")
async def list_traces(
    observer: Observer,
    agent_id: Annotated[
        str | None, Query(pattern=AGENT_ID_PATTERN, description="Only this agent's traces.")
    ] = None,
    session_id: SessionFilter = None,
    verified: VerifiedFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Order = "desc",
    record_kind: KindFilter = None,
    provider: ProviderFilter = None,
    enforcement: EnforcementFilter = None,
) -> TraceList:
    return await list_trace_page(observer, agent_id=agent_id or "", session_id=session_id, verified=verified,
                                 since=since, until=until, limit=limit, cursor=cursor, order=order,
                                 record_kind=record_kind, provider=provider,
                                 enforcement=list(enforcement or ()))


@router.get("/v1/traces/{trace_id}", response_model=Trace, response_model_exclude_unset=True,
            summary="One trace")
async def get_trace(trace_id: TraceIdPath, observer: Observer) -> Trace:
    response = await observer.GetTrace(observer_service_pb2.GetTraceRequest(trace_id=trace_id))
    return trace_out(response.trace)


@router.get("/v1/agents/{agent_id}/traces", response_model=TraceList, response_model_exclude_unset=True,
            summary="An agent's traces, newest first")
async def list_agent_traces(
    agent_id: AgentIdPath,
    observer: Observer,
    session_id: SessionFilter = None,
    verified: VerifiedFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Order = "desc",
    record_kind: KindFilter = None,
    provider: ProviderFilter = None,
    enforcement: EnforcementFilter = None,
) -> TraceList:
    return await list_trace_page(observer, agent_id=agent_id, session_id=session_id, verified=verified,
                                 since=since, until=until, limit=limit, cursor=cursor, order=order,
                                 record_kind=record_kind, provider=provider,
                                 enforcement=list(enforcement or ()))


@router.post("/v1/tool-executions", response_model=ToolExecution, responses=WRITE_ERRORS,
             tags=["traces"], summary="Report that the agent executed a tool call")
async def report_tool_execution(body: ToolExecutionReport, observer: Observer,
                                caller_hash: CallerHash) -> ToolExecution:
    """From an agent plugin: marks the trace of that tool_use block as executed (or not)."""
    require_owner(body.agent_id, caller_hash)
    await observer.ReportToolExecution(observer_service_pb2.ReportToolExecutionRequest(
        agent_id=body.agent_id, agent_hash=caller_hash, tool_use_id=body.tool_use_id, executed=body.executed))
    return ToolExecution(agent_id=body.agent_id, tool_use_id=body.tool_use_id, executed=body.executed)
