"""`smoltbot sessions` makes two requests whatever the number of sessions it lists: the sessions
list, then their usage in one read (`GET /v1/agents/{id}/usage/sessions`), with the figures each
session's own read gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.api.helpers import anthropic_response, make_exchange
from tests.integration.api.test_api_usage import SESSION, claude_code_session
from tests.integration.cli.conftest import Cli, LocalStack, PutTraces

OTHER = "sess-other"


async def test_sessions_lists_then_reads_all_their_usage_at_once(
        cli: Cli, local_stack: LocalStack, initialised: str, credential: str, put_traces: PutTraces,
        monkeypatch: pytest.MonkeyPatch) -> None:
    at = datetime.now(UTC) - timedelta(minutes=5)
    other = [make_exchange(local_stack.ingest_target, credential, anthropic_response(text=f"Answer {n}."),
                           agent_id=initialised, session_hint=OTHER, at=at + timedelta(seconds=n))
             for n in range(2)]
    await put_traces(initialised, *claude_code_session(local_stack.ingest_target, credential, initialised),
                     *other)

    # Every request the CLI sends (its httpx client, passed through unchanged).
    sent: list[str] = []
    send = httpx.Client.send

    def counted(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        sent.append(request.url.path)
        return send(client, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", counted)
    listed = await cli("sessions", "--json")
    monkeypatch.undo()
    assert listed.exit_code == 0, listed.output
    assert sent == [f"/v1/agents/{initialised}/sessions", f"/v1/agents/{initialised}/usage/sessions"], sent

    rows = {row["session_id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {SESSION, OTHER}
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        for session_id, row in rows.items():
            detail = (await client.get(f"/v1/sessions/{session_id}", params={"agent_id": initialised})).json()
            assert row["usage"] == detail["total"] and row["recorded_turns"] == detail["turn_count"]
    assert rows[SESSION]["usage"]["calls"] == 3 and rows[OTHER]["usage"]["calls"] == 2
