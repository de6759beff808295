"""The CPU-heavy part of processing an exchange, as plain functions of picklable inputs, so it
can run in worker processes (`observer.cpu_pool`) as well as inline.

`compute(job)`: decode the Exchange, extract, analyse (local analyzer), build and verify the
traces, and serialise them for storage. The steps are also here one by one (`decode`,
`extraction_of`, `traces_of`, ...) for the anthropic analyzer's path, which awaits a model
call between them, and for the envelope-only records of API activity.
"""

from __future__ import annotations

import copyreg
import dataclasses
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from google.protobuf.message import DecodeError

from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.core.protoconv import from_timestamp
from smoltbot.core.sessions import SubAgent, TurnStart
from smoltbot.core.usage import TokenUsage
from smoltbot.observer.accounting import ExchangeFacts, facts_of
from smoltbot.observer.enforcement import annotate_enforcement
from smoltbot.observer.evidence_store import EvidenceJob, EvidenceRow, LedgerRow, evidence_for
from smoltbot.observer.extraction import Extraction, extract
from smoltbot.observer.trace_builder import build_traces
from smoltbot.v1 import exchange_pb2

__all__ = [
    "Job",
    "JobResult",
    "annotate_usage",
    "array_elements",
    "call_time",
    "call_time_of",
    "compute",
    "compute_many",
    "decode",
    "dumps",
    "dumps_with_turn_slot",
    "environment_of",
    "extraction_of",
    "outcome_of",
    "request_fields",
    "scan_object",
    "serialise",
    "time_of",
    "traces_of",
    "with_turn",
]


def _positional_pickling(cls: type) -> None:
    """Pickles instances of a frozen, slotted dataclass as a constructor call with its fields.
    Its default (`__getstate__` / `__setstate__`, which look the fields up on every instance)
    made a model call's usage facts cost more to send back from a worker process than its
    traces."""
    names = tuple(item.name for item in dataclasses.fields(cls))

    def reduce(instance: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, tuple(getattr(instance, name) for name in names)

    copyreg.pickle(cls, reduce)


for _cls in (ExchangeFacts, TokenUsage, SubAgent, TurnStart):
    _positional_pickling(_cls)


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
    #: History integrity and provenance (observer/evidence_store.py); None: not checked.
    evidence: EvidenceJob | None = None


@dataclass
class JobResult:
    exchange_id: str
    #: The built traces (trace.proto JSON) and their serialised form, in decision order.
    traces: list[dict[str, Any]] = field(default_factory=list)
    trace_json: list[str] = field(default_factory=list)
    #: Per trace, where in its serialised form the conversation turn goes (`dumps_with_turn_slot`).
    turn_slots: list[int] = field(default_factory=list)
    #: Usage and session facts of a model call (`observer.accounting`), not yet priced.
    facts: ExchangeFacts | None = None
    #: The exchange's row of the history ledger, stored with its traces.
    evidence_row: EvidenceRow | None = None
    #: Set when a step failed: which one, and the error.
    step: str = ""
    error: str = ""
    #: The model analyzer's answer (`analyzers.AnalysisResult`; the model path only, never crosses
    #: to a worker process): kept when the history check is done again, so it is not asked twice.
    model_analysis: Any = None


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


#: What extraction reads from a request (see observer.extraction): never the conversation
#: (`messages`, `input`, `contents`). The system prompt is `system` (Anthropic), `instructions`
#: (OpenAI Responses) or `systemInstruction` (Gemini).
_REQUEST_FIELDS = (b"model", b"tools", b"system", b"instructions", b"systemInstruction",
                   b"system_instruction")
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
                         stream_error=exchange.response.stream_error, provider=exchange.provider,
                         path=exchange.request.path)
    extraction.missing.extend(missing)
    return extraction


def traces_of(job: Job, exchange: exchange_pb2.Exchange, extraction: Extraction, analyses: list[Any] | None,
              analyzer: str, fallback_reason: str = "") -> list[dict[str, Any]]:
    traces = build_traces(
        exchange_id=job.exchange_id, agent_id=job.agent_id, session_id=job.session_id, card=job.card,
        extraction=extraction, analyses=analyses, exchange_started_at=time_of(exchange.timings, "started_at"),
        exchange_ended_at=time_of(exchange.timings, "ended_at"), observed_at=job.observed_at,
        conversation_turn=None, store_reasoning=job.store_reasoning, analyzer_name=analyzer,
        analysis_fallback_reason=fallback_reason, outcome=outcome_of(exchange),
        outcome_detail=exchange.outcome_detail, http_status=exchange.response.status,
        environment=environment_of(exchange),
    )
    annotate_enforcement(traces, exchange)
    return traces


