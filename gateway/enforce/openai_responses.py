"""Tool calls of an OpenAI Responses answer checked before the client gets them, whole or streamed.

A call is an `output` item the client runs: `function_call` (its `arguments`, JSON text),
`custom_tool_call` (its `input`, judged as `{"input": text}`), and the built-in tools the agent
itself executes (`local_shell_call`, `shell_call`, `computer_call`, `apply_patch_call`: named
without `_call`, judged on the item's other fields), as the observer reads them. Built-in tools
that ran at OpenAI (web search, file search, code interpreter, MCP) are never judged. A stopped
call's item is replaced, at the same output index, by an assistant `message` item with one
`output_text` part saying what was stopped and why; an answer without an allowed call left is
then a plain message. The replacement's id is `msg_smoltbot_` plus the call's item id. The
record's `index` is the item's output index; its id is the item's `call_id`.

* Whole answers: the original bytes when nothing was replaced; otherwise the parsed response,
  changed only in the replaced items, serialised again.
* Streams: events pass one by one as they complete, bytes unchanged; only the
  `response.output_item.added` of a `..._call` item and, after a replacement, the final
  `response.completed` / `.incomplete` / `.failed` are parsed (the response id is read from
  `response.created` by a pattern). A call's events are held from its
  `response.output_item.added` to its `response.output_item.done` (its
  `function_call_arguments.*` / `custom_tool_call_input.*` events in between), then
  released as they came or replaced by the events of a message item (`output_item.added`,
  `content_part.added`, one `output_text.delta`, `output_text.done`, `content_part.done`,
  `output_item.done`) that reuse the held events' sequence numbers in order (the last one again
  when there are more). The final event's `response.output` gets the same replacement. With
  `replace` off (nudge) nothing is held: the calls are only judged.
"""

from __future__ import annotations

import json
from typing import Any

from smoltbot.core.sessions import response_id_in

from .calls import CallRecord, Decide, SseSplitter, boundary_of, compact, parse_input, sse_data, sse_name
from .texts import replacement_text

__all__ = ["ResponsesStreamEnforcer", "rewrite_response"]

#: Items the client runs, so the card judges them.
CALL_ITEMS = frozenset({"function_call", "custom_tool_call", "local_shell_call", "shell_call",
                        "computer_call", "apply_patch_call"})
_NOT_INPUT = frozenset({"id", "type", "status", "call_id", "output", "outputs", "results", "result", "error",
                        "pending_safety_checks", "acknowledged_safety_checks"})
_TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})
_ADDED = b"response.output_item.added"
_CREATED = b"response.created"


def _call_of(item: dict[str, Any]) -> tuple[str, str, Any]:
    """(call id, name, input) of a call item, as the observer reads it."""
    kind = str(item.get("type"))
    call_id = str(item.get("call_id") or item.get("id") or "")
    if kind == "function_call":
        arguments = item.get("arguments")
        tool_input = parse_input(arguments) if isinstance(arguments, str) else arguments
        return call_id, str(item.get("name") or ""), {} if tool_input is None else tool_input
    if kind == "custom_tool_call":
        text = item.get("input")
        return call_id, str(item.get("name") or ""), {"input": text if isinstance(text, str) else ""}
    return call_id, kind.removesuffix("_call"), {k: v for k, v in item.items() if k not in _NOT_INPUT}


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message(item: dict[str, Any], text: str, status: str = "completed") -> dict[str, Any]:
    item_id = str(item.get("id") or item.get("call_id") or "")
    return {"id": f"msg_smoltbot_{item_id}", "type": "message", "status": status, "role": "assistant",
            "content": [_part(text)] if status == "completed" else []}


def _replace_items(output: Any, replaced: dict[str, dict[str, Any]]) -> bool:
    """Puts each replacement in the place of the item it stands for (by id); whether any was."""
    changed = False
    if isinstance(output, list):
        for position, item in enumerate(output):
            if isinstance(item, dict) and item.get("type") in CALL_ITEMS:
                key = str(item.get("id") or item.get("call_id") or "")
                if key in replaced:
                    output[position] = replaced[key]
                    changed = True
    return changed


def rewrite_response(body: bytes, decide: Decide, *, replace: bool) -> tuple[bytes | None, list[CallRecord]]:
    if b"_call" not in body:
        return None, []
    try:
        response = json.loads(body)
    except ValueError:
        return None, []
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return None, []
    records: list[CallRecord] = []
    replaced: dict[str, dict[str, Any]] = {}
    response_id = str(response.get("id") or "")
    for index, item in enumerate(output):
        if not isinstance(item, dict) or item.get("type") not in CALL_ITEMS:
            continue
        call_id, name, tool_input = _call_of(item)
        verdict = decide(name, tool_input, call_id)
        stop = replace and verdict.decision != "allow"
        text = replacement_text(name, tool_input, verdict) if stop else ""
        records.append(CallRecord(index, call_id, name, verdict, stop, response_id, text, str(item["type"])))
        if stop:
            replaced[str(item.get("id") or item.get("call_id") or "")] = _message(item, text)
    if not _replace_items(output, replaced):
        return None, records
    return compact(response), records


def _event(kind: str, sequence: Any, boundary: bytes, **fields: Any) -> bytes:
    data = {"type": kind, "sequence_number": sequence, **fields}
    return b"event: " + kind.encode() + b"\ndata: " + compact(data) + boundary


