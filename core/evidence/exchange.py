"""One exchange's evidence, as the observer's CPU workers compute it, and the trace fields that show it.

`evaluate` reads the request (the history the client resent) and the response (the turn the gateway
relayed) once each, and gives:

* the history check of the request against the session's ledger rows (`HistoryLedger`), and the
  row this exchange adds to the ledger (digests of the turn it relayed and of tool results first
  seen; never content);
* the provenance of each tool call's arguments (`provenance`), with the card's tool policy;
* the say/do findings of the turn (`saydo`).

`annotate` puts them on the exchange's traces (`ApTrace.evidence`) and, when the card makes a flag a
violation for the trace's action (`extensions.evidence.forbid_untrusted_arguments`), checks the
trace against the card again so that `verification` says so.

The card's part lives in `extensions.evidence` (the one open section of a card, so cards stay
valid AAP): `untrusted_tools` and `trusted_tools` (fnmatch patterns, added to and taking precedence
over the defaults), `workspace` (a file read outside it is untrusted) and
`forbid_untrusted_arguments` (actions that must not take arguments from untrusted content).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from smoltbot.core.evidence.canonical import DigestMemo
from smoltbot.core.evidence.findings import CheckPoint, HistoryCheck
from smoltbot.core.evidence.history import HistoryLedger
from smoltbot.core.evidence.provenance import (
    ArgumentOrigin,
    InjectionFlag,
    SourcesPoint,
    ToolCallProvenance,
    gather_sources,
    trace_tool_calls,
)
from smoltbot.core.evidence.readers import (
    HISTORY_KEYS,
    ChatCompletionsReader,
    GeminiMark,
    GeminiReader,
    ResponsesReader,
    reader_for,
    server_side_history,
)
from smoltbot.core.evidence.request_memo import RequestMemo, load_json
from smoltbot.core.evidence.saydo import SayDoFinding, say_do_findings
from smoltbot.core.evidence.tools import DEFAULT_UNTRUSTED_TOOLS, ToolPolicy
from smoltbot.core.evidence.transcript import (
    MAX_MESSAGES,
    AnthropicMessagesReader,
    HistoryReader,
    Message,
    Part,
)
from smoltbot.core.usage import API_ANTHROPIC_MESSAGES

__all__ = [
    "EVIDENCE_CARD_KEYS",
    "EvidenceCarry",
    "EvidenceInput",
    "ExchangeEvidence",
    "annotate",
    "evaluate",
    "forbidden_on_untrusted",
    "ledger_key",
    "policy_of",
]

#: Keys of a card's `extensions.evidence` (core/aap/cards.py rejects any other).
EVIDENCE_CARD_KEYS = frozenset({"untrusted_tools", "trusted_tools", "workspace",
                                "forbid_untrusted_arguments"})
_LEDGER_DOMAIN = b"smoltbot/evidence-ledger/v1"
#: String leaves of the card given to provenance as the card's own words (a card is at most 64 KiB).
_MAX_CARD_TEXTS = 512


def ledger_key(hash_secret: bytes) -> bytes:
    """The ledger's HMAC key, derived from the deployment's hash secret (a separate key per use: a
    ledger digest can never be confused with an agent hash)."""
    return hmac.new(hash_secret, _LEDGER_DOMAIN, hashlib.sha256).digest()


@dataclass(frozen=True)
class EvidenceInput:
    """What the worker needs beyond the exchange: the key and the session's ledger rows relayed
    strictly before this call started (in the order relayed)."""

    key: bytes
    rows: tuple[Mapping[str, Any], ...] = ()
    #: False: the exchange has no session, so there is no ledger to check its history against.
    session: bool = True
    #: Said on the history check (e.g. earlier exchanges of the session not recorded in time).
    notes: tuple[str, ...] = ()
    #: Why `rows` may lack the session's oldest turns (retention deleted them, only the newest rows
    #: were read); None: they are all there. Turns before the first recognised one are then unknown.
    cut: str | None = None
    #: The ledger of `rows`, built already (a worker keeps a session's between calls); then `rows`
    #: are not read again. It is copied, never changed.
    ledger: HistoryLedger | None = None


@dataclass
class ExchangeEvidence:
    #: What this exchange adds to its session's ledger (`HistoryLedger.row_state`).
    row: dict[str, Any]
    #: The history check as trace JSON (`HistoryCheck` in trace.proto).
    history: dict[str, Any]
    #: Per tool call id, and per place among the turn's tool calls (`#0`, `#1`... for traces whose
    #: call has no id, as Gemini's): the trace JSON fields of that call (arguments,
    #: injection_flags, say_do, notes).
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.history.get("status", "unchecked"))

    @property
    def diverged_at(self) -> int | None:
        value = self.history.get("diverged_at")
        return value if isinstance(value, int) else None


def _strings(value: Any, limit: int) -> list[str]:
    found: list[str] = []
    stack = [value]
    while stack and len(found) < limit:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _section(card: Mapping[str, Any]) -> Mapping[str, Any]:
    extensions = card.get("extensions")
    section = extensions.get("evidence") if isinstance(extensions, Mapping) else None
    return section if isinstance(section, Mapping) else {}


def _names(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def policy_of(card: Mapping[str, Any]) -> ToolPolicy:
    """The tool policy of a card: the default untrusted tools plus the card's, minus its trusted ones."""
    section = _section(card)
    workspace = section.get("workspace")
    return ToolPolicy(untrusted=DEFAULT_UNTRUSTED_TOOLS + _names(section.get("untrusted_tools")),
                      trusted=_names(section.get("trusted_tools")),
                      workspace=workspace if isinstance(workspace, str) and workspace else None)


