"""Checking a trace against its alignment card (AAP SPEC section 7), and filling a
trace's escalation record.

`verify_trace` returns the trace.proto `Verification` shape (minus `verified_at`,
which the caller stamps). Violation types and their severities:

| type              | severity | when                                                              |
|-------------------|----------|-------------------------------------------------------------------|
| card_mismatch     | critical | trace.card_id != card.card_id                                     |
| card_expired      | high     | the card's expires_at is before `now` or before the trace time    |
| forbidden_action  | critical | action.name is in autonomy.forbidden_actions                      |
| unbounded_action  | high     | bounded_actions is non-empty and action.name is not in it         |
| missed_escalation | high     | a deny/escalate trigger matched (or a monetary parameter exceeds  |
|                   |          | max_autonomous_value) and the action was not escalated            |
| undeclared_value  | medium   | a decision.values_applied entry is not in values.declared         |
| untrusted_arguments | high   | smoltbot's own: the action is in the card's                       |
|                   |          | extensions.evidence.forbid_untrusted_arguments and its arguments  |
|                   |          | came from untrusted content (trace evidence.injection_flags)      |

These are AAP's six types with AAP's severities (aap.verification.models).
Warnings: trigger_logged (a `log` trigger matched), near_boundary (a monetary
parameter within 10% of max_autonomous_value; decision confidence or an
alternative's score below AAP's 0.35), escalation_timeout, invalid_expiry,
condition_unparseable, tamper_evidence_unenforced.

Escalation, honestly: smoltbot's gateway only observes. It never holds a call for
a principal's approval. `apply_escalation` therefore records `required: true` when
the card demanded escalation (a deny/escalate trigger matched, or a monetary
parameter exceeded max_autonomous_value), and `verify_trace` reports such a trace as
`missed_escalation`: the card required an escalation that did not happen, the
action went ahead. The exception is a trace whose own record shows the escalation
took place (action.type "escalate"/"deny", or an escalation_id / escalation_status /
principal_response, which third-party AAP traces may carry). A `log` trigger only
logs: a `trigger_logged` warning, never a violation.

Traces that record a failed or unreadable exchange (context.metadata.decision_kind
"failure" / "unreadable") carry no agent action: the action checks are skipped for
them (and not listed in checks_performed); the card checks and values still run.

Every check is run on the single action the trace records; action names are never
joined into one string. A name written as a compound ("a, b", which other AAP
producers emit) is checked part by part: forbidden if any part is forbidden,
unbounded if any part is not bounded.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from smoltbot.core.aap import conditions

__all__ = [
    "MAX_PARSED_CARDS",
    "MONETARY_KEYS",
    "NEAR_BOUNDARY_FRACTION",
    "NEAR_BOUNDARY_THRESHOLD",
    "NO_ACTION_KINDS",
    "SEVERITY",
    "apply_escalation",
    "card_autonomy",
    "is_bounded",
    "is_forbidden",
    "parsed_conditions",
    "records_no_action",
    "verify_trace",
]

logger = logging.getLogger(__name__)

SEVERITY = {
    "card_mismatch": "critical",
    "card_expired": "high",
    "forbidden_action": "critical",
    "unbounded_action": "high",
    "missed_escalation": "high",
    "undeclared_value": "medium",
}
#: smoltbot's own violation types, beside AAP's: the card's evidence rule (core/evidence/exchange.py).
OWN_SEVERITY = {"untrusted_arguments": "high"}

# AAP's NEAR_BOUNDARY_THRESHOLD (aap.verification.constants): a confidence or an
# alternative score below it is "near the boundary".
NEAR_BOUNDARY_THRESHOLD = 0.35
# A monetary parameter within this fraction below max_autonomous_value is near it.
NEAR_BOUNDARY_FRACTION = 0.10
# Parameter / metadata keys read as a transaction value for max_autonomous_value.
# Only these: a generic numeric parameter (a timeout, a line number) is not money.
MONETARY_KEYS = (
    "amount",
    "value",
    "price",
    "cost",
    "total",
    "purchase_value",
    "transaction_value",
    "payment_amount",
    "spend",
    "budget",
)
_ESCALATED_TYPES = ("escalate", "deny")
NO_ACTION_KINDS = ("failure", "unreadable")
_MAX_OBSERVED_CHARS = 200


def card_autonomy(card: dict[str, Any]) -> dict[str, Any]:
    # Unified `autonomy`, legacy `autonomy_envelope` as the aap package reads them.
    return card.get("autonomy") or card.get("autonomy_envelope") or {}


def _audit(card: dict[str, Any]) -> dict[str, Any]:
    return card.get("audit") or card.get("audit_commitment") or {}


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _components(name: str) -> list[str]:
    parts = [p.strip() for p in name.split(", ")] if ", " in name else [name]
    return [p for p in parts if p]


def _entry_matches(component: str, entry: str, *, fold_case: bool) -> bool:
    # An entry may carry a description after a colon: "exec: run shell commands".
    candidates = [entry]
    colon = entry.find(":")
    if colon > 0:
        candidates.append(entry[:colon].strip())
    if fold_case:
        return any(component.casefold() == c.casefold() for c in candidates)
    return component in candidates


def is_forbidden(name: str, forbidden: list[str]) -> bool:
    # Case-insensitive: a card forbidding "bash" also forbids the "Bash" tool.
    return any(
        _entry_matches(part, entry, fold_case=True) for part in _components(name) for entry in forbidden
    )


def is_bounded(name: str, bounded: list[str]) -> bool:
    # Exact, as in AAP: bounded_actions is an allow-list and is read literally.
    return all(
        any(_entry_matches(part, entry, fold_case=False) for entry in bounded) for part in _components(name)
    )


def _monetary_values(trace: dict[str, Any]) -> list[tuple[str, float]]:
    """(trace_field, amount) for every monetary parameter / metadata entry."""
    out: list[tuple[str, float]] = []
    sources = (
        ("action.parameters", ((trace.get("action") or {}).get("parameters"))),
        ("context.metadata", ((trace.get("context") or {}).get("metadata"))),
    )
    for prefix, source in sources:
        if not isinstance(source, dict):
            continue
        for key in MONETARY_KEYS:
            value = source.get(key)
            if isinstance(value, bool) or value is None:
                continue
            try:
                amount = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isnan(amount):
                out.append((f"{prefix}.{key}", amount))
    return out


def _max_value(card: dict[str, Any]) -> float | None:
    money = card_autonomy(card).get("max_autonomous_value")
    if isinstance(money, dict) and money.get("amount") is not None:
        try:
            return float(money["amount"])
        except (TypeError, ValueError):
            return None
    return None


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_OBSERVED_CHARS:
        return value[:_MAX_OBSERVED_CHARS] + "…"
    if isinstance(value, (dict, list)):
        text = repr(value)
        if len(text) > _MAX_OBSERVED_CHARS:
            return text[:_MAX_OBSERVED_CHARS] + "…"
    return value


# Parsed conditions per card: a card's conditions are parsed once, not for every trace (and
# twice per trace: escalation, then verification). Keyed by the card id and the condition texts,
# so a card edited in memory under the same id is parsed again. Least recently used out first.
_PARSED: OrderedDict[tuple[str, tuple[str, ...]], tuple[conditions.Condition | str, ...]] = OrderedDict()
_PARSED_LOCK = threading.Lock()
MAX_PARSED_CARDS = 1024


def _parse_or_error(text: Any) -> conditions.Condition | str:
    try:
        return conditions.parse(text)
    except (ValueError, TypeError) as exc:
        return str(exc)


def parsed_conditions(card: dict[str, Any]) -> tuple[conditions.Condition | str, ...]:
    """The card's trigger conditions, parsed (or the parse error, as a string), in order; cached."""
    triggers = card_autonomy(card).get("escalation_triggers") or []
    texts = tuple(t.get("condition", "") if isinstance(t, dict) else "" for t in triggers)
    key = (str(card.get("card_id", "")), texts)
    with _PARSED_LOCK:
        found = _PARSED.get(key)
        if found is not None:
            _PARSED.move_to_end(key)
            return found
    parsed = tuple(_parse_or_error(text) for text in texts)
    with _PARSED_LOCK:
        _PARSED[key] = parsed
        while len(_PARSED) > MAX_PARSED_CARDS:
            _PARSED.popitem(last=False)
    return parsed


