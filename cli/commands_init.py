"""`smoltbot init`: learn this machine's agent id, write the config, and print how to point
the agent at the gateway.

`--provider` says which API the agent calls (anthropic by default, openai, gemini) and so which
credential it uses and which lines are printed (`PROVIDERS`). The agent id of an Anthropic
credential (ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN) comes from the API
(`POST /v1/agents/resolve`, which asks Anthropic first). The API checks Anthropic credentials
only, so for OpenAI (OPENAI_API_KEY) and Gemini (GOOGLE_API_KEY, else GEMINI_API_KEY) init makes
the call the agent's SDK makes first, the free model list, through the gateway: the provider
accepts the key or refuses it, and the gateway names the agent of an accepted key in its
`x-smoltbot-agent` header, creating it as the agent's own first call would. That call is recorded
as one API activity record. The config stores the id and where the gateway and API are, never
the credential.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import httpx
import typer

from smoltbot.cli import config_store
from smoltbot.cli.agent_context import require_credential
from smoltbot.cli.api_client import ApiClient, default_gateway_url, gateway_reachable, resolve_api_url
from smoltbot.cli.api_contract import read
from smoltbot.cli.config_store import Config
from smoltbot.cli.errors import ApiError, CliError, ConfigError, handles_errors
from smoltbot.cli.options import ApiOption, JsonOption
from smoltbot.cli.output import Output, styled

__all__ = ["PROVIDERS", "ProviderSetup", "init_command", "register"]


@dataclass(frozen=True, slots=True)
class ProviderSetup:
    """How an agent of one provider is pointed at the gateway, and where its credential is."""

    #: The gateway's prefix for the provider, as the base URL the SDKs take ("/openai/v1").
    path: str
    #: The environment variable the provider's SDKs read the base URL from.
    base_url_var: str
    #: The variables the agent's credential is read from, in the order the SDKs read them.
    credential_vars: tuple[str, ...]
    #: The free call the credential is checked with through the gateway (None: the API checks it).
    check_path: str | None = None
    #: The header that carries the credential in that call.
    credential_header: str = ""


PROVIDERS: dict[str, ProviderSetup] = {
    "anthropic": ProviderSetup("/anthropic", "ANTHROPIC_BASE_URL",
                               ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")),
    "openai": ProviderSetup("/openai/v1", "OPENAI_BASE_URL", ("OPENAI_API_KEY",), "/openai/v1/models",
                            "authorization"),
    # google-genai reads GOOGLE_API_KEY first when both are set; its base URL variable is
    # GOOGLE_GEMINI_BASE_URL (or http_options.base_url in code).
    "gemini": ProviderSetup("/gemini", "GOOGLE_GEMINI_BASE_URL", ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
                            "/gemini/v1beta/models?pageSize=1", "x-goog-api-key"),
}
ProviderName = Literal["anthropic", "openai", "gemini"]
_CHECK_TIMEOUT = 30.0


def codex_config(base_url: str) -> str:
    """The ~/.codex/config.toml lines that send Codex CLI's calls through the gateway."""
    return "\n".join([
        'model_provider = "smoltbot"',
        "",
        "[model_providers.smoltbot]",
        'name = "OpenAI through smoltbot"',
        f'base_url = "{base_url}"',
        'env_key = "OPENAI_API_KEY"',
        'wire_api = "responses"',
    ])


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
    provider: Annotated[ProviderName, typer.Option(
        "--provider", help="The API your agent calls: anthropic (ANTHROPIC_API_KEY), openai (OPENAI_API_KEY; "
                           "also prints Codex CLI's config) or gemini (GOOGLE_API_KEY or GEMINI_API_KEY).",
        case_sensitive=False)] = "anthropic",
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

    setup = PROVIDERS[provider]
    credential_var, credential = _credential(provider, setup)
    api_url = resolve_api_url(api, existing)
    gateway = gateway or config_store.cli_settings().gateway_url
    gateway_url = config_store.normalize_value("gateway_url", gateway) if gateway else (
        existing.gateway_url or default_gateway_url())
    if email is not None:
        email = config_store.normalize_value("email", email)
    elif not yes and sys.stdin.isatty() and not json_mode:
        email = _ask_email()

    created: bool | None = None
    if setup.check_path is not None:
        agent_id = _agent_through_gateway(gateway_url, setup, provider, credential_var, credential)
    with ApiClient(api_url) as client:
        if setup.check_path is None:
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
    base_url = f"{gateway_url}{setup.path}"
    dashboard = f"{api_url}/agents/{agent_id}"
    reachable = gateway_reachable(gateway_url)

    if json_mode:
        shown: dict[str, object] = {
            "initialised": True, "changed": True, "agent_id": agent_id, "created": created,
            "config_path": str(path), "gateway_url": gateway_url, "api_url": api_url, "provider": provider,
            "base_url_variable": setup.base_url_var, "base_url": base_url, "dashboard_url": dashboard,
            "gateway_reachable": reachable, "claimed": claimed}
        if provider == "anthropic":
            shown["anthropic_base_url"] = base_url
        if provider == "openai":
            shown["codex_config"] = codex_config(base_url)
        out.json(shown)
        return
    ready = {True: " (new agent).", False: ".", None: "."}[created]
    out.line(styled(f"Agent {agent_id} is ready" + ready, "bold green"))
    out.line(f"Config written to {path} (it holds no credential).")
    if claimed is True:
        out.line(f"Claimed as yours ({email}).")
    elif claimed is False:
        out.line("The agent was already claimed; the claim is unchanged.")
    out.line("")
    out.line("Point your agent at the gateway:")
    out.line(f"  export {setup.base_url_var}={base_url}")
    out.line("")
    if provider == "openai":
        out.line("For Codex CLI, in ~/.codex/config.toml (with OPENAI_API_KEY exported):")
        for line in codex_config(base_url).splitlines():
            out.line(f"  {line}" if line else "")
        out.line("")
    elif provider == "gemini":
        out.line(f"(google-genai reads {setup.base_url_var}; or pass http_options=HttpOptions(base_url=...))")
        out.line("")
    out.line(f"Dashboard: {dashboard}")
    out.line("Then run your agent, and watch its decisions: smoltbot logs --follow")
    if not reachable:
        out.note(styled(f"warning: the gateway at {gateway_url} is not answering; start the local stack with "
                        "`smoltbot up`, or pass the right one with --gateway URL", "yellow"))


