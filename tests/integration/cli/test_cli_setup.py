"""`smoltbot init`, `status`, `config` and `claim` against the real local stack."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from smoltbot.cli.output import local_time
from smoltbot.core.settings import Settings
from tests.integration.cli.conftest import Cli, LocalStack, unused_port
from tests.integration.cli.helpers import assert_nowhere, assert_one_error_line, fields_of
from tests.support.anthropic_standin import AnthropicStandin


@pytest.fixture
async def upstream() -> AsyncIterator[AnthropicStandin]:
    """The model API the stack's API checks credentials with (`smoltbot init` resolves through it)."""
    async with AnthropicStandin() as standin:
        yield standin


@pytest.fixture
def settings_factory(settings_factory: Callable[..., Settings],
                     upstream: AnthropicStandin) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        return settings_factory(**{**overrides, "upstream_url": upstream.base_url})

    return build


async def test_init_learns_the_agent_id_from_the_credential_and_prints_the_export_line(
        cli: Cli, local_stack: LocalStack, credential: str) -> None:
    result = await cli("init", "--yes", "--gateway", local_stack.gateway_url)

    assert result.exit_code == 0, result.output
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        resolved = (await client.post("/v1/agents/resolve", headers={"x-api-key": credential})).json()
    agent_id = resolved["agent_id"]
    assert resolved["created"] is False  # init created it
    assert f"export ANTHROPIC_BASE_URL={local_stack.gateway_url}/anthropic" in result.stdout
    assert f"{local_stack.api_url}/agents/{agent_id}" in result.stdout
    assert "(new agent)" in result.stdout
    assert "warning" not in result.stderr  # the gateway answers

    config = json.loads(cli.config_path.read_text())
    assert config["agent_id"] == agent_id
    assert config["gateway_url"] == local_stack.gateway_url
    assert config["api_url"] == local_stack.api_url
    assert config["created_at"]
    assert stat.S_IMODE(cli.config_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.smoltbot_home.stat().st_mode) == 0o700
    assert_nowhere(credential, result.stdout, result.stderr, under=cli.home)


async def test_init_accepts_the_exported_base_url_as_gateway_and_ANTHROPIC_AUTH_TOKEN_as_credential(
        cli: Cli, local_stack: LocalStack, credential: str, upstream: AnthropicStandin) -> None:
    result = await cli("init", "--yes", "--gateway", f"{local_stack.gateway_url}/anthropic/",
                       env={"ANTHROPIC_API_KEY": None, "ANTHROPIC_AUTH_TOKEN": credential})

    assert result.exit_code == 0, result.output
    # An OAuth token is checked as the agent sends it: a bearer token, not an x-api-key.
    [check] = [request for request in upstream.requests if request.path == "/v1/models"]
    assert check.headers["authorization"] == f"Bearer {credential}" and "x-api-key" not in check.headers
    assert json.loads(cli.config_path.read_text())["gateway_url"] == local_stack.gateway_url
    assert f"export ANTHROPIC_BASE_URL={local_stack.gateway_url}/anthropic\n" in result.stdout


async def test_init_defaults_to_the_local_stack_ports_from_the_environment(
    cli: Cli, local_stack: LocalStack
) -> None:
    api_port = local_stack.api_url.rsplit(":", 1)[1]
    gateway_port = local_stack.gateway_url.rsplit(":", 1)[1]

    result = await cli("init", "--yes", env={"SMOLTBOT_API_URL": None, "SMOLTBOT_API_PORT": api_port,
                                             "SMOLTBOT_GATEWAY_PORT": gateway_port})

    assert result.exit_code == 0, result.output
    config = json.loads(cli.config_path.read_text())
    assert config["api_url"] == f"http://127.0.0.1:{api_port}"
    assert config["gateway_url"] == f"http://127.0.0.1:{gateway_port}"
    assert f"export ANTHROPIC_BASE_URL=http://127.0.0.1:{gateway_port}/anthropic" in result.stdout


