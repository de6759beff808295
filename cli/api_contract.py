"""Everything the CLI relies on in the REST API, in one place.

`ENDPOINTS` names each call the CLI makes, the query parameters it sends, and the response
schema (an OpenAPI component of the API) it reads. `FIELDS` lists, per schema, every field
the CLI reads. The commands read response fields only through `read` / `read_item`, which
refuse a field that is not listed here, so the lists cannot fall behind the code; and
tests/integration/cli/test_cli_contract.py checks every entry against the API's own OpenAPI
document, so the CLI and the API cannot disagree on a field without a test failing.

Paths are dotted; `[]` marks the items of a list (`items[].trace_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ENDPOINTS", "ERROR_SCHEMA", "FIELDS", "Endpoint", "read", "read_item"]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    #: The OpenAPI component of the success response.
    response: str
    query: tuple[str, ...] = ()
    #: The OpenAPI component of the request body, when the CLI sends one it builds itself.
    body: str | None = None
    body_fields: tuple[str, ...] = ()


ENDPOINTS: dict[str, Endpoint] = {
    "health": Endpoint("GET", "/health", "Health"),
    "resolve": Endpoint("POST", "/v1/agents/resolve", "ResolveResponse"),
    "agent": Endpoint("GET", "/v1/agents/{agent_id}", "Agent"),
    "claim": Endpoint("POST", "/v1/agents/{agent_id}/claim", "AgentSummary", body="ClaimRequest",
                      body_fields=("email",)),
    "agent_traces": Endpoint("GET", "/v1/agents/{agent_id}/traces", "TraceList",
                             query=("limit", "cursor", "session_id", "since", "order")),
    "integrity": Endpoint("GET", "/v1/integrity/{agent_id}", "Integrity"),
    "card": Endpoint("GET", "/v1/agents/{agent_id}/card", "Card"),
    "put_card": Endpoint("PUT", "/v1/agents/{agent_id}/card", "Card"),
    "drift_alerts": Endpoint("GET", "/v1/agents/{agent_id}/drift", "DriftAlertList", query=("limit",)),
    "acknowledge_drift": Endpoint("POST", "/v1/agents/{agent_id}/drift/{alert_id}/acknowledge", "DriftAlert"),
    "agent_sessions": Endpoint("GET", "/v1/agents/{agent_id}/sessions", "SessionList", query=("limit",)),
    "session": Endpoint("GET", "/v1/sessions/{session_id}", "SessionDetail", query=("agent_id",)),
    "sessions_usage": Endpoint("GET", "/v1/agents/{agent_id}/usage/sessions", "SessionsUsage",
                               query=("session_id",)),
    "agent_usage": Endpoint("GET", "/v1/agents/{agent_id}/usage", "AgentUsage",
                            query=("group_by", "since", "until")),
    "delete_agent_data": Endpoint("DELETE", "/v1/agents/{agent_id}/data", "AgentDataDeleted"),
    "create_alert": Endpoint("POST", "/v1/agents/{agent_id}/alerts", "CreatedAlertSubscription",
                             body="NewAlertSubscription",
                             body_fields=("url", "events", "min_severity", "failure_rate_threshold",
                                          "format")),
    "alerts": Endpoint("GET", "/v1/agents/{agent_id}/alerts", "AlertSubscriptionList", query=("limit",)),
    "delete_alert": Endpoint("DELETE", "/v1/agents/{agent_id}/alerts/{subscription_id}",
                             "AlertSubscriptionRemoved"),
    "alert_deliveries": Endpoint("GET", "/v1/agents/{agent_id}/alerts/deliveries", "AlertDeliveryList",
                                 query=("limit", "subscription_id")),
}

#: The error body every failed call carries.
ERROR_SCHEMA = "ErrorResponse"

_WINDOW = ("total_traces", "verified_traces", "score", "violation_count", "violations_by_type",
           "with_reasoning", "with_model_analysis", "failed", "activity")

FIELDS: dict[str, frozenset[str]] = {
    "ErrorResponse": frozenset(
        {"error.code", "error.status", "error.reason", "error.message", "error.field"}
    ),
    "Health": frozenset({"status", "registry", "observer"}),
    "ResolveResponse": frozenset({"agent_id", "created"}),
    "Agent": frozenset(
        {"agent_id", "created_at", "last_seen_at", "claimed", "claimed_at", "trace_count", "active_card_id"}
    ),
    "AgentSummary": frozenset({"agent_id", "claimed", "claimed_at"}),
    "TraceList": frozenset(
        {
            "items",
            "next_cursor",
            "items[].trace_id",
            "items[].timestamp",
            "items[].action.type",
            "items[].action.name",
            "items[].action.category",
            "items[].decision.selected",
            "items[].decision.selection_reasoning",
            "items[].decision.confidence",
            "items[].verification.verified",
            "items[].verification.violations",
            "items[].verification.violations[].type",
            "items[].verification.violations[].severity",
            "items[].verification.violations[].description",
            "items[].context.session_id",
            "items[].observation.outcome",
            "items[].observation.model",
            "items[].observation.record_kind",
            "items[].observation.request_method",
            "items[].observation.request_path",
            "items[].observation.reasoning.present",
            "items[].observation.reasoning.excerpt",
        }
    ),
    "Integrity": frozenset(
        {
            "agent_id",
            "window_size",
            "computed_at",
            "open_drift_alerts",
            "retained_since",
            "retention_deleted_traces",
            "history_sessions_checked",
            "history_sessions_intact",
            *(f"recent.{name}" for name in _WINDOW),
            *(f"all_time.{name}" for name in _WINDOW),
        }
    ),
    "DriftAlertList": frozenset(
        {"items", "items[].alert_id", "items[].created_at", "items[].direction", "items[].severity",
         "items[].status", "items[].acknowledged_at", "items[].resolution", "items[].analysis"}
    ),
    "DriftAlert": frozenset({"alert_id", "acknowledged_at"}),
    "AgentDataDeleted": frozenset({"agent_id", "deleted_rows"}),
    "CreatedAlertSubscription": frozenset({"subscription_id", "destination", "events", "secret"}),
    "AlertSubscriptionList": frozenset(
        {"items", "items[].subscription_id", "items[].url", "items[].events", "items[].min_severity",
         "items[].failure_rate_threshold", "items[].format", "items[].created_at"}
    ),
    "AlertSubscriptionRemoved": frozenset({"subscription_id"}),
    "AlertDeliveryList": frozenset(
        {"items", "items[].delivery_id", "items[].created_at", "items[].event", "items[].state",
         "items[].attempts", "items[].last_status", "items[].last_error", "items[].summary"}
    ),
    "SessionList": frozenset(
        {"items", "items[].session_id", "items[].last_activity_at", "items[].turn_count"}
    ),
    "UsageTotals": frozenset(
        {"calls", "input_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
         "cache_write_unknown_ttl_tokens", "output_tokens", "known_cost_usd", "unknown_cost_calls"}
    ),
    "AgentUsage": frozenset({"groups", "groups[].key", "groups[].usage", "groups[].turn_count", "total"}),
    "SessionsUsage": frozenset({"items", "items[].session_id", "items[].total", "items[].turn_count"}),
    "SessionDetail": frozenset(
        {"session_rungs", "first_seen", "last_seen", "turn_count", "total", "turns", "sub_agents",
         "integrity", "history"}
    ),
    "SessionTurn": frozenset({"turn", "started_at", "usage"}),
    "SessionSubAgent": frozenset(
        {"sub_agent_id", "agent_type", "parent_agent_id", "verified_traces", "traces", "usage"}
    ),
    "SessionIntegrity": frozenset({"traces", "verified_traces"}),
    "SessionHistory": frozenset({"checked", "intact", "diverged", "divergences"}),
    "SessionDivergence": frozenset({"turn", "started_at", "diverged_at", "findings"}),
    "HistoryFinding": frozenset({"kind", "message_index", "description"}),
    "Card": frozenset(
        {
            "card_id",
            "card_version",
            "agent_id",
            "issued_at",
            "expires_at",
            "autonomy_mode",
            "integrity_mode",
            "principal.type",
            "principal.relationship",
            "values.declared",
            "autonomy.bounded_actions",
            "autonomy.forbidden_actions",
            "autonomy.escalation_triggers",
            "autonomy.escalation_triggers[].condition",
            "autonomy.escalation_triggers[].action",
            "audit.retention_days",
            "audit.query_endpoint",
        }
    ),
}

_MISSING = object()


def _check(schema: str, path: str) -> None:
    if path not in FIELDS.get(schema, frozenset()):
        # A programming error: list the field in FIELDS so the contract test covers it.
        raise KeyError(f"the CLI reads {schema}.{path}, which api_contract.FIELDS does not list")


def _walk(document: Any, dotted: str, default: Any) -> Any:
    value = document
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return default
        value = value.get(part, _MISSING)
        if value is _MISSING or value is None:
            return default
    return value


def read(document: Any, schema: str, path: str, default: Any = None) -> Any:
    """`document[path]` of a `schema` response; `default` when absent or null."""
    _check(schema, path)
    return _walk(document, path, default)


def read_item(item: Any, schema: str, list_path: str, path: str, default: Any = None) -> Any:
    """`item[path]`, where `item` is one element of the list at `list_path` in a `schema` response."""
    _check(schema, f"{list_path}[].{path}")
    return _walk(item, path, default)
