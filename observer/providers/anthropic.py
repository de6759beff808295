"""Anthropic Messages (`POST /v1/messages`): content blocks into reasoning and tool calls.

Reasoning: `thinking` blocks (with their signature), `redacted_thinking` (content unknown), and
`<thinking>`/`<think>` sections of text blocks (models prompted to think in tags). Actions:
`tool_use` blocks, and `server_tool_use` / `mcp_tool_use` (run on Anthropic's side: flagged as
server tools). A tool block that was still open when the output stopped (stop_reason
`max_tokens`, or a stream that ended without a stop reason) was not finished.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from smoltbot.core.usage import API_ANTHROPIC_MESSAGES
from smoltbot.observer.extraction import (
    MAX_RAW_INPUT,
    Extraction,
    ReasoningSegment,
    ToolCall,
    finite_input,
    json_object_input,
)

__all__ = ["MESSAGES", "MessagesFormat"]

_CLIENT_TOOL_BLOCKS = {"tool_use"}
_SERVER_TOOL_BLOCKS = {"server_tool_use", "mcp_tool_use"}
# Block types we know and deliberately do not read as reasoning or actions.
_KNOWN_PASSIVE_BLOCKS = {
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_result",
    "container_upload",
}
_TAG_RE = re.compile(r"<(/?)(thinking|think)>", re.IGNORECASE)


def split_tags(text: str, block_index: int) -> tuple[list[ReasoningSegment], str]:
    """<thinking>/<think> sections of a text block, and the text outside them.

    One linear pass over the tag positions; an opening tag that is never closed
    (a truncated response) runs to the end of the text.
    """
    segments: list[ReasoningSegment] = []
    visible: list[str] = []
    pos = 0
    open_at: int | None = None
    open_name = ""
    for m in _TAG_RE.finditer(text):
        closing, name = m.group(1) == "/", m.group(2).lower()
        if open_at is None and not closing:
            visible.append(text[pos : m.start()])
            open_at, open_name = m.end(), name
        elif open_at is not None and closing and name == open_name:
            segments.append(ReasoningSegment("tags", text[open_at : m.start()].strip(), block_index))
            open_at = None
            pos = m.end()
    if open_at is not None:
        segments.append(ReasoningSegment("tags", text[open_at:].strip(), block_index, unclosed=True))
    else:
        visible.append(text[pos:])
    return segments, "".join(visible)


def _tool_input(block: dict[str, Any], name: str, ex: Extraction) -> tuple[dict[str, Any], bool, str]:
    value = block.get("input")
    if isinstance(value, dict):
        return finite_input(value, name, ex), True, ""
    if isinstance(value, str):
        return json_object_input(value, name, ex)
    if value is None:
        partial = block.get("partial_json")
        if isinstance(partial, str) and partial:
            return json_object_input(partial, name, ex)
        ex.missing.append(f"tool call '{name}' carried no input")
        return {}, True, ""
    # A list or scalar is not what the API sends; keep it rather than drop it.
    return finite_input({"input": value}, name, ex), True, ""


def _read_content(content: list[Any], ex: Extraction) -> None:
    texts: list[str] = []
    unknown: dict[str, int] = {}
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            unknown["(not an object)"] = unknown.get("(not an object)", 0) + 1
            continue
        kind = block.get("type")
        if kind == "thinking":
            thinking = block.get("thinking")
            text = thinking if isinstance(thinking, str) else ""
            signed = bool(block.get("signature"))
            ex.reasoning.append(ReasoningSegment("thinking", text, index, signature_present=signed))
            if not text:
                ex.missing.append("a thinking block carried no text (display omitted)")
        elif kind == "redacted_thinking":
            ex.reasoning.append(ReasoningSegment("redacted_thinking", "", index))
        elif kind == "text":
            raw = block.get("text")
            text = raw if isinstance(raw, str) else ""
            if "<" in text:
                segments, text = split_tags(text, index)
                ex.reasoning.extend(segments)
                if any(s.unclosed for s in segments):
                    ex.missing.append("a <thinking> tag was not closed (response truncated?)")
            if text.strip():
                texts.append(text.strip())
        elif kind in _CLIENT_TOOL_BLOCKS or kind in _SERVER_TOOL_BLOCKS:
            name = block.get("name") if isinstance(block.get("name"), str) else ""
            if not name:
                ex.missing.append(f"a {kind} block had no tool name")
                name = "unnamed_tool"
            tool_input, valid, raw = _tool_input(block, name, ex)
            ex.tool_calls.append(
                ToolCall(
                    id=str(block.get("id") or ""),
                    name=name,
                    input=tool_input,
                    block_index=index,
                    server=kind in _SERVER_TOOL_BLOCKS,
                    input_valid=valid,
                    raw_input=raw[:MAX_RAW_INPUT],
                    call_type=str(kind),
                )
            )
        elif kind in _KNOWN_PASSIVE_BLOCKS:
            continue
        else:
            label = str(kind) if kind else "(no type)"
            unknown[label] = unknown.get(label, 0) + 1
    for label, count in unknown.items():
        ex.missing.append(f"unknown content block type '{label}' ({count}x) not read")
    ex.final_text = "\n\n".join(texts)


def _mark_unfinished(ex: Extraction, *, last_block: int) -> None:
    """Marks the tool calls the model did not finish (see the module docstring)."""
    if ex.stop_reason == "max_tokens":
        cut = "the response stopped at max_tokens inside its input"
    elif not ex.stop_reason and ex.streamed:
        cut = "the stream ended inside its input"
    else:
        cut = ""
    for position, call in enumerate(ex.tool_calls):
        if not call.input_valid:
            reason = "its input does not parse as JSON"
        elif cut and call.block_index == last_block:
            # The last block was still open when the output stopped; earlier tool blocks were
            # closed before the model went on to the next block.
            reason = cut
            ex.missing.append(f"tool call '{call.name}' was not finished ({cut}): traced as not executed")
        else:
            continue
        ex.tool_calls[position] = replace(call, finished=False, unfinished_reason=reason)


@dataclass(frozen=True)
class MessagesFormat:
    provider: str = "anthropic"
    api: str = API_ANTHROPIC_MESSAGES

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path == "/v1/messages"

    def read_request(self, request: dict[str, Any], path: str, ex: Extraction) -> str:
        tools = request.get("tools")
        if isinstance(tools, list):
            ex.request_tools = [
                t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
            ]
        system = request.get("system")
        if isinstance(system, str):
            ex.system_prompt_chars = len(system)
        elif isinstance(system, list):
            ex.system_prompt_chars = sum(
                len(b.get("text", "")) for b in system
                if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
        model = request.get("model")
        return model if isinstance(model, str) else ""

    def read_error(self, data: Any, ex: Extraction) -> bool:
        if isinstance(data, dict) and data.get("type") == "error" and isinstance(data.get("error"), dict):
            error = data["error"]
            ex.error_type = str(error.get("type") or "")
            ex.error_message = str(error.get("message") or "")
            return True
        return False

    def read_response(self, data: dict[str, Any], ex: Extraction) -> None:
        ex.message_id = str(data.get("id") or "")
        if isinstance(data.get("model"), str):
            ex.model = data["model"]
        stop = data.get("stop_reason")
        ex.stop_reason = stop if isinstance(stop, str) else ""
        if not ex.stop_reason:
            ex.missing.append("stream ended without a stop_reason (truncated)" if ex.streamed
                              else "response has no stop_reason")
        content = data.get("content")
        if isinstance(content, list) and content:
            _read_content(content, ex)
            _mark_unfinished(ex, last_block=len(content) - 1)
        else:
            ex.missing.append("response has no content")


MESSAGES = MessagesFormat()
