"""`smoltbot status`: the agent, whether the gateway and API answer, and what the API knows of it."""

from __future__ import annotations

import typer

from smoltbot.cli.agent_context import agent_context, agent_error
from smoltbot.cli.api_client import default_gateway_url, gateway_reachable
from smoltbot.cli.api_contract import read
from smoltbot.cli.errors import ApiError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Output, ago, local_time, styled

__all__ = ["register", "status_command"]


@handles_errors
def status_command(api: ApiOption = None, json_mode: JsonOption = False) -> None:
    """Show the agent, whether the gateway and API answer, when it was last seen and its trace count."""
    out = Output(json_mode)
    with agent_context(api) as context:
        gateway_url = context.config.gateway_url or default_gateway_url()
        gateway_ok = gateway_reachable(gateway_url)
        health = context.api.call("health")
        try:
            agent = context.api.call("agent", agent_id=context.agent_id)
        except ApiError as error:
            raise agent_error(error, context) from None

    if json_mode:
        out.json({"agent_id": context.agent_id,
                  "gateway": {"url": gateway_url, "reachable": gateway_ok},
                  "api": {"url": context.api_url, "health": health},
                  "agent": agent})
        return

    health_status = read(health, "Health", "status")
    if health_status == "ok":
        api_cell = styled(f"{context.api_url}  ok", "green")
    else:
        api_cell = styled(
            f"{context.api_url}  {health_status} (registry: {read(health, 'Health', 'registry')}, "
            f"observer: {read(health, 'Health', 'observer')})",
            "yellow",
        )
    gateway_cell = (styled(f"{gateway_url}  reachable", "green") if gateway_ok else
                    styled(f"{gateway_url}  not reachable (start it with `smoltbot up`)", "red"))
    last_seen = read(agent, "Agent", "last_seen_at")
    claimed_at = read(agent, "Agent", "claimed_at")
    claimed = read(agent, "Agent", "claimed", False)
    out.fields([
        ("agent", context.agent_id),
        ("dashboard", f"{context.api_url}/agents/{context.agent_id}"),
        ("gateway", gateway_cell),
        ("api", api_cell),
        ("last seen", f"{local_time(last_seen)} ({ago(last_seen)})" if last_seen
         else "never (no call through the gateway yet)"),
        ("claimed", f"yes, {local_time(claimed_at)}" if claimed and claimed_at else "yes" if claimed
         else "no (run `smoltbot claim` to claim it)"),
        ("traces", str(read(agent, "Agent", "trace_count", 0))),
        ("active card", read(agent, "Agent", "active_card_id") or "-"),
        ("created", local_time(read(agent, "Agent", "created_at"))),
    ])


def register(app: typer.Typer) -> None:
    app.command("status")(status_command)
