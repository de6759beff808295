"""The Messages API's stream reassembly (`smoltbot.gateway.sse`) behind the common interface."""

from __future__ import annotations

from typing import Any

from ..sse import MessageAccumulator
from ._base import Reassembler

__all__ = ["MessagesReassembler"]


class MessagesReassembler(Reassembler):
    """Delegates to `MessageAccumulator`, which keeps its own line decoder and limit."""

    kind = "anthropic"

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
