"""OpenAI Responses (`POST /v1/responses`, what Codex CLI speaks): the response's output items.

Actions, one per call item, in output order:

* `function_call` (`arguments`, JSON text) and `custom_tool_call` (`input`, free text, kept as
  `{"input": text}`), run by the agent;
* built-in tools the agent runs: `local_shell_call`, `shell_call`, `computer_call`,
  `apply_patch_call` (name: the item type without `_call`, input: the item's `action` or
  `operation` and the rest of its fields but ids, status and output);
* built-in tools OpenAI runs (`web_search_call`, `file_search_call`, `code_interpreter_call`,
  `image_generation_call`, `mcp_call`, and any other `*_call` item): flagged as server tools;
  an `mcp_call` is named by its tool, `mcp_approval_request` is a call waiting for the user's
  approval (not executed).

A call item whose status is `in_progress` or `incomplete` (a stream cut short, a response out
of tokens) was not finished, nor is one whose arguments do not parse.

Reasoning comes from `reasoning` items only, never from the reply text: their `content`
(`reasoning_text`, the reasoning itself, from models that return it), else their `summary`
(OpenAI's models return only a summary: the trace says so, `summary_only`), else nothing
readable: `encrypted_content` alone, or an item with neither (no summary was asked for).

The response's own status: `failed` (or `cancelled`) is a failure of the call even though the
HTTP status is 200 (`Extraction.failure`, with the response's error); `incomplete` gives the
reason as the stop reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smoltbot.core.usage import API_OPENAI_RESPONSES
from smoltbot.observer.extraction import (
    MAX_RAW_INPUT,
    Extraction,
    ReasoningSegment,
    ToolCall,
    finite_input,
    json_object_input,
)

from ._common import mark_unfinished, read_error_object, tool_names

__all__ = ["RESPONSES", "ResponsesFormat"]

#: Built-in tool calls the agent itself executes (the model asks, the client runs them).
_CLIENT_BUILTINS = frozenset({"local_shell_call", "shell_call", "computer_call", "apply_patch_call"})
#: Item fields that are bookkeeping or results, never part of what was asked for.
_NOT_INPUT = frozenset({"id", "type", "status", "call_id", "output", "outputs", "results", "result",
                        "error", "pending_safety_checks", "acknowledged_safety_checks"})
_UNFINISHED_STATUS = frozenset({"in_progress", "incomplete"})
_FAILED_STATUS = {"failed": "response_failed", "cancelled": "response_cancelled"}


def _builtin_input(item: dict[str, Any], name: str, ex: Extraction) -> dict[str, Any]:
    return finite_input({key: value for key, value in item.items() if key not in _NOT_INPUT}, name, ex)


def _call(item: dict[str, Any], kind: str, index: int, ex: Extraction) -> ToolCall:
    call_id = str(item.get("call_id") or item.get("id") or "")
    if kind in ("function_call", "custom_tool_call", "mcp_call", "mcp_approval_request"):
        name = item.get("name") if isinstance(item.get("name"), str) and item.get("name") else ""
        if not name:
            ex.missing.append(f"a {kind} item had no name")
            name = "unnamed_tool"
    else:
        name = kind.removesuffix("_call")
    if kind == "custom_tool_call":
        text = item.get("input")
        return ToolCall(id=call_id, name=name, input={"input": text if isinstance(text, str) else ""},
                        block_index=index, call_type=kind)
    if kind in ("function_call", "mcp_call", "mcp_approval_request"):
        arguments = item.get("arguments")
        if isinstance(arguments, str):
            tool_input, valid, raw = json_object_input(arguments, name, ex)
        else:
            tool_input = {} if arguments is None else {"arguments": arguments}
            valid, raw = True, ""
        return ToolCall(id=call_id, name=name, input=tool_input, block_index=index, input_valid=valid,
                        raw_input=raw[:MAX_RAW_INPUT], server=kind != "function_call", call_type=kind)
    return ToolCall(id=call_id, name=name, input=_builtin_input(item, name, ex), block_index=index,
                    server=kind not in _CLIENT_BUILTINS, call_type=kind)


def _texts(parts: Any, kind: str, key: str) -> list[str]:
    return [part[key] for part in parts if isinstance(part, dict) and part.get("type") == kind
            and isinstance(part.get(key), str) and part[key].strip()] if isinstance(parts, list) else []


def _reasoning(item: dict[str, Any], index: int, ex: Extraction) -> None:
    full = _texts(item.get("content"), "reasoning_text", "text")
    if full:
        ex.reasoning.append(ReasoningSegment("reasoning_text", "\n\n".join(full), index))
        return
    summary = _texts(item.get("summary"), "summary_text", "text")
    if summary:
        ex.reasoning.append(ReasoningSegment("reasoning_summary", "\n\n".join(summary), index, summary=True))
    elif item.get("encrypted_content"):
        ex.reasoning.append(ReasoningSegment("encrypted_reasoning", "", index))
        ex.missing.append("a reasoning item carried only encrypted_content (no summary was returned)")
    else:
        ex.reasoning.append(ReasoningSegment("withheld_reasoning", "", index))
        ex.missing.append("a reasoning item carried no text (no summary was asked for: reasoning.summary)")


@dataclass(frozen=True)
class ResponsesFormat:
    provider: str = "openai"
    api: str = API_OPENAI_RESPONSES

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.rstrip("/").endswith("/responses")

    def read_request(self, request: dict[str, Any], path: str, ex: Extraction) -> str:
        ex.request_tools = tool_names(request.get("tools"), nested=False)
        instructions = request.get("instructions")
        if isinstance(instructions, str):
            ex.system_prompt_chars = len(instructions)
        model = request.get("model")
        return model if isinstance(model, str) else ""

    def read_error(self, data: Any, ex: Extraction) -> bool:
        # A response object carries `"error": null` (or the failure of a failed response): only an
        # object without the response's own shape is an error reply.
        if isinstance(data, dict) and data.get("object") == "response":
            return False
        return read_error_object(data, ex, type_keys=("type", "code"))

    def read_response(self, data: dict[str, Any], ex: Extraction) -> None:
        ex.message_id = str(data.get("id") or "")
        if isinstance(data.get("model"), str):
            ex.model = data["model"]
        found = data.get("status")
        status = found if isinstance(found, str) else ""
        details = data.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        ex.stop_reason = reason if status == "incomplete" and isinstance(reason, str) else status
        if status in _FAILED_STATUS:
            ex.failure = _FAILED_STATUS[status]
            error = data.get("error")
            if isinstance(error, dict):
                ex.error_type = str(error.get("code") or error.get("type") or ex.failure)
                ex.error_message = str(error.get("message") or "")
        elif status in ("queued", "in_progress"):
            ex.missing.append(f"the response was still {status} (background mode, or a stream cut short): "
                              "its output as far as it got")
        elif not status:
            ex.missing.append("response has no status")
        output = data.get("output")
        if not isinstance(output, list):
            ex.missing.append("response has no output")
            return
        texts: list[str] = []
        unknown: dict[str, int] = {}
        for index, item in enumerate(output):
            kind = item.get("type") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not isinstance(kind, str):
                unknown["(no type)"] = unknown.get("(no type)", 0) + 1
                continue
            if kind == "message":
                texts += _texts(item.get("content"), "output_text", "text")
                texts += _texts(item.get("content"), "refusal", "refusal")
            elif kind == "reasoning":
                _reasoning(item, index, ex)
            elif kind.endswith("_call") or kind == "mcp_approval_request":
                ex.tool_calls.append(_call(item, kind, index, ex))
                position = len(ex.tool_calls) - 1
                call = ex.tool_calls[position]
                if not call.input_valid:
                    mark_unfinished(ex, position, "its arguments do not parse as JSON", note=False)
                elif kind == "mcp_approval_request":
                    mark_unfinished(ex, position, "it waits for the user's approval")
                elif item.get("status") in _UNFINISHED_STATUS:
                    mark_unfinished(ex, position, f"the item ended {item['status']}")
            elif kind.endswith("_call_output") or kind in ("mcp_list_tools", "compaction"):
                continue
            else:
                unknown[kind] = unknown.get(kind, 0) + 1
        for label, count in unknown.items():
            ex.missing.append(f"unknown output item type '{label}' ({count}x) not read")
        ex.final_text = "\n\n".join(text.strip() for text in texts)


RESPONSES = ResponsesFormat()
