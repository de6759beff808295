"""Nudge mode: nothing is blocked; the session's next request tells the model what the card said.

After an answer whose tool calls the card would have stopped (deny or escalate) under a `nudge`
card, a note is kept for the agent's session (`add`). The next `POST /v1/messages` of that
session gets it (`apply`) as one more text block at the end of its last user message, where it
changes nothing the model has cached (the prompt cache reads tools, system and the earlier
messages as before): `texts.nudge_note`, starting with `texts.NUDGE_PREFIX`. A note is
delivered once; a request that cannot take it (an encoded or unreadable body, no user message
last) leaves it pending for the next one. Notes live in memory, per gateway process.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import Any

from smoltbot.core.aap.enforcement import Verdict

from .texts import nudge_note

__all__ = ["Nudges"]

_MAX_PENDING = 10_000


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

    def apply(self, agent_id: str, session_id: str, body: bytes,
              headers: Mapping[str, str]) -> tuple[bytes, str]:
        """(the body to forward, the note it carries or "")."""
        key = (agent_id, session_id)
        note = self._pending.get(key)
        if note is None or headers.get("content-encoding", "identity").strip().lower() != "identity":
            return body, ""
        try:
            payload: Any = json.loads(body)
        except ValueError:
            return body, ""
        messages = payload.get("messages") if isinstance(payload, dict) else None
        last = messages[-1] if isinstance(messages, list) and messages else None
        if not isinstance(last, dict) or last.get("role") != "user":
            return body, ""
        content = last.get("content")
        block = {"type": "text", "text": note}
        if isinstance(content, str):
            last["content"] = [{"type": "text", "text": content}, block]
        elif isinstance(content, list):
            content.append(block)
        else:
            return body, ""
        del self._pending[key]
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), note
