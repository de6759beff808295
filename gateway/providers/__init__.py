"""One module per model provider's wire format, behind one interface.

Each streamed reply is fed to a `Reassembler` (`feed(bytes)` in any chunking, then
`close() -> bytes`, the final object as JSON) that rebuilds what that provider's official SDK
accumulates from the same bytes; `event_count`, `error_data` (the stream's error event,
verbatim), `problems`, `truncated` (beyond the byte `limit`) and `ended_cleanly` describe how the
stream went. `reassembler_for(provider, path)` picks the module from the relayed call, so the
gateway's capture needs no per-provider branch; the next provider is a new module here.

Each provider also has its relay spec (`ProviderSpec`, in `spec.py`): prefix, upstream
setting, credential rule, error shape, reassemblers. `SPECS` lists them; the relay serves each.

| provider | calls that stream | module |
|---|---|---|
| anthropic | `POST /v1/messages` | `anthropic` (wraps `smoltbot.gateway.sse`) |
| openai | `POST /v1/chat/completions` | `openai_chat` |
| openai | `POST /v1/responses` | `openai_responses` |
| gemini | `POST /v1beta/models/{m}:streamGenerateContent` | `gemini` (`alt=sse`, or the JSON array) |
"""

from __future__ import annotations

from . import anthropic, gemini, openai
from ._base import Reassembler
from .anthropic import MessagesReassembler
from .gemini import GeminiArrayReassembler, GeminiReassembler
from .openai_chat import ChatCompletionReassembler
from .openai_responses import ResponsesReassembler
from .spec import GatewayError, ProviderSpec

__all__ = [
    "PROVIDERS",
    "SPECS",
    "ChatCompletionReassembler",
    "GatewayError",
    "GeminiArrayReassembler",
    "GeminiReassembler",
    "MessagesReassembler",
    "ProviderSpec",
    "Reassembler",
    "ResponsesReassembler",
    "reassembler_for",
    "spec_for_path",
]

#: Every provider the gateway relays, by name.
SPECS: dict[str, ProviderSpec] = {spec.name: spec for spec in (anthropic.SPEC, openai.SPEC, gemini.SPEC)}
PROVIDERS = tuple(SPECS)


def reassembler_for(
    provider: str, path: str, query: str = "", *, limit: int | None = None
) -> Reassembler | None:
    """The reassembler for a streamed reply to `path` (the upstream path, after the gateway's
    `/anthropic`, `/openai` or `/gemini` prefix), or None when that call has no known stream
    format (the capture then keeps the raw body)."""
    spec = SPECS.get(provider)
    if spec is None:
        return None
    path, _, in_path = path.partition("?")
    return spec.reassembler(path.rstrip("/"), query or in_path, limit)


def spec_for_path(path: str) -> ProviderSpec | None:
    """The provider whose prefix `path` starts with (`/openai/...`), or None."""
    for spec in SPECS.values():
        if path.startswith(spec.prefix + "/"):
            return spec
    return None
