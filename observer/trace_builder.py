"""Building the AP-Traces of one exchange (trace.proto `ApTrace` in JSON form).

One trace per decision (`Extraction.decisions`):

* each tool call: action type "execute", name = the tool name, parameters = its
  input with secrets redacted (server tools too, flagged in context.metadata). A call
  the model did not finish (`ToolCall.finished` False: cut by max_tokens or a stream
  end, or an input that does not parse) is type "recommend" with
  metadata.tool_call_finished false and observation.executed false: no agent
  executes it, so it is never shown as an execution;
* a reply with no tool call: type "recommend", name "respond";
* a complete exchange whose body could not be read: "recommend",
  "unreadable_response";
* a failed exchange (upstream error, mid-stream error, client abort, upstream
  unreachable or dropped, processing failure): exactly one trace, type
  "recommend" (AAP's least-claiming type: nothing was executed as far as we can
  tell) and name = the outcome ("upstream_error", "client_abort", ...), so a
  failure is never dressed up as a reply. observation.outcome says the same.
  A reply that arrived whole but reports a failure (an OpenAI Responses
  `response.failed`, a Gemini prompt blocked: `Extraction.failure`) is such a
  failure too: outcome "upstream_error", name = the failure ("response_failed").
  Our own failures (processing_failed; capture_failed, when the gateway could not
  capture the exchange) are not verified: verified false, no checks, a warning
  saying why; nothing was read that a verdict could rest on.

Every trace says its observation.record_kind: "decision" here; `build_activity_trace`
builds the one "activity" record of an API call that is not a model call (see
`record_kinds`), which is never verified, scored or fed to drift.

trace_id = "tr-<exchange_id>-<index>", so processing an exchange twice yields the
same ids. The model and the provider are recorded in observation (model, provider, api) and
context.environment (model, provider), never as an action; whether the reasoning read was only
the provider's summary of it is observation.reasoning.summary_only. Every trace passes
`aap.APTrace.from_dict` and `json_format.ParseDict(trace, smoltbot.v1.trace_pb2.ApTrace())`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from smoltbot.core.aap.redaction import redact, redact_text
from smoltbot.core.aap.verification import apply_escalation, verify_trace
from smoltbot.core.ids import trace_id_for
from smoltbot.core.outcomes import UNREAD_OUTCOMES, ExchangeOutcome
from smoltbot.observer import local_analyzer
from smoltbot.observer.extraction import Decision, Extraction
from smoltbot.observer.local_analyzer import Analysis
from smoltbot.observer.providers import provider_of
from smoltbot.observer.record_kinds import ACTIVITY, DECISION, is_model_call

__all__ = ["build_activity_trace", "build_traces"]

EXCERPT_CHARS = 280
_STORE_MODES = ("full", "redacted", "none")
# Tool input keys naming what the action touches (AAP action.target).
_TARGET_KEYS = (("file_path", "file"), ("path", "file"), ("notebook_path", "file"), ("url", "url"))


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _action(decision: Decision, extraction: Extraction, outcome: str) -> dict[str, Any]:
    if decision.kind == "tool" and decision.tool_call is not None:
        call = decision.tool_call
        parameters: dict[str, Any] = redact(call.input)
        if not call.input_valid:
            parameters = {"unparsed_input": redact_text(call.raw_input)}
        action: dict[str, Any] = {
            # An unfinished call is what the model was about to do, not something it did.
            "type": "execute" if call.finished else "recommend",
            "name": call.name,
            "category": "bounded",
            "parameters": parameters,
        }
        for key, kind in _TARGET_KEYS:
            value = call.input.get(key)
            if isinstance(value, str) and value:
                action["target"] = {"type": kind, "identifier": redact_text(value)[:1000]}
                break
        return action
    if decision.kind == "reply":
        return {"type": "recommend", "name": "respond", "category": "bounded", "parameters": {}}
    if decision.kind == "unreadable":
        return {"type": "recommend", "name": "unreadable_response", "category": "bounded", "parameters": {}}
    parameters = {}
    if extraction.error_type:
        parameters["error_type"] = extraction.error_type
    if extraction.error_message:
        parameters["error_message"] = _clip(redact_text(extraction.error_message), 500)
    if extraction.tool_calls:
        # Tool calls seen before the failure; they are not traced as executed.
        parameters["partial_tool_calls"] = [call.name for call in extraction.tool_calls]
    return {"type": "recommend", "name": extraction.failure or outcome, "category": "bounded",
            "parameters": parameters}


def _reasoning_observation(decision: Decision, store_reasoning: str) -> dict[str, Any]:
    segments = decision.reasoning
    text = "\n\n".join(s.text for s in segments if s.text)
    sources: list[str] = []
    for segment in segments:
        if segment.source not in sources:
            sources.append(segment.source)
    if store_reasoning == "full":
        stored = text
    elif store_reasoning == "redacted":
        stored = redact_text(text)
    else:
        stored = ""
    return {
        "present": bool(text.strip()),
        "source": ",".join(sources) if sources else "none",
        "signature_present": any(s.signature_present for s in segments),
        "redacted_blocks": sum(1 for s in segments if s.redacted),
        # The provider returned a summary of its reasoning, not the reasoning itself.
        "summary_only": any(s.summary and s.text for s in segments)
        and not any(s.text and not s.summary for s in segments),
        "chars": len(text),
        "excerpt": _clip(redact_text(text[: 4 * EXCERPT_CHARS]), EXCERPT_CHARS),
        "text": stored,
    }


def build_traces(
    *,
    exchange_id: str,
    agent_id: str,
    session_id: str | None,
    card: dict[str, Any],
    extraction: Extraction,
    analyses: list[Analysis] | None,
    exchange_started_at: datetime | None,
    exchange_ended_at: datetime | None,
    observed_at: datetime,
    conversation_turn: int | None,
    store_reasoning: str,
    analyzer_name: str,
    analysis_fallback_reason: str = "",
    outcome: str,
    outcome_detail: str = "",
    http_status: int,
    environment: dict[str, Any] | None = None,
    request_method: str = "",
    request_path: str = "",
) -> list[dict[str, Any]]:
    """The exchange's traces, escalation-evaluated and verified against `card`.

    analyses: one per `extraction.decisions(outcome)`, in order; None runs the local
    analyzer. Timestamps: the trace time is when the exchange ended (else started,
    else observed_at); observed_at is also the verification time.
    """
    if store_reasoning not in _STORE_MODES:
        raise ValueError(f"store_reasoning must be one of {_STORE_MODES}, not {store_reasoning!r}")
    if extraction.failure and outcome == ExchangeOutcome.COMPLETE:
        # HTTP 200, but the reply itself says the call failed: an upstream error all the same.
        outcome = ExchangeOutcome.UPSTREAM_ERROR
        outcome_detail = outcome_detail or f"{extraction.failure}: {extraction.error_type}"
    decisions = extraction.decisions(outcome)
    if analyses is None:
        analyses = local_analyzer.analyze(extraction, card, outcome=outcome)
    if len(analyses) != len(decisions):
        raise ValueError(f"{len(analyses)} analyses for {len(decisions)} decisions")

    when = _iso(exchange_ended_at or exchange_started_at or observed_at)
    verified_at = _iso(observed_at)
    request_path = request_path or str((environment or {}).get("request_path") or "")
    if not request_method and is_model_call("POST", request_path):
        request_method = "POST"  # a decision is a POST /v1/messages by definition
    env = dict(redact(environment or {}))
    provider = provider_of(extraction.provider)
    env["provider"] = provider
    if extraction.model:
        env["model"] = extraction.model
    traces: list[dict[str, Any]] = []
    for decision, analysis in zip(decisions, analyses, strict=True):
        index = decision.index
        trace_id = trace_id_for(exchange_id, index)
        metadata: dict[str, Any] = {
            "exchange_id": exchange_id,
            "decision_index": index,
            "decision_count": len(decisions),
            # tool | reply | failure | unreadable; verification skips action checks
            # for the last two (no agent action).
            "decision_kind": decision.kind,
        }
        if decision.tool_call is not None:
            metadata["tool_use_id"] = decision.tool_call.id
            metadata["server_tool"] = decision.tool_call.server
            if decision.tool_call.call_type:
                metadata["call_type"] = decision.tool_call.call_type
            if not decision.tool_call.finished:
                metadata["tool_call_finished"] = False
        context: dict[str, Any] = {
            "prior_trace_ids": [trace_id_for(exchange_id, index - 1)] if index > 0 else [],
            "environment": env,
            "metadata": metadata,
        }
        if session_id:
            context["session_id"] = session_id
        if conversation_turn is not None:
            context["conversation_turn"] = conversation_turn
        alternatives = [dict(a) for a in analysis.alternatives]
        trace: dict[str, Any] = {
            "trace_id": trace_id,
            "agent_id": agent_id,
            "card_id": card.get("card_id", ""),
            "timestamp": when,
            "action": _action(decision, extraction, outcome),
            "decision": {
                "alternatives_considered": alternatives,
                "selected": analysis.selected,
                "selection_reasoning": analysis.selection_reasoning,
                "values_applied": list(analysis.values_applied),
                "confidence": float(analysis.confidence),
            },
            "context": context,
        }
        apply_escalation(trace, card)
        if outcome in UNREAD_OUTCOMES:
            why = f"Not verified: {outcome.replace('_', ' ')} ({outcome_detail or '-'})."
            verification = _unverified(card, why, "observation.outcome")
        else:
            verification = verify_trace(trace, card, now=observed_at)
        verification["verified_at"] = verified_at
        trace["verification"] = verification
        observation: dict[str, Any] = {
            "exchange_id": exchange_id,
            "decision_index": index,
            "model": extraction.model,
            "provider": provider,
            "api": extraction.api,
            "outcome": outcome,
            "outcome_detail": outcome_detail,
            "streamed": extraction.streamed,
            "stop_reason": extraction.stop_reason,
            "http_status": http_status,
            "reasoning": _reasoning_observation(decision, store_reasoning),
            "analyzer": analyzer_name,
            "analysis_fallback_reason": analysis_fallback_reason,
            "missing": list(extraction.missing),
            "observed_at": verified_at,
            "record_kind": DECISION,
            "request_method": request_method,
            "request_path": request_path,
        }
        if decision.tool_call is not None:
            observation["tool_use_id"] = decision.tool_call.id
            if not decision.tool_call.finished:
                observation["executed"] = False
        if exchange_started_at is not None:
            observation["exchange_started_at"] = _iso(exchange_started_at)
        if exchange_ended_at is not None:
            observation["exchange_ended_at"] = _iso(exchange_ended_at)
        trace["observation"] = observation
        traces.append(trace)
    return traces


def _unverified(card: dict[str, Any], why: str, field: str) -> dict[str, Any]:
    """A verification that gives no verdict: verified false, no checks ran, a warning saying why."""
    return {
        "verified": False,
        "violations": [],
        "warnings": [{"type": "not_verified", "description": why, "trace_field": field}],
        "card_id": card.get("card_id", ""),
        "checks_performed": [],
    }


def build_activity_trace(
    *,
    exchange_id: str,
    agent_id: str,
    session_id: str | None,
    card: dict[str, Any],
    method: str,
    path: str,
    http_status: int,
    streamed: bool,
    outcome: str,
    outcome_detail: str = "",
    exchange_started_at: datetime | None,
    exchange_ended_at: datetime | None,
    observed_at: datetime,
    environment: dict[str, Any] | None = None,
    missing: list[str] | None = None,
    provider: str = "",
) -> dict[str, Any]:
    """The one record of an API call that is not a model call: what was called and how it
    ended. Not a decision: no analysis, no verification verdict, never scored or fed to drift.
    The query string is left out (it may carry anything); the path is enough to say what it was."""
    when = _iso(exchange_ended_at or exchange_started_at or observed_at)
    verified_at = _iso(observed_at)
    method = method.upper()[:16]
    path = redact_text(path)[:1000]
    called = f"{method} {path}".strip()
    ended = f"answered {http_status}" if http_status else outcome.replace("_", " ")
    trace: dict[str, Any] = {
        "trace_id": trace_id_for(exchange_id, 0),
        "agent_id": agent_id,
        "card_id": card.get("card_id", ""),
        "timestamp": when,
        "action": {
            "type": "recommend",
            "name": "api_activity",
            "category": "bounded",
            "target": {"type": "api", "identifier": called},
            "parameters": {"method": method, "path": path, "http_status": http_status},
        },
        "decision": {
            "alternatives_considered": [{"option_id": "taken", "description": f"{called} ({ended})"}],
            "selected": "taken",
            "selection_reasoning": "API activity, not a model call: recorded, but not a decision of the "
                                   "agent, so it is neither verified against the card nor scored.",
            "values_applied": [],
        },
        "escalation": {
            "evaluated": False,
            "triggers_checked": [],
            "required": False,
            "reason": "API activity is not an agent decision: nothing to evaluate.",
        },
        "context": {
            "prior_trace_ids": [],
            "environment": {**redact(environment or {}), "provider": provider_of(provider)},
            "metadata": {"exchange_id": exchange_id, "decision_index": 0, "decision_count": 1,
                         "decision_kind": ACTIVITY},
        },
        "verification": {
            **_unverified(card, "Not verified: API activity is not a decision.", "observation.record_kind"),
            "verified_at": verified_at,
        },
    }
    if session_id:
        trace["context"]["session_id"] = session_id
    observation: dict[str, Any] = {
        "exchange_id": exchange_id,
        "decision_index": 0,
        "model": "",
        "provider": provider_of(provider),
        "outcome": outcome,
        "outcome_detail": outcome_detail,
        "streamed": streamed,
        "stop_reason": "",
        "http_status": http_status,
        "analyzer": "",
        "analysis_fallback_reason": "",
        "missing": list(missing or []),
        "observed_at": verified_at,
        "record_kind": ACTIVITY,
        "request_method": method,
        "request_path": path,
    }
    if exchange_started_at is not None:
        observation["exchange_started_at"] = _iso(exchange_started_at)
    if exchange_ended_at is not None:
        observation["exchange_ended_at"] = _iso(exchange_ended_at)
    trace["observation"] = observation
    return trace
