"""The dashboard: server-rendered pages over the same backends as /v1 (what they show of a
trace, and the templates' filters, are in `smoltbot.api.dashboard_views`).

`/agents/{id}` renders everything once; its script then polls `/v1/agents/{id}` and, when the
agent has new traces or activity, swaps in `/agents/{id}/live` (the same sections, rendered by
the same templates), so there is one rendering of each section, not a Jinja one and a JS one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from smoltbot.api.alert_schemas import delivery_out, subscription_out
from smoltbot.api.backends import AlertStub, Backends, ObserverStub, RegistryStub
from smoltbot.api.convert import (
    agent_summary,
    card_out,
    drift_alert_out,
    integrity_out,
    session_detail_out,
    session_out,
    trace_out,
    usage_totals_out,
)
from smoltbot.api.dashboard_views import session_view, trace_view
from smoltbot.api.dependencies import (
    AgentIdPath,
    Cursor,
    Observer,
    Registry,
    SessionIdPath,
    TraceIdPath,
    get_backends,
)
from smoltbot.api.errors import BackendError
from smoltbot.api.reads import list_trace_page, trace_count
from smoltbot.api.schemas import Agent, AgentSummary, Card, DriftAlert, Integrity, Session, Trace, UsageGroup
from smoltbot.core.errors import NotFound
from smoltbot.v1 import alert_service_pb2, observer_service_pb2, registry_service_pb2

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

T = TypeVar("T")
_RECENT_TRACES = 25
#: A session page shows at most this many pages of 1000 traces (and says so when there are more).
_SESSION_PAGES = 5


# --------------------------------------------------------------------------- data

async def _optional(call: Awaitable[T]) -> T | None:
    """A section's data, or None when the backend has none (404) or is down: the page still
    renders the other sections, and says which could not be loaded."""
    try:
        return await call
    except BackendError as error:
        if error.code is not grpc.StatusCode.NOT_FOUND:
            logger.info("dashboard section unavailable: %s", error)
        return None


async def _agent_or_404(registry: RegistryStub, observer: ObserverStub, agent_id: str) -> Agent:
    try:
        response, count = await asyncio.gather(
            registry.GetAgent(registry_service_pb2.GetAgentRequest(agent_id=agent_id)),
            _optional(trace_count(observer, agent_id)),
        )
    except BackendError as error:
        if error.code is grpc.StatusCode.NOT_FOUND:
            raise NotFound(
                f"No agent called {agent_id} has been seen here. Agents appear after their first "
                "call through the gateway, or after smoltbot init.",
                reason="AGENT_NOT_FOUND",
            ) from None
        raise
    return Agent(**agent_summary(response.agent).model_dump(), trace_count=count or 0)


async def _webhooks(alerts: AlertStub, agent_id: str) -> dict[str, Any]:
    """The agent's webhooks as anyone may see them: each subscription's destination host (never
    its URL, which may hold a token) and events, and the recent deliveries."""
    subscriptions, deliveries = await asyncio.gather(
        alerts.ListAlertSubscriptions(
            alert_service_pb2.ListAlertSubscriptionsRequest(agent_id=agent_id, page_size=20)),
        alerts.ListAlertDeliveries(
            alert_service_pb2.ListAlertDeliveriesRequest(agent_id=agent_id, page_size=10)))
    return {"subscriptions": [subscription_out(item) for item in subscriptions.subscriptions],
            "deliveries": [delivery_out(item) for item in deliveries.deliveries]}


async def _agent_sections(registry: RegistryStub, observer: ObserverStub, agent_id: str,
                          cursor: str | None = None, webhook_stub: AlertStub | None = None) -> dict[str, Any]:
    async def integrity() -> Integrity:
        response = await observer.GetIntegrity(observer_service_pb2.GetIntegrityRequest(agent_id=agent_id))
        return integrity_out(response.integrity)

    async def drift() -> list[DriftAlert]:
        response = await observer.ListDriftAlerts(
            observer_service_pb2.ListDriftAlertsRequest(agent_id=agent_id, page_size=10))
        return [drift_alert_out(alert) for alert in response.alerts]

    async def sessions() -> list[Session]:
        response = await registry.ListSessions(
            registry_service_pb2.ListSessionsRequest(agent_id=agent_id, page_size=10))
        return [session_out(session) for session in response.sessions]

    async def sessions_usage(session_ids: list[str]) -> dict[str, UsageGroup]:
        response = await observer.GetSessionsUsage(
            observer_service_pb2.GetSessionsUsageRequest(agent_id=agent_id, session_ids=session_ids))
        return {item.session_id: UsageGroup(key=item.session_id, usage=usage_totals_out(item.total),
                                            turn_count=item.turn_count) for item in response.sessions}

    async def sessions_with_usage() -> tuple[list[Session] | None, dict[str, UsageGroup]]:
        """The sessions shown, and the usage of each: one read over the shown sessions' own index
        ranges, so a page view never sums the agent's whole history (a session without calls has none)."""
        shown = await _optional(sessions())
        if not shown:
            return shown, {}
        return shown, await _optional(sessions_usage([item.session_id for item in shown])) or {}

    async def card() -> Card:
        response = await registry.GetActiveCard(registry_service_pb2.GetActiveCardRequest(agent_id=agent_id))
        return card_out(response.card)

    # gather() is typed for at most six awaitables: the seventh runs beside it as a task.
    webhooks_task = (asyncio.ensure_future(_optional(_webhooks(webhook_stub, agent_id)))
                     if webhook_stub is not None else None)
    try:
        agent, score, traces, alerts, (recent_sessions, usage_by_session), active_card = await asyncio.gather(
            _agent_or_404(registry, observer, agent_id),
            _optional(integrity()),
            _optional(list_trace_page(observer, agent_id=agent_id, limit=_RECENT_TRACES, cursor=cursor)),
            _optional(drift()),
            sessions_with_usage(),
            _optional(card()),
        )
    except BaseException:
        if webhooks_task is not None:  # the agent is unknown (404) or a backend failed: nothing to wait for
            webhooks_task.cancel()
        raise
    webhooks = await webhooks_task if webhooks_task is not None else None
    return {
        "agent": agent,
        "integrity": score,
        "timeline_json": json.dumps([point.model_dump() for point in score.timeline]) if score else "[]",
        "traces": [trace_view(trace) for trace in traces.items] if traces is not None else None,
        "more_traces": bool(traces and traces.next_cursor),
        "older_cursor": traces.next_cursor if traces is not None else None,
        "cursor": cursor,
        "alerts": alerts,
        "sessions": recent_sessions,
        "card": active_card,
        "session_usage": usage_by_session,
        "webhooks": webhooks,
    }


