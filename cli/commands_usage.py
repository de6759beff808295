"""`smoltbot sessions`, `smoltbot session <id>` and `smoltbot usage`: the agent's sessions with their
turns, tokens and cost; one session's turns and sub-agents; usage by day, model or session.

Cost is shown as the API gives it: exact dollars of the calls whose cost is known, and how many
calls have an unknown cost (a model not in the price table is never guessed)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer

from smoltbot.cli.agent_context import agent_context, agent_error
from smoltbot.cli.api_contract import read, read_item
from smoltbot.cli.errors import ApiError, CliError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Cell, Output, local_time, styled

__all__ = ["register"]

_TOTALS = "UsageTotals"
SessionArgument = Annotated[str, typer.Argument(help="The session id (see `smoltbot sessions`).")]
ByOption = Annotated[str, typer.Option("--by", help="Group by day, model or session.")]
SinceOption = Annotated[str | None, typer.Option(help="From this date or time (local if no zone).")]
UntilOption = Annotated[str | None, typer.Option(help="Before this date or time.")]
_GROUP_BYS = ("day", "model", "session")
#: Sessions one usage read names at most (the Observer's bound, GetSessionsUsage).
_SESSIONS_PER_READ = 100


def _tokens(usage: dict[str, Any]) -> str:
    def part(name: str) -> int:
        return int(read(usage, _TOTALS, name, 0))

    prompt = part("input_tokens") + part("cache_read_tokens") + part("cache_write_5m_tokens") \
        + part("cache_write_1h_tokens") + part("cache_write_unknown_ttl_tokens")
    return f"{prompt:,} in / {part('output_tokens'):,} out"


def _cache(usage: dict[str, Any]) -> str:
    writes = sum(int(read(usage, _TOTALS, name, 0)) for name in
                 ("cache_write_5m_tokens", "cache_write_1h_tokens", "cache_write_unknown_ttl_tokens"))
    return f"{int(read(usage, _TOTALS, 'cache_read_tokens', 0)):,} read / {writes:,} written"


def cost_text(usage: dict[str, Any]) -> Cell:
    """"$0.021265", or "$0.0093 + 1 call of unknown cost" (never a guess)."""
    text = f"${read(usage, _TOTALS, 'known_cost_usd', '0')}"
    unknown = int(read(usage, _TOTALS, "unknown_cost_calls", 0))
    if unknown:
        return styled(f"{text} + {unknown} call{'s' if unknown != 1 else ''} of unknown cost", "yellow")
    return text


def _call(context: Any, endpoint: str, **kwargs: Any) -> Any:
    try:
        return context.api.call(endpoint, **kwargs)
    except ApiError as error:
        raise agent_error(error, context) from None


def _session_usages(context: Any, session_ids: list[str]) -> dict[str, Any]:
    """{session_id: SessionUsageSummary} of the listed sessions that have recorded calls: one read
    per 100 sessions (GET /v1/agents/{id}/usage/sessions, each session over its own index range),
    never the usage of the agent's whole history grouped by session (which grows with every
    session the agent ever had)."""
    found: dict[str, Any] = {}
    for start in range(0, len(session_ids), _SESSIONS_PER_READ):
        page = _call(context, "sessions_usage", agent_id=context.agent_id,
                     params={"session_id": session_ids[start:start + _SESSIONS_PER_READ]})
        for item in read(page, "SessionsUsage", "items", []):
            found[read_item(item, "SessionsUsage", "items", "session_id")] = item
    return found


@handles_errors
def sessions_command(api: ApiOption = None, json_mode: JsonOption = False,
                     limit: Annotated[int, typer.Option("-n", "--limit", min=1, max=1000,
                                                        help="How many sessions (most recent first).")] = 20
                     ) -> None:
    """List your agent's sessions, most recent first, with their turns, calls, tokens and cost."""
    out = Output(json_mode)
    with agent_context(api) as context:
        sessions = _call(context, "agent_sessions", agent_id=context.agent_id, params={"limit": limit})
        listed = [read_item(item, "SessionList", "items", "session_id")
                  for item in read(sessions, "SessionList", "items", [])]
        details = _session_usages(context, listed)
    by_session = {key: read_item(item, "SessionsUsage", "items", "total") for key, item in details.items()}
    # Turns counted from the recorded calls (a user prompt starts one), not a client's report.
    turns = {key: read_item(item, "SessionsUsage", "items", "turn_count") for key, item in details.items()}
    items = read(sessions, "SessionList", "items", [])
    if json_mode:
        out.json([{**item, "usage": by_session.get(read_item(item, "SessionList", "items", "session_id")),
                   "recorded_turns": turns.get(read_item(item, "SessionList", "items", "session_id"))}
                  for item in items])
        return
    if not items:
        out.note("No sessions yet: they appear once your agent makes calls through the gateway.")
        return
    rows: list[list[Cell]] = []
    for item in items:
        session_id = read_item(item, "SessionList", "items", "session_id")
        used = by_session.get(session_id)
        rows.append([
            session_id, local_time(read_item(item, "SessionList", "items", "last_activity_at")),
            str(turns.get(session_id) or read_item(item, "SessionList", "items", "turn_count", 0)),
            str(read(used, _TOTALS, "calls", 0)) if used else "0",
            _tokens(used) if used else "-", cost_text(used) if used else "-",
        ])
    out.table(("session", "last active", "turns", "calls", "tokens", "cost"), rows,
              title=f"Sessions of agent {context.agent_id}")


