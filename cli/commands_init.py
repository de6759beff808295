"""`smoltbot init`: learn this machine's agent id and write the config.

The agent id comes from the API (`POST /v1/agents/resolve` with the credential the agent
already uses, ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN). The config stores the id and
where the gateway and API are, never the credential.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from smoltbot.cli import config_store
from smoltbot.cli.agent_context import require_credential
from smoltbot.cli.api_client import ApiClient, default_gateway_url, gateway_reachable, resolve_api_url
from smoltbot.cli.api_contract import read
from smoltbot.cli.config_store import Config
from smoltbot.cli.errors import ApiError, CliError, ConfigError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Output, styled

__all__ = ["init_command", "register"]


def _ask_email() -> str | None:
    while True:
        answer = typer.prompt("Your email, to claim this agent as yours (Enter to skip)", default="",
                              show_default=False).strip()
        if not answer:
            return None
        try:
            return config_store.normalize_value("email", answer)
        except CliError as error:
            typer.echo(error.message, err=True)


@handles_errors
def init_command(
    gateway: Annotated[str | None, typer.Option(
        "--gateway", metavar="URL",
        help="The gateway your agent will call (default: SMOLTBOT_GATEWAY_URL, else the local stack's, "
             "http://127.0.0.1:8080).")] = None,
    api: ApiOption = None,
    email: Annotated[str | None, typer.Option(
        "--email", metavar="EMAIL", help="Claim the agent as yours with this contact.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Ask nothing (for scripts).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Initialise again over an existing config.")] = False,
    json_mode: JsonOption = False,
) -> None:
    """Set this machine up: find your agent's id and print the line that routes it through smoltbot."""
    out = Output(json_mode)
    path = config_store.config_path()
    try:
        existing = config_store.load()
    except ConfigError:
        if not force:
            raise
        existing = Config()  # --force starts over from a broken file
    if existing.initialised and not force:
        if json_mode:
            out.json({"initialised": True, "changed": False, "agent_id": existing.agent_id,
                      "config_path": str(path)})
            return
        out.line(f"smoltbot is already initialised for agent {existing.agent_id} ({path}).")
        out.line("To initialise again (another credential, gateway or API), run `smoltbot init --force`.")
        return

    credential = require_credential("smoltbot init")
    credential_var = (config_store.credential_from_env() or ("ANTHROPIC_API_KEY", ""))[0]
    api_url = resolve_api_url(api, existing)
    gateway = gateway or config_store.cli_settings().gateway_url
    gateway_url = config_store.normalize_value("gateway_url", gateway) if gateway else (
        existing.gateway_url or default_gateway_url())
    if email is not None:
        email = config_store.normalize_value("email", email)
    elif not yes and sys.stdin.isatty() and not json_mode:
        email = _ask_email()

    with ApiClient(api_url) as client:
        # Sent the way the agent sends it, since the API checks it with the upstream first.
        bearer = credential_var == "ANTHROPIC_AUTH_TOKEN"
        try:
            resolved = client.call("resolve", credential=credential, bearer=bearer)
        except ApiError as error:
            raise _resolve_error(error, credential_var) from None
        agent_id = read(resolved, "ResolveResponse", "agent_id")
        created = bool(read(resolved, "ResolveResponse", "created", False))
        claimed: bool | None = None
        if email:
            try:
                client.call("claim", agent_id=agent_id, json={"email": email}, credential=credential)
                claimed = True
            except ApiError as error:
                if error.status != 409:
                    raise
                claimed = False  # claimed before; the claim (and its email) stays as it was

    config = Config(agent_id=agent_id, gateway_url=gateway_url, api_url=api_url,
                    email=email or existing.email,
                    created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                    extra=existing.extra)
    config_store.save(config, path)
    base_url = f"{gateway_url}/anthropic"
    dashboard = f"{api_url}/agents/{agent_id}"
    reachable = gateway_reachable(gateway_url)

    if json_mode:
        out.json({"initialised": True, "changed": True, "agent_id": agent_id, "created": created,
                  "config_path": str(path), "gateway_url": gateway_url, "api_url": api_url,
                  "anthropic_base_url": base_url, "dashboard_url": dashboard, "gateway_reachable": reachable,
                  "claimed": claimed})
        return
    out.line(styled(f"Agent {agent_id} is ready" + (" (new agent)." if created else "."), "bold green"))
    out.line(f"Config written to {path} (it holds no credential).")
    if claimed is True:
        out.line(f"Claimed as yours ({email}).")
    elif claimed is False:
        out.line("The agent was already claimed; the claim is unchanged.")
    out.line("")
    out.line("Point your agent at the gateway:")
    out.line(f"  export ANTHROPIC_BASE_URL={base_url}")
    out.line("")
    out.line(f"Dashboard: {dashboard}")
    out.line("Then run your agent, and watch its decisions: smoltbot logs --follow")
    if not reachable:
        out.note(styled(f"warning: the gateway at {gateway_url} is not answering; start the local stack with "
                        "`smoltbot up`, or pass the right one with --gateway URL", "yellow"))


def _resolve_error(error: ApiError, credential_var: str) -> CliError:
    """Why init could not learn the agent id, and what to do; nothing was created either way."""
    # The API's message says what the upstream answered; its advice part is replaced by ours.
    what = error.message.split("; nothing was created")[0]
    if error.status == 401 and error.reason == "CREDENTIAL_REJECTED":
        return CliError(f"the model API did not accept the credential in {credential_var}, so no agent was "
                        f"created ({what}); set {credential_var} to the key your agent really calls the "
                        "model with, then run `smoltbot init` again")
    if error.status == 503 and error.reason == "UPSTREAM_UNAVAILABLE":
        return CliError(f"smoltbot could not check your credential because the model API is not answering "
                        f"({what}), so no agent was created; run `smoltbot init` again when it is "
                        "(SMOLTBOT_UPSTREAM_URL of the smoltbot API says where the model API is)")
    return error


def register(app: typer.Typer) -> None:
    app.command("init")(init_command)
