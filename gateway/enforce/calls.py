"""What every provider's rewriter shares: the verdict callback, the record of one judged tool call,
how an input that is JSON text is read, and the splitting of a server-sent-events stream.

Each provider module (`anthropic`, `openai_chat`, `openai_responses`, `gemini`) offers the same
two things over its own wire format: a rewriter of a whole answer, `(body, decide, replace) ->
(new body or None, records)`, and a `StreamEnforcer` (`feed`, `end`, `release`, `records`) for
its stream. `formats.py` says which one a call gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from smoltbot.core.aap.enforcement import Verdict

__all__ = ["CallRecord", "Decide", "Rewrite", "SseSplitter", "StreamEnforcer", "boundary_of", "compact",
           "parse_input", "sse_data", "sse_name"]

#: decide(tool name, parsed input, tool call id) -> the card's verdict.
Decide = Callable[[str, Any, str], Verdict]


@dataclass(slots=True)
class CallRecord:
    """One tool call of the answer and what became of it. `index` is where the call sits in the
    provider's answer (docs/enforce.md: "The record")."""

    index: int
    tool_use_id: str
    name: str
    verdict: Verdict
    replaced: bool
    #: The id of the answer the call was in, where a later request may continue that answer by
    #: its id (a Responses `resp_...`, for `previous_response_id`); "" elsewhere.
    answer_id: str = ""
    #: The text the client got in the call's place ("" when it was not replaced).
    replacement: str = ""
    #: The call's kind where an API has several (Responses: `function_call`, `custom_tool_call`...).
    kind: str = ""


class Rewrite(Protocol):
    """A whole answer's rewriter: the new body (None: unchanged, send the original bytes) and a
    record per client tool call."""

    def __call__(self, body: bytes, decide: Decide, *,
                 replace: bool) -> tuple[bytes | None, list[CallRecord]]:
        ...


class StreamEnforcer(Protocol):
    """A provider's stream in (any chunking), the stream the client gets out."""

    @property
    def records(self) -> list[CallRecord]:
        """A record per tool call judged so far."""
        ...

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send now (b"" while an event is incomplete or a tool call is held)."""
        ...

    def end(self) -> bytes:
        """What is left when the stream ends (a call never closed is judged on what it has)."""
        ...

    def release(self) -> bytes:
        """Everything held, as it came; judging stops (the fail-open path)."""
        ...


def parse_input(text: str) -> Any:
    """A tool input sent as JSON text: an unfinished or broken one is judged as text (the observer
    reads it so too)."""
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {"unparsed_input": text}


def compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


_BOUNDARY = re.compile(rb"\r\n\r\n|\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\r|\n")


class SseSplitter:
    """Cuts a server-sent-events stream into whole events (each with its blank line), in any
    chunking. LF-only streams take the fast `find`; a CR anywhere switches to the general search."""

    __slots__ = ("_buffer", "_cr")

    def __init__(self) -> None:
        self._buffer = b""
        self._cr = False

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._cr and b"\r" in chunk:
            self._cr = True
        events: list[bytes] = []
        start = 0
        while True:
            if self._cr:
                found = _BOUNDARY.search(buffer, start)
                end = found.end() if found is not None else -1
            else:
                end = buffer.find(b"\n\n", start)
                end = end + 2 if end >= 0 else -1
            if end < 0:
                break
            events.append(buffer if start == 0 and end == len(buffer) else buffer[start:end])
            start = end
        self._buffer = buffer[start:] if start else buffer
        return events

    @property
    def uses_cr(self) -> bool:
        """Whether the stream has used CR line ends (events then need the general line reader)."""
        return self._cr

    def rest(self) -> bytes:
        """The unfinished event, taken out."""
        rest, self._buffer = self._buffer, b""
        return rest


def sse_data(raw: bytes) -> bytes:
    """The data of one event (its `data:` lines joined, as the SDKs' decoders read them)."""
    if raw.startswith(b"data: ") and raw.find(b"\n") >= len(raw) - 4:
        return raw[6:].rstrip(b"\r\n")  # the common one-line event
    data = [line[5:].removeprefix(b" ") for line in _LINE.split(raw) if line.startswith(b"data:")]
    return b"\n".join(data)


def sse_name(raw: bytes) -> bytes | None:
    """The event's name when its first line names it, else None."""
    if not raw.startswith(b"event:"):
        return None
    end = raw.find(b"\n")
    return raw[6:end].strip()


def boundary_of(raw: bytes) -> bytes:
    """The blank-line ending of one event, to end a rewritten event the way the stream does."""
    stripped = raw.rstrip(b"\r\n")
    return raw[len(stripped):] or b"\n\n"