def forbidden_on_untrusted(card: Mapping[str, Any]) -> tuple[str, ...]:
    """Actions the card forbids to take arguments from untrusted content."""
    return _names(_section(card).get("forbid_untrusted_arguments"))


class _OnceReader(AnthropicMessagesReader):
    """Reads the request's messages and the response's parts once for all the checks of a call;
    with a session's memo, a message content the last calls sent too is not read again (its parts
    are the same objects, so their digests are found by identity)."""

    def __init__(self, memo: DigestMemo | None = None, requests: RequestMemo | None = None) -> None:
        self._messages: tuple[Any, list[Message]] | None = None
        self._parts: tuple[Any, list[Part]] | None = None
        self._memo = memo
        self._requests = requests

    def parts(self, content: Any) -> tuple[Part, ...]:
        if self._memo is None:
            return super().parts(content)
        parts: tuple[Part, ...] = self._memo.remembered("parts", content, super().parts)
        return parts

    def message_parts(self, index: int, content: Any) -> tuple[Part, ...]:
        if self._memo is None:
            return super().parts(content)
        parts: tuple[Part, ...] = self._memo.at("parts", index, content, super().parts)
        return parts

    def messages(self, body: Any) -> list[Message]:
        if self._messages is None or self._messages[0] is not body:
            self._messages = (body, self._read(body))
        return self._messages[1]

    def _read(self, body: Any) -> list[Message]:
        requests, memo = self._requests, self._memo
        if requests is None or memo is None or requests.body is not body:
            return super().messages(body)
        # The messages `RequestMemo` reused are the last call's objects, at the same places: the
        # last call read them into these very messages (the same parts, from `memo`).
        raw = body.get("messages")
        found: list[Message] = requests.resent(body)[:MAX_MESSAGES]
        kept = len(found)
        if isinstance(raw, list):
            found += [self.message(index, message) for index, message
                      in enumerate(raw[kept:MAX_MESSAGES], start=kept)]
        memo.keep_positions("parts", kept)  # as if read again: a later call still finds them there
        requests.read_as(body, found)
        return found

    def response_parts(self, response: Any) -> list[Part]:
        if self._parts is None or self._parts[0] is not response:
            self._parts = (response, super().response_parts(response))
        return self._parts[1]


class _Cached:
    """Another API's reader, reading the request's messages and the response's parts once for all
    the checks of a call. Of the history elements the session's `RequestMemo` reused (Chat's
    `messages`, Responses' `input` items, Gemini's `contents`), it takes the messages it made
    last time (so the checks resume, as with the Messages reader) and reads only the rest: a
    Responses turn of several items only once the item that closed it is resent too, Gemini's
    id-less calls numbered on from where the reused messages left off (`GeminiMark`)."""

    def __init__(self, base: HistoryReader, requests: RequestMemo | None = None, api: str = "") -> None:
        self._base = base
        self._requests = requests
        self._api = api
        self._messages: tuple[Any, list[Message]] | None = None
        self._marks: list[GeminiMark] | None = None
        self._parts: tuple[Any, list[Part]] | None = None

    def messages(self, body: Any) -> list[Message]:
        if self._messages is None or self._messages[0] is not body:
            self._messages = (body, self._read(body))
        return self._messages[1]

    def _read(self, body: Any) -> list[Message]:
        requests, base, api = self._requests, self._base, self._api
        self._marks = None
        raw = body.get(HISTORY_KEYS.get(api, "")) if isinstance(body, dict) else None
        if requests is None or requests.body is not body or not isinstance(raw, list):
            return base.messages(body)
        # The messages the last call made of the elements `RequestMemo` reused (the same objects
        # at the same places), then the rest.
        found: list[Message] = requests.resent(body, by=api)[:MAX_MESSAGES]
        if isinstance(base, ResponsesReader):
            found, spans = base.read_items(raw, found, requests.resent_marks(body, by=api)[:len(found)])
            requests.read_as(body, found, by=api, needs=[need for need, _ in spans], marks=spans)
        elif isinstance(base, GeminiReader):
            found, marks = base.read_contents(raw, found, requests.resent_marks(body, by=api)[:len(found)])
            requests.read_as(body, found, by=api, marks=marks)
            self._marks = marks
        elif isinstance(base, ChatCompletionsReader):
            found += [base.message(index, element) for index, element
                      in enumerate(raw[len(found):MAX_MESSAGES], start=len(found))]
            requests.read_as(body, found, by=api)
        else:
            return base.messages(body)
        return found

    def system_texts(self, body: Any) -> list[str]:
        return self._base.system_texts(body)

    def response_parts(self, response: Any) -> list[Part]:
        if self._parts is None or self._parts[0] is not response:
            self._parts = (response, self._base.response_parts(response))
        return self._parts[1]

    def turn_parts(self, body: Any, response: Any) -> list[Part]:
        if isinstance(self._base, GeminiReader):  # numbered after the request's calls, read once
            messages = self.messages(body)
            return self._base.turn_parts_after(messages, response, self._marks)
        return self._base.turn_parts(body, response)


