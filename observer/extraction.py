"""Reading one Anthropic Messages exchange: the model's reasoning and its actions.

Only the response, the new assistant turn, is read for reasoning and actions. The
request's `messages` (conversation history, including earlier assistant thinking
blocks that clients send back) are never read: they are earlier turns that were
already traced, or text the client made up. From the request we take the `model`
(a fallback when the response has none), the names of the offered `tools` and the
size of the system prompt.

Bodies may be anything: empty, non-UTF-8, not JSON, an Anthropic error object, a
stream reassembled only in part. Whatever cannot be read is said in `missing`,
never guessed.

A tool call the model did not finish is marked `finished=False` with a note: its input does
not parse as JSON, or the response stopped inside it (stop_reason `max_tokens`, or a stream
that ended without a stop reason, while the tool block was the last one open). An agent does
not execute such a call, so it is never traced as an execution.

Numbers keep their JSON type and value (Python's json reads integers exactly). A number JSON
cannot carry (Infinity or NaN, which a lenient producer may emit for 1e400) is kept as its
text, with a note, so a trace never holds a value no JSON reader accepts.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from smoltbot.core.outcomes import ExchangeOutcome

__all__ = ["Decision", "Extraction", "ReasoningSegment", "ToolCall", "extract"]

logger = logging.getLogger(__name__)

# Block types that carry a tool call. mcp_tool_use (MCP connector) and
# server_tool_use run on Anthropic's side: flagged as server tools.
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
_MAX_RAW_INPUT = 2000


@dataclass(frozen=True)
class ReasoningSegment:
    source: str  # thinking | redacted_thinking | tags
    text: str  # "" for redacted_thinking (content unknown) and omitted thinking
    block_index: int
    signature_present: bool = False
    unclosed: bool = False  # a <thinking> tag the text ended inside (truncated)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    block_index: int
    server: bool = False
    input_valid: bool = True
    raw_input: str = ""  # the unparseable input text, clipped, when input_valid is False
    #: False when the model did not finish the call (see the module docstring); an agent does
    #: not execute it.
    finished: bool = True
    unfinished_reason: str = ""


@dataclass(frozen=True)
class Decision:
    """One decision of an exchange; it becomes one trace."""

    kind: str  # tool | reply | failure | unreadable
    index: int
    tool_call: ToolCall | None = None
    # The reasoning that preceded this decision in the response.
    reasoning: tuple[ReasoningSegment, ...] = ()


@dataclass
class Extraction:
    model: str = ""
    stop_reason: str = ""
    reasoning: list[ReasoningSegment] = field(default_factory=list)
    final_text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    http_status: int = 0
    streamed: bool = False
    outcome: str = ExchangeOutcome.COMPLETE
    parsed: bool = False  # whether the response body was a readable message
    message_id: str = ""
    error_type: str = ""
    error_message: str = ""
    request_tools: list[str] = field(default_factory=list)
    system_prompt_chars: int = 0

    @property
    def redacted_blocks(self) -> int:
        return sum(1 for s in self.reasoning if s.source == "redacted_thinking")

    @property
    def signature_present(self) -> bool:
        return any(s.signature_present for s in self.reasoning)

    @property
    def reasoning_text(self) -> str:
        return "\n\n".join(s.text for s in self.reasoning if s.text)

    def decisions(self, outcome: str | None = None) -> list[Decision]:
        """The exchange's decisions, in order: one per tool call, else one reply.

        A failed exchange (any outcome but "complete") is exactly one "failure"
        decision; a complete exchange whose body could not be read is one
        "unreadable" decision.
        """
        outcome = outcome or self.outcome
        everything = tuple(self.reasoning)
        if outcome != ExchangeOutcome.COMPLETE:
            return [Decision("failure", 0, reasoning=everything)]
        if not self.parsed:
            return [Decision("unreadable", 0, reasoning=everything)]
        if not self.tool_calls:
            return [Decision("reply", 0, reasoning=everything)]
        out: list[Decision] = []
        previous_block = -1
        shared: tuple[ReasoningSegment, ...] = ()
        for i, call in enumerate(self.tool_calls):
            own = tuple(s for s in self.reasoning if previous_block < s.block_index < call.block_index)
            # Parallel tool calls after one thinking block share that reasoning;
            # interleaved thinking gives each call its own.
            if own:
                shared = own
            out.append(Decision("tool", i, tool_call=call, reasoning=own or shared))
            previous_block = call.block_index
        return out


def _decode(body: bytes, what: str, missing: list[str]) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        missing.append(f"{what} body is not valid UTF-8 (decoded with replacement characters)")
        return body.decode("utf-8", errors="replace")


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _read_request(body: bytes, ex: Extraction) -> str:
    """The request's model; fills tool names and system prompt size. Never reads messages."""
    if not body:
        return ""
    try:
        data = json.loads(body.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return ""
    if not isinstance(data, dict):
        return ""
    tools = data.get("tools")
    if isinstance(tools, list):
        ex.request_tools = [
            t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
        ]
    system = data.get("system")
    if isinstance(system, str):
        ex.system_prompt_chars = len(system)
    elif isinstance(system, list):
        ex.system_prompt_chars = sum(
            len(b.get("text", "")) for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    model = data.get("model")
    return model if isinstance(model, str) else ""


def _read_error(data: Any, ex: Extraction) -> bool:
    if isinstance(data, dict) and data.get("type") == "error" and isinstance(data.get("error"), dict):
        error = data["error"]
        ex.error_type = str(error.get("type") or "")
        ex.error_message = str(error.get("message") or "")
        return True
    return False


def _split_tags(text: str, block_index: int) -> tuple[list[ReasoningSegment], str]:
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


def _finite(value: Any, name: str, ex: Extraction) -> Any:
    """`value` with every non-finite float replaced by its text ("Infinity", "NaN")."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except ValueError:
        pass
    except RecursionError:
        return value
    ex.missing.append(f"tool input of '{name}' held a number JSON cannot carry (Infinity or NaN); "
                      "kept as text")

    def fix(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
        if isinstance(item, dict):
            return {key: fix(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [fix(inner) for inner in item]
        return item

    return fix(value)


def _tool_input(block: dict[str, Any], name: str, ex: Extraction) -> tuple[dict[str, Any], bool, str]:
    tool_input, valid, raw = _read_tool_input(block, name, ex)
    return _finite(tool_input, name, ex), valid, raw


def _read_tool_input(block: dict[str, Any], name: str, ex: Extraction) -> tuple[dict[str, Any], bool, str]:
    value = block.get("input")
    if isinstance(value, dict):
        return value, True, ""
    if isinstance(value, str):
        parsed = _load_json(value) if value.strip() else {}
        if isinstance(parsed, dict):
            return parsed, True, ""
        ex.missing.append(f"tool input of '{name}' was not valid JSON: the call was not finished and is "
                          "traced as not executed")
        return {}, False, value[:_MAX_RAW_INPUT]
    if value is None:
        partial = block.get("partial_json")
        if isinstance(partial, str) and partial:
            parsed = _load_json(partial)
            if isinstance(parsed, dict):
                return parsed, True, ""
            ex.missing.append(f"tool input of '{name}' was not valid JSON: the call was not finished and "
                              "is traced as not executed")
            return {}, False, partial[:_MAX_RAW_INPUT]
        ex.missing.append(f"tool call '{name}' carried no input")
        return {}, True, ""
    # A list or scalar is not what the API sends; keep it rather than drop it.
    return {"input": value}, True, ""


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
                segments, text = _split_tags(text, index)
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
                    raw_input=raw,
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


def extract(
    request_body: bytes,
    response_body: bytes,
    *,
    http_status: int,
    streamed: bool,
    outcome: str,
    stream_error: bytes = b"",
) -> Extraction:
    """Read an exchange's response (and the request's model/tools/system size)."""
    ex = Extraction(http_status=http_status, streamed=streamed, outcome=outcome)
    request_model = _read_request(request_body, ex)

    if stream_error:
        error_data = _load_json(_decode(stream_error, "stream error", ex.missing))
        if not _read_error(error_data, ex):
            ex.error_type = "stream_error"
            ex.error_message = stream_error[:500].decode("utf-8", errors="replace")

    data: Any = None
    if not response_body:
        ex.missing.append("response body is empty")
    else:
        text = _decode(response_body, "response", ex.missing)
        data = _load_json(text)
        if data is None:
            ex.missing.append("response body is not JSON")
            if not ex.error_message and not 200 <= http_status < 300:
                ex.error_message = text[:500]
        elif _read_error(data, ex):
            data = None
        elif not isinstance(data, dict):
            ex.missing.append("response body is not a JSON object")
            data = None

    if isinstance(data, dict):
        ex.parsed = True
        ex.message_id = str(data.get("id") or "")
        if isinstance(data.get("model"), str):
            ex.model = data["model"]
        stop = data.get("stop_reason")
        ex.stop_reason = stop if isinstance(stop, str) else ""
        if not ex.stop_reason:
            ex.missing.append(
                "stream ended without a stop_reason (truncated)"
                if streamed
                else "response has no stop_reason"
            )
        content = data.get("content")
        if isinstance(content, list) and content:
            _read_content(content, ex)
            _mark_unfinished(ex, last_block=len(content) - 1)
        else:
            ex.missing.append("response has no content")
    if not ex.model:
        ex.model = request_model
    return ex
