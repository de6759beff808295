"""tests.support.waiting: returns as soon as the condition holds, fails naming what it waited for."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.waiting import (
    assert_eventually,
    assert_eventually_blocking,
    wait_until,
    wait_until_blocking,
)


async def test_wait_until_returns_the_first_truthy_value_of_a_sync_or_async_condition() -> None:
    calls = []

    def condition() -> list[int]:
        calls.append(1)
        return calls if len(calls) >= 3 else []

    assert await wait_until(condition, interval=0.001) == [1, 1, 1]

    async def ready() -> str:
        return "yes"

    assert await wait_until(ready) == "yes"


async def test_wait_until_times_out_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match="the moon"):
        await wait_until(lambda: False, timeout=0.05, interval=0.01, what="the moon")
    assert time.monotonic() - started < 2


async def test_assert_eventually_raises_the_last_assertion_when_it_never_holds() -> None:
    state = {"n": 0}

    def check() -> None:
        state["n"] += 1
        assert state["n"] >= 3, f"only {state['n']}"

    await assert_eventually(check, interval=0.001)
    state["n"] = -100
    with pytest.raises(AssertionError, match="only -"):
        await assert_eventually(check, timeout=0.05, interval=0.01)


def test_the_blocking_forms_wait_for_another_thread() -> None:
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    assert wait_until_blocking(done.is_set, timeout=5, interval=0.005, what="the timer")
    box: list[int] = []
    threading.Timer(0.05, box.append, args=(1,)).start()

    def check() -> None:
        assert box == [1]

    assert_eventually_blocking(check, timeout=5, interval=0.005)
    with pytest.raises(AssertionError, match="never"):
        wait_until_blocking(lambda: None, timeout=0.03, interval=0.01, what="never")
