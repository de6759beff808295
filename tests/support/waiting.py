"""Waiting on conditions instead of sleeping: poll until something holds, or fail saying what did not.

A test that sleeps "long enough" is slow when the machine is fast and flaky when it is slow;
these return as soon as the condition holds and time out with a message naming it.
`wait_until` / `assert_eventually` are for async tests, the `_blocking` forms for tests that
drive subprocesses or threads from a plain function.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["assert_eventually", "assert_eventually_blocking", "wait_until", "wait_until_blocking"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.02


async def wait_until(condition: Callable[[], T | Awaitable[T]], *, timeout: float = DEFAULT_TIMEOUT,
                     interval: float = DEFAULT_INTERVAL, what: str = "the condition") -> T:
    """Polls `condition` (a function, sync or async) until it returns something truthy, and
    returns that; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def assert_eventually(assertion: Callable[[], object], *, timeout: float = DEFAULT_TIMEOUT,
                            interval: float = DEFAULT_INTERVAL) -> None:
    """Runs `assertion` (sync or async) until it stops raising AssertionError; after `timeout`
    seconds its last AssertionError propagates, so the failure says what was wrong."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = assertion()
            if inspect.isawaitable(result):
                await result
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


def wait_until_blocking(condition: Callable[[], T], *, timeout: float = DEFAULT_TIMEOUT,
                        interval: float = DEFAULT_INTERVAL, what: str = "the condition") -> T:
    """`wait_until` for plain functions (the condition must be sync)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def assert_eventually_blocking(assertion: Callable[[], object], *, timeout: float = DEFAULT_TIMEOUT,
                               interval: float = DEFAULT_INTERVAL) -> None:
    """`assert_eventually` for plain functions (the assertion must be sync)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            assertion()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)
