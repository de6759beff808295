"""CPU time of one result write's usage rows (`usage_store.write_usage`: the sessions' turns read,
the calls numbered, one multi-row insert), on a fresh SQLite database on tmpfs when there is one.

    .venv/bin/python bench/usage_write_cost.py [--writes 150] [--calls 100] [--sessions 8]

Each write carries `--calls` calls spread over `--sessions` sessions (a main-agent call every 7th
starts a turn), later than every call before, as a saturated observer's result writes do. Prints
the process CPU per write (the first 10 left out). To compare two versions of the code, run it
with `PYTHONPATH=<a smoltbot package tree>` for each, alternating (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

from smoltbot.core.sessions import SubAgent, TurnStart
from smoltbot.core.storage import migrate, open_database
from smoltbot.core.usage import TokenUsage
from smoltbot.observer.accounting import ExchangeFacts
from smoltbot.observer.usage_store import UsageToWrite, write_usage

_WARM_UP = 10


async def run(writes: int, calls: int, sessions: int) -> float:
    scratch = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    db = open_database(f"sqlite:///{scratch}/usage.db")
    await migrate(db)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    sequence = 0
    cpu = 0.0
    try:
        for write in range(writes + _WARM_UP):
            items, occurred = [], {}
            for call in range(calls):
                sequence += 1
                exchange_id = uuid.uuid4().hex
                facts = ExchangeFacts(api="anthropic.messages", model="claude-sonnet-4-5",
                                      usage=TokenUsage("anthropic", input=900, output=300),
                                      session_rung="x-smoltbot-session", sub_agent=SubAgent(),
                                      turn=TurnStart(call % 7 == 0, sequence))
                session = call % sessions
                items.append(UsageToWrite(exchange_id, f"agent-{session}", f"session-{session}", facts,
                                          [{"trace_id": exchange_id}]))
                occurred[exchange_id] = start + timedelta(milliseconds=sequence)
            began = time.process_time()
            async with db.begin() as conn:
                await write_usage(conn, db.dialect, items, occurred)
            if write >= _WARM_UP:
                cpu += time.process_time() - began
    finally:
        await db.close()
    return cpu / writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=150)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=8)
    args = parser.parse_args()
    per_write = asyncio.run(run(args.writes, args.calls, args.sessions))
    print(f"write_usage: {per_write * 1e3:.2f} ms CPU per write of {args.calls} calls over {args.sessions} "
          f"sessions ({per_write * 1e6 / args.calls:.1f} us per call)")


if __name__ == "__main__":
    main()
