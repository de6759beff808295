"""A provider's chat history in one neutral shape: messages of blocks, each block with its kind.

The integrity and provenance checks read this shape only, so OpenAI (Chat Completions, Responses)
and Gemini histories are one more reader (readers.py), not a change to the checks. The Anthropic
Messages reader is here.

Normalising is where honest clients and the record must agree: a client sends the assistant's
content back re-serialised, with `cache_control` markers added to recent blocks and null fields
dropped or added by its SDK, and without empty text blocks (the API rejects them). A block keeps only
what the model said; everything else is left out of the form that is digested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "MAX_BLOCKS",
    "MAX_MESSAGES",
    "THINKING_KINDS",
    "AnthropicMessagesReader",
    "HistoryReader",
    "Message",
    "Part",
    "text_of",
]

#: Blocks an API lets a client drop from earlier assistant turns: Messages thinking, Responses
#: reasoning items, Chat `reasoning_content` (DeepSeek rejects it resent), Gemini thought parts
#: and thought signatures.
THINKING_KINDS = frozenset({"thinking", "redacted_thinking", "reasoning", "thought_signature"})
_TOOL_CALL_KINDS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
_SKIPPED_KEYS = frozenset({"cache_control", "citations"})
#: Bounds on hostile input: more than this is read no further (and said so in `truncated`).
MAX_MESSAGES = 20_000
MAX_BLOCKS = 4_096


@dataclass(frozen=True, slots=True)
class Part:
    """One content block: `kind` is the provider's type; `body` is what gets digested."""

    kind: str
    body: Any
    #: A tool call's id (tool_use) or the id a tool result answers (tool_result).
    tool_id: str | None = None
    tool_name: str | None = None
    tool_input: Any = None
    text: str = ""

    @property
    def is_thinking(self) -> bool:
        return self.kind in THINKING_KINDS

    @property
    def is_tool_call(self) -> bool:
        return self.kind in _TOOL_CALL_KINDS


@dataclass(frozen=True, slots=True)
class Message:
    index: int
    role: str
    parts: tuple[Part, ...]
    #: The raw message, for digesting a whole user message (its first-message root).
    raw: Any = None
    #: Where the message starts in the request's own list, when that is not `index` (a Responses
    #: assistant turn is several input items, read as one message): what findings show.
    at: int | None = None

    @property
    def wire_index(self) -> int:
        return self.index if self.at is None else self.at


class HistoryReader(Protocol):
    """Reads one provider's request body into neutral messages, and a response into parts."""

    def messages(self, body: Any) -> list[Message]: ...

    def system_texts(self, body: Any) -> list[str]: ...

    def response_parts(self, response: Any) -> list[Part]: ...

    def turn_parts(self, body: Any, response: Any) -> list[Part]:
        """The parts of `response` as the next request will resend them after `body`'s messages
        (a reader that numbers id-less tool calls by the history before them needs `body`)."""
        ...


def text_of(value: Any) -> str:
    """The text of a tool result's or a message's content (a string or a list of blocks)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [b.get("text") for b in value[:MAX_BLOCKS] if isinstance(b, Mapping)]
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k not in _SKIPPED_KEYS and v is not None}
    return value


class AnthropicMessagesReader:
    """The Messages API: `system` (string or text blocks) and `messages` of role and content."""

    def part(self, block: Any) -> Part | None:
        if isinstance(block, str):
            block = {"type": "text", "text": block}
        if not isinstance(block, Mapping):
            return Part(kind="invalid", body={"!": type(block).__name__})
        kind = block.get("type")
        kind = kind if isinstance(kind, str) else "invalid"
        if kind == "text":
            text = block.get("text")
            text = text if isinstance(text, str) else ""
            if not text.strip():
                return None
            return Part(kind, {"type": kind, "text": text}, text=text)
        if kind == "thinking":
            body = {"type": kind, "thinking": block.get("thinking"), "signature": block.get("signature")}
            thought = block.get("thinking")
            return Part(kind, _clean(body), text=thought if isinstance(thought, str) else "")
        if kind == "redacted_thinking":
            return Part(kind, {"type": kind, "data": block.get("data")})
        if kind in _TOOL_CALL_KINDS:
            tool_id, name = block.get("id"), block.get("name")
            tool_input = block.get("input")
            body = {"type": kind, "id": tool_id, "name": name, "input": tool_input}
            return Part(kind, body, tool_id=tool_id if isinstance(tool_id, str) else None,
                        tool_name=name if isinstance(name, str) else None, tool_input=tool_input)
        if kind == "tool_result":
            tool_id = block.get("tool_use_id")
            content = block.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            content = [_clean(c) for c in content] if isinstance(content, list) else content
            body = {"type": kind, "tool_use_id": tool_id, "content": content,
                    "is_error": bool(block.get("is_error"))}
            return Part(kind, body, tool_id=tool_id if isinstance(tool_id, str) else None,
                        text=text_of(content))
        return Part(kind, _clean(block))

    def parts(self, content: Any) -> tuple[Part, ...]:
        blocks = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        found = (self.part(b) for b in blocks[:MAX_BLOCKS])
        return tuple(p for p in found if p is not None)

    def messages(self, body: Any) -> list[Message]:
        raw = body.get("messages") if isinstance(body, Mapping) else None
        if not isinstance(raw, list):
            return []
        return [self.message(index, message) for index, message in enumerate(raw[:MAX_MESSAGES])]

    def message(self, index: int, raw: Any) -> Message:
        """Message `index` of a request (`raw`: as the request has it)."""
        if not isinstance(raw, Mapping):
            return Message(index, "invalid", (), raw)
        role = raw.get("role")
        return Message(index, role if isinstance(role, str) else "invalid",
                       self.message_parts(index, raw.get("content")), raw)

    def message_parts(self, index: int, content: Any) -> tuple[Part, ...]:
        """The parts of the content of message `index` (a reader that remembers a session's
        messages finds them by their place)."""
        return self.parts(content)

    def system_texts(self, body: Any) -> list[str]:
        system = body.get("system") if isinstance(body, Mapping) else None
        if isinstance(system, str):
            return [system]
        if isinstance(system, list):
            return [t for t in (b.get("text") for b in system[:MAX_BLOCKS] if isinstance(b, Mapping))
                    if isinstance(t, str)]
        return []

    def response_parts(self, response: Any) -> list[Part]:
        content = response.get("content") if isinstance(response, Mapping) else None
        return list(self.parts(content))

    def turn_parts(self, body: Any, response: Any) -> list[Part]:
        return self.response_parts(response)
