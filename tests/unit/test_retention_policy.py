"""How long an agent's data is kept: its card's audit.retention_days within the operator's bounds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from smoltbot.core.settings import load_settings
from smoltbot.observer.retention import RetentionPolicy

POLICY = RetentionPolicy(max_days=365, min_days=7, payload_ttl=timedelta(hours=72))


@pytest.mark.parametrize(("card", "days"), [
    ({"audit": {"retention_days": 90}}, 90),
    ({"audit": {"retention_days": 3}}, 7),  # the operator's minimum
    ({"audit": {"retention_days": 4000}}, 365),  # the operator's maximum
    ({"audit": {"retention_days": 0}}, 365),  # AAP's "not declared"
    ({"audit": {}}, 365),
    ({}, 365),
    (None, 365),
    ({"audit": {"retention_days": "thirty"}}, 365),
    ({"audit": {"retention_days": -5}}, 365),
])
def test_the_card_decides_within_the_operators_bounds(card: dict[str, object] | None, days: int) -> None:
    assert POLICY.days_for(card) == days


def test_a_minimum_above_the_maximum_wins() -> None:
    policy = RetentionPolicy.from_settings(load_settings(retention_min_days=30, retention_max_days=10))
    assert policy.days_for({"audit": {"retention_days": 5}}) == 30
    assert policy.days_for(None) == 30
