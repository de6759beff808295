"""A session's last request, kept so that the next one is not parsed whole again.

A client resends its whole history at every call, and most of it byte for byte: the messages the
last call sent (the elements of its history array: `messages`, Responses' `input`, Gemini's
`contents`; "messages" below) come back at the same offsets, with only the last one or two
changed (Claude Code moves its `cache_control` markers) and the new ones appended.
`RequestMemo.load(body)` gives what `json.loads(body)` gives, but the messages whose bytes, and
every byte before them, are those of the last request are the last request's objects, not parsed
again: the same objects, which the session's other memos (`DigestMemo`) then find by identity
instead of comparing their content, and the messages a reader made of them (`read_as`,
`resent`): those whose elements were all resent as they were.

Exact by construction: the top level is read with the standard decoder's own scanner
(`json.scanner`, the same C code `json.loads` runs), the message elements not reused too, and a
message is reused only when the bytes up to its end equal the last request's (a prefix that is
the same text parses the same way). The bytes are compared in place, and of a UTF-8 body only
what stands before the `messages` array and after the reused messages is decoded and read: the
reused messages' text is neither copied nor decoded again. Anything this reader does not expect
(not an object, a `messages` key twice, a decoding error) is handed to `json.loads` whole, whose
answer is the answer. The reused objects are shared with the last call's: nothing that reads them may change
them (the readers build new values, never edit the request).
"""

from __future__ import annotations

