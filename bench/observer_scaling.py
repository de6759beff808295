"""Observer throughput with 1 and with 2 observer processes sharing one PostgreSQL.

    python bench/observer_scaling.py [--count 6000] [--rounds 3] [--layouts pinned,default] [--no-docs]
                                      [--evidence on|off]

Each round: a fresh database and a Registry (`smoltbot serve registry`, which creates the
tables); `--count` realistic exchanges (~6 KB: a request with tools and history, a response
with thinking and a tool call; 8 agents, agent and session resolved as gateways send them)
queued first, exactly as the observers' intake stores them; then N observers started as
`smoltbot serve observer` processes, which share the queue (`FOR UPDATE SKIP LOCKED`, leases).
Queuing first measures processing alone: ingest is one stream per gateway and scales with them.

Throughput is exchanges finished per second between 10 % and 90 % finished (process start-up
and the tail left out), sampled every 50 ms with the CPU time of the observers (with their
worker processes), the Registry, PostgreSQL and the whole machine (from /proc). Rounds
alternate 1, 2, 1, 2 observers; medians are reported. Layouts: "pinned" (each observer on a
core of its own, `taskset`) and "default" (unpinned, as deployed).

PostgreSQL is a throwaway cluster (initdb + pg_ctl) with default durability (fsync on).
Prints the figures and rewrites the "Observer scaling" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Observer scaling"
AGENTS = 8
#: The service credential the benchmark's services and its client share.
SERVICE_TOKEN = "bench-service-token-0123456789abcdef0123"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- PostgreSQL ---------------------------------------------------------------------------------


class Postgres:
    def __init__(self) -> None:
        found = shutil.which("pg_ctl")
        candidates = [found] if found else sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
        if not candidates:
            raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found")
        self.bin = Path(candidates[0]).parent
        self.base = Path(tempfile.mkdtemp(prefix="smoltbot-scaling-pg-"))
        self.port = free_port()
        self.version = ""

    def _owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, user="postgres", group="postgres")
        data = self.base / "data"
        subprocess.run(
            self._owner(
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
            capture_output=True,
        )
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(
            self._owner(
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
            ),
            check=True,
            capture_output=True,
        )
        self.version = subprocess.run([str(self.bin / "pg_ctl"), "--version"], capture_output=True,
                                      text=True, check=False).stdout.strip().replace("pg_ctl (PostgreSQL)",
                                                                                      "PostgreSQL")

    def stop(self) -> None:
        subprocess.run(self._owner([str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast",
                                    "-w", "stop"]), capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, name: str) -> str:
        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", database="postgres"
            )
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def cpu_seconds(self) -> float:
        """CPU used so far by every process of this cluster (postmaster and backends)."""
        return sum(_cpu_seconds(pid) for pid in _pids_matching(str(self.base)))


def _pids_matching(fragment: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if fragment in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    # Backends do not carry the data dir in their cmdline: add the postmaster's children.
    children: list[int] = []
    for pid in pids:
        try:
            children += [int(c) for c in (Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
        except OSError:
            continue
    return sorted(set(pids + children))


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (the observer's CPU worker processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree_cpu_seconds(pid: int) -> float:
    return sum(_cpu_seconds(member) for member in _tree(pid))


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


# -- services -----------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on [\d.]+:(\d+)", self.log.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        raise SystemExit(f"{self.name} did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # whatever it started and left behind
            os.killpg(self.process.pid, signal.SIGKILL)


def start_service(
    name: str, service: str, env: dict[str, str], logs: Path, core: int | None = None
) -> Service:
    log = logs / f"{name}.log"
    pin = ["taskset", "-c", str(core)] if core is not None else []
    with log.open("wb") as out:
        process = subprocess.Popen([*pin, sys.executable, "-m", "smoltbot.cli.main", "serve", service,
                                    "--listen", "127.0.0.1:0"], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Service(name, process, log)


# -- load ---------------------------------------------------------------------------------------


def build_exchange(agent: tuple[str, str, str], index: int) -> Any:
    """One exchange as a gateway captures it, agent and session resolved (as the gateway's identity
    cache has them while the Registry is up)."""
    from google.protobuf import timestamp_pb2

    from smoltbot.v1 import exchange_pb2

    agent_hash, agent_id, session_id = agent
    exchange_id = secrets.token_hex(16)
    tools = [{"name": name, "description": f"{name} a file",
              "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
             for name in ("read_file", "write_file", "list_files", "delete_file")]
    history = [
        {
            "role": "user",
            "content": f"Task {index}: tidy up the reports folder and summarise what changed. " * 4,
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "Earlier turn: list the folder first. " * 10,
                    "signature": "sig" * 20,
                },
                {
                    "type": "tool_use",
                    "id": f"toolu_old{index}",
                    "name": "list_files",
                    "input": {"path": "/reports"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": f"toolu_old{index}",
                    "content": "\n".join(f"report-{n}.csv" for n in range(40)),
                }
            ],
        },
    ]
    request = {"model": "claude-haiku-4-5", "max_tokens": 4096, "system": "You are a careful file assistant.",
               "tools": tools, "messages": history}
    response = {
        "id": f"msg_{exchange_id[:24]}", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [
            {"type": "thinking", "thinking": ("The user wants the reports tidied. I will read report-3.csv "
                                              "before changing anything, to check its format. ") * 6,
             "signature": "sig" * 20},
            {"type": "text", "text": "I'll look at the first report before changing anything."},
            {"type": "tool_use", "id": f"toolu_{exchange_id[:20]}", "name": "read_file",
             "input": {"path": "/reports/report-3.csv"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 1800, "output_tokens": 160},
    }
    now = datetime.now(UTC)
    started, ended = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    started.FromDatetime(now - timedelta(seconds=2))
    ended.FromDatetime(now)
    json_header = [exchange_pb2.HttpHeader(name="content-type", value="application/json")]
    return exchange_pb2.Exchange(
        exchange_id=exchange_id,
        agent_hash=agent_hash,
        agent_id=agent_id,
        session_id=session_id,
        gateway_id="bench:1",
        request=exchange_pb2.CapturedRequest(
            method="POST", path="/v1/messages", body=json.dumps(request).encode(), headers=json_header
        ),
        response=exchange_pb2.CapturedResponse(
            status=200, body=json.dumps(response).encode(), headers=json_header
        ),
        timings=exchange_pb2.ExchangeTimings(started_at=started, first_byte_at=started, ended_at=ended),
        outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE,
    )


async def resolve_agents(registry_port: int) -> list[tuple[str, str, str]]:
    from smoltbot.core.grpc_client import open_channel
    from smoltbot.core.service_auth import ServiceCredential
    from smoltbot.core.tls import TlsConfig
    from smoltbot.v1 import registry_service_pb2, registry_service_pb2_grpc

    channel = open_channel(
        f"127.0.0.1:{registry_port}", TlsConfig(credential=ServiceCredential(SERVICE_TOKEN))
    )
    stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
    agents = []
    for _ in range(AGENTS):
        agent_hash = secrets.token_hex(32)
        reply = await stub.ResolveAgent(
            registry_service_pb2.ResolveAgentRequest(agent_hash=agent_hash), timeout=10
        )
        agent_id = reply.agent.agent_id
        session = await stub.ResolveSession(registry_service_pb2.ResolveSessionRequest(
            agent_id=agent_id, agent_hash=agent_hash), timeout=10)
        agents.append((agent_hash, agent_id, session.session.session_id))
    await channel.close()
    return agents


async def preload(database_url: str, exchanges: list[Any]) -> None:
    """Queues the exchanges as the observers' intake would (`ExchangeQueue.insert_exchanges`), before
    any observer runs, so that the round measures processing alone."""
    from smoltbot.core.storage import open_database
    from smoltbot.observer.queue import ExchangeQueue, ExchangeRow

    db = open_database(database_url)
    try:
        queue = ExchangeQueue(db)
        now = datetime.now(UTC)
        rows = [ExchangeRow(exchange_id=e.exchange_id, agent_hash=e.agent_hash, agent_id=e.agent_id,
                            session_id=e.session_id, occurred_at=now, payload=e.SerializeToString())
                for e in exchanges]
        for start in range(0, len(rows), 500):
            accepted = await queue.insert_exchanges(rows[start:start + 500])
            assert len(accepted) == len(rows[start:start + 500])
    finally:
        await db.close()


@dataclass
class Sample:
    at: float
    done: int
    observers: list[float]
    registry: float
    postgres: float
    busy: int
    total: int


async def watch(database_url: str, count: int, sample: Any, processes: list[Service],
                timeout: float = 600) -> list[Sample]:
    """Samples the finished count and the CPU counters every 50 ms until all are finished, then
    checks that each exchange has its traces and none failed."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        samples: list[Sample] = []
        deadline = time.monotonic() + timeout
        while True:
            done = await conn.fetchval("SELECT count(*) FROM exchanges WHERE state IN ('done', 'failed')")
            samples.append(sample(done))
            if done >= count:
                break
            for process in processes:
                if process.process.poll() is not None:
                    raise SystemExit(
                        f"{process.name} exited:\n{process.log.read_text(errors='replace')[-2000:]}"
                    )
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done}/{count} finished within {timeout}s")
            await asyncio.sleep(0.05)
        failed = await conn.fetchval("SELECT count(*) FROM exchanges WHERE state = 'failed'")
        traced = await conn.fetchval("SELECT count(DISTINCT exchange_id) FROM traces")
        if failed or traced != count:
            raise SystemExit(f"{failed} failed, {traced} of {count} exchanges have traces")
        return samples
    finally:
        await conn.close()


