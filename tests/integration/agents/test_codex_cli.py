"""Codex CLI (npm `@openai/codex`, its bundled native binary) through the real gateway to the
OpenAI Responses stand-in: a temp HOME with a custom model provider, `codex exec`, the stand-in
asks for a shell command, Codex really runs it and sends its output back, the stand-in answers.

The stand-in is told which of Codex's tools to call, and with what, by headers Codex itself sends
(the provider's `http_headers`); the prompt's `[[scenario:tool_then_text]]` makes it answer with
text once the conversation ends in the tool's output.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from smoltbot.core.sessions import Rung
from smoltbot.v1 import trace_pb2
from tests.integration.agents.codex import MODEL, codex_binary, run_codex, write_codex_home
from tests.integration.agents.conftest import OpenAIThroughGateway

# The first run installs Codex (~100 MB download); the run itself takes a few seconds.
pytestmark = pytest.mark.timeout(600)

KEY = "sk-proj-codex-cli-through-smoltbot-0123456789abcdef"
MARK = "ran-by-codex-through-smoltbot"
#: The command Codex's exec_command tool is asked to run: it leaves a file and prints its text.
COMMAND = f"echo {MARK} | tee proof.txt"


async def test_codex_runs_a_shell_command_through_the_gateway_under_its_session(
        openai_gateway: OpenAIThroughGateway, tmp_path: Path) -> None:
    codex = codex_binary()
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    write_codex_home(home, openai_gateway.openai_base_url, COMMAND)

    code, out, err = await run_codex(codex, home, work, KEY)
    assert code == 0, f"codex exec exited {code}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"

    # The command really ran, in Codex's working directory.
    assert (work / "proof.txt").read_text().strip() == MARK
    # Two model calls: the one that asked for the command, the one that carried its output back.
    calls = [r for r in openai_gateway.standin.requests if r.path == "/v1/responses"]
    assert len(calls) == 2, [(r.method, r.path) for r in openai_gateway.standin.requests]
    first, second = (r.json() for r in calls)
    assert first["stream"] is True and "exec_command" in {t.get("name") for t in first["tools"]}
    asked = _last_function_call(second["input"])
    assert asked["name"] == "exec_command" and json.loads(asked["arguments"]) == {"cmd": COMMAND}
    output = second["input"][-1]
    assert output["type"] == "function_call_output" and output["call_id"] == asked["call_id"]
    assert MARK in output["output"]
    # Codex's last message is the stand-in's second answer.
    assert "OpenAI stand-in answering request" in out

    # Codex's session: printed by Codex, sent as `session-id` on both calls.
    printed = re.search(r"session id: ([0-9a-f-]{36})", err)
    assert printed is not None, err
    session = printed.group(1)
    assert [r.headers.get("session-id") for r in calls] == [session, session]
    assert all(r.credential == KEY for r in calls)

    rows = await _usage_rows(openai_gateway, session, count=2)
    assert [row.session_rung for row in rows] == [str(Rung.CODEX_SESSION_HEADER)] * 2
    assert {row.provider for row in rows} == {"openai"}
    assert {row.model for row in rows} == {MODEL}
    assert all(row.input_tokens > 0 and row.output_tokens > 0 for row in rows)
    # The first call starts the user's turn; the second (a tool output) continues it.
    assert [row.starts_turn for row in rows] == [True, False]
    assert not any(row.is_sub_agent for row in rows)

    traces = await openai_gateway.stack.wait_for_traces(2, session_id=session, order_by="timestamp asc")
    assert {t.observation.exchange_id for t in traces} == {row.exchange_id for row in rows}
    assert {t.context.session_id for t in traces} == {session}
    assert {t.observation.session_rung for t in traces} == {str(Rung.CODEX_SESSION_HEADER)}
    assert len({t.agent_id for t in traces}) == 1
    _assert_decisions(traces, [row.exchange_id for row in rows])


def _last_function_call(items: list[dict[str, Any]]) -> dict[str, Any]:
    return next(item for item in reversed(items) if item.get("type") == "function_call")


async def _usage_rows(through: OpenAIThroughGateway, session: str, *, count: int) -> list[Any]:
    found: list[Any] = []
    for _ in range(300):
        async with through.stack.db.read() as conn:
            found = list((await conn.execute(sa.text(
                "SELECT * FROM exchange_usage WHERE session_id = :s ORDER BY occurred_at"),
                {"s": session})).all())
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} usage rows under session {session}, found {len(found)}")


def _assert_decisions(traces: list[trace_pb2.ApTrace], exchanges: list[str]) -> None:
    """The first call's shell command is one `execute` decision with Codex's exact arguments; the
    second call (the answer after the command's output) a plain reply."""
    by_exchange = {exchange: [t for t in traces if t.observation.exchange_id == exchange]
                   for exchange in exchanges}
    (command,) = by_exchange[exchanges[0]]
    assert (command.action.type, command.action.name) == ("execute", "exec_command")
    assert json.loads(command.action.parameters_json) == {"cmd": COMMAND}
    (answer,) = by_exchange[exchanges[1]]
    assert (answer.action.type, answer.action.name) == ("recommend", "respond")
    assert {t.observation.record_kind for t in traces} == {"decision"}
    assert {t.observation.model for t in traces} == {MODEL}
    assert {t.observation.provider for t in traces} == {"openai"}
