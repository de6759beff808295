"""A local stand-in for the Anthropic Messages API, used by tests and benchmarks.

It speaks the wire format described in /work/shared/reference/anthropic-wire.md (§1-§6):
the same paths (with an optional prefix and ``?beta=true``), credentials in ``x-api-key``
or ``Authorization: Bearer``, named SSE events flushed one write per event, Anthropic error
bodies, ``request-id`` and ratelimit headers.

Behaviour is chosen per request, by header or by a marker in the last user message:

* ``x-standin-scenario: NAME`` or ``[[scenario:NAME]]``. NAME may list several names joined
  by ``,`` or ``+``: at most one content scenario plus the modifiers ``padded`` (JSON padded
  with spaces, like the real API), ``crlf`` (CRLF line endings) and ``slow`` (wait before
  the response headers instead of between events).
* ``x-standin-delay-ms: N`` or ``[[delay:N]]``: sleep N ms between SSE events.
* Content-encoding of Messages replies (streams too, flushed per event): ``br`` or ``zstd``
  when the client's ``Accept-Encoding`` lists one of them (the first listed wins); any stack
  with ``x-standin-encoding: gzip, br`` (applied in that order; ``deflate`` too; an unknown name
  labels the body without encoding it).
* Scenario ``echo``: the last user message said back, in 3-character deltas.
* ``x-standin-tool-name: NAME`` (and ``x-standin-tool-input: JSON object``): the tool scenarios
  call that tool with that input instead of the request's first tool (an agent's own tool, such
  as Claude Code's ``Bash``, set through the agent's custom headers).
* Scenario ``tiny_deltas``: a text answer of ``x-standin-deltas: N`` (default 1,000,000)
  one-character deltas, the letters ``a``..``j`` in turn; streamed in writes of 1,000 events.

Everything derived from a request (ids, thinking text, signatures, usage) is a function of
the request body (its canonical JSON without ``stream``), so a direct call and a proxied call
of the same request, streamed or not, give identical messages. Only ``request-id`` is unique
per request, as upstream.

Run standalone with ``python -m tests.support.anthropic_standin [--host H] [--port P]``; it
prints one line ``LISTENING <base url>`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import brotli
import zstandard
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["CONTENT_SCENARIOS", "ERROR_SCENARIOS", "MODIFIERS", "AnthropicStandin", "RecordedRequest"]

logger = logging.getLogger(__name__)

MODIFIERS = frozenset({"padded", "crlf", "slow"})
ERROR_SCENARIOS: dict[str, tuple[int, str, str]] = {
    "error_400": (
        400,
        "invalid_request_error",
        (
            'messages: roles must alternate between "user" and "assistant", '
            'but found multiple "user" roles in a row'
        ),
    ),
    "error_401": (401, "authentication_error", "invalid x-api-key"),
    "error_403": (
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "error_404": (404, "not_found_error", "model: {model}"),
    "error_413": (413, "request_too_large", "Request exceeds the maximum allowed number of bytes."),
    "error_429": (
        429,
        "rate_limit_error",
        ("This request would exceed the rate limit for your organization of 50 requests per minute."),
    ),
    "error_500": (500, "api_error", "Internal server error"),
    "error_529": (529, "overloaded_error", "Overloaded"),
}
CONTENT_SCENARIOS = frozenset(
    {
        "default",
        "text",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "thinking_tool_use",
        "interleaved",
        "tags",
        "server_tool",
        "no_message_stop",
        "mid_stream_error",
        "drop",
        "truncated_json",
        "refusal",
        "late_usage",
        "tiny_deltas",
        "echo",
    }
)
TINY_DELTAS_DEFAULT = 1_000_000
_TINY_LETTERS = "abcdefghij"
DEFAULT_SLOW_MS = 500
MAX_BODY_BYTES = 32 * 1024 * 1024  # upstream's Messages limit; aiohttp's default is 1 MiB
MAX_DELAY_MS = 60_000

_MARKER = re.compile(r"\[\[(scenario|delay):\s*([A-Za-z0-9_,+\-]+)\s*\]\]")
_ID_CHARS = bytes.maketrans(b"+/", b"xZ")
_ORG_ID = "5f3a9c1e-7b2d-4e8f-9a6c-1d2e3f4a5b6c"
_PING = b'{"type": "ping"}'
_MESSAGE_STOP = {"type": "message_stop"}
# Newest first, as upstream lists them. Creation dates of the newest models are illustrative.
_MODELS = [
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-06-01T00:00:00Z", "active"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z", "active"),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z", "active"),
    ("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z", "deprecated"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", "active"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", "deprecated"),
]
_MODEL_INFO = {
    model_id: {"type": "model", "id": model_id, "display_name": name, "created_at": created,
               "lifecycle": lifecycle, "max_input_tokens": 200_000, "max_tokens": 64_000}
    for model_id, name, created, lifecycle in _MODELS
}
_MODEL_IDS = [m[0] for m in _MODELS]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the stand-in received it."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    credential: str | None  # the x-api-key value, else the bearer token

    def json(self) -> Any:
        return json.loads(self.body)


class _HttpError(Exception):
    def __init__(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message, self.headers = status, error_type, message, headers or {}


@dataclass(slots=True)
class _Block:
    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    final: dict[str, Any]
    closed: bool = True


@dataclass(slots=True)
class _Reply:
    blocks: list[_Block]
    stop_reason: str = "end_turn"
    stop_details: dict[str, Any] | None = None
    server_tool_use: dict[str, int] | None = None
    interim_usage: bool = False  # a usage-only message_delta (stop_reason null) before the final one
    late_usage: bool = False  # ... or after the final one
    ending: str = "stop"  # stop | no_stop | error | drop


@dataclass(slots=True)
class _Options:
    scenario: str = "text"
    padded: bool = False
    crlf: bool = False
    slow: bool = False
    delay_ms: int = 0


class _Seed:
    """Deterministic strings derived from a request body."""

    __slots__ = ("digest", "fingerprint")

    def __init__(self, body: bytes) -> None:
        self.digest = hashlib.sha256(body).digest()
        self.fingerprint = self.digest[:4].hex()

    def token(self, salt: str, length: int = 22) -> str:
        raw = hashlib.sha256(self.digest + salt.encode()).digest()
        return base64.b64encode(raw).translate(_ID_CHARS, b"=").decode()[:length]

    def blob(self, salt: str, repeat: int) -> str:
        raw = b"".join(hashlib.sha256(self.digest + f"{salt}{i}".encode()).digest() for i in range(repeat))
        return base64.b64encode(raw).decode()


# --- reply construction -------------------------------------------------------------------


def _text_block(chunks: list[str], citations: dict[int, dict[str, Any]] | None = None) -> _Block:
    deltas: list[dict[str, Any]] = []
    for i, chunk in enumerate(chunks):
        deltas.append({"type": "text_delta", "text": chunk})
        if citations and i in citations:
            deltas.append({"type": "citations_delta", "citation": citations[i]})
    final: dict[str, Any] = {"type": "text", "text": "".join(chunks)}
    if citations:
        final["citations"] = list(citations.values())
    return _Block({"type": "text", "text": ""}, deltas, final)


def _thinking_block(seed: _Seed, n: int) -> _Block:
    chunks = [
        "Let me think about this request",
        f" (fingerprint {seed.fingerprint}, step {n}).",
        " First I work out what is being asked,",
        " then I decide how to answer it",
        " briefly and accurately.",
    ]
    signature = "sig_" + seed.blob(f"signature{n}", 3)
    deltas = [{"type": "thinking_delta", "thinking": c} for c in chunks]
    deltas.append({"type": "signature_delta", "signature": signature})
    final = {"type": "thinking", "thinking": "".join(chunks), "signature": signature}
    return _Block({"type": "thinking", "thinking": "", "signature": ""}, deltas, final)


def _json_fragments(text: str, size: int = 9) -> list[str]:
    return [""] + [text[i:i + size] for i in range(0, len(text), size)]


def _tool_block(kind: str, block_id: str, name: str, tool_input: dict[str, Any],
                partial: str | None = None) -> _Block:
    fragments = _json_fragments(json.dumps(tool_input) if partial is None else partial)
    start: dict[str, Any] = {"type": kind, "id": block_id, "name": name, "input": {}}
    if kind == "tool_use":
        start["caller"] = {"type": "direct"}
    deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
    return _Block(start, deltas, {**start, "input": tool_input}, closed=partial is None)


def _whole_block(block: dict[str, Any]) -> _Block:
    return _Block(block, [], block)


def _schema_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {"string": "example", "number": 42, "integer": 42, "boolean": True, "array": [], "object": {},
            "null": None}.get(kind, "example")


def _tool_choices(payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, input) for each client tool in the request, or the get_weather default."""
    choices = []
    for tool in payload.get("tools") or ():
        if isinstance(tool, dict) and isinstance(tool.get("name"), str) and "input_schema" in tool:
            properties = (tool.get("input_schema") or {}).get("properties") or {}
            choices.append((tool["name"], {k: _schema_value(v) for k, v in properties.items()}))
    return choices or [("get_weather", {"location": "Paris"})]


