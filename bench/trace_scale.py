"""Reads as traces grow, and retention while intake goes on.

    python bench/trace_scale.py [--sizes 10000,2000000] [--backends sqlite,postgresql] [--agents 200]
                                [--samples 200] [--no-retention] [--no-docs] [--results FILE]
    python bench/trace_scale.py --docs-from FILE,FILE   (the docs from runs made apart, e.g. one
                                                         per backend at the same time)

Per backend and size: a fresh database with the real Registry, Observer and API (in-process,
gRPC on loopback, the API through httpx's ASGI transport); `--agents` agents resolved and given
a card that keeps 330 days; `--size` synthetic processed exchanges (exchange record, trace,
violation for one in seven, usage row: `tests/support/synthetic_traces.py`, made in bulk by
`RowMaker`, checked against it) spread evenly over the last 360 days, in sessions of 5 calls that
the Registry knows, written by a bulk loader (SQLite: large transactions without fsync; PostgreSQL:
COPY in batches of 100,000; on both, the indexes no constraint needs are dropped during the load
and built after it), then ANALYZE and one roll-up of the integrity counters, as the retention pass
leaves them.

Reads, p50/p95 over `--samples` requests each, a random agent each time, in `--rounds` rounds
that alternate between the sizes (all loaded and served at once, so the machine's other load
weighs on each alike): the agent page
(`GET /agents/{id}`, every backend call the dashboard makes), `GET /v1/traces?limit=50` (first
page), the page after 20 pages by cursor, `GET /v1/integrity/{id}`, a session
(`GET /v1/sessions/{id}?agent_id=`), what `smoltbot sessions -n 10` asks (the sessions list, then
their usage in one read, `GET /v1/agents/{id}/usage/sessions`), and, for comparison, what it asked
before: the list, then each listed session's detail.

Retention, on the largest size only (unless `--no-retention`): the oldest month of twelve is
past the cards' 330 days. Intake is offered at a fixed rate over one Ingest stream (real
exchanges, processed by the observer as usual) for as long as the retention pass runs, and for as
long again without it; acked exchanges per second and ack latency are compared.

Prints the figures and rewrites the "Traces at scale" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402

from smoltbot.api.app import create_app  # noqa: E402
from smoltbot.core.grpc_client import open_channel  # noqa: E402
from smoltbot.core.settings import Settings, load_settings  # noqa: E402
from smoltbot.core.storage import open_database, partitions  # noqa: E402
from smoltbot.core.tls import TlsConfig  # noqa: E402
from smoltbot.observer.registry_client import RegistryClient  # noqa: E402
from smoltbot.observer.retention import Retention  # noqa: E402
from smoltbot.observer.retention_store import RetentionStore  # noqa: E402
from smoltbot.observer.server import build_server as build_observer  # noqa: E402
from smoltbot.registry.server import build_server as build_registry  # noqa: E402
from smoltbot.v1 import observer_service_pb2 as opb  # noqa: E402
from smoltbot.v1 import observer_service_pb2_grpc, registry_service_pb2_grpc  # noqa: E402
from smoltbot.v1 import registry_service_pb2 as rpb  # noqa: E402
from tests.support.synthetic_traces import exchange_rows  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Traces at scale"
SPAN_DAYS = 360
KEEP_DAYS = 330
_TABLES = ("exchanges", "traces", "trace_violations", "exchange_usage")
#: The Registry's record of each synthetic session (the agent page lists the ten most recent).
_SESSION_COLUMNS = ("agent_id", "session_id", "source", "status", "started_at", "last_activity_at",
                    "ended_at", "turn_count")
_LOADED = (*_TABLES, "sessions")
#: Calls per session: few enough that every agent has the ten sessions the agent page lists at
#: 10,000 traces already (50 calls each over 200 agents), so a page view does the same work at
#: every size and the ratio measures the table's size alone.
_SESSION_CALLS = 5
#: Sessions `smoltbot sessions` lists in the benchmark (`-n`): the ten every agent has at each size.
_LISTED_SESSIONS = 10
CARD = {
    "card_version": "unified/2026-04-26", "autonomy_mode": "observe", "integrity_mode": "observe",
    "principal": {"type": "human", "identifier": "ops@example.com", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency"]},
    "autonomy": {"bounded_actions": ["read_file"], "forbidden_actions": [], "escalation_triggers": []},
    "audit": {"retention_days": KEEP_DAYS, "queryable": False, "trace_format": "ap-trace-v1"},
}


def _columns(name: str) -> list[str]:
    from smoltbot.observer.tables import metadata

    return [column.name for column in metadata.tables[name].columns]


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


#: What changes from one synthetic exchange to the next, per table; every other column is the same
#: in each row (or depends only on whether the trace is violated) and comes from a template.
_VARYING = {
    "exchanges": ("exchange_id", "agent_hash", "agent_id", "session_id", "received_at", "occurred_at",
                  "next_attempt_at", "finished_at"),
    "traces": ("trace_id", "exchange_id", "agent_id", "session_id", "card_id", "timestamp", "created_at",
               "tool_use_id", "trace_json"),
    "trace_violations": ("trace_id", "agent_id"),
    "exchange_usage": ("exchange_id", "agent_id", "session_id", "occurred_at", "conversation_turn"),
}
#: Stand-ins in the templates' trace JSON, replaced by each exchange's values.
_MARKS = {"trace_id": "@T@", "agent_id": "@A@", "session_id": "@S@", "index": "@I@"}


class RowMaker:
    """The rows `tests/support/synthetic_traces.exchange_rows` makes, as tuples in column order,
    about three times faster: constant columns come from two templates (violated or not), and the
    trace JSON is the template's text with the varying values put in (no JSON encoding per row).
    The columns are those `exchange_rows` fills (the others keep their defaults, as in its own
    inserts). `check()` compares it with `exchange_rows` itself."""

    def __init__(self, sqlite: bool) -> None:
        from operator import itemgetter

        self.encode: Any = _sqlite_value if sqlite else (lambda value: value)
        sample = exchange_rows("smolt-00000000", "h", datetime(2000, 1, 1, tzinfo=UTC), 7)
        self.columns = {name: [column for column in _columns(name) if column in sample[name][0]]
                        for name in _TABLES}
        self.columns["sessions"] = list(_SESSION_COLUMNS)
        self.getters = {name: itemgetter(*columns) for name, columns in self.columns.items()}
        self.templates: dict[bool, dict[str, dict[str, Any]]] = {}
        self.json_parts: dict[bool, list[str]] = {}
        marker_at = datetime(2000, 1, 1, tzinfo=UTC)
        for violated in (False, True):
            rows = exchange_rows(_MARKS["agent_id"], "h", marker_at, 0, session_id=_MARKS["session_id"],
                                 violated=violated)
            self.templates[violated] = {
                name: {key: self.encode(value) for key, value in rows[name][0].items()
                       if key not in _VARYING[name]}
                for name in _TABLES if rows[name]}
            text = rows["traces"][0]["trace_json"]
            text = (text.replace(rows["traces"][0]["trace_id"], _MARKS["trace_id"])
                    .replace(rows["exchanges"][0]["exchange_id"], "@X@")
                    .replace(marker_at.isoformat(), "@W@").replace("file-0.txt", "file-@I@.txt"))
            self.json_parts[violated] = re.split(r"(@[TASXWI]@)", text)

    def _json(self, violated: bool, values: dict[str, str]) -> str:
        return "".join(values.get(part, part) for part in self.json_parts[violated])

    def rows(self, agent_id: str, agent_hash: str, at: datetime, index: int, session_id: str
             ) -> dict[str, list[tuple[Any, ...]]]:
        exchange_id = f"{abs(hash((agent_id, index))):016x}{index:016x}"[-32:]
        trace_id = f"{exchange_id}-0"
        violated = index % 7 == 0
        when = self.encode(at)
        templates = self.templates[violated]
        trace_json = self._json(violated, {"@T@": trace_id, "@A@": agent_id, "@S@": session_id,
                                           "@X@": exchange_id, "@W@": at.isoformat(), "@I@": str(index)})
        varying = {
            "exchanges": {"exchange_id": exchange_id, "agent_hash": agent_hash, "agent_id": agent_id,
                          "session_id": session_id, "received_at": when, "occurred_at": when,
                          "next_attempt_at": when, "finished_at": when},
            "traces": {"trace_id": trace_id, "exchange_id": exchange_id, "agent_id": agent_id,
                       "session_id": session_id, "card_id": f"card-{agent_id}", "timestamp": when,
                       "created_at": when, "tool_use_id": f"toolu_{exchange_id}", "trace_json": trace_json},
            "exchange_usage": {"exchange_id": exchange_id, "agent_id": agent_id, "session_id": session_id,
                               "occurred_at": when, "conversation_turn": 1 + index % 50},
        }
        if violated:
            varying["trace_violations"] = {"trace_id": trace_id, "agent_id": agent_id}
        return {name: [self.getters[name]({**templates[name], **values})]
                for name, values in varying.items()}

    def check(self, agents: list[tuple[str, str]], now: datetime) -> None:
        """The fast rows are `exchange_rows`' rows (the first exchanges of the first agents)."""
        for index in range(15):
            agent_id, agent_hash = agents[index % len(agents)]
            at = now - timedelta(days=index)
            slow = exchange_rows(agent_id, agent_hash, at, index, session_id=f"s-{index}")
            fast = self.rows(agent_id, agent_hash, at, index, f"s-{index}")
            for name in _TABLES:
                expected = [tuple(self.encode(row[column]) for column in self.columns[name])
                            for row in slow[name]]
                if fast.get(name, []) != expected:
                    raise SystemExit(f"RowMaker: {name} rows differ from exchange_rows': "
                                     f"{fast.get(name)} != {expected}")


