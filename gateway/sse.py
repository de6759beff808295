"""Server-sent events of the Messages API, turned back into the final message.

`MessageAccumulator` is fed the raw bytes of a stream (in any chunking) and rebuilds the
message exactly as the official Python SDK does (`anthropic.lib.streaming._messages.
accumulate_event`, driven by `MessageStream.get_final_message()`), so what the observer sees
is what the agent saw. The SSE line rules are those of the SDK's `SSEDecoder`: lines end at
CR, LF or CRLF, an empty line dispatches, `:` starts a comment, one space after the colon is
dropped, several `data:` lines are joined with LF. Events are filtered by their *name* the
way the SDK filters them (no name or `ping`: skipped; `error`: the stream's error), and
applied by the `type` in their data.

Tool input differs in one way that does not change the result: the SDK re-parses the
`input_json_delta` buffer after every fragment; we parse it once, when the stream ends,
with the same parser (jiter, partial mode), which yields the value of the last re-parse.

The work is linear in the stream's size, whatever its chunking: text, thinking and tool-input
fragments are collected in lists and joined once at `close()` (a million one-character deltas
cost a million appends, not a million copies of a growing string), and a line split over many
chunks is joined once. With a `limit`, content beyond `limit` bytes of fragments is left out
(`truncated`), while the events that end the message (stop reason, usage) are still applied.
"""

from __future__ import annotations

import json
from typing import Any

from jiter import from_json

__all__ = ["MessageAccumulator"]

_TRACKS_TOOL_INPUT = frozenset({"tool_use", "server_tool_use"})
_OPTIONAL_USAGE = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
    "output_tokens_details",
)