@handles_errors
def session_command(session_id: SessionArgument, api: ApiOption = None,
                    json_mode: JsonOption = False) -> None:
    """Show one session: its turns, sub-agents, tokens, cost and integrity."""
    out = Output(json_mode)
    with agent_context(api) as context:
        try:
            session = context.api.call("session", session_id=quote(session_id, safe=""),
                                       params={"agent_id": context.agent_id})
        except ApiError as error:
            if error.status == 404 and error.reason == "SESSION_NOT_FOUND":
                raise CliError(f"your agent {context.agent_id} has no recorded model calls in session "
                               f"{session_id!r}; `smoltbot sessions` lists its sessions") from None
            raise agent_error(error, context) from None
    if json_mode:
        out.json(session)
        return
    schema = "SessionDetail"
    total = read(session, schema, "total")
    integrity = read(session, schema, "integrity")
    traces = int(read(integrity, "SessionIntegrity", "traces", 0))
    verified = int(read(integrity, "SessionIntegrity", "verified_traces", 0))
    out.fields([
        ("session", session_id),
        ("named by", ", ".join(read(session, schema, "session_rungs", [])) or "-"),
        ("first call", local_time(read(session, schema, "first_seen"))),
        ("last call", local_time(read(session, schema, "last_seen"))),
        ("turns", str(read(session, schema, "turn_count", 0))),
        ("calls", str(read(total, _TOTALS, "calls", 0))),
        ("tokens", _tokens(total)),
        ("prompt cache", _cache(total)),
        ("cost", cost_text(total)),
        ("verified", f"{verified} / {traces}" if traces else "0"),
        ("history", _history_text(read(session, schema, "history", {}))),
    ], title=f"Session {session_id}")
    turns = read(session, schema, "turns", [])
    if turns:
        out.table(("turn", "started", "calls", "tokens", "cost"), [[
            str(read(turn, "SessionTurn", "turn", None) or "-"),
            local_time(read(turn, "SessionTurn", "started_at")),
            str(read(read(turn, "SessionTurn", "usage"), _TOTALS, "calls", 0)),
            _tokens(read(turn, "SessionTurn", "usage")), cost_text(read(turn, "SessionTurn", "usage")),
        ] for turn in turns], title="Turns")
    agents = read(session, schema, "sub_agents", [])
    if agents:
        out.table(("sub-agent", "type", "parent", "calls", "verified", "tokens", "cost"),
                  [_sub_agent_row(agent) for agent in agents],
                  title="Sub-agents (counted in the totals above)")
    divergences = read(read(session, schema, "history", {}), "SessionHistory", "divergences", [])
    if divergences:
        out.table(("turn", "call started", "message", "found"), [_divergence_row(d) for d in divergences],
                  title="Where the history diverged (docs/evidence.md)")