def _generate(maker: RowMaker, agents: list[tuple[str, str]], start: int, stop: int, size: int,
              now: datetime) -> dict[str, list[tuple[Any, ...]]]:
    step = timedelta(days=SPAN_DAYS) / size
    first = now - timedelta(days=SPAN_DAYS)
    batch: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _LOADED}
    spread = _SESSION_CALLS * len(agents)  # the exchanges one session of each agent spans
    for index in range(start, stop):
        agent_id, agent_hash = agents[index % len(agents)]
        # Sessions of _SESSION_CALLS calls per agent, each known to the Registry (client-named).
        number, position = divmod(index, spread)
        session = f"sess-{agent_id}-{number}"
        at = first + step * index
        for name, rows in maker.rows(agent_id, agent_hash, at, index, session).items():
            batch[name].extend(rows)
        if position < len(agents):  # the session's first call: its Registry row
            last = index + spread - len(agents)
            active = last >= size  # the agent's last session, cut short by the end of the data
            last_at = maker.encode(first + step * min(last, size - 1))
            batch["sessions"].append((agent_id, session, "client", "active" if active else "ended",
                                      maker.encode(at), last_at, None if active else last_at, _SESSION_CALLS))
    return batch


class _Phases:
    """Seconds spent per phase of a load, printed once it is done."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def show(self, what: str) -> None:
        print(f"{what}: " + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.seconds.items()),
              flush=True)


def _sqlite_load(path: str, maker: RowMaker, agents: list[tuple[str, str]], size: int, now: datetime,
                 chunk: int) -> None:
    """Indexes dropped during the load and built after it (a sort each, instead of two million
    random B-tree inserts into each), large transactions, no fsync: a fresh benchmark database
    that a crash would simply have rebuilt. The observer's open connections see the rows once the
    load commits; nothing writes meanwhile."""
    conn = sqlite3.connect(path, timeout=60)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")  # KiB: 1 GB
        conn.execute("PRAGMA temp_store=MEMORY")
        marks = ",".join("?" * len(_LOADED))
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                               f"AND sql IS NOT NULL AND tbl_name IN ({marks})", _LOADED).fetchall()
        with conn:
            for name, _ in indexes:
                conn.execute(f'DROP INDEX "{name}"')
        statements = {name: f"INSERT INTO {name} ({', '.join(columns)}) VALUES "
                            f"({', '.join('?' * len(columns))})" for name, columns in maker.columns.items()}
        phases = _Phases()
        for start in range(0, size, chunk):
            batch = _generate(maker, agents, start, min(size, start + chunk), size, now)
            phases.mark("generate")
            with conn:
                for name in _LOADED:
                    conn.executemany(statements[name], batch[name])
            phases.mark("insert")
        with conn:
            for _, sql in indexes:
                conn.execute(sql)
        phases.mark("index")
        conn.execute("PRAGMA analysis_limit=2000")  # statistics from a sample of each index
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        phases.mark("analyze")
        phases.show(f"sqlite load of {size:,}")
    finally:
        conn.close()


async def _postgres_load(url: str, maker: RowMaker, agents: list[tuple[str, str]], size: int, now: datetime,
                         chunk: int) -> None:
    """COPY in large batches, with the indexes that no constraint needs dropped during the load and
    built after it."""
    import asyncpg

    pg = await asyncpg.connect(url)
    try:
        await pg.execute("SET synchronous_commit = off; SET maintenance_work_mem = '512MB'")
        indexes = await pg.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            "AND i.tablename = ANY($1::text[]) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)", list(_LOADED))
        for row in indexes:
            await pg.execute(f'DROP INDEX "{row["indexname"]}"')
        phases = _Phases()
        for start in range(0, size, chunk):
            batch = _generate(maker, agents, start, min(size, start + chunk), size, now)
            phases.mark("generate")
            async with pg.transaction():
                for name in _LOADED:
                    await pg.copy_records_to_table(name, records=batch[name], columns=maker.columns[name])
            phases.mark("copy")
        for row in indexes:  # a partitioned table's reads "ON ONLY": built here for every partition
            await pg.execute(row["indexdef"].replace(" ON ONLY ", " ON "))
        for (name,) in await pg.fetch("SELECT c.relname FROM pg_inherits i "
                                      "JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind = 'r'"):
            await pg.execute(partitions.rename_indexes_statement(name))
        phases.mark("index")
        await pg.execute("ANALYZE")
        phases.mark("analyze")
        phases.show(f"postgresql load of {size:,}")
    finally:
        await pg.close()


async def bulk_load(url: str, agents: list[tuple[str, str]], size: int, now: datetime) -> float:
    """`size` processed exchanges over the agents, evenly over SPAN_DAYS; returns seconds taken."""
    started = time.perf_counter()
    sqlite = not url.startswith("postgresql")
    maker = RowMaker(sqlite)
    maker.check(agents, now)
    if sqlite:
        path = url.removeprefix("sqlite:///")
        await asyncio.to_thread(_sqlite_load, path, maker, agents, size, now, 100_000)
    else:
        await _postgres_load(url, maker, agents, size, now, 100_000)
    return time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _timed(client: httpx.AsyncClient, paths: list[str]) -> list[float]:
    times = []
    for path in paths:
        started = time.perf_counter()
        response = await client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code} {response.text[:300]}")
    return times


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry: Any = None
        self.observer: Any = None

    async def start(self) -> None:
        self.registry = await build_registry(self.settings, address="127.0.0.1:0")
        await self.registry.start()
        self.registry_address = f"127.0.0.1:{self.registry.port}"
        self.observer_settings = self.settings.model_copy(update={"registry_address": self.registry_address})
        self.observer = await build_observer(self.observer_settings, address="127.0.0.1:0")
        await self.observer.start()
        # The benchmark runs retention itself, when it measures it.
        await self.observer.components.retention.stop()
        self.observer_address = f"127.0.0.1:{self.observer.port}"
        tls = TlsConfig.from_settings(self.settings)
        self.registry_channel = open_channel(self.registry_address, tls)
        self.observer_channel = open_channel(self.observer_address, tls)
        self.registry_stub = registry_service_pb2_grpc.RegistryServiceStub(self.registry_channel)
        self.observer_stub = observer_service_pb2_grpc.ObserverServiceStub(self.observer_channel)

    async def stop(self) -> None:
        await self.registry_channel.close()
        await self.observer_channel.close()
        await self.observer.stop(1.0)
        await self.registry.stop(1.0)


async def _agents(stack: Stack, count: int) -> list[tuple[str, str]]:
    agents = []
    for _ in range(count):
        agent_hash = secrets.token_hex(32)
        resolved = await stack.registry_stub.ResolveAgent(rpb.ResolveAgentRequest(agent_hash=agent_hash))
        agent_id = resolved.agent.agent_id
        await stack.registry_stub.PutCard(rpb.PutCardRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                             card_json=json.dumps(CARD)))
        agents.append((agent_id, agent_hash))
    return agents


async def measure_reads(stack: Stack, agents: list[tuple[str, str]], size: int, samples: int,
                        rng: random.Random) -> dict[str, list[float]]:
    app = create_app(stack.settings, registry_address=stack.registry_address,
                     observer_address=stack.observer_address)
    figures: dict[str, list[float]] = {}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api.test", timeout=120) as client:
            def some(count: int) -> list[str]:
                return [rng.choice(agents)[0] for _ in range(count)]

            await _timed(client, [f"/v1/integrity/{agent}" for agent in some(10)])  # warm caches
            figures["agent page"] = await _timed(client, [f"/agents/{agent}" for agent in some(samples)])
            figures["/v1/traces first page"] = await _timed(client, ["/v1/traces?limit=50"] * samples)
            cursor = ""
            for _ in range(min(20, size // 50 - 1)):
                params: dict[str, Any] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
                page = (await client.get("/v1/traces", params=params)).json()
                cursor = page["next_cursor"]
            figures["/v1/traces page 21 by cursor"] = await _timed(
                client, [f"/v1/traces?limit=50&cursor={cursor}"] * samples)
            figures["/v1/integrity/{agent}"] = await _timed(
                client, [f"/v1/integrity/{agent}" for agent in some(samples)])
            sessions = []
            per_agent = max(1, size // len(agents))
            for agent in some(samples):
                number = rng.randrange(max(1, per_agent // _SESSION_CALLS))
                sessions.append(f"/v1/sessions/sess-{agent}-{number}?agent_id={agent}")
            figures["session read"] = await _timed(client, sessions)
            listed = some(samples)
            figures["`smoltbot sessions` (list + their usage)"] = [
                await _sessions_command(client, agent) for agent in listed]
            # What `smoltbot sessions` read before (issue 20, round 5): each listed session apart.
            figures["`smoltbot sessions` before (list + each session)"] = [
                await _sessions_command(client, agent, each=True) for agent in listed]
    return figures


async def _sessions_command(client: httpx.AsyncClient, agent_id: str, each: bool = False) -> float:
    """Milliseconds for what `smoltbot sessions -n 10` asks the API (cli/commands_usage.py): the
    ten most recent sessions, then their usage in one read; with `each`, what it asked before:
    each listed session's detail, at most 8 at a time."""
    started = time.perf_counter()
    listed = await client.get(f"/v1/agents/{agent_id}/sessions", params={"limit": _LISTED_SESSIONS})
    if listed.status_code != 200:
        raise SystemExit(f"sessions of {agent_id}: HTTP {listed.status_code} {listed.text[:300]}")
    session_ids = [item["session_id"] for item in listed.json()["items"]]
    if not each:
        usage = await client.get(f"/v1/agents/{agent_id}/usage/sessions", params={"session_id": session_ids})
        if usage.status_code != 200 or len(usage.json()["items"]) != len(session_ids):
            raise SystemExit(f"usage of {agent_id}'s sessions: HTTP {usage.status_code} {usage.text[:300]}")
        return (time.perf_counter() - started) * 1000
    gate = asyncio.Semaphore(8)

    async def one(session_id: str) -> None:
        async with gate:
            response = await client.get(f"/v1/sessions/{session_id}", params={"agent_id": agent_id})
            if response.status_code != 200:
                raise SystemExit(f"session {session_id}: HTTP {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(one(session_id) for session_id in session_ids))
    return (time.perf_counter() - started) * 1000


async def _intake(stack: Stack, agents: list[tuple[str, str]], rate: float, stop: asyncio.Event
                  ) -> tuple[float, float, float, int]:
    """Offers exchanges at `rate`/s until `stop`; returns (acked/s, ack p50 ms, ack p95 ms, acked)."""
    from tests.integration.observer.exchanges import make_exchange, message, text, tool_use

    call = stack.observer_stub.Ingest()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    started = time.perf_counter()

    async def send() -> None:
        index = 0
        while not stop.is_set():
            _, agent_hash = agents[index % len(agents)]
            reply = message(text("Reading it."), tool_use("read_file", {"path": f"/p{index}"}),
                            stop_reason="tool_use")
            exchange = make_exchange(agent_hash, reply)
            sent[exchange.exchange_id] = time.perf_counter()
            await call.write(opb.IngestRequest(exchange=exchange))
            index += 1
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
        await call.done_writing()

    writer = asyncio.create_task(send())
    async for ack in call:
        latencies.append((time.perf_counter() - sent[ack.exchange_id]) * 1000)
    await writer
    seconds = time.perf_counter() - started
    return len(latencies) / seconds, _pct(latencies, 0.5), _pct(latencies, 0.95), len(latencies)


async def measure_retention(stack: Stack, agents: list[tuple[str, str]], rate: float) -> dict[str, Any]:
    settings = stack.observer_settings.model_copy(update={"retention_max_days": 365})
    registry = RegistryClient(stack.registry_address, tls=TlsConfig.from_settings(settings))
    retention = Retention(RetentionStore(open_database(settings.effective_database_url)), registry, settings)
    try:
        stop = asyncio.Event()
        intake = asyncio.create_task(_intake(stack, agents, rate, stop))
        started = time.perf_counter()
        report = await retention.run_pass()
        duration = time.perf_counter() - started
        stop.set()
        during = await intake
        stop = asyncio.Event()
        intake = asyncio.create_task(_intake(stack, agents, rate, stop))
        await asyncio.sleep(duration)
        stop.set()
        without = await intake
    finally:
        await registry.close()
        await retention.store.db.close()
    dropped = [batch.table for batch in report.batches if batch.traces_by_agent or batch.rows_by_agent]
    return {"seconds": duration, "traces": sum(report.traces.values()), "rows": sum(report.rows.values()),
            "batches": len(report.batches), "partitions": dropped, "during": during, "without": without}


async def _setup(backend: str, size: int, agents_count: int, postgres: Any) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="smoltbot-scale-"))
    url = (await asyncio.to_thread(postgres.create_database, f"scale_{size}_{secrets.token_hex(3)}")
           if backend == "postgresql" else f"sqlite:///{home / 'smoltbot.db'}")
    settings = load_settings(home=home, database_url=url, hash_secret="bench-secret",
                             registry_address="127.0.0.1:0", observer_address="127.0.0.1:0",
                             retention_interval=10**9)
    stack = Stack(settings)
    await stack.start()
    now = datetime.now(UTC)
    agents = await _agents(stack, agents_count)
    db = open_database(url)  # PostgreSQL: a partition for each month of the span, as a year of use leaves
    await partitions.roll_forward(db, now, first=partitions.Month.of(now - timedelta(days=SPAN_DAYS)))
    await db.close()
    load_seconds = await bulk_load(url, agents, size, now)
    store = RetentionStore(open_database(url))
    started = time.perf_counter()
    for agent_id, _ in agents:
        await store.roll_up(agent_id, now - timedelta(minutes=10))
    roll_up_seconds = time.perf_counter() - started
    await store.db.close()
    print(f"{backend} {size:,}: loaded in {load_seconds:.0f} s, counters rolled up in "
          f"{roll_up_seconds:.1f} s", flush=True)
    return {"backend": backend, "size": size, "load_seconds": load_seconds,
            "roll_up_seconds": roll_up_seconds, "stack": stack, "agents": agents, "home": home}


