"""RegistryService over gRPC: converts protos to domain calls and back, nothing else.

Errors are the domain's `core.errors` exceptions, turned into rich statuses by `grpc_errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from smoltbot.core.errors import InvalidArgument, SmoltbotError, grpc_status_for
from smoltbot.core.grpc_server import grpc_errors
from smoltbot.core.protoconv import card_from_dict, card_to_dict, from_timestamp, to_timestamp
from smoltbot.registry.agents import Agents
from smoltbot.registry.cards import Cards
from smoltbot.registry.sessions import SessionEvent, Sessions
from smoltbot.registry.store import Agent, Card, Session, SessionSource, SessionStatus
from smoltbot.v1 import agent_pb2, card_pb2, registry_service_pb2_grpc
from smoltbot.v1 import registry_service_pb2 as pb

__all__ = ["RegistryServicer", "agent_to_proto", "card_to_proto", "session_to_proto"]

_SOURCE_TO_PROTO = {
    SessionSource.CLIENT: agent_pb2.SESSION_SOURCE_CLIENT,
    SessionSource.INFERRED: agent_pb2.SESSION_SOURCE_INFERRED,
    SessionSource.PLUGIN: agent_pb2.SESSION_SOURCE_PLUGIN,
}
_SOURCE_FROM_PROTO = {value: key for key, value in _SOURCE_TO_PROTO.items()}
_STATUS_TO_PROTO = {
    SessionStatus.ACTIVE: agent_pb2.SESSION_STATUS_ACTIVE,
    SessionStatus.ENDED: agent_pb2.SESSION_STATUS_ENDED,
}
_EVENT_FROM_PROTO = {
    agent_pb2.SESSION_EVENT_STARTED: SessionEvent.STARTED,
    agent_pb2.SESSION_EVENT_TURN: SessionEvent.TURN,
    agent_pb2.SESSION_EVENT_ENDED: SessionEvent.ENDED,
}


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    def __init__(self, agents: Agents, sessions: Sessions, cards: Cards) -> None:
        self._agents = agents
        self._sessions = sessions
        self._cards = cards

    @grpc_errors
    async def ResolveAgent(self, request: pb.ResolveAgentRequest,
                           context: grpc.aio.ServicerContext) -> pb.ResolveAgentResponse:
        agent, created = await self._agents.resolve(request.agent_hash, create=not request.lookup_only)
        return pb.ResolveAgentResponse(agent=agent_to_proto(agent), created=created)

    @grpc_errors
    async def GetAgent(
        self, request: pb.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAgentResponse:
        return pb.GetAgentResponse(agent=agent_to_proto(await self._agents.get(request.agent_id)))

    @grpc_errors
    async def ListAgents(self, request: pb.ListAgentsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListAgentsResponse:
        agents, token = await self._agents.list(request.page_size, request.page_token)
        return pb.ListAgentsResponse(
            agents=[agent_to_proto(agent) for agent in agents], next_page_token=token
        )

    @grpc_errors
    async def TouchAgent(self, request: pb.TouchAgentRequest,
                         context: grpc.aio.ServicerContext) -> pb.TouchAgentResponse:
        await self._agents.touch(request.agent_id, request.agent_hash, from_timestamp(request, "seen_at"),
                                 request.session_id)
        return pb.TouchAgentResponse()

    @grpc_errors
    async def ClaimAgent(self, request: pb.ClaimAgentRequest,
                         context: grpc.aio.ServicerContext) -> pb.ClaimAgentResponse:
        agent = await self._agents.claim(request.agent_id, request.agent_hash, request.email)
        return pb.ClaimAgentResponse(agent=agent_to_proto(agent))

    @grpc_errors
    async def DeleteAgent(self, request: pb.DeleteAgentRequest,
                          context: grpc.aio.ServicerContext) -> pb.DeleteAgentResponse:
        deleted = await self._agents.delete(request.agent_id, request.agent_hash)
        return pb.DeleteAgentResponse(deleted_rows=deleted)

    @grpc_errors
    async def ResolveSession(self, request: pb.ResolveSessionRequest,
                             context: grpc.aio.ServicerContext) -> pb.ResolveSessionResponse:
        source = _SOURCE_FROM_PROTO.get(request.hint_source)
        if source is None and request.hint_source != agent_pb2.SESSION_SOURCE_UNSPECIFIED:
            raise InvalidArgument("hint_source", f"unknown session source {request.hint_source}")
        session, created = await self._sessions.resolve(
            request.agent_id, request.agent_hash, request.session_hint, source, from_timestamp(request, "at"))
        return pb.ResolveSessionResponse(session=session_to_proto(session), created=created)

    @grpc_errors
    async def ReportSessionEvent(self, request: pb.ReportSessionEventRequest,
                                 context: grpc.aio.ServicerContext) -> pb.ReportSessionEventResponse:
        session = await self._sessions.report(
            request.agent_id, request.agent_hash, request.session_id, _EVENT_FROM_PROTO.get(request.event),
            turn_count=request.turn_count if request.HasField("turn_count") else None,
            occurred_at=from_timestamp(request, "occurred_at"),
        )
        return pb.ReportSessionEventResponse(session=session_to_proto(session))

    @grpc_errors
    async def ListSessions(self, request: pb.ListSessionsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListSessionsResponse:
        sessions, token = await self._sessions.list(request.agent_id, request.page_size, request.page_token)
        return pb.ListSessionsResponse(
            sessions=[session_to_proto(s) for s in sessions], next_page_token=token
        )

    @grpc_errors
    async def GetActiveCard(self, request: pb.GetActiveCardRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetActiveCardResponse:
        at = from_timestamp(request, "as_of")
        if at is None:
            return pb.GetActiveCardResponse(card=card_to_proto(await self._cards.active(request.agent_id)))
        found = await self._cards.in_force(request.agent_id, at)
        response = pb.GetActiveCardResponse(card=card_to_proto(found.card),
                                            in_force_until=to_timestamp(found.until))
        if found.since is not None:
            response.in_force_from.CopyFrom(to_timestamp(found.since))
        return response

    @grpc_errors
    async def PutCard(
        self, request: pb.PutCardRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutCardResponse:
        source = request.WhichOneof("source")
        card = await self._cards.put(
            request.agent_id, request.agent_hash,
            card=card_to_dict(request.card) if source == "card" else None,
            card_json=request.card_json if source == "card_json" else None,
        )
        return pb.PutCardResponse(card=card_to_proto(card))

    @grpc_errors
    async def ListCards(self, request: pb.ListCardsRequest,
                        context: grpc.aio.ServicerContext) -> pb.ListCardsResponse:
        cards, active_card_id, token = await self._cards.list(
            request.agent_id, request.page_size, request.page_token)
        return pb.ListCardsResponse(cards=[card_to_proto(card) for card in cards],
                                    active_card_id=active_card_id, next_page_token=token)

    async def WatchCards(self, request: pb.WatchCardsRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchCardsResponse]:
        # A stream: `grpc_errors` wraps coroutines, so the one domain error (the request) is mapped here.
        try:
            cards = self._cards.watch(list(request.agent_ids))
        except SmoltbotError as error:
            await context.abort_with_status(grpc_status_for(error))
        async for card in cards:
            if card is None:
                yield pb.WatchCardsResponse()
            else:
                yield pb.WatchCardsResponse(card=card_to_proto(card), agent_id=card.agent_id,
                                            version=card.version, stored_at=to_timestamp(card.created_at))


def agent_to_proto(agent: Agent) -> agent_pb2.Agent:
    message = agent_pb2.Agent(
        agent_id=agent.agent_id,
        created_at=to_timestamp(agent.created_at),
        last_seen_at=to_timestamp(agent.last_seen_at),
        claimed=agent.claimed,
        active_card_id=agent.active_card_id or "",
    )
    if agent.claimed_at is not None:
        message.claimed_at.CopyFrom(to_timestamp(agent.claimed_at))
    return message


def session_to_proto(session: Session) -> agent_pb2.Session:
    message = agent_pb2.Session(
        session_id=session.session_id,
        agent_id=session.agent_id,
        source=_SOURCE_TO_PROTO[session.source],
        status=_STATUS_TO_PROTO[session.status],
        started_at=to_timestamp(session.started_at),
        last_activity_at=to_timestamp(session.last_activity_at),
        turn_count=session.turn_count,
    )
    if session.ended_at is not None:
        message.ended_at.CopyFrom(to_timestamp(session.ended_at))
    return message


def card_to_proto(card: Card) -> card_pb2.AlignmentCard:
    return card_from_dict(card.data)
