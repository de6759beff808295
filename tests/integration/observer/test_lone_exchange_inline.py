"""A lone exchange while the worker processes are idle is read in the Observer's main process
(no round trip to a worker), with the same result a worker gives; a burst still goes to them."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from smoltbot.observer import pipeline
from smoltbot.observer.attempts import ExchangeContext
from smoltbot.observer.queue import ClaimedExchange
from smoltbot.v1 import exchange_pb2
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.exchanges import make_exchange, message, thinking, tool_use


def _exchange(agent_hash: str, path: str) -> exchange_pb2.Exchange:
    return make_exchange(agent_hash, message(thinking("I will read the file, honestly."),
                                             tool_use("read_file", {"path": path}), stop_reason="tool_use"),
                         session_hint=path)


async def test_a_lone_exchange_is_read_inline_and_a_burst_by_the_workers(
        observer_stack: ObserverStack) -> None:
    await observer_stack.stop_observer()
    observer = await observer_stack.start_observer(observer_cpu_workers=1, evidence_enabled=False)
    processor = observer.components.processor
    pool = processor._pool
    assert pool is not None
    _, agent_hash = await observer_stack.agent()

    lone = _exchange(agent_hash, "/srv/lone")
    await observer_stack.ingest([lone])
    (trace,) = await observer_stack.traces_of(lone.exchange_id)
    assert trace.action.name == "read_file"
    assert pool.batches == 0  # read in the main process
    # ... and the workers were started meanwhile, for the next burst.
    deadline = time.monotonic() + 30
    while not getattr(pool._pool, "_processes", None):
        assert time.monotonic() < deadline, "the worker processes were not started"
        await asyncio.sleep(0.05)

    # The same exchange through a worker process gives the same result as in the main process.
    item = ClaimedExchange(lone.exchange_id, agent_hash, None, None, lone.SerializeToString(),
                           attempts=1, received_at=datetime.now(UTC))
    job = await processor._prepare(ExchangeContext(item))
    (inline,) = pipeline.compute_many([job])
    (worker,) = await pool.run([job])
    assert worker.trace_json == inline.trace_json and worker.step == inline.step == ""
    assert worker.traces == inline.traces

    burst = [_exchange(agent_hash, f"/srv/{i}") for i in range(48)]
    before = pool.batches
    await observer_stack.ingest(burst)
    found = await observer_stack.traces_by_exchange([e.exchange_id for e in burst])
    assert all(len(traces) == 1 for traces in found.values())
    assert pool.batches > before + 1  # batches, so the workers took part
