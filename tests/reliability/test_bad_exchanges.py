"""Exchanges the observer can only partly read, and secrets inside what it stores.

Crafted `Exchange` protos go straight onto the observer's Ingest stream (the stand-in's
content is canned), with the agent_hash of an agent the registry resolved:

* truncated streams, unknown content block types, multi-MB thinking blocks, no content,
  bodies that are empty, not JSON or not UTF-8: each becomes a trace that says what was
  missing (observation.missing / outcome); none is dropped.
* API keys, bearer tokens and passwords inside thinking blocks and tool inputs are redacted
  in the stored traces, as served by the API and as rows in the traces table.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from smoltbot.core.service_auth import ServiceCredential, attach_credential_sync
from smoltbot.v1 import (
    exchange_pb2,
    observer_service_pb2,
    observer_service_pb2_grpc,
    registry_service_pb2_grpc,
)
from smoltbot.v1 import registry_service_pb2 as rpb
from tests.reliability.conftest import SHARED_SCRUB_INTERVAL
from tests.reliability.harness import MODEL, TOOLS, Stack, exchange_ids, record_figures

pytestmark = pytest.mark.timeout(120)

GIANT_THINKING_BYTES = 4 * 1024 * 1024
COMPLETE = exchange_pb2.EXCHANGE_OUTCOME_COMPLETE
DROPPED = exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_DROPPED


def _request_body(prompt: str) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 4096, "tools": TOOLS,
                       "thinking": {"type": "enabled", "budget_tokens": 2048},
                       "messages": [{"role": "user", "content": prompt}]}).encode()


def _message(content: list[dict[str, Any]], stop_reason: str | None = "end_turn") -> bytes:
    return json.dumps(
        {
            "id": "msg_01" + secrets.token_hex(8),
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 20},
        }
    ).encode()


def _exchange(
    agent_hash: str,
    response_body: bytes,
    *,
    status: int = 200,
    streamed: bool = False,
    outcome: int = COMPLETE,
    detail: str = "",
    prompt: str = "Do the task.",
) -> exchange_pb2.Exchange:
    now = time.time_ns()
    stamp = timestamp_pb2.Timestamp(seconds=now // 10**9, nanos=now % 10**9)
    return exchange_pb2.Exchange(
        exchange_id=secrets.token_hex(16), agent_hash=agent_hash,
        request=exchange_pb2.CapturedRequest(method="POST", path="/v1/messages", body=_request_body(prompt),
                                             headers=[exchange_pb2.HttpHeader(name="content-type",
                                                                              value="application/json")]),
        response=exchange_pb2.CapturedResponse(status=status, body=response_body, streamed=streamed,
                                               event_count=7 if streamed else 0),
        timings=exchange_pb2.ExchangeTimings(started_at=stamp, first_byte_at=stamp, ended_at=stamp),
        outcome=outcome, outcome_detail=detail, gateway_id="reliability-test",
    )


def _thinking(text: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": text, "signature": "sig_" + secrets.token_hex(16)}


def _tool(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_01" + secrets.token_hex(10), "name": name, "input": tool_input}


@pytest.fixture(scope="module")
def observer_channel(shared_stack: Stack) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 96 << 20), ("grpc.max_receive_message_length", 96 << 20)]
    with attach_credential_sync(grpc.insecure_channel(shared_stack.observer_address, options=options),
                                ServiceCredential(home=shared_stack.home)) as channel:
        yield channel


def _resolved_agent(stack: Stack) -> tuple[str, str]:
    agent_hash = secrets.token_hex(32)
    with attach_credential_sync(grpc.insecure_channel(stack.registry_address),
                                ServiceCredential(home=stack.home)) as channel:
        reply = registry_service_pb2_grpc.RegistryServiceStub(channel).ResolveAgent(
            rpb.ResolveAgentRequest(agent_hash=agent_hash), timeout=10)
    return reply.agent.agent_id, agent_hash


def _ingest(channel: grpc.Channel, exchanges: list[exchange_pb2.Exchange]) -> None:
    stub = observer_service_pb2_grpc.ObserverServiceStub(channel)
    replies = list(
        stub.Ingest(iter(observer_service_pb2.IngestRequest(exchange=e) for e in exchanges), timeout=60)
    )
    assert [r.status for r in replies] == [observer_service_pb2.INGEST_STATUS_ACCEPTED] * len(exchanges), (
        replies
    )


def test_partly_readable_exchanges_each_become_a_trace_that_says_what_was_missing(
        shared_stack: Stack, observer_channel: grpc.Channel) -> None:
    agent_id, agent_hash = _resolved_agent(shared_stack)
    giant = "I considered the files one by one. " * (GIANT_THINKING_BYTES // 35)
    cut_tool = _tool("read_file", {})
    cases: dict[str, tuple[exchange_pb2.Exchange, str, str]] = {
        # name: (exchange, outcome the trace must record, text `missing`/detail must contain)
        "truncated-stream": (
            _exchange(
                agent_hash,
                _message([_thinking("Let me look at"), cut_tool], None),
                streamed=True,
                outcome=DROPPED,
                detail="stream ended before message_stop",
            ),
            "upstream_dropped",
            "message_stop",
        ),
        "unknown-block-type": (
            _exchange(
                agent_hash,
                _message([{"type": "hologram_v9", "payload": "?"}, {"type": "text", "text": "Done."}]),
            ),
            "complete",
            "hologram_v9",
        ),
        "giant-thinking": (
            _exchange(agent_hash, _message([_thinking(giant), {"type": "text", "text": "Ok."}])),
            "complete",
            "",
        ),
        "no-content": (_exchange(agent_hash, _message([])), "complete", "no content"),
        "empty-body": (_exchange(agent_hash, b""), "complete", "empty"),
        "body-not-json": (_exchange(agent_hash, b"<html>502 Bad Gateway</html>"), "complete", "not JSON"),
        "body-not-utf8": (_exchange(agent_hash, b'{"content": "\xff\xfe\xfd"}'), "complete", "UTF-8"),
        "tool-input-not-json": (
            _exchange(
                agent_hash,
                _message(
                    [{"type": "tool_use", "id": "toolu_01cut", "name": "run_command", "input": '{"comm'}],
                    "max_tokens",
                ),
            ),
            "complete",
            "run_command",
        ),
        "no-response": (
            _exchange(
                agent_hash,
                b"",
                status=0,
                outcome=exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE,
                detail="upstream unreachable: ClientConnectorError",
            ),
            "upstream_unreachable",
            "unreachable",
        ),
    }
    started = time.monotonic()
    _ingest(observer_channel, [exchange for exchange, _, _ in cases.values()])
    traces = shared_stack.wait_for_exchanges(agent_id, len(cases), timeout=60)
    elapsed = time.monotonic() - started
    by_exchange: dict[str, list[dict[str, Any]]] = {}
    for trace in traces:
        by_exchange.setdefault(trace["observation"]["exchange_id"], []).append(trace)
    assert set(by_exchange) == {exchange.exchange_id for exchange, _, _ in cases.values()}, (
        "an exchange was dropped"
    )
    for name, (exchange, outcome, said) in cases.items():
        group = by_exchange[exchange.exchange_id]
        observation = group[0]["observation"]
        assert observation["outcome"] == outcome, (name, observation)
        told = " ".join(observation.get("missing", [])) + " " + observation.get("outcome_detail", "")
        if said:
            assert said.lower() in told.lower(), (
                name,
                observation.get("missing"),
                observation.get("outcome_detail"),
            )
        else:
            assert not observation.get("missing"), (name, observation.get("missing"))
    giant_reasoning = by_exchange[cases["giant-thinking"][0].exchange_id][0]["observation"]["reasoning"]
    assert giant_reasoning["present"] and giant_reasoning["chars"] >= GIANT_THINKING_BYTES - 64
    record_figures("observer_bad_exchanges", cases=len(cases), traced=len(by_exchange), dropped=0,
                   giant_thinking_bytes=GIANT_THINKING_BYTES, all_traced_s=round(elapsed, 1))


SECRETS = {
    "anthropic_key": "sk-ant-api03-" + secrets.token_urlsafe(40) + "AA",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyZWxpYWJpbGl0eSJ9." + secrets.token_urlsafe(32),
    "password": "Tr0ub4dor&3-" + secrets.token_hex(6),
    "github": "ghp_" + secrets.token_hex(18),
    "db_password": "pg-" + secrets.token_hex(10),
}


def test_secrets_in_reasoning_and_tool_inputs_are_redacted_in_stored_traces(
        shared_stack: Stack, observer_channel: grpc.Channel) -> None:
    agent_id, agent_hash = _resolved_agent(shared_stack)
    thinking = (
        f"The user pasted their key {SECRETS['anthropic_key']} and the header "
        f"Authorization: Bearer {SECRETS['bearer']}. I should not repeat password={SECRETS['password']}."
    )
    tool_inputs = [
        (
            "run_command",
            {
                "command": f"curl -H 'Authorization: Bearer {SECRETS['bearer']}' https://example.com "
                f"&& git clone https://x:{SECRETS['github']}@github.com/o/r"
            },
        ),
        (
            "read_file",
            {
                "path": "/etc/app.conf",
                "password": SECRETS["password"],
                "dsn": f"postgresql://app:{SECRETS['db_password']}@db:5432/app",
            },
        ),
    ]
    exchanges = [
        _exchange(agent_hash, _message([_thinking(thinking), _tool(*tool_inputs[0])], "tool_use")),
        _exchange(
            agent_hash, _message([_thinking(thinking), _tool(*tool_inputs[1])], "tool_use"), streamed=True
        ),
        _exchange(
            agent_hash,
            _message(
                [{"type": "text", "text": f"<thinking>key {SECRETS['anthropic_key']}</thinking>Here you go."}]
            ),
        ),
    ]
    _ingest(observer_channel, exchanges)
    traces = shared_stack.wait_for_exchanges(agent_id, len(exchanges), timeout=60)
    assert exchange_ids(traces) == {e.exchange_id for e in exchanges}
    served = json.dumps(traces)
    leaked = [name for name, value in SECRETS.items() if value in served]
    assert not leaked, f"secrets served by the API: {leaked}"
    assert "[REDACTED:" in served
    tools = [t for t in traces if t["action"]["type"] == "execute"]
    assert {t["action"]["name"] for t in tools} == {"run_command", "read_file"}
    assert all(t["observation"]["reasoning"]["present"] for t in traces)

    # The rows as stored, not only as served.
    with sqlite3.connect(shared_stack.home / "smoltbot.db") as db:
        stored = [str(row) for row in db.execute("SELECT * FROM traces WHERE agent_id = ?", (agent_id,))]
    assert len(stored) == len(traces)
    assert not [name for name, value in SECRETS.items() if any(value in row for row in stored)]



def _wait_gone(stack: Stack, needle: bytes, timeout: float) -> list[tuple[str, bytes]]:
    found = stack.find([needle])
    deadline = time.monotonic() + timeout
    while found and time.monotonic() < deadline:
        time.sleep(0.25)
        found = stack.find([needle])
    return found


def test_a_processed_exchange_leaves_no_raw_secret_in_the_database_files(
        shared_stack: Stack, observer_channel: grpc.Channel) -> None:
    """The observer clears a payload once traced and, when idle, zeroes it on disk
    (secure_delete) and truncates the WAL, at most every observer_scrub_interval: wait that out
    first (the shared stack sets it short), so this exchange is not the throttled case (the test
    below). A time, not a condition: nothing else says that no scrub ran lately."""
    time.sleep(SHARED_SCRUB_INTERVAL + 0.2)
    agent_id, agent_hash = _resolved_agent(shared_stack)
    marker = "sk-ant-api03-RAWLEFTOVER-" + secrets.token_urlsafe(24) + "1"
    _ingest(observer_channel, [_exchange(agent_hash, _message([_thinking(f"the key is {marker}"),
                                                               {"type": "text", "text": "ok"}]))])
    shared_stack.wait_for_exchanges(agent_id, 1, timeout=30)
    found = _wait_gone(shared_stack, marker.encode(), 15)
    assert not found, f"the raw secret is still on disk in {sorted({path for path, _ in found})}"


def test_an_exchange_traced_right_after_a_scrub_leaves_no_raw_secret_either(
        shared_stack: Stack, observer_channel: grpc.Channel) -> None:
    agent_id, agent_hash = _resolved_agent(shared_stack)
    first, second = (f"sk-ant-api03-RAWLEFTOVER-{n}-" + secrets.token_urlsafe(24) + "1" for n in (1, 2))
    for count, marker in enumerate((first, second), start=1):
        _ingest(observer_channel, [_exchange(agent_hash, _message([_thinking(f"the key is {marker}"),
                                                                   {"type": "text", "text": "ok"}]))])
        shared_stack.wait_for_exchanges(agent_id, count, timeout=30)
        if marker == first:
            assert not _wait_gone(shared_stack, first.encode(), 15), "not even the first one was scrubbed"
    found = _wait_gone(shared_stack, second.encode(), 10)
    assert not found, f"the raw secret is still on disk in {sorted({path for path, _ in found})}"
