"""Claude Code (npm `@anthropic-ai/claude-code`, its native binary) through the real gateway to the
Anthropic stand-in, which asks it to run a Bash command (named through Claude Code's own custom
headers). Under an enforce card that forbids Bash, Claude Code never runs it and ends its turn
normally, and the trace says blocked; under an observe card (the control) it runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.integration.agents.npm_tools import npm_package
from tests.integration.enforce.conftest import CREDENTIAL, EnforceStack, card_json

# The first run installs Claude Code; the run itself takes a few seconds.
pytestmark = pytest.mark.timeout(600)

CLAUDE_CODE_VERSION = "2.1.332"
COMMAND = "touch proof.txt && echo ran-by-claude-code"


def _binary(prefix: Path) -> Path:
    found = prefix / "node_modules" / ".bin" / "claude"
    if not found.exists():
        pytest.fail(f"no claude binary under {prefix}")
    return found


async def _run_claude(binary: Path, home: Path, work: Path, base_url: str) -> tuple[int, str, str]:
    headers = "\n".join([
        "x-standin-tool-name: Bash",
        "x-standin-tool-input: " + json.dumps({"command": COMMAND, "description": "Write the proof file"}),
    ])
    env = {
        "HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "NO_COLOR": "1",
        "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": CREDENTIAL, "ANTHROPIC_CUSTOM_HEADERS": headers,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1", "IS_SANDBOX": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(binary), "-p", "[[scenario:tool_use]] Write the proof file.", "--output-format", "json",
        "--allowedTools", "Bash", "--model", "claude-sonnet-4-5",
        cwd=str(work), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=180)
    return process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")


@pytest.mark.parametrize("mode", ["enforce", "observe"])
async def test_claude_code_does_not_run_a_forbidden_bash_command_and_ends_its_turn(
        enforce_stack: EnforceStack, tmp_path: Path, mode: str) -> None:
    binary = _binary(npm_package("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION))
    await enforce_stack.put_card(card_json(mode, forbidden_actions=["bash"]))
    home, work = tmp_path / "claude-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    code, out, err = await _run_claude(binary, home, work, enforce_stack.gateway.base_url + "/anthropic")
    assert code == 0, (out[-2000:], err[-2000:])
    result = json.loads(out.strip().splitlines()[-1])
    assert result.get("is_error") is False, result
    traces = await enforce_stack.observer.wait_for_traces(1, agent_id=enforce_stack.agent_id, timeout=30,
                                                          matching=lambda t: t.action.name == "Bash")
    bash = [t for t in traces if t.action.name == "Bash"]
    assert bash, [t.action.name for t in traces]
    if mode == "enforce":
        assert not (work / "proof.txt").exists(), "Claude Code ran the forbidden command"
        assert "Blocked a tool call" in result["result"]
        assert {t.enforcement.action for t in bash} == {"blocked"}
    else:  # the control: the same run under an observe card really runs the command
        assert (work / "proof.txt").exists()
        assert {t.enforcement.action for t in bash} == {"not_enforced"}
