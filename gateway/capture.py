"""What the gateway keeps of one call, and the `smoltbot.v1.Exchange` it becomes.

A `Capture` is filled in cheaply on the event loop while the call runs (the request, a few
timestamps, references to the response chunks we relay anyway). Everything costly runs on the
capture thread (`capture_executor()`), off the loop: hashing the response, decoding its
content-encoding, reassembling a stream (fed in batches while it is relayed, so a stream's raw
bytes are never all held at once), removing the credential, building the protobuf.

What the record promises:
- It never fails on what a client or an upstream may send: header values with any bytes
  (`HttpHeader.raw_value`), any content-encoding (decoded into a bounded size, or recorded as
  undecodable with the body's size and sha256 in `BodyCapture`), bodies of any size (cut at the
  cap, with a note, the full size and sha256). When building it still fails, the gateway ships
  `minimal_exchange()` instead, which says what failed (`capture_failure`).
- It fits the transport: bodies and headers are capped from the one setting
  `max_exchange_bytes` (`CaptureLimits.for_record`), and a record that still exceeds it is
  refused (`RecordTooLarge`) so that the minimal record goes instead.
- The credential is in it by no route (see `scrub.py`); it is held in memory only.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from smoltbot.core.identity import CREDENTIAL_HEADERS
from smoltbot.core.ids import new_exchange_id
from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.core.settings import Settings
from smoltbot.v1 import exchange_pb2

from .body_decoding import StreamDecoder, UndecodableBody, decode_body, encoding_tokens
from .providers import Reassembler, reassembler_for
from .scrub import Scrubber, proto_text, raw_bytes, scrubber_for

__all__ = [
    "DEFAULT_LIMITS",
    "Capture",
    "CaptureLimits",
    "RecordTooLarge",
    "capture_executor",
    "minimal_exchange",
]

#: Response bytes handed to the capture thread at a time.
_BATCH_BYTES = 1024 * 1024
#: Response headers a record leaves out when its body is recorded decoded (they describe the
#: encoded body), with the credential headers.
_DECODED_LEFT_OUT = CREDENTIAL_HEADERS | {"content-encoding", "content-length"}
#: What a record's fixed-size fields (ids, status, timings, enums, tags and lengths) take at most.
_FIXED_BOUND = 4096


class RecordTooLarge(ValueError):
    """The built record exceeds `max_exchange_bytes` (it would not cross the transport)."""


@dataclass(frozen=True, slots=True)
class CaptureLimits:
    """How much of one call a record holds, derived from the record limit."""

    record_bytes: int
    #: Each body's captured copy: the request's, the response's (decoded or reassembled), and
    #: the raw bytes of a non-stream response kept for decoding.
    body_bytes: int
    #: Each side's headers, names and values together.
    headers_bytes: int
    #: Each of path, query, session hint and a stream's error event.
    text_bytes: int = 64 * 1024

    @classmethod
    def for_record(cls, record_bytes: int) -> CaptureLimits:
        # A sixteenth (at least 256 KiB) for headers and everything but the two bodies.
        reserve = max(256 * 1024, record_bytes // 16)
        return cls(record_bytes, body_bytes=(record_bytes - reserve) // 2, headers_bytes=reserve // 4)


DEFAULT_LIMITS = CaptureLimits.for_record(Settings.model_fields["max_exchange_bytes"].default)

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def capture_executor() -> ThreadPoolExecutor:
    """The one thread captures are processed on (one: batches of a stream must stay in order)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smoltbot-capture")
        return _executor


def _stamp(target: object, ns: int) -> None:
    if ns:
        target.seconds, target.nanos = divmod(ns, 1_000_000_000)  # type: ignore[attr-defined]


