"""One exchange-outcome vocabulary (core.outcomes): the wire enum and the names are one table."""

from __future__ import annotations

import pytest

from smoltbot.core.outcomes import FAILURE_OUTCOMES, UNREAD_OUTCOMES, ExchangeOutcome
from smoltbot.v1 import exchange_pb2


def test_every_wire_outcome_has_a_name_and_comes_back() -> None:
    wire = [value for name, value in exchange_pb2.ExchangeOutcome.items() if not name.endswith("UNSPECIFIED")]
    named = {ExchangeOutcome.from_proto(value) for value in wire}
    assert len(named) == len(wire)
    for outcome in named:
        assert ExchangeOutcome.from_proto(outcome.to_proto()) is outcome
        # The name is the wire name without its prefix, lower-cased.
        wire_name = exchange_pb2.ExchangeOutcome.Name(outcome.to_proto())
        assert wire_name == "EXCHANGE_OUTCOME_" + outcome.value.upper()


@pytest.mark.parametrize("outcome", [ExchangeOutcome.PROCESSING_FAILED, ExchangeOutcome.CAPTURE_FAILED])
def test_outcomes_of_our_own_failures_never_travel_as_a_wire_value(outcome: ExchangeOutcome) -> None:
    with pytest.raises(ValueError, match=outcome.value):
        outcome.to_proto()


@pytest.mark.parametrize(("status", "expected"), [
    (0, ExchangeOutcome.UPSTREAM_UNREACHABLE), (200, ExchangeOutcome.COMPLETE),
    (204, ExchangeOutcome.COMPLETE), (302, ExchangeOutcome.UPSTREAM_ERROR),
    (429, ExchangeOutcome.UPSTREAM_ERROR), (500, ExchangeOutcome.UPSTREAM_ERROR),
])
def test_an_unspecified_outcome_is_judged_by_the_http_status(status: int, expected: ExchangeOutcome) -> None:
    assert ExchangeOutcome.from_proto(exchange_pb2.EXCHANGE_OUTCOME_UNSPECIFIED, status) is expected
    assert ExchangeOutcome.from_proto(99, status) is expected


def test_an_outcome_is_its_name_where_strings_are_stored() -> None:
    assert ExchangeOutcome.UPSTREAM_ERROR == "upstream_error"
    assert f"{ExchangeOutcome.CLIENT_ABORT}" == "client_abort" and str(ExchangeOutcome.COMPLETE) == "complete"
    assert "upstream_dropped" in FAILURE_OUTCOMES and "complete" not in FAILURE_OUTCOMES
    assert UNREAD_OUTCOMES < FAILURE_OUTCOMES
    assert set(FAILURE_OUTCOMES) | {ExchangeOutcome.COMPLETE} == set(ExchangeOutcome)
