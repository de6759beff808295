"""The Observer's worker processes end with it: a SIGKILLed `smoltbot serve observer` leaves no
process behind (its forkserver and the workers forked from it used to run on for ever)."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from pathlib import Path

import grpc
import pytest

from smoltbot.observer.cpu_pool import default_workers
from smoltbot.v1 import observer_service_pb2 as pb
from smoltbot.v1 import observer_service_pb2_grpc
from tests.integration.observer.exchanges import make_exchange, message, new_exchange_id, text
from tests.reliability.harness import Stack

pytestmark = pytest.mark.skipif(
    default_workers() == 0, reason="one core: the Observer reads exchanges inline, with no workers")


def _live_members(group: int) -> list[tuple[int, str]]:
    """(pid, command) of the processes of a process group that are not zombies."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_bytes()
        except OSError:
            continue
        head, _, tail = raw.rpartition(b")")
        fields = tail.split()
        if len(fields) > 2 and int(fields[2]) == group and fields[0] != b"Z":
            members.append((int(stat.parent.name), head.split(b"(", 1)[1].decode(errors="replace")))
    return members


#: The installation's service credential (the services refuse calls without it).
_TOKEN = "workers-test-service-token-" + secrets.token_hex(16)


async def _ingest_one(address: str) -> None:
    exchange = make_exchange(secrets.token_hex(32), message(text("Hello.")), exchange_id=new_exchange_id())
    async with grpc.aio.insecure_channel(address) as channel:
        call = observer_service_pb2_grpc.ObserverServiceStub(channel).Ingest(
            metadata=(("smoltbot-service-credential", _TOKEN),))
        await call.write(pb.IngestRequest(exchange=exchange))
        await call.done_writing()
        assert [ack async for ack in call]


@pytest.mark.timeout(90)
async def test_sigkilled_observer_leaves_no_worker_process(tmp_path: Path) -> None:
    stack = Stack(tmp_path, "http://127.0.0.1:9", env={"SMOLTBOT_SERVICE_TOKEN": _TOKEN})
    try:
        stack.start("registry", "observer")
        observer = stack.pid("observer")
        await _ingest_one(stack.observer_address)
        deadline = time.monotonic() + 30
        # The pool starts with the first batch: the forkserver and a worker join the group.
        while len(_live_members(observer)) < 3:
            assert time.monotonic() < deadline, f"no worker processes appeared: {_live_members(observer)}"
            await asyncio.sleep(0.1)
        children = [pid for pid, _ in _live_members(observer) if pid != observer]

        assert stack.kill("observer", signal.SIGKILL) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while _live_members(observer):
            left = _live_members(observer)
            assert time.monotonic() < deadline, f"the killed observer's processes run: {left} ({children})"
            await asyncio.sleep(0.1)
    finally:
        stack.close()