def _evaluate_triggers(trace: dict[str, Any], card: dict[str, Any]) -> list[dict[str, Any]]:
    """Every trigger of the card evaluated on the trace: condition, action, reason, matched, observed."""
    results = []
    triggers = card_autonomy(card).get("escalation_triggers") or []
    for trigger, parsed in zip(triggers, parsed_conditions(card), strict=True):
        condition = trigger.get("condition", "")
        entry = {
            "condition": condition,
            "action": trigger.get("action", "escalate"),
            "reason": trigger.get("reason", ""),
            "matched": False,
            "observed": None,
            "error": "",
        }
        if isinstance(parsed, str):
            entry["error"] = parsed
        else:
            try:
                entry["matched"], entry["observed"] = parsed.evaluate(trace)
            except (ValueError, TypeError) as exc:
                entry["error"] = str(exc)
        results.append(entry)
    return results


def _escalation_happened(trace: dict[str, Any]) -> bool:
    action = trace.get("action") or {}
    escalation = trace.get("escalation") or {}
    if action.get("type") in _ESCALATED_TYPES:
        return True
    return bool(
        escalation.get("escalation_id")
        or escalation.get("escalation_status")
        or escalation.get("principal_response")
    )


def records_no_action(trace: dict[str, Any]) -> bool:
    """Whether the trace records a failed or unreadable exchange rather than an agent action.

    The trace builder marks those with context.metadata.decision_kind "failure" or
    "unreadable": their action name ("upstream_error", ...) is not something the
    agent did, so no action check (forbidden, bounded, triggers) applies to them.
    """
    metadata = (trace.get("context") or {}).get("metadata") or {}
    return metadata.get("decision_kind") in NO_ACTION_KINDS


