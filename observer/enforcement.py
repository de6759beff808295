"""What the gateway did about the card on a call (`Exchange.enforcement`), onto each of its traces.

A trace of a tool call gets that call's verdict and action (matched by tool_use id; a provider
whose calls may carry none, Gemini's functionCall parts, by name and order: the k-th id-less call
of a name in the answer, as the gateway and the observer both read the answer in order); any other
decision of the call (a reply, a failure) gets the call's mode and the action its call had as a
whole: `not_enforced` when the card did not ask for enforcement or could not be read, else
`allowed`. Exchanges from gateways older than enforcement carry none and their traces get none.
The trace's own verification stays the observer's: "the card said deny and the call went
through" is a trace with `verification.verified` false and an action other than `blocked`.
"""

from __future__ import annotations

from typing import Any

from smoltbot.v1 import exchange_pb2

__all__ = ["ENFORCEMENT_ACTIONS", "annotate_enforcement"]

#: The values of `TraceEnforcement.action`, the traces list filter's vocabulary.
ENFORCEMENT_ACTIONS = ("allowed", "blocked", "escalated", "nudged", "not_enforced")
_ENFORCED_MODES = ("nudge", "enforce")


def annotate_enforcement(traces: list[dict[str, Any]], exchange: exchange_pb2.Exchange) -> None:
    if not exchange.HasField("enforcement"):
        return
    record = exchange.enforcement
    calls = {call.tool_use_id: call for call in record.tool_calls if call.tool_use_id}
    unnamed: dict[str, list[exchange_pb2.EnforcedToolCall]] = {}
    for record_call in sorted((c for c in record.tool_calls if not c.tool_use_id), key=lambda c: c.index):
        unnamed.setdefault(record_call.name, []).append(record_call)
    whole = "allowed" if record.mode in _ENFORCED_MODES and not record.not_enforced_reason else "not_enforced"
    for trace in traces:
        metadata = (trace.get("context") or {}).get("metadata") or {}
        tool_use_id = str(metadata.get("tool_use_id") or "")
        call: exchange_pb2.EnforcedToolCall | None
        if tool_use_id:
            call = calls.get(tool_use_id)
        elif metadata.get("decision_kind") == "tool" and not metadata.get("server_tool"):
            name = str((trace.get("action") or {}).get("name") or "")
            waiting = unnamed.get(name)
            call = waiting.pop(0) if waiting else None
        else:
            call = None
        enforcement: dict[str, Any] = {"mode": record.mode, "card_id": record.card_id}
        if call is not None:
            enforcement.update(verdict=call.verdict, action=call.action, reason=call.reason)
        else:
            enforcement.update(action=whole, reason=record.not_enforced_reason)
        trace["enforcement"] = enforcement
