"""Response and request models of the public API (built from protobuf by `smoltbot.api.convert`).

Field names are stable: the CLI and other clients read them. Traces, cards and drift alerts
are the protobuf JSON mapping with proto field names (so a trace is an AAP trace plus
`verification` and `observation`); fields protobuf leaves out when unset (`optional` scalars
and sub-messages) are left out here too. Our own shapes (agents, sessions, integrity, lists)
always carry every field, `null` when unknown. Timestamps are RFC 3339 strings in UTC.

JSON values in traces (action parameters, observed trigger values, environment, metadata) are
served exactly as captured: 5 stays 5, 5.0 stays 5.0, 1234567890123456789 stays exact. The
observer sends them as JSON text beside protobuf's Struct (whose numbers are doubles), and
`smoltbot.api.convert.trace_out` decodes that text.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt

from smoltbot.core.ids import AGENT_ID_PATTERN, SESSION_ID_PATTERN, TOOL_USE_ID_PATTERN

__all__ = [
    "Agent",
    "AgentDataDeleted",
    "AgentList",
    "AgentSummary",
    "AgentUsage",
    "BackendState",
    "Card",
    "CardList",
    "ClaimRequest",
    "Cursor",
    "DateTime",
    "DriftAlert",
    "DriftAlertList",
    "ErrorResponse",
    "Health",
    "Integrity",
    "IntegrityPoint",
    "IntegrityWindow",
    "ResolveResponse",
    "Session",
    "SessionDetail",
    "SessionDivergence",
    "SessionHistory",
    "SessionIntegrity",
    "SessionList",
    "SessionReport",
    "SessionSubAgent",
    "SessionTurn",
    "SessionUsageSummary",
    "SessionsUsage",
    "Timestamp",
    "ToolExecution",
    "ToolExecutionReport",
    "Trace",
    "TraceList",
    "UsageGroup",
    "UsageTotals",
]

def _rfc3339(value: Any) -> Any:
    # pydantic would also take numbers ("0.5" as a Unix time); the API promises RFC 3339.
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339_RE.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time, e.g. 2026-11-24T17:40:00Z")


_RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$")
#: A date-time parameter or field: RFC 3339 only; without an offset it is taken as UTC.
DateTime = Annotated[datetime, BeforeValidator(_rfc3339)]


Timestamp = Annotated[
    str, Field(json_schema_extra={"format": "date-time"}, examples=["2026-11-24T17:40:02.123Z"])
]
Cursor = Annotated[
    str | None, Field(description="Pass as `cursor` to get the next page; null on the last page.")
]


# --------------------------------------------------------------------------- errors

class ErrorDetail(BaseModel):
    code: int = Field(description="The HTTP status.", examples=[404])
    status: str = Field(description="The gRPC status name (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, ...), "
                                    "or the HTTP reason for errors with no gRPC equivalent "
                                    "(METHOD_NOT_ALLOWED).", examples=["NOT_FOUND"])
    reason: str = Field(description="Machine-readable UPPER_SNAKE reason (the gRPC ErrorInfo reason).",
                        examples=["AGENT_NOT_FOUND"])
    message: str = Field(description="What went wrong and what to fix, for people.")
    field: str | None = Field(description="The parameter or body field to fix, when there is one.",
                              examples=["limit"])


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


# --------------------------------------------------------------------------- agents

class AgentSummary(BaseModel):
    agent_id: str = Field(examples=["smolt-0a1b2c3d"])
    created_at: Timestamp | None
    last_seen_at: Timestamp | None = Field(description="Last call seen through the gateway or a plugin.")
    claimed: bool = Field(description="Whether an owner has claimed the agent.")
    claimed_at: Timestamp | None
    active_card_id: str | None = Field(description="The alignment card traces are checked against.")


class Agent(AgentSummary):
    trace_count: int = Field(description="Traces of this agent, all time.")


class AgentList(BaseModel):
    items: list[AgentSummary] = Field(description="Most recently seen first.")
    next_cursor: Cursor


class ResolveResponse(BaseModel):
    agent_id: str = Field(examples=["smolt-0a1b2c3d"])
    created: bool = Field(description="True when this call created the agent.")


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$",
                              description="Contact of the owner; stored, never shown publicly.")


class AgentDataDeleted(BaseModel):
    """What `DELETE /v1/agents/{agent_id}/data` deleted."""

    agent_id: str
    deleted_rows: dict[str, int] = Field(
        description="Rows deleted per table, in the Observer's store (traces, violations, usage, drift, "
        "tool executions, exchange records, raw payloads) and the Registry's (the agent, its credential "
        "hash, claim, sessions, cards).")


# --------------------------------------------------------------------------- traces (AAP)

class ActionTarget(BaseModel):
    type: str
    identifier: str


class TraceAction(BaseModel):
    type: str = Field(description="recommend | execute | escalate | deny.")
    name: str = Field(description='The tool name, or "respond" for a reply with no tool call.')
    category: str = Field(description="bounded | escalation_trigger | forbidden.")
    target: ActionTarget | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="The tool input, secrets redacted.")


class Alternative(BaseModel):
    option_id: str
    description: str
    score: float | None = None
    scoring_factors: dict[str, float]
    flags: list[str]


class TraceDecision(BaseModel):
    alternatives_considered: list[Alternative]
    selected: str = Field(description="The option_id of the chosen alternative.")
    selection_reasoning: str
    values_applied: list[str]
    confidence: float | None = None


class TriggerCheck(BaseModel):
    trigger: str
    matched: bool
    value_observed: Any = None


class TraceEscalation(BaseModel):
    evaluated: bool
    triggers_checked: list[TriggerCheck]
    required: bool
    reason: str


class TraceContext(BaseModel):
    session_id: str | None = None
    conversation_turn: int | None = None
    prior_trace_ids: list[str]
    environment: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class Violation(BaseModel):
    type: str = Field(description="forbidden_action | unbounded_action | missed_escalation | ...")
    severity: str = Field(description="low | medium | high | critical.")
    description: str
    trace_field: str


class VerificationWarning(BaseModel):
    type: str
    description: str
    trace_field: str


class Verification(BaseModel):
    verified: bool
    violations: list[Violation]
    warnings: list[VerificationWarning]
    card_id: str
    verified_at: Timestamp | None = None
    checks_performed: list[str]


class TraceReasoning(BaseModel):
    present: bool = Field(description="Whether the turn carried readable reasoning.")
    source: str
    signature_present: bool
    redacted_blocks: int
    chars: int
    excerpt: str
    text: str
    summary_only: bool = Field(default=False, description=(
        "True when the reasoning read is only the provider's summary of it, not the reasoning itself "
        "(OpenAI reasoning summaries, Gemini thought summaries)."))


class TraceObservation(BaseModel):
    exchange_id: str
    decision_index: int
    model: str
    outcome: str = Field(description="complete | upstream_error | mid_stream_error | client_abort | "
                                     "upstream_unreachable | upstream_dropped | processing_failed | "
                                     "capture_failed.")
    outcome_detail: str
    streamed: bool
    stop_reason: str
    http_status: int
    reasoning: TraceReasoning | None = None
    analyzer: str
    analysis_fallback_reason: str
    missing: list[str]
    tool_use_id: str
    executed: bool | None = None
    exchange_started_at: Timestamp | None = None
    exchange_ended_at: Timestamp | None = None
    observed_at: Timestamp | None = None
    record_kind: str = Field(default="decision", description=(
        "decision: a model call (Anthropic POST /v1/messages, OpenAI chat/completions or responses, Gemini "
        "generateContent), verified and counted in integrity. activity: any other API call (count_tokens, "
        "models, embeddings, batches, files, ...), recorded but never a decision and never counted in "
        "integrity or drift."))
    provider: str = Field(default="anthropic", description="The provider called: anthropic | openai | "
                                                           "gemini.")
    api: str = Field(default="", description=(
        "The API a model call spoke: anthropic.messages | openai.chat | openai.responses | gemini.generate "
        "(empty for API activity)."))
    request_method: str = Field(default="", description="The request's method, e.g. POST.")
    request_path: str = Field(default="", description="The upstream path called, e.g. /v1/messages.")
    session_rung: str = Field(default="", description=(
        "Which rung of the session ladder named the session: x-smoltbot-session, x-claude-code-session-id, "
        "metadata.user_id, metadata.user_id:legacy, session-id, thread-id, x-session-affinity, none."))
    sub_agent_id: str = Field(default="", description="Set when a sub-agent made the call: its id.")
    parent_agent_id: str = Field(default="", description="The sub-agent's parent (empty: the main agent).")
    sub_agent_type: str = Field(default="", description="The sub-agent's type (Claude Code: Explore, ...).")


class TraceEnforcement(BaseModel):
    """What the gateway did about the card on this decision (docs/enforce.md)."""

    mode: str = Field(default="", description=(
        "The card's mode for the call: off | observe | nudge | enforce, or unknown (the card could not be "
        "read)."))
    verdict: str = Field(default="", description=(
        "The card's verdict on the tool call: allow | deny | escalate (empty without a tool call)."))
    action: str = Field(default="", description=(
        "What the gateway did: allowed | blocked | escalated | nudged | not_enforced."))
    reason: str = Field(default="", description="Which rule of the card decided, or why none was enforced.")
    card_id: str = Field(default="", description="The card the gateway enforced (empty when none was read).")


class HistoryFinding(BaseModel):
    kind: str = Field(description="unrelayed_turn | edited_turn | unrequested_tool_call | orphan_tool_result "
                                  "| edited_tool_result | out_of_order_turn")
    message_index: int = Field(description="Index in the request's `messages`.")
    description: str
    block_index: int | None = None
    tool_use_id: str = ""
    turn_seq: int | None = Field(default=None, description="The ledger's number of the relayed turn.")


class HistoryRewrite(BaseModel):
    kind: str = Field(description="compaction | context_edit | thinking_dropped | truncated_front | "
                                  "first_message_changed: changes a client may make, recorded, not flagged.")
    message_index: int
    description: str


class HistoryCheck(BaseModel):
    """The call's resent history checked against the turns the gateway relayed in its session."""

    status: str = Field(description="intact | diverged | unchecked (no session).")
    assistant_turns: int = 0
    verified_turns: int = Field(default=0, description="Assistant turns that match a relayed turn.")
    ledger_turns: int = Field(default=0, description="Turns relayed in the session before this call.")
    diverged_at: int | None = Field(default=None, description="First message index that did not happen.")
    findings: list[HistoryFinding] = []
    rewrites: list[HistoryRewrite] = []
    notes: list[str] = []