@dataclass
class Round:
    mode: str
    observers: int
    count: int
    #: Between 10 % and 90 % finished (start-up and the tail left out).
    seconds: float
    finished: int
    observer_cpu: float
    registry_cpu: float
    postgres_cpu: float
    machine_busy: float
    #: Each observer's share of the observers' CPU: both did work when neither is near 0.
    shares: tuple[float, ...] = ()

    @property
    def rate(self) -> float:
        return self.finished / self.seconds

    @property
    def other_cores(self) -> float:
        """Cores busy with anything but the observers, the registry and PostgreSQL: the load
        generator and whatever else runs on the machine."""
        cpus = os.cpu_count() or 1
        return (
            self.machine_busy * cpus
            - (self.observer_cpu + self.registry_cpu + self.postgres_cpu) / self.seconds
        )


def run_round(pg: Postgres, mode: str, observers: int, count: int, index: int, evidence: str = "") -> Round:
    """`mode` "pinned": observer i runs on core i alone (so it has no CPU worker pool: one
    observer is one core); "default": no pinning, each observer sizes its own worker pool.
    `evidence` "on"/"off": the observers' evidence checks (default: the settings' default, on)."""
    database_url = pg.create_database(f"scaling_{mode}_{index}_{observers}")
    work = Path(tempfile.mkdtemp(prefix="smoltbot-scaling-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("SMOLTBOT_")}
    env.update(SMOLTBOT_DATABASE_URL=database_url, SMOLTBOT_HASH_SECRET="bench", SMOLTBOT_LOG_LEVEL="INFO",
               SMOLTBOT_HOME=str(work / "home"), SMOLTBOT_SERVICE_TOKEN=SERVICE_TOKEN)
    if evidence:
        env["SMOLTBOT_EVIDENCE_ENABLED"] = "true" if evidence == "on" else "false"
    services: list[Service] = []
    try:
        registry = start_service("registry", "registry", env, work)  # it also creates the tables
        services.append(registry)
        registry.wait_listening()
        env["SMOLTBOT_REGISTRY_ADDRESS"] = f"127.0.0.1:{registry.port}"
        agents = asyncio.run(resolve_agents(registry.port))
        asyncio.run(preload(database_url, [build_exchange(agents[i % AGENTS], i) for i in range(count)]))
        cores = os.cpu_count() or 1
        group = [start_service(f"observer-{n}", "observer", env, work,
                               core=n % cores if mode == "pinned" else None) for n in range(observers)]
        services += group

        def sample(done: int) -> Sample:
            busy, total = _machine_jiffies()
            return Sample(time.monotonic(), done, [_tree_cpu_seconds(o.process.pid) for o in group],
                          _tree_cpu_seconds(registry.process.pid), pg.cpu_seconds(), busy, total)

        samples = asyncio.run(watch(database_url, count, sample, group))
        first = next(s for s in samples if s.done >= count // 10)
        last = next(s for s in samples if s.done >= count * 9 // 10)
        each = [b - a for a, b in zip(first.observers, last.observers, strict=True)]
        observer_cpu = sum(each)
        return Round(
            mode, observers, count, last.at - first.at, last.done - first.done, observer_cpu,
            last.registry - first.registry, last.postgres - first.postgres,
            (last.busy - first.busy) / max(1, last.total - first.total),
            tuple(part / observer_cpu for part in each) if observer_cpu else (),
        )
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(work, ignore_errors=True)


LAYOUTS = {"pinned": "one core per observer", "default": "unpinned"}


def section(rounds: list[Round], pg_version: str, count: int) -> str:
    cpus = os.cpu_count() or 0
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    out = [
        SECTION,
        "",
        (
            f"`python bench/observer_scaling.py --count {count}` ({today}; {cpus} CPU cores, {pg_version}, "
            "default durability: fsync and synchronous_commit on). Each round: a fresh database and a "
            "Registry "
            f"as `smoltbot serve` processes; {count:,} exchanges (~6 KB: tools, history, thinking, a tool "
            "call; "
            f"{AGENTS} agents; agent and session resolved, as gateways send them) queued first, as the "
            "observers' "
            "intake stores them; then N Observers started as `smoltbot serve observer` processes, sharing "
            "the "
            "queue. Throughput: exchanges finished per second between 10 % and 90 % finished (start-up and "
            "tail left out), sampled every 50 ms; rounds alternate 1, 2, 1, 2. CPU columns: cores kept busy "
            "on "
            f"average over that time, out of {cpus} (the observers with their worker processes; the "
            "Registry; "
            "PostgreSQL; the rest: the sampler and anything else running on the machine)."
        ),
        "",
        (
            "| layout | observers | exchanges/s (median) | rounds | exchanges per observer CPU-second "
            "| observers' CPU | registry CPU | PostgreSQL CPU | rest of the machine |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, float] = {}
    efficiency: dict[str, float] = {}
    for mode in ("pinned", "default"):
        by = {n: [r for r in rounds if r.mode == mode and r.observers == n] for n in (1, 2)}
        if not all(by.values()):
            continue
        median = {n: statistics.median(r.rate for r in by[n]) for n in by}
        per_cpu = {n: statistics.median(r.finished / r.observer_cpu for r in by[n]) for n in by}
        ratios[mode] = median[2] / median[1]
        efficiency[mode] = per_cpu[2] / per_cpu[1]
        for n in (1, 2):
            runs = by[n]
            out.append(
                f"| {LAYOUTS[mode]} | {n} | {median[n]:,.0f} | {', '.join(f'{r.rate:,.0f}' for r in runs)} | "
                f"{per_cpu[n]:,.0f} | "
                f"{statistics.median(r.observer_cpu / r.seconds for r in runs):.2f} | "
                f"{statistics.median(r.registry_cpu / r.seconds for r in runs):.2f} | "
                f"{statistics.median(r.postgres_cpu / r.seconds for r in runs):.2f} | "
                f"{statistics.median(r.other_cores for r in runs):.2f} |")
    out.append("")
    splits = ", ".join(f"{min(r.shares):.0%}" for r in rounds if r.observers == 2 and r.shares)
    out.append(
        "**2 observers / 1 observer, throughput: "
        + "; ".join(f"{ratio:.2f}× ({LAYOUTS[mode]})" for mode, ratio in ratios.items())  # noqa: RUF001 - typographic signs in the report's text
        + ". Work per observer CPU-second, 2 vs 1: "
        + "; ".join(f"{value:.2f}× ({LAYOUTS[mode]})" for mode, value in efficiency.items())  # noqa: RUF001 - typographic signs in the report's text
        + f".** In every round each exchange finished exactly once and none failed; with two observers both "
        f"did work (the smaller one's share of the observers' CPU: {splits}).")
    out.append("")
    out.append(_reading(cpus))
    out.append("")
    return "\n".join(out)


def _reading(cpus: int) -> str:
    return (
        "How to read it. *One core per observer* pins each observer to a core of its own with `taskset` (an "
        "observer that sees one core runs its analysis in its event loop, without worker processes): the "
        "ratio is what a second observer adds when it brings a core, while PostgreSQL, the Registry and the "
        f"sampler share the same {cpus} cores. *Unpinned* is how a deployment runs: each observer sizes a "
        "worker pool to the machine, so one observer already keeps the cores busy and a second process on "
        "the same machine mostly competes with it. *Exchanges per observer CPU-second* near 1 means two "
        "observers cost nothing beyond their own work, consistent with claims that never wait on each "
        "other's rows (`FOR UPDATE SKIP LOCKED`) and no work done twice. Where scaling ends, with observers "
        "on nodes of their own, is set by PostgreSQL (its CPU, and commit latency with fsync on); this "
        f"{cpus}-core machine cannot show it, and it was not measured.")


def write_docs(text: str) -> None:
    current = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(current):
        current = pattern.sub(lambda _: text + "\n", current)
    else:
        current = current.rstrip("\n") + "\n\n" + text
    DOCS.write_text(current.rstrip("\n") + "\n")


def main() -> None:
    # SIGTERM (a CI timeout, kill) must still stop the services and the PostgreSQL cluster.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6000, help="exchanges per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per layout and observer count")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--layouts", default="pinned,default",
                        help="pinned (one core per observer, needs taskset) and/or default (unpinned)")
    parser.add_argument("--evidence", choices=("on", "off"), default="",
                        help="the observers' evidence checks (default: the settings' default, on)")
    args = parser.parse_args()
    pg = Postgres()
    pg.start()
    rounds: list[Round] = []
    try:
        layouts = [layout for layout in args.layouts.split(",") if layout]
        if "pinned" in layouts and shutil.which("taskset") is None:
            raise SystemExit("the pinned layout needs taskset (util-linux)")
        for index in range(args.rounds):
            for mode in layouts:
                for observers in (1, 2):
                    result = run_round(pg, mode, observers, args.count, index, args.evidence)
                    rounds.append(result)
                    print(
                        f"round {index + 1}, {mode}, {observers} observer(s): {result.rate:,.0f} exchanges/s "
                        f"({result.seconds:.1f} s for {result.finished}; observer CPU "
                        f"{result.observer_cpu:.1f} s, "
                        f"split {'/'.join(f'{share:.0%}' for share in result.shares)}, "
                        f"registry CPU {result.registry_cpu:.1f} s, PostgreSQL CPU "
                        f"{result.postgres_cpu:.1f} s, "
                        f"machine {result.machine_busy:.0%} busy)",
                        flush=True,
                    )
    finally:
        pg.stop()
    text = section(rounds, pg.version, args.count)
    print()
    print(text)
    if not args.no_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
