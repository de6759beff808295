"""`smoltbot integrity`: the integrity score, totals, violations and coverage, recent and all time."""

from __future__ import annotations

from typing import Any

import typer

from smoltbot.cli.agent_context import agent_context, agent_error
from smoltbot.cli.api_contract import read
from smoltbot.cli.errors import ApiError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Cell, Output, local_time, percent, styled

__all__ = ["integrity_command", "register"]

_SCHEMA = "Integrity"


def _score_cell(score: float | None) -> Cell:
    if score is None:
        return "-"
    style = "green" if score >= 0.9 else "yellow" if score >= 0.7 else "bold red"
    return styled(percent(score), style)


def _of(part: int, total: int) -> str:
    return f"{part} / {total}" if total else "0"


def _rows(integrity: dict[str, Any]) -> list[list[Cell]]:
    def window(name: str, field: str, default: Any = 0) -> Any:
        return read(integrity, _SCHEMA, f"{name}.{field}", default)

    windows = ("recent", "all_time")
    totals = {name: int(window(name, "total_traces")) for name in windows}
    rows: list[list[Cell]] = [
        ["score", *(_score_cell(window(name, "score", None)) for name in windows)],
        ["verified", *(_of(int(window(name, "verified_traces")), totals[name]) for name in windows)],
        ["violations", *(str(window(name, "violation_count")) for name in windows)],
    ]
    kinds = sorted(set().union(*(window(name, "violations_by_type", {}) or {} for name in windows)))
    for kind in kinds:
        rows.append([f"  {kind}", *(str((window(name, "violations_by_type", {}) or {}).get(kind, 0))
                                    for name in windows)])
    rows += [
        ["with reasoning", *(_of(int(window(name, "with_reasoning")), totals[name]) for name in windows)],
        [
            "model analysis",
            *(_of(int(window(name, "with_model_analysis")), totals[name]) for name in windows),
        ],
        ["failed", *(str(window(name, "failed")) for name in windows)],
    ]
    return rows


@handles_errors
def integrity_command(api: ApiOption = None, json_mode: JsonOption = False) -> None:
    """Show the integrity score (verified / total traces), violations and coverage, recent and all time."""
    out = Output(json_mode)
    with agent_context(api) as context:
        try:
            context.api.call("agent", agent_id=context.agent_id)
            integrity = context.api.call("integrity", agent_id=context.agent_id)
        except ApiError as error:
            raise agent_error(error, context) from None
    if json_mode:
        out.json(integrity)
        return
    window_size = read(integrity, _SCHEMA, "window_size")
    total = int(read(integrity, _SCHEMA, "all_time.total_traces", 0))
    recent_title = f"recent (last {window_size})" if window_size else "recent"
    retained_since = read(integrity, _SCHEMA, "retained_since", None)
    # After retention deleted traces, "all time" means "all that is kept": the column says so.
    all_title = f"since {local_time(retained_since)}" if retained_since else "all time"
    out.table(("", recent_title, all_title), _rows(integrity),
              title=f"Integrity of agent {context.agent_id}")
    if retained_since:
        deleted = int(read(integrity, _SCHEMA, "retention_deleted_traces", 0))
        out.line(f"retention: {deleted} older traces deleted (the card's audit.retention_days); "
                 f"the score covers traces since {local_time(retained_since)}")
    checked = int(read(integrity, _SCHEMA, "history_sessions_checked", 0))
    if checked:
        intact = int(read(integrity, _SCHEMA, "history_sessions_intact", 0))
        out.line(f"history checked: {intact} / {checked} sessions intact")
    drift = int(read(integrity, _SCHEMA, "open_drift_alerts", 0))
    out.line(styled(f"open drift alerts: {drift}", "bold yellow") if drift else f"open drift alerts: {drift}")
    out.line(f"computed: {local_time(read(integrity, _SCHEMA, 'computed_at'))}")
    if total == 0 and not retained_since:
        out.note("No traces yet: the score appears once your agent makes calls through the gateway.")
    elif int(read(integrity, _SCHEMA, "all_time.with_reasoning", 0)) == 0:
        out.note("No trace carried readable reasoning, so the score only checks actions against the card.")


def register(app: typer.Typer) -> None:
    app.command("integrity")(integrity_command)