# --------------------------------------------------------------------------- pages

@router.get("/")
async def index(request: Request, registry: Registry, observer: Observer,
                cursor: Cursor = None) -> HTMLResponse:
    response = await registry.ListAgents(registry_service_pb2.ListAgentsRequest(page_size=50,
                                                                                page_token=cursor or ""))
    agents: list[AgentSummary] = [agent_summary(agent) for agent in response.agents]

    async def score(agent_id: str) -> Integrity | None:
        result = await _optional(
            observer.GetIntegrity(observer_service_pb2.GetIntegrityRequest(agent_id=agent_id))
        )
        return integrity_out(result.integrity) if result is not None else None

    scores = await asyncio.gather(*(score(agent.agent_id) for agent in agents))
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "index.html", {
        "title": "Agents", "rows": list(zip(agents, scores, strict=True)),
        "next_cursor": response.next_page_token or None,
    })


@router.get("/agents/{agent_id}")
async def agent_page(request: Request, agent_id: AgentIdPath, registry: Registry,
                     observer: Observer, backends: Annotated[Backends, Depends(get_backends)],
                     cursor: Cursor = None) -> HTMLResponse:
    """The agent; with `cursor`, an older page of its traces (not refreshed live)."""
    context = await _agent_sections(registry, observer, agent_id, cursor, backends.alerts)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "agent.html", {"title": agent_id, **context})


@router.get("/agents/{agent_id}/live")
async def agent_live(request: Request, agent_id: AgentIdPath, registry: Registry, observer: Observer,
                     backends: Annotated[Backends, Depends(get_backends)]) -> HTMLResponse:
    """The live sections of the agent page, for the page's script to swap in."""
    context = await _agent_sections(registry, observer, agent_id, webhook_stub=backends.alerts)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "_agent_live.html", context)


@router.get("/agents/{agent_id}/traces/{trace_id}")
async def trace_page(request: Request, agent_id: AgentIdPath, trace_id: TraceIdPath,
                     observer: Observer) -> HTMLResponse:
    try:
        response = await observer.GetTrace(observer_service_pb2.GetTraceRequest(trace_id=trace_id))
    except BackendError as error:
        if error.code is grpc.StatusCode.NOT_FOUND:
            raise NotFound(f"{agent_id} has no trace {trace_id}.", reason="TRACE_NOT_FOUND") from None
        raise
    trace = trace_out(response.trace)
    if trace.agent_id != agent_id:
        raise NotFound(f"Trace {trace_id} is not {agent_id}'s.", reason="TRACE_NOT_FOUND")
    raw_json = json.dumps(trace.model_dump(exclude_unset=True), indent=2, ensure_ascii=False)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "trace.html", {
        "title": f"Trace {trace_id}", "agent_id": agent_id, "view": trace_view(trace), "trace": trace,
        "raw_json": raw_json,
    })


@router.get("/agents/{agent_id}/sessions/{session_id}")
async def session_page(request: Request, agent_id: AgentIdPath, session_id: SessionIdPath,
                       observer: Observer) -> HTMLResponse:
    try:
        response = await observer.GetSessionUsage(
            observer_service_pb2.GetSessionUsageRequest(agent_id=agent_id, session_id=session_id))
    except BackendError as error:
        if error.code is grpc.StatusCode.NOT_FOUND:
            raise NotFound(f"{agent_id} has no recorded model calls in session {session_id}.",
                           reason="SESSION_NOT_FOUND") from None
        raise
    traces: list[Trace] = []
    cursor: str | None = None
    for _ in range(_SESSION_PAGES):
        page = await list_trace_page(observer, agent_id=agent_id, session_id=session_id, limit=1000,
                                     cursor=cursor, order="asc", record_kind="decision")
        traces.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            break
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "session.html", {
        "title": f"Session {session_id}", "agent_id": agent_id, "session_id": session_id,
        "truncated": bool(cursor), **session_view(session_detail_out(response), traces),
    })
