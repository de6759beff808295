import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BodyForm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BODY_FORM_UNSPECIFIED: _ClassVar[BodyForm]
    BODY_FORM_WIRE: _ClassVar[BodyForm]
    BODY_FORM_DECODED: _ClassVar[BodyForm]
    BODY_FORM_UNDECODABLE: _ClassVar[BodyForm]
    BODY_FORM_REASSEMBLED: _ClassVar[BodyForm]

class ExchangeOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXCHANGE_OUTCOME_UNSPECIFIED: _ClassVar[ExchangeOutcome]
    EXCHANGE_OUTCOME_COMPLETE: _ClassVar[ExchangeOutcome]
    EXCHANGE_OUTCOME_UPSTREAM_ERROR: _ClassVar[ExchangeOutcome]
    EXCHANGE_OUTCOME_MID_STREAM_ERROR: _ClassVar[ExchangeOutcome]
    EXCHANGE_OUTCOME_CLIENT_ABORT: _ClassVar[ExchangeOutcome]
    EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE: _ClassVar[ExchangeOutcome]
    EXCHANGE_OUTCOME_UPSTREAM_DROPPED: _ClassVar[ExchangeOutcome]
BODY_FORM_UNSPECIFIED: BodyForm
BODY_FORM_WIRE: BodyForm
BODY_FORM_DECODED: BodyForm
BODY_FORM_UNDECODABLE: BodyForm
BODY_FORM_REASSEMBLED: BodyForm
EXCHANGE_OUTCOME_UNSPECIFIED: ExchangeOutcome
EXCHANGE_OUTCOME_COMPLETE: ExchangeOutcome
EXCHANGE_OUTCOME_UPSTREAM_ERROR: ExchangeOutcome
EXCHANGE_OUTCOME_MID_STREAM_ERROR: ExchangeOutcome
EXCHANGE_OUTCOME_CLIENT_ABORT: ExchangeOutcome
EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE: ExchangeOutcome
EXCHANGE_OUTCOME_UPSTREAM_DROPPED: ExchangeOutcome

class HttpHeader(_message.Message):
    __slots__ = ("name", "value", "raw_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    RAW_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    raw_value: bytes
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., raw_value: _Optional[bytes] = ...) -> None: ...

class BodyCapture(_message.Message):
    __slots__ = ("wire_size", "wire_sha256", "content_encoding", "form", "truncated", "note")
    WIRE_SIZE_FIELD_NUMBER: _ClassVar[int]
    WIRE_SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    wire_size: int
    wire_sha256: str
    content_encoding: str
    form: BodyForm
    truncated: bool
    note: str
    def __init__(self, wire_size: _Optional[int] = ..., wire_sha256: _Optional[str] = ..., content_encoding: _Optional[str] = ..., form: _Optional[_Union[BodyForm, str]] = ..., truncated: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class CapturedRequest(_message.Message):
    __slots__ = ("method", "path", "query", "headers", "body", "body_capture")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BODY_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    method: str
    path: str
    query: str
    headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    body: bytes
    body_capture: BodyCapture
    def __init__(self, method: _Optional[str] = ..., path: _Optional[str] = ..., query: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ..., body: _Optional[bytes] = ..., body_capture: _Optional[_Union[BodyCapture, _Mapping]] = ...) -> None: ...

class CapturedResponse(_message.Message):
    __slots__ = ("status", "headers", "body", "streamed", "event_count", "stream_error", "body_capture")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    STREAMED_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    STREAM_ERROR_FIELD_NUMBER: _ClassVar[int]
    BODY_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    status: int
    headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    body: bytes
    streamed: bool
    event_count: int
    stream_error: bytes
    body_capture: BodyCapture
    def __init__(self, status: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ..., body: _Optional[bytes] = ..., streamed: _Optional[bool] = ..., event_count: _Optional[int] = ..., stream_error: _Optional[bytes] = ..., body_capture: _Optional[_Union[BodyCapture, _Mapping]] = ...) -> None: ...

class ExchangeTimings(_message.Message):
    __slots__ = ("started_at", "first_byte_at", "ended_at")
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FIRST_BYTE_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    started_at: _timestamp_pb2.Timestamp
    first_byte_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    def __init__(self, started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_byte_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Exchange(_message.Message):
    __slots__ = ("exchange_id", "agent_hash", "agent_id", "session_id", "session_hint", "request", "response", "timings", "outcome", "outcome_detail", "gateway_id", "capture_failure")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_HASH_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_HINT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_DETAIL_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FAILURE_FIELD_NUMBER: _ClassVar[int]
    exchange_id: str
    agent_hash: str
    agent_id: str
    session_id: str
    session_hint: str
    request: CapturedRequest
    response: CapturedResponse
    timings: ExchangeTimings
    outcome: ExchangeOutcome
    outcome_detail: str
    gateway_id: str
    capture_failure: str
    def __init__(self, exchange_id: _Optional[str] = ..., agent_hash: _Optional[str] = ..., agent_id: _Optional[str] = ..., session_id: _Optional[str] = ..., session_hint: _Optional[str] = ..., request: _Optional[_Union[CapturedRequest, _Mapping]] = ..., response: _Optional[_Union[CapturedResponse, _Mapping]] = ..., timings: _Optional[_Union[ExchangeTimings, _Mapping]] = ..., outcome: _Optional[_Union[ExchangeOutcome, str]] = ..., outcome_detail: _Optional[str] = ..., gateway_id: _Optional[str] = ..., capture_failure: _Optional[str] = ...) -> None: ...
