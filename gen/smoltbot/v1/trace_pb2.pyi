import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApTrace(_message.Message):
    __slots__ = ("trace_id", "agent_id", "card_id", "timestamp", "action", "decision", "escalation", "context", "verification", "observation")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CARD_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ESCALATION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    agent_id: str
    card_id: str
    timestamp: _timestamp_pb2.Timestamp
    action: TraceAction
    decision: TraceDecision
    escalation: TraceEscalation
    context: TraceContext
    verification: Verification
    observation: TraceObservation
    def __init__(self, trace_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., card_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[_Union[TraceAction, _Mapping]] = ..., decision: _Optional[_Union[TraceDecision, _Mapping]] = ..., escalation: _Optional[_Union[TraceEscalation, _Mapping]] = ..., context: _Optional[_Union[TraceContext, _Mapping]] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., observation: _Optional[_Union[TraceObservation, _Mapping]] = ...) -> None: ...

class ActionTarget(_message.Message):
    __slots__ = ("type", "identifier")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    type: str
    identifier: str
    def __init__(self, type: _Optional[str] = ..., identifier: _Optional[str] = ...) -> None: ...

class TraceAction(_message.Message):
    __slots__ = ("type", "name", "category", "target", "parameters", "parameters_json")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    type: str
    name: str
    category: str
    target: ActionTarget
    parameters: _struct_pb2.Struct
    parameters_json: str
    def __init__(self, type: _Optional[str] = ..., name: _Optional[str] = ..., category: _Optional[str] = ..., target: _Optional[_Union[ActionTarget, _Mapping]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parameters_json: _Optional[str] = ...) -> None: ...

class Alternative(_message.Message):
    __slots__ = ("option_id", "description", "score", "scoring_factors", "flags")
    class ScoringFactorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    OPTION_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORING_FACTORS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    option_id: str
    description: str
    score: float
    scoring_factors: _containers.ScalarMap[str, float]
    flags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, option_id: _Optional[str] = ..., description: _Optional[str] = ..., score: _Optional[float] = ..., scoring_factors: _Optional[_Mapping[str, float]] = ..., flags: _Optional[_Iterable[str]] = ...) -> None: ...

class TraceDecision(_message.Message):
    __slots__ = ("alternatives_considered", "selected", "selection_reasoning", "values_applied", "confidence")
    ALTERNATIVES_CONSIDERED_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    SELECTION_REASONING_FIELD_NUMBER: _ClassVar[int]
    VALUES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    alternatives_considered: _containers.RepeatedCompositeFieldContainer[Alternative]
    selected: str
    selection_reasoning: str
    values_applied: _containers.RepeatedScalarFieldContainer[str]
    confidence: float
    def __init__(self, alternatives_considered: _Optional[_Iterable[_Union[Alternative, _Mapping]]] = ..., selected: _Optional[str] = ..., selection_reasoning: _Optional[str] = ..., values_applied: _Optional[_Iterable[str]] = ..., confidence: _Optional[float] = ...) -> None: ...

class TriggerCheck(_message.Message):
    __slots__ = ("trigger", "matched", "value_observed", "value_observed_json")
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    VALUE_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    VALUE_OBSERVED_JSON_FIELD_NUMBER: _ClassVar[int]
    trigger: str
    matched: bool
    value_observed: _struct_pb2.Value
    value_observed_json: str
    def __init__(self, trigger: _Optional[str] = ..., matched: _Optional[bool] = ..., value_observed: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., value_observed_json: _Optional[str] = ...) -> None: ...