async def run(backend: str, sizes: list[int], agents_count: int, samples: int, rate: float, rounds: int,
              postgres: Any, retention: bool = True) -> list[dict[str, Any]]:
    """Every size loaded and served at once; reads measured in interleaved rounds (the machine's
    load then weighs on every size alike); retention on the largest."""
    setups: list[dict[str, Any]] = []
    try:
        for size in sizes:
            setups.append(await _setup(backend, size, agents_count, postgres))
        raw: list[dict[str, list[float]]] = [{} for _ in setups]
        for round_number in range(rounds):
            for index, setup in enumerate(setups):
                figures = await measure_reads(setup["stack"], setup["agents"], setup["size"],
                                              max(1, samples // rounds),
                                              random.Random(round_number * 1000 + index))
                for name, times in figures.items():
                    raw[index].setdefault(name, []).extend(times)
        results = []
        for setup, times in zip(setups, raw, strict=True):
            result = {key: setup[key] for key in ("backend", "size", "load_seconds", "roll_up_seconds")}
            result["reads"] = {name: (_pct(values, 0.5), _pct(values, 0.95))
                               for name, values in times.items()}
            results.append(result)
        largest = setups[-1]
        if retention:
            results[-1]["retention"] = await measure_retention(largest["stack"], largest["agents"], rate)
        for result in results:
            print(json.dumps(result), flush=True)
        return results
    finally:
        for setup in setups:
            await setup["stack"].stop()
            shutil.rmtree(setup["home"], ignore_errors=True)


def _table(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    backends = sorted({r["backend"] for r in results}, key=lambda b: b != "sqlite")
    for backend in backends:
        mine = sorted((r for r in results if r["backend"] == backend), key=lambda r: r["size"])
        small, large = mine[0], mine[-1]
        loads = ", ".join(f"{r['size']:,} in {r['load_seconds']:.0f} s "
                          f"({r['size'] / r['load_seconds']:,.0f}/s)" for r in mine)
        rolls = ", ".join(f"{r['roll_up_seconds']:.1f} s" for r in mine)
        lines.append(f"**{backend}**: bulk load {loads}; the first roll-up of the integrity counters "
                     f"(every agent) {rolls}.")
        lines.append("")
        header = " | ".join(f"{r['size']:,}: p50 / p95 (ms)" for r in mine)
        lines.append(f"| read | {header} | p50 ratio {large['size']:,} / {small['size']:,} |")
        lines.append("|---|" + "---:|" * (len(mine) + 1))
        ratios = {}
        for name in small["reads"]:
            cells = " | ".join(f"{r['reads'][name][0]:.1f} / {r['reads'][name][1]:.1f}" for r in mine)
            ratios[name] = large["reads"][name][0] / small["reads"][name][0]
            lines.append(f"| {name} | {cells} | x{ratios[name]:.2f} |")
        lines.append("")
        # The reads made now; a "before" row is shown for comparison only.
        targets = {name: ratio for name, ratio in ratios.items() if "before" not in name}
        over = [f"{name} (x{ratio:.2f})" for name, ratio in targets.items() if ratio > 2]
        worst = max(targets, key=lambda name: targets[name])
        verdict = (f"met, the largest ratio x{targets[worst]:.2f} ({worst})." if not over
                   else "not met by " + ", ".join(over) + ".")
        lines.append(f"Target (each read's p50 within 2x of its {small['size']:,} figure at "
                     f"{large['size']:,}): {verdict}")
        lines.append("")
        kept = large.get("retention")
        if kept:
            during, without = kept["during"], kept["without"]
            other = kept["rows"] - kept["traces"]
            lines.append(
                f"Retention at {large['size']:,} traces (the oldest month of twelve past the cards' "
                f"{KEEP_DAYS} days): {kept['traces']:,} traces and {other:,} other rows deleted in "
                f"{kept['batches']:,} batches"
                + (f" ({len(kept['partitions'])} of them month partitions dropped whole: "
                   f"{', '.join(kept['partitions'])})" if kept.get("partitions") else "")
                + f", {kept['seconds']:.1f} s. Intake offered at the same rate "
                f"meanwhile: {during[0]:.0f} acked/s (ack p50 {during[1]:.1f} ms, p95 {during[2]:.1f} ms) "
                f"against {without[0]:.0f} acked/s (p50 {without[1]:.1f} ms, p95 {without[2]:.1f} ms) "
                f"without retention, x{during[0] / without[0]:.2f}.")
            lines.append("")
    return lines


NOTES = """200 agents; sessions of 5 calls, each known to the Registry, so that every agent has the ten
sessions its page lists at both sizes (the page does the same work at each, and the ratio
measures the table's size alone). Traces spread over 360 days; each read `--samples` times at
each size, a random agent each time, in interleaved rounds.

What makes these reads independent of the table size: every list is a keyset page over an
index that matches its filter and order (`ix_traces_timestamp`, `ix_traces_agent_timestamp`,
`ix_traces_kind_timestamp`, `ix_traces_session_timestamp`, `ix_exchange_usage_session`; the
provider and enforcement filters over `ix_traces_[agent_]provider_timestamp` and
`ix_traces_[agent_]enforcement_timestamp`, one ordered range per action, migration 0011); the
integrity's all-time sums come from per-agent counters (`observer/integrity_counters.py`) plus
the traces created since their mark, its 7-day timeline from per-hour roll-ups kept the same way
(`integrity_hours`, migration 0012: at most 168 rows) plus the traces since the mark, its recent
window from one range of `ix_traces_agent_kind_covering` (migration 0013: the agent's decisions in
the window's whole order, with the flags it sums, so no table read); the agent page and `smoltbot
sessions` read the usage of the sessions they list in one read (GetSessionsUsage: per table one
statement, a UNION ALL of one aggregate per session over its own range of
`ix_exchange_usage_session` and `ix_traces_session_timestamp`), not the agent's whole history,
and the sessions list is a keyset range of
`ix_sessions_agent_activity` from its cursor on; the observer's
queue gauge counts pending, processing and failed exchanges over `ix_exchanges_due`, not every
exchange at each scrape. Tests check each of these on both databases' query plans
(`tests/support/query_plans.py`). Retention deletes per agent in batches of 500 rows, each its
own short transaction under the retention lock, so intake waits for one batch at most.

The bulk loader makes each exchange's rows as tuples from two templates (`RowMaker`, checked
against `tests/support/synthetic_traces.py` at each load), drops the indexes no constraint needs
and builds them after the load (a sort each instead of millions of B-tree inserts), and writes
SQLite in transactions of 100,000 exchanges without fsync, PostgreSQL with COPY in batches of
100,000. At 200,000 exchanges over 200 agents, `bulk_load` alone, the loader before (commit
3f7232f) and this one one after the other on the same machine: SQLite 2,770 to 5,552
exchanges/s (x2.0), PostgreSQL 2,477 to 6,397/s (x2.6); the loader before also slowed as the
tables grew (about 700/s on SQLite at 400,000 last round, on a busier machine).

On PostgreSQL `traces`, `exchange_usage` and `evidence_history` are partitioned by month
(migration 0014, `core/storage/partitions.py`); the benchmark makes a partition for each month of
its span before loading, as a year of use leaves them. Retention drops a month's partition whole
once every agent with rows in it is past its period (counted as row deletes are), and deletes by
rows what is not a whole month: the rows of agents with shorter periods, and the days of the
oldest kept month that are past their time."""


def write_docs(results: list[dict[str, Any]], command: str) -> None:
    body = [SECTION, "", f"{command} ({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores shared with "
            "other work; in-process Registry, Observer and API, the API through httpx's ASGI transport).", "",
            *_table(results), NOTES]
    text = DOCS.read_text()
    pattern = re.compile(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", re.S)
    section = "\n".join(body).rstrip() + "\n"
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    DOCS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,2000000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="intake offered during the retention run (/s)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds of reads over the sizes")
    parser.add_argument("--no-retention", action="store_true", help="measure the reads only")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--results", help="also append the figures to this file (JSON lines), to be "
                        "written into the docs together with another run's by --docs-from")
    parser.add_argument("--docs-from", help="write the docs section from these files of --results "
                        "(comma-separated), measuring nothing")
    args = parser.parse_args()
    if args.docs_from:
        stored = [json.loads(line) for name in args.docs_from.split(",")
                  for line in Path(name).read_text().splitlines() if line.strip()]
        for line in _table(stored):
            print(line)
        write_docs(stored, " and ".join(dict.fromkeys(f"`{r['command']}`" for r in stored)))
        return
    command = "python bench/trace_scale.py " + " ".join(sys.argv[1:])
    sizes = [int(size) for size in args.sizes.split(",")]
    results = []
    postgres = None
    try:
        for backend in args.backends.split(","):
            if backend == "postgresql" and postgres is None:
                from observer_scaling import Postgres

                postgres = Postgres()
                postgres.start()
            results.extend(asyncio.run(run(backend, sorted(sizes), args.agents, args.samples, args.rate,
                                           args.rounds, postgres, not args.no_retention)))
    finally:
        if postgres is not None:
            postgres.stop()
    for line in _table(results):
        print(line)
    if args.results:
        with open(args.results, "a") as file:
            for result in results:
                file.write(json.dumps({**result, "command": command}) + "\n")
    if not args.no_docs:
        write_docs(results, f"`{command}`")


if __name__ == "__main__":
    main()
