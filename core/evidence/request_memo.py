"""A session's last request, kept so that the next one is not parsed whole again.

A client resends its whole history at every call, and most of it byte for byte: the messages the
last call sent come back at the same offsets, with only the last one or two changed (Claude Code
moves its `cache_control` markers) and the new ones appended. `RequestMemo.load(body)` gives what
`json.loads(body)` gives, but the messages whose bytes, and every byte before them, are those of
the last request are the last request's objects, not parsed again: the same objects, which the
session's other memos (`DigestMemo`) then find by identity instead of comparing their content.

Exact by construction: the top level is read with the standard decoder's own scanner
(`json.scanner`, the same C code `json.loads` runs), the message elements not reused too, and a
message is reused only when the text up to its end equals the last request's (a prefix that is
the same text parses the same way). Anything this reader does not expect (not an object, a
`messages` key twice, a decoding error) is handed to `json.loads` whole, whose answer is the
answer. The reused objects are shared with the last call's: nothing that reads them may change
them (the readers build new values, never edit the request).
"""

from __future__ import annotations

import json
import json.decoder
from collections.abc import Callable
from typing import Any

__all__ = ["RequestMemo", "load_json"]

# The scanner `json.loads` itself runs (its C version), and the decoder's helpers; typeshed does
# not describe these internals, hence the `Any`.
_DECODER: Any = json.JSONDecoder()
_DECODING: Any = json.decoder
_scan_once: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once
_scanstring: Callable[[str, int, bool], tuple[str, int]] = _DECODING.scanstring
_space: Callable[[str, int], Any] = _DECODING.WHITESPACE.match


def load_json(body: bytes) -> Any:
    """`json.loads(body)`, None for a body that is empty or not JSON."""
    try:
        return json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None


class _NotPlain(Exception):
    """The text is not the shape this reader handles: `json.loads` reads it."""


class RequestMemo:
    def __init__(self) -> None:
        self._text = ""
        #: Where the last request's `messages` array opens, and the end offset of each element.
        self._array_at = -1
        self._ends: list[int] = []
        self._messages: list[Any] = []
        #: Messages of the last `load` that were the previous request's objects.
        self.reused = 0
        #: What the last `load` returned.
        self.body: Any = None
        # The messages a reader made of a request (`read_as`), and which request.
        self._read: list[Any] = []
        self._read_of: Any = None

    @property
    def size(self) -> int:
        """Characters held (the last request's text; its parsed messages are shared with the
        session's `DigestMemo`)."""
        return len(self._text)

    def load(self, body: bytes) -> Any:
        """`load_json(body)`, reusing the last request's messages where its text is the same."""
        read = self._read if self._read_of is not None and self._read_of is self.body else []
        self.reused, self._read, self._read_of = 0, [], None
        if not body:
            self.body = None
            return None
        try:
            self.body = self._parse(body.decode(json.detect_encoding(body), "surrogatepass"))
        except (_NotPlain, ValueError, RecursionError, StopIteration, IndexError):
            self._forget()
            self.body = load_json(body)
        self._read = read[:self.reused]
        return self.body

    def resent(self, body: Any) -> list[Any]:
        """The messages a reader made of the last request (`read_as`) that `body`, what the last
        `load` returned, resends as they were (the same objects at the same places): its first
        ones. Empty for any other body."""
        return list(self._read) if body is self.body and body is not None else []

    def read_as(self, body: Any, messages: list[Any]) -> None:
        """What a reader made of the messages of `body` (what the last `load` returned)."""
        if body is self.body:
            self._read, self._read_of = messages, body

    def _forget(self) -> None:
        self._text, self._array_at, self._ends, self._messages = "", -1, [], []
        self.reused = 0

    def _parse(self, text: str) -> dict[str, Any]:
        """The top-level object, as `json.decoder.JSONObject` reads it (strict, no hooks)."""
        at = _space(text, 0).end()
        if text[at:at + 1] != "{":
            raise _NotPlain
        at = _space(text, at + 1).end()
        pairs: list[tuple[str, Any]] = []
        array: tuple[int, list[int], list[Any]] | None = None
        while True:
            if text[at:at + 1] != '"':
                raise _NotPlain
            key, at = _scanstring(text, at + 1, True)
            at = _space(text, at).end()
            if text[at:at + 1] != ":":
                raise _NotPlain
            at = _space(text, at + 1).end()
            if key == "messages":
                if array is not None:
                    raise _NotPlain  # twice: the last one wins in json.loads; not worth a second path
                if text[at:at + 1] == "[":
                    ends: list[int] = []
                    value, end = self._array(text, at, ends)
                    array = (at, ends, value)
                    at = end
                else:
                    value, at = _scan_once(text, at)
            else:
                value, at = _scan_once(text, at)
            pairs.append((key, value))
            at = _space(text, at).end()
            char = text[at:at + 1]
            if char == "}":
                break
            if char != ",":
                raise _NotPlain
            at = _space(text, at + 1).end()
        if _space(text, at + 1).end() != len(text):
            raise _NotPlain  # extra data: json.loads says so
        if array is None:
            self._forget()
        else:
            self._text, (self._array_at, self._ends, self._messages) = text, array
        return dict(pairs)

    def _array(self, text: str, at: int, ends: list[int]) -> tuple[list[Any], int]:
        """The `messages` array opening at `at`, as `json.decoder.JSONArray` reads it, its first
        elements the last request's where the text up to their end is the same."""
        kept = self._kept(text, at)
        values = self._messages[:kept]
        ends.extend(self._ends[:kept])
        self.reused = kept
        if kept:
            at = ends[-1]
        else:
            at = _space(text, at + 1).end()
            if text[at:at + 1] == "]":
                return values, at + 1
            value, at = _scan_once(text, at)
            values.append(value)
            ends.append(at)
        while True:
            at = _space(text, at).end()
            char = text[at:at + 1]
            if char == "]":
                return values, at + 1
            if char != ",":
                raise _NotPlain
            at = _space(text, at + 1).end()
            value, at = _scan_once(text, at)
            values.append(value)
            ends.append(at)

    def _kept(self, text: str, at: int) -> int:
        """How many of the last request's messages this text starts with: the largest k whose end
        offset bounds a prefix equal to the last text's (the array opening at the same offset).
        Most often all but the last one or two: those are tried first, then a binary search."""
        ends = self._ends
        if at != self._array_at or not ends:
            return 0

        def same(k: int) -> bool:
            end = ends[k - 1]
            return len(text) >= end and text.startswith(self._text[:end])

        for k in range(len(ends), max(len(ends) - 3, 0), -1):
            if same(k):
                return k
        low, high = 0, max(len(ends) - 3, 0)  # same(low) holds (0: nothing kept); same(high + 1) fails
        while low < high:
            middle = (low + high + 1) // 2
            if same(middle):
                low = middle
            else:
                high = middle - 1
        return low