@dataclass
class EvidenceCarry:
    """What a session's last check leaves its next one: where the history check and the collecting
    of provenance sources may resume (`CheckPoint`, `SourcesPoint`). Each is used only when the
    next request resends the messages before it as they were; the history check's only when the
    ledger is the last call's extended, which the caller vouches for by passing it (`SessionMemo`).
    Taken by each call and replaced by its own."""

    history: CheckPoint | None = None
    sources: SourcesPoint | None = None


def evaluate(request_body: bytes, response_body: bytes, card: Mapping[str, Any],
             given: EvidenceInput, digests: DigestMemo | None = None,
             requests: RequestMemo | None = None,
             carry: EvidenceCarry | None = None,
             api: str = API_ANTHROPIC_MESSAGES) -> ExchangeEvidence | None:
    """The evidence of one exchange of `api` (readers.reader_for); None when the API has no history
    reader or the request is not a readable JSON object.
    `digests`: the session's memo of digests (the same answer, sooner, for blocks seen before);
    `requests`: its last request (the same answer, sooner, for the messages resent unchanged);
    `carry`: what the session's last check left (the same answer, sooner: only what is new is read)."""
    base = reader_for(api)
    if base is None:
        return None
    resume = (carry.history, carry.sources) if carry is not None else (None, None)
    if carry is not None:
        carry.history = carry.sources = None
    body = (requests.load(request_body, HISTORY_KEYS.get(api, "messages")) if requests is not None
            else load_json(request_body))
    if not isinstance(body, dict):
        return None
    response = load_json(response_body)
    reader: HistoryReader = (_OnceReader(digests, requests) if isinstance(base, AnthropicMessagesReader)
                             else _Cached(base, requests, api))
    if given.ledger is not None:
        ledger = given.ledger.copy(reader, digests)
    else:
        ledger = HistoryLedger.from_rows(given.key, given.rows, reader, digests)
    ledger.cut = ledger.cut or given.cut is not None
    known = ledger.known_tool_results()
    elsewhere = server_side_history(api, body)
    check = ledger.check(body, resume[0]) if given.session and elsewhere is None else None
    turn = ledger.record(body, response) if isinstance(response, dict) else None
    messages = reader.messages(body)
    # Findings name the request's own list (a Responses turn is several input items).
    where = {m.index: m.at for m in messages if m.at is not None and m.at != m.index}
    history = _history_json(check, len(ledger.turns) - (turn is not None), given, elsewhere, where)
    sources, _, sources_point = gather_sources(body, card_texts=_strings(card, _MAX_CARD_TEXTS),
                                               policy=policy_of(card), reader=reader, resume=resume[1])
    if carry is not None:
        carry.history, carry.sources = (check.point if check else None), sources_point
    calls: dict[str, dict[str, Any]] = {}
    if isinstance(response, dict):
        places = {block: f"#{n}" for n, block in enumerate(
            b for b, part in enumerate(reader.response_parts(response)) if part.is_tool_call)}
        for n, call in enumerate(trace_tool_calls(response, sources, reader=reader, resumed=resume[1],
                                                  point=sources_point)):
            calls[f"#{n}"] = _call_json(call, where)
            if call.tool_use_id:
                calls[call.tool_use_id] = calls[f"#{n}"]
        for finding in say_do_findings(response, reader):
            said = calls.setdefault(places.get(finding.block_index, ""), {}).setdefault("say_do", [])
            said.append(_say_do_json(finding))
    return ExchangeEvidence(row=ledger.row_state(turn, known), history=history, calls=calls)


