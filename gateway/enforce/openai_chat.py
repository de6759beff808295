"""Tool calls of an OpenAI Chat Completions answer checked before the client gets them, whole or streamed.

A call is a `message.tool_calls[i]` entry: a function call (its `arguments`, JSON text) or a
custom tool call (its free-text `input`, judged as `{"input": text}`, as the observer reads it);
or the deprecated `message.function_call` (the `functions` parameter), which has no id.
Chat messages have no blocks: a stopped call leaves `tool_calls` (`function_call`) and its
replacement text goes into the message's `content` (after any text already there, a blank line
between); when no allowed call remains, `tool_calls` goes and a `finish_reason` of `tool_calls`
(`function_call`) becomes `stop`. Every choice is judged; the record's `index` is the call's
index in its choice's `tool_calls` (0 for a `function_call`).

* Whole answers: the original bytes when nothing was replaced; otherwise the parsed completion,
  changed only in the stopped calls' messages and finish reasons, serialised again.
* Streams (`data: {chunk}` events, `data: [DONE]` last): chunks without tool-call deltas pass as
  they came, unparsed. From the chunk that opens a call (a new `tool_calls[].index`) its chunks
  are held until it is complete (the next index of its choice opens, its choice's
  `finish_reason` arrives, `[DONE]`, or the stream ends); calls that follow one another stay
  held together until the last is complete. Then the held chunks go out as they came, or, for a
  stopped call, without its deltas and with one `content` delta carrying the replacement right
  after the chunk where it opened; the indexes of later calls of the choice close up (index i becomes i minus
  the stopped calls before it) and the finish reason follows the rule above. With `replace` off
  (nudge) nothing is held: the calls are only judged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .calls import CallRecord, Decide, SseSplitter, compact, parse_input, sse_data
from .texts import replacement_text

__all__ = ["ChatStreamEnforcer", "rewrite_chat_completion"]

#: Non-empty text in a chunk's content delta (the replacement then starts a new paragraph).
_TEXT = re.compile(rb'"content":\s*"[^"]')
_CALL_FINISH = ("tool_calls", "function_call")
#: The index a deprecated `function_call` is kept under (tool_calls indexes start at 0).
_LEGACY = -1


def _call_of(raw: dict[str, Any]) -> tuple[str, str, Any]:
    """(id, name, input) of one whole tool call entry."""
    kind = str(raw.get("type") or "function")
    found = raw.get(kind)
    spec: dict[str, Any] = found if isinstance(found, dict) else {}
    name = str(spec.get("name") or "")
    if kind == "custom":
        text = spec.get("input")
        return str(raw.get("id") or ""), name, {"input": text if isinstance(text, str) else ""}
    arguments = spec.get("arguments")
    tool_input = parse_input(arguments) if isinstance(arguments, str) else arguments
    return str(raw.get("id") or ""), name, tool_input if tool_input is not None else {}


def _joined(content: Any, texts: list[str]) -> Any:
    """The message content with the texts after it (a list of parts, as some servers send, gets
    one more text part)."""
    said = "\n\n".join(texts)
    if isinstance(content, list):
        return [*content, {"type": "text", "text": said}]
    return f"{content}\n\n{said}" if isinstance(content, str) and content else said


def rewrite_chat_completion(body: bytes, decide: Decide, *,
                            replace: bool) -> tuple[bytes | None, list[CallRecord]]:
    if b"tool_calls" not in body and b"function_call" not in body:
        return None, []
    try:
        completion = json.loads(body)
    except ValueError:
        return None, []
    choices = completion.get("choices") if isinstance(completion, dict) else None
    records: list[CallRecord] = []
    changed = False
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(choice, dict):
            continue
        calls = message.get("tool_calls")
        legacy = message.get("function_call")
        if isinstance(calls, list) and calls:
            field_name = "tool_calls"
        elif isinstance(legacy, dict):
            field_name, calls = "function_call", [{"type": "function", "function": legacy}]
        else:
            continue
        kept: list[Any] = []
        texts: list[str] = []
        for index, raw in enumerate(calls):
            if not isinstance(raw, dict):
                kept.append(raw)
                continue
            call_id, name, tool_input = _call_of(raw)
            verdict = decide(name, tool_input, call_id)
            stop = replace and verdict.decision != "allow"
            records.append(CallRecord(index, call_id, name, verdict, stop))
            if stop:
                texts.append(replacement_text(name, tool_input, verdict))
            else:
                kept.append(raw)
        if not texts:
            continue
        changed = True
        message["content"] = _joined(message.get("content"), texts)
        if kept:
            message["tool_calls"] = kept
        else:
            del message[field_name]
            if choice.get("finish_reason") in _CALL_FINISH:
                choice["finish_reason"] = "stop"
    return (compact(completion) if changed else None), records


@dataclass(slots=True)
class _Call:
    choice: int
    index: int
    kind: str = "function"
    call_id: str = ""
    name: list[str] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)
    stopped: bool = False
    text: str = ""


@dataclass(slots=True)
class _Chunk:
    raw: bytes
    #: The parsed chunk, None for one that is not a JSON object ([DONE], a comment...).
    data: dict[str, Any] | None


class ChatStreamEnforcer:
    """A Chat Completions stream in, the stream the client gets out (see the module docstring)."""

    def __init__(self, decide: Decide, *, replace: bool) -> None:
        self._decide = decide
        self._replace = replace
        self._events = SseSplitter()
        self._held: list[_Chunk] = []
        #: The calls of the held chunks, by (choice, index); those still being read in `_open`.
        self._calls: dict[tuple[int, int], _Call] = {}
        self._open: dict[tuple[int, int], _Call] = {}
        #: Per choice: the indexes of the calls stopped so far, and how many were let through.
        self._stopped: dict[int, list[int]] = {}
        self._allowed: dict[int, int] = {}
        self._text_seen = False
        self.records: list[CallRecord] = []

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._events.feed(chunk):
            self._event(raw, out)
        return out[0] if len(out) == 1 else b"".join(out)

    def end(self) -> bytes:
        out: list[bytes] = []
        self._close(list(self._open), out)
        out.append(self._events.rest())
        return b"".join(out)

    def release(self) -> bytes:
        held = b"".join(chunk.raw for chunk in self._held) + self._events.rest()
        self._held, self._open, self._calls = [], {}, {}
        return held

    # --- reading

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        if not self._held and b"tool_calls" not in raw and b"function_call" not in raw:
            # The common case (text, role, usage chunks): sent as it is.
            if not self._text_seen and _TEXT.search(raw):
                self._text_seen = True
            out.append(raw)
            return
        data = sse_data(raw)
        parsed: Any = None
        if data.startswith(b"[DONE]"):
            self._add(_Chunk(raw, None), out)
            self._close(list(self._open), out)
            return
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        chunk = _Chunk(raw, parsed if isinstance(parsed, dict) else None)
        if chunk.data is None:
            self._add(chunk, out)
            return
        closing: list[tuple[int, int]] = []
        opens = False
        choices = chunk.data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                continue
            number = choice.get("index", 0)
            delta = choice.get("delta")
            entries = delta.get("tool_calls") if isinstance(delta, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str) and delta["content"]:
                self._text_seen = True
            legacy = delta.get("function_call") if isinstance(delta, dict) else None
            if isinstance(legacy, dict):
                entries = [{"index": _LEGACY, "type": "function", "function": legacy}]
            for entry in entries if isinstance(entries, list) else ():
                if not isinstance(entry, dict) or not isinstance(entry.get("index"), int):
                    continue
                key = (number, entry["index"])
                call = self._open.get(key)
                if call is None:
                    # A new call of this choice: the one before it is complete.
                    closing += [k for k in self._open if k[0] == number and k not in closing]
                    call = self._open[key] = self._calls[key] = _Call(number, entry["index"])
                    opens = True
                self._read(call, entry)
            if choice.get("finish_reason"):
                closing += [k for k in self._open if k[0] == number and k not in closing]
        if opens or self._held:
            if not self._replace:
                out.append(raw)
            else:
                self._held.append(chunk)
        else:
            out.append(self._render(chunk))
        self._close(closing, out)

    def _add(self, chunk: _Chunk, out: list[bytes]) -> None:
        if self._held and self._replace:
            self._held.append(chunk)
        else:
            out.append(chunk.raw)

    @staticmethod
    def _read(call: _Call, entry: dict[str, Any]) -> None:
        if isinstance(entry.get("id"), str) and entry["id"]:
            call.call_id = entry["id"]
        if isinstance(entry.get("type"), str):
            call.kind = entry["type"]
        found = entry.get(call.kind)
        if not isinstance(found, dict):
            found = entry.get("function")
        spec: dict[str, Any] = found if isinstance(found, dict) else {}
        if isinstance(spec.get("name"), str):
            call.name.append(spec["name"])
        piece = spec.get("input" if call.kind == "custom" else "arguments")
        if isinstance(piece, str):
            call.fragments.append(piece)

    def _close(self, keys: list[tuple[int, int]], out: list[bytes]) -> None:
        for key in keys:
            call = self._open.pop(key, None)
            if call is None:
                continue
            name, text = "".join(call.name), "".join(call.fragments)
            tool_input = {"input": text} if call.kind == "custom" else parse_input(text)
            verdict = self._decide(name, tool_input, call.call_id)
            call.stopped = self._replace and verdict.decision != "allow"
            self.records.append(CallRecord(max(call.index, 0), call.call_id, name, verdict, call.stopped))
            if call.stopped:
                call.text = replacement_text(name, tool_input, verdict)
                self._stopped.setdefault(call.choice, []).append(call.index)
            else:
                self._allowed[call.choice] = self._allowed.get(call.choice, 0) + 1
        if not self._open and self._held:
            held, self._held = self._held, []
            for chunk in held:
                out.append(self._render(chunk))
            self._calls = {}

    # --- writing

    def _render(self, chunk: _Chunk) -> bytes:
        """The chunk as the client gets it: as it came unless a call in it was stopped, a later
        call's index moved or its finish reason changes."""
        data = chunk.data
        if data is None or not self._replace or not self._stopped:
            return chunk.raw
        after: list[bytes] = []
        changed = False
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            number = choice.get("index", 0)
            stopped = self._stopped.get(number)
            if not stopped:
                continue
            delta = choice.get("delta")
            legacy = self._calls.get((number, _LEGACY))
            if legacy is not None and legacy.stopped and isinstance(delta, dict) and "function_call" in delta:
                del delta["function_call"]
                changed = True
                if legacy.text:
                    after.append(self._text_chunk(data, number, legacy.text))
                    legacy.text = ""
            entries = delta.get("tool_calls") if isinstance(delta, dict) else None
            if isinstance(entries, list):
                assert isinstance(delta, dict)
                kept = []
                for entry in entries:
                    index = entry.get("index") if isinstance(entry, dict) else None
                    if not isinstance(index, int):
                        kept.append(entry)
                        continue
                    call = self._calls.get((number, index))
                    if call is not None and call.stopped:
                        changed = True
                        if call.text:  # its first delta: the replacement follows this chunk, once
                            after.append(self._text_chunk(data, number, call.text))
                            call.text = ""
                        continue
                    moved = index - sum(1 for i in stopped if 0 <= i < index)
                    if moved != index:
                        entry = {**entry, "index": moved}
                        changed = True
                    kept.append(entry)
                if kept:
                    delta["tool_calls"] = kept
                else:
                    del delta["tool_calls"]
            if choice.get("finish_reason") in _CALL_FINISH and not self._allowed.get(number):
                choice["finish_reason"] = "stop"
                changed = True
        # The text follows the chunk: a `"content": null` in it (the role chunk) must not undo it.
        if not changed:
            return chunk.raw + b"".join(after) if after else chunk.raw
        if not _carries_anything(data):
            return b"".join(after)
        return b"data: " + compact(data) + b"\n\n" + b"".join(after)

    def _text_chunk(self, data: dict[str, Any], number: int, text: str) -> bytes:
        head = {key: value for key, value in data.items() if key not in ("choices", "obfuscation")}
        if "usage" in head:
            head["usage"] = None
        if self._text_seen:
            text = "\n\n" + text
        self._text_seen = True
        head["choices"] = [{"index": number, "delta": {"content": text}, "logprobs": None,
                            "finish_reason": None}]
        return b"data: " + compact(head) + b"\n\n"


def _carries_anything(data: dict[str, Any]) -> bool:
    """Whether a chunk whose stopped tool-call deltas were taken out still says something."""
    if data.get("usage"):
        return True
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            return True
        if choice.get("finish_reason") or choice.get("logprobs") or choice.get("delta"):
            return True
    return False
