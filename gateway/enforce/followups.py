"""After a stopped Responses call: the output a request that continues that response must carry.

OpenAI stores a response (`store: true`, the default) with its call items as the model made
them, stopped ones included. A later request that continues it by `previous_response_id` must
give an output for each of its function calls, or the API refuses it (400: "No tool output found
for function call ..."); the client never saw the stopped call, so it cannot. The gateway adds
them: at the start of that request's `input` (a string input becomes the equivalent user
message), a `function_call_output` (`custom_tool_call_output` for a custom tool call) per stopped
call, whose output is the text the client got in its place, unless the request already answers
that call. Kept per (agent, response id) in memory (per gateway process, the latest 10,000
responses), for every request that continues the response (a client may fork from it twice).
Calls of built-in tools the agent runs (`local_shell_call`, `computer_call`...) get none: their
outputs carry what only the client can make (a screenshot, a shell's exit status).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import Any

from .calls import CallRecord

__all__ = ["StoppedCalls"]

_MAX_RESPONSES = 10_000
_OUTPUT_OF = {"function_call": "function_call_output", "custom_tool_call": "custom_tool_call_output"}


class StoppedCalls:
    def __init__(self) -> None:
        #: (agent, response id) -> [(output item type, call id, output text)]
        self._outputs: collections.OrderedDict[tuple[str, str], list[tuple[str, str, str]]] = (
            collections.OrderedDict())

    @property
    def pending(self) -> int:
        return len(self._outputs)

    def add(self, agent_id: str, records: list[CallRecord]) -> None:
        for record in records:
            output_type = _OUTPUT_OF.get(record.kind)
            if not (record.replaced and record.answer_id and record.tool_use_id and output_type):
                continue
            key = (agent_id, record.answer_id)
            self._outputs.setdefault(key, []).append((output_type, record.tool_use_id, record.replacement))
            self._outputs.move_to_end(key)
        while len(self._outputs) > _MAX_RESPONSES:
            self._outputs.popitem(last=False)

    def apply(self, agent_id: str, body: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
        """(the body to forward, how many outputs it got)."""
        if headers.get("content-encoding", "identity").strip().lower() != "identity":
            return body, 0
        try:
            payload: Any = json.loads(body)
        except ValueError:
            return body, 0
        previous = payload.get("previous_response_id") if isinstance(payload, dict) else None
        outputs = self._outputs.get((agent_id, previous)) if isinstance(previous, str) else None
        if not outputs:
            return body, 0
        items = payload.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if items is None:
            items = []
        if not isinstance(items, list):
            return body, 0
        answered = {item.get("call_id") for item in items if isinstance(item, dict)}
        added = [{"type": kind, "call_id": call_id, "output": text}
                 for kind, call_id, text in outputs if call_id not in answered]
        if not added:
            return body, 0
        payload["input"] = added + items
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), len(added)
