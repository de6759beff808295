"""What the user sees when something is wrong: one line that says what to do, exit 1, no traceback.
And the credential is never printed or written, whatever the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli.conftest import Cli, LocalStack, unused_port
from tests.integration.cli.helpers import assert_nowhere, assert_one_error_line

#: Every command that talks to the API about the configured agent.
API_COMMANDS = [
    ("status",), ("logs",), ("logs", "--json"), ("integrity",), ("card", "show"), ("claim",),
]


@pytest.mark.parametrize("args", API_COMMANDS, ids=" ".join)
async def test_not_initialised_says_to_run_init(cli: Cli, args: tuple[str, ...]) -> None:
    result = await cli(*args)

    assert_one_error_line(result, "not initialised", "smoltbot init")


@pytest.mark.parametrize("args", [*API_COMMANDS, ("init", "--yes", "--force")], ids=" ".join)
async def test_api_unreachable_says_how_to_start_it_or_point_elsewhere(cli: Cli, initialised: str,
                                                                       args: tuple[str, ...]) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"

    result = await cli(*args, "--api", dead)

    assert_one_error_line(result, f"cannot reach the smoltbot API at {dead}", "smoltbot up", "--api")


async def test_api_url_from_the_environment_wins_over_the_config(cli: Cli, initialised: str) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"

    result = await cli("status", env={"SMOLTBOT_API_URL": dead})

    assert_one_error_line(result, dead)


@pytest.mark.parametrize("args", [("status",), ("logs",), ("integrity",), ("card", "show"), ("claim",)],
                         ids=" ".join)
async def test_unknown_agent_says_which_api_and_how_to_fix_it(cli: Cli, initialised: str,
                                                              args: tuple[str, ...]) -> None:
    assert (await cli("config", "set", "agent_id", "smolt-0123456789abcdef")).exit_code == 0

    result = await cli(*args)

    if args == ("claim",):  # the credential is checked against the id before anything is looked up
        assert_one_error_line(result, "belongs to another agent")
    else:
        assert_one_error_line(result, "smolt-0123456789abcdef is unknown to the API", "smoltbot init --force")


async def test_a_server_that_is_not_a_smoltbot_api_is_named_as_such(cli: Cli, initialised: str,
                                                                    local_stack: LocalStack) -> None:
    # The gateway answers HTTP, but it is not the API.
    result = await cli("status", "--api", local_stack.gateway_url)

    assert_one_error_line(result, local_stack.gateway_url, "--api")


async def test_a_malformed_config_file_is_one_line_with_the_fix(cli: Cli, initialised: str) -> None:
    cli.config_path.write_text("{not json")

    result = await cli("status")

    assert_one_error_line(result, "not valid JSON", "smoltbot config edit")


async def test_a_bad_value_in_the_config_file_is_one_line_with_the_fix(cli: Cli, initialised: str) -> None:
    config = json.loads(cli.config_path.read_text())
    cli.config_path.write_text(json.dumps({**config, "api_url": "ftp://nope"}))

    result = await cli("logs")

    assert_one_error_line(result, "api_url", "smoltbot config edit")


async def test_the_credential_appears_in_no_output_and_no_file(cli: Cli, local_stack: LocalStack,
                                                               credential: str, tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps({
        "card_version": "unified/2026-04-26", "autonomy_mode": "observe", "integrity_mode": "observe",
        "principal": {"type": "unspecified", "relationship": "delegated_authority"},
        "values": {"declared": ["transparency"]},
        "autonomy": {"bounded_actions": [], "forbidden_actions": [], "escalation_triggers": []},
        "audit": {"retention_days": 1, "queryable": False, "trace_format": "ap-trace-v1"},
    }))
    outputs: list[str] = []
    for args in [("init", "--yes", "--email", "me@example.com"), ("status",), ("status", "--json"), ("logs",),
                 ("integrity", "--json"), ("card", "show"), ("card", "publish", str(card)), ("claim",),
                 ("config",), ("config", "--json"), ("init", "--yes", "--force", "--json")]:
        result = await cli(*args)
        outputs += [result.stdout, result.stderr]
    # A config value equal to the credential is refused, not written.
    refused = await cli("config", "set", "email", f"{credential}@example.com")
    outputs += [refused.stdout, refused.stderr]

    assert_nowhere(credential, *outputs, under=cli.home)


def test_running_the_console_script_not_initialised_prints_one_line(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "SMOLTBOT_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"}

    result = subprocess.run([sys.executable, "-m", "smoltbot.cli.main", "logs"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)

    assert result.returncode == 1
    assert result.stdout == ""
    expected = (f"error: smoltbot is not initialised: no agent in {tmp_path / 'h' / 'config.json'}; "
                "run `smoltbot init` first")
    assert result.stderr.strip().splitlines() == [expected]
