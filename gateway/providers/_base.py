"""What every provider's stream reassembler shares: line splitting, the byte limit, the result.

A reassembler is fed the raw (decoded) bytes of a streamed reply in any chunking and, at
`close()`, gives the final object as JSON bytes: the object the provider's official SDK
accumulates from the same bytes. The work is linear in the stream's size whatever the
chunking: a line split over many chunks is joined once, and text fragments are collected in
lists and joined once at the end.

With a `limit`, at most `limit` bytes of text fragments are kept (`truncated` says some were
left out) while the events that end the reply (finish reason, status, usage) are still
applied; whole objects that arrive in one event (a completed item, a final response) are cut
to the same budget at `close()`, so the result stays near `limit` bytes.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

__all__ = ["Budget", "LineSplitter", "Reassembler", "SseEvents", "compact_json", "fit"]


class LineSplitter:
    """Splits bytes into lines at CR, LF or CRLF only (not at U+2028 and kin, which may sit
    unescaped inside JSON strings), as the SDKs' SSE line decoders do."""

    __slots__ = ("_pending", "_skip_lf")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._skip_lf = False

    def feed(self, data: bytes) -> list[str]:
        if self._skip_lf:
            # The previous chunk ended with CR: an LF here completes that CRLF, not a new line.
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if cut == 0:
            if data:
                self._pending.append(data)
            return []
        head = data[:cut]
        if self._pending:
            self._pending.append(head)
            head = b"".join(self._pending)
            self._pending = []
        if cut < len(data):
            self._pending.append(data[cut:])
        if head[-1] == 0x0D:
            self._skip_lf = True
        return [line.decode("utf-8", "replace") for line in head.splitlines()]

    def finish(self) -> list[str]:
        """The last line, when the stream ended without its newline."""
        if not self._pending:
            return []
        pending, self._pending = b"".join(self._pending), []
        return [line.decode("utf-8", "replace") for line in pending.splitlines()]


class Budget:
    """How many bytes of text fragments may still be kept."""

    __slots__ = ("limit", "truncated", "used")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        #: True once something was left out.
        self.truncated = False

    def take(self, size: int) -> bool:
        if self.limit is None:
            return True
        if self.truncated or self.used + size > self.limit:
            self.truncated = True
            return False
        self.used += size
        return True


def fit(value: Any, limit: int | None) -> tuple[Any, bool]:
    """`value` with its longest strings cut to one common length, so that its strings add up to at
    most `limit` characters; and whether anything was cut. Short strings (ids, finish reasons,
    model names) are kept whole as long as the long ones (text, arguments) can give way; keys,
    numbers and structure are always kept."""
    if limit is None:
        return value, False
    sizes: list[int] = []

    def measure(node: Any) -> None:
        if isinstance(node, str):
            sizes.append(len(node))
        elif isinstance(node, dict):
            for item in node.values():
                measure(item)
        elif isinstance(node, list):
            for item in node:
                measure(item)

    measure(value)
    if sum(sizes) <= limit:
        return value, False
    # The largest cap c with sum(min(size, c)) <= limit ("water-filling"), from the sizes sorted.
    sizes.sort()
    room, remaining, cap = limit, len(sizes), 0
    for size in sizes:
        share = room // remaining
        if size > share:
            cap = share
            break
        room -= size
        remaining -= 1

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return node[:cap] if len(node) > cap else node
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(value), True


def compact_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Reassembler:
    """The interface every provider module implements (and the plumbing they share).

    `feed(bytes)` in any chunking; `close()` ends the stream and returns the final object as
    JSON bytes (b"" when the stream carried none); after that `final_json()` returns it again.
    """

    #: Which wire format this is ("anthropic", "openai_chat", "openai_responses", "gemini").
    kind = ""
    #: What ends a reply cleanly in this wire format, as a record's detail names it
    #: ("stream ended before message_stop").
    end_of_reply = "its end"

    def __init__(self, limit: int | None = None) -> None:
        self._lines = LineSplitter()
        self._budget = Budget(limit)
        self._limit = limit
        self._final: bytes | None = None
        #: Every dispatched event (or JSON segment), keep-alives and unknown ones included.
        self.event_count = 0
        #: The stream's error event, verbatim (its data), if it carried one.
        self.error_data: bytes | None = None
        #: Events the SDK would have failed on (bad JSON, out of order), described.
        self.problems: list[str] = []
        self._truncated_at_close = False

    # The feeding side ------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Decodes as many complete lines of `data` as there are; keeps the rest."""
        for line in self._lines.feed(data):
            self._line(line)

    def close(self) -> bytes:
        """End of stream: a last line without its newline still counts. Idempotent."""
        if self._final is None:
            for line in self._lines.finish():
                self._line(line)
            self._end_of_stream()
            final = self._result()
            if final is None:
                self._final = b""
            else:
                final, cut = fit(final, self._limit)
                self._truncated_at_close = cut
                self._final = compact_json(final)
        return self._final

    def final_json(self) -> bytes:
        return self.close()

    @property
    def truncated(self) -> bool:
        """True when content beyond `limit` bytes was left out."""
        return self._budget.truncated or self._truncated_at_close

    @property
    def ended_cleanly(self) -> bool:
        """True when the stream carried the provider's own end of the reply."""
        raise NotImplementedError

    # What each provider implements -------------------------------------------------------

    def _line(self, line: str) -> None:
        raise NotImplementedError

    def _end_of_stream(self) -> None:
        """Flushes what the line rules keep until the end (an unterminated segment...)."""

    def _result(self) -> Any:
        """The final object as plain JSON values, or None."""
        raise NotImplementedError


class SseEvents:
    """The WHATWG field rules as openai-python's `SSEDecoder` applies them: `:` starts a comment,
    one space after the colon is dropped, `data:` lines join with LF, an empty line dispatches
    an event when any of event/data/id/retry was seen (the id is never reset, as the spec says)."""

    __slots__ = ("_data", "_event", "_id", "_retry")

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None

    def line(self, line: str) -> tuple[str | None, str] | None:
        """(event name, data) when `line` completes an event."""
        if not line:
            if not self._event and not self._data and not self._id and self._retry is None:
                return None
            event = (self._event or None, "\n".join(self._data))
            self._event, self._data, self._retry = None, [], None
            return event
        if line[0] == ":":
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            with contextlib.suppress(ValueError):
                self._retry = int(value)
        return None
