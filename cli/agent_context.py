"""The configured agent as the user commands use it: its id, the API to ask about it and a client
of that API (`agent_context`), the credential that proves it is ours (`require_credential`), and
the wording of the API's answers about it (`agent_error`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from smoltbot.cli import config_store
from smoltbot.cli.api_client import ApiClient, resolve_api_url
from smoltbot.cli.config_store import CREDENTIAL_ENV_VARS, Config
from smoltbot.cli.errors import ApiError, CliError

__all__ = ["AgentContext", "agent_context", "agent_error", "require_credential"]


@dataclass
class AgentContext:
    config: Config
    agent_id: str
    api_url: str
    api: ApiClient


@contextlib.contextmanager
def agent_context(api_option: str | None) -> Iterator[AgentContext]:
    """The configured agent and a client of the API to ask about it (NotInitialised if none)."""
    config = config_store.load()
    agent_id = config.require_agent()
    api_url = resolve_api_url(api_option, config)
    with ApiClient(api_url) as api:
        yield AgentContext(config, agent_id, api_url, api)


def require_credential(what: str) -> str:
    """The agent's credential from the environment, for a call that must prove ownership."""
    found = config_store.credential_from_env()
    if found is None:
        raise CliError(f"{what} needs your agent's credential: set {CREDENTIAL_ENV_VARS[0]} "
                       f"(or {CREDENTIAL_ENV_VARS[1]}) to the key your agent uses, then run this again")
    return found[1]


def agent_error(error: ApiError, context: AgentContext) -> CliError:
    """An API error about the configured agent, reworded when the agent is unknown or not ours."""
    if error.status == 404 and error.reason == "AGENT_NOT_FOUND":
        return CliError(
            f"agent {context.agent_id} is unknown to the API at {context.api_url}; pass the API it was "
            "created on with --api URL, or run `smoltbot init --force` to register this machine's agent there"
        )
    if error.status == 403:
        return CliError(
            f"the credential in your environment belongs to another agent, not {context.agent_id}; "
            "set the key of this agent, or run `smoltbot init --force` to switch to the credential's agent")
    if error.status == 404 and error.reason == "ROUTE_NOT_FOUND":
        return CliError(f"the API at {context.api_url} does not serve this call ({error.message}); "
                        "is it a smoltbot API of the same version? (pass --api URL)")
    if error.status == 401:
        return CliError(f"the API did not accept the credential in your environment ({error.message})")
    return error
