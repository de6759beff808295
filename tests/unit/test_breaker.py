"""The circuit breaker the gateway and the Observer share (core.breaker), on a clock moved by hand."""

from __future__ import annotations

import pytest

from smoltbot.core.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_it_opens_after_consecutive_failures_and_lets_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, reset_after=30.0, clock=clock)
    assert breaker.allow()
    assert breaker.failure() is False
    assert breaker.allow() and breaker.state == "closed"
    assert breaker.failure() is True, "the failure that opens it says so"
    assert breaker.state == "open" and breaker.is_open and not breaker.allow()
    clock.advance(29.9)
    assert breaker.state == "open" and not breaker.allow(), "open until reset_after has passed"
    clock.advance(0.1)
    assert breaker.state == "half_open" and not breaker.is_open
    assert breaker.allow() and breaker.probing, "half-open: one trial"
    assert not breaker.allow(), "only one trial at a time"
    assert breaker.failure() is False, "a failed trial re-opens, it does not open anew"
    assert breaker.state == "open"
    clock.advance(30.0)
    assert breaker.allow()
    assert breaker.success() is True, "closing an open breaker says it recovered"
    assert breaker.state == "closed" and breaker.allow() and breaker.consecutive == 0
    assert breaker.success() is False


def test_a_success_between_failures_starts_the_count_again() -> None:
    breaker = CircuitBreaker(failures=3, clock=FakeClock())
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"


def test_each_failed_trial_doubles_the_cooldown_up_to_the_maximum_and_success_resets_it() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=1.0, max_reset_after=5.0, clock=clock)
    breaker.failure()
    cooldowns = []
    for _ in range(5):
        waited = 0.0
        while not breaker.allow():
            clock.advance(0.25)
            waited += 0.25
        cooldowns.append(waited)
        breaker.failure()
    assert cooldowns == [1.0, 2.0, 4.0, 5.0, 5.0]
    clock.advance(5.0)
    assert breaker.allow()
    breaker.success()
    breaker.failure()
    clock.advance(1.0)
    assert breaker.allow(), "after a success the first cooldown is the shortest again"


def test_without_a_maximum_the_cooldown_stays_the_same() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=2.0, clock=clock)
    for _ in range(3):
        breaker.failure()
        clock.advance(1.9)
        assert not breaker.allow()
        clock.advance(0.1)
        assert breaker.allow()


def test_a_trial_without_a_verdict_lets_the_next_call_try() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=1.0, clock=clock)
    breaker.failure()
    clock.advance(1.0)
    assert breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.allow(), "the dependency answered (it refused the request): probe again"


@pytest.mark.parametrize(("failures", "reset_after"), [(0, 1.0), (1, -1.0)])
def test_nonsense_settings_are_refused(failures: int, reset_after: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=failures, reset_after=reset_after)