def add_evidence(result: JobResult, job: Job, exchange: exchange_pb2.Exchange,
                 extraction: Extraction) -> None:
    """History check, provenance and say/do on the built traces (before they are serialised)."""
    if job.evidence is None or not result.traces:
        return
    result.evidence_row = evidence_for(
        job.evidence, exchange_id=job.exchange_id, agent_id=job.agent_id, api=extraction.api,
        request_body=exchange.request.body, response_body=exchange.response.body,
        relayed_at=time_of(exchange.timings, "ended_at"), card=job.card, traces=result.traces,
        now=job.observed_at)


def dumps(trace: dict[str, Any]) -> str:
    return json.dumps(trace, ensure_ascii=False, separators=(",", ":"))


def annotate_usage(trace: dict[str, Any], facts: ExchangeFacts) -> None:
    """What a model call's usage facts add to each of its traces (the session rung, the sub-agent
    that made the call), as its `exchange_usage` row is written; the conversation turn is added
    there too, once numbered."""
    observation = trace.setdefault("observation", {})
    observation["session_rung"] = facts.session_rung
    agent = facts.sub_agent
    if agent.is_sub_agent:
        observation["sub_agent_id"] = agent.agent_id
        observation["parent_agent_id"] = agent.parent_agent_id
        observation["sub_agent_type"] = agent.agent_type


#: Stands for the turn while a trace is serialised ahead of its numbering.
_TURN_MARK = -7_340_033
_TURN_KEY = ',"conversation_turn":'


def dumps_with_turn_slot(trace: dict[str, Any]) -> tuple[str, int]:
    """The trace serialised without a conversation turn, and the offset where
    `_TURN_KEY + str(turn)` makes it the serialisation of the trace with its turn (the turn is
    numbered in the write transaction; a trace is serialised here, off the event loop). -1 when
    no such offset is known: the writer serialises that trace again.

    The turn is the last key of `context`, where numbering appends it. The marked key is found by
    its text: outside JSON strings (inside one every quote is escaped), so only another object
    key of that name and value (a tool's arguments) could match, and then no offset is given."""
    context = trace.get("context")
    if not isinstance(context, dict) or not context or "conversation_turn" in context:
        return dumps(trace), -1
    context["conversation_turn"] = _TURN_MARK
    try:
        marked = dumps(trace)
    finally:
        del context["conversation_turn"]
    key = f"{_TURN_KEY}{_TURN_MARK}"
    at = marked.find(key)
    if at < 0 or marked.find(key, at + 1) >= 0:
        return dumps(trace), -1
    return marked[:at] + marked[at + len(key):], at


def with_turn(text: str, slot: int, turn: int | None) -> str:
    """A trace serialised by `dumps_with_turn_slot`, with its conversation turn (None: none)."""
    return text if turn is None else f"{text[:slot]}{_TURN_KEY}{turn}{text[slot:]}"


def serialise(result: JobResult, job: Job) -> None:
    """The result's traces serialised for storage: with the usage facts the write will add (a
    model call of a known agent gets its `exchange_usage` row), and a slot for the turn."""
    if result.facts is not None and job.agent_id:
        for trace in result.traces:
            annotate_usage(trace, result.facts)
        serialised = [dumps_with_turn_slot(trace) for trace in result.traces]
        result.trace_json = [text for text, _ in serialised]
        result.turn_slots = [slot for _, slot in serialised]
    else:
        result.trace_json = [dumps(trace) for trace in result.traces]
        result.turn_slots = [-1] * len(result.traces)


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
        step = "check history and provenance"
        add_evidence(result, job, exchange, extraction)
        step = "serialise traces"
        serialise(result, job)
    except Exception as error:  # noqa: BLE001 - reported to the processor, which retries
        result.step, result.error = step, f"{type(error).__name__}: {error}"
        result.traces, result.trace_json, result.turn_slots, result.facts = [], [], [], None
        result.evidence_row = None
    return result


def compute_many(jobs: list[Job]) -> list[JobResult]:
    """`compute` of each job. Calls of one session are computed in start order, each seeing the
    ledger rows of the batch's earlier calls (their rows are not stored yet)."""
    relayed: dict[str, list[LedgerRow]] = {}
    results: dict[int, JobResult] = {}

    def start(position: int) -> float:
        evidence = jobs[position].evidence
        return evidence.started_at.timestamp() if evidence is not None else float("-inf")

    for position in sorted(range(len(jobs)), key=lambda p: (start(p), p)):
        job = jobs[position]
        session = job.evidence.session_id if job.evidence is not None else None
        if job.evidence is not None and session and relayed.get(session):
            job = replace(job, evidence=job.evidence.with_rows(relayed[session]))
        result = results[position] = compute(job)
        row = result.evidence_row
        if session and row is not None:
            relayed.setdefault(session, []).append(
                LedgerRow(row.exchange_id, row.started_at, row.ledger_json))
    return [results[position] for position in range(len(jobs))]
