"""The promise, end to end: `smoltbot up`, point the official SDK at the printed gateway URL,
and the calls show up as traces in `smoltbot logs --json` within seconds."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.support.anthropic_standin import AnthropicStandin

pytestmark = pytest.mark.timeout(180)

CREDENTIAL = "sk-ant-api03-e2e-SECRET-0123456789abcdef"
TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


class RunningStack:
    def __init__(self, process: subprocess.Popen[str], lines: list[str], home: Path) -> None:
        self.process = process
        self.lines = lines
        self.home = home

    def value(self, pattern: str) -> str:
        for line in self.lines:
            match = re.search(pattern, line)
            if match:
                return match.group(1)
        raise AssertionError(f"{pattern!r} not in the output of smoltbot up: {self.lines}")


@pytest.fixture
async def standin() -> Iterator[AnthropicStandin]:
    server = AnthropicStandin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def stack(tmp_path: Path, standin: AnthropicStandin) -> Iterator[RunningStack]:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "SMOLTBOT_HOME": str(home),
        "SMOLTBOT_UPSTREAM_URL": standin.base_url,
        "SMOLTBOT_REGISTRY_ADDRESS": "127.0.0.1:0",
        "SMOLTBOT_OBSERVER_ADDRESS": "127.0.0.1:0",
    }
    env.pop("SMOLTBOT_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "smoltbot.cli.main", "up", "--gateway-port", "0", "--api-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "export ANTHROPIC_BASE_URL=" in line:
            break
    running = RunningStack(process, lines, home)
    try:
        running.value(r"export ANTHROPIC_BASE_URL=(\S+)")
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
        lines.extend(rest.splitlines())
    assert process.returncode == 0, "\n".join(lines)


def _smoltbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smoltbot.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_traces_of_sdk_calls_through_up_appear_in_logs(stack: RunningStack, standin: AnthropicStandin,
                                                             tmp_path: Path) -> None:
    base_url = stack.value(r"export ANTHROPIC_BASE_URL=(\S+)")
    api_url = stack.value(r"api:\s+(http://\S+?)/v1")
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key=CREDENTIAL, max_retries=0)
    try:
        thinking = {"type": "enabled", "budget_tokens": 2048}
        created = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=4096, thinking=thinking, tools=TOOLS,
            messages=[{"role": "user", "content": "Read the config [[scenario:thinking_tool_use]]"}],
        )
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=4096, thinking=thinking, tools=TOOLS,
            messages=[{"role": "user", "content": "Read it again [[scenario:thinking_tool_use]]"}],
        ) as stream:
            streamed = await stream.get_final_message()
    finally:
        await client.close()
    assert any(block.type == "tool_use" for block in created.content)
    assert any(block.type == "thinking" for block in streamed.content)

    env = {**os.environ, "HOME": str(tmp_path), "SMOLTBOT_HOME": str(stack.home),
           "SMOLTBOT_API_URL": api_url, "ANTHROPIC_API_KEY": CREDENTIAL}
    # In a thread: the stand-in serves on this test's event loop, and init's resolve asks it.
    init = await asyncio.to_thread(_smoltbot, "init", "--yes", "--api", api_url,
                                   "--gateway", base_url.removesuffix("/anthropic"), env=env)
    assert init.returncode == 0, init.stdout + init.stderr

    traces: list[dict] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logs = await asyncio.to_thread(_smoltbot, "logs", "--json", "-n", "50", env=env)
        assert logs.returncode == 0, logs.stdout + logs.stderr
        traces = json.loads(logs.stdout)
        if len({t["observation"]["exchange_id"] for t in traces}) >= 2:
            break
        await asyncio.sleep(0.5)
    exchanges = {t["observation"]["exchange_id"] for t in traces}
    assert len(exchanges) == 2, traces
    executed = [t for t in traces if t["action"]["type"] == "execute"]
    assert {t["action"]["name"] for t in executed} == {"read_file"}
    assert all(t["observation"]["reasoning"]["present"] for t in executed)
    assert all(t["observation"]["model"] == "claude-haiku-4-5" for t in traces)

    # The credential reached the upstream and nowhere else.
    assert all(request.credential == CREDENTIAL for request in standin.requests)
    for path in stack.home.rglob("*"):
        if path.is_file():
            assert CREDENTIAL.encode() not in path.read_bytes(), f"credential leaked into {path}"