def _credential(provider: str, setup: ProviderSetup) -> tuple[str, str]:
    """(variable, credential) of the provider's agent, from the environment."""
    if provider == "anthropic":
        credential = require_credential("smoltbot init")
        return (config_store.credential_from_env() or ("ANTHROPIC_API_KEY", ""))[0], credential
    for name in setup.credential_vars:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    raise CliError(f"smoltbot init --provider {provider} needs your agent's credential: set "
                   f"{' or '.join(setup.credential_vars)} to the key your agent uses, then run this again")


def _agent_through_gateway(gateway_url: str, setup: ProviderSetup, provider: str, credential_var: str,
                           credential: str) -> str:
    """The agent id the gateway gives the credential, from the provider's free model list (see
    the module docstring). The credential goes into that one request's header only."""
    assert setup.check_path is not None
    value = f"Bearer {credential}" if setup.credential_header == "authorization" else credential
    try:
        with httpx.Client(timeout=_CHECK_TIMEOUT, trust_env=False, follow_redirects=False) as http:
            response = http.get(gateway_url + setup.check_path, headers={setup.credential_header: value,
                                                                         "user-agent": "smoltbot-cli"})
    except httpx.HTTPError as error:
        raise CliError(f"the gateway at {gateway_url} is not answering ({type(error).__name__}), and for "
                       f"--provider {provider} it is the gateway that names your agent; start the local "
                       "stack with `smoltbot up`, or pass the right one with --gateway URL") from None
    if response.status_code in (401, 403):
        raise CliError(f"{provider} did not accept the credential in {credential_var} (HTTP "
                       f"{response.status_code}), so no agent was created; set {credential_var} to the key "
                       "your agent really calls the model with, then run `smoltbot init` again")
    agent_id = response.headers.get("x-smoltbot-agent", "")
    if not agent_id:
        raise CliError(f"the gateway at {gateway_url} relayed the check (HTTP {response.status_code}) but "
                       "named no agent: its registry may be down (the gateway fails open); run "
                       "`smoltbot status`, then `smoltbot init` again")
    return agent_id


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
