import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlignmentCard(_message.Message):
    __slots__ = ("card_version", "card_id", "agent_id", "issued_at", "expires_at", "autonomy_mode", "integrity_mode", "principal", "values", "autonomy", "audit", "extensions")
    CARD_VERSION_FIELD_NUMBER: _ClassVar[int]
    CARD_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    AUTONOMY_MODE_FIELD_NUMBER: _ClassVar[int]
    INTEGRITY_MODE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    AUTONOMY_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    card_version: str
    card_id: str
    agent_id: str
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    autonomy_mode: str
    integrity_mode: str
    principal: Principal
    values: CardValues
    autonomy: Autonomy
    audit: Audit
    extensions: _struct_pb2.Struct
    def __init__(self, card_version: _Optional[str] = ..., card_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., autonomy_mode: _Optional[str] = ..., integrity_mode: _Optional[str] = ..., principal: _Optional[_Union[Principal, _Mapping]] = ..., values: _Optional[_Union[CardValues, _Mapping]] = ..., autonomy: _Optional[_Union[Autonomy, _Mapping]] = ..., audit: _Optional[_Union[Audit, _Mapping]] = ..., extensions: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("type", "identifier", "relationship", "escalation_contact")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    ESCALATION_CONTACT_FIELD_NUMBER: _ClassVar[int]
    type: str
    identifier: str
    relationship: str
    escalation_contact: str
    def __init__(self, type: _Optional[str] = ..., identifier: _Optional[str] = ..., relationship: _Optional[str] = ..., escalation_contact: _Optional[str] = ...) -> None: ...

class ValueDefinition(_message.Message):
    __slots__ = ("name", "description", "priority")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    priority: float
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., priority: _Optional[float] = ...) -> None: ...

class CardValues(_message.Message):
    __slots__ = ("declared", "definitions", "conflicts_with", "hierarchy")
    class DefinitionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ValueDefinition
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ValueDefinition, _Mapping]] = ...) -> None: ...
    DECLARED_FIELD_NUMBER: _ClassVar[int]
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_WITH_FIELD_NUMBER: _ClassVar[int]
    HIERARCHY_FIELD_NUMBER: _ClassVar[int]
    declared: _containers.RepeatedScalarFieldContainer[str]
    definitions: _containers.MessageMap[str, ValueDefinition]
    conflicts_with: _containers.RepeatedScalarFieldContainer[str]
    hierarchy: str
    def __init__(self, declared: _Optional[_Iterable[str]] = ..., definitions: _Optional[_Mapping[str, ValueDefinition]] = ..., conflicts_with: _Optional[_Iterable[str]] = ..., hierarchy: _Optional[str] = ...) -> None: ...

class EscalationTrigger(_message.Message):
    __slots__ = ("condition", "action", "reason")
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    condition: str
    action: str
    reason: str
    def __init__(self, condition: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class MonetaryValue(_message.Message):
    __slots__ = ("amount", "currency")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount: float
    currency: str
    def __init__(self, amount: _Optional[float] = ..., currency: _Optional[str] = ...) -> None: ...

class Autonomy(_message.Message):
    __slots__ = ("bounded_actions", "forbidden_actions", "escalation_triggers", "max_autonomous_value")
    BOUNDED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    FORBIDDEN_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ESCALATION_TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    MAX_AUTONOMOUS_VALUE_FIELD_NUMBER: _ClassVar[int]
    bounded_actions: _containers.RepeatedScalarFieldContainer[str]
    forbidden_actions: _containers.RepeatedScalarFieldContainer[str]
    escalation_triggers: _containers.RepeatedCompositeFieldContainer[EscalationTrigger]
    max_autonomous_value: MonetaryValue
    def __init__(self, bounded_actions: _Optional[_Iterable[str]] = ..., forbidden_actions: _Optional[_Iterable[str]] = ..., escalation_triggers: _Optional[_Iterable[_Union[EscalationTrigger, _Mapping]]] = ..., max_autonomous_value: _Optional[_Union[MonetaryValue, _Mapping]] = ...) -> None: ...

class Audit(_message.Message):
    __slots__ = ("retention_days", "queryable", "trace_format", "query_endpoint", "tamper_evidence")
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    QUERYABLE_FIELD_NUMBER: _ClassVar[int]
    TRACE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUERY_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TAMPER_EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    retention_days: int
    queryable: bool
    trace_format: str
    query_endpoint: str
    tamper_evidence: str
    def __init__(self, retention_days: _Optional[int] = ..., queryable: _Optional[bool] = ..., trace_format: _Optional[str] = ..., query_endpoint: _Optional[str] = ..., tamper_evidence: _Optional[str] = ...) -> None: ...
