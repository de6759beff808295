"""Replicated services on one PostgreSQL, as separate processes: 2 gateways, 2 observers,
1 registry and 1 API. 300 calls through the official SDK are spread over both gateways; one
observer is SIGKILLed midway. Every call succeeds and exactly 300 traces come out.

What carries it: the gateways list both observers (SMOLTBOT_OBSERVER_ADDRESS="a,b", a
round-robin channel) and re-send unacked exchanges after their stream breaks; the observers
share the exchange queue through PostgreSQL row locks and leases, so what the killed one had
claimed is taken over once its lease expires (60 s by default, which is most of this test's
run time); the exchange id keeps every re-send and re-claim to one trace.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.integration.deploy.processes import ServiceProcess, base_env, start_service, start_standin

CALLS = 300
KILL_AFTER = 150
CONCURRENCY = 16
AGENTS = 5
#: The killed observer's leases expire after 60 s; then the survivor processes that work.
TRACES_DEADLINE = 150.0

pytestmark = pytest.mark.timeout(300)


async def all_traces(http: httpx.AsyncClient, api_url: str) -> list[dict[str, Any]]:
    traces: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        reply = await http.get(f"{api_url}/v1/traces", params=params)
        reply.raise_for_status()
        page = reply.json()
        traces += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return traces


async def test_two_of_each_share_the_work_and_lose_nothing_when_an_observer_is_killed(
        postgres_database: str, tmp_path: Path) -> None:
    database_url = postgres_database
    logs = tmp_path / "logs"
    common = base_env(
        SMOLTBOT_DATABASE_URL=database_url,
        SMOLTBOT_HASH_SECRET="replica-test-secret",
        SMOLTBOT_SERVICE_TOKEN="replica-test-service-token-0123456789",
        SMOLTBOT_LOG_LEVEL="INFO",
    )

    def env(name: str, **values: str) -> dict[str, str]:
        return {**common, "SMOLTBOT_HOME": str(tmp_path / name), **values}

    processes: list[ServiceProcess] = []
    try:
        standin = start_standin(base_env(), logs)
        processes.append(standin)
        registry = start_service("registry", "registry", env("registry"), logs, "--listen", "127.0.0.1:0")
        processes.append(registry)
        registry.wait_listening()

        observers = [
            start_service(
                name,
                "observer",
                env(name, SMOLTBOT_REGISTRY_ADDRESS=registry.address),
                logs,
                "--listen",
                "127.0.0.1:0",
            )
            for name in ("observer-1", "observer-2")
        ]
        processes += observers
        for observer in observers:
            observer.wait_listening()
        observer_list = ",".join(observer.address for observer in observers)

        clients = {"SMOLTBOT_REGISTRY_ADDRESS": registry.address, "SMOLTBOT_OBSERVER_ADDRESS": observer_list}
        gateways = [
            start_service(
                name, "gateway", env(name, SMOLTBOT_UPSTREAM_URL=standin.url, **clients), logs, "--port", "0"
            )
            for name in ("gateway-1", "gateway-2")
        ]
        api = start_service("api", "api", env("api", **clients), logs, "--port", "0")
        processes += [*gateways, api]
        for process in (*gateways, api):
            process.wait_listening()

        sdks = [
            anthropic.AsyncAnthropic(
                base_url=f"{gateway.url}/anthropic",
                api_key=f"sk-ant-api03-replica-{n}",
                max_retries=0,
                timeout=30.0,
            )
            for gateway in gateways
            for n in range(AGENTS)
        ]
        gate = asyncio.Semaphore(CONCURRENCY)
        done = 0
        per_gateway = [0, 0]

        async def call(i: int) -> str:
            nonlocal done
            gateway = i % 2
            async with gate:
                message = await sdks[gateway * AGENTS + (i // 2) % AGENTS].messages.create(
                    model="claude-haiku-4-5", max_tokens=64,
                    messages=[{"role": "user", "content": f"call {i}: say something short"}])
            per_gateway[gateway] += 1
            done += 1
            if done == KILL_AFTER:
                observers[0].kill()
            return message.id

        try:
            ids = await asyncio.gather(*(call(i) for i in range(CALLS)))
        finally:
            await asyncio.gather(*(sdk.close() for sdk in sdks))
        assert len(ids) == CALLS and all(ids), "every call through the gateways succeeded"
        assert per_gateway == [CALLS // 2, CALLS // 2]
        assert observers[0].process.returncode == -9, "the first observer was SIGKILLed midway"

        async with httpx.AsyncClient(timeout=30.0) as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TRACES_DEADLINE
            traces = await all_traces(http, api.url)
            while len(traces) < CALLS and loop.time() < deadline:
                await asyncio.sleep(1.0)
                traces = await all_traces(http, api.url)
            exchange_ids = {trace["observation"]["exchange_id"] for trace in traces}
            assert len(traces) == CALLS, (f"{len(traces)} traces, {len(exchange_ids)} exchanges; "
                                          f"survivor log:\n{observers[1].log()}")
            assert len(exchange_ids) == CALLS
            assert len({trace["trace_id"] for trace in traces}) == CALLS
            assert {trace["observation"]["outcome"] for trace in traces} == {"complete"}
            # Both gateways delivered everything: nothing left in their spools.
            for gateway in gateways:
                health = (await http.get(f"{gateway.url}/health")).json()
                assert health["spool"]["depth"] == 0, health
                assert health["observer"]["reachable"], health

        # A moment later there are still exactly as many (no late duplicate from a re-send).
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(timeout=30.0) as http:
            assert len(await all_traces(http, api.url)) == CALLS

        for process in (*gateways, api, observers[1], registry):
            assert process.stop() == 0, f"{process.name} did not stop cleanly:\n{process.log()}"
    finally:
        for process in reversed(processes):
            process.stop(timeout=10)