class ArgumentProvenance(BaseModel):
    path: str = Field(description="The argument's path in the tool input.")
    origin: str = Field(description="user | system | card | tool_result | model (found nowhere earlier).")
    value_chars: int = 0
    matched_chars: int = 0
    message_index: int | None = None
    tool_use_id: str = Field(default="", description="For a tool_result origin: which call's result.")
    tool_name: str = ""
    excerpt: str = ""
    untrusted: bool = False
    also: list[str] = []


class InjectionFlag(BaseModel):
    """An argument built from an untrusted tool's result that no user, system or card text holds."""

    path: str
    matched: str
    source_tool_use_id: str = ""
    source_tool_name: str = ""
    source_message_index: int | None = None
    excerpt: str = ""


class SayDoFinding(BaseModel):
    promise: str
    said: str
    tool_use_id: str = ""
    tool_name: str = ""
    actions: list[str] = []


class TraceEvidence(BaseModel):
    """History integrity and argument provenance (docs/evidence.md)."""

    history: HistoryCheck | None = None
    arguments: list[ArgumentProvenance] = []
    injection_flags: list[InjectionFlag] = []
    say_do: list[SayDoFinding] = []
    notes: list[str] = []


class Trace(BaseModel):
    """An AP-Trace (Agent Alignment Protocol 2.0.0) plus smoltbot's `verification` and `observation`."""

    trace_id: str
    agent_id: str
    card_id: str
    timestamp: Timestamp | None = None
    action: TraceAction | None = None
    decision: TraceDecision | None = None
    escalation: TraceEscalation | None = None
    context: TraceContext | None = None
    verification: Verification | None = None
    observation: TraceObservation | None = None
    enforcement: TraceEnforcement | None = None
    evidence: TraceEvidence | None = None


