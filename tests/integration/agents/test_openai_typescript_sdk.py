"""The TypeScript `openai` SDK (npm `openai`, run by Node) through the real gateway: Chat
Completions and Responses, each created and streamed, with tool calls (and reasoning on the
Responses side). What the SDK returns through the gateway is identical to what it returns from
the stand-in directly, and the stand-in received the same bytes both times.

openai 7 needs Node 22; Node here is 20, so the pinned SDK is the last 6.x.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.agents.conftest import OpenAIThroughGateway
from tests.integration.agents.npm_tools import npm_package
from tests.support.standin_server import RecordedRequest

pytestmark = pytest.mark.timeout(300)

SDK_VERSION = "6.49.0"
KEY = "sk-proj-typescript-sdk-through-smoltbot-0123456789"
HERE = Path(__file__).resolve().parent
#: Set per connection or per hop, not by the SDK: the rest of the request arrives as the SDK sent it.
_PER_HOP = {"host", "connection", "keep-alive"}


@pytest.fixture(scope="module")
def sdk_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None:
        pytest.fail("node is missing: the TypeScript SDK test needs Node 20+")
    prefix = npm_package("openai", SDK_VERSION)
    work = tmp_path_factory.mktemp("openai-ts")
    (work / "node_modules").symlink_to(prefix / "node_modules", target_is_directory=True)
    shutil.copy(HERE / "openai_sdk_calls.mjs", work / "openai_sdk_calls.mjs")
    return work / "openai_sdk_calls.mjs"


async def _run_sdk(script: Path, base_url: str) -> dict[str, Any]:
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url}
    node = await asyncio.create_subprocess_exec(
        "node", str(script), cwd=script.parent, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), timeout=60)
    assert node.returncode == 0, err.decode(errors="replace")
    results: dict[str, Any] = json.loads(out)
    return results


def _as_sent(request: RecordedRequest) -> tuple[str, str, list[tuple[str, str]], bytes]:
    headers = sorted((name.lower(), value) for name, value in request.headers.items()
                     if name.lower() not in _PER_HOP)
    return request.method, request.path, headers, request.body


async def test_the_typescript_sdk_gets_through_the_gateway_what_it_gets_directly(
        openai_gateway: OpenAIThroughGateway, sdk_script: Path) -> None:
    standin = openai_gateway.standin
    direct = await _run_sdk(sdk_script, standin.base_url + "/v1")
    sent_direct = [_as_sent(r) for r in standin.requests]
    standin.requests.clear()
    through = await _run_sdk(sdk_script, openai_gateway.openai_base_url)
    sent_through = [_as_sent(r) for r in standin.requests]

    assert through == direct
    assert [(method, path) for method, path, _, _ in sent_through] == [
        ("POST", "/v1/chat/completions")] * 2 + [("POST", "/v1/responses")] * 2
    for via_gateway, straight in zip(sent_through, sent_direct, strict=True):
        assert via_gateway == straight

    # What the SDK built is what the stand-in meant: tool calls (arguments reassembled from
    # fragments), reasoning with its summary and encrypted content, usage.
    call = direct["chat"]["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"])
    streamed = direct["chatStream"]["final"]["choices"][0]["message"]["tool_calls"][0]
    assert streamed["function"] == call["function"] and streamed["id"] == call["id"]
    assert direct["chatStream"]["final"]["usage"] == direct["chat"]["usage"]
    assert len(direct["chatStream"]["chunks"]) > 4
    for final in (direct["responses"], direct["responsesStream"]["final"]):
        kinds = [item["type"] for item in final["output"]]
        assert kinds == ["reasoning", "function_call"], kinds
        assert final["output"][1]["name"] == "shell" and json.loads(final["output"][1]["arguments"])
        assert final["output"][0]["summary"] and final["output"][0]["encrypted_content"]
    # The stream helper adds `parsed_arguments` (null without a zod schema); the rest is the same.
    streamed_output = [{k: v for k, v in item.items() if k != "parsed_arguments"}
                       for item in direct["responsesStream"]["final"]["output"]]
    assert streamed_output == direct["responses"]["output"]
    event_types = {event["type"] for event in direct["responsesStream"]["events"]}
    assert {"response.function_call_arguments.delta", "response.reasoning_summary_text.delta",
            "response.completed"} <= event_types

    # The gateway recorded the four calls, with their usage, under one agent.
    rows = await _usage_rows(openai_gateway, count=4)
    assert [row.provider for row in rows] == ["openai"] * 4
    assert [row.model for row in rows] == ["gpt-4.1", "gpt-4.1", "gpt-5.1", "gpt-5.1"]
    assert [row.output_tokens for row in rows] == [
        direct["chat"]["usage"]["completion_tokens"],
        direct["chatStream"]["final"]["usage"]["completion_tokens"],
        direct["responses"]["usage"]["output_tokens"],
        direct["responsesStream"]["final"]["usage"]["output_tokens"],
    ]
    assert len({row.agent_id for row in rows}) == 1
    # Each call is one decision: the tool call the SDK returned, with its exact arguments; the
    # Responses ones reasoned (the summary is all the API gives of it).
    traces = await openai_gateway.stack.traces_by_exchange([row.exchange_id for row in rows])
    expected = [("get_weather", call["function"]["arguments"], "none")] * 2 + [
        ("shell", direct["responses"]["output"][1]["arguments"], "reasoning_summary")] * 2
    for row, (name, arguments, reasoning) in zip(rows, expected, strict=True):
        (trace,) = traces[row.exchange_id]
        assert (trace.observation.record_kind, trace.action.type, trace.action.name) == (
            "decision", "execute", name)
        assert json.loads(trace.action.parameters_json) == json.loads(arguments)
        assert trace.observation.reasoning.source == reasoning
        assert trace.observation.provider == "openai"


async def _usage_rows(through: OpenAIThroughGateway, *, count: int) -> list[Any]:
    found: list[Any] = []
    for _ in range(300):
        async with through.stack.db.read() as conn:
            found = list((await conn.execute(sa.text(
                "SELECT * FROM exchange_usage ORDER BY occurred_at"))).all())
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} usage rows, found {len(found)}")