def _build_reply(scenario: str, seed: _Seed, payload: dict[str, Any],
                 tool: tuple[str, dict[str, Any]] | None = None) -> _Reply:
    fp = seed.fingerprint
    answer = ["Hello!", " This is the", " Anthropic stand-in", f" answering request {fp}."]
    if scenario in ("text", "default", "late_usage", "no_message_stop", "mid_stream_error", "drop"):
        ending = {"no_message_stop": "no_stop", "mid_stream_error": "error", "drop": "drop"}.get(
            scenario, "stop"
        )
        return _Reply([_text_block(answer)], late_usage=scenario == "late_usage", ending=ending)
    if scenario == "thinking":
        return _Reply([_thinking_block(seed, 0), _text_block(answer)], interim_usage=True)
    if scenario == "redacted_thinking":
        redacted = _whole_block({"type": "redacted_thinking", "data": "Em" + seed.blob("redacted", 2)})
        return _Reply([_thinking_block(seed, 0), redacted, _text_block(answer)])
    if scenario == "echo":  # the last user message repeated, in 3-character deltas (a model repeating a key)
        said = _last_user_text(payload) or "(nothing)"
        return _Reply([_text_block([said[i:i + 3] for i in range(0, len(said), 3)])])
    if scenario == "tags":
        chunks = ["<thin", "king>The user", " wants a greeting", ".</thi", "nking>", "Hello", f" from {fp}!"]
        return _Reply([_text_block(chunks)])
    if scenario == "refusal":
        details = {
            "type": "refusal",
            "category": "cyber",
            "explanation": "This request was refused due to policy.",
        }
        return _Reply(
            [_text_block(["I can't", " help with that."])], stop_reason="refusal", stop_details=details
        )
    tools = [tool] if tool is not None else _tool_choices(payload)
    if scenario in ("tool_use", "thinking_tool_use", "truncated_json"):
        name, tool_input = tools[0]
        blocks = [_text_block(["I'll use", f" the {name} tool."])]
        if scenario == "thinking_tool_use":
            blocks.insert(0, _thinking_block(seed, 0))
        partial = None
        if scenario == "truncated_json":
            # Complete pairs survive a partial parse; the cut one is dropped (jiter partial_mode).
            partial = (json.dumps(tool_input)[:-1] + ", " if tool_input else "{") + '"unit": "cel'
        blocks.append(_tool_block("tool_use", "toolu_01" + seed.token("tool0"), name, tool_input, partial))
        return _Reply(blocks, stop_reason="max_tokens" if partial else "tool_use")
    if scenario == "interleaved":
        blocks = []
        for n in range(2):
            name, tool_input = tools[n % len(tools)]
            blocks.append(_thinking_block(seed, n))
            blocks.append(_tool_block("tool_use", "toolu_01" + seed.token(f"tool{n}"), name, tool_input))
        return _Reply(blocks, stop_reason="tool_use")
    if scenario == "server_tool":
        tool_id = "srvtoolu_01" + seed.token("server0")
        url, title = "https://example.com/standin", "Anthropic stand-in search result"
        result = {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": [
            {"type": "web_search_result", "title": title, "url": url,
             "encrypted_content": seed.blob("content", 2), "page_age": "April 30, 2025"}]}
        citation = {"type": "web_search_result_location", "cited_text": "The answer is 42.", "url": url,
                    "title": title, "encrypted_index": seed.blob("index", 1)}
        return _Reply([
            _text_block(["I'll search", " the web for that."]),
            _tool_block("server_tool_use", tool_id, "web_search", {"query": f"stand-in {fp}"}),
            _whole_block(result),
            _text_block(["According to the search results,", " the answer is 42."], citations={1: citation}),
        ], interim_usage=True, server_tool_use={"web_search_requests": 1, "web_fetch_requests": 0})
    raise AssertionError(scenario)


