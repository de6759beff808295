"""Which model calls the enforcer reads, and with what: one `AnswerFormat` per provider API.

* Anthropic `POST /v1/messages`: `anthropic.rewrite_message`, `anthropic.SseEnforcer`; the
  nudge note goes at the end of the last user message.
* OpenAI `POST .../chat/completions`: `openai_chat.rewrite_chat_completion`,
  `openai_chat.ChatStreamEnforcer`; the note is a last system message.
* OpenAI `POST .../responses`: `openai_responses.rewrite_response`,
  `openai_responses.ResponsesStreamEnforcer`; the note is a last developer input item.
* Gemini `POST .../models/{m}:generateContent` and `:streamGenerateContent`:
  `gemini.rewrite_gemini`, `gemini.GeminiSseEnforcer` (`alt=sse`), `gemini.GeminiArrayEnforcer`
  (the JSON array); the note goes at the end of the last user content.

Every other call (errors, model lists, embeddings, token counts) passes untouched and unjudged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smoltbot.gateway.providers import SPECS

from . import anthropic, gemini, nudges, openai_chat, openai_responses
from .calls import Decide, Rewrite, StreamEnforcer

__all__ = ["ANTHROPIC", "OPENAI_RESPONSES", "AnswerFormat", "answer_format", "streams_as_json"]

#: (decide, replace=...) -> a stream enforcer.
StreamFactory = Callable[..., StreamEnforcer]
_GEMINI_CALL = re.compile(r"/models/[^/:]+:(?:generateContent|streamGenerateContent)$")


@dataclass(frozen=True, slots=True)
class AnswerFormat:
    name: str
    rewrite: Rewrite
    #: The enforcer of a `text/event-stream` answer.
    sse: StreamFactory
    #: Puts a nudge note into the request payload; False when this request cannot take it.
    place_note: Callable[[Any, str], bool]
    #: The enforcer of a stream sent as `application/json` (Gemini's array), if the API has one.
    json_stream: StreamFactory | None = None

    def stream(self, decide: Decide, *, replace: bool, sse: bool) -> StreamEnforcer:
        factory = self.sse if sse or self.json_stream is None else self.json_stream
        return factory(decide, replace=replace)


ANTHROPIC = AnswerFormat("anthropic", anthropic.rewrite_message, anthropic.SseEnforcer,
                         nudges.note_in_messages)
OPENAI_CHAT = AnswerFormat("openai_chat", openai_chat.rewrite_chat_completion, openai_chat.ChatStreamEnforcer,
                           nudges.note_in_chat)
OPENAI_RESPONSES = AnswerFormat("openai_responses", openai_responses.rewrite_response,
                                openai_responses.ResponsesStreamEnforcer, nudges.note_in_responses)
GEMINI = AnswerFormat("gemini", gemini.rewrite_gemini, gemini.GeminiSseEnforcer, nudges.note_in_gemini,
                      json_stream=gemini.GeminiArrayEnforcer)


def answer_format(provider: str, method: str, path: str) -> AnswerFormat | None:
    """The format of a model call's answer, None for any other call."""
    if method != "POST":
        return None
    path = path.rstrip("/")
    if provider == "anthropic":
        return ANTHROPIC if path == "/v1/messages" else None
    if provider == "openai":
        if path.endswith("/chat/completions"):
            return OPENAI_CHAT
        return OPENAI_RESPONSES if path.endswith("/responses") else None
    if provider == "gemini":
        return GEMINI if _GEMINI_CALL.search(path) else None
    return None


def streams_as_json(provider: str, path: str, query: str) -> bool:
    """Whether a 2xx `application/json` answer to this call is a stream (Gemini without alt=sse)."""
    spec = SPECS.get(provider)
    return spec is not None and spec.streams_as_json(path.rstrip("/"), query)
