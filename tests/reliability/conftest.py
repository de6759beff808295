"""Fixtures of the reliability suite: real services as subprocesses (see `harness`).

* ``stack_factory(upstream=..., database_url=..., env=...)``: a started `Stack` in the test's
  tmp dir, stopped at the end of the test. ``upstream`` is ``"process"`` (a stand-in
  subprocess, the default), ``"thread"`` (a `StandinThread`, as ``stack.upstream``) or a URL.
* ``shared_stack``: one stack for the whole session, for the scenarios that kill nothing
  (upstream faults, bad input, access). Its upstream is a `StandinThread`
  (``shared_stack.upstream``) and its request limit is 1 MiB, so a "huge body" is cheap.
  Each test uses credentials of its own, so agents (and their traces) never mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import Stack, StandinProcess, StandinThread

#: The shared stack's SMOLTBOT_MAX_REQUEST_BYTES.
SHARED_MAX_REQUEST_BYTES = 1024 * 1024
#: The shared stack's least seconds between two WAL scrubs (observer_scrub_interval; 5 by default):
#: short, so a test that must start outside the throttle waits this out, not the default.
SHARED_SCRUB_INTERVAL = 1.0


def _build(root: Path, upstream: str, database_url: str, env: dict[str, str] | None,
           cleanups: list[Callable[[], Any]]) -> Stack:
    upstream_object: Any = None
    if upstream == "process":
        upstream_object = StandinProcess(root / "standin.log")
        cleanups.append(upstream_object.stop)
        url = upstream_object.base_url
    elif upstream == "thread":
        upstream_object = StandinThread()
        cleanups.append(upstream_object.stop)
        url = upstream_object.base_url
    else:
        url = upstream
    stack = Stack(root, url, database_url=database_url, env=env)
    stack.upstream = upstream_object  # type: ignore[attr-defined]
    cleanups.insert(0, stack.close)  # services stop before their upstream
    stack.start()
    return stack


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    cleanups: list[Callable[[], Any]] = []
    count = 0

    def build(
        *, upstream: str = "process", database_url: str = "", env: dict[str, str] | None = None
    ) -> Stack:
        nonlocal count
        count += 1
        return _build(tmp_path / f"stack{count}", upstream, database_url, env, cleanups)

    try:
        yield build
    finally:
        for cleanup in cleanups:
            cleanup()


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cleanups: list[Callable[[], Any]] = []
    try:
        yield _build(tmp_path_factory.mktemp("shared-stack"), "thread", "",
                     {"SMOLTBOT_MAX_REQUEST_BYTES": str(SHARED_MAX_REQUEST_BYTES),
                      "SMOLTBOT_OBSERVER_SCRUB_INTERVAL": str(SHARED_SCRUB_INTERVAL)}, cleanups)
    finally:
        for cleanup in cleanups:
            cleanup()
