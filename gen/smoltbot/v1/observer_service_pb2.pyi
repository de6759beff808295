import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from smoltbot.v1 import exchange_pb2 as _exchange_pb2
from smoltbot.v1 import trace_pb2 as _trace_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_STATUS_UNSPECIFIED: _ClassVar[IngestStatus]
    INGEST_STATUS_ACCEPTED: _ClassVar[IngestStatus]
    INGEST_STATUS_DUPLICATE: _ClassVar[IngestStatus]
    INGEST_STATUS_REJECTED: _ClassVar[IngestStatus]
INGEST_STATUS_UNSPECIFIED: IngestStatus
INGEST_STATUS_ACCEPTED: IngestStatus
INGEST_STATUS_DUPLICATE: IngestStatus
INGEST_STATUS_REJECTED: IngestStatus

class IngestRequest(_message.Message):
    __slots__ = ("exchange",)
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    exchange: _exchange_pb2.Exchange
    def __init__(self, exchange: _Optional[_Union[_exchange_pb2.Exchange, _Mapping]] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("exchange_id", "status", "message")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    exchange_id: str
    status: IngestStatus
    message: str
    def __init__(self, exchange_id: _Optional[str] = ..., status: _Optional[_Union[IngestStatus, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ListTracesRequest(_message.Message):
    __slots__ = ("agent_id", "session_id", "verified", "since", "until", "page_size", "page_token", "order_by", "record_kind")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    RECORD_KIND_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    session_id: str
    verified: bool
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    order_by: str
    record_kind: str
    def __init__(self, agent_id: _Optional[str] = ..., session_id: _Optional[str] = ..., verified: _Optional[bool] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_by: _Optional[str] = ..., record_kind: _Optional[str] = ...) -> None: ...

class ListTracesResponse(_message.Message):
    __slots__ = ("traces", "next_page_token")
    TRACES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    traces: _containers.RepeatedCompositeFieldContainer[_trace_pb2.ApTrace]
    next_page_token: str
    def __init__(self, traces: _Optional[_Iterable[_Union[_trace_pb2.ApTrace, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetTraceRequest(_message.Message):
    __slots__ = ("trace_id",)
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    def __init__(self, trace_id: _Optional[str] = ...) -> None: ...

class GetTraceResponse(_message.Message):
    __slots__ = ("trace",)
    TRACE_FIELD_NUMBER: _ClassVar[int]
    trace: _trace_pb2.ApTrace
    def __init__(self, trace: _Optional[_Union[_trace_pb2.ApTrace, _Mapping]] = ...) -> None: ...

class GetIntegrityRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class GetIntegrityResponse(_message.Message):
    __slots__ = ("integrity",)
    INTEGRITY_FIELD_NUMBER: _ClassVar[int]
    integrity: _trace_pb2.IntegrityScore
    def __init__(self, integrity: _Optional[_Union[_trace_pb2.IntegrityScore, _Mapping]] = ...) -> None: ...

class ListDriftAlertsRequest(_message.Message):
    __slots__ = ("agent_id", "page_size", "page_token")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    page_size: int
    page_token: str
    def __init__(self, agent_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDriftAlertsResponse(_message.Message):
    __slots__ = ("alerts", "next_page_token")
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[_trace_pb2.DriftAlert]
    next_page_token: str
    def __init__(self, alerts: _Optional[_Iterable[_Union[_trace_pb2.DriftAlert, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReportToolExecutionRequest(_message.Message):
    __slots__ = ("agent_id", "agent_hash", "tool_use_id", "executed")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_HASH_FIELD_NUMBER: _ClassVar[int]
    TOOL_USE_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_hash: str
    tool_use_id: str
    executed: bool
    def __init__(self, agent_id: _Optional[str] = ..., agent_hash: _Optional[str] = ..., tool_use_id: _Optional[str] = ..., executed: _Optional[bool] = ...) -> None: ...

class ReportToolExecutionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
