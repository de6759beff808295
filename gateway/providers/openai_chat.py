"""Chat Completions streams (`chat.completion.chunk` events), turned back into the completion.

The completion is rebuilt exactly as openai-python's `ChatCompletionStreamState` accumulates it
(`lib/streaming/chat/_completions.py` and the generic `accumulate_delta` of
`lib/streaming/_deltas.py`): the first chunk becomes the snapshot (its `obfuscation` dropped,
`object` set to `chat.completion`); each later chunk merges every choice's `delta` into that
choice's `message` key by key (strings concatenate, numbers add, dicts merge, lists of
objects merge by their `index`, `index` and `type` replace), a truthy `finish_reason` is set,
logprobs lists are extended, and `usage` and `system_fingerprint` take the chunk's value (so a
`stream_options.include_usage` reply ends with the usage of its last, choice-less chunk).
Tool calls therefore come out whole, by index, with their argument fragments joined.

The SSE rules are those of the SDK's `SSEDecoder`; a `data: [DONE]` ends the stream (what
follows is ignored, as the SDK stops reading), a chunk whose `object` is not
`chat.completion.chunk` is skipped (the SDK's `_is_valid_chat_completion_chunk_weak`), and data
with a truthy top-level `error` is the stream's error (the SDK raises `APIError` there).

We differ from the SDK in what it does on top of accumulation, never in the accumulated
object: no `parsed` / `parsed_arguments` (client-side parsing), custom tool calls are kept
(the SDK's `get_final_completion` leaves them out of its parsed copy with a warning), and a
`finish_reason` of `length` or `content_filter` is recorded, not raised.
"""

from __future__ import annotations

import json
from typing import Any

from ._base import Reassembler, SseEvents

__all__ = ["ChatCompletionReassembler"]


class _Text:
    """A string being built from fragments: appended to in O(1), joined once at the end."""

    __slots__ = ("parts",)

    def __init__(self, first: str) -> None:
        self.parts = [first]


def _has_indexed_entries(value: object) -> bool:
    return isinstance(value, list) and any(isinstance(entry, dict) and "index" in entry for entry in value)


