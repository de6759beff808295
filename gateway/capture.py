"""What the gateway keeps of one call, and the `smoltbot.v1.Exchange` it becomes.

A `Capture` is filled in cheaply while the call runs (references to bytes we relay anyway,
a few timestamps); the costly parts (SSE reassembly, decompression, building and encoding
the protobuf) run in `to_exchange()`, after the client has its response.

The credential never gets in: request headers are copied minus `CREDENTIAL_HEADERS`, and the
agent is identified by its hash alone.
"""

from __future__ import annotations

import enum
import json
import secrets
import time
import zlib
from collections.abc import Iterable

from smoltbot.core.identity import CREDENTIAL_HEADERS
from smoltbot.v1 import exchange_pb2

from .sse import MessageAccumulator

__all__ = ["MAX_CAPTURED_BODY", "Capture", "Outcome", "new_exchange_id"]

#: A response body larger than this is captured truncated (the client still gets all of it).
MAX_CAPTURED_BODY = 32 * 1024 * 1024


class Outcome(enum.IntEnum):
    COMPLETE = exchange_pb2.EXCHANGE_OUTCOME_COMPLETE
    UPSTREAM_ERROR = exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR
    MID_STREAM_ERROR = exchange_pb2.EXCHANGE_OUTCOME_MID_STREAM_ERROR
    CLIENT_ABORT = exchange_pb2.EXCHANGE_OUTCOME_CLIENT_ABORT
    UPSTREAM_UNREACHABLE = exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE
    UPSTREAM_DROPPED = exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_DROPPED


def new_exchange_id() -> str:
    """128 random bits, hex: the idempotency key all the way to the traces."""
    return secrets.token_hex(16)


def _stamp(target: object, ns: int) -> None:
    if ns:
        target.seconds, target.nanos = divmod(ns, 1_000_000_000)  # type: ignore[attr-defined]


class Capture:
    """One call as seen by the gateway. Times are `time.time_ns()`."""

    __slots__ = (
        "agent_hash",
        "agent_id",
        "captured_bytes",
        "chunks",
        "detail",
        "ended_ns",
        "exchange_id",
        "first_byte_ns",
        "method",
        "outcome",
        "path",
        "query",
        "request_body",
        "request_headers",
        "response_headers",
        "session_hint",
        "session_id",
        "started_ns",
        "status",
        "streamed",
        "truncated",
    )

    def __init__(self, *, agent_hash: str, session_hint: str, method: str, path: str, query: str,
                 request_headers: Iterable[tuple[str, str]], request_body: bytes, started_ns: int) -> None:
        self.exchange_id = new_exchange_id()
        self.agent_hash = agent_hash
        self.agent_id = ""
        self.session_id = ""
        self.session_hint = session_hint
        self.method = method
        self.path = path
        self.query = query
        self.request_headers = [(k, v) for k, v in request_headers if k.lower() not in CREDENTIAL_HEADERS]
        self.request_body = request_body
        self.status = 0
        self.response_headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.captured_bytes = 0
        self.truncated = False
        self.streamed = False
        self.started_ns = started_ns
        self.first_byte_ns = 0
        self.ended_ns = 0
        self.outcome = Outcome.COMPLETE
        self.detail = ""

    def add_chunk(self, chunk: bytes) -> None:
        """Keeps a reference to a relayed chunk (no copy); bounded by MAX_CAPTURED_BODY."""
        if self.captured_bytes + len(chunk) > MAX_CAPTURED_BODY:
            self.truncated = True
            return
        self.chunks.append(chunk)
        self.captured_bytes += len(chunk)

    def finish(self, outcome: Outcome, detail: str = "") -> None:
        self.ended_ns = time.time_ns()
        self.outcome = outcome
        self.detail = detail

    def to_exchange(self, gateway_id: str) -> exchange_pb2.Exchange:
        """Decodes and reassembles the body and builds the protobuf. Runs after the response."""
        body = b"".join(self.chunks)
        self.chunks = []
        headers = self.response_headers
        encoding = _header(headers, "content-encoding")
        if encoding:
            decoded = _decode(body, encoding)
            if decoded is not None:
                body = decoded
                headers = [(k, v) for k, v in headers if k.lower() not in ("content-encoding", "content-length")]
        stream_error = b""
        event_count = 0
        outcome, detail = self.outcome, self.detail
        if self.streamed:
            accumulator = MessageAccumulator()
            accumulator.feed(body)
            accumulator.close()
            event_count = accumulator.event_count
            stream_error = accumulator.error_data or b""
            body = accumulator.final_message_json()
            if outcome is Outcome.COMPLETE:
                if stream_error:
                    outcome, detail = Outcome.MID_STREAM_ERROR, _error_type(stream_error)
                elif not accumulator.ended_cleanly and not self.truncated:
                    outcome, detail = Outcome.UPSTREAM_DROPPED, "stream ended before message_stop"
            elif outcome is not Outcome.UPSTREAM_ERROR and stream_error:
                detail = f"{detail}; stream carried an error event" if detail else "stream carried an error event"
            if accumulator.problems:
                note = "reassembly: " + "; ".join(accumulator.problems[:3])
                detail = f"{detail}; {note}" if detail else note
        if self.truncated:
            note = f"response body captured truncated at {MAX_CAPTURED_BODY} bytes"
            detail = f"{detail}; {note}" if detail else note
        header_type = exchange_pb2.HttpHeader
        exchange = exchange_pb2.Exchange(
            exchange_id=self.exchange_id,
            agent_hash=self.agent_hash,
            agent_id=self.agent_id,
            session_id=self.session_id,
            session_hint=self.session_hint,
            request=exchange_pb2.CapturedRequest(
                method=self.method, path=self.path, query=self.query,
                headers=[header_type(name=k, value=v) for k, v in self.request_headers],
                body=self.request_body,
            ),
            response=exchange_pb2.CapturedResponse(
                status=self.status,
                headers=[header_type(name=k, value=v) for k, v in headers],
                body=body, streamed=self.streamed, event_count=event_count, stream_error=stream_error,
            ),
            outcome=outcome.value,
            outcome_detail=detail,
            gateway_id=gateway_id,
        )
        timings = exchange.timings
        _stamp(timings.started_at, self.started_ns)
        _stamp(timings.first_byte_at, self.first_byte_ns)
        _stamp(timings.ended_at, self.ended_ns)
        return exchange


def _header(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value
    return ""


def _decode(body: bytes, encoding: str) -> bytes | None:
    """The identity-encoded body for gzip/deflate (what the observer needs to read), else None."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
        if encoding == "identity":
            return body
    except zlib.error:
        return None
    return None


def _error_type(data: bytes) -> str:
    try:
        error = json.loads(data).get("error") or {}
        return f"stream error event: {error.get('type', 'unknown')}"
    except (ValueError, AttributeError):
        return "stream error event"