def _history_text(history: dict[str, Any]) -> Cell:
    """"4 of 4 calls check out", or the diverged ones in red: the resent history checked against
    the turns the gateway relayed."""
    checked = int(read(history, "SessionHistory", "checked", 0))
    if not checked:
        return "not checked"
    intact, diverged = (int(read(history, "SessionHistory", name, 0)) for name in ("intact", "diverged"))
    text = f"{intact} of {checked} call{'s' if checked != 1 else ''} check out"
    return styled(f"{text} · {diverged} diverged", "red") if diverged else text


def _divergence_row(divergence: dict[str, Any]) -> list[Cell]:
    def field(name: str, default: Any = None) -> Any:
        return read(divergence, "SessionDivergence", name, default)

    turn, at = field("turn"), field("diverged_at")
    found = [f"{read(f, 'HistoryFinding', 'kind')} ({read(f, 'HistoryFinding', 'message_index')}): "
             f"{read(f, 'HistoryFinding', 'description')}" for f in field("findings", [])[:3]]
    return ["-" if turn is None else str(turn), local_time(field("started_at")),
            "-" if at is None else str(at), styled("; ".join(found), "red")]


def _sub_agent_row(agent: dict[str, Any]) -> list[Cell]:
    def field(name: str, default: Any = None) -> Any:
        return read(agent, "SessionSubAgent", name, default)

    usage = field("usage")
    return [field("sub_agent_id"), field("agent_type") or "-", field("parent_agent_id") or "main agent",
            str(read(usage, _TOTALS, "calls", 0)), f"{field('verified_traces', 0)} / {field('traces', 0)}",
            _tokens(usage), cost_text(usage)]


def _time_option(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"{name} must be a date or time such as 2026-12-01 or 2026-12-01T09:00:00Z, "
                       f"not {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as people type it
    return moment.isoformat()


@handles_errors
def usage_command(api: ApiOption = None, json_mode: JsonOption = False, by: ByOption = "day",
                  since: SinceOption = None, until: UntilOption = None) -> None:
    """Show your agent's tokens and cost by day, model or session."""
    if by not in _GROUP_BYS:
        raise CliError(f"--by must be one of {', '.join(_GROUP_BYS)}, not {by!r}")
    params: dict[str, Any] = {"group_by": by}
    for name, value in (("since", since), ("until", until)):
        text = _time_option(value, f"--{name}")
        if text is not None:
            params[name] = text
    out = Output(json_mode)
    with agent_context(api) as context:
        usage = _call(context, "agent_usage", agent_id=context.agent_id, params=params)
    if json_mode:
        out.json(usage)
        return
    groups = read(usage, "AgentUsage", "groups", [])
    total = read(usage, "AgentUsage", "total")
    if not groups:
        out.note("No model calls in this period.")
        return
    rows: list[list[Cell]] = [[
        read_item(group, "AgentUsage", "groups", "key") or "-",
        str(read(read_item(group, "AgentUsage", "groups", "usage"), _TOTALS, "calls", 0)),
        _tokens(read_item(group, "AgentUsage", "groups", "usage")),
        _cache(read_item(group, "AgentUsage", "groups", "usage")),
        cost_text(read_item(group, "AgentUsage", "groups", "usage")),
    ] for group in groups]
    rows.append([styled("total", "bold"), str(read(total, _TOTALS, "calls", 0)), _tokens(total),
                 _cache(total), cost_text(total)])
    out.table((by, "calls", "tokens", "prompt cache", "cost"), rows,
              title=f"Usage of agent {context.agent_id}")


def register(app: typer.Typer) -> None:
    app.command("sessions")(sessions_command)
    app.command("session")(session_command)
    app.command("usage")(usage_command)
