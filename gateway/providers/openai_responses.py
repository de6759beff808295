"""Responses API streams (`response.*` events), turned back into the final response.

openai-python's `ResponseStreamState` (`lib/streaming/responses/_responses.py`) takes the final
response from the `response.completed` event; when that event's response carries no `output`,
the output is the items of the `response.output_item.done` events, by output index. We do the
same, so reasoning items (summaries, `encrypted_content`), function calls, custom tool calls
and built-in tool calls (web search, shell, ...) come out exactly as the SDK's.

Beyond the SDK (which raises when there is no `response.completed`), a stream that ends
otherwise still gives its response: `response.failed` and `response.incomplete` give theirs
(output filled, when absent, the way the SDK fills these events: done items first, else the
item being built), and a stream cut short gives the `response.created` snapshot with the items
as far as they got. An item being built is the `output_item.added` item plus its deltas: text
and refusal of message parts, function-call arguments, custom tool-call input, reasoning
summary and reasoning text, each joined once at the end.

The SSE rules are those of the SDK's `SSEDecoder`; events are applied by the `type` in their
data. The stream's error is an `error` event, or data with a truthy top-level `error` (where
the SDK raises `APIError`).
"""

from __future__ import annotations

import json
from typing import Any

from ._base import Reassembler, SseEvents

__all__ = ["ResponsesReassembler"]

_LIFECYCLE = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
_BY_CALL_ID = frozenset({"function_call", "custom_tool_call", "shell_call", "shell_call_output"})
# delta event type -> (item types it applies to, where the text goes)
_PART_DELTAS = {
    "response.output_text.delta": ("content", "text"),
    "response.refusal.delta": ("content", "refusal"),
    "response.reasoning_text.delta": ("content", "text"),
    "response.reasoning_summary_text.delta": ("summary", "text"),
}
_ITEM_DELTAS = {
    "response.function_call_arguments.delta": "arguments",
    "response.custom_tool_call_input.delta": "input",
}


def _identity(item: dict[str, Any]) -> tuple[Any, Any, Any]:
    if item.get("type") in _BY_CALL_ID:
        return item.get("type"), None, item.get("call_id")
    return item.get("type"), item.get("id"), item.get("call_id")


class ResponsesReassembler(Reassembler):
    kind = "openai_responses"
    end_of_reply = "response.completed"

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(limit)
        self._events = SseEvents()
        self._snapshot: dict[str, Any] | None = None
        self._terminal: dict[str, Any] | None = None
        self._terminal_type = ""
        #: output index -> the item as added, with its text fields as lists of fragments
        self._building: dict[int, dict[str, Any]] = {}
        self._fragments: dict[tuple[int, str], tuple[dict[str, Any], list[str]]] = {}
        self._done_items: dict[int, dict[str, Any]] = {}

    @property
    def status(self) -> str:
        """The response's status as the stream left it ("" before `response.created`)."""
        response = self._terminal or self._snapshot or {}
        status = response.get("status")
        return status if isinstance(status, str) else ""

    # --- decoding

    def _line(self, line: str) -> None:
        event = self._events.line(line)
        if event is not None:
            self._dispatch(event[1])

    def _dispatch(self, data: str) -> None:
        self.event_count += 1
        if data.startswith("[DONE]"):
            return
        try:
            event = json.loads(data)
        except ValueError:
            self.problems.append("an event whose data is not JSON")
            return
        if not isinstance(event, dict):
            return
        if event.get("error") or event.get("type") == "error":
            if self.error_data is None:
                self.error_data = data.encode("utf-8")
            return
        try:
            self._apply(event)
        except (LookupError, TypeError, AttributeError, ValueError, RuntimeError) as error:
            self.problems.append(f"event {event.get('type')!r} not applicable: {error!r}")

    # --- accumulation (ResponseStreamState.accumulate_event)

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self._snapshot is None:
            if kind != "response.created":
                raise RuntimeError(f"{kind!r} before response.created")
            snapshot = dict(event["response"])
            if snapshot.get("output") is None:
                snapshot["output"] = []
            self._snapshot = snapshot
            for index, item in enumerate(snapshot["output"]):
                self._building[index] = self._track(item)
            return
        if kind in _LIFECYCLE and event["response"].get("id") != self._snapshot.get("id"):
            raise RuntimeError("the response id changed mid-stream")
        if kind in _TERMINAL:
            if self._terminal is None:
                self._terminal, self._terminal_type = event["response"], kind
            return
        if kind == "response.output_item.added":
            item = event.get("item")
            if item is None:
                return
            index = event["output_index"]
            if index in self._building:
                raise RuntimeError(f"duplicate output index {index}")
            self._building[index] = self._track(item)
        elif kind == "response.output_item.done":
            index = event["output_index"]
            item = event["item"]
            added = self._building.get(index)
            if added is not None and _identity(added) != _identity(item):
                raise RuntimeError("a completed output item changed identity")
            self._done_items[index] = item
        elif kind == "response.content_part.added" or kind == "response.reasoning_summary_part.added":
            item = self._building[event["output_index"]]
            field = "content" if kind == "response.content_part.added" else "summary"
            if field == "content" and item.get("type") not in ("message", "reasoning"):
                return
            part = self._track(dict(event["part"]))
            parts = item.get(field)
            if not isinstance(parts, list):
                parts = item[field] = []
            parts.append(part)
        elif kind in _PART_DELTAS:
            field, key = _PART_DELTAS[kind]
            item = self._building[event["output_index"]]
            parts = item.get(field) or []
            position = event.get("content_index" if field == "content" else "summary_index", 0)
            self._add(parts[position], key, event["delta"])
        elif kind in _ITEM_DELTAS:
            self._add(self._building[event["output_index"]], _ITEM_DELTAS[kind], event["delta"])

    def _track(self, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(obj)

    def _add(self, target: dict[str, Any], key: str, fragment: Any) -> None:
        if not isinstance(fragment, str) or not self._budget.take(len(fragment)):
            return
        entry = self._fragments.get((id(target), key))  # targets live in _building: ids stay unique
        if entry is None:
            start = target.get(key)
            entry = self._fragments[(id(target), key)] = (target, [start if isinstance(start, str) else ""])
        entry[1].append(fragment)

    # --- results

    @property
    def ended_cleanly(self) -> bool:
        """A `response.completed`, `response.failed` or `response.incomplete` arrived."""
        return self._terminal is not None

    def _items(self, *, built_too: bool) -> list[dict[str, Any]]:
        for (_target_id, key), (target, parts) in self._fragments.items():
            target[key] = "".join(parts)
        self._fragments = {}
        indexes = set(self._done_items) | (set(self._building) if built_too else set())
        return [self._done_items.get(i) or self._building[i] for i in sorted(indexes)]

    def _result(self) -> Any:
        if self._snapshot is None:
            return None
        if self._terminal is not None:
            response = dict(self._terminal)
            if response.get("output") is None:
                response["output"] = self._items(built_too=self._terminal_type != "response.completed")
            return response
        response = dict(self._snapshot)
        response["output"] = self._items(built_too=True)
        return response
