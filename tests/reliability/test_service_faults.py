"""Services killed or cut off under traffic: every call still succeeds for the agent, and every
exchange ends up traced exactly once, with the right agent, once things come back."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.reliability.harness import (
    MODEL,
    CallResult,
    CallSpec,
    PgCluster,
    Stack,
    check_exchanges_whole,
    load_mix,
    new_credential,
    record_figures,
    run_calls,
    wait_until,
)


def _failures(results: list[CallResult]) -> list[str]:
    return [
        f"call {r.spec.index} ({r.spec.scenario}, stream={r.spec.stream}): {r.error}"
        for r in results
        if not r.ok
    ]


def _tool_ids(results: list[CallResult]) -> set[str]:
    return {tool_id for result in results for tool_id in result.tool_use_ids}


def _traced_tool_ids(traces: list[dict]) -> set[str]:
    return {t["observation"]["tool_use_id"] for t in traces if t["observation"].get("tool_use_id")}


async def _settled_traces(stack: Stack, agent_id: str, count: int, timeout: float) -> list[dict]:
    """The agent's traces once `count` exchanges are traced, re-read after a pause so that a
    late duplicate or extra exchange would show."""
    await asyncio.to_thread(stack.wait_for_exchanges, agent_id, count, timeout)
    await asyncio.to_thread(wait_until, lambda: stack.spool_depth() == 0, 30, "an empty gateway spool")
    await asyncio.sleep(1.0)
    return await asyncio.to_thread(stack.traces, agent_id)


@pytest.mark.timeout(200)
async def test_observer_sigkilled_mid_burst_then_restarted_traces_every_call_exactly_once(
        stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory()
    credential = new_credential("burst")
    # Every call returns a tool_use block whose id the stand-in derives from the (unique)
    # request: the traces can be matched to the calls one by one, not only counted.
    specs = [CallSpec(i, "thinking_tool_use", stream=i % 2 == 0) for i in range(200)]
    marks: dict[str, float] = {}

    async def fault(done: int) -> None:
        if done == 50:
            marks["killed"] = time.monotonic()
            marks["exit_code"] = stack.kill("observer", signal.SIGKILL)
        elif done == 130:
            await asyncio.to_thread(stack.start, "observer")
            marks["restarted"] = time.monotonic()

    started = time.monotonic()
    results = await run_calls(stack.anthropic_base_url, credential, specs, concurrency=16, on_done=fault)
    calls_done = time.monotonic()
    assert not _failures(results), _failures(results)
    assert marks["exit_code"] == -signal.SIGKILL
    # Processes the killed observer left running (its worker pool's forkserver, if it had one
    # up): reported, and ended by the harness at the end of the test.
    orphans = len(stack.leftover_groups())

    agent_id = await asyncio.to_thread(stack.resolve_agent, credential)
    traces = await _settled_traces(stack, agent_id, 200, timeout=150)
    traced = time.monotonic()
    by_exchange = check_exchanges_whole(traces)
    assert len(by_exchange) == 200
    assert _traced_tool_ids(traces) == _tool_ids(results)
    assert len(_tool_ids(results)) == 200
    assert {t["observation"]["outcome"] for t in traces} == {"complete"}
    assert {t["agent_id"] for t in traces} == {agent_id}
    record_figures(
        "observer_sigkill_burst",
        calls=200,
        streamed=100,
        concurrency=16,
        failed_calls=0,
        traced_exchanges=len(by_exchange),
        traces=len(traces),
        observer_down_s=round(marks["restarted"] - marks["killed"], 1),
        burst_s=round(calls_done - started, 1),
        all_traced_after_restart_s=round(traced - marks["restarted"], 1),
        process_groups_left_by_the_killed_observer=orphans,
    )


@pytest.mark.timeout(120)
async def test_registry_down_calls_succeed_and_traces_get_the_right_agent_once_it_is_back(
        stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory()
    warm, cold = new_credential("warm"), new_credential("cold")
    before = await run_calls(stack.anthropic_base_url, warm, load_mix(6), concurrency=4)
    assert not _failures(before)
    warm_agent = await asyncio.to_thread(stack.resolve_agent, warm)
    await asyncio.to_thread(stack.wait_for_exchanges, warm_agent, 6, 30)

    stack.kill("registry", signal.SIGKILL)
    down = time.monotonic()
    # The gateway must not make the user wait on a dead registry: it goes on without the agent id.
    async with httpx.AsyncClient(timeout=30) as client:
        probe = await client.post(
            stack.anthropic_base_url + "/v1/messages",
            headers={"x-api-key": cold},
            json={
                "model": MODEL,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "probe while registry is down"}],
            },
        )
    assert probe.status_code == 200, probe.text
    assert "x-smoltbot-agent" not in probe.headers
    cold_results = await run_calls(stack.anthropic_base_url, cold, load_mix(24), concurrency=8, run="cold")
    warm_results = await run_calls(stack.anthropic_base_url, warm, load_mix(10), concurrency=8, run="warm")
    assert not _failures(cold_results + warm_results), _failures(cold_results + warm_results)
    calls_s = time.monotonic() - down
    await asyncio.sleep(2.0)  # the observer has met the outage by now
    everything = await asyncio.to_thread(stack.api, "GET", "/v1/traces", params={"limit": 1000})
    assert everything.status_code == 200
    assert all(t["agent_id"] for t in everything.json()["items"]), "a trace was stored without its agent"

    await asyncio.to_thread(stack.start, "registry")
    back = time.monotonic()
    cold_agent = await asyncio.to_thread(stack.resolve_agent, cold)
    cold_traces = await _settled_traces(stack, cold_agent, 25, timeout=60)
    warm_traces = await _settled_traces(stack, warm_agent, 16, timeout=30)
    recovered_s = time.monotonic() - back
    assert len(check_exchanges_whole(cold_traces)) == 25
    assert len(check_exchanges_whole(warm_traces)) == 16
    assert {t["agent_id"] for t in cold_traces} == {cold_agent}
    assert {t["agent_id"] for t in warm_traces} == {warm_agent}
    assert _tool_ids(cold_results) <= _traced_tool_ids(cold_traces)
    record_figures("registry_down", calls_during_outage=35, failed_calls=0, traced_exchanges=25 + 16,
                   outage_s=round(back - down, 1), calls_during_outage_s=round(calls_s, 1),
                   all_traced_after_registry_back_s=round(recovered_s, 1))


@pytest.mark.timeout(150)
async def test_postgresql_stopped_mid_run_calls_succeed_and_every_exchange_is_traced_once_it_returns(
        stack_factory: Callable[..., Stack]) -> None:
    cluster = PgCluster()
    try:
        cluster.start()
        stack = stack_factory(database_url=cluster.url)
        warm, cold = new_credential("pgwarm"), new_credential("pgcold")
        first = await run_calls(stack.anthropic_base_url, warm, load_mix(10), concurrency=8, run="before")
        assert not _failures(first)
        warm_agent = await asyncio.to_thread(stack.resolve_agent, warm)
        await asyncio.to_thread(stack.wait_for_exchanges, warm_agent, 10, 30)

        await asyncio.to_thread(cluster.stop, "fast")
        down = time.monotonic()
        during = await run_calls(stack.anthropic_base_url, warm, load_mix(40), concurrency=8, run="during")
        cold_results = await run_calls(
            stack.anthropic_base_url, cold, load_mix(10), concurrency=8, run="cold"
        )
        assert not _failures(during + cold_results), _failures(during + cold_results)
        await asyncio.sleep(2.0)  # let the observer and registry run into the outage
        assert stack.spool_depth() > 0, "exchanges were acked while the database was down"

        await asyncio.to_thread(cluster.start)
        back = time.monotonic()
        cold_agent = await asyncio.to_thread(stack.resolve_agent, cold)
        warm_traces = await _settled_traces(stack, warm_agent, 50, timeout=90)
        cold_traces = await _settled_traces(stack, cold_agent, 10, timeout=60)
        recovered_s = time.monotonic() - back
        assert len(check_exchanges_whole(warm_traces)) == 50
        assert len(check_exchanges_whole(cold_traces)) == 10
        assert _tool_ids(during) <= _traced_tool_ids(warm_traces)
        assert {t["agent_id"] for t in cold_traces} == {cold_agent}
        for name in ("registry", "observer", "api", "gateway"):
            assert stack.services[name].running(), (
                f"{name} died with the database:\n{stack.log(name)[-3000:]}"
            )
        # The database's own files (tables, WAL, server log) hold no credential either.
        stack.close()
        await asyncio.to_thread(cluster.stop, "fast")
        leaks = stack.find([warm.encode(), cold.encode()], cluster.base)
        assert not leaks, f"credentials found in {leaks}"
        record_figures("postgresql_stopped", calls_during_outage=50, failed_calls=0, traced_exchanges=60,
                       outage_s=round(back - down, 1), all_traced_after_db_back_s=round(recovered_s, 1))
    finally:
        cluster.remove()


@pytest.mark.timeout(120)
async def test_gateway_sigkilled_with_a_full_spool_replays_it_after_restart(
        stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory()
    credential = new_credential("spool")
    warmup = await run_calls(stack.anthropic_base_url, credential, load_mix(4), concurrency=4, run="warm")
    assert not _failures(warmup)
    agent_id = await asyncio.to_thread(stack.resolve_agent, credential)
    await asyncio.to_thread(stack.wait_for_exchanges, agent_id, 4, 30)

    stack.kill("observer", signal.SIGKILL)
    spooled = await run_calls(
        stack.anthropic_base_url, credential, load_mix(40), concurrency=8, run="spooled"
    )
    assert not _failures(spooled), _failures(spooled)
    await asyncio.to_thread(wait_until, lambda: stack.spool_depth() == 40, 15, "40 spooled exchanges")
    await asyncio.sleep(0.3)  # spool writes are batched per loop turn; fsyncs on a 50 ms timer
    segments = list((stack.home / "spool").glob("*.seg"))
    assert segments, "nothing on disk in the spool"
    stack.kill("gateway", signal.SIGKILL)

    await asyncio.to_thread(stack.start, "observer", "gateway")
    restarted = time.monotonic()
    traces = await _settled_traces(stack, agent_id, 44, timeout=60)
    replay_s = time.monotonic() - restarted
    assert len(check_exchanges_whole(traces)) == 44
    assert _tool_ids(spooled) <= _traced_tool_ids(traces)
    assert "40 spooled exchanges to replay" in stack.log("gateway")
    assert not list((stack.home / "spool").glob("*.seg")) or stack.spool_depth() == 0
    record_figures("gateway_sigkill_spool", spooled_exchanges=40, spool_segments=len(segments),
                   replayed_and_traced=40, replay_to_traced_s=round(replay_s, 1))
