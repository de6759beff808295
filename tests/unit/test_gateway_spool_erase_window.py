"""Acked payloads leave the spool's files in one io-thread job per window under load, not one per
loop turn: each job wakes the io thread and then the loop, which cost a busy gateway's core more
than the call it followed (issue 16). A lone ack is still erased at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from smoltbot.gateway.spool import Spool


def exchange_id(n: int) -> str:
    return f"{n:032x}"


async def drained(spool: Spool) -> None:
    for _ in range(3):
        await asyncio.sleep(0)
    if spool._pending_io:
        await asyncio.gather(*list(spool._pending_io))


async def test_acks_one_per_loop_turn_are_erased_in_one_job_per_window(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000, erase_interval=0.3)
    spool.open()
    records = [spool.append(exchange_id(n), b"payload-%03d-" % n + b"x" * 2000) for n in range(40)]
    spool.append(exchange_id(99), b"still-waiting-" + b"k" * 2000)  # keeps the segment alive
    await drained(spool)
    jobs = spool.io_jobs
    started = time.monotonic()
    for record in records:  # one ack per loop turn, as acks arrive one per call at c=1
        assert record is not None
        spool.ack(record)
        await asyncio.sleep(0)
    assert time.monotonic() - started < 0.3, "the acks took longer than one window: rerun"
    # The first ack after a quiet moment goes at once; the others wait for the window's end.
    assert spool.io_jobs - jobs == 1
    await drained(spool)
    (segment,) = tmp_path.glob("*.seg")
    assert b"payload-000-" not in segment.read_bytes()
    assert b"payload-039-" in segment.read_bytes()
    await asyncio.sleep(0.35)
    await drained(spool)
    assert spool.io_jobs - jobs == 2
    data = segment.read_bytes()
    assert not any(b"payload-%03d-" % n in data for n in range(40))
    assert b"still-waiting-" in data
    await spool.close()


async def test_acks_still_waiting_for_their_window_are_erased_at_close(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000, erase_interval=60)
    spool.open()
    first = spool.append(exchange_id(1), b"first-acked-" + b"a" * 2000)
    second = spool.append(exchange_id(2), b"second-acked-" + b"b" * 2000)
    spool.append(exchange_id(3), b"still-waiting-" + b"k" * 2000)
    await drained(spool)
    assert first is not None and second is not None
    spool.ack(first)
    await drained(spool)
    spool.ack(second)  # inside the (long) window: waits for it, or for close
    await drained(spool)
    (segment,) = tmp_path.glob("*.seg")
    assert b"second-acked-" in segment.read_bytes()
    await spool.close()
    data = segment.read_bytes()
    assert b"first-acked-" not in data and b"second-acked-" not in data and b"still-waiting-" in data
