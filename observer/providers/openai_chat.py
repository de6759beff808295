"""OpenAI Chat Completions (`POST /v1/chat/completions`): the first choice's message.

Actions: `message.tool_calls`, function calls (`function.arguments`, JSON text: one that does
not parse is an unfinished call) and custom tool calls (`custom.input`, free text, kept as
`{"input": text}`), and the legacy `function_call`. Reasoning: OpenAI's own models return
none in this API (only a count of `reasoning_tokens`, which is said in `missing`); servers
that speak the same API and return it as `message.reasoning_content` (DeepSeek, vLLM) or
`message.reasoning` (OpenRouter, Ollama) are read. The reply text is never read for reasoning.

A call cut off is one still open when the output stopped: `finish_reason` "length", or a
stream that ended without one (the last call of the message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smoltbot.core.usage import API_OPENAI_CHAT
from smoltbot.observer.extraction import (
    MAX_RAW_INPUT,
    Extraction,
    ReasoningSegment,
    ToolCall,
    json_object_input,
)

from ._common import mark_unfinished, read_error_object, tool_names

__all__ = ["CHAT_COMPLETIONS", "ChatCompletionsFormat"]

_REASONING_FIELDS = ("reasoning_content", "reasoning")


def _call(raw: Any, index: int, ex: Extraction) -> ToolCall | None:
    if not isinstance(raw, dict):
        ex.missing.append("a tool call that is not an object was not read")
        return None
    kind = str(raw.get("type") or "function")
    found = raw.get(kind)
    spec: dict[str, Any] = found if isinstance(found, dict) else {}
    name = spec.get("name") if isinstance(spec.get("name"), str) and spec.get("name") else ""
    if not name:
        ex.missing.append(f"a {kind} tool call had no name")
        name = "unnamed_tool"
    call_id = str(raw.get("id") or "")
    if kind == "custom":
        text = spec.get("input")
        return ToolCall(id=call_id, name=name, input={"input": text if isinstance(text, str) else ""},
                        block_index=index, call_type="custom")
    arguments = spec.get("arguments")
    if isinstance(arguments, str):
        tool_input, valid, raw_input = json_object_input(arguments, name, ex)
    elif isinstance(arguments, dict):
        tool_input, valid, raw_input = arguments, True, ""
    else:
        ex.missing.append(f"tool call '{name}' carried no arguments")
        tool_input, valid, raw_input = {}, True, ""
    return ToolCall(id=call_id, name=name, input=tool_input, block_index=index, input_valid=valid,
                    raw_input=raw_input[:MAX_RAW_INPUT], call_type=kind)


@dataclass(frozen=True)
class ChatCompletionsFormat:
    provider: str = "openai"
    api: str = API_OPENAI_CHAT

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.rstrip("/").endswith("/chat/completions")

    def read_request(self, request: dict[str, Any], path: str, ex: Extraction) -> str:
        ex.request_tools = tool_names(request.get("tools"), nested=True)
        model = request.get("model")
        return model if isinstance(model, str) else ""

    def read_error(self, data: Any, ex: Extraction) -> bool:
        return read_error_object(data, ex, type_keys=("type", "code"))

    def read_response(self, data: dict[str, Any], ex: Extraction) -> None:
        ex.message_id = str(data.get("id") or "")
        if isinstance(data.get("model"), str):
            ex.model = data["model"]
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            ex.missing.append("response has no choices")
            return
        if len(choices) > 1:
            ex.missing.append(f"{len(choices)} choices (n > 1): only the first is read as the agent's turn")
        choice = choices[0]
        finish = choice.get("finish_reason")
        ex.stop_reason = finish if isinstance(finish, str) else ""
        if not ex.stop_reason:
            ex.missing.append("stream ended without a finish_reason (truncated)" if ex.streamed
                              else "response has no finish_reason")
        message = choice.get("message")
        if not isinstance(message, dict):
            ex.missing.append("the choice has no message")
            return
        block = 0
        for field in _REASONING_FIELDS:
            text = message.get(field)
            if isinstance(text, str) and text.strip():
                ex.reasoning.append(ReasoningSegment("reasoning_content", text.strip(), block))
                block += 1
                break
        if not ex.reasoning:
            tokens = _reasoning_tokens(data.get("usage"))
            if tokens:
                ex.missing.append(f"the model reasoned ({tokens} reasoning tokens) but Chat Completions "
                                  "returns no reasoning")
        texts = [value.strip() for value in (message.get("content"), message.get("refusal"))
                 if isinstance(value, str) and value.strip()]
        ex.final_text = "\n\n".join(texts)
        calls = message.get("tool_calls")
        legacy = message.get("function_call")
        if not calls and isinstance(legacy, dict):
            calls = [{"type": "function", "function": legacy}]
        for raw in calls if isinstance(calls, list) else ():
            call = _call(raw, block, ex)
            if call is not None:
                ex.tool_calls.append(call)
                block += 1
        for position, call in enumerate(ex.tool_calls):
            if not call.input_valid:
                mark_unfinished(ex, position, "its arguments do not parse as JSON", note=False)
        if ex.tool_calls:
            if ex.stop_reason == "length":
                mark_unfinished(ex, len(ex.tool_calls) - 1,
                                "the response stopped at the token limit inside it")
            elif not ex.stop_reason and ex.streamed:
                mark_unfinished(ex, len(ex.tool_calls) - 1, "the stream ended inside it")


def _reasoning_tokens(usage: Any) -> int:
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    tokens = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0


CHAT_COMPLETIONS = ChatCompletionsFormat()
