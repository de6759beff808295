"""Tool calls of a Gemini answer checked before the client gets them, whole or streamed.

A call is a `functionCall` part of a candidate's content (`name`, `args`); `executableCode`
parts already ran at Google and are never judged. A stopped call's part is replaced, at the
same place, by a text part saying what was stopped and why, which keeps the part's
`thoughtSignature` if it had one (the signature must go back to the model where it came). A
reply with function calls already ends with `finishReason` `STOP`, so nothing else changes. The
record's `index` is the call's position among the answer's function calls (0, 1, ...: Gemini
parts have no stable index across a stream's chunks); its id is the call's `id`, when the API
gives one.

* Whole answers (`generateContent`): the original bytes when nothing was replaced; otherwise the
  parsed response, changed only in the replaced parts, serialised again.
* Streams: a `functionCall` part always arrives whole inside one chunk (Vertex AI's streamed
  arguments, `partialArgs` / `willContinue`, are not part of the Gemini API the gateway relays),
  so nothing is held beyond the chunk that carries it. Chunks without one pass as they came,
  unparsed (a substring test); one with a stopped call is serialised again with its part
  replaced. `alt=sse` streams are `data: {chunk}` events (`GeminiSseEnforcer`); without it the
  stream is one JSON array whose elements are cut out as their braces balance, strings
  respected (`GeminiArrayEnforcer`): the brackets and commas between them pass as they come.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .calls import CallRecord, Decide, SseSplitter, boundary_of, compact, sse_data
from .texts import replacement_text

__all__ = ["GeminiArrayEnforcer", "GeminiSseEnforcer", "rewrite_gemini"]


class _Judge:
    """Judges the function calls of successive responses (chunks), numbering them in order."""

    def __init__(self, decide: Decide, replace: bool) -> None:
        self._decide = decide
        self._replace = replace
        self.records: list[CallRecord] = []

    def response(self, response: Any) -> bool:
        """Judges the response's calls, replacing the stopped ones in place; whether any was."""
        changed = False
        candidates = response.get("candidates") if isinstance(response, dict) else None
        for candidate in candidates if isinstance(candidates, list) else ():
            content = candidate.get("content") if isinstance(candidate, dict) else None
            parts = content.get("parts") if isinstance(content, dict) else None
            for position, part in enumerate(parts if isinstance(parts, list) else ()):
                call = part.get("functionCall") if isinstance(part, dict) else None
                if not isinstance(call, dict):
                    continue
                assert isinstance(parts, list)
                name = str(call.get("name") or "")
                args = call.get("args")
                tool_input = args if isinstance(args, dict) else ({} if args is None else {"args": args})
                call_id = str(call.get("id") or "")
                verdict = self._decide(name, tool_input, call_id)
                stop = self._replace and verdict.decision != "allow"
                self.records.append(CallRecord(len(self.records), call_id, name, verdict, stop))
                if stop:
                    text: dict[str, Any] = {"text": replacement_text(name, tool_input, verdict)}
                    if "thoughtSignature" in part:
                        text["thoughtSignature"] = part["thoughtSignature"]
                    parts[position] = text
                    changed = True
        return changed


def rewrite_gemini(body: bytes, decide: Decide, *, replace: bool) -> tuple[bytes | None, list[CallRecord]]:
    if b"functionCall" not in body:
        return None, []
    try:
        response = json.loads(body)
    except ValueError:
        return None, []
    judge = _Judge(decide, replace)
    changed = judge.response(response)
    return (compact(response) if changed else None), judge.records


class GeminiSseEnforcer:
    """An `alt=sse` stream in, the stream the client gets out (see the module docstring)."""

    def __init__(self, decide: Decide, *, replace: bool) -> None:
        self._judge = _Judge(decide, replace)
        self._replace = replace
        self._events = SseSplitter()

    @property
    def records(self) -> list[CallRecord]:
        return self._judge.records

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for raw in self._events.feed(chunk):
            out.append(self._event(raw) if b"functionCall" in raw else raw)
        return out[0] if len(out) == 1 else b"".join(out)

    def _event(self, raw: bytes) -> bytes:
        try:
            response = json.loads(sse_data(raw))
        except ValueError:
            return raw
        if not self._judge.response(response) or not self._replace:
            return raw
        return b"data: " + compact(response) + boundary_of(raw)

    def end(self) -> bytes:
        rest = self._events.rest()
        # A last event without its blank line is still one (the SDK reads it at the end).
        return self._event(rest) if b"functionCall" in rest else rest

    def release(self) -> bytes:
        return self._events.rest()


#: Everything up to the next brace outside a string (strings skipped whole, escapes and all).
_TO_BRACE = re.compile(rb'[^{}"]*(?:"[^"\\]*(?:\\.[^"\\]*)*"[^{}"]*)*')


class GeminiArrayEnforcer:
    """A `streamGenerateContent` JSON array in, the array the client gets out."""

    def __init__(self, decide: Decide, *, replace: bool) -> None:
        self._judge = _Judge(decide, replace)
        self._replace = replace
        #: The element being read (from its opening brace), how far it was scanned, and its depth.
        self._element = b""
        self._scanned = 0
        self._depth = 0

    @property
    def records(self) -> list[CallRecord]:
        return self._judge.records

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        data = self._element + chunk if self._element else chunk
        pos, depth, start, size = self._scanned, self._depth, 0, len(data)
        while pos < size:
            if depth == 0:
                found = data.find(b"{", pos)
                if found < 0:
                    break
                if found > start:
                    out.append(data[start:found])  # brackets, commas, blanks between elements
                start, pos, depth = found, found + 1, 1
                continue
            pos = _TO_BRACE.match(data, pos).end()  # type: ignore[union-attr]  # matches empty too
            if pos >= size:
                break
            byte = data[pos]
            if byte == 0x22:  # a string not finished in this chunk: scanned again from its quote
                break
            pos += 1
            depth += 1 if byte == 0x7B else -1
            if depth == 0:
                out.append(self._element_out(data[start:pos]))
                start = pos
        if depth == 0:
            if start < size:
                out.append(data[start:])
            self._element, self._scanned = b"", 0
        else:
            self._element, self._scanned = data[start:], pos - start
        self._depth = depth
        return out[0] if len(out) == 1 else b"".join(out)

    def _element_out(self, raw: bytes) -> bytes:
        if b"functionCall" not in raw:
            return raw
        try:
            response = json.loads(raw)
        except ValueError:
            return raw
        if not self._judge.response(response) or not self._replace:
            return raw
        return compact(response)

    def end(self) -> bytes:
        rest, self._element, self._scanned, self._depth = self._element, b"", 0, 0
        return rest

    def release(self) -> bytes:
        return self.end()
