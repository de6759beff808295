"""An exchange's attempt at processing, and the results of one that gives no normal traces.

`ExchangeContext` is what is known of an exchange as processing goes (`observer.processor`).
An attempt that cannot make the exchange's traces ends here: a failed step (`StepFailed`) is
tried again later with exponential backoff (`retry`), and after `observer_max_attempts` tries
the exchange is stored as one `processing_failed` trace that names the step and the error
(`failure`); a call whose credential the upstream refused (`auth_rejected`) or never proved
(`unproven`) is counted on its exchange row and never traced. Nothing is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError

from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.core.storage import utcnow
from smoltbot.observer import pipeline, record_kinds
from smoltbot.observer.extraction import Extraction
from smoltbot.observer.providers import empty_extraction
from smoltbot.observer.queue import ClaimedExchange, Finished, Retry, StoredTrace
from smoltbot.observer.trace_builder import build_traces
from smoltbot.v1 import exchange_pb2

__all__ = [
    "RETRY_BASE",
    "RETRY_MAX",
    "ExchangeContext",
    "StepFailed",
    "UnprovenCredential",
    "auth_rejected",
    "failed_step",
    "failure",
    "retry",
    "unproven",
]

logger = logging.getLogger(__name__)

#: The pause before the first retry, doubled at each attempt up to the second figure (seconds).
RETRY_BASE, RETRY_MAX = 0.5, 60.0


class UnprovenCredential(Exception):
    """The upstream never answered the call (unreachable, or the client left first), so its
    credential is unproven, and no agent has it yet: the call must not create one."""


class StepFailed(Exception):
    """A step of processing an exchange failed (`step` names it): tried again, or recorded."""

    def __init__(self, step: str, error: BaseException | str) -> None:
        detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"{step}: {detail}")
        self.step = step


@dataclass
class ExchangeContext:
    """What is known of an exchange as processing goes, for the failure trace."""

    item: ClaimedExchange
    exchange: exchange_pb2.Exchange | None = None
    agent_id: str = ""
    session_id: str | None = None
    card: dict[str, Any] | None = None
    missing: tuple[str, ...] = ()
    #: When the call started (else ended; else when stored): the card's time, and the evidence's.
    call_at: datetime | None = None

    def decoded(self) -> exchange_pb2.Exchange | None:
        if self.exchange is None:
            try:
                self.exchange = pipeline.decode(self.item.payload)
            except DecodeError:
                return None
        return self.exchange


def auth_rejected(context: ExchangeContext) -> Finished:
    """The upstream refused the credential: no agent, no trace, only the count (the row's
    record_kind, `Store.record_counts`) and a note on the exchange row."""
    item = context.item
    exchange = context.decoded()
    status = exchange.response.status if exchange is not None else 0
    logger.info("exchange %s: upstream answered %d; the credential was refused: no agent, no trace",
                item.exchange_id, status)
    return Finished(item.exchange_id, item.agent_hash, "", None, [],
                    error=f"not traced: the upstream answered {status} (credential refused)")


def unproven(context: ExchangeContext) -> Finished:
    """No upstream answered the call and no agent has its credential: like a refused
    credential, no agent, no trace, only the count and a note on the exchange row."""
    item = context.item
    logger.info("exchange %s: the upstream never answered and no agent has this credential: "
                "no agent, no trace", item.exchange_id)
    return Finished(item.exchange_id, item.agent_hash, "", None, [],
                    error="not traced: the upstream never answered, and no agent has this credential")


def failed_step(context: ExchangeContext, error: StepFailed, *, max_attempts: int,
                store_reasoning: str) -> Finished | Retry:
    """A failed step: tried again later, or after the last attempt a processing_failed trace."""
    if context.item.attempts >= max_attempts:
        return failure(context, error, store_reasoning=store_reasoning)
    return retry(context.item, error)


def retry(item: ClaimedExchange, error: StepFailed) -> Retry:
    """The exchange tried again after a pause that doubles with each attempt."""
    delay = min(RETRY_MAX, RETRY_BASE * 2 ** max(0, item.attempts - 1))
    logger.warning("exchange %s attempt %d failed (%s); retrying in %.1fs",
                   item.exchange_id, item.attempts, error, delay)
    return Retry(item.exchange_id, utcnow() + timedelta(seconds=delay), str(error))


def failure(context: ExchangeContext, error: StepFailed, *, store_reasoning: str) -> Finished | Retry:
    """The exchange as one processing_failed trace that says what failed."""
    item = context.item
    detail = f"processing failed after {item.attempts} attempts at step '{error.step}': {error}"
    logger.error("exchange %s: %s", item.exchange_id, detail)
    exchange = context.decoded()
    if not context.agent_id:
        context.agent_id = item.agent_id or (exchange.agent_id if exchange is not None else "")
    failed = ExchangeOutcome.PROCESSING_FAILED
    extraction = Extraction(outcome=failed, error_type=failed,
                            error_message=detail)
    if exchange is not None:
        extraction = empty_extraction(exchange.provider, exchange.request.method, exchange.request.path,
                                      outcome=failed, error_type=failed, error_message=detail)
        extraction.http_status = exchange.response.status
        extraction.streamed = exchange.response.streamed
    extraction.missing.append(detail)
    last: Exception | None = None
    for card in (context.card or {}, {}):
        try:
            built = build_traces(
                exchange_id=item.exchange_id,
                agent_id=context.agent_id,
                session_id=context.session_id,
                card=card,
                extraction=extraction,
                analyses=None,
                exchange_started_at=pipeline.time_of(exchange.timings, "started_at")
                if exchange
                else None,
                exchange_ended_at=pipeline.time_of(exchange.timings, "ended_at") if exchange else None,
                observed_at=utcnow(),
                conversation_turn=None,
                store_reasoning=store_reasoning,
                analyzer_name="local",
                outcome=failed,
                outcome_detail=detail,
                http_status=exchange.response.status if exchange is not None else 0,
                environment=pipeline.environment_of(exchange) if exchange is not None else None,
            )
        except Exception as build_error:  # noqa: BLE001 - the card itself may be what breaks
            last = build_error
            continue
        if exchange is not None and not record_kinds.is_model_call(
                exchange.request.method, exchange.request.path, exchange.provider):
            # A failure to record API activity is still not a decision.
            for trace in built:
                trace["observation"]["record_kind"] = record_kinds.ACTIVITY
        return Finished(item.exchange_id, item.agent_hash, context.agent_id, context.session_id,
                        [StoredTrace(trace) for trace in built], failed=True, error=detail)
    # Not even a failure trace could be built: keep the exchange and keep trying.
    return retry(item, StepFailed("build failure trace", last or error))