def _tiny_text(count: int) -> str:
    return (_TINY_LETTERS * (count // 10 + 1))[:count]


def _tiny_delta_chunks(count: int, nl: bytes, per_write: int = 1000) -> list[bytes]:
    """`count` one-letter text deltas of block 0, encoded once per letter and joined per write."""
    events = [b"event: content_block_delta" + nl + b'data: {"type":"content_block_delta","index":0,'
              b'"delta":{"type":"text_delta","text":"' + letter.encode() + b'"}}' + nl + nl
              for letter in _TINY_LETTERS]
    cycle = b"".join(events)
    chunks = []
    for start in range(0, count, per_write):
        size = min(per_write, count - start)  # per_write is a multiple of 10: each chunk starts at "a"
        chunks.append(cycle * (size // 10) + b"".join(events[: size % 10]))
    return chunks


class _Encoder:
    """Content-encodings applied in order; `process` flushes, so each event reaches the client."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self._steps: list[Callable[[bytes, bool], bytes]] = []
        for token in tokens:
            if token in ("gzip", "deflate"):
                z = zlib.compressobj(wbits=31 if token == "gzip" else 15)
                self._steps.append(lambda data, end, z=z: z.compress(data) + z.flush(
                    zlib.Z_FINISH if end else zlib.Z_SYNC_FLUSH))
            elif token == "br":
                b = brotli.Compressor()
                self._steps.append(lambda data, end, b=b: b.process(data) + (
                    b.finish() if end else b.flush()))
            elif token == "zstd":
                c = zstandard.ZstdCompressor().compressobj()
                self._steps.append(lambda data, end, c=c: c.compress(data) + c.flush(
                    zstandard.COMPRESSOBJ_FLUSH_FINISH if end else zstandard.COMPRESSOBJ_FLUSH_BLOCK))

    @property
    def header(self) -> str:
        return ", ".join(self.tokens)

    def process(self, data: bytes, end: bool = False) -> bytes:
        for step in self._steps:
            data = step(data, end)
        return data


def _reply_encoder(headers: CIMultiDictProxy[str]) -> _Encoder | None:
    forced = headers.get("x-standin-encoding")
    if forced is not None:
        tokens = [t.strip().lower() for t in forced.split(",") if t.strip()]
        return _Encoder(tokens) if tokens else None
    for item in headers.get("accept-encoding", "").split(","):
        token, _, params = item.partition(";")
        token = token.strip().lower()
        if token in ("br", "zstd") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return _Encoder([token])
    return None


def _final_message(reply: _Reply, message_id: str, model: str, input_tokens: int) -> dict[str, Any]:
    content = [b.final for b in reply.blocks]
    output_tokens = max(1, len(json.dumps(content)) // 6)
    usage: dict[str, Any] = {
        "input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens, "service_tier": "standard", "inference_geo": "not_available",
    }
    thinking = sum(len(b.final.get("thinking", "")) for b in reply.blocks)
    if thinking:
        usage["output_tokens_details"] = {"thinking_tokens": max(1, thinking // 4)}
    if reply.server_tool_use:
        usage["server_tool_use"] = reply.server_tool_use
    message = {"model": model, "id": message_id, "type": "message", "role": "assistant", "content": content,
               "stop_reason": reply.stop_reason, "stop_sequence": None, "usage": usage}
    if reply.stop_details:
        message["stop_details"] = reply.stop_details
    return message


def _stream_events(reply: _Reply, message: dict[str, Any], request_id: str) -> list[tuple[str, Any]]:
    usage = message["usage"]
    start_usage = {k: v for k, v in usage.items() if k not in ("server_tool_use", "output_tokens_details")}
    start_usage["output_tokens"] = 1
    events: list[tuple[str, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "stop_details": None,
                    "usage": start_usage,
                },
            },
        )
    ]
    for index, block in enumerate(reply.blocks):
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": block.start}))
        if index == 0:
            events.append(("ping", _PING))
        events.extend(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                      for d in block.deltas)
        if block.closed:
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        if reply.ending in ("error", "drop"):
            del events[5:]  # message_start, block start, ping, two deltas
            if reply.ending == "error":
                events.append(("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                    "message": "Overloaded"},
                                         "request_id": request_id}))
            return events
    final_usage = {
        k: usage[k]
        for k in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "server_tool_use",
            "output_tokens_details",
        )
        if k in usage
    }
    usage_only = {"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None},
                  "usage": {"output_tokens": max(1, usage["output_tokens"] // 2)}}
    delta: dict[str, Any] = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    if reply.stop_details:
        delta["stop_details"] = reply.stop_details
    if reply.interim_usage:
        events.append(("message_delta", usage_only))
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage}))
    if reply.late_usage:
        events.append(("message_delta", {**usage_only, "usage": final_usage}))
    if reply.ending == "stop":
        events.append(("message_stop", _MESSAGE_STOP))
    return events


def _encode_events(events: list[tuple[str, Any]], padded: bool, crlf: bool) -> list[bytes]:
    nl = b"\r\n" if crlf else b"\n"
    out = []
    for n, (name, data) in enumerate(events):
        raw = (
            data
            if isinstance(data, bytes)
            else json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        )
        if padded and not isinstance(data, bytes):
            raw = raw[:-1] + b" " * (3 + (n * 5) % 11) + b"}"
        out.append(b"event: " + name.encode() + nl + b"data: " + raw + nl + nl)
    return out


# --- request parsing ----------------------------------------------------------------------


def _credential(headers: CIMultiDictProxy[str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return None


def _last_user_text(payload: dict[str, Any]) -> str:
    messages = payload.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
                )
            return ""
    return ""


def _options(headers: CIMultiDictProxy[str], body: bytes, payload: dict[str, Any]) -> _Options:
    spec, delay = headers.get("x-standin-scenario"), headers.get("x-standin-delay-ms")
    if (spec is None or delay is None) and b"[[" in body:
        for kind, value in _MARKER.findall(_last_user_text(payload)):
            if kind == "scenario" and spec is None:
                spec = value
            elif kind == "delay" and delay is None:
                delay = value
    options = _Options()
    for name in re.split(r"[,+]", spec or ""):
        name = name.strip().lower()
        if not name:
            continue
        if name in MODIFIERS:
            setattr(options, name, True)
        elif name in CONTENT_SCENARIOS or name in ERROR_SCENARIOS:
            options.scenario = name
        else:
            known = ", ".join(sorted(CONTENT_SCENARIOS | ERROR_SCENARIOS.keys() | MODIFIERS))
            raise _HttpError(
                400, "invalid_request_error", f"unknown stand-in scenario {name!r}; known: {known}"
            )
    if delay is not None:
        try:
            options.delay_ms = max(0, min(int(delay), MAX_DELAY_MS))
        except ValueError:
            raise _HttpError(
                400, "invalid_request_error", f"x-standin-delay-ms must be an integer, got {delay!r}"
            ) from None
    return options


def _named_tool(headers: CIMultiDictProxy[str]) -> tuple[str, dict[str, Any]] | None:
    name = headers.get("x-standin-tool-name")
    if not name:
        return None
    try:
        tool_input = json.loads(headers.get("x-standin-tool-input") or "{}")
    except ValueError:
        raise _HttpError(400, "invalid_request_error", "x-standin-tool-input must be a JSON object") from None
    if not isinstance(tool_input, dict):
        raise _HttpError(400, "invalid_request_error", "x-standin-tool-input must be a JSON object")
    return name, tool_input


def _parse_json(body: bytes, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise _HttpError(
            400, "invalid_request_error", f"There was an error parsing the body of your request: {exc}"
        ) from exc
    if not isinstance(payload, dict):
        raise _HttpError(400, "invalid_request_error", "Request body must be a JSON object")
    for name in required:
        if name not in payload:
            raise _HttpError(400, "invalid_request_error", f"{name}: Field required")
    return payload


def _input_tokens(body: bytes) -> int:
    return max(1, len(body) // 4)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the server ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class AnthropicStandin:
    """The stand-in server. ``await start()`` returns the base URL (no ``/v1``)."""

    host: str = "127.0.0.1"
    port: int = 0
    record: bool = True  # benchmarks may turn request recording off to keep memory flat
    #: None: any credential is accepted. A set: any other credential gets Anthropic's 401
    #: authentication_error on every endpoint, as upstream answers a revoked or mistyped key.
    accepted_keys: set[str] | frozenset[str] | None = None
    base_url: str = field(default="", init=False)
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    disconnects: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._runner: web.ServerRunner | None = None
        self._ids = itertools.count(1)
        self._id_prefix = "req_011C" + base64.b32encode(os.urandom(5)).decode().lower()
        self._limits_second = -1
        self._limits: dict[str, str] = {}
        self._routes: dict[tuple[str, str], Callable[..., Any]] = {
            ("POST", "/messages"): self._messages,
            ("POST", "/messages/count_tokens"): self._count_tokens,
            ("GET", "/models"): self._list_models,
            ("POST", "/messages/batches"): self._create_batch,
        }

    async def start(self) -> str:
        loop = asyncio.get_running_loop()

        def request_factory(*args: Any) -> web.BaseRequest:
            return web.BaseRequest(*args, loop, client_max_size=MAX_BODY_BYTES)

        server = web.Server(self._handle, request_factory=request_factory, handler_cancellation=True,
                            access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- plumbing

    def _headers(self, content_type: str | None = "application/json") -> dict[str, str]:
        now = int(time.time())
        if now != self._limits_second:
            self._limits_second = now
            reset = _rfc3339(datetime.fromtimestamp(now, UTC) + timedelta(seconds=1))
            self._limits = {"anthropic-organization-id": _ORG_ID}
            for kind, limit in (("input-tokens", 30000), ("output-tokens", 8000), ("requests", 4000),
                                ("tokens", 38000)):
                self._limits[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
                self._limits[f"anthropic-ratelimit-{kind}-remaining"] = str(limit - 1)
                self._limits[f"anthropic-ratelimit-{kind}-reset"] = reset
        headers = {**self._limits, "request-id": f"{self._id_prefix}{next(self._ids):012d}"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _json(self, data: Any, headers: dict[str, str], status: int = 200) -> web.Response:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return web.Response(body=body, status=status, headers=headers)

    def _error(self, exc: _HttpError, headers: dict[str, str]) -> web.Response:
        retry = exc.status in (429, 500, 529)
        headers.update({"x-should-retry": "true" if retry else "false", **exc.headers})
        body = {"type": "error", "error": {"type": exc.error_type, "message": exc.message},
                "request_id": headers["request-id"]}
        return self._json(body, headers, exc.status)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        too_large = None
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body, too_large = b"", _HttpError(413, "request_too_large", ERROR_SCENARIOS["error_413"][2])
        credential = _credential(request.headers)
        if self.record:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    request.query_string,
                    CIMultiDictProxy(CIMultiDict(request.headers)),
                    body,
                    credential,
                )
            )
        headers = self._headers()
        try:
            if too_large:
                raise too_large
            return await self._dispatch(request, body, credential, headers)
        except _HttpError as exc:
            return self._error(exc, headers)

    async def _dispatch(self, request: web.BaseRequest, body: bytes, credential: str | None,
                        headers: dict[str, str]) -> web.StreamResponse:
        path, method = request.path, request.method
        if path.endswith("/api/hello"):
            if method not in ("GET", "HEAD"):
                raise _HttpError(405, "invalid_request_error", f"Method {method} not allowed")
            return self._json({"message": "hello"}, headers)
        at = path.find("/v1/")
        if at < 0:
            raise _HttpError(404, "not_found_error", "Not Found")
        rest = path[at + 3:]
        if rest.startswith("/v1/"):
            raise _HttpError(404, "not_found_error",
                             f"Not Found: {path}. The base URL must not include /v1 "
                             "(use https://api.anthropic.com, not https://api.anthropic.com/v1).")
        handler = self._routes.get((method, rest))
        if handler is None and method == "GET" and rest.startswith("/models/") and rest.count("/") == 2:
            handler = self._get_model
        if handler is None:
            if any(route == rest for _, route in self._routes):
                raise _HttpError(405, "invalid_request_error", f"Method {method} not allowed")
            raise _HttpError(404, "not_found_error", "Not Found")
        if credential is None:
            raise _HttpError(401, "authentication_error", "x-api-key header is required")
        if self.accepted_keys is not None and credential not in self.accepted_keys:
            raise _HttpError(401, "authentication_error", "invalid x-api-key")
        return await handler(request, body, headers, rest)

    # --- endpoints

    async def _count_tokens(self, request: web.BaseRequest, body: bytes, headers: dict[str, str],
                            rest: str) -> web.StreamResponse:
        _parse_json(body, ("model", "messages"))
        return self._json({"input_tokens": _input_tokens(body)}, headers)

    async def _list_models(self, request: web.BaseRequest, body: bytes, headers: dict[str, str],
                           rest: str) -> web.StreamResponse:
        query = request.query
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise _HttpError(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
        ids = _MODEL_IDS
        if "after_id" in query and query["after_id"] in ids:
            ids = ids[ids.index(query["after_id"]) + 1:]
        elif "before_id" in query and query["before_id"] in ids:
            ids = ids[:ids.index(query["before_id"])][-limit:]
        page = ids[:limit]
        data = [_MODEL_INFO[i] for i in page]
        return self._json(
            {
                "data": data,
                "has_more": len(ids) > len(page),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            },
            headers,
        )

    async def _get_model(self, request: web.BaseRequest, body: bytes, headers: dict[str, str],
                         rest: str) -> web.StreamResponse:
        model_id = rest[len("/models/"):]
        if model_id not in _MODEL_INFO:
            raise _HttpError(404, "not_found_error", f"model: {model_id}")
        return self._json(_MODEL_INFO[model_id], headers)

    async def _create_batch(self, request: web.BaseRequest, body: bytes, headers: dict[str, str],
                            rest: str) -> web.StreamResponse:
        requests = _parse_json(body, ("requests",))["requests"]
        if not isinstance(requests, list) or not requests:
            raise _HttpError(400, "invalid_request_error", "requests: List should have at least 1 item")
        for n, item in enumerate(requests):
            if not isinstance(item, dict) or "custom_id" not in item or "params" not in item:
                raise _HttpError(
                    400, "invalid_request_error", f"requests.{n}: custom_id and params are required"
                )
        now = datetime.now(UTC)
        return self._json({
            "id": "msgbatch_01" + _Seed(body).token("batch"), "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                               "expired": 0},
            "ended_at": None, "created_at": _rfc3339(now), "expires_at": _rfc3339(now + timedelta(hours=24)),
            "archived_at": None, "cancel_initiated_at": None, "results_url": None,
        }, headers)

    async def _messages(self, request: web.BaseRequest, body: bytes, headers: dict[str, str],
                        rest: str) -> web.StreamResponse:
        payload = _parse_json(body, ("model", "max_tokens", "messages"))
        options = _options(request.headers, body, payload)
        model = str(payload["model"])
        if options.slow:
            await asyncio.sleep((options.delay_ms or DEFAULT_SLOW_MS) / 1000)
        scenario = options.scenario
        if scenario in ERROR_SCENARIOS:
            status, error_type, message = ERROR_SCENARIOS[scenario]
            extra = {"retry-after": "1"} if status == 429 else {}
            raise _HttpError(status, error_type, message.format(model=model), extra)
        # Streamed and non-streamed calls of one request must produce the same message, and a
        # proxy may re-serialise the body: derive everything from the canonical body sans "stream".
        canonical = json.dumps({k: v for k, v in payload.items() if k != "stream"}, sort_keys=True,
                               separators=(",", ":"), ensure_ascii=False).encode()
        seed = _Seed(canonical)
        tiny = 0
        if scenario == "tiny_deltas":
            try:
                tiny = max(1, int(request.headers.get("x-standin-deltas", TINY_DELTAS_DEFAULT)))
            except ValueError:
                raise _HttpError(400, "invalid_request_error",
                                 "x-standin-deltas must be an integer") from None
            text = _tiny_text(tiny)
            reply = _Reply([_Block({"type": "text", "text": ""}, [], {"type": "text", "text": text})])
        else:
            reply = _build_reply(scenario, seed, payload, _named_tool(request.headers))
        encoder = _reply_encoder(request.headers)
        message = _final_message(reply, "msg_01" + seed.token("message"), model, _input_tokens(canonical))
        if payload.get("stream") is True:
            events = _stream_events(reply, message, headers["request-id"])
            delay = 0 if options.slow else options.delay_ms / 1000
            chunks = _encode_events(events, options.padded, options.crlf)
            if tiny:  # after message_start, content_block_start and ping
                chunks[3:3] = _tiny_delta_chunks(tiny, b"\r\n" if options.crlf else b"\n")
            return await self._stream(request, headers, chunks, delay, drop=reply.ending == "drop",
                                      close=reply.ending == "error", encoder=encoder)
        if reply.ending == "error":
            raise _HttpError(529, "overloaded_error", "Overloaded")
        encoded = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        if options.padded:
            encoded = encoded[:-1] + b"   }"
        if reply.ending == "drop":
            return await self._stream(request, headers, [encoded[: len(encoded) // 2]], 0, drop=True,
                                      content_length=len(encoded))
        if encoder is not None:
            encoded = encoder.process(encoded, end=True)
            headers["Content-Encoding"] = encoder.header
        return web.Response(body=encoded, headers=headers)

    async def _stream(
        self,
        request: web.BaseRequest,
        headers: dict[str, str],
        chunks: list[bytes],
        delay: float,
        *,
        drop: bool,
        close: bool = False,
        content_length: int | None = None,
        encoder: _Encoder | None = None,
    ) -> web.StreamResponse:
        if content_length is None:
            headers["Content-Type"] = "text/event-stream; charset=utf-8"
            headers["Cache-Control"] = "no-cache"
        if encoder is not None:
            headers["Content-Encoding"] = encoder.header
        response = web.StreamResponse(headers=headers)
        if content_length is not None:
            response.content_length = content_length
        try:
            await response.prepare(request)
            for n, chunk in enumerate(chunks):
                if delay and n:
                    await asyncio.sleep(delay)
                if encoder is not None:
                    chunk = encoder.process(chunk, end=n == len(chunks) - 1)
                await response.write(chunk)  # one transport write per event: nothing is held back
        except ConnectionResetError:
            self.disconnects += 1
            logger.debug("client disconnected mid-stream (%s)", headers["request-id"])
            return response
        except asyncio.CancelledError:
            self.disconnects += 1
            logger.debug("client disconnected mid-stream, handler cancelled (%s)", headers["request-id"])
            raise
        if drop:
            # Cut the connection with no terminating chunk: the client sees the body end early.
            # aiohttp's write_eof then meets a closed transport, which it treats as a disconnect.
            transport = request.transport
            if transport is not None:
                transport.close()
        elif close:
            response.force_close()
        return response


# --- standalone entry point ---------------------------------------------------------------


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with AnthropicStandin(host=host, port=port, record=False) as standin:
        print(f"LISTENING {standin.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
