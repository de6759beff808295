"""RegistryService over gRPC: converts protos to domain calls and back, nothing else.

Errors are the domain's `core.errors` exceptions, turned into rich statuses by `grpc_errors`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from smoltbot.core.errors import InvalidArgument
from smoltbot.core.grpc_server import grpc_errors
from smoltbot.registry.agents import Agents
from smoltbot.registry.cards import Cards
from smoltbot.registry.sessions import SessionEvent, Sessions
from smoltbot.registry.store import Agent, Card, Session, SessionSource, SessionStatus
from smoltbot.v1 import agent_pb2, card_pb2, registry_service_pb2_grpc
from smoltbot.v1 import registry_service_pb2 as pb

__all__ = ["RegistryServicer", "agent_to_proto", "card_from_proto", "card_to_proto", "session_to_proto"]

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
#: Card strings without presence that AAP defaults when absent; an unset proto field
#: arrives as "" and means "use the default", not "the empty value".
_DEFAULTED_CARD_STRINGS = ("card_version", "card_id", "agent_id", "autonomy_mode", "integrity_mode")


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    def __init__(self, agents: Agents, sessions: Sessions, cards: Cards) -> None:
        self._agents = agents
        self._sessions = sessions
        self._cards = cards

    @grpc_errors
    async def ResolveAgent(self, request: pb.ResolveAgentRequest,
                           context: grpc.aio.ServicerContext) -> pb.ResolveAgentResponse:
        agent, created = await self._agents.resolve(request.agent_hash)
        return pb.ResolveAgentResponse(agent=agent_to_proto(agent), created=created)

    @grpc_errors
    async def GetAgent(self, request: pb.GetAgentRequest, context: grpc.aio.ServicerContext) -> pb.GetAgentResponse:
        return pb.GetAgentResponse(agent=agent_to_proto(await self._agents.get(request.agent_id)))

    @grpc_errors
    async def ListAgents(self, request: pb.ListAgentsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListAgentsResponse:
        agents, token = await self._agents.list(request.page_size, request.page_token)
        return pb.ListAgentsResponse(agents=[agent_to_proto(agent) for agent in agents], next_page_token=token)

    @grpc_errors
    async def TouchAgent(self, request: pb.TouchAgentRequest,
                         context: grpc.aio.ServicerContext) -> pb.TouchAgentResponse:
        await self._agents.touch(request.agent_id, request.agent_hash, _time(request, "seen_at"),
                                 request.session_id)
        return pb.TouchAgentResponse()

    @grpc_errors
    async def ClaimAgent(self, request: pb.ClaimAgentRequest,
                         context: grpc.aio.ServicerContext) -> pb.ClaimAgentResponse:
        agent = await self._agents.claim(request.agent_id, request.agent_hash, request.email)
        return pb.ClaimAgentResponse(agent=agent_to_proto(agent))

    @grpc_errors
    async def ResolveSession(self, request: pb.ResolveSessionRequest,
                             context: grpc.aio.ServicerContext) -> pb.ResolveSessionResponse:
        source = _SOURCE_FROM_PROTO.get(request.hint_source)
        if source is None and request.hint_source != agent_pb2.SESSION_SOURCE_UNSPECIFIED:
            raise InvalidArgument("hint_source", f"unknown session source {request.hint_source}")
        session, created = await self._sessions.resolve(
            request.agent_id, request.agent_hash, request.session_hint, source, _time(request, "at"))
        return pb.ResolveSessionResponse(session=session_to_proto(session), created=created)

    @grpc_errors
    async def ReportSessionEvent(self, request: pb.ReportSessionEventRequest,
                                 context: grpc.aio.ServicerContext) -> pb.ReportSessionEventResponse:
        session = await self._sessions.report(
            request.agent_id, request.agent_hash, request.session_id, _EVENT_FROM_PROTO.get(request.event),
            turn_count=request.turn_count if request.HasField("turn_count") else None,
            occurred_at=_time(request, "occurred_at"),
        )
        return pb.ReportSessionEventResponse(session=session_to_proto(session))

    @grpc_errors
    async def ListSessions(self, request: pb.ListSessionsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListSessionsResponse:
        sessions, token = await self._sessions.list(request.agent_id, request.page_size, request.page_token)
        return pb.ListSessionsResponse(sessions=[session_to_proto(s) for s in sessions], next_page_token=token)

    @grpc_errors
    async def GetActiveCard(self, request: pb.GetActiveCardRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetActiveCardResponse:
        at = _time(request, "as_of")
        if at is None:
            return pb.GetActiveCardResponse(card=card_to_proto(await self._cards.active(request.agent_id)))
        found = await self._cards.in_force(request.agent_id, at)
        response = pb.GetActiveCardResponse(card=card_to_proto(found.card),
                                            in_force_until=_stamp(found.until))
        if found.since is not None:
            response.in_force_from.CopyFrom(_stamp(found.since))
        return response

    @grpc_errors
    async def PutCard(self, request: pb.PutCardRequest, context: grpc.aio.ServicerContext) -> pb.PutCardResponse:
        source = request.WhichOneof("source")
        card = await self._cards.put(
            request.agent_id, request.agent_hash,
            card=card_from_proto(request.card) if source == "card" else None,
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


def _time(request: Message, field: str) -> datetime | None:
    if not request.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None


def _stamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def agent_to_proto(agent: Agent) -> agent_pb2.Agent:
    message = agent_pb2.Agent(
        agent_id=agent.agent_id,
        created_at=_stamp(agent.created_at),
        last_seen_at=_stamp(agent.last_seen_at),
        claimed=agent.claimed,
        active_card_id=agent.active_card_id or "",
    )
    if agent.claimed_at is not None:
        message.claimed_at.CopyFrom(_stamp(agent.claimed_at))
    return message


def session_to_proto(session: Session) -> agent_pb2.Session:
    message = agent_pb2.Session(
        session_id=session.session_id,
        agent_id=session.agent_id,
        source=_SOURCE_TO_PROTO[session.source],
        status=_STATUS_TO_PROTO[session.status],
        started_at=_stamp(session.started_at),
        last_activity_at=_stamp(session.last_activity_at),
        turn_count=session.turn_count,
    )
    if session.ended_at is not None:
        message.ended_at.CopyFrom(_stamp(session.ended_at))
    return message


def card_to_proto(card: Card) -> card_pb2.AlignmentCard:
    # The stored JSON is authoritative; fields a newer AAP adds are skipped in the proto view.
    return json_format.ParseDict(card.data, card_pb2.AlignmentCard(), ignore_unknown_fields=True)


def card_from_proto(card: card_pb2.AlignmentCard) -> dict[str, Any]:
    """The AAP dict for a proto card: every field printed (AAP needs `queryable: false` and
    `retention_days: 0` to be present), except the unset strings AAP has defaults for."""
    data = json_format.MessageToDict(card, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    for name in _DEFAULTED_CARD_STRINGS:
        if data.get(name) == "":
            del data[name]
    audit = data.get("audit")
    if isinstance(audit, dict) and audit.get("trace_format") == "":
        del audit["trace_format"]
    return data
