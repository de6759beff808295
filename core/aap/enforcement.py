"""Enforcement: the card's verdict on one tool call, before the client sees it.

The gateway asks this module, for each tool call of a model's answer, whether the agent's card
lets it through. The verdict comes from the same deterministic checks the observer runs when it
verifies the trace afterwards (`verification.apply_escalation`: forbidden actions, the trigger
condition language, max_autonomous_value), run on the trace-shaped dict the observer would
build for that call (tool input redacted as the observer stores it). No model is asked.

| verdict    | when                                                                          |
|------------|-------------------------------------------------------------------------------|
| `deny`     | the tool is in `forbidden_actions`, or a trigger with action `deny` matched   |
| `escalate` | a trigger with action `escalate` matched, or a monetary parameter exceeds     |
|            | `max_autonomous_value` (and nothing denied the call)                          |
| `allow`    | anything else (a `log` trigger only logs)                                     |

`bounded_actions` is not enforced: it lists what the agent may do on its own, and a call
outside it is reported by the observer (`unbounded_action`), not stopped.

What a verdict does depends on the card's mode (`mode_of`): the strictest of `integrity_mode`
and `autonomy_mode` (AAP: "strictest wins on composition"). `enforce` blocks a denied call and
turns an escalated one into a request for the user's approval; `nudge` lets every call through
and tells the model about the verdict on the session's next request; `observe` and `off`
change nothing. What the gateway then does with the verdict is recorded per call as one of
`ACTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from smoltbot.core.aap.redaction import redact
from smoltbot.core.aap.verification import apply_escalation, card_autonomy

__all__ = [
    "ACTIONS",
    "FAIL_POLICIES",
    "MODES",
    "Verdict",
    "check_tool_call",
    "fail_policy_of",
    "mode_of",
]

#: The card's master-switch values, weakest first.
MODES = ("off", "observe", "nudge", "enforce")
#: What the gateway did with a call, as recorded on the exchange and its trace.
ACTIONS = ("allowed", "blocked", "escalated", "nudged", "not_enforced")
#: What the gateway does when it cannot read the card in force: let calls through, or block
#: every tool call. Set by the card as `extensions.smoltbot.enforcement.fail_policy`.
FAIL_POLICIES = ("allow", "block")

Decision = Literal["allow", "deny", "escalate"]


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    #: For a person and the model: which rule of the card decided, and the card's own reason.
    reason: str = ""


ALLOW = Verdict("allow")


def mode_of(card: dict[str, Any]) -> str:
    """The card's mode for tool calls: the strictest of its two master switches."""
    found = [card.get("integrity_mode") or "observe", card.get("autonomy_mode") or "observe"]
    return max((m for m in found if m in MODES), key=MODES.index, default="observe")


def fail_policy_of(card: dict[str, Any] | None) -> str:
    """`extensions.smoltbot.enforcement.fail_policy` of the card, "allow" when unset or unknown."""
    extensions = (card or {}).get("extensions") or {}
    smoltbot = extensions.get("smoltbot") if isinstance(extensions, dict) else None
    enforcement = smoltbot.get("enforcement") if isinstance(smoltbot, dict) else None
    policy = enforcement.get("fail_policy") if isinstance(enforcement, dict) else None
    return policy if policy in FAIL_POLICIES else "allow"


def _trace_of(name: str, tool_input: Any, tool_use_id: str) -> dict[str, Any]:
    # What observer/trace_builder.py makes of a finished client tool call, as far as the checks
    # read it: the action (input redacted, as stored) and the decision kind.
    parameters = redact(tool_input) if isinstance(tool_input, dict) else {"unparsed_input": str(tool_input)}
    return {
        "action": {"type": "execute", "name": name, "category": "bounded", "parameters": parameters},
        "context": {"metadata": {"decision_kind": "tool", "tool_use_id": tool_use_id, "server_tool": False}},
    }


def check_tool_call(card: dict[str, Any], name: str, tool_input: Any, tool_use_id: str = "") -> Verdict:
    """The card's verdict on calling tool `name` with `tool_input` (the parsed JSON input)."""
    trace = apply_escalation(_trace_of(name, tool_input, tool_use_id), card)
    autonomy = card_autonomy(card)
    if trace["action"]["category"] == "forbidden":
        return Verdict("deny", f"the card forbids the tool '{name}' (autonomy.forbidden_actions)")
    triggers = autonomy.get("escalation_triggers") or []
    denied: list[str] = []
    escalated: list[str] = []
    for i, check in enumerate(trace["escalation"]["triggers_checked"]):
        if not check.get("matched"):
            continue
        if i >= len(triggers):  # the monetary checks follow the card's triggers
            escalated.append(f"{check['trigger']}")
            continue
        trigger = triggers[i] if isinstance(triggers[i], dict) else {}
        action = trigger.get("action", "escalate")
        said = f"trigger `{trigger.get('condition', '')}`"
        if trigger.get("reason"):
            said += f" ({trigger['reason']})"
        if action == "deny":
            denied.append(said)
        elif action == "escalate":
            escalated.append(said)
    if denied:
        return Verdict("deny", "the card denies this call: " + "; ".join(denied))
    if escalated:
        return Verdict("escalate", "the card requires the user's approval: " + "; ".join(escalated))
    return ALLOW
