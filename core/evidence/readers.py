"""History readers for the other wire shapes that resend a whole history, and the one place that
picks a reader for an exchange (`reader_for`, by the API the provider module named).

Each reader gives the neutral shape of transcript.py, so the history check, provenance and say/do
are the same code for every API. What each API legitimately changes when a client resends its
history is either left out of the digested form (an equivalence) or read as a thinking part that
may be dropped (a recorded rewrite, `thinking_dropped`):

OpenAI Chat Completions (`messages`)
  * `function.arguments` is a JSON string that clients parse and re-serialise (other spacing, key
    order, escapes): digested as the parsed value; a string that does not parse stays a string.
  * `content` as a string or as a list of text parts, `null` or `""` beside `tool_calls`; the
    `refusal: null`, `annotations: []`, `audio` and `name` fields SDKs add or drop: left out.
  * `reasoning_content` / `reasoning` (DeepSeek, vLLM, OpenRouter): thinking, which DeepSeek
    requires clients to drop.
  * A `tool` message answers `tool_call_id`; a legacy `function` message answers its `name`.
OpenAI Responses (`input`, resent when the client keeps its own history: `store: false`)
  * The items of one response (reasoning, message, function_call, custom_tool_call, built-in
    `*_call` items) stand next to each other in the input and are read as one assistant message;
    findings name the input index of its first item (`Message.at`).
  * Item `id` and `status`, `annotations` and `logprobs` of output text, and output_text vs
    input_text vs a plain string content: left out. A reasoning item is thinking (its
    `encrypted_content`, or its summary and content texts when there is none).
  * With `previous_response_id` or a `conversation`, or `item_reference` items, the history is
    held server-side: the check says so and flags nothing (`server_side_history`).
Gemini generateContent (`contents`)
  * Role `model` is the assistant. Thought parts (`thought: true`) and each `thoughtSignature`
    are thinking parts: kept, or dropped (recorded); a changed signature is an edited turn.
  * A `functionCall` without an `id` (the Gemini API gives none) gets one from its name and
    arguments, numbered when the same call comes again; a `functionResponse` without an `id`
    answers the first unanswered call of its name in the model turn before it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from smoltbot.core.evidence.canonical import canonical_json
from smoltbot.core.evidence.transcript import (
    MAX_BLOCKS,
    MAX_MESSAGES,
    AnthropicMessagesReader,
    HistoryReader,
    Message,
    Part,
    text_of,
)
from smoltbot.core.usage import API_ANTHROPIC_MESSAGES, API_GEMINI, API_OPENAI_CHAT, API_OPENAI_RESPONSES

__all__ = [
    "HISTORY_KEYS",
    "ChatCompletionsReader",
    "GeminiMark",
    "GeminiReader",
    "ResponsesReader",
    "reader_for",
    "server_side_history",
]

_TEXT_PART_KINDS = frozenset({"text", "input_text", "output_text"})
#: Messages in the history that speak for the system, not the user (their text is system content).
_SYSTEM_ROLES = frozenset({"system", "developer"})
#: Fields of a content part that are metadata, not what was said.
_PART_METADATA = frozenset({"annotations", "logprobs", "cache_control", "id", "status"})


def _arguments(value: Any) -> Any:
    """A function call's arguments as the value they spell: clients re-serialise the string."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return {} if value is None else value


def _text_part(text: Any) -> Part | None:
    if not isinstance(text, str) or not text.strip():
        return None
    return Part("text", {"type": "text", "text": text}, text=text)