class ChatCompletionReassembler(Reassembler):
    kind = "openai_chat"
    end_of_reply = "[DONE]"

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(limit)
        self._events = SseEvents()
        self._snapshot: dict[str, Any] | None = None
        self._done = False
        self._failed = False

    # --- decoding

    def _line(self, line: str) -> None:
        event = self._events.line(line)
        if event is not None:
            self._dispatch(event[0], event[1])

    def _dispatch(self, name: str | None, data: str) -> None:
        self.event_count += 1
        if self._done or self._failed:
            return
        if data.startswith("[DONE]"):
            self._done = True
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            self.problems.append("an event whose data is not JSON")
            return
        if isinstance(chunk, dict) and chunk.get("error"):
            self.error_data = data.encode("utf-8")
            self._failed = True
            return
        if not isinstance(chunk, dict) or chunk.get("object") != "chat.completion.chunk":
            return
        try:
            self._accumulate_chunk(chunk)
        except (LookupError, TypeError, AttributeError, ValueError, RuntimeError) as error:
            self.problems.append(f"chunk not applicable: {error!r}")

    # --- accumulation (ChatCompletionStreamState._accumulate_chunk)

    def _new_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        fields = {key: self._adopt(value) for key, value in choice.items() if key != "delta"}
        fields["message"] = self._merge({}, choice.get("delta") or {})
        return fields

    def _accumulate_chunk(self, chunk: dict[str, Any]) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            data = dict(chunk)
            data.pop("obfuscation", None)
            choices = list(data.get("choices") or [])
            for choice in chunk.get("choices") or []:
                choices[choice["index"]] = self._new_choice(choice)
            self._snapshot = {
                "system_fingerprint": None,
                **data,
                "choices": choices,
                "object": "chat.completion",
            }
            return
        for choice in chunk.get("choices") or []:
            choices = snapshot["choices"]
            try:
                choice_snapshot = choices[choice["index"]]
                choice_snapshot["message"] = self._merge(
                    choice_snapshot.get("message") or {}, choice.get("delta") or {}
                )
            except IndexError:
                choice_snapshot = self._new_choice(choice)
                choices.append(choice_snapshot)
            if choice.get("finish_reason"):
                choice_snapshot["finish_reason"] = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if logprobs is not None:
                target = choice_snapshot.get("logprobs")
                if target is None:
                    choice_snapshot["logprobs"] = {
                        "content": logprobs.get("content"),
                        "refusal": logprobs.get("refusal"),
                    }
                else:
                    for key in ("content", "refusal"):
                        if logprobs.get(key):
                            if target.get(key) is None:
                                target[key] = []
                            target[key].extend(logprobs[key])
        snapshot["usage"] = chunk.get("usage")
        snapshot["system_fingerprint"] = chunk.get("system_fingerprint")
        if chunk.get("moderation") is not None:
            snapshot["moderation"] = chunk["moderation"]

    def _adopt(self, value: Any) -> Any:
        """A delta value as the accumulator holds it: dict strings become `_Text`."""
        if isinstance(value, str):
            return _Text(value if self._budget.take(len(value)) else "")
        if isinstance(value, dict):
            return {key: self._adopt(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._adopt(item) if isinstance(item, dict) else item for item in value]
        return value

    def _merge(self, acc: dict[Any, Any], delta: dict[Any, Any]) -> dict[Any, Any]:
        """openai-python's `accumulate_delta`, with strings held as `_Text`."""
        for key, delta_value in delta.items():
            if key not in acc or acc[key] is None:
                if _has_indexed_entries(delta_value):
                    acc[key] = []
                else:
                    acc[key] = self._adopt(delta_value)
                    continue
            acc_value = acc[key]
            if key == "index" or key == "type":
                acc[key] = self._adopt(delta_value)
                continue
            if isinstance(acc_value, _Text) and isinstance(delta_value, str):
                if self._budget.take(len(delta_value)):
                    acc_value.parts.append(delta_value)
            elif isinstance(acc_value, (int, float)) and isinstance(delta_value, (int, float)):
                acc_value += delta_value
            elif isinstance(acc_value, dict) and isinstance(delta_value, dict):
                acc_value = self._merge(acc_value, delta_value)
            elif isinstance(acc_value, list) and isinstance(delta_value, list):
                if all(isinstance(x, (str, int, float, _Text)) for x in acc_value) and (
                    acc_value or not _has_indexed_entries(delta_value)
                ):
                    acc_value.extend(delta_value)
                    continue
                for entry in delta_value:
                    if not isinstance(entry, dict):
                        raise TypeError(f"list delta entry is not an object: {entry!r}")
                    index = entry["index"]
                    if not isinstance(index, int):
                        raise TypeError(f"list delta entry index is not an integer: {index!r}")
                    try:
                        acc_entry = acc_value[index]
                    except IndexError:
                        acc_value.insert(index, self._adopt(entry))
                    else:
                        if not isinstance(acc_entry, dict):
                            raise TypeError("list entry is not an object")
                        acc_value[index] = self._merge(acc_entry, entry)
            else:
                acc_value = self._adopt(delta_value)
            acc[key] = acc_value
        return acc

    # --- results

    @property
    def ended_cleanly(self) -> bool:
        """`[DONE]` seen; or, for servers that leave it out, every choice has its finish_reason."""
        if self._failed:
            return False
        if self._done:
            return True
        choices = (self._snapshot or {}).get("choices") or []
        return bool(choices) and all(isinstance(c, dict) and c.get("finish_reason") for c in choices)

    def _result(self) -> Any:
        return None if self._snapshot is None else _plain(self._snapshot)


def _plain(value: Any) -> Any:
    if isinstance(value, _Text):
        return "".join(value.parts)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
