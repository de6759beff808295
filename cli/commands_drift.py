"""`smoltbot drift`: the agent's drift alerts; `smoltbot drift ack <alert_id>`: acknowledge one as
its owner (with the agent's credential from the environment). An acknowledged alert stays open
until the agent's behaviour is back in line; then it closes by itself."""

from __future__ import annotations

from typing import Annotated

import typer

from smoltbot.cli.agent_context import agent_context, agent_error, require_credential
from smoltbot.cli.api_contract import read, read_item
from smoltbot.cli.errors import ApiError, CliError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Cell, Output, local_time, styled

__all__ = ["app"]

app = typer.Typer(help="Drift alerts: list them, acknowledge one.", no_args_is_help=False,
                  invoke_without_command=True)
_LIST = "DriftAlertList"


@app.callback()
@handles_errors
def drift_command(ctx: typer.Context, api: ApiOption = None, json_mode: JsonOption = False) -> None:
    """List your agent's drift alerts, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    out = Output(json_mode)
    with agent_context(api) as context:
        try:
            alerts = context.api.call("drift_alerts", agent_id=context.agent_id, params={"limit": 50})
        except ApiError as error:
            raise agent_error(error, context) from None
    items = read(alerts, _LIST, "items", [])
    if json_mode:
        out.json(items)
        return
    if not items:
        out.note("No drift alerts: recent behaviour matches the card and the agent's baseline.")
        return
    rows: list[list[Cell]] = []
    for item in items:
        def field(name: str, item: object = item) -> object:
            return read_item(item, _LIST, "items", name)

        status = str(field("status"))
        shown: Cell
        if status == "open" and field("acknowledged_at"):
            shown = styled("open, acknowledged", "yellow")
        elif status == "open":
            shown = styled("open", "bold red")
        else:
            shown = status
        rows.append([str(field("alert_id")), local_time(str(field("created_at") or "")),
                     str(field("direction")).replace("_", " "), str(field("severity")), shown,
                     str(field("resolution") or field("analysis") or "")])
    out.table(("alert", "raised", "direction", "severity", "status", "detail"), rows,
              title=f"Drift alerts of agent {context.agent_id}")


@app.command("ack")
@handles_errors
def acknowledge_command(alert_id: Annotated[str, typer.Argument(help="The alert id (see `smoltbot drift`).")],
                        api: ApiOption = None, json_mode: JsonOption = False) -> None:
    """Acknowledge a drift alert as the agent's owner (needs the agent's credential)."""
    out = Output(json_mode)
    credential = require_credential("acknowledging a drift alert")
    with agent_context(api) as context:
        try:
            alert = context.api.call("acknowledge_drift", agent_id=context.agent_id, alert_id=alert_id,
                                     credential=credential)
        except ApiError as error:
            if error.status == 404 and error.reason == "ALERT_NOT_FOUND":
                raise CliError(f"your agent {context.agent_id} has no drift alert {alert_id!r}; "
                               "`smoltbot drift` lists them") from None
            if error.status == 422:
                raise CliError(f"{alert_id!r} is not a drift alert id (they look like da-0123abcd...); "
                               "`smoltbot drift` lists them") from None
            raise agent_error(error, context) from None
    if json_mode:
        out.json(alert)
        return
    out.line(f"Acknowledged {read(alert, 'DriftAlert', 'alert_id')} at "
             f"{local_time(read(alert, 'DriftAlert', 'acknowledged_at'))}. It stays open until the agent's "
             "behaviour is back in line, then closes by itself.")
