"""Stored trace dicts to `ApTrace` protos, fast.

`json_format.ParseDict` walks every field through Python reflection (about 250 µs for one
trace), which made ListTraces of a full page cost a quarter of a second of CPU. The trace
shape is ours (trace_builder), so it is converted here field by field with the generated
constructors (about 10x faster). Anything this converter does not expect falls back to
ParseDict, which stays the reference (the tests compare the two).

Exact JSON: a `google.protobuf.Struct` holds every number as a double, so 5 would come out
as 5.0 and 1234567890123456789 as 1234567890123456768. Each Struct/Value field therefore
travels with a `*_json` twin carrying the stored JSON text (`parameters_json`,
`value_observed_json`, `environment_json`, `metadata_json`), which readers (the API) decode
with exact types. In the Struct itself an integer beyond a double's range is carried as its
decimal text instead of failing the whole conversion.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from smoltbot.observer.record_kinds import ACTIVITY, DECISION, is_model_call
from smoltbot.v1 import trace_pb2

__all__ = ["trace_to_proto"]


def _stamp(value: Any) -> timestamp_pb2.Timestamp | None:
    if not value:
        return None
    if not isinstance(value, datetime):
        text = str(value)
        # fromisoformat is C; Timestamp.FromJsonString goes through strptime (5x slower).
        value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        if value.tzinfo is None:
            raise ValueError("a trace timestamp must carry a UTC offset")
    seconds = math.floor(value.timestamp())
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=value.microsecond * 1000)


def exact_json(value: Any) -> str:
    """The JSON text of a stored trace value, exact (the `*_json` fields). A non-finite float
    (only traces stored before extraction refused them) goes as its text: JSON has no NaN."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _doubles_only(value: Any) -> Any:
    # Struct numbers are doubles: an integer a double cannot hold at all goes as its text.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**1023:
        return str(value)
    if isinstance(value, dict):
        return {key: _doubles_only(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_doubles_only(item) for item in value]
    return value


def _struct(value: Any) -> struct_pb2.Struct | None:
    if value is None:
        return None
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except OverflowError:
        struct.update(_doubles_only(value))
    return struct


def _value(value: Any) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    try:
        holder.update({"v": value})
    except OverflowError:
        holder.update({"v": _doubles_only(value)})
    return holder.fields["v"]


def _action(data: dict[str, Any]) -> trace_pb2.TraceAction:
    parameters = data.get("parameters")
    action = trace_pb2.TraceAction(type=data.get("type", ""), name=data.get("name", ""),
                                   category=data.get("category", ""), parameters=_struct(parameters),
                                   parameters_json=exact_json(parameters) if parameters is not None else "")
    target = data.get("target")
    if target is not None:
        action.target.CopyFrom(trace_pb2.ActionTarget(type=target.get("type", ""),
                                                      identifier=target.get("identifier", "")))
    return action


def _decision(data: dict[str, Any]) -> trace_pb2.TraceDecision:
    decision = trace_pb2.TraceDecision(
        alternatives_considered=[
            trace_pb2.Alternative(
                option_id=item.get("option_id", ""),
                description=item.get("description", ""),
                score=item.get("score"),
                scoring_factors=item.get("scoring_factors"),
                flags=item.get("flags"),
            )
            for item in data.get("alternatives_considered") or []
        ],
        selected=data.get("selected", ""),
        selection_reasoning=data.get("selection_reasoning", ""),
        values_applied=data.get("values_applied") or [],
    )
    if data.get("confidence") is not None:
        decision.confidence = float(data["confidence"])
    return decision


def _escalation(data: dict[str, Any]) -> trace_pb2.TraceEscalation:
    checks = []
    for item in data.get("triggers_checked") or []:
        check = trace_pb2.TriggerCheck(trigger=item.get("trigger", ""), matched=bool(item.get("matched")))
        if "value_observed" in item:
            check.value_observed.CopyFrom(_value(item["value_observed"]))
            check.value_observed_json = exact_json(item["value_observed"])
        checks.append(check)
    return trace_pb2.TraceEscalation(evaluated=bool(data.get("evaluated")), triggers_checked=checks,
                                     required=bool(data.get("required")), reason=data.get("reason", ""))


def _context(data: dict[str, Any]) -> trace_pb2.TraceContext:
    environment, metadata = data.get("environment"), data.get("metadata")
    return trace_pb2.TraceContext(
        session_id=data.get("session_id"), conversation_turn=data.get("conversation_turn"),
        prior_trace_ids=data.get("prior_trace_ids") or [], environment=_struct(environment),
        metadata=_struct(metadata),
        environment_json=exact_json(environment) if environment is not None else "",
        metadata_json=exact_json(metadata) if metadata is not None else "",
    )


def _verification(data: dict[str, Any]) -> trace_pb2.Verification:
    return trace_pb2.Verification(
        verified=bool(data.get("verified")),
        violations=[
            trace_pb2.Violation(
                type=v.get("type", ""),
                severity=v.get("severity", ""),
                description=v.get("description", ""),
                trace_field=v.get("trace_field", ""),
            )
            for v in data.get("violations") or []
        ],
        warnings=[
            trace_pb2.VerificationWarning(
                type=w.get("type", ""),
                description=w.get("description", ""),
                trace_field=w.get("trace_field", ""),
            )
            for w in data.get("warnings") or []
        ],
        card_id=data.get("card_id", ""),
        verified_at=_stamp(data.get("verified_at")),
        checks_performed=data.get("checks_performed") or [],
    )


_OBSERVATION_SCALARS = ("exchange_id", "decision_index", "model", "outcome", "outcome_detail", "streamed",
                        "stop_reason", "http_status", "analyzer", "analysis_fallback_reason", "tool_use_id",
                        "record_kind", "request_method", "request_path", "session_rung", "sub_agent_id",
                        "parent_agent_id", "sub_agent_type", "provider", "api")
_OBSERVATION_TIMES = ("exchange_started_at", "exchange_ended_at", "observed_at")


def _observation(data: dict[str, Any]) -> trace_pb2.TraceObservation:
    fields: dict[str, Any] = {name: data[name] for name in _OBSERVATION_SCALARS if name in data}
    for name in _OBSERVATION_TIMES:
        if data.get(name):
            fields[name] = _stamp(data[name])
    reasoning = data.get("reasoning")
    if reasoning is not None:
        fields["reasoning"] = trace_pb2.TraceReasoning(**reasoning)
    observation = trace_pb2.TraceObservation(missing=data.get("missing") or [], **fields)
    if data.get("executed") is not None:
        observation.executed = bool(data["executed"])
    return observation


_ENFORCEMENT_FIELDS = ("mode", "verdict", "action", "reason", "card_id")


def _enforcement(data: dict[str, Any]) -> trace_pb2.TraceEnforcement:
    fields = {name: str(data[name]) for name in _ENFORCEMENT_FIELDS if name in data}
    return trace_pb2.TraceEnforcement(**fields)


def _evidence(data: dict[str, Any]) -> trace_pb2.TraceEvidence:
    # Lists of small records of our own (core/evidence/exchange.py), no Struct: ParseDict is exact here.
    return json_format.ParseDict(data, trace_pb2.TraceEvidence(), ignore_unknown_fields=True)


def _convert(trace: dict[str, Any]) -> trace_pb2.ApTrace:
    message = trace_pb2.ApTrace(trace_id=trace.get("trace_id", ""), agent_id=trace.get("agent_id", ""),
                                card_id=trace.get("card_id", ""), timestamp=_stamp(trace.get("timestamp")))
    for name, build in (
        ("action", _action),
        ("decision", _decision),
        ("escalation", _escalation),
        ("context", _context),
        ("verification", _verification),
        ("observation", _observation),
        ("enforcement", _enforcement),
        ("evidence", _evidence),
    ):
        part = trace.get(name)
        if part is not None:
            getattr(message, name).CopyFrom(build(part))
    return message


def _observation_defaults(trace: dict[str, Any]) -> dict[str, Any]:
    # Traces stored before record kinds: a decision unless it recorded another request path.
    observation = trace.get("observation")
    if isinstance(observation, dict) and "record_kind" not in observation:
        path = str(((trace.get("context") or {}).get("environment") or {}).get("request_path") or "")
        kind = ACTIVITY if path and not is_model_call("POST", path) else DECISION
        trace = {**trace, "observation": {**observation, "record_kind": kind}}
    observation = trace.get("observation")
    if isinstance(observation, dict) and "provider" not in observation:
        # Traces stored before providers were recorded: all Anthropic's (as record_kinds reads
        # an exchange that names none).
        trace = {**trace, "observation": {**observation, "provider": "anthropic"}}
    return trace


def trace_to_proto(trace: dict[str, Any]) -> trace_pb2.ApTrace:
    trace = _observation_defaults(trace)
    try:
        return _convert(trace)
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
        message = json_format.ParseDict(_doubles_only(trace), trace_pb2.ApTrace(), ignore_unknown_fields=True)
        # The reference path carries the exact twins too.
        _add_exact_json(message, trace)
        return message


def _add_exact_json(message: trace_pb2.ApTrace, trace: dict[str, Any]) -> None:
    action, context = trace.get("action") or {}, trace.get("context") or {}
    if action.get("parameters") is not None:
        message.action.parameters_json = exact_json(action["parameters"])
    for name in ("environment", "metadata"):
        if context.get(name) is not None:
            setattr(message.context, f"{name}_json", exact_json(context[name]))
    checks = (trace.get("escalation") or {}).get("triggers_checked") or []
    for check, item in zip(message.escalation.triggers_checked, checks, strict=False):
        if "value_observed" in item:
            check.value_observed_json = exact_json(item["value_observed"])
