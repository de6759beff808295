"""Helpers of the API tests.

* ``ingest(stack, *exchanges)``: sends exchanges to the Observer's ``Ingest`` stream, as the
  gateway does, and waits for the acks.
* ``make_exchange(...)``: an Exchange whose response is a realistic Anthropic Messages body.
* ``seed_agent(api, stack)``: an agent with three traces, read back through the API.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
from google.protobuf import timestamp_pb2

from smoltbot.core.identity import agent_hash
from smoltbot.core.settings import Settings
from smoltbot.v1 import exchange_pb2, observer_service_pb2, observer_service_pb2_grpc
from tests.support.anthropic_standin import AnthropicStandin


@dataclass
class Stack:
    settings: Settings
    registry_address: str
    observer_address: str
    observer_channel: grpc.aio.Channel
    upstream: AnthropicStandin | None = None  # what settings.upstream_url points at, when a stand-in


def hash_of(stack: Stack, credential: str) -> str:
    return agent_hash(credential, stack.settings.hash_secret.encode())


def auth(credential: str) -> dict[str, str]:
    return {"x-api-key": credential}


def new_credential() -> str:
    return f"sk-ant-api03-test-{secrets.token_hex(16)}"


# --------------------------------------------------------------------------- exchanges

TOOLS = [
    {"name": "read_file", "description": "Read a file from the repository",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"name": "delete_file", "description": "Delete a file",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
]


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def anthropic_response(*, thinking: str | None = None, text: str | None = None,
                       tool: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Messages API response body with thinking, text and tool_use blocks as asked."""
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking,
                        "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG"})
    if text is not None:
        content.append({"type": "text", "text": text})
    if tool is not None:
        content.append({"type": "tool_use", "id": f"toolu_{secrets.token_hex(12)}", "name": tool[0],
                        "input": tool[1]})
    return {
        "model": "claude-sonnet-4-5-20250929", "id": f"msg_{secrets.token_hex(12)}", "type": "message",
        "role": "assistant", "content": content,
        "stop_reason": "tool_use" if tool is not None else "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 1532, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 211, "service_tier": "standard"},
    }


def make_exchange(
    stack: Stack,
    credential: str,
    response: dict[str, Any],
    *,
    agent_id: str = "",
    session_hint: str = "",
    prompt: str = "The retry loop in client.py never stops. Can you find out why?",
    at: datetime | None = None,
) -> exchange_pb2.Exchange:
    started = at or datetime.now(UTC)
    request = {
        "model": "claude-sonnet-4-5-20250929", "max_tokens": 4096, "tools": TOOLS,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": prompt}],
    }
    return exchange_pb2.Exchange(
        exchange_id=secrets.token_hex(16),
        agent_hash=hash_of(stack, credential),
        agent_id=agent_id,
        session_hint=session_hint,
        request=exchange_pb2.CapturedRequest(
            method="POST",
            path="/v1/messages",
            headers=[
                exchange_pb2.HttpHeader(name="content-type", value="application/json"),
                exchange_pb2.HttpHeader(name="anthropic-version", value="2023-06-01"),
            ],
            body=json.dumps(request).encode(),
        ),
        response=exchange_pb2.CapturedResponse(
            status=200,
            headers=[
                exchange_pb2.HttpHeader(name="content-type", value="application/json"),
                exchange_pb2.HttpHeader(name="request-id", value="req_011CSLsW7mFqvHHnzrKdKjAE"),
            ],
            body=json.dumps(response).encode(),
        ),
        timings=exchange_pb2.ExchangeTimings(
            started_at=_ts(started),
            first_byte_at=_ts(started + timedelta(milliseconds=420)),
            ended_at=_ts(started + timedelta(milliseconds=1900)),
        ),
        outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE,
        gateway_id="test-gateway",
    )


async def ingest(
    stack: Stack, *exchanges: exchange_pb2.Exchange
) -> list[observer_service_pb2.IngestResponse]:
    """Sends exchanges over one Ingest stream, as the gateway does, and waits for every ack."""
    stub = observer_service_pb2_grpc.ObserverServiceStub(stack.observer_channel)
    call = stub.Ingest()
    acks = []
    for exchange in exchanges:
        await call.write(observer_service_pb2.IngestRequest(exchange=exchange))
    for _ in exchanges:
        acks.append(await asyncio.wait_for(call.read(), timeout=15))
    await call.done_writing()
    assert all(ack.status in (observer_service_pb2.INGEST_STATUS_ACCEPTED,
                              observer_service_pb2.INGEST_STATUS_DUPLICATE) for ack in acks), acks
    return acks


async def wait_for_traces(api: httpx.AsyncClient, agent_id: str, count: int, timeout: float = 20.0
                          ) -> list[dict[str, Any]]:
    """Polls the public API until the agent has `count` traces (the observer works async)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get(f"/v1/agents/{agent_id}/traces", params={"limit": 1000})
        if response.status_code == 200 and len(response.json()["items"]) >= count:
            return response.json()["items"]
        if time.monotonic() > deadline:
            raise AssertionError(f"{agent_id} has no {count} traces after {timeout}s: {response.text[:500]}")
        await asyncio.sleep(0.1)


@dataclass
class SeededAgent:
    credential: str
    agent_id: str
    traces: list[dict[str, Any]]


async def seed_agent(
    api: httpx.AsyncClient, stack: Stack, *, session: str = "sess-api-test-1"
) -> SeededAgent:
    """An agent with three traces: a tool call with thinking, a reply, a forbidden-looking call."""
    credential = new_credential()
    resolved = await api.post("/v1/agents/resolve", headers=auth(credential))
    assert resolved.status_code == 200, resolved.text
    agent_id = resolved.json()["agent_id"]
    now = datetime.now(UTC)
    await ingest(
        stack,
        make_exchange(stack, credential, anthropic_response(
            thinking="The user says the retry loop never stops. The backoff lives in client.py; "
                     "I should read it before changing anything.",
            text="Let me look at the retry logic first.",
            tool=("read_file", {"path": "src/client.py"})), agent_id=agent_id, session_hint=session,
            at=now - timedelta(seconds=30)),
        make_exchange(stack, credential, anthropic_response(
            text="The loop retries on every status, including 400s. It should stop on client errors."),
            agent_id=agent_id, session_hint=session, at=now - timedelta(seconds=20)),
        make_exchange(stack, credential, anthropic_response(
            thinking="The old log file is in the way; deleting it is quickest.",
            tool=("delete_file", {"path": "logs/old.log"})), agent_id=agent_id, session_hint=session,
            at=now - timedelta(seconds=10)),
    )
    traces = await wait_for_traces(api, agent_id, 3)
    return SeededAgent(credential, agent_id, traces)
