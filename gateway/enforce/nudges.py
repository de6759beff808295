"""Nudge mode: nothing is blocked; the session's next request tells the model what the card said.

After an answer whose tool calls the card would have stopped (deny or escalate) under a `nudge`
card, a note is kept for the agent's session (`add`). The next model call of that session, of
any provider, gets it (`apply`): `texts.nudge_note`, starting with `texts.NUDGE_PREFIX`, put at
the end of the conversation, the one place that changes nothing a prompt cache holds (tools,
system prompt and earlier turns stay byte for byte):

* Anthropic Messages: one more text block at the end of the last user message (after any
  `tool_result` blocks).
* OpenAI Chat Completions: one more message at the end, `{"role": "system", ...}` (`developer`
  when the request already speaks with developer messages).
* OpenAI Responses: one more input item at the end, a `developer` message (a string `input`
  becomes the equivalent user message first). `instructions` is left alone: it leads the prompt.
* Gemini: one more text part at the end of the last content when it is the user's (after any
  `functionResponse` parts). `systemInstruction` is left alone: it leads the prompt, and a call
  that names `cachedContent` may not set it.

A note is delivered once; a request that cannot take it (an encoded or unreadable body, no user
turn last) leaves it pending for the next one. Notes live in memory, per gateway process.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Mapping
from typing import Any

from smoltbot.core.aap.enforcement import Verdict

from .texts import nudge_note

__all__ = ["Nudges", "note_in_chat", "note_in_gemini", "note_in_messages", "note_in_responses"]

_MAX_PENDING = 10_000


def note_in_messages(payload: Any, note: str) -> bool:
    messages = payload.get("messages") if isinstance(payload, dict) else None
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return False
    content = last.get("content")
    block = {"type": "text", "text": note}
    if isinstance(content, str):
        last["content"] = [{"type": "text", "text": content}, block]
    elif isinstance(content, list):
        content.append(block)
    else:
        return False
    return True


def note_in_chat(payload: Any, note: str) -> bool:
    messages = payload.get("messages") if isinstance(payload, dict) else None
    if not isinstance(messages, list) or not messages:
        return False
    developer = any(isinstance(m, dict) and m.get("role") == "developer" for m in messages)
    messages.append({"role": "developer" if developer else "system", "content": note})
    return True


def note_in_responses(payload: Any, note: str) -> bool:
    if not isinstance(payload, dict):
        return False
    items = payload.get("input")
    if isinstance(items, str):
        items = payload["input"] = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        return False
    items.append({"type": "message", "role": "developer", "content": note})
    return True


def note_in_gemini(payload: Any, note: str) -> bool:
    contents = payload.get("contents") if isinstance(payload, dict) else None
    last = contents[-1] if isinstance(contents, list) and contents else None
    parts = last.get("parts") if isinstance(last, dict) and last.get("role", "user") == "user" else None
    if not isinstance(parts, list):
        return False
    parts.append({"text": note})
    return True


class Nudges:
    def __init__(self) -> None:
        self._pending: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, agent_id: str, session_id: str, calls: list[tuple[str, Verdict]]) -> None:
        key = (agent_id, session_id)
        self._pending[key] = nudge_note(calls)
        self._pending.move_to_end(key)
        while len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)

    def apply(self, agent_id: str, session_id: str, body: bytes, headers: Mapping[str, str],
              place: Callable[[Any, str], bool] = note_in_messages) -> tuple[bytes, str]:
        """(the body to forward, the note it carries or ""); `place` puts the note into the parsed
        request of the call's API (Anthropic Messages unless said)."""
        key = (agent_id, session_id)
        note = self._pending.get(key)
        if note is None or headers.get("content-encoding", "identity").strip().lower() != "identity":
            return body, ""
        try:
            payload: Any = json.loads(body)
        except ValueError:
            return body, ""
        if not place(payload, note):
            return body, ""
        del self._pending[key]
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), note
