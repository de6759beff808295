"""The records built from an exchange's envelope alone (method, path, status, timings), without
reading its bodies: the activity record of an API call that is not a model call, and the
failure trace of a minimal record (the gateway could not capture or ship the full exchange).
Decisions go through extraction and analysis instead (`pipeline`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.observer import record_kinds
from smoltbot.observer.pipeline import environment_of, outcome_of, time_of
from smoltbot.observer.providers import empty_extraction
from smoltbot.observer.trace_builder import build_activity_trace, build_traces
from smoltbot.v1 import exchange_pb2

__all__ = ["records_of"]

CAPTURE_FAILED = ExchangeOutcome.CAPTURE_FAILED
_DETAIL_CHARS = 2000


def records_of(exchange: exchange_pb2.Exchange, *, agent_id: str, session_id: str | None,
               card: dict[str, Any], observed_at: datetime, store_reasoning: str,
               missing: list[str] | None = None) -> list[dict[str, Any]]:
    """The traces of an activity exchange or of a minimal record (one either way)."""
    request, response = exchange.request, exchange.response
    outcome, detail = outcome_of(exchange), exchange.outcome_detail
    notes = list(missing or [])
    if exchange.capture_failure:
        # What failed is ours; how the call itself ended stays in the detail.
        ended = f"the call itself ended {outcome}" + (f" ({response.status})" if response.status else "")
        detail = f"the gateway could not capture the full exchange: {exchange.capture_failure}; {ended}"
        detail = detail[:_DETAIL_CHARS]
        notes.append(detail)
        outcome = CAPTURE_FAILED
    started, ended_at = time_of(exchange.timings, "started_at"), time_of(exchange.timings, "ended_at")
    environment = environment_of(exchange)
    if not record_kinds.is_model_call(request.method, request.path, exchange.provider):
        return [build_activity_trace(
            exchange_id=exchange.exchange_id.lower(), agent_id=agent_id, session_id=session_id, card=card,
            method=request.method, path=request.path, http_status=response.status, streamed=response.streamed,
            outcome=outcome, outcome_detail=detail, exchange_started_at=started, exchange_ended_at=ended_at,
            observed_at=observed_at, environment=environment, missing=notes, provider=exchange.provider,
        )]
    extraction = empty_extraction(exchange.provider, request.method, request.path, outcome=outcome,
                                  http_status=response.status, streamed=response.streamed,
                                  error_type=CAPTURE_FAILED,
                                  error_message=exchange.capture_failure[:_DETAIL_CHARS], missing=notes)
    return build_traces(
        exchange_id=exchange.exchange_id.lower(), agent_id=agent_id, session_id=session_id, card=card,
        extraction=extraction, analyses=None, exchange_started_at=started, exchange_ended_at=ended_at,
        observed_at=observed_at, conversation_turn=None, store_reasoning=store_reasoning,
        analyzer_name="local",
        outcome=outcome, outcome_detail=detail, http_status=response.status, environment=environment,
        request_method=request.method.upper(), request_path=request.path,
    )