def _content_parts(content: Any) -> list[Part]:
    """A message's content: a string, or a list of parts (text in any of its spellings, refusals,
    images and files kept as they are but for their metadata)."""
    if isinstance(content, str):
        found = _text_part(content)
        return [found] if found else []
    parts: list[Part] = []
    for item in content[:MAX_BLOCKS] if isinstance(content, list) else ():
        if isinstance(item, str):
            item = {"type": "text", "text": item}
        if not isinstance(item, Mapping):
            parts.append(Part("invalid", {"!": type(item).__name__}))
            continue
        kind = item.get("type")
        if kind in _TEXT_PART_KINDS or (kind is None and "text" in item):
            found = _text_part(item.get("text"))
        elif kind == "refusal":
            refusal = item.get("refusal")
            found = Part("refusal", {"type": "refusal", "refusal": refusal},
                         text=refusal if isinstance(refusal, str) else "")
        else:
            kind = kind if isinstance(kind, str) else "invalid"
            found = Part(kind, {k: v for k, v in item.items() if k not in _PART_METADATA and v is not None})
        if found is not None:
            parts.append(found)
    return parts


def _system_messages(raw: Any) -> list[str]:
    """The texts of the system and developer messages of a history (read apart from the rest: a
    resumed call reads only the messages that are new)."""
    if not isinstance(raw, list):
        return []
    return [p.text for m in raw[:MAX_MESSAGES] if isinstance(m, Mapping) and m.get("role") in _SYSTEM_ROLES
            for p in _content_parts(m.get("content")) if p.text]


def _result_content(content: Any) -> Any:
    """A tool result's content, one spelling for a string and a list of text parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [p.body for p in _content_parts(content)]
    return content


def _tool_result(tool_id: Any, content: Any, name: Any = None) -> Part:
    tool_id = tool_id if isinstance(tool_id, str) and tool_id else None
    body = {"type": "tool_result", "tool_use_id": tool_id, "content": _result_content(content)}
    return Part("tool_result", body, tool_id=tool_id, tool_name=name if isinstance(name, str) else None,
                text=text_of(content))


def _tool_call(kind: str, tool_id: Any, name: Any, tool_input: Any, *, wire_id: bool = True) -> Part:
    tool_id = tool_id if isinstance(tool_id, str) and tool_id else None
    name = name if isinstance(name, str) else None
    body: dict[str, Any] = {"type": kind, "name": name, "input": tool_input}
    if wire_id:
        body["id"] = tool_id
    return Part(kind, body, tool_id=tool_id, tool_name=name, tool_input=tool_input)


class _ListReader:
    """A request whose history is a list of messages, one wire element each (Chat, Gemini)."""

    array_key = ""

    def read(self, raw: Any) -> tuple[str, tuple[Part, ...]]:
        """One element's neutral role and parts (a function of the element alone)."""
        raise NotImplementedError

    def message(self, index: int, raw: Any) -> Message:
        role, parts = self.read(raw)
        return Message(index, role, parts, raw)

    def messages(self, body: Any) -> list[Message]:
        raw = body.get(self.array_key) if isinstance(body, Mapping) else None
        if not isinstance(raw, list):
            return []
        return [self.message(index, element) for index, element in enumerate(raw[:MAX_MESSAGES])]


