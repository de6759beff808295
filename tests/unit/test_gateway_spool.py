"""The gateway spool keeps every unacked exchange across restarts, and drops the oldest, counted,
when it is full."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from smoltbot.gateway.spool import Spool


def exchange_id(n: int) -> str:
    return f"{n:032x}"


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_acked_exchanges_leave_no_file_behind(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000)
    spool.open()
    records = [spool.append(exchange_id(n), b"payload %d" % n) for n in range(10)]
    await settle()
    assert spool.depth == 10 and list(tmp_path.glob("*.seg"))
    for record in records:
        assert record is not None
        spool.ack(record)
    await spool.close()
    assert spool.depth == 0
    assert list(tmp_path.iterdir()) == []


async def test_unacked_exchanges_are_replayed_after_a_restart_and_acked_ones_are_not(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000)
    spool.open()
    records = [spool.append(exchange_id(n), b"payload %d" % n) for n in range(6)]
    await settle()
    for record in records[:3]:
        assert record is not None
        spool.ack(record)
    await spool.close()

    again = Spool(tmp_path, 10_000_000)
    assert again.open() == 3
    replayed = list(again.unacked())
    assert [r.exchange_id for r in replayed] == [exchange_id(n) for n in range(3, 6)]
    assert [again.payload_of(r) for r in replayed] == [b"payload %d" % n for n in range(3, 6)]
    new = again.append(exchange_id(99), b"new")
    await settle()
    for record in [*replayed, new]:
        assert record is not None
        again.ack(record)
    await again.close()
    assert list(tmp_path.iterdir()) == []


async def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000)
    spool.open()
    spool.append(exchange_id(1), b"whole")
    spool.append(exchange_id(2), b"torn-in-half")
    await spool.close()
    segment = next(tmp_path.glob("*.seg"))
    segment.write_bytes(segment.read_bytes()[:-5])

    again = Spool(tmp_path, 10_000_000)
    assert again.open() == 1
    assert [again.payload_of(r) for r in again.unacked()] == [b"whole"]
    await again.close()


async def test_a_full_spool_drops_the_oldest_counts_and_logs_them(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    dropped: list[int] = []
    spool = Spool(tmp_path, 64 * 1024, segment_bytes=16 * 1024, on_drop=dropped.append)
    spool.open()
    payload = b"x" * 1000
    with caplog.at_level(logging.WARNING):
        for n in range(200):
            spool.append(exchange_id(n), payload)
            await settle()
    assert spool.size_bytes <= 64 * 1024
    assert sum(dropped) == spool.dropped > 0
    assert spool.depth + spool.dropped == 200
    remaining = [r.exchange_id for r in spool.unacked()]
    assert remaining == [exchange_id(n) for n in range(200 - spool.depth, 200)]  # the newest survive
    assert any("dropped" in message for message in caplog.messages)
    await spool.close()
    assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= 64 * 1024


async def test_payloads_over_the_memory_budget_are_read_back_from_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000, memory_bytes=10_000)
    spool.open()
    records = [spool.append(exchange_id(n), bytes([n % 256]) * 1000) for n in range(50)]
    await settle()
    assert records[0] is not None and records[0].payload is None  # evicted
    assert [spool.payload_of(r) for r in records if r is not None] == [bytes([n % 256]) * 1000 for n in range(50)]
    await spool.close()
