"""What the dashboard's templates show, apart from fetching it: the Jinja filters (times,
percentages, short ids, cost, tokens) and the view models of a trace (its badge and its one-line
summary) and of a session (its turns, their calls and the sub-agents nested in them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from smoltbot.api.schemas import SessionDetail, Trace, UsageTotals

__all__ = ["configure_templates", "cost_label", "session_view", "token_label", "trace_badge", "trace_view"]


# --------------------------------------------------------------------------- template helpers

def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _when(value: str | None, empty: str = "—") -> Markup:
    """A <time> the script turns into local, relative time; UTC text without the script."""
    moment = _parse_ts(value)
    if moment is None:
        return Markup('<span class="muted">{}</span>').format(empty)
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(value, text, text)


def _pct(score: float | None, digits: int = 0) -> str:
    if score is None:
        return "—"
    return f"{score * 100:.{digits}f}%"


def _share(part: int, total: int) -> float:
    return 0.0 if total <= 0 else max(0.0, min(1.0, part / total))


def _short_id(value: str, keep: int = 10) -> str:
    return value if len(value) <= keep + 1 else value[:keep] + "…"


def configure_templates(templates: Jinja2Templates) -> None:
    templates.env.filters.update(when=_when, pct=_pct, short=_short_id, cost=cost_label, tokens=token_label)
    templates.env.globals.update(share=_share)
    templates.env.autoescape = True


# --------------------------------------------------------------------------- view models

def trace_badge(trace: Trace) -> dict[str, str]:
    """What a reader needs at a glance: did it pass, fail, or not get checked (and why)."""
    observation, verification = trace.observation, trace.verification
    if observation is not None and observation.record_kind == "activity":
        return {"kind": "unchecked", "label": "API activity"}  # not a decision, never verified
    if observation is not None and observation.outcome and observation.outcome != "complete":
        return {"kind": "failed", "label": observation.outcome.replace("_", " ")}
    if verification is None or (not verification.checks_performed and not verification.verified \
            and not verification.violations):
        return {"kind": "unchecked", "label": "not checked"}
    if verification.verified:
        return {"kind": "ok", "label": "verified"}
    count = len(verification.violations)
    return {
        "kind": "bad",
        "label": f"{count} violation{'s' if count != 1 else ''}" if count else "not verified",
    }


def trace_view(trace: Trace) -> dict[str, Any]:
    action, decision, observation = trace.action, trace.decision, trace.observation
    selected = None
    if decision is not None:
        selected = next(
            (alt for alt in decision.alternatives_considered if alt.option_id == decision.selected), None
        )
    reasoning = observation.reasoning if observation is not None else None
    excerpt = reasoning.excerpt if reasoning is not None and reasoning.excerpt else ""
    target = action.target.identifier if action is not None and action.target is not None else ""
    if not target and action is not None and action.parameters:
        # The first short string parameter usually says what the tool acted on (path, url, query).
        target = next((str(v) for v in action.parameters.values() if isinstance(v, str) and len(v) < 120), "")
    return {
        "trace": trace,
        "action_type": action.type if action else "",
        "action_name": action.name if action else "",
        "target": target,
        "decision": (selected.description if selected and selected.description
                     else (decision.selected if decision else "")),
        "alternatives": len(decision.alternatives_considered) if decision else 0,
        "selection_reasoning": decision.selection_reasoning if decision else "",
        "excerpt": excerpt,
        "has_reasoning": bool(reasoning and reasoning.present),
        "badge": trace_badge(trace),
        "violations": trace.verification.violations if trace.verification else [],
        "session_id": trace.context.session_id if trace.context else None,
    }


def session_view(detail: SessionDetail, traces: list[Trace]) -> dict[str, Any]:
    """A session as its page shows it: the turns in order; in each, the main agent's model calls
    (their traces: tool calls with their main argument, reasoning excerpt, verdict) and the
    sub-agents that worked in it, nested, each with its calls; tokens and cost per turn."""
    usage_of_turn = {turn.turn: turn for turn in detail.turns}
    sub_agents = {agent.sub_agent_id: agent for agent in detail.sub_agents}
    turns: dict[int | None, dict[str, Any]] = {}
    for trace in traces:
        context, observation = trace.context, trace.observation
        number = context.conversation_turn if context is not None else None
        turn = turns.setdefault(number, {"turn": number, "usage": usage_of_turn.get(number), "calls": [],
                                         "sub_agents": {}})
        sub_agent_id = observation.sub_agent_id if observation is not None else ""
        calls = turn["calls"]
        if sub_agent_id:
            nested = turn["sub_agents"].setdefault(sub_agent_id, {
                "id": sub_agent_id, "info": sub_agents.get(sub_agent_id), "calls": [],
                "type": observation.sub_agent_type if observation is not None else "",
                "parent": observation.parent_agent_id if observation is not None else "",
            })
            calls = nested["calls"]
        exchange_id = observation.exchange_id if observation is not None else trace.trace_id
        if not calls or calls[-1]["exchange_id"] != exchange_id:
            calls.append({"exchange_id": exchange_id, "model": observation.model if observation else "",
                          "when": trace.timestamp, "traces": []})
        calls[-1]["traces"].append(trace_view(trace))
    ordered = sorted(turns.values(), key=lambda turn: (turn["turn"] is None, turn["turn"] or 0))
    for turn in ordered:
        turn["sub_agents"] = list(turn["sub_agents"].values())
    return {"detail": detail, "turns": ordered}


def cost_label(usage: UsageTotals | None) -> str:
    """"$0.021265", or "$0.0093 + 1 call of unknown cost": the unknown is shown, never guessed."""
    if usage is None:
        return "—"
    text = f"${usage.known_cost_usd}"
    if usage.unknown_cost_calls:
        calls = "call" if usage.unknown_cost_calls == 1 else "calls"
        text += f" + {usage.unknown_cost_calls} {calls} of unknown cost"
    return text


def token_label(usage: UsageTotals | None) -> str:
    if usage is None:
        return "—"
    prompt = (usage.input_tokens + usage.cache_read_tokens + usage.cache_write_5m_tokens
              + usage.cache_write_1h_tokens + usage.cache_write_unknown_ttl_tokens)
    return f"{prompt:,} in ({usage.cache_read_tokens:,} cached) / {usage.output_tokens:,} out"