def _history_json(check: HistoryCheck | None, ledger_turns: int, given: EvidenceInput,
                  elsewhere: str | None = None, where: Mapping[int, int] | None = None) -> dict[str, Any]:
    notes = list(given.notes)
    at = (lambda index: where.get(index, index)) if where else (lambda index: index)
    if elsewhere is not None:
        return {"status": "unchecked", "ledger_turns": ledger_turns,
                "notes": [*notes, f"{elsewhere}; nothing to check it against here"]}
    if check is None:
        return {"status": "unchecked", "ledger_turns": ledger_turns,
                "notes": [*notes, "no session: the history has no ledger to be checked against"]}
    found: dict[str, Any] = {
        "status": "intact" if check.intact else "diverged",
        "assistant_turns": check.assistant_turns,
        "verified_turns": check.verified_turns,
        "ledger_turns": ledger_turns,
        "findings": [{k: v for k, v in {
            "kind": str(f.kind), "message_index": at(f.message_index), "description": f.description,
            "block_index": f.block_index, "tool_use_id": f.tool_use_id, "turn_seq": f.turn_seq,
        }.items() if v is not None} for f in check.findings],
        "rewrites": [{"kind": str(r.kind), "message_index": at(r.message_index), "description": r.description}
                     for r in check.rewrites],
    }
    if check.diverged_at is not None:
        found["diverged_at"] = at(check.diverged_at)
    if check.unknown_turns:
        before = "" if check.unknown_before is None else f" before message {at(check.unknown_before)}"
        why = given.cut or "the ledger holds the session's newest turns only (history.MAX_TURNS)"
        plural = "s" if check.unknown_turns > 1 else ""
        notes.append(f"{check.unknown_turns} assistant turn{plural}{before} unknown: {why}")
    if notes:
        found["notes"] = notes
    return found


def _origin_json(origin: ArgumentOrigin, where: Mapping[int, int]) -> dict[str, Any]:
    found: dict[str, Any] = {"path": origin.path, "origin": str(origin.kind),
                             "value_chars": origin.value_chars, "matched_chars": origin.matched_chars,
                             "untrusted": origin.untrusted}
    if origin.message_index is not None:
        found["message_index"] = where.get(origin.message_index, origin.message_index)
    for name in ("tool_use_id", "tool_name", "excerpt"):
        if getattr(origin, name):
            found[name] = getattr(origin, name)
    if origin.also:
        found["also"] = [str(kind) for kind in origin.also]
    return found


def _flag_json(flag: InjectionFlag, where: Mapping[int, int]) -> dict[str, Any]:
    found: dict[str, Any] = {"path": flag.path, "matched": flag.matched, "excerpt": flag.excerpt,
                             "source_tool_use_id": flag.source_tool_use_id or "",
                             "source_tool_name": flag.source_tool_name or ""}
    if flag.source_message_index is not None:
        found["source_message_index"] = where.get(flag.source_message_index, flag.source_message_index)
    return found


def _call_json(call: ToolCallProvenance, where: Mapping[int, int]) -> dict[str, Any]:
    found: dict[str, Any] = {"arguments": [_origin_json(a, where) for a in call.arguments]}
    if call.flags:
        found["injection_flags"] = [_flag_json(f, where) for f in call.flags]
    if call.notes:
        found["notes"] = list(call.notes)
    return found


def _say_do_json(finding: SayDoFinding) -> dict[str, Any]:
    return {"promise": finding.promise, "said": finding.said, "tool_use_id": finding.tool_use_id or "",
            "tool_name": finding.tool_name or "", "actions": list(finding.actions)}


def annotate(traces: list[dict[str, Any]], evidence: ExchangeEvidence, card: Mapping[str, Any], *,
             now: datetime) -> None:
    """`ApTrace.evidence` on each trace of the exchange: the history check on all of them, a tool
    call's provenance and say/do findings on its own trace; verification again where the card
    forbids the trace's action to take arguments from untrusted content and a flag says it did."""
    # Imported here: verification is the card's module, evidence only feeds it one more fact.
    from smoltbot.core.aap.verification import verify_trace

    forbidden = forbidden_on_untrusted(card)
    for trace in traces:
        observation = trace.get("observation") or {}
        metadata = (trace.get("context") or {}).get("metadata") or {}
        call = None
        if observation.get("tool_use_id"):
            call = evidence.calls.get(str(observation["tool_use_id"]))
        elif metadata.get("decision_kind") == "tool":  # a call without an id: by its place
            call = evidence.calls.get(f"#{observation.get('decision_index', 0)}")
        trace["evidence"] = {"history": evidence.history, **(call or {})}
        verification = trace.get("verification")
        if forbidden and call and call.get("injection_flags") and isinstance(verification, dict) \
                and verification.get("checks_performed"):
            verified_at = verification.get("verified_at")
            again = verify_trace(trace, dict(card), now=now)
            if verified_at is not None:
                again["verified_at"] = verified_at
            trace["verification"] = again