class MessageAccumulator:
    """Incremental SSE decoder plus the SDK's message reducer, over dicts."""

    __slots__ = (
        "_content_bytes",
        "_data",
        "_event",
        "_has_fields",
        "_json_bufs",
        "_limit",
        "_open_blocks",
        "_parts",
        "_pending",
        "_skip_lf",
        "error_data",
        "event_count",
        "message",
        "problems",
        "saw_message_stop",
        "truncated",
    )

    def __init__(self, limit: int | None = None) -> None:
        self._pending: list[bytes] = []
        self._skip_lf = False
        self._event: str | None = None
        self._data: list[str] = []
        self._has_fields = False
        #: The message being rebuilt; None until `message_start`.
        self.message: dict[str, Any] | None = None
        #: Every dispatched event, pings and unknown ones included.
        self.event_count = 0
        #: The data of the first `error` event, verbatim.
        self.error_data: bytes | None = None
        self.saw_message_stop = False
        self._json_bufs: dict[int, list[bytes]] = {}
        #: (block, field) -> the text fragments of that field, joined at close().
        self._parts: dict[tuple[int, str], tuple[dict[str, Any], list[str]]] = {}
        self._open_blocks: set[int] = set()
        self._limit = limit
        self._content_bytes = 0
        #: True when fragments beyond `limit` were left out.
        self.truncated = False
        #: Events the SDK would have failed on (bad JSON, out-of-order), described.
        self.problems: list[str] = []

    # ------------------------------------------------------------------ decoding

    def feed(self, data: bytes) -> None:
        """Decodes as many complete lines of `data` as there are; keeps the rest."""
        if self._skip_lf:
            # The previous chunk ended with CR: an LF here completes that CRLF, not a new line.
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if cut == 0:
            if data:
                self._pending.append(data)
            return
        head = data[:cut]
        if self._pending:
            self._pending.append(head)
            head = b"".join(self._pending)
            self._pending = []
        if cut < len(data):
            self._pending.append(data[cut:])
        if head[-1] == 0x0D:
            self._skip_lf = True
        for raw_line in head.splitlines():
            self._line(raw_line.decode("utf-8", "replace"))

    def close(self) -> None:
        """End of stream: a line without its newline still counts; an unterminated event does not
        (the SDK drops it too)."""
        if self._pending:
            pending, self._pending = b"".join(self._pending), []
            for raw_line in pending.splitlines():
                self._line(raw_line.decode("utf-8", "replace"))
        self._join_parts()
        self._finish_tool_inputs()

    def _line(self, line: str) -> None:
        if not line:
            if self._has_fields:
                self._dispatch(self._event, "\n".join(self._data))
            self._event = None
            self._data = []
            self._has_fields = False
            return
        if line[0] == ":":
            return
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "event":
            self._event = value
            self._has_fields = True
        elif name == "data":
            self._data.append(value)
            self._has_fields = True
        elif name in ("id", "retry"):
            # The SDK dispatches an event that carried only an id or retry, with no name: skipped.
            self._has_fields = True

    # ------------------------------------------------------------------ reducing

    def _dispatch(self, name: str | None, data: str) -> None:
        self.event_count += 1
        if name is None or name == "ping":
            return
        if name == "error":
            if self.error_data is None:
                self.error_data = data.encode("utf-8")
            return
        if not data:
            return
        try:
            event = json.loads(data)
        except ValueError:
            self.problems.append(f"event {name!r} with data that is not JSON")
            return
        if type(event) is not dict:
            return
        try:
            self._apply(event)
        except (LookupError, TypeError, AttributeError, ValueError) as error:
            self.problems.append(f"event {event.get('type')!r} not applicable: {error!r}")

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        message = self.message
        if message is None:
            if kind == "message_start":
                self.message = dict(event["message"])
                self.message["content"] = list(self.message.get("content") or [])
            else:
                self.problems.append(f"{kind!r} before message_start")
            return
        if kind == "content_block_start":
            index = len(message["content"])
            message["content"].append(dict(event["content_block"]))
            self._open_blocks.add(event.get("index", index))
        elif kind == "content_block_delta":
            index = event["index"]
            block = message["content"][index]
            delta = event["delta"]
            delta_type = delta.get("type")
            block_type = block.get("type")
            if delta_type == "text_delta":
                if block_type == "text":
                    self._append(index, block, "text", delta["text"])
            elif delta_type == "input_json_delta":
                if block_type in _TRACKS_TOOL_INPUT:
                    fragment = delta["partial_json"].encode()
                    if self._within_limit(len(fragment)):
                        self._json_bufs.setdefault(index, []).append(fragment)
            elif delta_type == "citations_delta":
                if block_type == "text":
                    if not block.get("citations"):
                        block["citations"] = [delta["citation"]]
                    else:
                        block["citations"].append(delta["citation"])
            elif delta_type == "thinking_delta":
                if block_type == "thinking":
                    self._append(index, block, "thinking", delta["thinking"])
            elif delta_type == "signature_delta" and block_type == "thinking":
                block["signature"] = delta["signature"]
        elif kind == "content_block_stop":
            self._open_blocks.discard(event.get("index"))
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            message["stop_reason"] = delta.get("stop_reason")
            message["stop_sequence"] = delta.get("stop_sequence")
            message["stop_details"] = delta.get("stop_details")
            if delta.get("container") is not None:
                message["container"] = delta["container"]
            usage = event.get("usage")
            if usage is not None:
                target = message.get("usage")
                if target is None:
                    target = message["usage"] = {}
                target["output_tokens"] = usage.get("output_tokens")
                for key in _OPTIONAL_USAGE:
                    value = usage.get(key)
                    if value is not None:
                        target[key] = value
        elif kind == "message_stop":
            self.saw_message_stop = True

    def _within_limit(self, size: int) -> bool:
        if self._limit is None:
            return True
        if self.truncated or self._content_bytes + size > self._limit:
            self.truncated = True
            return False
        self._content_bytes += size
        return True

    def _append(self, index: int, block: dict[str, Any], field: str, fragment: str) -> None:
        if not self._within_limit(len(fragment)):
            return
        entry = self._parts.get((index, field))
        if entry is None or entry[0] is not block:
            if entry is not None:  # the block at this index was replaced: settle the old one
                entry[0][field] = "".join(entry[1])
            entry = self._parts[(index, field)] = (block, [block.get(field, "")])
        entry[1].append(fragment)

    def _join_parts(self) -> None:
        for (_index, field), (block, parts) in self._parts.items():
            block[field] = "".join(parts)
        self._parts = {}

    def _finish_tool_inputs(self) -> None:
        if self.message is None:
            return
        content = self.message["content"]
        for index, parts in self._json_bufs.items():
            buf = b"".join(parts)
            if not buf:
                continue
            try:
                content[index]["input"] = from_json(buf, partial_mode=True)
            except ValueError as error:
                self.problems.append(f"tool input of block {index} is not JSON: {error}")
        self._json_bufs = {}

    # ------------------------------------------------------------------ results

    @property
    def ended_cleanly(self) -> bool:
        """True when the message is whole: `message_stop` seen, or (as Claude Code judges a
        stream without one) a stop reason arrived and no block is left open."""
        if self.saw_message_stop:
            return True
        message = self.message
        return message is not None and message.get("stop_reason") is not None and not self._open_blocks

    def final_message_json(self) -> bytes:
        """The rebuilt message as compact JSON, or b"" when the stream had no message_start."""
        if self.message is None:
            return b""
        return json.dumps(self.message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
