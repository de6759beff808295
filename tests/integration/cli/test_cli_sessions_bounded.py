"""`smoltbot sessions` reads the usage of the sessions it lists, each over its own range of the
session index, never the agent's whole history grouped by session (checked on the query plan of
every statement it makes the observer run on `exchange_usage`)."""

from __future__ import annotations

import json
from typing import Any

from smoltbot.core.storage import open_database
from tests.integration.api.test_api_usage import SESSION
from tests.integration.cli.conftest import Cli, LocalStack
from tests.integration.cli.test_cli_usage import recorded  # noqa: F401 (the fixture)
from tests.support.query_plans import explain, index_reads, statements_on


async def test_sessions_reads_the_usage_of_each_listed_session_over_its_own_range(
        cli: Cli, local_stack: LocalStack, recorded: list[dict[str, Any]]) -> None:  # noqa: F811
    with statements_on("exchange_usage") as statements:
        listed = await cli("sessions", "--json")
    assert listed.exit_code == 0, listed.output
    [session] = json.loads(listed.stdout)
    assert session["session_id"] == SESSION and session["usage"]["calls"] == 3
    assert session["recorded_turns"] == 1
    assert statements
    db = open_database(local_stack.settings.effective_database_url)
    try:
        for statement, parameters in statements:
            reads = index_reads(await explain(db, statement, parameters), "exchange_usage")
            assert reads and all(index.startswith("ix_exchange_usage_session") and "session_id" in condition
                                 for index, condition in reads), (statement, reads)
    finally:
        await db.close()
