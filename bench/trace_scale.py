"""Reads as traces grow, and retention while intake goes on.

    python bench/trace_scale.py [--sizes 10000,2000000] [--backends sqlite,postgresql] [--agents 200]
                                [--samples 200] [--no-docs]

Per backend and size: a fresh database with the real Registry, Observer and API (in-process,
gRPC on loopback, the API through httpx's ASGI transport); `--agents` agents resolved and given
a card that keeps 330 days; `--size` synthetic processed exchanges (exchange record, trace,
violation for one in seven, usage row: `tests/support/synthetic_traces.py`) spread evenly over
the last 360 days, written by a bulk loader (sqlite3 `executemany` / asyncpg `COPY`), then
ANALYZE and one roll-up of the integrity counters, as the retention pass leaves them.

Reads, p50/p95 over `--samples` requests each, a random agent each time, in `--rounds` rounds
that alternate between the sizes (all loaded and served at once, so the machine's other load
weighs on each alike): the agent page
(`GET /agents/{id}`, every backend call the dashboard makes), `GET /v1/traces?limit=50` (first
page), the page after 20 pages by cursor, `GET /v1/integrity/{id}`, a session
(`GET /v1/sessions/{id}?agent_id=`).

Retention, on the largest size only: the oldest month of twelve is past the cards' 330 days.
Intake is offered at a fixed rate over one Ingest stream (real exchanges, processed by the
observer as usual) for as long as the retention pass runs, and for as long again without it;
acked exchanges per second and ack latency are compared.

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
from smoltbot.core.storage import open_database  # noqa: E402
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


async def bulk_load(url: str, agents: list[tuple[str, str]], size: int, now: datetime) -> float:
    """`size` processed exchanges over the agents, evenly over SPAN_DAYS; returns seconds taken."""
    started = time.perf_counter()
    step = timedelta(days=SPAN_DAYS) / size
    columns = {name: _columns(name) for name in _TABLES}
    chunk = 20_000
    pg = None
    sqlite_conn = None
    if url.startswith("postgresql"):
        import asyncpg

        pg = await asyncpg.connect(url)
    else:
        sqlite_conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        sqlite_conn.execute("PRAGMA journal_mode=WAL")
        sqlite_conn.execute("PRAGMA synchronous=NORMAL")
    try:
        for start in range(0, size, chunk):
            batch: dict[str, list[dict[str, Any]]] = {name: [] for name in _TABLES}
            for index in range(start, min(size, start + chunk)):
                agent_id, agent_hash = agents[index % len(agents)]
                at = now - timedelta(days=SPAN_DAYS) + step * index
                # Sessions of 50 calls per agent.
                session = f"sess-{agent_id}-{index // (50 * len(agents))}"
                for name, rows in exchange_rows(agent_id, agent_hash, at, index, session_id=session).items():
                    if name in batch:
                        batch[name].extend(rows)
            if pg is not None:
                for name in _TABLES:
                    records = [tuple(row[column] for column in columns[name]) for row in batch[name]]
                    await pg.copy_records_to_table(name, records=records, columns=columns[name])
            else:
                assert sqlite_conn is not None
                with sqlite_conn:
                    for name in _TABLES:
                        names = columns[name]
                        sqlite_conn.executemany(
                            f"INSERT INTO {name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                            [tuple(_sqlite_value(row[column]) for column in names) for row in batch[name]])
        if pg is not None:
            await pg.execute("ANALYZE")
        else:
            assert sqlite_conn is not None
            sqlite_conn.execute("ANALYZE")
    finally:
        if pg is not None:
            await pg.close()
        if sqlite_conn is not None:
            sqlite_conn.close()
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
                number = rng.randrange(max(1, per_agent // 50))
                sessions.append(f"/v1/sessions/sess-{agent}-{number}?agent_id={agent}")
            figures["session read"] = await _timed(client, sessions)
    return figures


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
    return {"seconds": duration, "traces": sum(report.traces.values()), "rows": sum(report.rows.values()),
            "batches": len(report.batches), "during": during, "without": without}


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
              postgres: Any) -> list[dict[str, Any]]:
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
        loads = ", ".join(f"{r['size']:,} in {r['load_seconds']:.0f} s" for r in mine)
        rolls = ", ".join(f"{r['roll_up_seconds']:.1f} s" for r in mine)
        lines.append(f"**{backend}**: bulk load {loads}; the first roll-up of the integrity counters "
                     f"(every agent) {rolls}.")
        lines.append("")
        header = " | ".join(f"{r['size']:,}: p50 / p95 (ms)" for r in mine)
        lines.append(f"| read | {header} | p50 ratio {large['size']:,} / {small['size']:,} |")
        lines.append("|---|" + "---:|" * (len(mine) + 1))
        for name in small["reads"]:
            cells = " | ".join(f"{r['reads'][name][0]:.1f} / {r['reads'][name][1]:.1f}" for r in mine)
            ratio = large["reads"][name][0] / small["reads"][name][0]
            lines.append(f"| {name} | {cells} | x{ratio:.2f} |")
        lines.append("")
        kept = large.get("retention")
        if kept:
            during, without = kept["during"], kept["without"]
            other = kept["rows"] - kept["traces"]
            lines.append(
                f"Retention at {large['size']:,} traces (the oldest month of twelve past the cards' "
                f"{KEEP_DAYS} days): {kept['traces']:,} traces and {other:,} other rows deleted in "
                f"{kept['batches']:,} batches, {kept['seconds']:.1f} s. Intake offered at the same rate "
                f"meanwhile: {during[0]:.0f} acked/s (ack p50 {during[1]:.1f} ms, p95 {during[2]:.1f} ms) "
                f"against {without[0]:.0f} acked/s (p50 {without[1]:.1f} ms, p95 {without[2]:.1f} ms) "
                f"without retention, x{during[0] / without[0]:.2f}.")
            lines.append("")
    return lines


NOTES = """What makes these reads independent of the table size: every list is a keyset page over an
index that matches its filter and order (`ix_traces_timestamp`, `ix_traces_agent_timestamp`,
`ix_traces_kind_timestamp`, `ix_traces_session_timestamp`, `ix_exchange_usage_session`); the
integrity's all-time sums come from per-agent counters (`observer/integrity_counters.py`) plus
the traces created since their mark, its recent window and timeline from bounded index ranges.
Retention deletes per agent in batches of 500 rows, each its own short transaction under the
retention lock, so intake waits for one batch at most.

PostgreSQL partitioning by time was not done. A partitioned table needs the partition key
(`timestamp`) in every unique constraint: `traces` is unique on `trace_id` (the idempotency of
stored results, `ON CONFLICT (trace_id)`) and on `(exchange_id, decision_index)`, and
`trace_violations` and `drift_pending` reference `traces.trace_id` with cascading foreign
keys; all of that would have to go, and converting a live table means copying every row under
a lock while the migration runs at service start. It would also help less than the issue
hopes: retention periods are per agent (each card's `retention_days`), so a monthly partition
can be dropped only once every agent's period has passed it, and the rows of agents with
shorter periods are deleted row by row all the same. What is done instead is above: indexes,
counters and batched deletes; the figures show how far that carries."""


def write_docs(results: list[dict[str, Any]], command: str) -> None:
    body = [SECTION, "", f"`{command}` ({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores shared with "
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
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
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
                                           args.rounds, postgres)))
    finally:
        if postgres is not None:
            postgres.stop()
    for line in _table(results):
        print(line)
    if not args.no_docs:
        write_docs(results, "python bench/trace_scale.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
