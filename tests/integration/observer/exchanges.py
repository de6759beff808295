"""Exchange protos built from realistic Anthropic Messages bodies, as the gateway captures them
(a non-streamed body, or a stream reassembled into the final Message JSON)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2

from smoltbot.v1 import exchange_pb2

MODEL = "claude-sonnet-4-5-20250929"
SIGNATURE = "EqQBCkYIBxgCKkBz3pGk0hQXfAKE" + "x" * 40

#: A request with history: an earlier assistant turn with its own thinking, sent back by the
#: client. It must never count as this exchange's reasoning.
HISTORY = [
    {"role": "user", "content": "List the files in /tmp."},
    {
        "role": "assistant",
        "content": [
            {
                "type": "thinking",
                "thinking": "OLD-TURN-THINKING: I should call list_files.",
                "signature": SIGNATURE,
            },
            {"type": "tool_use", "id": "toolu_old", "name": "list_files", "input": {"path": "/tmp"}},
        ],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_old", "content": "a.txt b.txt"}],
    },
]
TOOLS = [
    {"name": "read_file", "description": "Read a file", "input_schema": {"type": "object", "properties": {
        "path": {"type": "string"}}, "required": ["path"]}},
    {"name": "delete_file", "description": "Delete a file", "input_schema": {"type": "object", "properties": {
        "path": {"type": "string"}}, "required": ["path"]}},
]


def new_exchange_id() -> str:
    return secrets.token_hex(16)


def request_body(*, stream: bool = False, history: bool = True, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 4096,
        "system": "You are a careful file assistant.",
        "tools": TOOLS,
        "messages": HISTORY if history else [{"role": "user", "content": "Hello"}],
        **extra,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def message(
    *content: dict[str, Any], stop_reason: str | None = "end_turn", model: str = MODEL
) -> dict[str, Any]:
    return {
        "id": f"msg_{secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 120, "output_tokens": 80},
    }


def thinking(text: str, *, signed: bool = True) -> dict[str, Any]:
    return {"type": "thinking", "thinking": text, "signature": SIGNATURE if signed else ""}


def redacted_thinking() -> dict[str, Any]:
    return {
        "type": "redacted_thinking",
        "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw" + "A" * 40,
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(name: str, tool_input: dict[str, Any], tool_id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id or f"toolu_{secrets.token_hex(10)}", "name": name,
            "input": tool_input}


def error_body(kind: str, detail: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": detail}}


def _stamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def make_exchange(
    agent_hash: str,
    response: dict[str, Any] | bytes | None,
    *,
    status: int = 200,
    streamed: bool = False,
    outcome: int = exchange_pb2.EXCHANGE_OUTCOME_COMPLETE,
    outcome_detail: str = "",
    stream_error: dict[str, Any] | None = None,
    request: bytes | None = None,
    agent_id: str = "",
    session_id: str = "",
    session_hint: str = "",
    exchange_id: str | None = None,
    ended_at: datetime | None = None,
) -> exchange_pb2.Exchange:
    """One captured exchange. `response` is the body (JSON object or raw bytes; None for none)."""
    if response is None:
        body = b""
    elif isinstance(response, bytes):
        body = response
    else:
        body = json.dumps(response).encode()
    ended = ended_at or datetime.now(UTC)
    exchange = exchange_pb2.Exchange(
        exchange_id=exchange_id or new_exchange_id(),
        agent_hash=agent_hash,
        agent_id=agent_id,
        session_id=session_id,
        session_hint=session_hint,
        request=exchange_pb2.CapturedRequest(
            method="POST", path="/v1/messages",
            headers=[exchange_pb2.HttpHeader(name="content-type", value="application/json"),
                     exchange_pb2.HttpHeader(name="anthropic-version", value="2023-06-01")],
            body=request if request is not None else request_body(stream=streamed),
        ),
        response=exchange_pb2.CapturedResponse(
            status=status, body=body, streamed=streamed, event_count=12 if streamed else 0,
            stream_error=json.dumps(stream_error).encode() if stream_error else b"",
            headers=[exchange_pb2.HttpHeader(name="content-type",
                                             value="text/event-stream" if streamed else "application/json")],
        ),
        timings=exchange_pb2.ExchangeTimings(started_at=_stamp(ended - timedelta(milliseconds=900)),
                                             first_byte_at=_stamp(ended - timedelta(milliseconds=600)),
                                             ended_at=_stamp(ended)),
        outcome=outcome,
        outcome_detail=outcome_detail,
        gateway_id="gw-test",
    )
    return exchange