class ChatCompletionsReader(_ListReader):
    """OpenAI Chat Completions: `messages` of system/developer/user/assistant/tool roles."""

    array_key = "messages"

    def read(self, raw: Any) -> tuple[str, tuple[Part, ...]]:
        if not isinstance(raw, Mapping):
            return "invalid", ()
        role = raw.get("role")
        if role == "assistant":
            return "assistant", tuple(self._assistant(raw))
        if role == "tool":
            return "tool", (_tool_result(raw.get("tool_call_id"), raw.get("content")),)
        if role == "function":  # the legacy function message answers by name
            name = raw.get("name")
            return "tool", (_tool_result(f"function:{name}", raw.get("content"), name),)
        return (role if isinstance(role, str) else "invalid"), tuple(_content_parts(raw.get("content")))

    def _assistant(self, message: Mapping[str, Any]) -> list[Part]:
        parts: list[Part] = []
        for field in ("reasoning_content", "reasoning"):
            thought = message.get(field)
            if isinstance(thought, str) and thought.strip():
                parts.append(Part("reasoning", {"type": "reasoning", "text": thought}, text=thought))
                break
        parts += _content_parts(message.get("content"))
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal.strip():
            parts.append(Part("refusal", {"type": "refusal", "refusal": refusal}, text=refusal))
        calls = message.get("tool_calls")
        legacy = message.get("function_call")
        if not calls and isinstance(legacy, Mapping):
            calls = [{"type": "function", "function": legacy, "id": f"function:{legacy.get('name')}"}]
        for call in calls[:MAX_BLOCKS] if isinstance(calls, list) else ():
            if not isinstance(call, Mapping):
                parts.append(Part("invalid", {"!": type(call).__name__}))
                continue
            kind = str(call.get("type") or "function")
            found = call.get(kind)
            spec: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            tool_input = ({"input": spec.get("input")} if kind == "custom"
                          else _arguments(spec.get("arguments")))
            parts.append(_tool_call("tool_use", call.get("id"), spec.get("name"), tool_input))
        return parts

    def system_texts(self, body: Any) -> list[str]:
        return _system_messages(body.get("messages") if isinstance(body, Mapping) else None)

    def response_parts(self, response: Any) -> list[Part]:
        choices = response.get("choices") if isinstance(response, Mapping) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, Mapping) else None
        return self._assistant(message) if isinstance(message, Mapping) else []

    def turn_parts(self, body: Any, response: Any) -> list[Part]:
        return self.response_parts(response)


#: Built-in tool calls the client runs (Responses); any other `*_call` item runs at OpenAI.
_CLIENT_BUILTINS = frozenset({"local_shell_call", "shell_call", "computer_call", "apply_patch_call"})
#: Fields of a built-in call item that are bookkeeping or results (as the provider module reads them).
_NOT_INPUT = frozenset({"id", "type", "status", "call_id", "output", "outputs", "results", "result",
                        "error", "pending_safety_checks", "acknowledged_safety_checks"})


