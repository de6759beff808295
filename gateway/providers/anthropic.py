"""Anthropic: the relay's spec (`SPEC`) and the Messages API's stream reassembly
(`smoltbot.gateway.sse`) behind the common interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smoltbot.core.identity import credential_from_headers

from ..sse import MessageAccumulator
from ._base import Reassembler
from .spec import GatewayError, ProviderSpec

__all__ = ["SPEC", "MessagesReassembler"]


class MessagesReassembler(Reassembler):
    """Delegates to `MessageAccumulator`, which keeps its own line decoder and limit."""

    kind = "anthropic"
    end_of_reply = "message_stop"

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(None)
        self.accumulator = MessageAccumulator(limit=limit)

    def feed(self, data: bytes) -> None:
        self.accumulator.feed(data)

    def close(self) -> bytes:
        if self._final is None:
            self.accumulator.close()
            self._final = self.accumulator.final_message_json()
            self.event_count = self.accumulator.event_count
            self.error_data = self.accumulator.error_data
            self.problems = self.accumulator.problems
        return self._final

    @property
    def truncated(self) -> bool:
        return self.accumulator.truncated

    @property
    def ended_cleanly(self) -> bool:
        return self.accumulator.ended_cleanly

    def _result(self) -> Any:  # pragma: no cover - close() is overridden
        raise NotImplementedError


_ERROR_TYPES = {
    GatewayError.INVALID_REQUEST: "invalid_request_error",
    GatewayError.AUTHENTICATION: "authentication_error",
    GatewayError.NOT_FOUND: "not_found_error",
    GatewayError.TOO_LARGE: "request_too_large",
    GatewayError.UPSTREAM: "api_error",
    GatewayError.TIMEOUT: "timeout_error",
}


def _error_shape(_status: int, error: GatewayError, message: str) -> dict[str, Any]:
    """The Messages API's error body, so the SDKs and Claude Code read it as usual."""
    return {"type": "error", "error": {"type": _ERROR_TYPES[error], "message": message}}


def _credential(headers: Mapping[str, str], _query: str) -> str | None:
    return credential_from_headers(headers)


def _reassembler(path: str, _query: str, limit: int | None) -> Reassembler | None:
    return MessagesReassembler(limit) if path.endswith("/messages") else None


SPEC = ProviderSpec(
    name="anthropic",
    prefix="/anthropic",
    upstream_setting="upstream_url",
    credential=_credential,
    missing_credential="No API key: send your Anthropic API key in the x-api-key header, "
    "or as Authorization: Bearer <key>.",
    error_shape=_error_shape,
    base_url_hint="ANTHROPIC_BASE_URL=http://<gateway>/anthropic",
    reassembler=_reassembler,
)
