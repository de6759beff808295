"""Several gateway processes on one data dir and one port (gateway_processes, SO_REUSEPORT): each
owns its own spool slot; both serve calls; every call is recorded exactly once; a process killed
with SIGKILL, or no longer started, loses nothing it spooled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from smoltbot.core.settings import Settings
from smoltbot.gateway.slots import claim_slot, spool_directory
from smoltbot.gateway.spool import Spool
from tests.integration.gateway.helpers import CREDENTIAL, Services, free_port, unused_address, wait_for
from tests.support.anthropic_standin import AnthropicStandin

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT")]

MODEL = "claude-opus-4-7"


def unacked_on_disk(home: Path) -> int:
    """Exchanges still waiting in every slot's spool files (read with the spool's own loader)."""
    total = 0
    for directory in [home / "spool", *sorted((home / "spool").glob("[0-9]*"))]:
        if directory.is_dir() and any(directory.glob("*.seg")):
            total += sum(1 for _ in _peek(directory))
    return total


def _peek(directory: Path) -> Any:
    spool = Spool(directory, 1 << 40)
    try:
        spool.open()
        yield from spool.unacked()
    finally:
        spool._io.shutdown(wait=False)


async def call(http: httpx.AsyncClient, base_url: str, n: int) -> None:
    response = await http.post(base_url + "/anthropic/v1/messages",
                               json={"model": MODEL, "max_tokens": 5,
                                     "messages": [{"role": "user", "content": f"call {n}"}]},
                               headers={"x-api-key": CREDENTIAL, "connection": "close"})
    assert response.status_code == 200, response.text


async def exchanges_recorded(observer: Any) -> int:
    # exchange_id is the observer's primary key: N rows means N distinct calls, none twice.
    return sum((await observer.components.queue.exchange_counts()).values())


async def processed(observer: Any, count: int) -> None:
    """Waits until the observer has finished every exchange, so that it is stopped idle (an
    observer stopped mid-processing on SQLite can hang in its stop: see the helper's report)."""

    async def finished() -> bool:
        counts = await observer.components.queue.exchange_counts()
        return sum(counts.values()) == count and set(counts) <= {"done", "failed"}

    await wait_for(finished, 60, f"the observer to finish {count} exchanges")


# --------------------------------------------------------------------------- in one process


async def test_two_gateways_on_one_data_dir_own_separate_spools(services: Services, start, standin) -> None:
    observer = unused_address()
    first = await start(registry=unused_address(), observer=observer)
    second = await start(registry=unused_address(), observer=observer)
    assert first.gateway.slot is not None and second.gateway.slot is not None
    assert {first.gateway.slot.slot, second.gateway.slot.slot} == {0, 1}
    assert first.gateway.spool.directory != second.gateway.spool.directory
    assert first.gateway.dead_letters.directory != second.gateway.dead_letters.directory
    home = first.gateway.home
    assert first.gateway.spool.directory == home / "spool"  # a lone gateway's place, unchanged
    async with httpx.AsyncClient() as http:
        for n in range(3):
            await call(http, first.base_url, n)
        for n in range(5):
            await call(http, second.base_url, n)
        health = (await http.get(second.base_url + "/health")).json()
    assert health["process"] == {"pid": os.getpid(), "slot": 1, "processes": 1}
    assert health["spool"]["directory"] == str(home / "spool" / "1")
    await wait_for(lambda: first.gateway.spool.depth == 3 and second.gateway.spool.depth == 5, 10,
                   "each gateway to spool its own calls")


async def test_a_spool_left_by_a_stopped_process_is_shipped_by_a_running_one(
        services: Services, start, gateway_settings: Settings) -> None:
    """gateway_processes went from 2 to 1: slot 1's spool has no process any more; the one left
    finds it (at its next scan) and ships it once the observer is up."""
    registry = await services.registry()
    observer_address = unused_address()
    survivor = await start(registry=f"127.0.0.1:{registry.port}", observer=observer_address,
                           gateway_orphan_scan_seconds=0.2)
    leaving = await start(registry=f"127.0.0.1:{registry.port}", observer=observer_address)
    assert leaving.gateway.slot is not None and leaving.gateway.slot.slot == 1
    async with httpx.AsyncClient() as http:
        for n in range(7):
            await call(http, leaving.base_url, n)
        await call(http, survivor.base_url, 100)
    await wait_for(lambda: leaving.gateway.spool.depth == 7, 10, "the calls to be spooled")
    await leaving.stop()  # the observer is down: its 7 records stay in spool/1
    home = Path(gateway_settings.home)
    assert unacked_on_disk(home) >= 7

    await wait_for(lambda: 1 in survivor.gateway.adopted, 10, "the survivor to take spool/1")
    # While it ships spool/1, no new gateway may take that slot.
    newcomer = claim_slot(home)
    assert newcomer.slot == 2
    newcomer.release()

    observer = await services.observer(observer_address)
    await wait_for(lambda: not survivor.gateway.adopted and survivor.gateway.spool.depth == 0, 30,
                   "both spools to drain")
    assert await exchanges_recorded(observer) == 8
    await processed(observer, 8)
    assert not list(spool_directory(home, 1).glob("*.seg"))


# --------------------------------------------------------------------------- real processes


class Pool:
    """`smoltbot serve gateway` with gateway_processes=2, a real process tree."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.base_url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "smoltbot.cli.main", "serve", "gateway"],
                                        env=self.env, stdin=subprocess.DEVNULL)

    async def pids(self, want: int = 2, timeout: float = 30.0) -> dict[int, dict[str, Any]]:
        """Asks /health on fresh connections until `want` different processes have answered."""
        seen: dict[int, dict[str, Any]] = {}

        async def ask() -> bool:
            assert self.process is not None and self.process.poll() is None, "the supervisor exited"
            try:
                async with httpx.AsyncClient(timeout=2.0) as http:
                    health = (await http.get(self.base_url + "/health",
                                             headers={"connection": "close"})).json()
            except httpx.HTTPError:
                return False
            seen[health["process"]["pid"]] = health
            return len(seen) >= want

        await wait_for(ask, timeout, f"{want} gateway processes to answer")
        return seen

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, 60)


@pytest.fixture
async def pool_factory(gateway_settings: Settings, standin: AnthropicStandin
                       ) -> AsyncIterator[Callable[..., Pool]]:
    pools: list[Pool] = []

    def build(*, registry: str, observer: str) -> Pool:
        port = free_port()
        env = dict(os.environ,
                   SMOLTBOT_HOME=str(gateway_settings.home),
                   SMOLTBOT_HASH_SECRET=gateway_settings.hash_secret,
                   SMOLTBOT_GATEWAY_PROCESSES="2", SMOLTBOT_GATEWAY_HOST="127.0.0.1",
                   SMOLTBOT_GATEWAY_PORT=str(port), SMOLTBOT_UPSTREAM_URL=standin.base_url,
                   SMOLTBOT_REGISTRY_ADDRESS=registry, SMOLTBOT_OBSERVER_ADDRESS=observer,
                   SMOLTBOT_GATEWAY_ORPHAN_SCAN_SECONDS="0.5", SMOLTBOT_LOG_LEVEL="WARNING")
        pool = Pool(env, port)
        pools.append(pool)
        pool.start()
        return pool

    yield build
    for pool in pools:
        if pool.process is not None and pool.process.poll() is None:
            pool.process.kill()
            pool.process.wait()


async def test_two_processes_on_one_port_both_serve_and_each_call_is_recorded_once(
        services: Services, pool_factory: Callable[..., Pool], gateway_settings: Settings) -> None:
    registry = await services.registry()
    observer = await services.observer()
    pool = pool_factory(registry=f"127.0.0.1:{registry.port}", observer=f"127.0.0.1:{observer.port}")
    answered = await pool.pids(2)
    assert {health["process"]["slot"] for health in answered.values()} == {0, 1}
    # A second pool on the same port would be let in by SO_REUSEPORT: it must refuse instead.
    second = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "smoltbot.cli.main", "serve", "gateway"], env=pool.env,
        capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "already in use" in second.stderr
    count = 40
    async with httpx.AsyncClient() as http:
        await asyncio.gather(*(call(http, pool.base_url, n) for n in range(count)))
    await wait_for(lambda: exchanges_recorded(observer), 30, "the first exchanges")

    async def all_recorded() -> bool:
        return await exchanges_recorded(observer) >= count

    await wait_for(all_recorded, 30, f"{count} exchanges at the observer")
    assert await pool.stop() == 0
    assert await exchanges_recorded(observer) == count
    assert unacked_on_disk(Path(gateway_settings.home)) == 0
    await processed(observer, count)


async def test_a_process_killed_mid_run_loses_nothing_it_spooled(
        services: Services, pool_factory: Callable[..., Pool], gateway_settings: Settings) -> None:
    registry = await services.registry()
    observer_address = unused_address()  # down while the calls are made: everything stays spooled
    pool = pool_factory(registry=f"127.0.0.1:{registry.port}", observer=observer_address)
    await pool.pids(2)
    count = 30
    async with httpx.AsyncClient() as http:
        for n in range(count):
            await call(http, pool.base_url, n)
    home = Path(gateway_settings.home)

    async def depths() -> dict[int, int] | None:
        answered = await pool.pids(2)
        per_pid = {pid: health["spool"]["depth"] for pid, health in answered.items()}
        return per_pid if sum(per_pid.values()) == count else None

    per_pid = await wait_for(depths, 30, f"{count} exchanges spooled across the processes")
    await wait_for(lambda: unacked_on_disk(home) == count, 10, "every record written to its segment")
    victim = max(per_pid, key=lambda pid: per_pid[pid])
    assert per_pid[victim] > 0
    os.kill(victim, signal.SIGKILL)

    # The supervisor starts another process; it, or the sibling, ships the victim's slot.
    answered = await pool.pids(2)
    assert victim not in answered
    observer = await services.observer(observer_address)

    async def all_recorded() -> bool:
        return await exchanges_recorded(observer) >= count

    await wait_for(all_recorded, 45, f"all {count} exchanges at the observer")
    assert await pool.stop() == 0
    assert await exchanges_recorded(observer) == count
    assert unacked_on_disk(home) == 0
    await processed(observer, count)
