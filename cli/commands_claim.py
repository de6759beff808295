"""`smoltbot claim [--email]`: claim the agent as yours, proving ownership with its credential."""

from __future__ import annotations

from typing import Annotated

import typer

from smoltbot.cli import config_store
from smoltbot.cli.agent_context import agent_context, agent_error, require_credential
from smoltbot.cli.api_contract import read
from smoltbot.cli.errors import ApiError, CliError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Output, local_time, styled

__all__ = ["claim_command", "register"]


@handles_errors
def claim_command(
    email: Annotated[
        str | None,
        typer.Option(
            "--email",
            metavar="EMAIL",
            help="Your contact (default: the configured email). Never shown publicly.",
        ),
    ] = None,
    api: ApiOption = None,
    json_mode: JsonOption = False,
) -> None:
    """Claim the agent as yours. An agent is claimed once; the credential in the environment proves it
    is yours."""
    out = Output(json_mode)
    if email is not None:
        email = config_store.normalize_value("email", email)
    with agent_context(api) as context:
        email = email or context.config.email
        credential = require_credential("claiming the agent")
        try:
            claimed = context.api.call("claim", agent_id=context.agent_id,
                                       json={"email": email} if email else None, credential=credential)
        except ApiError as error:
            if error.status == 409:
                raise CliError(f"agent {context.agent_id} is already claimed; a claim is made once "
                               "(`smoltbot status` shows when)") from None
            raise agent_error(error, context) from None
    if email and email != context.config.email:
        context.config.email = email
        config_store.save(context.config)
    if json_mode:
        out.json(claimed)
        return
    when = read(claimed, "AgentSummary", "claimed_at")
    out.line(
        styled(
            f"Agent {read(claimed, 'AgentSummary', 'agent_id')} is claimed"
            + (f" by {email}" if email else "")
            + (f" ({local_time(when)})." if when else "."),
            "green",
        )
    )


def register(app: typer.Typer) -> None:
    app.command("claim")(claim_command)