class TraceEscalation(_message.Message):
    __slots__ = ("evaluated", "triggers_checked", "required", "reason")
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    evaluated: bool
    triggers_checked: _containers.RepeatedCompositeFieldContainer[TriggerCheck]
    required: bool
    reason: str
    def __init__(self, evaluated: _Optional[bool] = ..., triggers_checked: _Optional[_Iterable[_Union[TriggerCheck, _Mapping]]] = ..., required: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class TraceContext(_message.Message):
    __slots__ = ("session_id", "conversation_turn", "prior_trace_ids", "environment", "metadata", "environment_json", "metadata_json")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_TURN_FIELD_NUMBER: _ClassVar[int]
    PRIOR_TRACE_IDS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    conversation_turn: int
    prior_trace_ids: _containers.RepeatedScalarFieldContainer[str]
    environment: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    environment_json: str
    metadata_json: str
    def __init__(self, session_id: _Optional[str] = ..., conversation_turn: _Optional[int] = ..., prior_trace_ids: _Optional[_Iterable[str]] = ..., environment: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., environment_json: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class Violation(_message.Message):
    __slots__ = ("type", "severity", "description", "trace_field")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_FIELD_NUMBER: _ClassVar[int]
    type: str
    severity: str
    description: str
    trace_field: str
    def __init__(self, type: _Optional[str] = ..., severity: _Optional[str] = ..., description: _Optional[str] = ..., trace_field: _Optional[str] = ...) -> None: ...

class VerificationWarning(_message.Message):
    __slots__ = ("type", "description", "trace_field")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_FIELD_NUMBER: _ClassVar[int]
    type: str
    description: str
    trace_field: str
    def __init__(self, type: _Optional[str] = ..., description: _Optional[str] = ..., trace_field: _Optional[str] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("verified", "violations", "warnings", "card_id", "verified_at", "checks_performed")
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    CARD_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    CHECKS_PERFORMED_FIELD_NUMBER: _ClassVar[int]
    verified: bool
    violations: _containers.RepeatedCompositeFieldContainer[Violation]
    warnings: _containers.RepeatedCompositeFieldContainer[VerificationWarning]
    card_id: str
    verified_at: _timestamp_pb2.Timestamp
    checks_performed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, verified: _Optional[bool] = ..., violations: _Optional[_Iterable[_Union[Violation, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[VerificationWarning, _Mapping]]] = ..., card_id: _Optional[str] = ..., verified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., checks_performed: _Optional[_Iterable[str]] = ...) -> None: ...

class TraceReasoning(_message.Message):
    __slots__ = ("present", "source", "signature_present", "redacted_blocks", "chars", "excerpt", "text")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_PRESENT_FIELD_NUMBER: _ClassVar[int]
    REDACTED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    CHARS_FIELD_NUMBER: _ClassVar[int]
    EXCERPT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    present: bool
    source: str
    signature_present: bool
    redacted_blocks: int
    chars: int
    excerpt: str
    text: str
    def __init__(self, present: _Optional[bool] = ..., source: _Optional[str] = ..., signature_present: _Optional[bool] = ..., redacted_blocks: _Optional[int] = ..., chars: _Optional[int] = ..., excerpt: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class TraceObservation(_message.Message):
    __slots__ = ("exchange_id", "decision_index", "model", "outcome", "outcome_detail", "streamed", "stop_reason", "http_status", "reasoning", "analyzer", "analysis_fallback_reason", "missing", "tool_use_id", "executed", "exchange_started_at", "exchange_ended_at", "observed_at", "record_kind", "request_method", "request_path")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_DETAIL_FIELD_NUMBER: _ClassVar[int]
    STREAMED_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    ANALYZER_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    TOOL_USE_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORD_KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_PATH_FIELD_NUMBER: _ClassVar[int]
    exchange_id: str
    decision_index: int
    model: str
    outcome: str
    outcome_detail: str
    streamed: bool
    stop_reason: str
    http_status: int
    reasoning: TraceReasoning
    analyzer: str
    analysis_fallback_reason: str
    missing: _containers.RepeatedScalarFieldContainer[str]
    tool_use_id: str
    executed: bool
    exchange_started_at: _timestamp_pb2.Timestamp
    exchange_ended_at: _timestamp_pb2.Timestamp
    observed_at: _timestamp_pb2.Timestamp
    record_kind: str
    request_method: str
    request_path: str
    def __init__(self, exchange_id: _Optional[str] = ..., decision_index: _Optional[int] = ..., model: _Optional[str] = ..., outcome: _Optional[str] = ..., outcome_detail: _Optional[str] = ..., streamed: _Optional[bool] = ..., stop_reason: _Optional[str] = ..., http_status: _Optional[int] = ..., reasoning: _Optional[_Union[TraceReasoning, _Mapping]] = ..., analyzer: _Optional[str] = ..., analysis_fallback_reason: _Optional[str] = ..., missing: _Optional[_Iterable[str]] = ..., tool_use_id: _Optional[str] = ..., executed: _Optional[bool] = ..., exchange_started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exchange_ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., record_kind: _Optional[str] = ..., request_method: _Optional[str] = ..., request_path: _Optional[str] = ...) -> None: ...

class DriftAlert(_message.Message):
    __slots__ = ("alert_id", "agent_id", "card_id", "direction", "severity", "similarity_score", "sustained_traces", "trace_ids", "reference", "status", "created_at", "updated_at", "analysis")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CARD_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    SUSTAINED_TRACES_FIELD_NUMBER: _ClassVar[int]
    TRACE_IDS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    agent_id: str
    card_id: str
    direction: str
    severity: str
    similarity_score: float
    sustained_traces: int
    trace_ids: _containers.RepeatedScalarFieldContainer[str]
    reference: str
    status: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    analysis: str
    def __init__(self, alert_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., card_id: _Optional[str] = ..., direction: _Optional[str] = ..., severity: _Optional[str] = ..., similarity_score: _Optional[float] = ..., sustained_traces: _Optional[int] = ..., trace_ids: _Optional[_Iterable[str]] = ..., reference: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., analysis: _Optional[str] = ...) -> None: ...

class IntegrityWindow(_message.Message):
    __slots__ = ("total_traces", "verified_traces", "score", "violation_count", "violations_by_type", "with_reasoning", "with_model_analysis", "failed", "activity")
    class ViolationsByTypeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TOTAL_TRACES_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_TRACES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_BY_TYPE_FIELD_NUMBER: _ClassVar[int]
    WITH_REASONING_FIELD_NUMBER: _ClassVar[int]
    WITH_MODEL_ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    total_traces: int
    verified_traces: int
    score: float
    violation_count: int
    violations_by_type: _containers.ScalarMap[str, int]
    with_reasoning: int
    with_model_analysis: int
    failed: int
    activity: int
    def __init__(self, total_traces: _Optional[int] = ..., verified_traces: _Optional[int] = ..., score: _Optional[float] = ..., violation_count: _Optional[int] = ..., violations_by_type: _Optional[_Mapping[str, int]] = ..., with_reasoning: _Optional[int] = ..., with_model_analysis: _Optional[int] = ..., failed: _Optional[int] = ..., activity: _Optional[int] = ...) -> None: ...

class IntegrityPoint(_message.Message):
    __slots__ = ("bucket_start", "total_traces", "verified_traces")
    BUCKET_START_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TRACES_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_TRACES_FIELD_NUMBER: _ClassVar[int]
    bucket_start: _timestamp_pb2.Timestamp
    total_traces: int
    verified_traces: int
    def __init__(self, bucket_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total_traces: _Optional[int] = ..., verified_traces: _Optional[int] = ...) -> None: ...

class IntegrityScore(_message.Message):
    __slots__ = ("agent_id", "recent", "all_time", "window_size", "computed_at", "timeline", "open_drift_alerts")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    ALL_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    OPEN_DRIFT_ALERTS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    recent: IntegrityWindow
    all_time: IntegrityWindow
    window_size: int
    computed_at: _timestamp_pb2.Timestamp
    timeline: _containers.RepeatedCompositeFieldContainer[IntegrityPoint]
    open_drift_alerts: int
    def __init__(self, agent_id: _Optional[str] = ..., recent: _Optional[_Union[IntegrityWindow, _Mapping]] = ..., all_time: _Optional[_Union[IntegrityWindow, _Mapping]] = ..., window_size: _Optional[int] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timeline: _Optional[_Iterable[_Union[IntegrityPoint, _Mapping]]] = ..., open_drift_alerts: _Optional[int] = ...) -> None: ...
