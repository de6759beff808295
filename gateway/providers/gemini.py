"""Gemini `streamGenerateContent?alt=sse` streams, merged into one `GenerateContentResponse`.

google-genai has no accumulator: it yields each chunk as a `GenerateContentResponse`, and its
docs (and its chat history, which keeps every chunk's content) read the reply as the chunks
taken together: the text is the concatenation of the chunks' text parts, the thoughts that of
their thought parts, every `functionCall` part counts, and the last chunk carries the
`finishReason` and the totals of `usageMetadata` (cumulative, not per chunk). We merge them
into the object a non-streamed `generateContent` returns for the same reply:

* candidates by their `index` (position when absent); `content.parts` appended in order, a
  text part joining the part before it when both are text of the same kind (thought or not)
  and that part carries no `thoughtSignature` yet; a signature closes the part it rides on
  (thought signatures must go back to the model exactly where they came);
* parts that are not text (`functionCall`, `executableCode`, `inlineData`, ...) kept whole;
* `citationMetadata.citations` concatenated; any other field, of a candidate or of the
  response (`finishReason`, `usageMetadata`, `modelVersion`, `responseId`, `promptFeedback`,
  `safetyRatings`, `groundingMetadata`, ...), takes the last chunk's value.

The line rules are google-genai's (`_api_client._iter_response_stream`): lines end at CR, LF
or CRLF; `data: ` lines (with the space) are joined with LF and an empty line ends a segment;
other lines are buffered until their braces balance (an error body sent as plain JSON). A
segment whose first key is `error` is the stream's error (the SDK raises `APIError` there).
Without `alt=sse` the stream is a JSON array: `GeminiArrayReassembler` handles that form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from smoltbot.core.identity import gemini_credential

from ._base import Reassembler
from .spec import GatewayError, ProviderSpec

__all__ = ["SPEC", "GeminiArrayReassembler", "GeminiReassembler"]

_TEXT_KEYS = frozenset({"text", "thought", "thoughtSignature"})


class _Braces:
    """google-genai's `_RawJsonLineBuffer`: lines until the braces balance outside strings."""

    __slots__ = ("depth", "escaped", "in_string", "lines")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def add(self, line: str) -> str | None:
        for c in line:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif c == "\\":
                    self.escaped = True
                elif c == '"':
                    self.in_string = False
            elif c == '"':
                self.in_string = True
            elif c == "{":
                self.depth += 1
            elif c == "}":
                self.depth -= 1
        self.lines.append(line)
        return self.flush() if self.depth == 0 else None

    def flush(self) -> str:
        chunk = "".join(self.lines)
        self.lines, self.depth, self.in_string, self.escaped = [], 0, False, False
        return chunk


class _Merge:
    """The response being merged; text parts hold lists of fragments until the end."""

    def __init__(self, budget_take: Any) -> None:
        self.response: dict[str, Any] = {}
        self.candidates: dict[int, dict[str, Any]] = {}
        self._take = budget_take
        self._texts: list[tuple[dict[str, Any], list[str]]] = []
        self._open: dict[int, tuple[dict[str, Any], list[str]] | None] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        for key, value in chunk.items():
            if key != "candidates":
                self.response[key] = value
        for position, candidate in enumerate(chunk.get("candidates") or []):
            if not isinstance(candidate, dict):
                continue
            index = candidate.get("index", position)
            target = self.candidates.get(index)
            if target is None:
                target = self.candidates[index] = {}
                self._open[index] = None
            for key, value in candidate.items():
                if key == "content" and isinstance(value, dict):
                    self._add_content(index, target, value)
                elif key == "citationMetadata" and isinstance(value, dict) and "citationMetadata" in target:
                    citations = target["citationMetadata"].setdefault("citations", [])
                    citations.extend(value.get("citations") or [])
                else:
                    target[key] = value

    def _add_content(self, index: int, target: dict[str, Any], content: dict[str, Any]) -> None:
        held = target.get("content")
        if held is None:
            held = target["content"] = {key: value for key, value in content.items() if key != "parts"}
            held["parts"] = []
        else:
            for key, value in content.items():
                if key != "parts":
                    held[key] = value
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if not isinstance(text, str) or not set(part) <= _TEXT_KEYS:
                self._open[index] = None
                held["parts"].append(part)
                continue
            if not self._take(len(text)):
                text = ""
            thought = bool(part.get("thought"))
            current = self._open.get(index)
            if current is not None and bool(current[0].get("thought")) == thought:
                current[1].append(text)
                if "thoughtSignature" in part:
                    current[0]["thoughtSignature"] = part["thoughtSignature"]
            else:
                new_part = dict(part)
                current = (new_part, [text])
                self._texts.append(current)
                held["parts"].append(new_part)
            self._open[index] = None if "thoughtSignature" in part else current

    def result(self) -> dict[str, Any]:
        for part, fragments in self._texts:
            part["text"] = "".join(fragments)
        self._texts = []
        response = dict(self.response)
        if self.candidates:
            response = {"candidates": [self.candidates[i] for i in sorted(self.candidates)], **response}
        return response


