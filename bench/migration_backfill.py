"""How long the migrations that fill new columns or tables from the stored traces take at size.

    python bench/migration_backfill.py [--size 2000000] [--agents 200] [--backend sqlite|postgresql]
                                       [--enforced 0.9] [--other-provider 0.1]

A fresh database at head, `--size` synthetic processed exchanges loaded in bulk (bench/trace_scale.py's
loader, 360 days over `--agents` agents), the integrity counters rolled up for every agent (as the
retention pass leaves them: a mark each), then the stored trace JSON given an enforcement record
(`--enforced` of the traces, as with enforcement on) and another provider (`--other-provider`),
as the observer would have written them. Then the chain is taken down to 0010 (what a database
from before 0011 is) and up again one revision at a time, each timed:

* 0011: `traces.provider` and `traces.enforcement` filled from each trace's JSON (two UPDATEs
  over the traces whose value is not the column's default), and their four indexes built;
* 0012: `integrity_hours` filled from the traces the marks cover (one INSERT ... SELECT grouped
  by agent and hour);
* 0013: `ix_traces_agent_kind_covering` built (the integrity's recent window) and the index it
  replaces dropped;
* 0014: on PostgreSQL, `traces`, `exchange_usage` and `evidence_history` made again partitioned by
  month, every row copied, keys and indexes built on the filled partitions (nothing on SQLite).

The results are checked (the columns against the JSON, the roll-ups against the traces) and the
figures printed; docs/benchmarks.md ("Traces at scale") quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import sqlalchemy as sa  # noqa: E402
from alembic import command  # noqa: E402
from trace_scale import bulk_load  # noqa: E402

from smoltbot.core.storage import Database, migrate, open_database  # noqa: E402
from smoltbot.core.storage.migrate import alembic_config  # noqa: E402
from smoltbot.observer.integrity_counters import LAG  # noqa: E402
from smoltbot.observer.retention_store import RetentionStore  # noqa: E402
from smoltbot.registry.store import agents as registry_agents  # noqa: E402


async def _sql(db: Database, statement: str) -> Any:
    async with db.begin() as conn:
        result = await conn.exec_driver_sql(statement)
        return result.all() if result.returns_rows else None


async def _downgrade(db: Database, revision: str) -> None:
    def run(sync: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync
        command.downgrade(config, revision)
        sync.commit()

    async with db.engine.connect() as conn:
        await conn.run_sync(run)


async def _timed_upgrade(db: Database, revision: str) -> float:
    started = time.perf_counter()
    await migrate(db, revision)
    return time.perf_counter() - started


async def run(size: int, agents_count: int, backend: str, enforced: float, other: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="smoltbot-backfill-"))
    postgres = None
    try:
        if backend == "postgresql":
            from observer_scaling import Postgres

            postgres = Postgres()
            postgres.start()
            url = await asyncio.to_thread(postgres.create_database, f"backfill_{secrets.token_hex(3)}")
        else:
            url = f"sqlite:///{home / 'smoltbot.db'}"
        db = open_database(url)
        try:
            await migrate(db)
            now = datetime.now(UTC)
            agents = [(f"smolt-{index:08x}", secrets.token_hex(32)) for index in range(agents_count)]
            async with db.begin() as conn:  # the Registry's rows the sessions refer to (a foreign key)
                await conn.execute(sa.insert(registry_agents), [
                    {"agent_id": agent_id, "created_at": now, "last_seen_at": now} for agent_id, _ in agents])
            load = await bulk_load(url, agents, size, now)
            store = RetentionStore(db)
            started = time.perf_counter()
            for agent_id, _ in agents:
                await store.roll_up(agent_id, now - LAG)
            roll_up = time.perf_counter() - started
            # The JSON the observer writes with enforcement on / for another provider's calls.
            started = time.perf_counter()
            enforced_share, other_share = round(enforced * 1000), round(other * 1000)
            if backend == "postgresql":
                pick = "abs(hashtext(trace_id)) % 1000"
                await _sql(db, "UPDATE traces SET trace_json = jsonb_set(trace_json::jsonb, '{enforcement}', "
                               "'{\"mode\": \"enforce\", \"action\": \"allowed\"}')::text "
                               f"WHERE {pick} < {enforced_share}")
                await _sql(db, "UPDATE traces SET trace_json = jsonb_set(trace_json::jsonb, "
                               f"'{{observation,provider}}', '\"openai\"')::text WHERE {pick} >= "
                               f"{1000 - other_share}")
            else:
                pick = "(rowid * 7919) % 1000"
                await _sql(db, "UPDATE traces SET trace_json = json_set(trace_json, '$.enforcement', "
                               "json('{\"mode\": \"enforce\", \"action\": \"allowed\"}')) "
                               f"WHERE {pick} < {enforced_share}")
                await _sql(db, "UPDATE traces SET trace_json = json_set(trace_json, "
                               f"'$.observation.provider', 'openai') WHERE {pick} >= {1000 - other_share}")
            await _downgrade(db, "0010")
            prepare = time.perf_counter() - started
            print(f"{backend} {size:,}: loaded in {load:.0f} s, rolled up in {roll_up:.1f} s, JSON set and "
                  f"down to 0010 in {prepare:.0f} s", flush=True)
            seconds = {revision: await _timed_upgrade(db, revision)
                       for revision in ("0011", "0012", "0013", "0014")}
            enforcement = (await _sql(db, "SELECT count(*) FROM traces WHERE enforcement IS NOT NULL"))[0][0]
            providers = (await _sql(db, "SELECT count(*) FROM traces WHERE provider <> 'anthropic'"))[0][0]
            expected = (await _sql(db, "SELECT count(*) FROM traces WHERE trace_json LIKE '%\"enforcement\"%'"
                                   ))[0][0]
            hours = (await _sql(db, "SELECT count(*), coalesce(sum(traces), 0) FROM integrity_hours"))[0]
            counted = (await _sql(db, "SELECT count(*) FROM traces t JOIN integrity_marks m "
                                      "ON m.agent_id = t.agent_id WHERE t.record_kind = 'decision' "
                                      "AND t.created_at < m.rolled_to"))[0][0]
            if enforcement != expected or int(hours[1]) != counted:
                raise SystemExit(f"backfill wrong: enforcement {enforcement} of {expected}, "
                                 f"roll-ups {hours[1]} of {counted}")
            stored = (await _sql(db, "SELECT count(*) FROM traces"))[0][0]
            unmonthed = (await _sql(db, "SELECT count(*) FROM traces_default"))[0][0] if (
                backend == "postgresql") else 0
            if stored != size or unmonthed:  # every exchange has one trace; all within 36 months
                raise SystemExit(f"0014 wrong: {stored} traces of {size}, {unmonthed} in the default")
        finally:
            await db.close()
        result = {"backend": backend, "size": size, "seconds": seconds, "enforcement": enforcement,
                  "providers": providers, "hour_rows": int(hours[0]), "hour_traces": int(hours[1])}
        print(f"{backend} {size:,}: 0011 in {seconds['0011']:.1f} s ({enforcement:,} enforcement and "
              f"{providers:,} provider values filled), 0012 in {seconds['0012']:.1f} s "
              f"({int(hours[0]):,} hourly rows for {int(hours[1]):,} traces), "
              f"0013 in {seconds['0013']:.1f} s, 0014 in {seconds['0014']:.1f} s (on PostgreSQL: the three "
              "tables partitioned by month, every row copied)", flush=True)
        return result
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2_000_000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--enforced", type=float, default=0.9)
    parser.add_argument("--other-provider", type=float, default=0.1)
    args = parser.parse_args()
    asyncio.run(run(args.size, args.agents, args.backend, args.enforced, args.other_provider))


if __name__ == "__main__":
    main()
