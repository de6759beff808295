"""What a write transaction costs the Observer's process on SQLite, per transaction of the result
write's shape: a multi-row INSERT ... RETURNING, a SELECT of those rows, an UPDATE, a DELETE and
four small SELECTs (9 statements), through `Database.begin()` (each statement awaited on the
event loop) and, where the code has it, `Database.transact()` (the body run in the database's
thread in one hand-off). A task ticking every millisecond keeps the event loop busy, as intake
and gRPC do in the Observer.

    python bench/sqlite_statement_cost.py [--transactions 1500] [--rounds 3] [--baseline TREE]

Each measurement runs in a fresh process with the code under test first on its PYTHONPATH (a
`smoltbot` package tree, as `bench/observer_throughput.py --baseline` makes; the installed code
without `--code`). Rounds of the baseline and this code are interleaved; medians are printed,
with this code's as ratios of the baseline's. CPU is the whole process's (event loop and the
driver's thread); wall is the time per transaction, one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


async def measure(count: int, mode: str) -> dict[str, float]:
    import sqlalchemy as sa

    from smoltbot.core.storage import open_database

    items = sa.Table("items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("name", sa.String), sa.Column("n", sa.Integer))
    folder = tempfile.mkdtemp(prefix="smoltbot-statements-")
    db = open_database(f"sqlite:///{folder}/bench.db")
    async with db.begin() as conn:
        await conn.run_sync(items.metadata.create_all)

    async def body(conn: Any) -> None:
        rows = (await conn.execute(items.insert().returning(items.c.id),
                                   [{"name": "x", "n": i} for i in range(5)])).all()
        ids = [row[0] for row in rows]
        await conn.execute(sa.select(items.c.id, items.c.name).where(items.c.id.in_(ids)))
        await conn.execute(items.update().where(items.c.id == ids[0]).values(n=7))
        await conn.execute(items.delete().where(items.c.id == ids[1]))
        for _ in range(4):
            await conn.execute(sa.select(sa.func.count()).select_from(items).where(items.c.id > ids[0]))

    async def one() -> None:
        if mode == "transact":
            await db.transact(body)
        else:
            async with db.begin() as conn:
                await body(conn)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.001)

    for _ in range(100):  # warm-up: the pool's connection, SQLAlchemy's statement cache
        await one()
    ticking = asyncio.create_task(ticker())
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        await one()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ticking.cancel()
    await db.close()
    return {"cpu_ms": cpu / count * 1000, "wall_ms": wall / count * 1000}


def run(tree: str, count: int, mode: str) -> dict[str, float]:
    environment = dict(os.environ)
    if tree:
        environment["PYTHONPATH"] = os.pathsep.join(
            [tree, *filter(None, [environment.get("PYTHONPATH", "")])])
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(count)], env=environment,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, count = sys.argv[2], int(sys.argv[3])
        from smoltbot.core.storage import Database

        if mode == "transact" and not hasattr(Database, "transact"):
            print(json.dumps({}))
            return
        print(json.dumps(asyncio.run(measure(count, mode))))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="", help="a git revision, source checkout or smoltbot tree")
    parser.add_argument("--code", default="", help="the code to measure (same forms; default: installed)")
    args = parser.parse_args()
    from observer_throughput import baseline_tree

    scratch = Path(tempfile.mkdtemp(prefix="smoltbot-statements-trees-"))
    trees = {"this": str(baseline_tree(args.code, scratch / "this")) if args.code else ""}
    if args.baseline:
        trees["baseline"] = str(baseline_tree(args.baseline, scratch / "baseline"))
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        names = list(trees) if round_ % 2 else list(reversed(trees))
        for name in names:
            for mode in ("begin", "transact"):
                figures = run(trees[name], args.transactions, mode)
                if figures:
                    results.setdefault((name, mode), []).append(figures)
                    print(f"round {round_ + 1} {name:8} {mode:8}: CPU {figures['cpu_ms']:.3f} ms, wall "
                          f"{figures['wall_ms']:.3f} ms per transaction", flush=True)
    print(f"medians of {args.rounds} rounds, per 9-statement transaction (load average "
          f"{os.getloadavg()[0]:.1f}):")
    base = results.get(("baseline", "begin"))
    for (name, mode), rounds in results.items():
        cpu = statistics.median(r["cpu_ms"] for r in rounds)
        wall = statistics.median(r["wall_ms"] for r in rounds)
        line = f"  {name:8} {mode:8}: CPU {cpu:.3f} ms, wall {wall:.3f} ms"
        if base and name == "this":
            base_cpu = statistics.median(r["cpu_ms"] for r in base)
            base_wall = statistics.median(r["wall_ms"] for r in base)
            line += f" (x{cpu / base_cpu:.2f} CPU, x{wall / base_wall:.2f} wall of the baseline's begin)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
