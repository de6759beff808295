"""Codex CLI as the tests run it: pinned, configured for a provider behind the gateway whose
stand-in asks for one shell command, and run non-interactively (`codex exec`)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from tests.integration.agents.npm_tools import npm_package

CODEX_VERSION = "0.171.0"
MODEL = "gpt-5.1-codex"
#: What Codex is asked the first time: the stand-in answers with the configured tool call.
PROMPT = "[[scenario:tool_then_text]] Write the proof file."


def codex_binary() -> Path:
    return npm_package("@openai/codex", CODEX_VERSION) / "node_modules" / ".bin" / "codex"


def write_codex_home(home: Path, base_url: str, command: str) -> None:
    """A Codex home whose provider is the gateway at `base_url` (Responses API), with the
    stand-in told to have Codex's exec_command tool run `command`."""
    tool_args = json.dumps({"cmd": command})
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(f"""\
model = "{MODEL}"
model_provider = "smoltbot"

[model_providers.smoltbot]
name = "OpenAI through smoltbot"
base_url = "{base_url}"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
http_headers = {{ "x-standin-tool-name" = "exec_command", "x-standin-tool-args" = {json.dumps(tool_args)} }}
""")


async def run_codex(codex: Path, home: Path, work: Path, key: str, *args: str) -> tuple[int, str, str]:
    """`codex exec` in `work` (default arguments: `PROMPT`); exit code, stdout, stderr."""
    env = {"HOME": str(home), "CODEX_HOME": str(home / ".codex"), "PATH": os.environ["PATH"],
           "OPENAI_API_KEY": key, "NO_COLOR": "1", "LANG": "C.UTF-8"}
    process = await asyncio.create_subprocess_exec(
        str(codex), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
        "-C", str(work), *(args or [PROMPT]),
        env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        raise
    return int(process.returncode or 0), out.decode(errors="replace"), err.decode(errors="replace")