class TraceList(BaseModel):
    items: list[Trace]
    next_cursor: Cursor


class ToolExecutionReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(pattern=AGENT_ID_PATTERN)
    tool_use_id: str = Field(pattern=TOOL_USE_ID_PATTERN,
                             description="The tool_use block id the agent executed.")
    executed: StrictBool = True


class ToolExecution(BaseModel):
    agent_id: str
    tool_use_id: str
    executed: bool


# --------------------------------------------------------------------------- integrity, drift

class IntegrityWindow(BaseModel):
    total_traces: int
    verified_traces: int
    score: float | None = Field(description="verified / total, 0..1; null when there are no traces.")
    violation_count: int
    violations_by_type: dict[str, int]
    with_reasoning: int = Field(description="Coverage: traces whose exchange carried readable reasoning.")
    with_model_analysis: int = Field(description="Coverage: traces analysed by the model analyzer.")
    failed: int = Field(description="Traces that record a failure (upstream error, abort, processing).")
    activity: int = Field(default=0, description="API activity records (calls other than POST "
                                                 "/v1/messages) in the same span; not decisions, so not in "
                                                 "any figure above.")


class IntegrityPoint(BaseModel):
    bucket_start: Timestamp | None
    total_traces: int
    verified_traces: int
    score: float | None = Field(description="verified / total in this bucket; null when empty.")


