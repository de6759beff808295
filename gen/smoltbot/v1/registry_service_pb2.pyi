import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from smoltbot.v1 import agent_pb2 as _agent_pb2
from smoltbot.v1 import card_pb2 as _card_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResolveAgentRequest(_message.Message):
    __slots__ = ("agent_hash",)
    AGENT_HASH_FIELD_NUMBER: _ClassVar[int]
    agent_hash: str
    def __init__(self, agent_hash: _Optional[str] = ...) -> None: ...

class ResolveAgentResponse(_message.Message):
    __slots__ = ("agent", "created")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    agent: _agent_pb2.Agent
    created: bool
    def __init__(self, agent: _Optional[_Union[_agent_pb2.Agent, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class GetAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _agent_pb2.Agent
    def __init__(self, agent: _Optional[_Union[_agent_pb2.Agent, _Mapping]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents", "next_page_token")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Agent]
    next_page_token: str
    def __init__(self, agents: _Optional[_Iterable[_Union[_agent_pb2.Agent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TouchAgentRequest(_message.Message):
    __slots__ = ("agent_id", "seen_at", "session_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    seen_at: _timestamp_pb2.Timestamp
    session_id: str
    def __init__(self, agent_id: _Optional[str] = ..., seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_id: _Optional[str] = ...) -> None: ...

class TouchAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClaimAgentRequest(_message.Message):
    __slots__ = ("agent_id", "agent_hash", "email")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_HASH_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_hash: str
    email: str
    def __init__(self, agent_id: _Optional[str] = ..., agent_hash: _Optional[str] = ..., email: _Optional[str] = ...) -> None: ...

class ClaimAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _agent_pb2.Agent
    def __init__(self, agent: _Optional[_Union[_agent_pb2.Agent, _Mapping]] = ...) -> None: ...

class ResolveSessionRequest(_message.Message):
    __slots__ = ("agent_id", "session_hint", "hint_source", "at")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_HINT_FIELD_NUMBER: _ClassVar[int]
    HINT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    session_hint: str
    hint_source: _agent_pb2.SessionSource
    at: _timestamp_pb2.Timestamp
    def __init__(self, agent_id: _Optional[str] = ..., session_hint: _Optional[str] = ..., hint_source: _Optional[_Union[_agent_pb2.SessionSource, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResolveSessionResponse(_message.Message):
    __slots__ = ("session", "created")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    session: _agent_pb2.Session
    created: bool
    def __init__(self, session: _Optional[_Union[_agent_pb2.Session, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ReportSessionEventRequest(_message.Message):
    __slots__ = ("agent_id", "agent_hash", "session_id", "event", "turn_count", "occurred_at")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_HASH_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TURN_COUNT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_hash: str
    session_id: str
    event: _agent_pb2.SessionEvent
    turn_count: int
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, agent_id: _Optional[str] = ..., agent_hash: _Optional[str] = ..., session_id: _Optional[str] = ..., event: _Optional[_Union[_agent_pb2.SessionEvent, str]] = ..., turn_count: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportSessionEventResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _agent_pb2.Session
    def __init__(self, session: _Optional[_Union[_agent_pb2.Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("agent_id", "page_size", "page_token")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    page_size: int
    page_token: str
    def __init__(self, agent_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[_agent_pb2.Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetActiveCardRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class GetActiveCardResponse(_message.Message):
    __slots__ = ("card",)
    CARD_FIELD_NUMBER: _ClassVar[int]
    card: _card_pb2.AlignmentCard
    def __init__(self, card: _Optional[_Union[_card_pb2.AlignmentCard, _Mapping]] = ...) -> None: ...

class PutCardRequest(_message.Message):
    __slots__ = ("agent_id", "agent_hash", "card", "card_json")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_hash: str
    card: _card_pb2.AlignmentCard
    card_json: str
    def __init__(self, agent_id: _Optional[str] = ..., agent_hash: _Optional[str] = ..., card: _Optional[_Union[_card_pb2.AlignmentCard, _Mapping]] = ..., card_json: _Optional[str] = ...) -> None: ...

class PutCardResponse(_message.Message):
    __slots__ = ("card",)
    CARD_FIELD_NUMBER: _ClassVar[int]
    card: _card_pb2.AlignmentCard
    def __init__(self, card: _Optional[_Union[_card_pb2.AlignmentCard, _Mapping]] = ...) -> None: ...

class ListCardsRequest(_message.Message):
    __slots__ = ("agent_id", "page_size", "page_token")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    page_size: int
    page_token: str
    def __init__(self, agent_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCardsResponse(_message.Message):
    __slots__ = ("cards", "active_card_id", "next_page_token")
    CARDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_CARD_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    cards: _containers.RepeatedCompositeFieldContainer[_card_pb2.AlignmentCard]
    active_card_id: str
    next_page_token: str
    def __init__(self, cards: _Optional[_Iterable[_Union[_card_pb2.AlignmentCard, _Mapping]]] = ..., active_card_id: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...
