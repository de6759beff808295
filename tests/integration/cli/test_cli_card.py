"""`smoltbot card show|validate|publish|edit` against the real Registry behind the real API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from tests.integration.cli.conftest import Cli, LocalStack
from tests.integration.cli.helpers import assert_nowhere, assert_one_error_line, fields_of

CARD = {
    "card_version": "unified/2026-04-26",
    "autonomy_mode": "observe",
    "integrity_mode": "observe",
    "principal": {"type": "human", "identifier": "owner@example.com", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency", "harm_prevention"]},
    "autonomy": {"bounded_actions": ["read_file", "respond"], "forbidden_actions": ["delete_file"],
                 "escalation_triggers": [{"condition": 'action_name == "deploy"', "action": "escalate",
                                          "reason": "deploys need a human"}]},
    "audit": {"retention_days": 30, "queryable": True, "trace_format": "ap-trace-v1",
              "query_endpoint": "http://127.0.0.1:8000/v1/traces"},
}


async def _active_card(local_stack: LocalStack, agent_id: str) -> dict:
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        return (await client.get(f"/v1/agents/{agent_id}/card")).json()


async def test_card_show_prints_the_active_card(cli: Cli, local_stack: LocalStack, initialised: str) -> None:
    active = await _active_card(local_stack, initialised)

    result = await cli("card", "show")

    assert result.exit_code == 0, result.output
    fields = fields_of(result.stdout)
    assert fields["card"] == active["card_id"]
    assert fields["agent"] == initialised
    assert fields["bounded actions"] == "any (not restricted)"
    assert json.loads((await cli("card", "show", "--json")).stdout) == active


async def test_card_publish_validates_then_makes_the_card_active(cli: Cli, local_stack: LocalStack,
                                                                 initialised: str, tmp_path: Path,
                                                                 credential: str) -> None:
    before = await _active_card(local_stack, initialised)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(CARD))

    result = await cli("card", "publish", str(path))

    assert result.exit_code == 0, result.output
    active = await _active_card(local_stack, initialised)
    assert active["card_id"] != before["card_id"]
    assert f"Published card {active['card_id']}" in result.stdout
    assert active["autonomy"]["forbidden_actions"] == ["delete_file"]
    shown = fields_of((await cli("card", "show")).stdout)
    assert shown["forbidden actions"] == "delete_file"
    assert shown["escalation"] == 'action_name == "deploy" -> escalate'
    assert_nowhere(credential, result.stdout, result.stderr, under=cli.home)


async def test_card_publish_of_an_invalid_card_names_the_field_and_changes_nothing(
        cli: Cli, local_stack: LocalStack, initialised: str, tmp_path: Path) -> None:
    before = await _active_card(local_stack, initialised)
    path = tmp_path / "card.json"
    path.write_text(json.dumps({**CARD, "autonomy": {**CARD["autonomy"], "forbiden_actions": ["x"]}}))

    result = await cli("card", "publish", str(path))

    assert_one_error_line(result, "forbiden_actions")
    assert (await _active_card(local_stack, initialised))["card_id"] == before["card_id"]


async def test_card_publish_without_a_credential_fails_with_one_line(cli: Cli, initialised: str,
                                                                      tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text(json.dumps(CARD))

    result = await cli("card", "publish", str(path), env={"ANTHROPIC_API_KEY": None})

    assert_one_error_line(result, "ANTHROPIC_API_KEY")


async def test_card_publish_with_another_agents_credential_says_whose_it_is(cli: Cli, initialised: str,
                                                                           tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text(json.dumps(CARD))

    result = await cli("card", "publish", str(path), env={"ANTHROPIC_API_KEY": "sk-ant-api03-someone-else"})

    assert_one_error_line(result, "belongs to another agent", initialised)


async def test_card_validate_checks_against_the_configured_agent(cli: Cli, initialised: str,
                                                                 tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**CARD, "agent_id": "smolt-0000ffff"}))

    result = await cli("card", "validate", str(other))

    assert_one_error_line(result, "agent_id")


async def test_card_edit_publishes_what_the_editor_saved(cli: Cli, local_stack: LocalStack, initialised: str,
                                                         tmp_path: Path) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import json, sys\n"
        "path = sys.argv[1]\n"
        "card = json.load(open(path))\n"
        "assert 'card_id' not in card\n"
        "card['autonomy']['forbidden_actions'] = ['rm_rf']\n"
        "open(path, 'w').write(json.dumps(card, indent=2))\n"
    )

    result = await cli("card", "edit", env={"EDITOR": f"{sys.executable} {editor}"})

    assert result.exit_code == 0, result.output
    active = await _active_card(local_stack, initialised)
    assert active["autonomy"]["forbidden_actions"] == ["rm_rf"]
    assert f"Published card {active['card_id']}" in result.stdout


async def test_card_edit_without_changes_publishes_nothing(
    cli: Cli, local_stack: LocalStack, initialised: str, tmp_path: Path
) -> None:
    before = await _active_card(local_stack, initialised)

    result = await cli("card", "edit", env={"EDITOR": "true"})

    assert result.exit_code == 0, result.output
    assert "No changes" in result.stdout
    assert (await _active_card(local_stack, initialised))["card_id"] == before["card_id"]


async def test_card_edit_that_breaks_the_card_keeps_the_draft_and_publishes_nothing(
        cli: Cli, local_stack: LocalStack, initialised: str, tmp_path: Path) -> None:
    before = await _active_card(local_stack, initialised)
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import json, sys\n"
        "path = sys.argv[1]\n"
        "card = json.load(open(path))\n"
        "card['autonomy_mode'] = 'yolo'\n"
        "open(path, 'w').write(json.dumps(card))\n"
    )

    result = await cli("card", "edit", env={"EDITOR": f"{sys.executable} {editor}"})

    line = assert_one_error_line(result, "autonomy_mode", "smoltbot card publish")
    draft = cli.smoltbot_home / "card.draft.json"
    assert str(draft) in line
    assert json.loads(draft.read_text())["autonomy_mode"] == "yolo"
    assert (await _active_card(local_stack, initialised))["card_id"] == before["card_id"]


async def test_card_edit_with_a_failing_editor_is_one_line_and_publishes_nothing(
        cli: Cli, local_stack: LocalStack, initialised: str) -> None:
    before = await _active_card(local_stack, initialised)

    result = await cli("card", "edit", env={"EDITOR": "false"})

    assert_one_error_line(result, "'false' exited with code 1", "EDITOR")
    assert (await _active_card(local_stack, initialised))["card_id"] == before["card_id"]