class Integrity(BaseModel):
    agent_id: str
    window_size: int = Field(description="Traces in the recent window.")
    computed_at: Timestamp | None
    recent: IntegrityWindow
    all_time: IntegrityWindow
    timeline: list[IntegrityPoint] = Field(description="Per time bucket, oldest first.")
    open_drift_alerts: int
    retained_since: Timestamp | None = Field(
        default=None,
        description="Retention deleted the agent's traces older than this (its card's audit.retention_days), "
        "so `all_time` covers the traces since then; null while nothing was deleted.")
    retention_deleted_traces: int = Field(default=0,
                                          description="Traces of the agent retention deleted so far.")
    history_sessions_checked: int = Field(default=0, description=(
        "Sessions whose resent history was checked against the turns the gateway relayed "
        "(docs/evidence.md)."))
    history_sessions_intact: int = Field(default=0, description=(
        "Of those, sessions in which every check came out intact (rewrites a client may make allowed)."))


class DriftAlert(BaseModel):
    alert_id: str
    agent_id: str
    card_id: str
    direction: str = Field(description="autonomy_expansion | value_drift | principal_misalignment | unknown.")
    severity: str = Field(description="low | medium | high.")
    similarity_score: float
    sustained_traces: int
    trace_ids: list[str]
    reference: str = Field(description="card | baseline.")
    status: str = Field(description="open | resolved (closed by itself when behaviour went back to the "
                                    "reference it was raised against).")
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    analysis: str
    acknowledged_at: Timestamp | None = Field(default=None, description="When the agent's owner acknowledged "
                                                                        "it (it stays open); null: not yet.")
    resolved_at: Timestamp | None = None
    resolution: str = Field(default="", description="How it closed, when it did.")


class DriftAlertList(BaseModel):
    items: list[DriftAlert] = Field(description="Newest first.")
    next_cursor: Cursor


# --------------------------------------------------------------------------- cards (AAP)

class Principal(BaseModel):
    type: str
    identifier: str | None = None
    relationship: str
    escalation_contact: str | None = None


class ValueDefinition(BaseModel):
    name: str | None = None
    description: str
    priority: float


class CardValues(BaseModel):
    declared: list[str]
    definitions: dict[str, ValueDefinition]
    conflicts_with: list[str]
    hierarchy: str | None = None


class EscalationTrigger(BaseModel):
    condition: str
    action: str
    reason: str


class MonetaryValue(BaseModel):
    amount: float
    currency: str


class Autonomy(BaseModel):
    bounded_actions: list[str]
    forbidden_actions: list[str]
    escalation_triggers: list[EscalationTrigger]
    max_autonomous_value: MonetaryValue | None = None


class Audit(BaseModel):
    retention_days: int
    queryable: bool
    trace_format: str
    query_endpoint: str | None = None
    tamper_evidence: str | None = None


class Card(BaseModel):
    """An Alignment Card in AAP's unified shape."""

    card_version: str
    card_id: str
    agent_id: str
    issued_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    autonomy_mode: str
    integrity_mode: str
    principal: Principal | None = None
    values: CardValues | None = None
    autonomy: Autonomy | None = None
    audit: Audit | None = None
    extensions: dict[str, Any] | None = None


class CardList(BaseModel):
    items: list[Card] = Field(description="Newest first.")
    active_card_id: str | None
    next_cursor: Cursor


# --------------------------------------------------------------------------- sessions

SessionSource = Literal["unspecified", "client", "inferred", "plugin"]
SessionStatus = Literal["unspecified", "active", "ended"]


class Session(BaseModel):
    session_id: str
    agent_id: str
    source: SessionSource = Field(description="client (named by the client) | inferred (idle rule) | plugin.")
    status: SessionStatus
    started_at: Timestamp | None
    last_activity_at: Timestamp | None
    ended_at: Timestamp | None
    turn_count: int


class SessionList(BaseModel):
    items: list[Session] = Field(description="Most recently active first.")
    next_cursor: Cursor


