"""/v1/agents/{agent_id}/card(s): the active alignment card, its history, and putting a new one."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body

from smoltbot.api.convert import card_out
from smoltbot.api.dependencies import AgentIdPath, CallerHash, Cursor, Limit, Registry, require_owner
from smoltbot.api.errors import READ_ERRORS, WRITE_ERRORS
from smoltbot.api.schemas import Card, CardList
from smoltbot.api.strict_json import StrictJsonRoute
from smoltbot.v1 import registry_service_pb2

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents/{agent_id}", tags=["cards"], responses=READ_ERRORS,
                   route_class=StrictJsonRoute)

_CARD_EXAMPLE = {
    "card_version": "unified/2026-04-26",
    "principal": {"type": "human", "identifier": "alice@example.com", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency", "harm_prevention"]},
    "autonomy": {"bounded_actions": ["read_file", "respond"], "forbidden_actions": ["delete_file"],
                 "escalation_triggers": []},
    "audit": {"retention_days": 90, "queryable": True, "trace_format": "ap-trace-v1",
              "query_endpoint": "http://127.0.0.1:8000/v1/traces"},
}
CardBody = Annotated[dict[str, Any], Body(
    description="An AAP alignment card, in the unified shape or the legacy one "
                "(aap_version / autonomy_envelope / audit_commitment). The registry validates it.",
    examples=[_CARD_EXAMPLE],
)]


@router.get("/card", response_model=Card, response_model_exclude_unset=True, summary="The active card")
async def get_active_card(agent_id: AgentIdPath, registry: Registry) -> Card:
    response = await registry.GetActiveCard(registry_service_pb2.GetActiveCardRequest(agent_id=agent_id))
    return card_out(response.card)


@router.put("/card", response_model=Card, response_model_exclude_unset=True, responses=WRITE_ERRORS,
            summary="Store a new card version and make it active")
async def put_card(
    agent_id: AgentIdPath, card: CardBody, registry: Registry, caller_hash: CallerHash
) -> Card:
    require_owner(agent_id, caller_hash)
    response = await registry.PutCard(registry_service_pb2.PutCardRequest(
        agent_id=agent_id, agent_hash=caller_hash, card_json=json.dumps(card)))
    return card_out(response.card)


@router.get("/cards", response_model=CardList, response_model_exclude_unset=True,
            summary="Card history, newest first")
async def list_cards(agent_id: AgentIdPath, registry: Registry, limit: Limit = 50,
                     cursor: Cursor = None) -> CardList:
    response = await registry.ListCards(registry_service_pb2.ListCardsRequest(
        agent_id=agent_id, page_size=limit, page_token=cursor or ""))
    return CardList(items=[card_out(card) for card in response.cards],
                    active_card_id=response.active_card_id or None,
                    next_cursor=response.next_page_token or None)
