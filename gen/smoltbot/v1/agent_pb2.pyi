import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_SOURCE_UNSPECIFIED: _ClassVar[SessionSource]
    SESSION_SOURCE_CLIENT: _ClassVar[SessionSource]
    SESSION_SOURCE_INFERRED: _ClassVar[SessionSource]
    SESSION_SOURCE_PLUGIN: _ClassVar[SessionSource]

class SessionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATUS_UNSPECIFIED: _ClassVar[SessionStatus]
    SESSION_STATUS_ACTIVE: _ClassVar[SessionStatus]
    SESSION_STATUS_ENDED: _ClassVar[SessionStatus]

class SessionEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_EVENT_UNSPECIFIED: _ClassVar[SessionEvent]
    SESSION_EVENT_STARTED: _ClassVar[SessionEvent]
    SESSION_EVENT_TURN: _ClassVar[SessionEvent]
    SESSION_EVENT_ENDED: _ClassVar[SessionEvent]
SESSION_SOURCE_UNSPECIFIED: SessionSource
SESSION_SOURCE_CLIENT: SessionSource
SESSION_SOURCE_INFERRED: SessionSource
SESSION_SOURCE_PLUGIN: SessionSource
SESSION_STATUS_UNSPECIFIED: SessionStatus
SESSION_STATUS_ACTIVE: SessionStatus
SESSION_STATUS_ENDED: SessionStatus
SESSION_EVENT_UNSPECIFIED: SessionEvent
SESSION_EVENT_STARTED: SessionEvent
SESSION_EVENT_TURN: SessionEvent
SESSION_EVENT_ENDED: SessionEvent

class Agent(_message.Message):
    __slots__ = ("agent_id", "created_at", "last_seen_at", "claimed", "claimed_at", "active_card_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_CARD_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    created_at: _timestamp_pb2.Timestamp
    last_seen_at: _timestamp_pb2.Timestamp
    claimed: bool
    claimed_at: _timestamp_pb2.Timestamp
    active_card_id: str
    def __init__(self, agent_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., claimed: _Optional[bool] = ..., claimed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active_card_id: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "agent_id", "source", "status", "started_at", "last_activity_at", "ended_at", "turn_count")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    TURN_COUNT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    agent_id: str
    source: SessionSource
    status: SessionStatus
    started_at: _timestamp_pb2.Timestamp
    last_activity_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    turn_count: int
    def __init__(self, session_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., source: _Optional[_Union[SessionSource, str]] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_activity_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., turn_count: _Optional[int] = ...) -> None: ...
