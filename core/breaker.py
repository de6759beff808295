"""A circuit breaker: stop calling a dependency that keeps failing, and probe it now and then.

Closed -> open after `failures` consecutive failures. While open, `allow()` says no, so a call
costs nothing. After the cooldown one trial call is let through (half-open): its success closes
the breaker, its failure opens it again for a cooldown twice as long (up to `max_reset_after`;
equal to `reset_after` by default, i.e. no backoff).

Time comes from `clock` (seconds from any fixed point, `time.monotonic` by default), so tests
pass a clock they move by hand instead of sleeping. Not thread-safe: one event loop uses it.
Used by the gateway's identity cache (the Registry) and the Observer's Anthropic analyzer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failures: int = 3, reset_after: float = 30.0, *, max_reset_after: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if reset_after < 0:
            raise ValueError("reset_after must not be negative")
        self.threshold = failures
        #: The first cooldown; each failed trial doubles the current one, up to `max_reset_after`.
        self.min_reset_after = reset_after
        self.max_reset_after = reset_after if max_reset_after is None else max(reset_after, max_reset_after)
        self.clock = clock
        #: The cooldown of the current (or next) opening.
        self.reset_after = reset_after
        self.consecutive = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_after else "open"

    @property
    def is_open(self) -> bool:
        """Open and still cooling down: calls are refused until the cooldown has passed."""
        return self.state == "open"

    @property
    def probing(self) -> bool:
        """A trial call is under way: the others are still refused."""
        return self._trial

    def allow(self) -> bool:
        """Whether a call may go ahead now; in half-open state only the first (the trial) may."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> bool:
        """The call succeeded: the breaker closes. True when it was open (it recovered)."""
        was_open = self.opened_at is not None
        self.consecutive = 0
        self.opened_at = None
        self.reset_after = self.min_reset_after
        self._trial = False
        return was_open

    def failure(self) -> bool:
        """The call failed. True when this failure opened a closed breaker."""
        self.consecutive += 1
        self._trial = False
        if self.opened_at is not None:
            # A failed trial (or a late failure while open): cool down longer.
            self.reset_after = min(self.reset_after * 2, self.max_reset_after)
            self.opened_at = self.clock()
            return False
        if self.consecutive >= self.threshold:
            self.opened_at = self.clock()
            return True
        return False

    def release(self) -> None:
        """The trial call ended without saying whether the dependency is healthy (it refused the
        request itself): the next call may try again."""
        self._trial = False