import json
import json.decoder
from bisect import bisect_right
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
        #: The last request's body, where its `messages` array opens and the end of each element
        #: (byte offsets); -1: the next body is read whole.
        self._body = b""
        self._array_at = -1
        self._ends: list[int] = []
        self._messages: list[Any] = []
        #: Messages of the last `load` that were the previous request's objects.
        self.reused = 0
        #: What the last `load` returned.
        self.body: Any = None
        #: The key of the history array (`messages`, Responses' `input`, Gemini's `contents`).
        self._key = "messages"
        # The messages a reader made of a request (`read_as`), and which request; for each, how
        # many of the array's elements a later request must resend as they were for it to be read
        # the same, and what the reader keeps of it to resume after it.
        self._read: list[Any] = []
        self._read_of: Any = None
        self._needs: list[int] = []
        self._marks: list[Any] = []
        #: Which reader made them (a session whose calls switch API must not take another's).
        self._read_by = ""

    @property
    def size(self) -> int:
        """Bytes held (the last request's body; its parsed messages are shared with the session's
        `DigestMemo`)."""
        return len(self._body)

    def load(self, body: bytes, key: str = "messages") -> Any:
        """`load_json(body)`, reusing the last request's elements of its `key` array (the history)
        where its bytes are the same."""
        read = self._read if self._read_of is not None and self._read_of is self.body else []
        needs, marks = self._needs, self._marks
        self.reused, self._read, self._read_of, self._needs, self._marks = 0, [], None, [], []
        if key != self._key:
            self._forget()
            self._key = key
        if not body:
            self._forget()
            self.body = None
            return None
        try:
            self.body = self._load(body)
        except (_NotPlain, ValueError, RecursionError, StopIteration, IndexError):
            self._forget()
            self.body = load_json(body)
        # The messages whose elements were all resent as they were (`needs` grow with the index).
        kept = bisect_right(needs, self.reused) if len(needs) == len(read) else min(self.reused, len(read))
        self._read, self._needs, self._marks = read[:kept], needs[:kept], marks[:kept]
        return self.body

    def resent(self, body: Any, by: str = "") -> list[Any]:
        """The messages a reader made of the last request (`read_as`) that `body`, what the last
        `load` returned, resends as they were (the same objects at the same places): its first
        ones. Empty for any other body."""
        if by != self._read_by:
            return []
        return list(self._read) if body is self.body and body is not None else []

    def resent_marks(self, body: Any, by: str = "") -> list[Any]:
        """What the reader kept of each of the messages `resent` gives (`read_as(marks=...)`)."""
        return list(self._marks) if self.resent(body, by) else []

    def read_as(self, body: Any, messages: list[Any], by: str = "", needs: list[int] | None = None,
                marks: list[Any] | None = None) -> None:
        """What a reader made of the history array of `body` (what the last `load` returned).
        `needs[i]`: how many of the array's first elements a request must resend as they were for
        message i to be read the same (by default i + 1: one element a message); `marks[i]`: what
        the reader keeps of message i to resume reading after it."""
        if body is self.body:
            self._read, self._read_of, self._read_by = messages, body, by
            self._needs = needs if needs is not None else list(range(1, len(messages) + 1))
            self._marks = marks if marks is not None else [None] * len(messages)

    def _forget(self) -> None:
        self._body, self._array_at, self._ends, self._messages = b"", -1, [], []
        self.reused = 0

    def _load(self, body: bytes) -> dict[str, Any]:
        encoding = json.detect_encoding(body)
        kept = self._kept(body) if encoding == "utf-8" else 0
        if kept:
            # The text before the array and after the kept messages, joined: the array's `[` is
            # followed by what followed message `kept - 1` (a `,` or its `]`).
            head = body[:self._array_at + 1].decode("utf-8", "surrogatepass")
            start = self._ends[kept - 1]
            text = head + body[start:].decode("utf-8", "surrogatepass")
            found, array = self._parse(text, kept)
            if array is None or array[0] != len(head) - 1:
                raise _NotPlain  # the same bytes before the array read the same way: never here
            self._remember(body, array, len(head) - 1, (self._array_at, start), text)
        else:
            text = body.decode(encoding, "surrogatepass")
            found, array = self._parse(text, 0)
            if encoding != "utf-8":
                array = None  # offsets of another encoding: the next body is read whole
            self._remember(body, array, array[0] if array else 0, (0, 0), text)
        return found

    def _remember(self, body: bytes, array: tuple[int, list[int], list[Any]] | None, text_at: int,
                  byte_at: tuple[int, int], text: str) -> None:
        """Keeps the body and the byte offsets of its array and messages. `array`: where the array
        opens in `text`, its elements' end offsets in `text` and the elements. With elements kept,
        the text right after the array's `[` (`text_at`) stands at byte `byte_at[1]` of the body
        and the array opens at byte `byte_at[0]`; without, `text` is the whole body's text."""
        if array is None:
            self._forget()
            return
        at, ends, messages = array
        kept = self.reused
        if kept:
            byte_ends, array_at = self._ends[:kept], byte_at[0]
            text_from, byte_from = text_at + 1, byte_at[1]
        elif body.isascii():  # one byte per character: the offsets are the text's
            self._body, self._array_at, self._ends, self._messages = body, at, ends, messages
            return
        else:
            byte_ends, array_at = [], len(text[:at].encode("utf-8", "surrogatepass"))
            text_from, byte_from = at, array_at
        for end in ends[kept:]:
            byte_from += len(text[text_from:end].encode("utf-8", "surrogatepass"))
            text_from = end
            byte_ends.append(byte_from)
        self._body, self._array_at, self._ends, self._messages = body, array_at, byte_ends, messages

    def _parse(self, text: str, kept: int) -> tuple[dict[str, Any], tuple[int, list[int], list[Any]] | None]:
        """The top-level object, as `json.decoder.JSONObject` reads it (strict, no hooks), and its
        `messages` array (where it opens, its elements' end offsets, the elements). `kept`: the
        array's first elements are the last request's, and in `text` its `[` is directly followed
        by what followed them."""
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
            if key == self._key:
                if array is not None:
                    raise _NotPlain  # twice: the last one wins in json.loads; not worth a second path
                if text[at:at + 1] == "[":
                    ends: list[int] = []
                    value, end = self._array(text, at, ends, kept)
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
        if kept and array is None:
            raise _NotPlain
        return dict(pairs), array

    def _array(self, text: str, at: int, ends: list[int], kept: int) -> tuple[list[Any], int]:
        """The `messages` array opening at `at`, as `json.decoder.JSONArray` reads it, its first
        `kept` elements the last request's (in `text`, the `[` is followed by what followed them;
        their end offsets are left out of `ends` but counted: `ends[i]` is element i's or None)."""
        values = self._messages[:kept]
        ends.extend([at] * kept)  # placeholders: the kept elements' offsets are the last body's
        self.reused = kept
        if kept:
            at += 1
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

    def _kept(self, body: bytes) -> int:
        """How many of the last request's messages this body starts with: the largest k whose end
        offset bounds a prefix equal to the last body's (compared in place). Most often all but the
        last one or two: those are tried first, then a binary search."""
        ends = self._ends
        if self._array_at < 0 or not ends:
            return 0
        last = memoryview(self._body)

        def same(k: int) -> bool:
            end = ends[k - 1]
            return len(body) >= end and body.startswith(last[:end])

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
