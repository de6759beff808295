"""/v1/agents: look agents up, list them, resolve a credential to its agent, claim one, delete
one's data."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Body, Request
from starlette.exceptions import HTTPException

from smoltbot.api.convert import agent_summary
from smoltbot.api.dependencies import (
    AgentIdPath,
    CallerHash,
    CredentialChecker,
    Cursor,
    IdentityHash,
    Limit,
    Observer,
    Registry,
    require_owner,
)
from smoltbot.api.errors import READ_ERRORS, WRITE_ERRORS, error_responses
from smoltbot.api.reads import trace_count
from smoltbot.api.schemas import (
    Agent,
    AgentDataDeleted,
    AgentList,
    AgentSummary,
    ClaimRequest,
    ResolveResponse,
)
from smoltbot.api.strict_json import StrictJsonRoute
from smoltbot.v1 import observer_service_pb2, registry_service_pb2

__all__ = ["router"]

logger = logging.getLogger(__name__)

#: An agent with millions of traces takes a while (deleted in small batches, so intake goes on
#: meanwhile); interrupted, the batches done stay done and the next call goes on from there.
_DELETE_TIMEOUT = 600.0

router = APIRouter(prefix="/v1/agents", tags=["agents"], responses=READ_ERRORS, route_class=StrictJsonRoute)


@router.post("/resolve", response_model=ResolveResponse, responses=error_responses(401, 503, 504),
             summary="The agent id of a credential (created if new)")
async def resolve_agent(request: Request, registry: Registry, caller_hash: IdentityHash,
                        check: CredentialChecker) -> ResolveResponse:
    """Send the agent's credential in `x-api-key` or `Authorization: Bearer`, as the agent sends
    it to the model. The upstream is asked first whether it accepts the credential (one free
    call, `GET /v1/models`): rejected is 401, upstream unreachable 503, and nothing is created.
    Then it is hashed with the installation's secret and dropped; only the hash reaches the
    registry."""
    await check.verify(request.headers)
    response = await registry.ResolveAgent(registry_service_pb2.ResolveAgentRequest(agent_hash=caller_hash))
    if response.created:
        logger.info("agent %s created by resolve", response.agent.agent_id)
    return ResolveResponse(agent_id=response.agent.agent_id, created=response.created)


@router.api_route("/resolve", methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"],
                  include_in_schema=False)
async def resolve_agent_other_methods() -> None:
    # Without this, GET /v1/agents/resolve would reach GET /v1/agents/{agent_id} and fail its
    # pattern with a 422 instead of the 405 that tells the caller to POST.
    raise HTTPException(status_code=405)


@router.get("", response_model=AgentList, summary="Agents, most recently seen first")
async def list_agents(registry: Registry, limit: Limit = 50, cursor: Cursor = None) -> AgentList:
    response = await registry.ListAgents(
        registry_service_pb2.ListAgentsRequest(page_size=limit, page_token=cursor or ""))
    return AgentList(items=[agent_summary(agent) for agent in response.agents],
                     next_cursor=response.next_page_token or None)


@router.get("/{agent_id}", response_model=Agent, summary="One agent")
async def get_agent(agent_id: AgentIdPath, registry: Registry, observer: Observer) -> Agent:
    response, count = await asyncio.gather(
        registry.GetAgent(registry_service_pb2.GetAgentRequest(agent_id=agent_id)),
        trace_count(observer, agent_id),
    )
    return Agent(**agent_summary(response.agent).model_dump(), trace_count=count)


@router.post("/{agent_id}/claim", response_model=AgentSummary, responses=WRITE_ERRORS,
             summary="Claim an agent by proving its credential")
async def claim_agent(agent_id: AgentIdPath, registry: Registry, caller_hash: CallerHash,
                      body: Annotated[ClaimRequest | None, Body()] = None) -> AgentSummary:
    """Proof of ownership is the agent's own credential. An agent can be claimed once (409 after)."""
    require_owner(agent_id, caller_hash)
    response = await registry.ClaimAgent(registry_service_pb2.ClaimAgentRequest(
        agent_id=agent_id, agent_hash=caller_hash, email=(body.email if body and body.email else "")))
    return agent_summary(response.agent)


@router.delete("/{agent_id}/data", response_model=AgentDataDeleted, responses=WRITE_ERRORS,
               summary="Delete everything stored about an agent, now")
async def delete_agent_data(agent_id: AgentIdPath, registry: Registry, observer: Observer,
                            caller_hash: CallerHash) -> AgentDataDeleted:
    """Proof of ownership is the agent's own credential. Deletes, at once and for good, every
    trace, violation, usage row, drift state and alert, tool execution, exchange record and raw
    payload of the agent (Observer), then the agent itself: its credential hash, claim, sessions
    and every card version (Registry). Calling again deletes what arrived since (200 with
    counts). A later call of the agent through the gateway starts a new agent with a default
    card. What the gateway still holds is not reached from here: docs/privacy.md."""
    require_owner(agent_id, caller_hash)
    # The Observer first: it proves ownership through the Registry, which still knows the agent.
    observed = await observer.DeleteAgentData(
        observer_service_pb2.DeleteAgentDataRequest(agent_id=agent_id, agent_hash=caller_hash),
        timeout=_DELETE_TIMEOUT)
    registered = await registry.DeleteAgent(
        registry_service_pb2.DeleteAgentRequest(agent_id=agent_id, agent_hash=caller_hash))
    logger.info("data of %s deleted by its owner", agent_id)
    return AgentDataDeleted(agent_id=agent_id,
                            deleted_rows={**dict(observed.deleted_rows), **dict(registered.deleted_rows)})