async def test_init_warns_when_the_gateway_does_not_answer_but_still_initialises(cli: Cli) -> None:
    gateway = f"http://127.0.0.1:{unused_port()}"

    result = await cli("init", "--yes", "--gateway", gateway)

    assert result.exit_code == 0, result.output
    assert f"export ANTHROPIC_BASE_URL={gateway}/anthropic" in result.stdout
    assert "warning: the gateway" in result.stderr and "smoltbot up" in result.stderr


async def test_init_when_already_initialised_says_so_and_how_to_initialise_again(
    cli: Cli, initialised: str
) -> None:
    before = cli.config_path.read_text()

    again = await cli("init", "--yes")

    assert again.exit_code == 0, again.output
    assert f"already initialised for agent {initialised}" in again.stdout
    assert "smoltbot init --force" in again.stdout
    assert cli.config_path.read_text() == before

    forced = await cli("init", "--yes", "--force")
    assert forced.exit_code == 0, forced.output
    assert "export ANTHROPIC_BASE_URL=" in forced.stdout
    assert json.loads(cli.config_path.read_text())["agent_id"] == initialised


async def test_init_with_email_claims_the_agent(cli: Cli, local_stack: LocalStack) -> None:
    result = await cli("init", "--yes", "--email", "owner@example.com", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["claimed"] is True
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        agent = (await client.get(f"/v1/agents/{report['agent_id']}")).json()
    assert agent["claimed"] is True
    assert json.loads(cli.config_path.read_text())["email"] == "owner@example.com"


async def test_init_with_a_credential_the_model_api_rejects_creates_nothing_and_says_what_to_set(
        cli: Cli, local_stack: LocalStack, credential: str, upstream: AnthropicStandin) -> None:
    upstream.accepted_keys = {"sk-ant-api03-some-other-key"}

    result = await cli("init", "--yes", "--gateway", local_stack.gateway_url)

    assert_one_error_line(
        result, "did not accept the credential in ANTHROPIC_API_KEY", "no agent was created", "smoltbot init"
    )
    assert not cli.config_path.exists()
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        assert (await client.get("/v1/agents")).json()["items"] == []
    assert_nowhere(credential, result.stdout, result.stderr, under=cli.home)


async def test_init_when_the_model_api_is_down_says_so_and_creates_nothing(
        cli: Cli, local_stack: LocalStack, upstream: AnthropicStandin) -> None:
    await upstream.stop()

    result = await cli("init", "--yes", "--gateway", local_stack.gateway_url)

    assert_one_error_line(result, "could not check your credential", "not answering", "no agent was created")
    assert not cli.config_path.exists()
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        assert (await client.get("/v1/agents")).json()["items"] == []


async def test_init_without_a_credential_in_the_environment_says_which_variable_to_set(cli: Cli) -> None:
    result = await cli("init", "--yes", env={"ANTHROPIC_API_KEY": None})

    assert_one_error_line(result, "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
    assert not cli.config_path.exists()


async def test_status_shows_agent_reachability_last_seen_claimed_and_trace_count(
        cli: Cli, local_stack: LocalStack, initialised: str) -> None:
    result = await cli("status")

    assert result.exit_code == 0, result.output
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        agent = (await client.get(f"/v1/agents/{initialised}")).json()
    lines = fields_of(result.stdout)
    assert lines["agent"] == initialised
    assert lines["gateway"] == f"{local_stack.gateway_url}  reachable"
    assert lines["api"] == f"{local_stack.api_url}  ok"
    # Resolving the credential (init) counts as being seen.
    assert lines["last seen"].startswith(local_time(agent["last_seen_at"]))
    assert lines["claimed"].startswith("no")
    assert lines["traces"] == "0"

    as_json = json.loads((await cli("status", "--json")).stdout)
    assert as_json["agent"]["agent_id"] == initialised
    assert as_json["gateway"]["reachable"] is True
    assert as_json["api"]["health"]["status"] == "ok"


async def test_status_reports_an_unreachable_gateway_without_failing(cli: Cli, initialised: str) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    assert (await cli("config", "set", "gateway_url", dead)).exit_code == 0

    result = await cli("status")

    assert result.exit_code == 0, result.output
    assert f"{dead}  not reachable" in result.stdout


async def test_claim_claims_once_and_stores_the_email(
    cli: Cli, local_stack: LocalStack, initialised: str
) -> None:
    result = await cli("claim", "--email", "me@example.com")

    assert result.exit_code == 0, result.output
    assert f"Agent {initialised} is claimed by me@example.com" in result.stdout
    assert json.loads(cli.config_path.read_text())["email"] == "me@example.com"
    assert fields_of((await cli("status")).stdout)["claimed"].startswith("yes")

    again = await cli("claim")
    assert_one_error_line(again, "already claimed")


async def test_claim_without_a_credential_fails_with_one_line(cli: Cli, initialised: str) -> None:
    result = await cli("claim", env={"ANTHROPIC_API_KEY": None})

    assert_one_error_line(result, "ANTHROPIC_API_KEY")


async def test_config_path_get_set_unset_and_show(cli: Cli, initialised: str) -> None:
    assert (await cli("config", "path")).stdout.strip() == str(cli.config_path)
    assert (await cli("config", "get", "agent_id")).stdout.strip() == initialised

    set_result = await cli("config", "set", "api_url", "http://localhost:9000/")
    assert set_result.exit_code == 0, set_result.output
    assert (await cli("config", "get", "api_url")).stdout.strip() == "http://localhost:9000"
    assert stat.S_IMODE(cli.config_path.stat().st_mode) == 0o600

    shown = json.loads((await cli("config", "--json")).stdout)
    assert shown["api_url"] == "http://localhost:9000" and shown["agent_id"] == initialised

    assert (await cli("config", "unset", "email")).exit_code == 0
    assert_one_error_line(await cli("config", "get", "email"), "email is not set")


async def test_config_set_rejects_bad_values_unknown_keys_and_created_at(cli: Cli, initialised: str) -> None:
    before = cli.config_path.read_text()

    assert_one_error_line(await cli("config", "set", "api_url", "not a url"), "api_url must be an http")
    assert_one_error_line(await cli("config", "set", "email", "nope"), "email must be an email")
    assert_one_error_line(await cli("config", "set", "api_key", "x"), "unknown config key 'api_key'")
    assert_one_error_line(await cli("config", "set", "created_at", "2026-01-01T00:00:00Z"), "smoltbot init")
    assert cli.config_path.read_text() == before


async def test_config_edit_writes_what_the_editor_saved_after_checking_it(cli: Cli, initialised: str,
                                                                          tmp_path: Path) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import json, sys\n"
        "path = sys.argv[1]\n"
        "data = json.load(open(path))\n"
        "data['email'] = 'edited@example.com'\n"
        "open(path, 'w').write(json.dumps(data))\n"
    )
    result = await cli("config", "edit", env={"EDITOR": f"{sys.executable} {editor}"})

    assert result.exit_code == 0, result.output
    config = json.loads(cli.config_path.read_text())
    assert config["email"] == "edited@example.com" and config["agent_id"] == initialised

    broken = tmp_path / "broken.py"
    broken.write_text("import sys\nopen(sys.argv[1], 'w').write('{not json')\n")
    failed = await cli("config", "edit", env={"EDITOR": f"{sys.executable} {broken}"})
    assert_one_error_line(failed, "not valid JSON")
    assert json.loads(cli.config_path.read_text())["email"] == "edited@example.com"


async def test_init_force_starts_over_from_a_broken_config(cli: Cli, initialised: str) -> None:
    cli.config_path.write_text("{broken")
    assert_one_error_line(await cli("init", "--yes"), "not valid JSON")

    result = await cli("init", "--yes", "--force")

    assert result.exit_code == 0, result.output
    assert json.loads(cli.config_path.read_text())["agent_id"] == initialised
