"""One module per provider API for reading its model calls, behind one interface.

A `WireFormat` says which calls it reads (`matches(method, path)` for its provider's
`Exchange.provider`) and how: the request's model, tool names and system prompt size
(`read_request`), the provider's error object (`read_error`), and the reply, the new assistant
turn, into reasoning segments, tool calls and reply text (`read_response`). Every module fills
the same `observer.extraction.Extraction`, so everything after extraction (decisions,
analysis, traces, verification, integrity, drift) is the same for every provider.

| provider | call | module |
|---|---|---|
| anthropic | `POST /v1/messages` | `anthropic` |
| openai | `POST /v1/chat/completions` | `openai_chat` |
| openai | `POST /v1/responses` | `openai_responses` |
| gemini | `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` | `gemini` |

`wire_format(provider, method, path)` is the registry: a call it finds is a model call (a
decision, `record_kinds`); any other call is API activity. The next provider is a new module
listed in `FORMATS`, and nothing else changes. Streams arrive reassembled by the gateway
(`smoltbot.gateway.providers`) into the object the same call answers with unstreamed, so
each module reads one shape.
"""

from __future__ import annotations

from typing import Any, Protocol

from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.observer.extraction import Extraction, decode_text, load_json

from . import anthropic, gemini, openai_chat, openai_responses

__all__ = ["FORMATS", "PROVIDERS", "WireFormat", "empty_extraction", "provider_of", "read_exchange",
           "wire_format"]


class WireFormat(Protocol):
    @property
    def provider(self) -> str:
        """The `Exchange.provider` whose calls this module reads."""
        ...

    @property
    def api(self) -> str:
        """The API read, as `core.usage` names it (`anthropic.messages`, `openai.chat`, ...)."""
        ...

    def matches(self, method: str, path: str) -> bool:
        """Whether a call (upstream path, without the gateway prefix or the query) is one of
        this API's model calls."""
        ...

    def read_request(self, request: dict[str, Any], path: str, ex: Extraction) -> str:
        """Fills the offered tool names and the system prompt size; returns the requested model.
        Never reads the conversation."""
        ...

    def read_error(self, data: Any, ex: Extraction) -> bool:
        """Whether `data` is this provider's error object (then `ex.error_type`/`error_message`
        are set)."""
        ...

    def read_response(self, data: dict[str, Any], ex: Extraction) -> None:
        """Reads the reply: id, model, stop reason, reasoning, tool calls, reply text."""
        ...


FORMATS: tuple[WireFormat, ...] = (
    anthropic.MESSAGES,
    openai_chat.CHAT_COMPLETIONS,
    openai_responses.RESPONSES,
    gemini.GENERATE_CONTENT,
)


#: Every provider whose model calls are read, as `Exchange.provider` and trace.observation.provider
#: name them.
PROVIDERS: tuple[str, ...] = tuple(dict.fromkeys(found.provider for found in FORMATS))


def provider_of(provider: str) -> str:
    """The provider of an exchange; records from before the gateway named it were Anthropic's."""
    return provider or "anthropic"


def wire_format(provider: str, method: str, path: str) -> WireFormat | None:
    """The format of a model call, or None when the call is not one (API activity)."""
    provider = provider_of(provider)
    path = path.split("?", 1)[0]
    for found in FORMATS:
        if found.provider == provider and found.matches(method.upper(), path):
            return found
    return None


def empty_extraction(provider: str, method: str, path: str, **fields: Any) -> Extraction:
    """An extraction of a call whose bodies are not read (a failure trace): its provider and API
    named all the same."""
    found = wire_format(provider, method, path)
    return Extraction(provider=provider_of(provider), api=found.api if found is not None else "", **fields)


def _format_for(provider: str, path: str) -> WireFormat:
    found = wire_format(provider, "POST", path) if path else None
    if found is not None:
        return found
    # No path (a test, a record that never named one): the provider's first API.
    provider = provider_of(provider)
    return next((f for f in FORMATS if f.provider == provider), anthropic.MESSAGES)


def read_exchange(request_body: bytes, response_body: bytes, *, http_status: int, streamed: bool,
                  outcome: str, stream_error: bytes = b"", provider: str = "", path: str = "") -> Extraction:
    """`observer.extraction.extract`: the whole exchange read with its provider's format."""
    found = _format_for(provider, path)
    ex = Extraction(http_status=http_status, streamed=streamed, outcome=outcome, provider=found.provider,
                    api=found.api)
    request_model = ""
    request = load_json(request_body) if request_body else None
    if isinstance(request, dict):
        request_model = found.read_request(request, path, ex)

    if stream_error:
        error_data = load_json(decode_text(stream_error, "stream error", ex.missing))
        if not found.read_error(error_data, ex):
            ex.error_type = "stream_error"
            ex.error_message = stream_error[:500].decode("utf-8", errors="replace")

    data: Any = None
    if not response_body:
        ex.missing.append("response body is empty")
    else:
        text = decode_text(response_body, "response", ex.missing)
        data = load_json(text)
        if data is None:
            ex.missing.append("response body is not JSON")
            if not ex.error_message and not 200 <= http_status < 300:
                ex.error_message = text[:500]
        elif found.read_error(data, ex):
            data = None
        elif not isinstance(data, dict):
            ex.missing.append("response body is not a JSON object")
            data = None

    if isinstance(data, dict):
        ex.parsed = True
        found.read_response(data, ex)
    if not ex.model:
        ex.model = request_model
    if ex.summary_only:
        ex.missing.append("only a summary of the reasoning was available: the provider does not return "
                          "the reasoning itself")
    if ex.failure and outcome == ExchangeOutcome.COMPLETE and not ex.error_type:
        ex.error_type = ex.failure
    return ex
