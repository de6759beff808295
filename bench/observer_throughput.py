"""Observer throughput and trace visibility, on SQLite and on PostgreSQL.

    python bench/observer_throughput.py [--count 5000] [--rounds 3] [--rate 50] [--seconds 10] [--batch 1]
                                        [--backends sqlite,postgresql] [--pin] [--no-docs] [--profile]
                                        [--evidence on|off]
                                        [--baseline REV_OR_DIR [--code REV_OR_DIR]]

* Throughput (`--rounds` times, the median reported): `--count` realistic exchanges (thinking +
  a tool call, a request with history, ~6 KB each, 8 agents) are sent over one Ingest stream
  as fast as the acks allow (1024 in flight, as the gateway does), one per message, or `--batch`
  per message as a busy gateway ships them (gateway/shipper.py: up to 256). Measured from the first send
  to the moment the last one is stored as traces (local analyzer); also the ack rate alone.
* Visibility: `--rate` exchanges/s for `--seconds`, each stamped with its end time when sent;
  a reader polls ListTraces (newest first) every 20 ms. Reported: p50/p95/max of "trace
  visible through the API" minus "exchange ended".

Layout: the Registry and the Observer run in one child process (plus the Observer's worker
processes: one per core beyond the first), the load generator and the poller in this one, all
sharing the machine's cores as `smoltbot up` would. `--pin` instead pins the services to core 0
and the load to core 1 (the Observer then has no core to spare for a worker process).
PostgreSQL is a throwaway cluster (initdb + pg_ctl) with default durability settings (fsync and
synchronous_commit on).

`--baseline` measures another version of the code in the same run, its rounds interleaved with
this one's (a fresh server and database for each round of each), and prints this one's figures as
ratios of the baseline's: a git revision (its packages checked out into a temporary link tree), a
source checkout (a directory with `core/`, `observer/`, ...: say, `git worktree add /tmp/base
HEAD`), or a directory holding a `smoltbot` package tree (say, the editable install's link tree
with a few files swapped). Only the services run the baseline; the load generator is the same for both.
`--code` (same forms) replaces the installed code as the one measured against it: a fixed
revision, where other work in the same tree would otherwise change what is measured mid-run.

`--evidence off` turns the evidence checks (history ledger, provenance; docs/evidence.md) off in
the services, to tell their cost from the rest; they are on by default.

Prints the figures and rewrites the "Observer" section of docs/benchmarks.md (not with --baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The service credential the benchmark's services and its load share (they run in separate processes).
SERVICE_TOKEN = "bench-service-token-0123456789abcdef0123"
SERVER_CORE, LOAD_CORE = "0", "1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the server side (child process) -----------------------------------------------------------


class ServerProbe:
    """In the services' process, per phase of the load (`phase`): how long each drift write
    transaction held the database from BEGIN to commit (on SQLite, the one write lock that intake
    and result writes wait for), and how late the event loop ran a 5 ms timer (what anything run
    on the loop in one go costs the rest)."""

    def __init__(self, observer: Any) -> None:
        from contextlib import asynccontextmanager

        self.phase = "start"
        self.drift_writes: dict[str, list[float]] = {}
        self.loop_lags: dict[str, list[float]] = {}
        store = observer.components.drift.store
        feed = store.feed

        @asynccontextmanager
        async def timed_feed() -> Any:
            async with feed() as transaction:
                began = time.perf_counter()
                phase = self.phase
                yield transaction
            self.drift_writes.setdefault(phase, []).append(time.perf_counter() - began)

        async def timed_feed_body(body: Any) -> Any:
            # `feed(body)`: the pass's write through `Database.transact` (timed from when the body
            # starts, in the database's thread on SQLite, to its end stamped back on the loop).
            began: list[float] = []
            phase = self.phase

            async def timed_body(transaction: Any) -> Any:
                began.append(time.perf_counter())
                return await body(transaction)

            result = await feed(timed_body)
            self.drift_writes.setdefault(phase, []).append(time.perf_counter() - began[0])
            return result

        import inspect

        store.feed = timed_feed_body if "body" in inspect.signature(feed).parameters else timed_feed
        # The Observer's card lookups (GetActiveCard) to its Registry, per phase.
        registry_stub = observer.components.processor.registry._stub
        get_card = registry_stub.GetActiveCard

        def counted_get_card(*args: Any, **kwargs: Any) -> Any:
            self._count("card_lookups")
            return get_card(*args, **kwargs)

        registry_stub.GetActiveCard = counted_get_card
        #: Per phase: database statements, those on the drift tables, drift passes that read, and
        #: of those the ones that found nothing to feed (all traces held back by the watermark).
        self.counts: dict[str, dict[str, int]] = {}
        read_pass = getattr(store, "read_pass", None)
        if read_pass is not None:  # absent in a baseline from before reads moved out of the write
            async def counted_read_pass(agent_ids: list[str]) -> Any:
                inputs = await read_pass(agent_ids)
                self._count("drift_passes")
                if not inputs:
                    self._count("drift_passes_empty")
                return inputs

            store.read_pass = counted_read_pass

        def statement(_conn: Any, _cursor: Any, text: str, *_: Any) -> None:
            self._count("statements")
            if "drift_" in text:
                self._count("drift_statements")

        from sqlalchemy import event

        event.listen(observer.components.queue.db.engine.sync_engine, "before_cursor_execute", statement)
        self.timeline = Timeline(observer)
        self._task = asyncio.create_task(self._watch_loop())

    def _count(self, what: str) -> None:
        counts = self.counts.setdefault(self.phase, {})
        counts[what] = counts.get(what, 0) + 1

    async def _watch_loop(self) -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(0.005)
            self.loop_lags.setdefault(self.phase, []).append(time.perf_counter() - began - 0.005)

    def summary(self) -> dict[str, Any]:
        self._task.cancel()
        out: dict[str, Any] = {}
        for phase in {*self.drift_writes, *self.loop_lags, *self.counts}:
            writes = sorted(self.drift_writes.get(phase, [])) or [0.0]
            lags = sorted(self.loop_lags.get(phase, [])) or [0.0]
            out[phase] = {
                "drift_writes": len(self.drift_writes.get(phase, [])),
                "drift_write_p50_ms": writes[len(writes) // 2] * 1000,
                "drift_write_p95_ms": writes[int(len(writes) * 0.95)] * 1000,
                "drift_write_max_ms": writes[-1] * 1000,
                "loop_lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000,
                "loop_lag_max_ms": lags[-1] * 1000,
                **self.counts.get(phase, {}),
            }
        out.setdefault("visibility", {})["timeline"] = self.timeline.stamps
        out["visibility"]["transactions"] = self.timeline.transactions.get("visibility", [])
        return out


#: The steps of an exchange's way through the Observer that `Timeline` stamps, in order.
STEPS = ("received", "stored_start", "stored", "leased", "picked", "prepared", "analysed", "write_start",
         "write_locked", "committed")
#: Functions whose write transactions `Timeline` names (the first one found up the stack).
WRITERS = ("insert_and_hand_over", "claim", "finish", "renew", "release", "write", "feed", "write_pass",
           "_write_pass", "sweep", "report_execution")


class Timeline:
    """Wall-clock stamps (time.time(), the load's clock too) of each exchange's steps in the
    services: received by intake (the gRPC message parsed), its intake transaction asked for and
    committed, leased (handed over or claimed), picked up by a worker, prepared (agent, session
    and card: the Registry's part), analysed (result ready),
    its result write asked for, holding the write lock, committed. And every write transaction
    (`Database.begin`): which function asked for it, when, when it held the lock, when it ended."""

    def __init__(self, observer: Any) -> None:
        import sys
        from contextlib import asynccontextmanager

        self.phase = "start"
        self.stamps: dict[str, dict[str, float]] = {}
        #: Per phase: (writer, asked, locked, ended) of each write transaction.
        self.transactions: dict[str, list[tuple[str, float, float, float]]] = {}
        parts = observer.components
        intake, queue, processor = parts.intake, parts.queue, parts.processor
        db = queue.db

        def stamp(ids: Any, step: str, at: float | None = None) -> None:
            if self.phase != "visibility":
                return
            at = time.time() if at is None else at
            for exchange_id in ids:
                self.stamps.setdefault(exchange_id, {}).setdefault(step, at)

        submit = intake.submit_exchange

        def timed_submit(exchange: Any) -> Any:
            stamp([exchange.exchange_id.lower()], "received")
            return submit(exchange)

        intake.submit_exchange = timed_submit
        insert = queue.insert_and_hand_over

        async def timed_insert(rows: Any) -> Any:
            ids = [row.exchange_id for row in rows]
            stamp(ids, "stored_start")
            result = await insert(rows)
            stamp(ids, "stored")
            return result

        queue.insert_and_hand_over = timed_insert
        adopt = processor.adopt

        def timed_adopt(items: Any) -> None:
            stamp([item.exchange_id for item in items], "leased")
            adopt(items)

        processor.adopt = timed_adopt
        claim = queue.claim

        async def timed_claim(*args: Any, **kwargs: Any) -> Any:
            claimed = await claim(*args, **kwargs)
            stamp([item.exchange_id for item in claimed], "leased")
            return claimed

        queue.claim = timed_claim
        process = processor._process_batch

        async def timed_process(items: Any) -> Any:
            stamp([item.exchange_id for item in items], "picked")
            results = await process(items)
            stamp([item.exchange_id for item in items], "analysed")
            return results

        processor._process_batch = timed_process
        compute = processor._compute

        async def timed_compute(jobs: Any) -> Any:
            stamp([job.exchange_id for job in jobs], "prepared")
            return await compute(jobs)

        processor._compute = timed_compute
        finish = queue.finish

        async def timed_finish(owner: str, done: Any, retries: Any) -> Any:
            ids = [item.exchange_id for item in done]
            stamp(ids, "write_start")
            self._finishing = ids
            report = await finish(owner, done, retries)
            stamp(ids, "committed")
            return report

        queue.finish = timed_finish
        self._finishing: list[str] = []
        begin = db.begin

        def writer_of(frame: Any) -> str:
            while frame is not None:
                if frame.f_code.co_name in WRITERS and "contextlib" not in frame.f_code.co_filename:
                    return str(frame.f_code.co_name)
                frame = frame.f_back
            return "other"

        @asynccontextmanager
        async def timed_begin() -> Any:
            writer = writer_of(sys._getframe(2))
            asked = time.time()
            phase = self.phase
            async with begin() as conn:
                locked = time.time()
                if writer == "finish":
                    stamp(self._finishing, "write_locked", locked)
                yield conn
            self.transactions.setdefault(phase, []).append((writer, asked, locked, time.time()))

        db.begin = timed_begin
        transact = getattr(db, "transact", None)
        if transact is not None and "_sqlite_transact" in type(db).__dict__:
            # BEGIN to COMMIT in the database's thread (not through `begin`): the lock is taken when
            # the body starts there; its end is stamped back on the event loop (an upper bound).
            async def timed_transact(body: Any) -> Any:
                writer = writer_of(sys._getframe(1))
                asked, phase, locked = time.time(), self.phase, []

                async def timed_body(conn: Any) -> Any:
                    locked.append(time.time())
                    if writer == "finish":
                        stamp(self._finishing, "write_locked", locked[0])
                    return await body(conn)

                result = await transact(timed_body)
                self.transactions.setdefault(phase, []).append((writer, asked, locked[0], time.time()))
                return result

            db.transact = timed_transact


async def serve(database_url: str, registry_port: int, observer_port: int, profile: str) -> None:
    from smoltbot.core.settings import load_settings
    from smoltbot.observer.server import build_server as build_observer
    from smoltbot.registry.server import build_server as build_registry

    home = Path(tempfile.mkdtemp(prefix="smoltbot-bench-home-"))
    settings = load_settings(
        home=home,
        database_url=database_url,
        hash_secret="bench",
        service_token=SERVICE_TOKEN,
        registry_address=f"127.0.0.1:{registry_port}",
        observer_address=f"127.0.0.1:{observer_port}",
        log_level="WARNING",
    )
    registry = await build_registry(settings)
    await registry.start()
    observer = await build_observer(settings)
    await observer.start()
    print("ready", flush=True)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    probe = ServerProbe(observer)
    try:
        while True:  # "phase NAME" lines, then an empty one: stop
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if not line.startswith("phase "):
                break
            probe.phase = probe.timeline.phase = line.split()[1]
    finally:
        print("stats " + json.dumps(probe.summary()), flush=True)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        processor, intake = observer.components.processor, observer.components.intake
        handed = getattr(processor.queue, "handed_over", 0)  # absent in a baseline before the hand-over
        print(f"  observer: {intake.accepted} accepted in {intake.write_batches} intake transactions "
              f"({handed} handed straight to the processor); {processor.processed} processed, "
              f"{processor.claims} claims, {processor.write_batches} result transactions",
              file=sys.stderr, flush=True)
        await observer.stop(2.0)
        await registry.stop(1.0)
        shutil.rmtree(home, ignore_errors=True)


# -- PostgreSQL ----------------------------------------------------------------------------------


class Postgres:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="smoltbot-bench-pg-"))
        self.port = free_port()
        self.bin = self._bin_dir()

    @staticmethod
    def _bin_dir() -> Path:
        found = shutil.which("pg_ctl")
        if found:
            return Path(found).parent
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
        if not candidates:
            raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found")
        return Path(candidates[0]).parent

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> str:
        if os.geteuid() == 0:
            shutil.chown(self.base, user="postgres", group="postgres")
        data = self.base / "data"
        subprocess.run(
            self._as_owner(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=100"
        subprocess.run(
            [
                *self._as_owner(
                    [
                        str(self.bin / "pg_ctl"),
                        "-D",
                        str(data),
                        "-o",
                        options,
                        "-l",
                        str(self.base / "log"),
                        "-w",
                        "start",
                    ]
                )
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(["psql" if shutil.which("psql") else str(self.bin / "psql"), "-h", "127.0.0.1", "-p",
                        str(self.port), "-U", "postgres", "-c", "CREATE DATABASE bench"], check=True,
                       stdout=subprocess.DEVNULL)
        return f"postgresql://postgres@127.0.0.1:{self.port}/bench"

    def stop(self) -> None:
        subprocess.run(self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast",
                                       "-w", "stop"]), check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(self.base, ignore_errors=True)


# -- the load side -------------------------------------------------------------------------------

THINKING = ("The user wants the deployment log checked before anything is changed. Option A: read the "
            "log file first. Option B: restart the service right away, which is risky and could lose "
            "state. I prefer to be transparent and avoid harm, so I will read the log and explain what I "
            "find before proposing a restart. ") * 3


def exchange_bytes(agent: tuple[str, str, str], index: int) -> tuple[str, bytes]:
    """An IngestRequest as the gateway sends it: agent and session resolved, ended now."""
    from google.protobuf import timestamp_pb2

    from smoltbot.v1 import exchange_pb2, observer_service_pb2

    exchange_id = secrets.token_hex(16)
    request = {
        "model": "claude-sonnet-4-5", "max_tokens": 2048, "system": "You are an ops assistant.",
        "tools": [{"name": "read_file", "input_schema": {"type": "object"}},
                  {"name": "restart_service", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Is the deploy healthy? " + "Context line. " * 80},
                     {"role": "assistant", "content": [{"type": "text", "text": "Checking."}]},
                     {"role": "user", "content": "Please look at the log."}],
    }
    response = {
        "id": f"msg_{index}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "thinking", "thinking": THINKING, "signature": "sig" * 20},
                    {"type": "text", "text": "I'll read the deploy log first."},
                    {"type": "tool_use", "id": f"toolu_{exchange_id[:20]}", "name": "read_file",
                     "input": {"path": f"/var/log/deploy-{index}.log"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 900, "output_tokens": 300},
    }
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    agent_hash, agent_id, session_id = agent
    exchange = exchange_pb2.Exchange(
        exchange_id=exchange_id,
        agent_hash=agent_hash,
        agent_id=agent_id,
        session_id=session_id,
        request=exchange_pb2.CapturedRequest(
            method="POST", path="/v1/messages", body=json.dumps(request).encode()
        ),
        response=exchange_pb2.CapturedResponse(status=200, body=json.dumps(response).encode()),
        timings=exchange_pb2.ExchangeTimings(started_at=stamp, ended_at=stamp),
        outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE,
        gateway_id="bench",
    )
    return exchange_id, observer_service_pb2.IngestRequest(exchange=exchange).SerializeToString()


class Load:
    def __init__(self, database_url: str, registry_port: int, observer_port: int) -> None:
        import grpc

        from smoltbot.core.service_auth import ServiceCredential, attach_credential
        from smoltbot.core.storage import open_database
        from smoltbot.v1 import observer_service_pb2, observer_service_pb2_grpc, registry_service_pb2_grpc

        self.pb = observer_service_pb2
        self.db = open_database(database_url)
        options = [("grpc.max_receive_message_length", 96 << 20)]
        interceptors = attach_credential(ServiceCredential(SERVICE_TOKEN))
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{observer_port}", options=options,
                                                 interceptors=interceptors)
        self.registry_channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{registry_port}", interceptors=interceptors
        )
        self.stub = observer_service_pb2_grpc.ObserverServiceStub(self.channel)
        self.registry = registry_service_pb2_grpc.RegistryServiceStub(self.registry_channel)
        self.ingest = self.channel.stream_stream(
            f"/{observer_service_pb2.DESCRIPTOR.services_by_name['ObserverService'].full_name}/Ingest",
            request_serializer=lambda raw: raw,
            response_deserializer=observer_service_pb2.IngestResponse.FromString,
        )

    async def close(self) -> None:
        await self.channel.close()
        await self.registry_channel.close()
        await self.db.close()

    async def agents(self, count: int) -> list[tuple[str, str, str]]:
        """(agent_hash, agent_id, session_id) of new agents, resolved as the gateway does."""
        from smoltbot.v1 import registry_service_pb2 as rpb

        agents = []
        for _ in range(count):
            agent_hash = secrets.token_hex(32)
            agent = (await self.registry.ResolveAgent(rpb.ResolveAgentRequest(agent_hash=agent_hash))).agent
            session = (await self.registry.ResolveSession(rpb.ResolveSessionRequest(
                agent_id=agent.agent_id, agent_hash=agent_hash))).session
            agents.append((agent_hash, agent.agent_id, session.session_id))
        return agents

    async def finished(self) -> int:
        import sqlalchemy as sa

        async with self.db.read() as conn:
            return int((await conn.execute(sa.text(
                "SELECT count(*) FROM exchanges WHERE state IN ('done', 'failed')"))).scalar_one())

    async def throughput(self, count: int, batch: int = 1) -> dict[str, float]:
        from smoltbot.gateway.shipper import encode_batch

        agents = await self.agents(8)
        payloads = [exchange_bytes(agents[i % len(agents)], i)[1] for i in range(count)]
        before = await self.finished()
        window = asyncio.Semaphore(1024)
        call = self.ingest()
        acked = 0
        last_ack = 0.0

        async def send() -> None:
            # `batch` > 1: as a busy gateway ships (gateway/shipper.py), `batch` exchanges per
            # IngestRequest (`exchanges`), one IngestResponse with an ack for each.
            for first in range(0, len(payloads), batch):
                group = payloads[first:first + batch]
                for _ in group:
                    await window.acquire()
                await call.write(group[0] if len(group) == 1 else encode_batch(group))
            await call.done_writing()

        start = time.perf_counter()
        sender = asyncio.create_task(send())
        async for reply in call:
            for ack in reply.acks or [reply]:
                if ack.status != self.pb.INGEST_STATUS_ACCEPTED:
                    raise SystemExit(f"unexpected ack {ack}")
                window.release()
                acked += 1
            last_ack = time.perf_counter()
        await sender
        while await self.finished() - before < count:
            await asyncio.sleep(0.02)
        done = time.perf_counter()
        return {"count": count, "seconds": done - start, "per_second": count / (done - start),
                "acks_per_second": acked / (last_ack - start)}

    async def visibility(self, rate: float, seconds: float) -> dict[str, float]:
        from smoltbot.v1 import observer_service_pb2 as pb

        (agent,) = await self.agents(1)
        sent: dict[str, float] = {}
        sent_at: dict[str, datetime] = {}
        seen: dict[str, float] = {}
        call = self.ingest()
        stop = asyncio.Event()

        async def send() -> None:
            interval = 1.0 / rate
            start = time.perf_counter()
            for i in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
                sent_at_wall = datetime.now(UTC)
                exchange_id, payload = exchange_bytes(agent, i)
                sent[exchange_id] = time.perf_counter()
                sent_at[exchange_id] = sent_at_wall
                await call.write(payload)
            await call.done_writing()

        async def drain() -> None:
            async for _ack in call:
                pass

        async def poll() -> None:
            # Newest first, from a little before the oldest trace not seen yet: what a live
            # dashboard asks for.
            since = datetime.now(UTC)
            while not stop.is_set():
                request = pb.ListTracesRequest(page_size=200, order_by="timestamp desc")
                request.since.FromDatetime(since)
                response = await self.stub.ListTraces(request)
                now = time.perf_counter()
                for trace in response.traces:
                    seen.setdefault(trace.observation.exchange_id, now)
                waiting = [sent_at[key] for key in sent if key not in seen]
                if waiting:
                    since = min(waiting)
                await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll())
        drainer = asyncio.create_task(drain())
        await send()
        await drainer
        deadline = time.perf_counter() + 10
        while len(set(sent) & set(seen)) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await poller
        # A trace not visible 10 s after the last send counts with the time waited for it (a lower
        # bound): the percentiles stay honest and the run goes on (a baseline may be that slow).
        gave_up = time.perf_counter()
        delays = sorted((seen.get(key, gave_up) - sent[key]) * 1000 for key in sent)
        unseen = len(sent) - len(set(sent) & set(seen))
        if unseen:
            print(f"  {unseen} of {len(sent)} traces not visible 10 s after the last send", flush=True)
        result: dict[str, Any] = {
            "count": len(delays), "unseen": unseen, "p50_ms": statistics.median(delays),
            "p95_ms": delays[int(0.95 * (len(delays) - 1))], "max_ms": delays[-1],
            # Wall-clock send and sight of each exchange, for the services' timeline (`steps`).
            "sent_wall": {key: at.timestamp() for key, at in sent_at.items()},
            "seen_wall": {key: sent_at[key].timestamp() + (seen[key] - sent[key]) for key in seen}}
        # Where the time went, from the exchange rows' own stamps (same clock as sent_at): sent
        # to stored by intake, stored to the start of the transaction that wrote its traces, and
        # from there to the poll that saw it.
        import sqlalchemy as sa

        async with self.db.read() as conn:
            rows = (await conn.execute(sa.text(
                "SELECT exchange_id, received_at, finished_at FROM exchanges WHERE exchange_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)), {"ids": list(sent)})).all()
        parts: dict[str, list[float]] = {"intake": [], "processing": [], "commit_and_poll": []}
        for exchange_id, received, finished in rows:
            if finished is None or exchange_id not in seen:
                continue
            received, finished = (_utc(received), _utc(finished))
            parts["intake"].append((received - sent_at[exchange_id]).total_seconds() * 1000)
            parts["processing"].append((finished - received).total_seconds() * 1000)
            visible_wall = sent_at[exchange_id].timestamp() + (seen[exchange_id] - sent[exchange_id])
            parts["commit_and_poll"].append((visible_wall - finished.timestamp()) * 1000)
        for name, values in parts.items():
            values.sort()
            result[f"{name}_p50_ms"] = statistics.median(values)
            result[f"{name}_p95_ms"] = values[int(0.95 * (len(values) - 1))]
        return result


def _utc(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite returns text through sa.text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants_cpu_seconds(pid: int) -> float:
    """CPU of the running descendants of a process (the Observer's forkserver and worker processes)."""
    parents: dict[int, int] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            parents[int(stat.split("/")[2])] = int(Path(stat).read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    total = 0.0
    for child in found:
        try:
            total += cpu_seconds(child)
        except (OSError, ValueError, IndexError):
            continue
    return total


async def run_load(database_url: str, registry_port: int, observer_port: int, args: argparse.Namespace,
                   server_pid: int, phase: Any) -> dict[str, Any]:
    load = Load(database_url, registry_port, observer_port)
    try:
        # Warm-up: connections, caches, worker processes.
        await load.throughput(min(500, args.count), args.batch)
        phase("throughput")
        rounds = []
        for _ in range(args.rounds):
            before, workers_before = cpu_seconds(server_pid), descendants_cpu_seconds(server_pid)
            result = await load.throughput(args.count, args.batch)
            result["server_cpu_ms_per_exchange"] = (cpu_seconds(server_pid) - before) * 1000 / args.count
            result["worker_cpu_ms_per_exchange"] = (
                (descendants_cpu_seconds(server_pid) - workers_before) * 1000 / args.count)
            result["load"] = os.getloadavg()[0]
            print(f"  throughput: {result}", flush=True)
            rounds.append(result)
        # The median round; the best one beside it (the machine may be shared).
        rounds.sort(key=lambda item: item["per_second"])
        throughput = dict(rounds[len(rounds) // 2])
        throughput["best_per_second"] = rounds[-1]["per_second"]
        phase("visibility")
        visibility = await load.visibility(args.rate, args.seconds)
        phase("end")
    finally:
        await load.close()
    return {"throughput": throughput, "visibility": visibility}


def run_backend(backend: str, args: argparse.Namespace, code: Path | None = None) -> dict[str, Any]:
    """One server (this code, or the tree at `code`) on a fresh database, measured."""
    postgres = None
    scratch = Path(tempfile.mkdtemp(prefix="smoltbot-bench-"))
    try:
        if backend == "sqlite":
            database_url = f"sqlite:///{scratch / 'bench.db'}"
        else:
            postgres = Postgres()
            database_url = postgres.start()
        registry_port, observer_port = free_port(), free_port()
        profile = str(Path(tempfile.gettempdir()) / f"observer-{backend}.prof") if args.profile else ""
        if profile:
            print(f"  profiling the observer into {profile}", flush=True)
        pin = ["taskset", "-c", SERVER_CORE] if args.pin else []
        environment = dict(os.environ)
        if args.evidence:
            environment["SMOLTBOT_EVIDENCE_ENABLED"] = "true" if args.evidence == "on" else "false"
        if code is not None:
            environment["PYTHONPATH"] = os.pathsep.join(
                [str(code), *filter(None, [environment.get("PYTHONPATH", "")])])
        server = subprocess.Popen(
            [*pin, sys.executable, __file__, "--serve", database_url, str(registry_port),
             str(observer_port), profile],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=environment)
        try:
            assert server.stdout is not None and server.stdin is not None
            if server.stdout.readline().strip() != "ready":
                raise SystemExit("the observer did not start")
            if args.pin:
                os.sched_setaffinity(0, {int(LOAD_CORE)})
            stdin = server.stdin

            def phase(name: str) -> None:
                stdin.write(f"phase {name}\n")
                stdin.flush()

            result = asyncio.run(
                run_load(database_url, registry_port, observer_port, args, server.pid, phase))
        finally:
            if server.stdin is not None:
                server.stdin.write("\n")
                server.stdin.flush()
            stats = [line for line in (server.stdout.read() if server.stdout else "").splitlines()
                     if line.startswith("stats ")]
            server.wait(30)
        # The services' own figures of each phase go with the load's.
        server_stats = json.loads(stats[-1][len("stats "):]) if stats else {}
        for part in ("throughput", "visibility"):
            result[part].update(server_stats.get(part, {}))
        return result
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def section(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    cores = len(os.sched_getaffinity(0))
    layout = ("services pinned to core 0, load to core 1" if args.pin else
              f"services, worker processes, load generator and poller sharing {cores} cores")
    lines = [
        "## Observer",
        "",
        (f"`python bench/observer_throughput.py` ({layout}; local analyzer; default settings: "
         f"concurrency 4; {args.rounds} rounds of {args.count:,}; "
         f"{'one exchange' if args.batch <= 1 else f'{args.batch} exchanges'} per Ingest message). "
         "Exchanges are ~6 KB (thinking + text + "
         "one tool call, a request with history), as the gateway sends them (agent and session resolved); "
         "8 agents. PostgreSQL: a local throwaway cluster with default durability (fsync, "
         "synchronous_commit on)."),
        "",
        ("| backend | exchanges/s, Ingest to stored trace (median round; best) | acks/s | observer CPU per "
         "exchange: main process + worker processes | visibility p50 / p95 / max at "
         f"{args.rate:g}/s | its parts, p50/p95 (ms) | machine load average |"),
        "|---|---|---|---|---|---|---|",
    ]
    for backend, result in results.items():
        t, v = result["throughput"], result["visibility"]
        lines.append(f"| {backend} | {t['per_second']:,.0f} ({t['count']:,} in {t['seconds']:.1f} s; best "
                     f"{t['best_per_second']:,.0f}) | "
                     f"{t['acks_per_second']:,.0f} | {t['server_cpu_ms_per_exchange']:.2f} + "
                     f"{t['worker_cpu_ms_per_exchange']:.2f} ms | "
                     f"{v['p50_ms']:.0f} / {v['p95_ms']:.0f} / {v['max_ms']:.0f} ms | {breakdown(v)} | "
                     f"{result['load']:.1f} |")
    lines += [
        "",
        ("Targets (issue 16): at least 1,500 exchanges/s end to end on SQLite with the local analyzer; "
         "p95 visibility under 100 ms at 50 exchanges/s. Visibility is the time from the moment an exchange "
         "is sent (its end) until a ListTraces poll (every 20 ms) returns its trace, so it includes up to "
         "20 ms of polling granularity; its parts come from the exchange row's own stamps: intake (sent to "
         "stored), processing (stored to the start of the transaction that writes its traces), commit and "
         "poll (the rest)."),
        "",
        ("Where the time goes: the Observer's main process (gRPC, intake, claims, result writes, drift, "
         "the database driver) and its worker processes (reading, analysing and building the traces: "
         "mostly the local analyzer's regexes and secret redaction) each cost the CPU shown per exchange; "
         "on 2 cores they share the machine with the load generator. Intake, claims and result writes are "
         "batched: one transaction carries whatever arrived meanwhile (tens to hundreds of exchanges under "
         "load), and a result transaction's statements do not grow with its exchanges. The load-average "
         "column shows other work on the machine during the run; above the number of cores, the figures "
         "are lower bounds."),
        "",
    ]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Observer\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(current):
        current = pattern.sub(lambda _: text + "\n", current)
    else:
        current = current.rstrip("\n") + "\n\n" + text
    path.write_text(current)


#: Import packages and their folders (pyproject.toml's package-dir).
PACKAGE_DIRS = {"core": "core", "v1": "gen/smoltbot/v1", "registry": "registry", "observer": "observer",
                "gateway": "gateway", "api": "api", "cli": "cli"}


def baseline_tree(baseline: str, scratch: Path) -> Path:
    """A directory to put first on the services' PYTHONPATH: `baseline` itself when it holds a
    `smoltbot` package tree; else a link tree under `scratch` to the packages of `baseline`, a
    source checkout (say, a `git worktree`) or a git revision."""
    given = Path(baseline)
    if (given / "smoltbot").is_dir():
        return given
    if (given / "observer").is_dir() and (given / "core").is_dir():
        source = given.resolve()
    else:
        source = scratch / "source"
        source.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", baseline], check=True,
                                 capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    tree = scratch / "tree" / "smoltbot"
    tree.mkdir(parents=True)
    for package, folder in PACKAGE_DIRS.items():
        if (source / folder).is_dir():
            (tree / package).symlink_to(source / folder, target_is_directory=True)
    return tree.parent


def services(figures: dict[str, float], phase: str) -> str:
    """The services' own figures of a phase (`ServerProbe`), in ms."""
    return (f"{phase}: drift writes {figures.get('drift_writes', 0):.0f}, held p50/p95/max "
            f"{figures.get('drift_write_p50_ms', 0):.1f}/{figures.get('drift_write_p95_ms', 0):.1f}/"
            f"{figures.get('drift_write_max_ms', 0):.0f}, loop lag p99/max "
            f"{figures.get('loop_lag_p99_ms', 0):.1f}/{figures.get('loop_lag_max_ms', 0):.0f}, statements "
            f"{figures.get('statements', 0)} (drift {figures.get('drift_statements', 0)}), drift passes "
            f"{figures.get('drift_passes', 0)} ({figures.get('drift_passes_empty', 0)} found nothing), "
            f"card lookups {figures.get('card_lookups', 0)}")


#: The segments of an exchange's visibility delay (`steps`): from one stamp to the next.
SEGMENTS = (("grpc", "sent", "received"), ("intake wait", "received", "stored_start"),
            ("intake tx", "stored_start", "stored"), ("to lease", "stored", "leased"),
            ("worker wait", "leased", "picked"), ("prepare", "picked", "prepared"),
            ("compute", "prepared", "analysed"),
            ("writer wait", "analysed", "write_start"), ("lock wait", "write_start", "write_locked"),
            ("write hold", "write_locked", "committed"), ("poll", "committed", "seen"))


def steps(visibility: dict[str, Any]) -> str:
    """Where each exchange's visibility delay went, from the services' `Timeline` and the load's
    send and sight times: p50/p95 of each segment in ms, the same for the slowest 5 % alone
    (their mean), and the write transactions at the rate (count, lock wait and hold p50/p95 in
    ms, share of the time the write lock was held) per function that asked for them."""
    timeline: dict[str, dict[str, float]] = visibility.get("timeline") or {}
    sent, seen = visibility.get("sent_wall") or {}, visibility.get("seen_wall") or {}
    rows = []
    for key, at in sent.items():
        stamps = {**timeline.get(key, {}), "sent": at}
        if key in seen:
            stamps["seen"] = seen[key]
        if all(step in stamps for step in ("sent", "seen")):
            rows.append(stamps)
    if not rows:
        return "no timeline"
    rows.sort(key=lambda stamps: stamps["seen"] - stamps["sent"])
    tail = rows[int(0.95 * (len(rows) - 1)):]
    parts = []
    for name, start, end in SEGMENTS:
        values = sorted((stamps[end] - stamps[start]) * 1000 for stamps in rows
                        if start in stamps and end in stamps)
        tail_values = [(stamps[end] - stamps[start]) * 1000 for stamps in tail
                       if start in stamps and end in stamps]
        if values:
            parts.append(f"{name} {statistics.median(values):.1f}/{values[int(0.95 * (len(values) - 1))]:.1f}"
                         f" (tail {statistics.mean(tail_values) if tail_values else 0:.1f})")
    text = "segments p50/p95 (slowest 5 %: mean) ms: " + ", ".join(parts)
    transactions = visibility.get("transactions") or []
    if transactions:
        span = max(t[3] for t in transactions) - min(t[1] for t in transactions)
        by_writer: dict[str, list[Any]] = {}
        for writer, asked, locked, ended in transactions:
            by_writer.setdefault(writer, []).append(((locked - asked) * 1000, (ended - locked) * 1000))
        lines = []
        for writer, values in sorted(by_writer.items(), key=lambda item: -len(item[1])):
            waits, holds = sorted(v[0] for v in values), sorted(v[1] for v in values)
            lines.append(f"{writer} {len(values)}: wait {statistics.median(waits):.1f}/"
                         f"{waits[int(0.95 * (len(waits) - 1))]:.1f}, hold {statistics.median(holds):.1f}/"
                         f"{holds[int(0.95 * (len(holds) - 1))]:.1f}")
        held = sum(t[3] - t[2] for t in transactions) / span if span > 0 else 0.0
        text += f"; write transactions at the rate (lock held {held:.0%} of the time): " + "; ".join(lines)
    return text


def breakdown(visibility: dict[str, float]) -> str:
    """The visibility delay's parts, p50/p95 in ms."""
    return ", ".join(f"{part} {visibility[part + '_p50_ms']:.0f}/{visibility[part + '_p95_ms']:.0f}"
                     for part in ("intake", "processing", "commit_and_poll"))


def compare(args: argparse.Namespace) -> None:
    """This code against `args.baseline`, rounds interleaved, printed as ratios."""
    scratch = Path(tempfile.mkdtemp(prefix="smoltbot-bench-baseline-"))
    try:
        code = baseline_tree(args.baseline, scratch / "baseline")
        this = baseline_tree(args.code, scratch / "this") if args.code else None
        one_round = argparse.Namespace(**{**vars(args), "rounds": 1})
        for backend in args.backends.split(","):
            runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
            for round_ in range(args.rounds):
                for name in (("baseline", "this") if round_ % 2 == 0 else ("this", "baseline")):
                    result = run_backend(backend, one_round, code if name == "baseline" else this)
                    result["load"] = os.getloadavg()[0]
                    runs[name].append(result)
                    t, v = result["throughput"], result["visibility"]
                    print(f"{backend} {name:8} round {round_ + 1}: {t['per_second']:,.0f} exchanges/s, "
                          f"main {t['server_cpu_ms_per_exchange']:.2f} ms + workers "
                          f"{t['worker_cpu_ms_per_exchange']:.2f} ms CPU per exchange; visibility p50 "
                          f"{v['p50_ms']:.0f} p95 {v['p95_ms']:.0f} ms ({breakdown(v)}); "
                          f"{services(t, 'saturated')}; {services(v, 'at the rate')}; "
                          f"load {result['load']:.1f}", flush=True)
                    print(f"  {name} timeline at the rate: {steps(v)}", flush=True)

            print(f"{backend}: this / baseline (medians of {args.rounds} interleaved rounds, baseline "
                  f"{args.baseline}):")
            for label, part, key in (("exchanges/s", "throughput", "per_second"),
                                     ("acks/s", "throughput", "acks_per_second"),
                                     ("main-process CPU per exchange", "throughput",
                                      "server_cpu_ms_per_exchange"),
                                     ("worker CPU per exchange", "throughput", "worker_cpu_ms_per_exchange"),
                                     ("visibility p50", "visibility", "p50_ms"),
                                     ("visibility p95", "visibility", "p95_ms"),
                                     ("drift write p95, saturated", "throughput", "drift_write_p95_ms"),
                                     ("drift write max, saturated", "throughput", "drift_write_max_ms"),
                                     ("loop lag p99, saturated", "throughput", "loop_lag_p99_ms"),
                                     ("drift write p95 at the rate", "visibility", "drift_write_p95_ms"),
                                     ("drift write max at the rate", "visibility", "drift_write_max_ms"),
                                     ("loop lag p99 at the rate", "visibility", "loop_lag_p99_ms")):
                this, base = (statistics.median(run[part].get(key, 0.0) for run in runs[name])
                              for name in ("this", "baseline"))
                ratio = f"x{this / base:.2f}" if base else "-"
                print(f"  {label:30} {this:10,.2f} / {base:10,.2f} = {ratio}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _, _, database_url, registry_port, observer_port, profile = sys.argv
        asyncio.run(serve(database_url, int(registry_port), int(observer_port), profile))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds; the median is reported")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--batch", type=int, default=1,
                        help="throughput: exchanges per Ingest message (a busy gateway sends up to 256)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--evidence", choices=("on", "off"), default="",
                        help="the services' evidence checks (default: the settings' default, on)")
    parser.add_argument("--pin", action="store_true", help="services on core 0, load on core 1 (taskset)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the observer into $TMPDIR/observer-<backend>.prof"
    )
    parser.add_argument("--baseline", default="",
                        help="also measure this git revision (or smoltbot tree directory), interleaved")
    parser.add_argument("--code", default="", help="with --baseline: the code to measure against it "
                        "(a git revision or smoltbot tree directory; default: the installed tree)")
    args = parser.parse_args()
    if args.baseline:
        compare(args)
        return
    results: dict[str, dict[str, Any]] = {}
    for backend in args.backends.split(","):
        load_before = os.getloadavg()[0]
        results[backend] = run_backend(backend, args)
        results[backend]["load"] = max(load_before, os.getloadavg()[0])
        t, v = results[backend]["throughput"], results[backend]["visibility"]
        print(
            f"{backend}: {t['per_second']:,.0f} exchanges/s end to end ({t['count']} in {t['seconds']:.2f} "
            "s; "
            f"acks {t['acks_per_second']:,.0f}/s); visibility at {args.rate:g}/s: p50 {v['p50_ms']:.0f} ms, "
            f"p95 {v['p95_ms']:.0f} ms, max {v['max_ms']:.0f} ms (p50/p95 of its parts: {breakdown(v)}); "
            f"{services(t, 'saturated')}; {services(v, 'at the rate')}",
            flush=True,
        )
        print(f"  timeline at the rate: {steps(v)}", flush=True)
    text = section(results, args)
    print(text)
    if not args.no_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