def _join(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


class _ResponseBody:
    """The response as the capture thread sees it, fed in order. Owned by that thread."""

    def __init__(self, *, reassembler: Reassembler | None, encoding: str, limits: CaptureLimits) -> None:
        self.encoding = encoding
        self.limits = limits
        self.hash = hashlib.sha256()
        self.size = 0
        self.chunks: list[bytes] = []  # non-stream: the raw bytes, up to the body cap
        self.kept = 0
        self.raw_truncated = False
        self.failure = ""  # an unexpected error while feeding: the record becomes a minimal one
        self.decoder: StreamDecoder | None = None
        self.undecodable = ""
        #: The stream's reassembler (None: not a stream of a known format; the raw body is kept).
        self.accumulator = reassembler
        if reassembler is not None and encoding_tokens(encoding):
            try:
                self.decoder = StreamDecoder(encoding, limits.body_bytes * 4)
            except UndecodableBody as error:
                self.undecodable = str(error)

    def feed(self, chunks: list[bytes]) -> None:
        try:
            for chunk in chunks:
                self.hash.update(chunk)
                self.size += len(chunk)
                if self.accumulator is None:
                    if self.kept + len(chunk) > self.limits.body_bytes:
                        self.raw_truncated = True
                        room = self.limits.body_bytes - self.kept
                        if room > 0:
                            self.chunks.append(chunk[:room])
                            self.kept += room
                        continue
                    self.chunks.append(chunk)
                    self.kept += len(chunk)
                elif not self.undecodable:
                    data = chunk
                    if self.decoder is not None:
                        try:
                            data = self.decoder.feed(chunk)
                        except UndecodableBody as error:
                            self.undecodable = str(error)
                            continue
                    self.accumulator.feed(data)
        except Exception as error:  # noqa: BLE001 - recorded as what failed (minimal record), never raised
            if not self.failure:
                self.failure = f"capturing the response failed: {type(error).__name__}"


class Capture:
    """One call as seen by the gateway. Times are `time.time_ns()`."""

    __slots__ = (
        "_batch",
        "_batch_bytes",
        "_last_batch",
        "_response",
        "agent_hash",
        "agent_id",
        "credential",
        "detail",
        "ended_ns",
        "enforcement",
        "exchange_id",
        "first_byte_ns",
        "limits",
        "method",
        "outcome",
        "path",
        "provider",
        "query",
        "request_body",
        "request_headers",
        "response_headers",
        "session_hint",
        "session_id",
        "started_ns",
        "status",
        "streamed",
    )

    def __init__(self, *, agent_hash: str, session_hint: str, method: str, path: str, query: str,
                 request_headers: Iterable[tuple[str, str]], request_body: bytes, started_ns: int,
                 credential: str = "", limits: CaptureLimits = DEFAULT_LIMITS, provider: str = "anthropic",
                 ) -> None:
        self.exchange_id = new_exchange_id()
        #: Which provider API the call went to (`providers.SPECS`).
        self.provider = provider
        self.agent_hash = agent_hash
        self.agent_id = ""
        self.session_id = ""
        self.session_hint = session_hint
        self.method = method
        self.path = path
        self.query = query
        self.request_headers = [(k, v) for k, v in request_headers
                                if k.lower() not in CREDENTIAL_HEADERS]
        self.request_body = request_body
        #: Kept in memory only, to remove it from what is captured; never part of the record.
        self.credential = credential
        self.limits = limits
        self.status = 0
        self.response_headers: list[tuple[str, str]] = []
        self.streamed = False
        self.started_ns = started_ns
        self.first_byte_ns = 0
        self.ended_ns = 0
        self.outcome = ExchangeOutcome.COMPLETE
        self.detail = ""
        #: What enforcement did on this call (gateway/enforce), or None when it was not asked.
        self.enforcement: exchange_pb2.Enforcement | None = None
        self._response: _ResponseBody | None = None
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._last_batch: Future[None] | None = None

    # ------------------------------------------------------------------ on the event loop

    def add_chunk(self, chunk: bytes) -> None:
        """Keeps a reference to a relayed chunk (no copy); batches go to the capture thread."""
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes >= _BATCH_BYTES:
            self._send_batch()

    def _response_body(self) -> _ResponseBody:
        if self._response is None:
            reassembler = None
            if self.streamed:
                reassembler = reassembler_for(self.provider, self.path, self.query,
                                              limit=self.limits.body_bytes)
            self._response = _ResponseBody(reassembler=reassembler,
                                           encoding=_header(self.response_headers, "content-encoding"),
                                           limits=self.limits)
        return self._response

    def _send_batch(self) -> None:
        response = self._response_body()
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._last_batch = capture_executor().submit(response.feed, batch)

    def finish(self, outcome: ExchangeOutcome, detail: str = "") -> None:
        self.ended_ns = time.time_ns()
        self.outcome = outcome
        self.detail = detail

    def built_cheaply_here(self, limit: int) -> bool:
        """True when nothing went to the capture thread yet and there is at most `limit` bytes to
        build from, decoded (a small compressed body can expand a thousandfold: each encoded body
        is decoded here first, stopped at `limit`): building such a record on the event loop costs
        less than the two thread hand-offs (and their fight for the GIL) of building it on the
        capture thread."""
        if self._last_batch is not None or len(self.request_body) + self._batch_bytes > limit:
            return False
        request_encoding = _header(self.request_headers, "content-encoding")
        response_encoding = _header(self.response_headers, "content-encoding")
        if not request_encoding and not response_encoding:
            return True
        room = limit
        for body, encoding in ((self.request_body, request_encoding),
                               (b"".join(self._batch) if response_encoding else b"", response_encoding)):
            if encoding:
                room -= _decoded_size(body, encoding, room)
                if room < 0:
                    return False
        return True

    def seal(self) -> None:
        """Hands the last response bytes to the capture thread; `to_exchange` goes after them."""
        self._send_batch()

    # ------------------------------------------------------------------ on the capture thread

    def to_exchange(self, gateway_id: str) -> exchange_pb2.Exchange:
        """The record. Raises when it cannot be built whole (then ship `minimal_exchange`).

        Runs on the capture thread after `seal()` (the gateway's way), or on any other thread:
        then it waits for the batches in flight and takes the rest itself."""
        if self._last_batch is not None and not self._last_batch.done():
            self._last_batch.result()
        body_state = self._response_body()
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            body_state.feed(batch)
        if body_state.failure:
            raise RuntimeError(body_state.failure)
        limits = self.limits
        scrub = scrubber_for(self.credential)
        notes: list[str] = []
        # Built in place, field by field: a message handed to a constructor is copied into its
        # parent, and a header built as a dict and then a message costs three objects for one
        # (issue 16: building the record was about a sixth of a small call's CPU).
        exchange = exchange_pb2.Exchange(
            exchange_id=self.exchange_id, agent_hash=self.agent_hash, agent_id=self.agent_id,
            session_id=self.session_id,
            session_hint=proto_text(scrub.text(_capped_text(self.session_hint, limits.text_bytes))),
            gateway_id=gateway_id, provider=self.provider,
        )
        request = exchange.request
        request.method = proto_text(self.method)
        request.path = proto_text(scrub.text(_capped_text(self.path, limits.text_bytes)))
        # Credential headers were left out when the capture was made.
        bound, dropped = _add_headers(request.headers, self.request_headers, scrub, limits.headers_bytes, ())
        if dropped:
            notes.append(f"{dropped} request header(s) beyond {limits.headers_bytes} bytes left out")
        query, removed = scrub.query(_capped_text(self.query, limits.text_bytes))
        if removed:
            notes.append(f"{removed} credential query parameter(s) removed")
        request.query = proto_text(query)
        request_capture = request.body_capture
        request.body = _whole_body(self.request_body, _header(self.request_headers, "content-encoding"),
                                   limits.body_bytes, scrub, request_capture)

        response = exchange.response
        response.status = self.status
        response.streamed = self.streamed
        response_capture = response.body_capture
        outcome, detail = self.outcome, self.detail
        if body_state.accumulator is not None:
            body, stream_error, event_count, outcome, detail = self._reassembled(
                body_state, scrub, outcome, detail, response_capture)
            response.stream_error = stream_error
            response.event_count = event_count
            bound += len(stream_error)
        else:
            raw = b"".join(body_state.chunks)
            body_state.chunks = []
            body = _whole_body(raw, _header(self.response_headers, "content-encoding"), limits.body_bytes,
                               scrub, response_capture, size=body_state.size,
                               digest=body_state.hash.hexdigest(), raw_truncated=body_state.raw_truncated)
        response.body = body
        left_out = CREDENTIAL_HEADERS
        if response_capture.form in (exchange_pb2.BODY_FORM_DECODED, exchange_pb2.BODY_FORM_REASSEMBLED) \
                and response_capture.content_encoding:
            left_out = _DECODED_LEFT_OUT
        if response_capture.truncated:
            detail = _join(detail, f"response body captured truncated at {limits.body_bytes} bytes")
        headers_bound, dropped = _add_headers(response.headers, self.response_headers, scrub,
                                              limits.headers_bytes, left_out)
        if dropped:
            notes.append(f"{dropped} response header(s) beyond {limits.headers_bytes} bytes left out")
        if notes:
            request_capture.note = _join(request_capture.note, *notes)
        exchange.outcome = outcome.to_proto()
        exchange.outcome_detail = proto_text(scrub.text(detail))
        if self.enforcement is not None:
            exchange.enforcement.CopyFrom(self.enforcement)
        timings = exchange.timings
        _stamp(timings.started_at, self.started_ns)
        _stamp(timings.first_byte_at, self.first_byte_ns)
        _stamp(timings.ended_at, self.ended_ns)
        # Measuring the record serialises it (upb has no cheaper size): done only when a bound of
        # its size does not already show it within the limit.
        bound += headers_bound + _size_bound(exchange, request_capture, response_capture)
        if bound > limits.record_bytes:
            size = exchange.ByteSize()
            if size > limits.record_bytes:
                raise RecordTooLarge(f"the record is {size} bytes, over the limit of {limits.record_bytes}")
        return exchange

    def _reassembled(self, response: _ResponseBody, scrub: Scrubber, outcome: ExchangeOutcome, detail: str,
                     capture: exchange_pb2.BodyCapture) -> tuple[bytes, bytes, int, ExchangeOutcome, str]:
        """The reassembled stream, with `capture` filled in."""
        accumulator = response.accumulator
        assert accumulator is not None
        capture.wire_size = response.size
        capture.wire_sha256 = response.hash.hexdigest()
        capture.content_encoding = proto_text(response.encoding)
        capture.form = exchange_pb2.BODY_FORM_REASSEMBLED
        decoder = response.decoder
        if response.undecodable:
            capture.note = f"stream not decodable ({response.undecodable}): reassembled up to there"
        elif decoder is not None:
            try:
                decoder.finish()
            except UndecodableBody as error:
                capture.note = f"stream not decodable ({error}): reassembled up to there"
        body = accumulator.close()
        truncated = accumulator.truncated or bool(decoder and decoder.truncated)
        event_count = accumulator.event_count
        stream_error = scrub.data(accumulator.error_data or b"")
        if len(stream_error) > self.limits.text_bytes:
            stream_error = scrub.data(stream_error[:self.limits.text_bytes], cut=True)
        if len(body) > self.limits.body_bytes:
            body, truncated = body[:self.limits.body_bytes], True
        body = scrub.data(body, cut=truncated)
        capture.truncated = truncated
        if truncated:
            capture.note = _join(capture.note, f"content beyond {self.limits.body_bytes} bytes left out")
        if outcome is ExchangeOutcome.COMPLETE:
            if stream_error:
                outcome, detail = ExchangeOutcome.MID_STREAM_ERROR, _error_type(stream_error)
            elif not accumulator.ended_cleanly and not truncated:
                outcome = ExchangeOutcome.UPSTREAM_DROPPED
                detail = f"stream ended before {accumulator.end_of_reply}"
        elif outcome is not ExchangeOutcome.UPSTREAM_ERROR and stream_error:
            detail = _join(detail, "stream carried an error event")
        if accumulator.problems:
            detail = _join(detail, "reassembly: " + "; ".join(accumulator.problems[:3]))
        return body, stream_error, event_count, outcome, detail


def _size_bound(exchange: exchange_pb2.Exchange, request_capture: exchange_pb2.BodyCapture,
                response_capture: exchange_pb2.BodyCapture) -> int:
    """At least the encoded size of `exchange` but its headers and stream error: bytes fields
    exactly, strings at 4 bytes a character (UTF-8's most), the rest (numbers, tags, lengths,
    timings) within `_FIXED_BOUND`."""
    request, response = exchange.request, exchange.response
    size = len(request.body) + len(response.body) + _FIXED_BOUND
    if exchange.HasField("enforcement"):
        size += exchange.enforcement.ByteSize()
    texts = (exchange.exchange_id, exchange.agent_hash, exchange.agent_id, exchange.session_id,
             exchange.session_hint, exchange.outcome_detail, exchange.gateway_id, exchange.capture_failure,
             exchange.provider, request.method, request.path, request.query,
             request_capture.wire_sha256, request_capture.content_encoding, request_capture.note,
             response_capture.wire_sha256, response_capture.content_encoding, response_capture.note)
    return size + 4 * sum(map(len, texts))


def _decoded_size(body: bytes, encoding: str, limit: int) -> int:
    """The size of `body` decoded, or more than `limit` once it passes that (decoding stops
    there); 0 when it cannot be decoded (the record keeps it as sent)."""
    try:
        decoded, cut = decode_body(body, encoding, max(limit, 0))
    except UndecodableBody:
        return 0
    return limit + 1 if cut else len(decoded)


def _whole_body(raw: bytes, encoding: str, limit: int, scrub: Scrubber, capture: exchange_pb2.BodyCapture, *,
                size: int | None = None, digest: str | None = None, raw_truncated: bool = False) -> bytes:
    """A body captured whole (the request, a non-stream response): decoded when encoded, capped;
    `capture` filled in."""
    capture.wire_size = len(raw) if size is None else size
    capture.wire_sha256 = hashlib.sha256(raw).hexdigest() if digest is None else digest
    capture.content_encoding = proto_text(encoding)
    capture.form = exchange_pb2.BODY_FORM_WIRE
    body = raw
    truncated = raw_truncated
    if encoding and encoding_tokens(encoding):
        try:
            decoder = StreamDecoder(encoding, limit)
            body = decoder.feed(raw)
            if not raw_truncated:  # a copy cut short ends mid-data; what came before is good
                decoder.finish()
            capture.form = exchange_pb2.BODY_FORM_DECODED
            truncated = truncated or decoder.truncated
        except UndecodableBody as error:
            capture.form = exchange_pb2.BODY_FORM_UNDECODABLE
            capture.note = f"not decoded: {error}; the body as sent"
            body = raw[:limit]
            truncated = truncated or len(raw) > limit
    elif len(body) > limit:
        body, truncated = body[:limit], True
    capture.truncated = truncated
    if truncated:
        capture.note = _join(capture.note, f"captured copy cut at {limit} bytes; wire_size and wire_sha256 "
                                           "describe the whole body")
    return scrub.data(body, cut=truncated)


def _capped_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def _add_headers(out: Any, headers: list[tuple[str, str]], scrub: Scrubber, limit: int,
                 left_out: frozenset[str] | tuple[str, ...]) -> tuple[int, int]:
    """Adds `headers` to the repeated HttpHeader field `out`, but those named in `left_out`
    (lower case): values that are not UTF-8 also as raw bytes; capped at `limit` bytes of names
    and values. Returns a bound of the bytes they take in the record (6 a character: a value's
    text, where an odd byte is U+FFFD's 3 and a short key becomes the longer redaction, and its
    raw bytes), and how many were dropped for the cap."""
    add = out.add
    used = 0
    kept = 0
    for index, (name, value) in enumerate(headers):
        if left_out and name.lower() in left_out:
            continue
        used += len(name) + len(value)
        if used > limit:
            return 6 * used + 32 * kept, sum(1 for name, _ in headers[index:]
                                             if not (left_out and name.lower() in left_out))
        kept += 1
        scrubbed = scrub.text(value)  # before proto_text: a key with odd bytes is matched as received
        # proto_text's own test first, inline: the usual header is ASCII throughout.
        text = scrubbed if scrubbed.isascii() else proto_text(scrubbed)
        name = name if name.isascii() else proto_text(name)
        if text is scrubbed:
            add(name=name, value=text)
        else:
            add(name=name, value=text, raw_value=scrub.data(raw_bytes(value)))
    return 6 * used + 32 * kept, 0


def _header(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value
    return ""


def _error_type(data: bytes) -> str:
    try:
        error = json.loads(data).get("error") or {}
        # Anthropic and OpenAI name the error's `type`, Google its `status`.
        kind = error.get("type") or error.get("status") or error.get("code") or "unknown"
        return f"stream error event: {kind}"
    except (ValueError, AttributeError):
        return "stream error event"


def minimal_exchange(capture: Capture | exchange_pb2.Exchange, gateway_id: str,
                     failure: str) -> exchange_pb2.Exchange:
    """The record shipped when the full one cannot be built or shipped: who, which call, how it
    ended, and what failed. Built from plain fields only, so that it cannot fail itself."""
    if isinstance(capture, exchange_pb2.Exchange):
        full = capture
        exchange = exchange_pb2.Exchange(
            exchange_id=full.exchange_id, agent_hash=full.agent_hash, agent_id=full.agent_id,
            session_id=full.session_id, session_hint=full.session_hint, outcome=full.outcome,
            outcome_detail=full.outcome_detail, gateway_id=full.gateway_id or gateway_id,
            capture_failure=failure or "unknown failure", provider=full.provider,
        )
        exchange.request.method = full.request.method
        exchange.request.path = full.request.path
        exchange.response.status = full.response.status
        exchange.response.streamed = full.response.streamed
        exchange.timings.CopyFrom(full.timings)
        if full.HasField("enforcement"):
            exchange.enforcement.CopyFrom(full.enforcement)
        return exchange
    try:
        scrub = scrubber_for(capture.credential)
    except Exception:  # noqa: BLE001 - this record must not fail: without the path's text then
        scrub = None
    exchange = exchange_pb2.Exchange(
        exchange_id=capture.exchange_id, agent_hash=capture.agent_hash, agent_id=capture.agent_id,
        session_id=capture.session_id,
        session_hint=proto_text(scrub.text(_capped_text(capture.session_hint, 1024))) if scrub else "",
        outcome=capture.outcome.to_proto(),
        outcome_detail=proto_text(scrub.text(_capped_text(capture.detail, 4096))) if scrub else "",
        gateway_id=gateway_id, capture_failure=failure or "unknown failure",
        provider=proto_text(_capped_text(capture.provider, 64)),
    )
    exchange.request.method = proto_text(_capped_text(capture.method, 64))
    exchange.request.path = proto_text(scrub.text(_capped_text(capture.path, 4096))) if scrub else ""
    exchange.response.status = capture.status
    exchange.response.streamed = capture.streamed
    if capture.enforcement is not None:
        exchange.enforcement.CopyFrom(capture.enforcement)
    _stamp(exchange.timings.started_at, capture.started_ns)
    _stamp(exchange.timings.first_byte_at, capture.first_byte_ns)
    _stamp(exchange.timings.ended_at, capture.ended_ns)
    return exchange
