"""One module per model provider's wire format, behind one interface.

Each streamed reply is fed to a `Reassembler` (`feed(bytes)` in any chunking, then
`close() -> bytes`, the final object as JSON) that rebuilds what that provider's official SDK
accumulates from the same bytes; `event_count`, `error_data` (the stream's error event,
verbatim), `problems`, `truncated` (beyond the byte `limit`) and `ended_cleanly` describe how the
stream went. `reassembler_for(provider, path)` picks the module from the relayed call, so the
gateway's capture needs no per-provider branch; the next provider is a new module here.

| provider | calls that stream | module |
|---|---|---|
| anthropic | `POST /v1/messages` | `anthropic` (wraps `smoltbot.gateway.sse`) |
| openai | `POST /v1/chat/completions` | `openai_chat` |
| openai | `POST /v1/responses` | `openai_responses` |
| gemini | `POST /v1beta/models/{m}:streamGenerateContent` | `gemini` (`alt=sse`, or the JSON array) |
"""

from __future__ import annotations

from ._base import Reassembler
from .anthropic import MessagesReassembler
from .gemini import GeminiArrayReassembler, GeminiReassembler
from .openai_chat import ChatCompletionReassembler
from .openai_responses import ResponsesReassembler

__all__ = [
    "PROVIDERS",
    "ChatCompletionReassembler",
    "GeminiArrayReassembler",
    "GeminiReassembler",
    "MessagesReassembler",
    "Reassembler",
    "ResponsesReassembler",
    "reassembler_for",
]

PROVIDERS = ("anthropic", "openai", "gemini")


def reassembler_for(
    provider: str, path: str, query: str = "", *, limit: int | None = None
) -> Reassembler | None:
    """The reassembler for a streamed reply to `path` (the upstream path, after the gateway's
    `/anthropic`, `/openai` or `/gemini` prefix), or None when that call has no known stream
    format (the capture then keeps the raw body)."""
    path = path.split("?", 1)[0].rstrip("/")
    if provider == "anthropic":
        return MessagesReassembler(limit) if path.endswith("/messages") else None
    if provider == "openai":
        if path.endswith("/chat/completions"):
            return ChatCompletionReassembler(limit)
        if path.endswith("/responses"):
            return ResponsesReassembler(limit)
        return None
    if provider == "gemini":
        if path.endswith(":streamGenerateContent"):
            params = {part.partition("=")[0]: part.partition("=")[2] for part in query.split("&") if part}
            if params.get("alt") == "sse":
                return GeminiReassembler(limit)
            return GeminiArrayReassembler(limit)
        return None
    return None
