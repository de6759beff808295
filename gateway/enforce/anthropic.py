"""Tool calls of an Anthropic Messages answer checked before the client gets them, whole or streamed.

`rewrite_message` takes a whole (non-streamed) answer; `SseEnforcer` takes a stream in any
chunking. Both ask `decide(name, input, tool_use_id)` for each client `tool_use` block (server
tools, `server_tool_use`, already ran upstream: nothing to stop) and, when `replace` is on
(enforce mode), put a text block saying what was stopped and why in the place of a call that is
not allowed, at the same index. The stop reason becomes `end_turn` when the answer asked for
tools (`tool_use`) and none that was allowed remains, so the client ends its turn instead of
waiting for tool results. Everything else is left as it came:

* Whole answers: the original bytes when nothing was replaced; otherwise the parsed message,
  changed only in the replaced blocks and the stop reason, serialised again (every other block,
  thinking and its signature included, has the same JSON value as before).
* Streams: events pass one by one as they complete, bytes unchanged, with no parsing beyond a
  substring test for text and thinking deltas. Only a `tool_use` block is held, from its
  `content_block_start` to its `content_block_stop`, then released exactly as it came or
  replaced by three events of a text block at the same index; a `message_delta` is serialised
  again only when its stop reason changes. With `replace` off (nudge) nothing is held: the calls
  are only judged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .calls import CallRecord, Decide, SseSplitter, parse_input
from .texts import replacement_text

__all__ = ["SseEnforcer", "rewrite_message"]


def rewrite_message(body: bytes, decide: Decide, *, replace: bool) -> tuple[bytes | None, list[CallRecord]]:
    """The answer with stopped calls replaced (None: unchanged, send the original bytes) and a
    record per client tool call."""
    if b'"tool_use"' not in body:
        return None, []
    try:
        message = json.loads(body)
    except ValueError:
        return None, []
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return None, []
    records: list[CallRecord] = []
    allowed = 0
    for index, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "tool_use":
            continue
        name, tool_input = str(block.get("name", "")), block.get("input")
        tool_use_id = str(block.get("id", ""))
        verdict = decide(name, tool_input, tool_use_id)
        stop = replace and verdict.decision != "allow"
        records.append(CallRecord(index, tool_use_id, name, verdict, stop))
        if stop:
            content[index] = {"type": "text", "text": replacement_text(name, tool_input, verdict)}
        else:
            allowed += 1
    if not any(record.replaced for record in records):
        return None, records
    if allowed == 0 and message.get("stop_reason") == "tool_use":
        message["stop_reason"] = "end_turn"
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode(), records


_LINE = re.compile(rb"\r\n|\r|\n")
#: Events passed on without a look at their data while no tool_use block is held.
_PASS = frozenset({b"content_block_delta", b"ping", b"message_start", b"message_stop", b"error"})


def _name(raw: bytes) -> bytes | None:
    """The event's name when its first line names it (as the Messages API always does), else None."""
    if not raw.startswith(b"event:"):
        return None
    end = raw.find(b"\n")
    return raw[6:end].strip()


def _fields(raw: bytes) -> tuple[bytes, bytes]:
    """(event name, data) of one event's bytes, as the SDK's decoder reads them."""
    name = b""
    data: list[bytes] = []
    for line in _LINE.split(raw):
        if line.startswith(b"event:"):
            name = line[6:].removeprefix(b" ")
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
    return name, b"\n".join(data)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return (b"event: " + name.encode() + b"\ndata: "
            + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")


class SseEnforcer:
    """A Messages stream in, the stream the client gets out (see the module docstring)."""

    def __init__(self, decide: Decide, *, replace: bool) -> None:
        self._decide = decide
        self._replace = replace
        self._events = SseSplitter()
        #: The tool_use block being read: its index, id, name and input fragments.
        self._block: tuple[int, str, str] | None = None
        self._fragments: list[str] = []
        self._held: list[bytes] = []
        #: Where in `_held` the events are that are not the held block's own.
        self._foreign: list[int] = []
        self._allowed = 0
        self._stopped = 0
        self.records: list[CallRecord] = []

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send now for `chunk` (whole events only; b"" while an event is incomplete
        or a tool call is held)."""
        out: list[bytes] = []
        for raw in self._events.feed(chunk):
            self._event(raw, out)
        return out[0] if len(out) == 1 else b"".join(out)

    def release(self) -> bytes:
        """Everything held, as it came (a held tool call, an unfinished event); judging stops."""
        held = b"".join(self._held) + self._events.rest()
        self._held, self._block = [], None
        return held

    def end(self) -> bytes:
        """What is left when the stream ends: an unfinished event, a tool call never closed
        (judged on the input it has)."""
        out: list[bytes] = []
        if self._block is not None:
            self._close_block(out)
        out.append(self._events.rest())
        return b"".join(out)

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        if self._block is None:
            # The common case: a named event that cannot start or end a held call; sent as it is.
            name = _fields(raw)[0] if self._events.uses_cr else _name(raw)
            if name in _PASS or (name == b"content_block_start" and b'"tool_use"' not in raw) or (
                    name == b"message_delta" and not (self._stopped and self._allowed == 0)):
                out.append(raw)
                return
        data = self._data(raw)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        event: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        kind = event.get("type")
        if self._block is not None:
            if self._replace:
                if event.get("index") != self._block[0] or not str(kind).startswith("content_block_"):
                    self._foreign.append(len(self._held))
                self._held.append(raw)
            else:
                out.append(raw)
            if kind == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "input_json_delta":
                    self._fragments.append(str(delta.get("partial_json", "")))
            elif kind == "content_block_stop" and event.get("index") == self._block[0]:
                self._close_block(out)
            return
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = event.get("index", 0)
                self._block = (index if isinstance(index, int) else -1, str(block.get("id", "")),
                               str(block.get("name", "")))
                self._fragments = []
                if self._replace:
                    self._held, self._foreign = [raw], []
                    return
        elif kind == "message_delta" and self._stopped and self._allowed == 0:
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") == "tool_use":
                delta["stop_reason"] = "end_turn"
                out.append(_event("message_delta", event))
                return
        out.append(raw)

    def _data(self, raw: bytes) -> bytes:
        # The Messages API's layout, `event: name\ndata: {...}\n\n`, read without splitting lines.
        if not self._events.uses_cr and raw.startswith(b"event:"):
            start = raw.find(b"\ndata: ")
            if start > 0 and raw.find(b"\n", start + 7) == len(raw) - 2:
                return raw[start + 7:-2]
        return _fields(raw)[1]

    def _close_block(self, out: list[bytes]) -> None:
        assert self._block is not None
        index, tool_use_id, name = self._block
        tool_input = parse_input("".join(self._fragments))
        verdict = self._decide(name, tool_input, tool_use_id)
        stop = self._replace and verdict.decision != "allow"
        self.records.append(CallRecord(index, tool_use_id, name, verdict, stop))
        self._block = None
        self._fragments = []
        held, self._held = self._held, []
        foreign, self._foreign = self._foreign, []
        if not stop:
            self._allowed += 1
            out.extend(held)
            return
        self._stopped += 1
        text = replacement_text(name, tool_input, verdict)
        out.append(_event("content_block_start", {"type": "content_block_start", "index": index,
                                                  "content_block": {"type": "text", "text": ""}}))
        out.append(_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": "text_delta", "text": text}}))
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        # Events held with the call that are not its own (a ping, an error mid-call) follow it.
        out.extend(held[position] for position in foreign)
