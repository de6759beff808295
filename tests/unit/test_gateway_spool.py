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
    assert [spool.payload_of(r) for r in records if r is not None] == [
        bytes([n % 256]) * 1000 for n in range(50)
    ]
    await spool.close()


async def wait_io(spool: Spool) -> None:
    await settle()
    if spool._pending_io:  # the erase runs on the spool's io thread
        await asyncio.gather(*list(spool._pending_io))


async def test_an_acked_payload_leaves_the_disk_at_once_while_its_segment_lives_on(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000_000)
    spool.open()
    secret = b"acked-payload-" + b"s" * 10_000
    kept = b"still-waiting-" + b"k" * 10_000
    acked_record = spool.append(exchange_id(1), secret)
    spool.append(exchange_id(2), kept)
    await settle()
    assert acked_record is not None
    spool.ack(acked_record)
    await wait_io(spool)
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    assert b"acked-payload-" not in data and kept in data  # the segment stays: one record is unacked
    await spool.close()
    # The erased record reads as acked on replay, and the one after it is still there.
    again = Spool(tmp_path, 10_000_000)
    assert again.open() == 1
    assert [again.payload_of(r) for r in again.unacked()] == [kept]
    await again.close()


async def test_a_full_disk_keeps_exchanges_in_memory_counts_them_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, 10_000_000, segment_bytes=64 * 1024)
    spool.open()
    # The next segments' files are /dev/full: every write fails with ENOSPC, as on a full disk.
    for seq in range(4):
        (tmp_path / f"{seq:012d}.seg").symlink_to("/dev/full")
    failures: list[int] = []
    spool._on_write_failure = failures.append
    records = [spool.append(exchange_id(n), b"p%d" % n + b"x" * 30_000) for n in range(6)]
    await settle()
    assert all(record is not None for record in records)
    assert spool.write_failures == 6 and sum(failures) == 6 and spool.depth == 6
    assert "cannot write" in caplog.text
    for n, record in enumerate(records):  # still there to be shipped, from memory
        assert record is not None and spool.payload_of(record).startswith(b"p%d" % n)
        spool.ack(record)
    assert spool.depth == 0
    await spool.close()
