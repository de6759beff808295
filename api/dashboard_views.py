"""What the dashboard's templates show, apart from fetching it: the Jinja filters (times,
percentages, short ids) and the view models of a trace (its badge and its one-line summary)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from smoltbot.api.schemas import Trace

__all__ = ["configure_templates", "trace_badge", "trace_view"]


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
    templates.env.filters.update(when=_when, pct=_pct, short=_short_id)
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
