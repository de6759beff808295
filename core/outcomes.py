"""How an exchange ended: one vocabulary for the gateway, the Observer, the API and the CLI.

The wire form is the `smoltbot.v1.ExchangeOutcome` enum (what the gateway saw); traces, the
database, the REST API and the CLI use the lower-case names (`ExchangeOutcome`, a StrEnum, so a
member is equal to its name). Two outcomes exist only after the gateway: `processing_failed`
(the Observer could not read the exchange) and `capture_failed` (the gateway could not capture
it and sent a minimal record, `Exchange.capture_failure`).
"""

from __future__ import annotations

from enum import StrEnum

from smoltbot.v1 import exchange_pb2

__all__ = ["FAILURE_OUTCOMES", "UNREAD_OUTCOMES", "ExchangeOutcome"]


class ExchangeOutcome(StrEnum):
    #: Upstream answered 2xx and (for a stream) the stream ended cleanly.
    COMPLETE = "complete"
    #: Upstream answered with a non-2xx status.
    UPSTREAM_ERROR = "upstream_error"
    #: A stream carried an `error` event after the 200.
    MID_STREAM_ERROR = "mid_stream_error"
    #: The client went away before the response ended.
    CLIENT_ABORT = "client_abort"
    #: Upstream could not be reached or timed out before answering.
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    #: Upstream cut the connection in the middle of the response.
    UPSTREAM_DROPPED = "upstream_dropped"
    #: The Observer could not read the exchange (never on the wire).
    PROCESSING_FAILED = "processing_failed"
    #: The gateway could not capture the call (on the wire as `Exchange.capture_failure`).
    CAPTURE_FAILED = "capture_failed"

    def to_proto(self) -> exchange_pb2.ExchangeOutcome.ValueType:
        """The wire value; ValueError for the two outcomes that never travel as one."""
        try:
            return _TO_PROTO[self]
        except KeyError:
            raise ValueError(f"outcome {self.value} has no smoltbot.v1.ExchangeOutcome value") from None

    @classmethod
    def from_proto(cls, value: int, http_status: int = 0) -> ExchangeOutcome:
        """The outcome of a wire value. Unspecified (an older or careless producer) is judged by
        the HTTP status: none means upstream was not reached, 2xx complete, else an upstream error."""
        outcome = _FROM_PROTO.get(value)
        if outcome is not None:
            return outcome
        if http_status == 0:
            return cls.UPSTREAM_UNREACHABLE
        return cls.COMPLETE if 200 <= http_status < 300 else cls.UPSTREAM_ERROR


_TO_PROTO: dict[ExchangeOutcome, exchange_pb2.ExchangeOutcome.ValueType] = {
    ExchangeOutcome.COMPLETE: exchange_pb2.EXCHANGE_OUTCOME_COMPLETE,
    ExchangeOutcome.UPSTREAM_ERROR: exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR,
    ExchangeOutcome.MID_STREAM_ERROR: exchange_pb2.EXCHANGE_OUTCOME_MID_STREAM_ERROR,
    ExchangeOutcome.CLIENT_ABORT: exchange_pb2.EXCHANGE_OUTCOME_CLIENT_ABORT,
    ExchangeOutcome.UPSTREAM_UNREACHABLE: exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE,
    ExchangeOutcome.UPSTREAM_DROPPED: exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_DROPPED,
}
_FROM_PROTO: dict[int, ExchangeOutcome] = {value: outcome for outcome, value in _TO_PROTO.items()}

#: Every outcome but complete: the exchange is one "failure" trace named after its outcome.
FAILURE_OUTCOMES = frozenset(ExchangeOutcome) - {ExchangeOutcome.COMPLETE}
#: Failures on our side: nothing of the exchange was read, so no verdict is given.
UNREAD_OUTCOMES = frozenset({ExchangeOutcome.PROCESSING_FAILED, ExchangeOutcome.CAPTURE_FAILED})
