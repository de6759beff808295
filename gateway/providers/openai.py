"""OpenAI: the relay's spec. Its two streamed wire formats have a module each:
`openai_chat` (Chat Completions) and `openai_responses` (the Responses API)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smoltbot.core.identity import bearer_credential

from ._base import Reassembler
from .openai_chat import ChatCompletionReassembler
from .openai_responses import ResponsesReassembler
from .spec import GatewayError, ProviderSpec

__all__ = ["SPEC"]

_ERROR_TYPES = {
    GatewayError.INVALID_REQUEST: "invalid_request_error",
    # OpenAI answers a missing or wrong key with this type too (and code invalid_api_key for a wrong one).
    GatewayError.AUTHENTICATION: "invalid_request_error",
    GatewayError.NOT_FOUND: "invalid_request_error",
    GatewayError.TOO_LARGE: "invalid_request_error",
    GatewayError.UPSTREAM: "server_error",
    GatewayError.TIMEOUT: "server_error",
}


def _error_shape(_status: int, error: GatewayError, message: str) -> dict[str, Any]:
    """OpenAI's error body (openai-python raises its APIStatusError subclasses from it)."""
    return {"error": {"message": message, "type": _ERROR_TYPES[error], "param": None, "code": None}}


def _credential(headers: Mapping[str, str], _query: str) -> str | None:
    return bearer_credential(headers)


def _reassembler(path: str, _query: str, limit: int | None) -> Reassembler | None:
    if path.endswith("/chat/completions"):
        return ChatCompletionReassembler(limit)
    if path.endswith("/responses"):
        return ResponsesReassembler(limit)
    return None


SPEC = ProviderSpec(
    name="openai",
    prefix="/openai",
    upstream_setting="openai_upstream_url",
    credential=_credential,
    missing_credential="No API key: send your OpenAI API key as Authorization: Bearer <key>.",
    error_shape=_error_shape,
    base_url_hint="OPENAI_BASE_URL=http://<gateway>/openai/v1",
    reassembler=_reassembler,
)
