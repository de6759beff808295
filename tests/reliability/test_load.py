"""Load, CI-sized (the full soak is bench/soak.py): a few hundred calls at concurrency 32 through
the gateway, half streamed, with thinking and tool_use. Nothing fails, every call is traced
exactly once, the spool drains, the gateway's memory stays bounded, and afterwards no
credential is found anywhere in the data dir (database, WAL, spool, logs) or in any trace."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from tests.reliability.harness import (
    Stack,
    check_exchanges_whole,
    load_mix,
    new_credential,
    record_figures,
    run_calls,
    wait_until,
)

CALLS = 300
CONCURRENCY = 32
AGENTS = 4  # two with x-api-key, two with Authorization: Bearer
RSS_GROWTH_LIMIT_KB = 50 * 1024


@pytest.mark.timeout(150)
async def test_load_of_300_calls_at_concurrency_32_fails_nothing_traces_everything_and_leaks_no_credential(
        stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory()
    warm = new_credential("loadwarm")
    warmup = await run_calls(
        stack.anthropic_base_url, warm, load_mix(64), concurrency=CONCURRENCY, run="warm"
    )
    assert all(r.ok for r in warmup)
    rss_start = stack.rss_kb("gateway")

    credentials = [new_credential(f"load{n}") for n in range(AGENTS)]
    per_agent = CALLS // AGENTS
    started = time.monotonic()
    batches = await asyncio.gather(
        *(
            run_calls(
                stack.anthropic_base_url,
                credential,
                load_mix(per_agent),
                concurrency=CONCURRENCY // AGENTS,
                run=f"load{n}",
                bearer=n % 2 == 1,
            )
            for n, credential in enumerate(credentials)
        )
    )
    elapsed = time.monotonic() - started
    rss_end = stack.rss_kb("gateway")
    results = [result for batch in batches for result in batch]
    failed = [f"{r.spec}: {r.error}" for r in results if not r.ok]
    assert not failed, failed[:10]
    assert len(results) == CALLS

    traces_total = 0
    all_traces: list[dict] = []
    for credential, batch in zip(credentials, batches, strict=True):
        agent_id = await asyncio.to_thread(stack.resolve_agent, credential)
        await asyncio.to_thread(stack.wait_for_exchanges, agent_id, per_agent, 60)
        await asyncio.to_thread(wait_until, lambda: stack.spool_depth() == 0, 30, "an empty spool")
        traces = await asyncio.to_thread(stack.traces, agent_id)
        by_exchange = check_exchanges_whole(traces)
        assert len(by_exchange) == per_agent, (
            f"{agent_id}: {len(by_exchange)} exchanges traced of {per_agent}"
        )
        tool_ids = {tool_id for result in batch for tool_id in result.tool_use_ids}
        assert tool_ids == {
            t["observation"]["tool_use_id"] for t in traces if t["observation"].get("tool_use_id")
        }
        streamed = sum(1 for group in by_exchange.values() if group[0]["observation"]["streamed"])
        assert streamed == per_agent // 2
        assert sum(1 for t in traces if t["observation"]["reasoning"]["present"]) > 0
        traces_total += len(traces)
        all_traces.extend(traces)
    spool_depth = stack.spool_depth()
    assert spool_depth == 0
    growth = rss_end - rss_start
    assert growth < RSS_GROWTH_LIMIT_KB, f"gateway RSS grew {growth} KiB ({rss_start} -> {rss_end})"

    # No credential anywhere: traces as served, then every file of the data dir, logs included,
    # once the services have stopped and flushed.
    served = json.dumps(all_traces).encode()
    secrets = [c.encode() for c in [warm, *credentials]]
    assert not [s for s in secrets if s in served]
    stack.close()
    leaks = stack.find(secrets)
    assert not leaks, f"credentials found in {leaks}"
    files = sum(1 for _ in stack.files())
    record_figures(
        "load_ci", calls=CALLS, concurrency=CONCURRENCY, streamed=CALLS // 2, agents=AGENTS, failed_calls=0,
        traced_exchanges=CALLS, traces=traces_total, seconds=round(elapsed, 1),
        calls_per_s=round(CALLS / elapsed, 1), gateway_rss_start_kb=rss_start, gateway_rss_end_kb=rss_end,
        spool_depth_end=spool_depth, files_grepped=files, credential_hits=0,
    )
