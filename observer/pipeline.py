"""The CPU-heavy part of processing an exchange, as plain functions of picklable inputs, so it
can run in worker processes (`observer.cpu_pool`) as well as inline.

`compute(job)`: decode the Exchange, extract, analyse (local analyzer), build and verify the
traces, and serialise them for storage. The steps are also here one by one (`decode`,
`extraction_of`, `traces_of`, ...) for the anthropic analyzer's path, which awaits a model
call between them, and for the envelope-only records of API activity.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf.message import DecodeError

from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.core.protoconv import from_timestamp
from smoltbot.observer.accounting import ExchangeFacts, facts_of
from smoltbot.observer.extraction import Extraction, extract
from smoltbot.observer.trace_builder import build_traces
from smoltbot.v1 import exchange_pb2

__all__ = [
    "Job",
    "JobResult",
    "array_elements",
    "call_time",
    "call_time_of",
    "compute",
    "compute_many",
    "decode",
    "dumps",
    "environment_of",
    "extraction_of",
    "outcome_of",
    "request_fields",
    "scan_object",
    "time_of",
    "traces_of",
]


@dataclass(frozen=True)
class Job:
    exchange_id: str
    agent_id: str
    session_id: str | None
    card: dict[str, Any]
    payload: bytes
    store_reasoning: str
    observed_at: datetime
    #: Notes for observation.missing from earlier steps (e.g. an unresolved session).
    missing: tuple[str, ...] = ()


@dataclass
class JobResult:
    exchange_id: str
    #: The built traces (trace.proto JSON) and their serialised form, in decision order.
    traces: list[dict[str, Any]] = field(default_factory=list)
    trace_json: list[str] = field(default_factory=list)
    #: Usage and session facts of a model call (`observer.accounting`), not yet priced.
    facts: ExchangeFacts | None = None
    #: Set when a step failed: which one, and the error.
    step: str = ""
    error: str = ""


def time_of(message: Any, name: str) -> datetime | None:
    """A time the gateway recorded; None when absent or unreadable (a wrong clock loses nothing)."""
    return None if message is None else from_timestamp(message, name, strict=False)


def call_time(exchange: exchange_pb2.Exchange) -> datetime | None:
    """When the call started (the card in force then is the one its traces are checked
    against), else when it ended; None when the exchange carries neither."""
    return time_of(exchange.timings, "started_at") or time_of(exchange.timings, "ended_at")


def call_time_of(payload: bytes) -> datetime | None:
    """`call_time` of a stored payload; None when it cannot be decoded."""
    try:
        return call_time(decode(payload))
    except DecodeError:
        return None


def outcome_of(exchange: exchange_pb2.Exchange) -> ExchangeOutcome:
    # Unspecified (an older or careless producer) is judged by the HTTP status.
    return ExchangeOutcome.from_proto(exchange.outcome, exchange.response.status)


def environment_of(exchange: exchange_pb2.Exchange) -> dict[str, Any]:
    environment: dict[str, Any] = {}
    if exchange.gateway_id:
        environment["gateway_id"] = exchange.gateway_id
    if exchange.request.path:
        environment["request_path"] = exchange.request.path
    return environment


def decode(payload: bytes) -> exchange_pb2.Exchange:
    if not payload:
        raise DecodeError("the stored payload is missing")
    return exchange_pb2.Exchange.FromString(payload)


#: What extraction reads from a request (see observer.extraction): never the history in `messages`.
_REQUEST_FIELDS = (b"model", b"tools", b"system")
#: A request body that cannot be scanned is handed over whole only below this size.
_UNSCANNED_LIMIT = 1024 * 1024
#: Nesting deeper than this in a request's values is not scanned (the request is then not read).
_MAX_SCANNED_DEPTH = 64
_JSON_STRING_PATTERN = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_JSON_STRING = re.compile(_JSON_STRING_PATTERN, re.DOTALL)
_JSON_SCALAR = re.compile(rb'[^,}\]\s]+')
_JSON_SPACE = re.compile(rb"[ \t\n\r]*")


@functools.cache
def _nested_pattern(depth: int) -> re.Pattern[bytes]:
    # An array or object nested at most `depth` deep, matched by the C regex engine without
    # building anything: strings are skipped whole (brackets inside them do not count), and
    # possessive repeats never backtrack, so a malformed body fails in one pass.
    inner = rb"(?!)"
    for _ in range(depth):
        inner = rb'[\[{](?:' + _JSON_STRING_PATTERN + rb'|[^\[\]{}"]++|' + inner + rb")*+[\]}]"
    return re.compile(inner, re.DOTALL)


def _skip_space(body: bytes, pos: int) -> int:
    space = _JSON_SPACE.match(body, pos)
    return space.end() if space is not None else pos


def _value_end(body: bytes, pos: int) -> int:
    """Where the JSON value starting at `pos` ends, without building it (ValueError if it is
    malformed or nests deeper than `_MAX_SCANNED_DEPTH`)."""
    first = body[pos:pos + 1]
    if first == b'"':
        pattern = _JSON_STRING
    elif first in (b"[", b"{"):
        pattern = _nested_pattern(_MAX_SCANNED_DEPTH)
    else:
        pattern = _JSON_SCALAR
    found = pattern.match(body, pos)
    if found is None:
        raise ValueError(f"no JSON value at {pos}")
    return found.end()


def request_fields(body: bytes) -> bytes:
    """The request as a JSON object holding only what extraction reads (model, tools, system).

    A request body may be 32 MiB of conversation history; parsed whole into Python objects it
    would take tens of times that (an empty object is 2 bytes of JSON and ~70 as a dict). The
    top-level object is scanned instead, and only the wanted values are copied out; the rest is
    skipped over without being built. A body that is not a JSON object comes back unchanged
    when small (extraction says it cannot be read), else as an empty object.
    """
    try:
        if _is_empty_object(body):
            return b"{}"
        kept = _scan(body, _REQUEST_FIELDS)
    except (ValueError, IndexError):
        return body if len(body) <= _UNSCANNED_LIMIT else b"{}"
    return b"{" + b",".join(b'"' + name + b'":' + value for name, value in kept.items()) + b"}"


def scan_object(body: bytes, wanted: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The raw JSON values of the `wanted` top-level keys of a JSON object, found the way
    `request_fields` finds them (nothing else is built); {} when the body is not a readable object."""
    try:
        return _scan(body, wanted)
    except (ValueError, IndexError):
        return {}