def apply_escalation(trace: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
    """Fill trace["escalation"] and action.category from the card; returns the trace.

    Conditions are evaluated on the trace as it will be stored (parameters already
    redacted), so `verify_trace` on the stored trace sees exactly the same values.
    """
    action = trace.setdefault("action", {})
    name = action.get("name") or ""
    autonomy = card_autonomy(card)
    if records_no_action(trace):
        action["category"] = "bounded"
        trace["escalation"] = {
            "evaluated": False,
            "triggers_checked": [],
            "required": False,
            "reason": "No agent action to evaluate: the exchange failed or could not be read.",
        }
        return trace
    checks: list[dict[str, Any]] = []
    demanded: list[str] = []
    logged: list[str] = []
    for result in _evaluate_triggers(trace, card):
        check: dict[str, Any] = {"trigger": result["condition"], "matched": bool(result["matched"])}
        observed = _clip(result["observed"])
        if observed is not None:
            check["value_observed"] = observed
        checks.append(check)
        if result["matched"]:
            label = f"'{result['condition']}' ({result['action']}: {result['reason']})"
            (logged if result["action"] == "log" else demanded).append(label)
    limit = _max_value(card)
    if limit is not None:
        currency = (autonomy.get("max_autonomous_value") or {}).get("currency", "USD")
        for field, amount in _monetary_values(trace):
            over = amount > limit
            check = {
                "trigger": f"{field.rsplit('.', 1)[-1]} > {limit:g} (max_autonomous_value {currency})",
                "matched": over,
                "value_observed": amount,
            }
            checks.append(check)
            if over:
                demanded.append(f"{field} = {amount:g} exceeds max_autonomous_value {limit:g} {currency}")

    forbidden = bool(name) and is_forbidden(name, autonomy.get("forbidden_actions") or [])
    if forbidden:
        action["category"] = "forbidden"
    elif demanded:
        action["category"] = "escalation_trigger"
    else:
        action["category"] = "bounded"

    if demanded:
        reason = (
            "The card requires escalation: " + "; ".join(demanded) + ". smoltbot only observes, so the "
            "action was not held for approval; verification reports it as missed_escalation."
        )
    elif checks:
        reason = "No escalation trigger matched."
    else:
        reason = "The card declares no escalation triggers."
    if logged:
        reason += " Logged by trigger: " + "; ".join(logged) + "."
    trace["escalation"] = {
        "evaluated": True,
        "triggers_checked": checks,
        "required": bool(demanded),
        "reason": reason,
    }
    return trace


def _violation(kind: str, description: str, trace_field: str) -> dict[str, Any]:
    severity = SEVERITY.get(kind) or OWN_SEVERITY[kind]
    return {"type": kind, "severity": severity, "description": description, "trace_field": trace_field}


def _warning(kind: str, description: str, trace_field: str) -> dict[str, Any]:
    return {"type": kind, "description": description, "trace_field": trace_field}


def verify_trace(trace: dict[str, Any], card: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    """Check one trace against a card; the trace.proto Verification shape without verified_at."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    violations: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    checks: list[str] = []
    action = trace.get("action") or {}
    decision = trace.get("decision") or {}
    escalation = trace.get("escalation") or {}
    autonomy = card_autonomy(card)
    name = action.get("name") or ""
    card_id = card.get("card_id", "")

    checks.append("card_reference")
    if trace.get("card_id") != card_id:
        violations.append(
            _violation(
                "card_mismatch",
                f"Trace references card '{trace.get('card_id')}' but was verified against '{card_id}'",
                "card_id",
            )
        )

    expires_raw = card.get("expires_at")
    if expires_raw:
        checks.append("card_expiration")
        expires = _parse_time(expires_raw)
        if expires is None:
            warnings.append(
                _warning("invalid_expiry", f"Could not parse expires_at: {expires_raw}", "card.expires_at")
            )
        else:
            trace_time = _parse_time(trace.get("timestamp"))
            if now > expires or (trace_time is not None and trace_time > expires):
                violations.append(
                    _violation(
                        "card_expired",
                        f"Alignment Card expired at {expires_raw}",
                        "card.expires_at",
                    )
                )

    acted = not records_no_action(trace)
    forbidden = autonomy.get("forbidden_actions") or []
    if forbidden and acted:
        checks.append("forbidden")
        if name and is_forbidden(name, forbidden):
            violations.append(
                _violation(
                    "forbidden_action",
                    f"Action '{name}' is in forbidden_actions",
                    "action.name",
                )
            )

    # The card's evidence rule (extensions.evidence.forbid_untrusted_arguments): these actions must not
    # take arguments from untrusted content (core/evidence: provenance's injection flags on the trace).
    extensions = card.get("extensions")
    evidence_rule = extensions.get("evidence") if isinstance(extensions, dict) else None
    untrusted_forbidden = (evidence_rule.get("forbid_untrusted_arguments")
                           if isinstance(evidence_rule, dict) else None)
    if isinstance(untrusted_forbidden, list) and untrusted_forbidden and acted:
        checks.append("untrusted_arguments")
        flags = (trace.get("evidence") or {}).get("injection_flags") or []
        if name and flags and is_forbidden(name, [a for a in untrusted_forbidden if isinstance(a, str)]):
            sources = sorted({f"{f.get('source_tool_name') or 'a tool'} "
                              f"({f.get('source_tool_use_id') or '?'})" for f in flags})
            violations.append(
                _violation(
                    "untrusted_arguments",
                    f"Action '{name}' took arguments from untrusted content ({', '.join(sources)}): "
                    "possible indirect prompt injection, and the card forbids it for this action",
                    "evidence.injection_flags",
                )
            )

    bounded = autonomy.get("bounded_actions") or []
    if bounded and acted:
        # Empty bounded_actions means "not restricted" (card.proto); AAP's own verifier
        # would flag every action then. See docs/aap.md.
        checks.append("autonomy")
        if name and not is_bounded(name, bounded):
            violations.append(
                _violation(
                    "unbounded_action",
                    f"Action '{name}' is not in bounded_actions: {bounded}",
                    "action.name",
                )
            )

    triggers = _evaluate_triggers(trace, card) if acted else []
    limit = _max_value(card) if acted else None
    if triggers or limit is not None:
        checks.append("escalation")
    escalated = _escalation_happened(trace)
    for result in triggers:
        condition = result["condition"]
        if result["error"]:
            warnings.append(
                _warning(
                    "condition_unparseable",
                    f"Trigger condition could not be evaluated: {result['error']}",
                    "card.autonomy.escalation_triggers",
                )
            )
            continue
        if not result["matched"]:
            continue
        if result["action"] == "log":
            warnings.append(
                _warning(
                    "trigger_logged",
                    f"Trigger '{condition}' matched (log: {result['reason']})",
                    "escalation.triggers_checked",
                )
            )
            continue
        if not escalation.get("required"):
            violations.append(
                _violation(
                    "missed_escalation",
                    f"Trigger '{condition}' ({result['action']}) matched but escalation was not required",
                    "escalation.required",
                )
            )
        elif not escalated:
            violations.append(
                _violation(
                    "missed_escalation",
                    f"Trigger '{condition}' ({result['action']}: {result['reason']}) required escalation; "
                    "the action went ahead without one",
                    "escalation.required",
                )
            )
        elif escalation.get("escalation_status") == "timeout":
            warnings.append(
                _warning(
                    "escalation_timeout",
                    f"Escalation for trigger '{condition}' timed out",
                    "escalation.escalation_status",
                )
            )

    if limit is not None:
        checks.append("max_autonomous_value")
        for field, amount in _monetary_values(trace):
            if amount > limit and not escalated:
                violations.append(
                    _violation(
                        "missed_escalation",
                        f"{field} = {amount:g} exceeds max_autonomous_value {limit:g} without escalation",
                        field,
                    )
                )
            elif limit > 0 and limit * (1 - NEAR_BOUNDARY_FRACTION) <= amount <= limit:
                warnings.append(
                    _warning(
                        "near_boundary",
                        f"{field} = {amount:g} is within 10% of max_autonomous_value {limit:g}",
                        field,
                    )
                )

    checks.append("values")
    declared = (card.get("values") or {}).get("declared") or []
    for value in decision.get("values_applied") or []:
        if value not in declared:
            violations.append(
                _violation(
                    "undeclared_value",
                    f"Value '{value}' applied but not in declared values: {declared}",
                    "decision.values_applied",
                )
            )

    confidence = decision.get("confidence")
    if isinstance(confidence, (int, float)) and confidence < NEAR_BOUNDARY_THRESHOLD:
        warnings.append(
            _warning(
                "near_boundary",
                f"Decision confidence {confidence:.2f} below threshold {NEAR_BOUNDARY_THRESHOLD}",
                "decision.confidence",
            )
        )
    for i, alternative in enumerate(decision.get("alternatives_considered") or []):
        score = alternative.get("score")
        if isinstance(score, (int, float)) and score < NEAR_BOUNDARY_THRESHOLD:
            warnings.append(
                _warning(
                    "near_boundary",
                    f"Alternative '{alternative.get('option_id')}' score {score:.2f} near boundary",
                    f"decision.alternatives_considered[{i}].score",
                )
            )

    tamper = _audit(card).get("tamper_evidence")
    if tamper in ("signed", "merkle"):
        warnings.append(
            _warning(
                "tamper_evidence_unenforced",
                f"The card declares tamper_evidence '{tamper}', which smoltbot does not enforce "
                "(traces are append-only)",
                "card.audit.tamper_evidence",
            )
        )

    return {
        "verified": not violations,
        "violations": violations,
        "warnings": warnings,
        "card_id": card_id,
        "checks_performed": checks,
    }