class GeminiReassembler(Reassembler):
    kind = "gemini"
    end_of_reply = "a finishReason"

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(limit)
        self._data: list[str] = []
        self._braces = _Braces()
        self._merge = _Merge(self._budget.take)
        self._chunks = 0
        self._failed = False

    @property
    def finish_reason(self) -> str:
        for candidate in self._merge.candidates.values():
            if isinstance(candidate.get("finishReason"), str):
                return str(candidate["finishReason"])
        return ""

    def _line(self, line: str) -> None:
        if not line:
            if self._data:
                segment, self._data = "\n".join(self._data), []
                self._segment(segment)
            return
        if line.startswith("data: "):
            self._data.append(line[6:])
            return
        chunk = self._braces.add(line)
        if chunk is not None:
            self._segment(chunk)

    def _end_of_stream(self) -> None:
        remaining = self._braces.flush()
        if remaining:
            self._segment(remaining)
        if self._data:
            segment, self._data = "\n".join(self._data), []
            self._segment(segment)

    def _segment(self, text: str) -> None:
        self.event_count += 1
        if self._failed:
            return
        try:
            chunk = json.loads(text)
        except ValueError:
            self.problems.append("a segment that is not JSON")
            return
        if not isinstance(chunk, dict):
            return
        if next(iter(chunk), None) == "error":
            self.error_data = text.encode("utf-8")
            self._failed = True
            return
        self._chunks += 1
        self._merge.add(chunk)

    @property
    def ended_cleanly(self) -> bool:
        """No error, and every candidate got its `finishReason` (Gemini's end of a reply)."""
        candidates = self._merge.candidates
        return (
            not self._failed and bool(candidates) and all(c.get("finishReason") for c in candidates.values())
        )

    def _result(self) -> Any:
        return self._merge.result() if self._chunks else None


class GeminiArrayReassembler(GeminiReassembler):
    """`streamGenerateContent` without `alt=sse`: one JSON array whose elements are the chunks.

    Elements are cut out as their braces balance (strings respected), so each chunk is merged
    when it is complete; the brackets and commas between them are skipped.
    """

    kind = "gemini_array"

    def _line(self, line: str) -> None:
        # Array mode ignores line structure: braces are counted across lines.
        if self._braces.depth == 0 and not self._braces.lines:
            line = line.lstrip(" \t[,]")
            if not line:
                return
        chunk = self._braces.add(line)
        if chunk is not None:
            chunk = chunk.rstrip(" \t,]")
            if chunk:
                self._segment(chunk)


_ERROR_STATUSES = {
    GatewayError.INVALID_REQUEST: "INVALID_ARGUMENT",
    GatewayError.AUTHENTICATION: "UNAUTHENTICATED",
    GatewayError.NOT_FOUND: "NOT_FOUND",
    GatewayError.TOO_LARGE: "INVALID_ARGUMENT",
    GatewayError.UPSTREAM: "UNAVAILABLE",
    GatewayError.TIMEOUT: "DEADLINE_EXCEEDED",
}


def _error_shape(status: int, error: GatewayError, message: str) -> dict[str, Any]:
    """Google's error body (google-genai raises ClientError/ServerError from it)."""
    return {"error": {"code": status, "message": message, "status": _ERROR_STATUSES[error]}}


def _credential(headers: Mapping[str, str], query: str) -> str | None:
    return gemini_credential(headers, query)


def _stream_format(query: str) -> str:
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        if name == "alt":
            return value
    return ""


def _reassembler(path: str, query: str, limit: int | None) -> Reassembler | None:
    if not path.endswith(":streamGenerateContent"):
        return None
    return GeminiReassembler(limit) if _stream_format(query) == "sse" else GeminiArrayReassembler(limit)


def _streams_as_json(path: str, query: str) -> bool:
    """`streamGenerateContent` without `alt=sse` streams one JSON array (application/json)."""
    return path.endswith(":streamGenerateContent") and _stream_format(query) != "sse"


SPEC = ProviderSpec(
    name="gemini",
    prefix="/gemini",
    upstream_setting="gemini_upstream_url",
    credential=_credential,
    missing_credential="No API key: send your Gemini API key in the x-goog-api-key header "
    "(or as the key query parameter).",
    error_shape=_error_shape,
    base_url_hint="google-genai: http_options base_url http://<gateway>/gemini",
    reassembler=_reassembler,
    streams_as_json=_streams_as_json,
)
