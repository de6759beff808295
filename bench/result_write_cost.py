"""CPU time of one result write (`ExchangeQueue.finish`: the lease check, the traces, the exchanges
marked done, their payloads deleted), on a fresh SQLite database on tmpfs when there is one.

    .venv/bin/python bench/result_write_cost.py [--exchanges 1] [--writes 200]

Each write stores `--exchanges` leased exchanges of one tool-call trace each (no usage rows:
`bench/usage_write_cost.py` measures those); one exchange per write is what an observer does
at a trickle, where the write's hold of SQLite's lock is part of every trace's visibility delay.
Prints the process CPU per write (the first 5 left out). To compare two versions of the code,
run it with `PYTHONPATH=<a smoltbot package tree>` for each, alternating (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime

from smoltbot.core.storage import migrate, open_database
from smoltbot.observer.queue import ExchangeQueue, ExchangeRow, Finished, StoredTrace

_WARM_UP = 5
_OWNER = "observer-bench"


def _trace(exchange_id: str) -> StoredTrace:
    return StoredTrace({
        "trace_id": f"tr-{exchange_id}-0", "agent_id": "smolt-bench", "card_id": "card-1",
        "timestamp": datetime.now(UTC).isoformat(), "action": {"type": "tool_call", "name": "read_file"},
        "context": {"session_id": "sess-1", "metadata": {"exchange_id": exchange_id, "decision_index": 0}},
        "observation": {"tool_use_id": f"toolu_{exchange_id[:12]}", "outcome": "complete"},
        "verification": {"verified": True, "violations": []},
    })


async def run(exchanges: int, writes: int) -> float:
    scratch = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    db = open_database(f"sqlite:///{scratch}/queue.db")
    await migrate(db)
    queue = ExchangeQueue(db)
    cpu = 0.0
    try:
        for write in range(writes + _WARM_UP):
            await queue.insert_exchanges([
                ExchangeRow(uuid.uuid4().hex, "a" * 64, "smolt-bench", "sess-1", datetime.now(UTC),
                            b"x" * 6000, "decision") for _ in range(exchanges)])
            claimed = await queue.claim(_OWNER, exchanges, 30)
            done = [Finished(item.exchange_id, item.agent_hash, "smolt-bench", "sess-1",
                             [_trace(item.exchange_id)]) for item in claimed]
            began = time.process_time()
            report = await queue.finish(_OWNER, done, [])
            if write >= _WARM_UP:
                cpu += time.process_time() - began
            if len(report.written) != exchanges:
                raise SystemExit(f"wrote {len(report.written)} of {exchanges}")
    finally:
        await db.close()
    return cpu / writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exchanges", type=int, default=1)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    per_write = asyncio.run(run(args.exchanges, args.writes))
    print(f"ExchangeQueue.finish: {per_write * 1e3:.2f} ms CPU per write of {args.exchanges} exchanges")


if __name__ == "__main__":
    main()
