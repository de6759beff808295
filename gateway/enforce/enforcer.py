"""Enforcement per call: which card applies, the response filter of the call, the nudge notes.

The relay asks twice per call, and only these two questions:

* `note_request(capture, body)` before it forwards a request: the body to forward, with the
  session's pending nudge note added (nudge mode; see `nudges.py`) and, for a Responses call
  continuing a stored response whose calls were stopped, their outputs (`followups.py`); or
  the body unchanged.
* `response_filter(capture, status, upstream_headers, out_headers)` once the upstream answered
  and the agent is known: None when the call's answer goes to the client untouched (observe and
  off cards, calls that are not model calls, errors), else the `ResponseFilter` the answer's
  bytes go through. The card decides (`core.aap.enforcement.mode_of`); the verdict of every tool
  call and what was done with it end up on the capture (`Exchange.enforcement`).

The model calls of every relayed provider are read (`formats.answer_format`: Anthropic
Messages, OpenAI Chat Completions and Responses, Gemini generateContent and its streams); each
provider module rewrites its own wire format, behind the same two shapes (`calls.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict

from smoltbot.core.aap.enforcement import Verdict, check_tool_call, mode_of
from smoltbot.v1 import exchange_pb2

from ..body_decoding import StreamDecoder
from ..capture import Capture
from .calls import CallRecord
from .cards import CardCache
from .followups import StoppedCalls
from .formats import ANTHROPIC, OPENAI_RESPONSES, AnswerFormat, answer_format, streams_as_json
from .metrics import EnforcementMetrics
from .nudges import Nudges

__all__ = ["Enforcer", "ResponseFilter"]

logger = logging.getLogger(__name__)

_FILTERED_MODES = ("nudge", "enforce")
_BLOCK_ALL = Verdict("deny", "the agent's card could not be read and its fail policy is to block tool calls")


def _action(record: CallRecord, replace: bool) -> str:
    if record.verdict.decision == "allow":
        return "allowed"
    if replace:
        return "blocked" if record.verdict.decision == "deny" else "escalated"
    return "nudged"


class ResponseFilter:
    """One answer's bytes on their way to the client: `whole` for a body read at once, `feed` and
    `end` for one relayed in pieces. Always returns what to send and never raises: a failure
    releases what was held, lets the rest through unchanged and is recorded (fail-open).

    With `replace` off (nudge mode) the client gets every byte as the upstream sent it, encoding
    included; only a decoded copy is judged."""

    def __init__(self, enforcer: Enforcer, capture: Capture, *, mode: str, card: dict[str, Any] | None,
                 replace: bool, sse: bool, encoding: str, out_headers: CIMultiDict[str],
                 answer: AnswerFormat = ANTHROPIC, json_stream: bool = False) -> None:
        self._enforcer = enforcer
        self._capture = capture
        self._mode = mode
        self._card = card
        self._replace = replace
        self._out_headers = out_headers
        self._encoding = encoding
        self._answer = answer
        #: The stream's enforcer; None for a whole answer (read at once, or collected until its end).
        self._stream = answer.stream(self._decide, replace=replace, sse=sse) if sse or json_stream else None
        self._decoder: StreamDecoder | None = None
        if encoding:
            # Judged on the decoded bytes; when replacing, relayed decoded too (Content-Encoding went).
            self._decoder = StreamDecoder(encoding, 1 << 62)
        self._pieces: list[bytes] = []
        self._changed = False
        self._failed = ""
        self._done = False

    def _decide(self, name: str, tool_input: Any, tool_use_id: str) -> Verdict:
        if self._card is None:
            return _BLOCK_ALL
        try:
            return check_tool_call(self._card, name, tool_input, tool_use_id)
        except Exception:  # a card the checks cannot read must not break the answer: this call passes
            logger.exception("exchange %s: the card's checks failed on tool %s; the call passes",
                             self._capture.exchange_id, name)
            return Verdict("allow", "the card's checks failed on this call")

    def whole(self, body: bytes) -> bytes:
        out = self.feed(body) + self.end()
        if self._failed or not self._replace or not self._changed:
            # An answer that did not change goes out as the upstream sent it, encoding and all.
            if self._encoding:
                self._out_headers["content-encoding"] = self._encoding
            return body
        return out

    def feed(self, chunk: bytes) -> bytes:
        if self._failed:
            return chunk if not self._replace or self._decoder is None else self._decoded(chunk)
        try:
            data = self._decoder.feed(chunk) if self._decoder is not None else chunk
            if self._stream is None:
                self._pieces.append(data)
                return chunk if not self._replace else b""
            out = self._stream.feed(data)
            return chunk if not self._replace else out
        except Exception as error:  # noqa: BLE001 - fail-open, recorded
            held = self._fail(error)
            return chunk if not self._replace else held

    def end(self) -> bytes:
        if self._failed:
            return b""
        try:
            if self._decoder is not None:
                self._decoder.finish()
            if self._stream is None:
                body = b"".join(self._pieces)
                rewritten, records = self._answer.rewrite(body, self._decide, replace=self._replace)
                self._changed = rewritten is not None
                self._finish(records)
                if not self._replace:
                    return b""
                return body if rewritten is None else rewritten
            out = self._stream.end()
            self._changed = any(record.replaced for record in self._stream.records)
            self._finish(self._stream.records)
            return out if self._replace else b""
        except Exception as error:  # noqa: BLE001 - fail-open, recorded
            held = self._fail(error)
            return held if self._replace else b""

    def _decoded(self, chunk: bytes) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.feed(chunk)
        except Exception:  # noqa: BLE001 - undecodable: nothing readable is left to send
            return b""

    def _fail(self, error: BaseException) -> bytes:
        """Records the failure; returns what was held, to be sent as it came."""
        self._failed = f"enforcement failed: {type(error).__name__}"
        logger.exception("exchange %s: %s; the answer goes through unenforced", self._capture.exchange_id,
                         self._failed)
        self._enforcer.record(self._capture, self._mode, self._card, [], self._failed)
        held = self._stream.release() if self._stream is not None else b"".join(self._pieces)
        self._pieces = []
        return held

    def _finish(self, records: list[CallRecord]) -> None:
        if not self._done:
            self._done = True
            self._enforcer.record(self._capture, self._mode, self._card, records, "",
                                  replace=self._replace)


class Enforcer:
    def __init__(self, cards: CardCache, metrics: EnforcementMetrics, nudges: Nudges | None = None) -> None:
        self.cards = cards
        self.metrics = metrics
        self.nudges = nudges or Nudges()
        self.stopped_calls = StoppedCalls()
        metrics.track_watch(lambda: 1.0 if cards.live else 0.0)

    def start(self) -> None:
        self.cards.start()

    async def close(self) -> None:
        await self.cards.close()

    # ------------------------------------------------------------------ the relay's two questions

    def note_request(self, capture: Capture, body: bytes, headers: Mapping[str, str]) -> bytes:
        """The request body to forward: with the session's pending nudge note, if any, and (a
        Responses call continuing an answer whose calls were stopped) those calls' outputs."""
        if not capture.agent_id or not (self.nudges.pending or self.stopped_calls.pending):
            return body
        answer = answer_format(capture.provider, capture.method, capture.path)
        if answer is None:
            return body
        if answer is OPENAI_RESPONSES and self.stopped_calls.pending and b'"previous_response_id"' in body:
            body, _added = self.stopped_calls.apply(capture.agent_id, body, headers)
        if not self.nudges.pending:
            return body
        changed, note = self.nudges.apply(capture.agent_id, capture.session_id, body, headers,
                                          answer.place_note)
        if note:
            self.metrics.nudges_delivered.inc()
            record = capture.enforcement or exchange_pb2.Enforcement()
            record.nudge_note = note
            capture.enforcement = record
        return changed

    async def response_filter(self, capture: Capture, status: int, upstream_headers: Mapping[str, str],
                              out_headers: CIMultiDict[str]) -> ResponseFilter | None:
        answer = answer_format(capture.provider, capture.method, capture.path)
        if not capture.agent_id or status != 200 or answer is None:
            return None
        lookup = await self.cards.lookup(capture.agent_id)
        card = lookup.card
        if card is None:
            self.metrics.card_unavailable.inc()
            if lookup.fail_policy != "block":
                self.record(capture, "unknown", None, [], lookup.failure + "; fail policy: allow")
                return None
            mode, replace = "unknown", True  # fail policy block: every tool call is stopped
        else:
            mode = mode_of(card)
            if mode not in _FILTERED_MODES:
                self.record(capture, mode, card, [], "")
                return None
            replace = mode == "enforce"
        content_type = upstream_headers.get("content-type", "")
        sse = content_type.startswith("text/event-stream")
        json_stream = not sse and streams_as_json(capture.provider, capture.path, capture.query)
        if not sse and not content_type.startswith("application/json"):
            self.record(capture, mode, card, [], f"the answer is {content_type or 'untyped'}, not read")
            return None
        encoding = upstream_headers.get("content-encoding", "").strip()
        if encoding.lower() == "identity":
            encoding = ""
        if replace:
            # The answer may change size; a decoded one loses its encoding (a whole answer that did
            # not change gets it back).
            out_headers.popall("content-length", None)
            if encoding:
                out_headers.popall("content-encoding", None)
        return ResponseFilter(self, capture, mode=mode, card=card, replace=replace, sse=sse,
                              encoding=encoding, out_headers=out_headers, answer=answer,
                              json_stream=json_stream)

    # ------------------------------------------------------------------ the record

    def record(self, capture: Capture, mode: str, card: dict[str, Any] | None, records: list[CallRecord],
               not_enforced: str, *, replace: bool = False) -> None:
        """What the gateway did, onto the call's record (`Exchange.enforcement`), and counted."""
        enforcement = capture.enforcement or exchange_pb2.Enforcement()
        enforcement.mode = mode
        enforcement.card_id = str((card or {}).get("card_id", ""))
        enforcement.not_enforced_reason = not_enforced
        del enforcement.tool_calls[:]
        stopped: list[tuple[str, Verdict]] = []
        for call in records:
            action = "not_enforced" if not_enforced else _action(call, replace)
            enforcement.tool_calls.add(tool_use_id=call.tool_use_id, name=call.name, index=call.index,
                                       verdict=call.verdict.decision, action=action,
                                       reason=call.verdict.reason)
            self.metrics.count(action)
            if action == "nudged":
                stopped.append((call.name, call.verdict))
        capture.enforcement = enforcement
        if replace and not not_enforced:
            self.stopped_calls.add(capture.agent_id, records)
        if stopped:
            self.nudges.add(capture.agent_id, capture.session_id, stopped)