class ResponsesStreamEnforcer:
    """A Responses stream in, the stream the client gets out (see the module docstring)."""

    def __init__(self, decide: Decide, *, replace: bool) -> None:
        self._decide = decide
        self._replace = replace
        self._events = SseSplitter()
        #: The call item being read: its output index and the item as added.
        self._index = -1
        self._item: dict[str, Any] | None = None
        self._fragments: list[str] = []
        #: The held events, raw and parsed: the call's own, and any other that came while it was held.
        self._held: list[tuple[bytes, dict[str, Any]]] = []
        #: Replacement items by the id of the item they stand for (for the final response).
        self._replaced: dict[str, dict[str, Any]] = {}
        #: The response's id, from its `response.created` event.
        self._response_id = ""
        self.records: list[CallRecord] = []

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._events.feed(chunk):
            self._on_event(raw, out)
        return out[0] if len(out) == 1 else b"".join(out)

    def end(self) -> bytes:
        out: list[bytes] = []
        if self._item is not None:
            self._close(None, out)
        out.append(self._events.rest())
        return b"".join(out)

    def release(self) -> bytes:
        held = b"".join(raw for raw, _ in self._held) + self._events.rest()
        self._held, self._item = [], None
        return held

    def _on_event(self, raw: bytes, out: list[bytes]) -> None:
        name = sse_name(raw)
        if name == _CREATED and not self._response_id:
            self._response_id = response_id_in(raw)
        if self._item is None and name is not None and (name != _ADDED or b'_call"' not in raw) and (
                name not in _TERMINAL or not self._replaced):
            out.append(raw)  # text, reasoning and lifecycle events: sent as they are
            return
        try:
            parsed = json.loads(sse_data(raw))
        except ValueError:
            parsed = None
        event: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        kind = event.get("type")
        if self._item is not None:
            if self._replace:
                self._held.append((raw, event))
            else:
                out.append(raw)
            if event.get("output_index") != self._index:
                return
            if kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
                delta = event.get("delta")
                if isinstance(delta, str):
                    self._fragments.append(delta)
            elif kind == "response.output_item.done":
                item = event.get("item")
                self._close(item if isinstance(item, dict) else None, out, boundary_of(raw))
            return
        if kind == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") in CALL_ITEMS:
                index = event.get("output_index")
                self._index = index if isinstance(index, int) else -1
                self._item, self._fragments = item, []
                if self._replace:
                    self._held = [(raw, event)]
                    return
        out.append(self._final(raw, event))

    def _final(self, raw: bytes, event: dict[str, Any]) -> bytes:
        """A final event with the replacements in its response's output; any other as it came."""
        kind = event.get("type")
        if not self._replaced or not isinstance(kind, str) or kind.encode() not in _TERMINAL:
            return raw
        response = event.get("response")
        if not isinstance(response, dict) or not _replace_items(response.get("output"), self._replaced):
            return raw
        return b"event: " + kind.encode() + b"\ndata: " + compact(event) + boundary_of(raw)

    def _close(self, done: dict[str, Any] | None, out: list[bytes], boundary: bytes = b"\n\n") -> None:
        """Judges the call read (on its `output_item.done` item, else on what was streamed)."""
        assert self._item is not None
        item = done
        if item is None or item.get("type") != self._item.get("type"):
            item = dict(self._item)
            field_name = "input" if item.get("type") == "custom_tool_call" else "arguments"
            if self._fragments:
                item[field_name] = "".join(self._fragments)
        index = self._index
        self._item, self._fragments = None, []
        call_id, name, tool_input = _call_of(item)
        verdict = self._decide(name, tool_input, call_id)
        stop = self._replace and verdict.decision != "allow"
        text = replacement_text(name, tool_input, verdict) if stop else ""
        self.records.append(CallRecord(index, call_id, name, verdict, stop, self._response_id, text,
                                       str(item.get("type"))))
        held, self._held = self._held, []
        if not stop:
            out.extend(raw for raw, _ in held)
            return
        message = _message(item, text)
        self._replaced[str(item.get("id") or item.get("call_id") or "")] = message
        # Events that came while the call was held but are not its own (an error, the final event of
        # a stream that never closed the call) follow the replacement.
        others = [(raw, event) for raw, event in held if event.get("output_index") != index]
        sequences = [event.get("sequence_number") for _, event in held if event.get("output_index") == index]
        numbers = iter(sequences + [sequences[-1] if sequences else None] * 6)
        common = {"item_id": message["id"], "output_index": index, "content_index": 0}
        part = _part(text)
        out.append(_event("response.output_item.added", next(numbers), boundary, output_index=index,
                          item=_message(item, text, "in_progress")))
        out.append(_event("response.content_part.added", next(numbers), boundary, **common,
                          part=_part("")))
        out.append(_event("response.output_text.delta", next(numbers), boundary, **common, delta=text,
                          logprobs=[]))
        out.append(_event("response.output_text.done", next(numbers), boundary, **common, text=text,
                          logprobs=[]))
        out.append(_event("response.content_part.done", next(numbers), boundary, **common, part=part))
        out.append(_event("response.output_item.done", next(numbers), boundary, output_index=index,
                          item=message))
        out.extend(self._final(raw, event) for raw, event in others)