def array_elements(array: bytes) -> Iterable[bytes]:
    """The raw JSON elements of a JSON array, one by one, without building them (stops quietly
    at the first malformed element)."""
    try:
        pos = _skip_space(array, 0)
        if array[pos:pos + 1] != b"[":
            return
        pos = _skip_space(array, pos + 1)
        if array[pos:pos + 1] == b"]":
            return
        while True:
            end = _value_end(array, pos)
            yield array[pos:end]
            pos = _skip_space(array, end)
            if array[pos:pos + 1] != b",":
                return
            pos = _skip_space(array, pos + 1)
    except (ValueError, IndexError):
        return


def _is_empty_object(body: bytes) -> bool:
    pos = _skip_space(body, 0)
    if body[pos:pos + 1] != b"{":
        return False
    pos = _skip_space(body, pos + 1)
    return body[pos:pos + 1] == b"}" and _skip_space(body, pos + 1) == len(body)


def _scan(body: bytes, wanted: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """Top-level `wanted` keys of the JSON object `body` and their raw values (ValueError when
    the body is not a well-formed object)."""
    pos = _skip_space(body, 0)
    if body[pos:pos + 1] != b"{":
        raise ValueError("not an object")
    kept: dict[bytes, bytes] = {}
    pos = _skip_space(body, pos + 1)
    if body[pos:pos + 1] == b"}" and _skip_space(body, pos + 1) == len(body):
        return kept
    while True:
        key_end = _value_end(body, pos)
        key = body[pos:key_end]
        pos = _skip_space(body, key_end)
        if body[pos:pos + 1] != b":":
            raise ValueError("expected ':'")
        start = _skip_space(body, pos + 1)
        end = _value_end(body, start)
        name = key[1:-1]
        if b"\\" in name:  # "mod\u0065l" is "model" to json.loads too
            name = json.loads(key).encode("utf-8", "surrogatepass")
        if key[:1] == b'"' and name in wanted:
            kept[name] = body[start:end]  # the last of duplicates wins, as in json.loads
        pos = _skip_space(body, end)
        separator = body[pos:pos + 1]
        if separator == b"}":
            if _skip_space(body, pos + 1) != len(body):
                raise ValueError("text after the object")
            return kept
        if separator != b",":
            raise ValueError("expected ',' or '}'")
        pos = _skip_space(body, pos + 1)


def extraction_of(exchange: exchange_pb2.Exchange, missing: tuple[str, ...] = ()) -> Extraction:
    extraction = extract(request_fields(exchange.request.body), exchange.response.body,
                         http_status=exchange.response.status,
                         streamed=exchange.response.streamed, outcome=outcome_of(exchange),
                         stream_error=exchange.response.stream_error)
    extraction.missing.extend(missing)
    return extraction


def traces_of(job: Job, exchange: exchange_pb2.Exchange, extraction: Extraction, analyses: list[Any] | None,
              analyzer: str, fallback_reason: str = "") -> list[dict[str, Any]]:
    return build_traces(
        exchange_id=job.exchange_id, agent_id=job.agent_id, session_id=job.session_id, card=job.card,
        extraction=extraction, analyses=analyses, exchange_started_at=time_of(exchange.timings, "started_at"),
        exchange_ended_at=time_of(exchange.timings, "ended_at"), observed_at=job.observed_at,
        conversation_turn=None, store_reasoning=job.store_reasoning, analyzer_name=analyzer,
        analysis_fallback_reason=fallback_reason, outcome=outcome_of(exchange),
        outcome_detail=exchange.outcome_detail, http_status=exchange.response.status,
        environment=environment_of(exchange),
    )


def dumps(trace: dict[str, Any]) -> str:
    return json.dumps(trace, ensure_ascii=False, separators=(",", ":"))


def compute(job: Job) -> JobResult:
    """Payload to stored traces with the local analyzer; a failed step is reported, not raised."""
    result = JobResult(job.exchange_id)
    step = "decode"
    try:
        exchange = decode(job.payload)
        step = "extract"
        extraction = extraction_of(exchange, job.missing)
        step = "read usage"
        result.facts = facts_of(exchange, extraction.model)
        step = "analyze and build traces"
        result.traces = traces_of(job, exchange, extraction, None, "local")
        step = "serialise traces"
        result.trace_json = [dumps(trace) for trace in result.traces]
    except Exception as error:  # noqa: BLE001 - reported to the processor, which retries
        result.step, result.error = step, f"{type(error).__name__}: {error}"
        result.traces, result.trace_json, result.facts = [], [], None
    return result


def compute_many(jobs: list[Job]) -> list[JobResult]:
    return [compute(job) for job in jobs]
