"""`smoltbot agent delete-data`: the agent's owner deletes everything smoltbot stores about the
agent, now (with the agent's credential from the environment). What retention deletes by itself,
and what the gateway still holds, is in docs/privacy.md."""

from __future__ import annotations

from typing import Annotated

import typer

from smoltbot.cli.agent_context import agent_context, agent_error, require_credential
from smoltbot.cli.api_contract import read
from smoltbot.cli.errors import ApiError, CliError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Output

__all__ = ["app"]

app = typer.Typer(help="Your agent's data: delete all of it.", no_args_is_help=True)


@app.command("delete-data")
@handles_errors
def delete_data_command(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    api: ApiOption = None, json_mode: JsonOption = False,
) -> None:
    """Delete every trace, violation, usage row, drift alert, session, card and exchange record of
    your agent, for good (needs the agent's credential)."""
    out = Output(json_mode)
    credential = require_credential("deleting your agent's data")
    with agent_context(api) as context:
        if not yes and not typer.confirm(
                f"Delete everything stored about agent {context.agent_id} at {context.api_url}, for good?"):
            raise CliError("nothing deleted")
        try:
            deleted = context.api.call("delete_agent_data", agent_id=context.agent_id, credential=credential)
        except ApiError as error:
            raise agent_error(error, context) from None
    if json_mode:
        out.json(deleted)
        return
    rows = read(deleted, "AgentDataDeleted", "deleted_rows")
    total = sum(int(count) for count in rows.values())
    tables = ", ".join(f"{table} {count}" for table, count in sorted(rows.items()) if count) or "none left"
    out.line(f"Deleted {total} rows about agent {context.agent_id} ({tables}). If the agent calls through "
             "the gateway again, it starts afresh with a default card.")
