"""A real OTLP backend: Arize Phoenix (`phoenix serve`, its SQLite store in a temporary directory)
receives a real observer's span tree over OTLP HTTP and gRPC and shows it through its own REST
API, with our ids, parents and the span kinds it reads from gen_ai.operation.name; an exchange
processed again leaves one span per id there.

Phoenix is not a dependency of smoltbot (it is a large application): the test runs the
`phoenix` executable named by SMOLTBOT_PHOENIX (or found on PATH), installed apart, e.g.
`python -m venv /opt/phoenix && /opt/phoenix/bin/pip install arize-phoenix`, and is skipped,
saying so, when there is none.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from smoltbot.observer.otel.mapping import TurnKey, span_id_for, trace_id_for
from tests.integration.observer.conftest import ObserverStack, free_port
from tests.integration.observer.test_otel_through_observer import _tool_reply
from tests.integration.observer.test_usage_and_turns import SESSION, _call

pytestmark = pytest.mark.timeout(180)

PROJECT = "smoltbot-test"


@dataclass(frozen=True)
class Phoenix:
    url: str
    grpc_port: int


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    executable = os.environ.get("SMOLTBOT_PHOENIX") or shutil.which("phoenix")
    if not executable:
        pytest.skip("Arize Phoenix is not installed: set SMOLTBOT_PHOENIX to the `phoenix` executable "
                    "of a separate `pip install arize-phoenix`")
    home: Path = tmp_path_factory.mktemp("phoenix")
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(home), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc_port)}
    log = (home / "phoenix.log").open("w")
    process = subprocess.Popen([executable, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (home / "phoenix.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "phoenix serve did not come up in 120 s"
            time.sleep(0.5)
        yield Phoenix(url, grpc_port)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def _spans_of(phoenix: Phoenix, agent_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=phoenix.url) as client:
        response = await client.get(f"/v1/projects/{PROJECT}/spans", params={"limit": 1000})
    if response.status_code == 404:  # the project exists once its first span arrived
        return []
    assert response.status_code == 200, response.text
    return [span for span in response.json()["data"]
            if (span.get("attributes") or {}).get("gen_ai.agent.id") == agent_id]


async def _wait_spans(phoenix: Phoenix, agent_id: str, count: int) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        spans = await _spans_of(phoenix, agent_id)
        if len(spans) >= count:
            return spans
        assert asyncio.get_running_loop().time() < deadline, f"Phoenix shows {len(spans)} of {count} spans"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_phoenix_shows_the_span_tree_once_per_id(
        observer_stack: ObserverStack, phoenix: Phoenix, protocol: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = phoenix.url if protocol == "http/protobuf" else f"http://127.0.0.1:{phoenix.grpc_port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={PROJECT}")
    await observer_stack.stop_observer()
    observer = await observer_stack.start_observer(otel_export=True)
    agent_id, agent_hash = await observer_stack.agent()
    call = _call(agent_hash, [{"role": "user", "content": "Fix it"}], _tool_reply(),
                 datetime.now(UTC) - timedelta(seconds=5))
    await observer_stack.ingest([call])
    await observer_stack.wait_finished([call.exchange_id])

    spans = {span["name"]: span for span in await _wait_spans(phoenix, agent_id, 3)}
    assert set(spans) == {"chat claude-opus-4-8", "execute_tool read_file", f"invoke_agent {agent_id}"}
    trace_id = f"{trace_id_for(TurnKey(agent_id, SESSION, 1), call.exchange_id):032x}"
    turn, chat, tool = (spans[f"invoke_agent {agent_id}"], spans["chat claude-opus-4-8"],
                        spans["execute_tool read_file"])
    assert {span["context"]["trace_id"] for span in spans.values()} == {trace_id}
    assert chat["context"]["span_id"] == f"{span_id_for('chat', call.exchange_id):016x}"
    assert chat["parent_id"] == tool["parent_id"] == turn["context"]["span_id"]
    assert not turn.get("parent_id")
    # Phoenix reads the GenAI operation into its own span kinds.
    assert (turn["span_kind"], chat["span_kind"], tool["span_kind"]) == ("AGENT", "LLM", "TOOL")
    assert chat["attributes"]["gen_ai.usage.input_tokens"] == 12003
    assert chat["attributes"]["gen_ai.usage.cache_read.input_tokens"] == 10000
    assert tool["attributes"]["aap.card_id"].startswith("ac-")
    assert [event["name"] for event in tool["events"]] == ["gen_ai.evaluation.result"]

    # Processed again: the same ids are sent, and Phoenix keeps one span each.
    async with observer_stack.db.begin() as conn:
        await conn.execute(sa.text("INSERT INTO exchange_payloads (exchange_id, payload) "
                                   "VALUES (:e, :p)"), {"e": call.exchange_id, "p": call.SerializeToString()})
        await conn.execute(sa.text("UPDATE exchanges SET state = 'pending', attempts = 0, "
                                   "lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = :now "
                                   "WHERE exchange_id = :e"),
                           {"e": call.exchange_id, "now": datetime.now(UTC) - timedelta(seconds=1)})
    shipper = observer.components.metrics.shipper
    assert shipper is not None
    deadline = asyncio.get_running_loop().time() + 20
    while shipper.stats.exported < 6:
        assert asyncio.get_running_loop().time() < deadline, shipper.stats
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # Phoenix inserts received spans in the background
    again = await _spans_of(phoenix, agent_id)
    assert sorted(span["context"]["span_id"] for span in again) == sorted(
        span["context"]["span_id"] for span in spans.values())