class ResponsesReader:
    """OpenAI Responses: `instructions`, and `input` (a string or items) resent by the client."""

    def item(self, item: Any) -> tuple[str, list[Part]]:
        """One input or output item: ("assistant", parts) for what the model produced, else the
        role of the message or "tool" for a call's output."""
        if not isinstance(item, Mapping):
            return "invalid", [Part("invalid", {"!": type(item).__name__})]
        kind = item.get("type")
        role = item.get("role")
        if kind == "message" or (kind is None and isinstance(role, str)):
            parts = _content_parts(item.get("content"))
            return (role if isinstance(role, str) else "invalid"), parts
        if not isinstance(kind, str):
            return "invalid", [Part("invalid", {"!": "item without a type"})]
        if kind == "reasoning":
            texts: list[str] = [
                p["text"] for field in ("summary", "content") if isinstance(item.get(field), list)
                for p in item[field] if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
            encrypted = item.get("encrypted_content")
            body = ({"type": "reasoning", "encrypted_content": encrypted} if encrypted
                    else {"type": "reasoning", "texts": texts})
            return "assistant", [Part("reasoning", body, text="\n".join(texts))]
        call_id = item.get("call_id") or item.get("id")
        if kind == "function_call" or kind == "mcp_call" or kind == "mcp_approval_request":
            server = kind != "function_call"
            return "assistant", [_tool_call("server_tool_use" if server else "tool_use", call_id,
                                            item.get("name"), _arguments(item.get("arguments")))]
        if kind == "custom_tool_call":
            free = {"input": item.get("input")}
            return "assistant", [_tool_call("tool_use", call_id, item.get("name"), free)]
        if kind.endswith("_call"):
            tool_input = {k: v for k, v in item.items() if k not in _NOT_INPUT}
            return "assistant", [_tool_call("tool_use" if kind in _CLIENT_BUILTINS else "server_tool_use",
                                            call_id, kind.removesuffix("_call"), tool_input)]
        if kind.endswith("_call_output"):
            return "tool", [_tool_result(item.get("call_id"), item.get("output"))]
        return "other", [Part(kind, {k: v for k, v in item.items() if k not in ("id", "status")})]

    def messages(self, body: Any) -> list[Message]:
        raw = body.get("input") if isinstance(body, Mapping) else None
        if isinstance(raw, str):
            found = _text_part(raw)
            return [Message(0, "user", (found,) if found else (), raw)]
        if not isinstance(raw, list):
            return []
        return self.read_items(raw)[0]

    def read_items(self, raw: list[Any], kept: list[Message] | None = None,
                   spans: list[tuple[int, int]] | None = None) -> tuple[list[Message], list[tuple[int, int]]]:
        """The messages of the `input` items `raw`, after `kept` (messages read before of the same
        first items); with each message's span: how many first items a later request must resend
        as they were for the message to be read the same (a turn also needs the item that closed
        it: another assistant item would have extended it), and the item after it."""
        messages: list[Message] = list(kept or ())
        spans = list(spans or ())
        turn: list[Part] = []
        turn_at = 0
        start = spans[-1][1] if spans else 0
        for at, element in enumerate(raw[start:MAX_MESSAGES], start=start):
            role, parts = self.item(element)
            if role == "assistant":
                if not turn:
                    turn_at = at
                turn += parts
                continue
            if role == "other" and turn:
                continue  # bookkeeping inside a turn (mcp_list_tools...): not said, and not a break
            if turn:
                messages.append(Message(len(messages), "assistant", tuple(turn), None, turn_at))
                spans.append((at + 1, at))
                turn = []
            messages.append(Message(len(messages), role, tuple(parts), element, at))
            spans.append((at + 1, at + 1))
        if turn:
            end = min(len(raw), MAX_MESSAGES)
            messages.append(Message(len(messages), "assistant", tuple(turn), None, turn_at))
            spans.append((end + 1, end))
        return messages, spans

    def system_texts(self, body: Any) -> list[str]:
        instructions = body.get("instructions") if isinstance(body, Mapping) else None
        texts = [instructions] if isinstance(instructions, str) and instructions else []
        return texts + _system_messages(body.get("input") if isinstance(body, Mapping) else None)

    def response_parts(self, response: Any) -> list[Part]:
        output = response.get("output") if isinstance(response, Mapping) else None
        parts: list[Part] = []
        for item in output[:MAX_BLOCKS] if isinstance(output, list) else ():
            role, found = self.item(item)
            if role == "assistant":
                parts += found
        return parts

    def turn_parts(self, body: Any, response: Any) -> list[Part]:
        return self.response_parts(response)


def server_side_history(api: str, body: Any) -> str | None:
    """Why the request's history is not all in it (held by the provider), or None."""
    if api != API_OPENAI_RESPONSES or not isinstance(body, Mapping):
        return None
    if body.get("previous_response_id"):
        return "the history is held server-side (previous_response_id): only the new input items were sent"
    if body.get("conversation"):
        return "the history is held server-side (conversation): only the new input items were sent"
    items = body.get("input")
    if isinstance(items, list) and any(isinstance(i, Mapping) and i.get("type") == "item_reference"
                                       for i in items[:MAX_MESSAGES]):
        return "the input refers to items held server-side (item_reference)"
    return None


def _call_base(part: Part) -> str:
    digest = hashlib.sha256(canonical_json([part.tool_name, part.tool_input, part.kind])).hexdigest()
    return f"gemini:{part.tool_name}:{digest[:16]}"


@dataclass(frozen=True)
class GeminiMark:
    """Where a `contents` element left the numbering of id-less calls (`GeminiReader._numbered`),
    so that a later request resending it reads on from there: the bases of the id-less calls it
    numbered, the calls still unanswered after it, and the bases of the ids of its model turn's
    calls (what the relayed turn is numbered after)."""

    bases: tuple[str, ...]
    pending: tuple[tuple[str | None, str], ...]
    called: tuple[str, ...]


class GeminiReader(_ListReader):
    """Gemini generateContent: `systemInstruction` and `contents` of user and model turns."""

    array_key = "contents"

    def read(self, raw: Any) -> tuple[str, tuple[Part, ...]]:
        if not isinstance(raw, Mapping):
            return "invalid", ()
        role = raw.get("role")
        role = "assistant" if role == "model" else role if isinstance(role, str) else "user"
        return role, tuple(self._parts(raw.get("parts")))

    def _parts(self, raw: Any) -> list[Part]:
        parts: list[Part] = []
        for part in raw[:MAX_BLOCKS] if isinstance(raw, list) else ():
            if not isinstance(part, Mapping):
                parts.append(Part("invalid", {"!": type(part).__name__}))
                continue
            call, response, text = part.get("functionCall"), part.get("functionResponse"), part.get("text")
            if isinstance(call, Mapping):
                tool_id = call.get("id")
                parts.append(_tool_call("tool_use", tool_id, call.get("name"), call.get("args") or {},
                                        wire_id=bool(tool_id)))
            elif isinstance(response, Mapping):
                content = response.get("response")
                found = _tool_result(response.get("id"), content, response.get("name"))
                body = {"type": "tool_result", "name": found.tool_name, "content": content}
                if found.tool_id:
                    body["tool_use_id"] = found.tool_id
                leaves = content.values() if isinstance(content, Mapping) else [content]
                parts.append(replace(found, body=body, text="\n".join(
                    v if isinstance(v, str) else text_of(v) for v in leaves)))
            elif isinstance(part.get("executableCode"), Mapping):
                code = dict(part["executableCode"])
                parts.append(_tool_call("server_tool_use", None, "code_execution", code, wire_id=False))
            elif isinstance(text, str):
                if part.get("thought") is True:
                    parts.append(Part("thinking", {"type": "thinking", "thinking": text}, text=text))
                elif text.strip():
                    parts.append(Part("text", {"type": "text", "text": text}, text=text))
            else:
                other = {k: v for k, v in part.items() if k not in ("thoughtSignature", "thought")}
                if other:
                    parts.append(Part(next(iter(other)), other))
            signature = part.get("thoughtSignature")
            if isinstance(signature, str) and signature:
                parts.append(Part("thought_signature", {"type": "thought_signature", "signature": signature}))
        return parts

    def messages(self, body: Any) -> list[Message]:
        return self._numbered(super().messages(body), Counter())

    def read_contents(self, raw: list[Any], kept: list[Message], marks: list[GeminiMark]
                      ) -> tuple[list[Message], list[GeminiMark]]:
        """The messages of `contents` `raw`, after `kept` (messages read before of its first
        elements, with their marks): the calls after them numbered from where `kept` left off."""
        counts: Counter[str] = Counter()
        for mark in marks:
            counts.update(mark.bases)
        pending = list(marks[-1].pending) if marks else []
        new = [self.message(index, element) for index, element
               in enumerate(raw[len(kept):MAX_MESSAGES], start=len(kept))]
        marks = list(marks)
        return [*kept, *self._numbered(new, counts, pending, marks)], marks

    @staticmethod
    def _numbered(messages: list[Message], counts: Counter[str],
                  pending: list[tuple[str | None, str]] | None = None,
                  marks: list[GeminiMark] | None = None) -> list[Message]:
        """Ids for id-less calls (by content, numbered when the same call comes again) and for the
        id-less responses that answer them (by name, in the model turn before). `counts` and
        `pending`: where the messages before left the numbering; `marks`: gets each message's."""
        pending = pending if pending is not None else []
        found: list[Message] = []
        for message in messages:
            parts = list(message.parts)
            changed = False
            bases: list[str] = []
            if message.role == "assistant":
                pending = []
            for position, part in enumerate(parts):
                if part.is_tool_call:
                    if part.tool_id is None:
                        base = _call_base(part)
                        again = counts[base]
                        counts[base] += 1
                        bases.append(base)
                        # The same call made again is another turn: its ordinal is part of what is
                        # digested, or the two turns would be one.
                        parts[position] = part = replace(
                            part, tool_id=f"{base}#{again}" if again else base,
                            body={**part.body, "again": again} if again else part.body)
                        changed = True
                    pending.append((part.tool_name, part.tool_id or ""))
                elif part.kind == "tool_result" and part.tool_id is None and message.role != "assistant":
                    answered = next((i for i, (name, _) in enumerate(pending) if name == part.tool_name),
                                    None)
                    tool_id = (pending.pop(answered)[1] if answered is not None
                               else f"gemini:{part.tool_name}:?")
                    parts[position] = replace(part, tool_id=tool_id)
                    changed = True
            found.append(replace(message, parts=tuple(parts)) if changed else message)
            if marks is not None:
                marks.append(GeminiMark(tuple(bases), tuple(pending), tuple(
                    p.tool_id.split("#", 1)[0] for p in found[-1].parts
                    if message.role == "assistant" and p.is_tool_call and p.tool_id)))
        return found

    def system_texts(self, body: Any) -> list[str]:
        system = (body.get("systemInstruction") or body.get("system_instruction")
                  if isinstance(body, Mapping) else None)
        parts = system.get("parts") if isinstance(system, Mapping) else None
        if not isinstance(parts, list):
            return []
        return [p["text"] for p in parts[:MAX_BLOCKS]
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)]

    def _candidate_parts(self, response: Any) -> list[Part]:
        candidates = response.get("candidates") if isinstance(response, Mapping) else None
        first = candidates[0] if isinstance(candidates, list) and candidates else None
        content = first.get("content") if isinstance(first, Mapping) else None
        return self._parts(content.get("parts")) if isinstance(content, Mapping) else []

    def response_parts(self, response: Any) -> list[Part]:
        return self.turn_parts(None, response)

    def turn_parts(self, body: Any, response: Any) -> list[Part]:
        return self.turn_parts_after(self.messages(body) if body is not None else [], response)

    def turn_parts_after(self, messages: list[Message], response: Any,
                         marks: list[GeminiMark] | None = None) -> list[Part]:
        """`turn_parts`, given the request's messages as read already (and their marks)."""
        counts: Counter[str] = Counter()
        if marks is not None and len(marks) == len(messages):
            for mark in marks:
                counts.update(mark.called)
        else:
            for message in messages:
                for part in message.parts:
                    if message.role == "assistant" and part.is_tool_call and part.tool_id:
                        counts[part.tool_id.split("#", 1)[0]] += 1
        turn = Message(0, "assistant", tuple(self._candidate_parts(response)))
        return list(self._numbered([turn], counts)[0].parts)


#: The key of the array each API resends its history in (what a session's `RequestMemo` reuses).
HISTORY_KEYS: dict[str, str] = {
    API_ANTHROPIC_MESSAGES: "messages",
    API_OPENAI_CHAT: "messages",
    API_OPENAI_RESPONSES: "input",
    API_GEMINI: "contents",
}

_READERS: dict[str, HistoryReader] = {
    API_ANTHROPIC_MESSAGES: AnthropicMessagesReader(),
    API_OPENAI_CHAT: ChatCompletionsReader(),
    API_OPENAI_RESPONSES: ResponsesReader(),
    API_GEMINI: GeminiReader(),
}


def reader_for(api: str) -> HistoryReader | None:
    """The history reader of an exchange, by the API its provider module read it as
    (`Extraction.api`, chosen by provider and path: observer/providers); None: not one of them."""
    return _READERS.get(api)
