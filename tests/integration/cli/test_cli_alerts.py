"""`smoltbot alerts add|list|remove|deliveries` against the real API and Observer."""

from __future__ import annotations

import json

from tests.integration.cli.conftest import Cli
from tests.integration.cli.helpers import assert_one_error_line

HOOK = "https://hooks.example.com/services/T000/B000/secret-token"


async def test_add_list_remove_with_the_agents_credential(cli: Cli, initialised: str) -> None:
    added = await cli(
        "alerts",
        "add",
        HOOK,
        "--event",
        "violation",
        "--event",
        "failure_rate",
        "--min-severity",
        "high",
        "--failure-rate",
        "0.25",
        "--slack",
    )
    assert added.exit_code == 0, added.output
    assert "https://hooks.example.com" in added.output and "whsec_" in added.output

    listed = await cli("alerts", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (item,) = json.loads(listed.output)
    assert item["url"] == HOOK and item["events"] == ["violation", "failure_rate"]
    assert (
        item["min_severity"] == "high"
        and item["failure_rate_threshold"] == 0.25
        and item["format"] == "slack"
    )
    assert "secret" not in item

    table = await cli("alerts", "list")
    assert item["subscription_id"] in table.output and "rate >= 0.25" in table.output

    removed = await cli("alerts", "remove", item["subscription_id"])
    assert removed.exit_code == 0 and f"Removed {item['subscription_id']}" in removed.output
    again = await cli("alerts", "remove", item["subscription_id"])
    assert_one_error_line(again, "no such subscription")
    empty = await cli("alerts", "list")
    assert empty.exit_code == 0 and "No alert subscriptions" in empty.output

    deliveries = await cli("alerts", "deliveries", "--json")
    assert deliveries.exit_code == 0 and json.loads(deliveries.output) == []


async def test_owner_actions_without_or_with_another_credential_fail_with_one_line(
    cli: Cli, initialised: str
) -> None:
    for args in (("add", HOOK, "--event", "drift"), ("list",), ("remove", "as-3f9c2a71")):
        missing = await cli("alerts", *args, env={"ANTHROPIC_API_KEY": None})
        assert_one_error_line(missing, "ANTHROPIC_API_KEY")
        foreign = await cli("alerts", *args, env={"ANTHROPIC_API_KEY": "sk-ant-api03-someone-else"})
        assert_one_error_line(foreign, "belongs to another agent", initialised)


async def test_bad_subscriptions_say_what_to_fix(cli: Cli, initialised: str) -> None:
    private = await cli("alerts", "add", "http://10.0.0.8/hook", "--event", "drift")
    assert_one_error_line(private, "SMOLTBOT_WEBHOOK_ALLOW_PRIVATE")
    unknown = await cli("alerts", "add", HOOK, "--event", "everything")
    assert_one_error_line(unknown, "unknown event 'everything'")
    scheme = await cli("alerts", "add", "ftp://files.example.com/x", "--event", "drift")
    assert_one_error_line(scheme, "http:// or https://")