class SessionReport(BaseModel):
    """A session event reported by an agent plugin."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(pattern=AGENT_ID_PATTERN)
    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    event: Literal["started", "turn", "ended"]
    turn_count: StrictInt | None = Field(default=None, ge=0, le=2**31 - 1,
                                   description="The session's turn count; without it a turn adds one.")
    occurred_at: DateTime | None = Field(
        default=None, description="When it happened (RFC 3339); default now."
    )


# --------------------------------------------------------------------------- health

BackendState = Literal["serving", "not_serving", "unavailable"]


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="ok when the API and both services serve.")
    registry: BackendState
    observer: BackendState


# --------------------------------------------------------------------------- usage and sessions


class UsageTotals(BaseModel):
    """Tokens and cost of many model calls. Each token part sums the calls that reported it;
    `calls_without` says, per part, how many calls did not (a partial sum is never the whole)."""

    calls: int
    input_tokens: int = Field(description="Uncached prompt tokens.")
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_write_unknown_ttl_tokens: int
    output_tokens: int = Field(description="Generated tokens, reasoning included.")
    reasoning_tokens: int = Field(description="The share of output reported as reasoning (not added again).")
    calls_without: dict[str, int] = Field(description="Part name -> calls that did not report it.")
    known_cost_usd: str = Field(
        description="Exact US dollars (decimal text) of the calls whose cost is known.",
        examples=["0.021265"])
    known_cost_calls: int
    unknown_cost_calls: int = Field(description="Calls of unknown cost (model not in the price table, "
                                                "an unpriced condition, no usage reported): never guessed.")


class UsageGroup(BaseModel):
    key: str = Field(description="The UTC day (YYYY-MM-DD), the model, or the session id.")
    usage: UsageTotals
    turn_count: int | None = Field(default=None, description="group_by=session: the session's user turns.")


class AgentUsage(BaseModel):
    agent_id: str
    group_by: Literal["day", "model", "session"]
    since: Timestamp | None
    until: Timestamp | None
    total: UsageTotals
    groups: list[UsageGroup]


class SessionTurn(BaseModel):
    turn: int | None = Field(description="The conversation turn, 1 first (a user prompt starts one).")
    started_at: Timestamp
    ended_at: Timestamp
    usage: UsageTotals


class SessionSubAgent(BaseModel):
    sub_agent_id: str
    parent_agent_id: str = Field(description="Empty: the session's main agent.")
    agent_type: str = Field(description="Claude Code's agent type (Explore, ...) or Codex's sub-agent kind.")
    source: str = Field(description="claude_code | codex.")
    first_seen: Timestamp
    last_seen: Timestamp
    usage: UsageTotals
    traces: int
    verified_traces: int = Field(description="Checked against the same card as the session's agent.")


class SessionIntegrity(BaseModel):
    traces: int = Field(description="The session's decision traces.")
    verified_traces: int
    violation_count: int
    score: float | None = Field(description="verified / traces; null when there are none.")


class SessionDivergence(BaseModel):
    """A call of the session whose resent history diverged: its check, as its traces carry it."""

    exchange_id: str = Field(description="The call (its traces have `observation.exchange_id`).")
    started_at: Timestamp
    turn: int | None = Field(description="The call's conversation turn (null: outside a turn).")
    diverged_at: int | None = Field(description="First index in the call's `messages` that did not happen.")
    findings: list[HistoryFinding]
    rewrites: list[HistoryRewrite]
    notes: list[str]


class SessionHistory(BaseModel):
    """The session's resent histories checked against the turns the gateway relayed
    (docs/evidence.md): how many checked out, and where each diverged."""

    checked: int = Field(description="Calls whose history was checked (Messages API calls).")
    intact: int
    diverged: int
    divergences: list[SessionDivergence] = Field(
        description="The calls whose history diverged, oldest first (at most 100; `diverged` counts all).")


class SessionDetail(BaseModel):
    agent_id: str
    session_id: str
    session_rungs: list[str] = Field(description="Which rungs of the session ladder named it "
                                                 "(x-smoltbot-session, x-claude-code-session-id, ...).")
    turn_count: int
    first_seen: Timestamp
    last_seen: Timestamp
    total: UsageTotals = Field(description="The whole session, sub-agents included.")
    turns: list[SessionTurn]
    sub_agents: list[SessionSubAgent]
    integrity: SessionIntegrity
    history: SessionHistory = Field(description="Where the session's resent history diverged, if anywhere.")


class SessionUsageSummary(BaseModel):
    """A session's totals as SessionDetail has them, without its turns, sub-agents and history."""

    session_id: str
    turn_count: int
    first_seen: Timestamp
    last_seen: Timestamp
    total: UsageTotals = Field(description="The whole session, sub-agents included.")
    integrity: SessionIntegrity


class SessionsUsage(BaseModel):
    agent_id: str
    items: list[SessionUsageSummary] = Field(
        description="The sessions asked that have recorded model calls, in the order asked "
                    "(a session without any is left out).")
