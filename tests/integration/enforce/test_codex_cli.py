"""Codex CLI (npm `@openai/codex`, its native binary) through the real gateway to the OpenAI
Responses stand-in, which asks it to run a shell command (named through Codex's own provider
headers). Under an enforce card that forbids Codex's `exec_command` tool, Codex never runs it and
ends its turn normally, and the trace says blocked; under an observe card (the control) it runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.agents.codex import codex_binary, run_codex, write_codex_home
from tests.integration.enforce.conftest import OPENAI_KEY, ProviderStack, card_json

# The first run installs Codex (~100 MB download); the run itself takes a few seconds.
pytestmark = pytest.mark.timeout(600)

COMMAND = "echo ran-by-codex | tee proof.txt"


@pytest.mark.parametrize("mode", ["enforce", "observe"])
async def test_codex_does_not_run_a_forbidden_shell_command_and_ends_its_turn(
        provider_stack: ProviderStack, tmp_path: Path, mode: str) -> None:
    codex = codex_binary()
    await provider_stack.put_card(provider_stack.openai, card_json(mode, forbidden_actions=["exec_command"]))
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    write_codex_home(home, provider_stack.gateway.base_url + "/openai/v1", COMMAND)
    code, out, err = await run_codex(codex, home, work, OPENAI_KEY)
    assert code == 0, f"codex exec exited {code}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    calls = [r for r in provider_stack.openai_standin.requests if r.path == "/v1/responses"]
    traces = await provider_stack.observer.wait_for_traces(len(calls), agent_id=provider_stack.openai[0],
                                                           timeout=30)
    commands = [t for t in traces if t.action.name == "exec_command"]
    assert commands, [t.action.name for t in traces]
    if mode == "enforce":
        assert not (work / "proof.txt").exists(), "Codex ran the forbidden command"
        assert "Blocked a tool call" in out  # Codex's last message: the gateway's text
        assert len(calls) == 1  # the turn ended: no tool output went back
        assert {t.enforcement.action for t in commands} == {"blocked"}
        # The next turn sends the history back (store: false) with the gateway's text as the
        # assistant's message, under its own id, as Codex sends its own messages' made-up ids.
        code, out, err = await run_codex(codex, home, work, OPENAI_KEY,
                                         "resume", "--last", "[[scenario:text]] Why?")
        assert code == 0, f"codex exec resume exited {code}\n{out}\n{err}"
        replayed = [r for r in provider_stack.openai_standin.requests if r.path == "/v1/responses"][-1].json()
        (said,) = [item for item in replayed["input"] if item.get("role") == "assistant"]
        assert said["id"].startswith("msg_smoltbot_")
        assert said["content"][0]["text"].startswith("[smoltbot] Blocked a tool call")
    else:  # the control: the same run under an observe card really runs the command
        assert (work / "proof.txt").read_text().strip() == "ran-by-codex"
        assert len(calls) == 2
        assert {t.enforcement.action for t in commands} == {"not_enforced"}
