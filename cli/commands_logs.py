"""`smoltbot logs`: the agent's recent decision traces; `--follow` prints new ones as they land.

API activity (calls other than POST /v1/messages: count_tokens, models, files, ...) is listed
too, marked as activity: it is part of the record, but not a decision and never verified.

Without --follow the newest trace comes first. With --follow the output is a stream, so it
runs the other way: the last N traces oldest first, then each trace that lands after the
command started, appended, until Ctrl-C.

Following polls `GET /v1/agents/{id}/traces` (oldest first, `since` a little before the
newest trace already printed) and prints the traces it has not printed yet. A trace is
timestamped when its exchange ended and lands once the observer has processed it, so the
poll looks back `FOLLOW_LOOKBACK` to catch traces that land out of order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.text import Text

from smoltbot.cli.agent_context import AgentContext, agent_context, agent_error
from smoltbot.cli.api_contract import read, read_item
from smoltbot.cli.errors import ApiError, handles_errors
from smoltbot.cli.options import ApiOption
from smoltbot.cli.output import Cell, Output, local_time, parse_time, shorten, styled

__all__ = ["FOLLOW_LOOKBACK", "logs_command", "register", "trace_row"]

#: How far before the newest printed trace a follow poll looks for traces that landed late.
FOLLOW_LOOKBACK = timedelta(minutes=3)
_FOLLOW_PAGE = 200
COLUMNS = ("time", "action", "verified", "violations", "decision")
#: Widths of all but the last column when rows are printed one at a time (--follow).
_FOLLOW_WIDTHS = (19, 26, 8, 30, 0)
_SCHEMA = "TraceList"


def _item(trace: dict[str, Any], path: str, default: Any = None) -> Any:
    return read_item(trace, _SCHEMA, "items", path, default)


def _is_activity(trace: dict[str, Any]) -> bool:
    return _item(trace, "observation.record_kind") == "activity"


def _action_cell(trace: dict[str, Any]) -> Cell:
    if _is_activity(trace):
        # Not a decision: say what was called.
        method = _item(trace, "observation.request_method") or ""
        path = _item(trace, "observation.request_path") or ""
        return styled(f"activity {method} {path}".strip(), "dim")
    kind = _item(trace, "action.type") or "?"
    name = _item(trace, "action.name") or "?"
    category = _item(trace, "action.category")
    style = {"forbidden": "bold red", "escalation_trigger": "yellow"}.get(category or "", "")
    return styled(f"{kind} {name}", style) if style else f"{kind} {name}"


def _verified_cell(trace: dict[str, Any]) -> Cell:
    verified = _item(trace, "verification.verified")
    outcome = _item(trace, "observation.outcome")
    if outcome and outcome != "complete":
        return styled(outcome, "yellow")
    if _is_activity(trace):
        return "n/a"  # API activity is not verified: it is not a decision
    if verified is True:
        return styled("pass", "green")
    if verified is False:
        return styled("FAIL", "bold red")
    return "-"


def _violations_cell(trace: dict[str, Any]) -> Cell:
    violations = _item(trace, "verification.violations", []) or []
    if not violations:
        return "-"
    names = [f"{read_item(v, _SCHEMA, 'items[].verification.violations', 'type') or '?'}"
             f"({read_item(v, _SCHEMA, 'items[].verification.violations', 'severity') or '?'})"
             for v in violations]
    return styled(", ".join(names), "red")


def _decision_cell(trace: dict[str, Any], width: int = 80) -> Cell:
    reasoning = _item(trace, "decision.selection_reasoning")
    excerpt = (
        _item(trace, "observation.reasoning.excerpt")
        if _item(trace, "observation.reasoning.present")
        else None
    )
    text = shorten(reasoning or excerpt or _item(trace, "decision.selected") or "-", width)
    return Text(text)


def trace_row(trace: dict[str, Any]) -> list[Cell]:
    """The table row of one trace: time, action, verified, violations, decision."""
    return [local_time(_item(trace, "timestamp")), _action_cell(trace), _verified_cell(trace),
            _violations_cell(trace), _decision_cell(trace)]


def _fetch(context: AgentContext, **params: Any) -> tuple[list[dict[str, Any]], str | None]:
    try:
        page = context.api.call("agent_traces", agent_id=context.agent_id, params=params)
    except ApiError as error:
        raise agent_error(error, context) from None
    return list(read(page, _SCHEMA, "items", []) or []), read(page, _SCHEMA, "next_cursor")


def _require_agent(context: AgentContext) -> None:
    # Listing traces of an unknown agent is just empty; say it is unknown instead.
    try:
        context.api.call("agent", agent_id=context.agent_id)
    except ApiError as error:
        raise agent_error(error, context) from None


@handles_errors
def logs_command(
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, max=1000, help="How many traces.")] = 20,
    session: Annotated[
        str | None, typer.Option("--session", "-s", metavar="SESSION_ID", help="Only this session's traces.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new traces until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, max=60.0, help="Seconds between polls with --follow.")
    ] = 1.0,
    json_mode: Annotated[
        bool, typer.Option("--json", help="JSON: a list of traces, or one trace per line with --follow.")
    ] = False,
    api: ApiOption = None,
) -> None:
    """Show the agent's recent decision traces, newest first: time, action, verification, violations,
    decision."""
    out = Output(json_mode)
    with agent_context(api) as context:
        try:
            _require_agent(context)
            if follow:
                _follow(out, context, limit=limit, session=session, interval=interval)
            else:
                traces, _ = _fetch(context, limit=limit, session_id=session, order="desc")
                _print_list(out, context, traces)
        except KeyboardInterrupt:
            if not follow:
                raise


def _print_list(out: Output, context: AgentContext, traces: list[dict[str, Any]]) -> None:
    if out.json_mode:
        out.json(traces)
        return
    if not traces:
        out.note(f"No traces yet for agent {context.agent_id}. Point your agent at the gateway "
                 "(`smoltbot status` shows it) and run it.")
        return
    out.table(COLUMNS, [trace_row(trace) for trace in traces])


class _Follower:
    """Which traces were printed, and the window the next poll must cover."""

    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}
        self.newest: datetime | None = None

    def is_new(self, trace: dict[str, Any]) -> bool:
        trace_id = _item(trace, "trace_id")
        if not trace_id or trace_id in self.seen:
            return False
        stamp = parse_time(_item(trace, "timestamp")) or datetime.now(UTC)
        self.seen[trace_id] = stamp
        if self.newest is None or stamp > self.newest:
            self.newest = stamp
        return True

    def since(self, started: datetime) -> datetime:
        # Never before the window the first poll marked as seen: older traces are not new.
        since = max(self.newest or started, started) - FOLLOW_LOOKBACK
        # Forget what no poll can return any more, so a long follow stays small.
        for trace_id in [key for key, stamp in self.seen.items() if stamp < since - FOLLOW_LOOKBACK]:
            del self.seen[trace_id]
        return since


def _poll(context: AgentContext, since: datetime, session: str | None) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        traces, cursor = _fetch(context, limit=_FOLLOW_PAGE, session_id=session, order="asc",
                                since=since.isoformat().replace("+00:00", "Z"), cursor=cursor)
        yield from traces
        if not cursor:
            return


def _follow(out: Output, context: AgentContext, *, limit: int, session: str | None, interval: float) -> None:
    follower = _Follower()
    started = datetime.now(UTC)
    # What is already there when we start is not new: the last `limit` traces are printed
    # below, and older ones a poll would see in its look-back window are marked as seen.
    for trace in _poll(context, follower.since(started), session):
        follower.is_new(trace)
    latest, _ = _fetch(context, limit=limit, session_id=session, order="desc")

    def emit(trace: dict[str, Any]) -> None:
        if out.json_mode:
            out.json_line(trace)
        else:
            out.row_line(_FOLLOW_WIDTHS, trace_row(trace))

    if not out.json_mode:
        out.row_line(_FOLLOW_WIDTHS, [styled(column.upper(), "bold") for column in COLUMNS])
        out.note(f"Following agent {context.agent_id}; Ctrl-C to stop.")
    for trace in reversed(latest):
        follower.is_new(trace)
        emit(trace)
    unreachable = False
    while True:  # until Ctrl-C, which the caller turns into exit 0
        time.sleep(interval)
        try:
            fresh = list(_poll(context, follower.since(started), session))
        except ApiError as error:
            if error.status not in (None, 502, 503, 504):
                raise
            if not unreachable:
                out.note(f"warning: {error.message}; retrying every {interval:g}s")
            unreachable = True
            continue
        if unreachable:
            out.note("the API answers again; following")
            unreachable = False
        for trace in fresh:
            if follower.is_new(trace):
                emit(trace)


def register(app: typer.Typer) -> None:
    app.command("logs")(logs_command)
