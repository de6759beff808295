"""Observer throughput with 1 and with 2 observer processes sharing one PostgreSQL.

    python bench/observer_scaling.py [--count 3000] [--rounds 2] [--no-docs]

Each round starts a fresh database, a Registry and N Observers as `smoltbot serve` processes
(as a deployment runs them), then sends `--count` realistic exchanges (~6 KB: a request with
tools and history, a response with thinking and a tool call; 8 agents) over two Ingest streams
on a round-robin channel to the observer list, as two gateways would. The observers store
them and share the processing through the exchange queue (`FOR UPDATE SKIP LOCKED`, leases).

Throughput is exchanges finished per second between the first and the last `finished_at`
the observers wrote (so process start-up is not counted), read from the database. Rounds
alternate 1, 2, 1, 2, ...; the median of each is reported, with the CPU seconds the
observers and PostgreSQL used (from /proc), which says what the machine had left.

PostgreSQL is a throwaway cluster (initdb + pg_ctl) with default durability (fsync on).
Prints the figures and rewrites the "Observer scaling" section of docs/benchmarks.md.
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

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Observer scaling"
AGENTS = 8
STREAMS = 2
IN_FLIGHT = 512


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
        subprocess.run(self._owner([str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                    "-E", "UTF8", "--locale=C"]), check=True, capture_output=True)
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(self._owner([str(self.bin / "pg_ctl"), "-D", str(data), "-o", options,
                                    "-l", str(self.base / "log"), "-w", "start"]), check=True, capture_output=True)
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
            conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres")
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
        try:  # whatever it started and left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_service(name: str, service: str, env: dict[str, str], logs: Path, core: int | None = None) -> Service:
    log = logs / f"{name}.log"
    pin = ["taskset", "-c", str(core)] if core is not None else []
    with log.open("wb") as out:
        process = subprocess.Popen([*pin, sys.executable, "-m", "smoltbot.cli.main", "serve", service,
                                    "--listen", "127.0.0.1:0"], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Service(name, process, log)


# -- load ---------------------------------------------------------------------------------------


def exchange_bytes(agent: tuple[str, str], index: int) -> tuple[str, bytes]:
    """A serialized IngestRequest: what a gateway sends for one call."""
    from google.protobuf import timestamp_pb2
    from smoltbot.v1 import exchange_pb2, observer_service_pb2

    agent_hash, agent_id = agent
    exchange_id = secrets.token_hex(16)
    tools = [{"name": name, "description": f"{name} a file",
              "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
             for name in ("read_file", "write_file", "list_files", "delete_file")]
    history = [
        {"role": "user", "content": f"Task {index}: tidy up the reports folder and summarise what changed. " * 4},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Earlier turn: list the folder first. " * 10, "signature": "sig" * 20},
            {"type": "tool_use", "id": f"toolu_old{index}", "name": "list_files", "input": {"path": "/reports"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_old{index}",
                                      "content": "\n".join(f"report-{n}.csv" for n in range(40))}]},
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
    exchange = exchange_pb2.Exchange(
        exchange_id=exchange_id, agent_hash=agent_hash, agent_id=agent_id, gateway_id="bench:1",
        request=exchange_pb2.CapturedRequest(method="POST", path="/v1/messages", body=json.dumps(request).encode(),
                                             headers=[exchange_pb2.HttpHeader(name="content-type",
                                                                              value="application/json")]),
        response=exchange_pb2.CapturedResponse(status=200, body=json.dumps(response).encode(),
                                               headers=[exchange_pb2.HttpHeader(name="content-type",
                                                                                value="application/json")]),
        timings=exchange_pb2.ExchangeTimings(started_at=started, first_byte_at=started, ended_at=ended),
        outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE,
    )
    return exchange_id, observer_service_pb2.IngestRequest(exchange=exchange).SerializeToString()


async def resolve_agents(registry_port: int) -> list[tuple[str, str]]:
    from smoltbot.core.grpc_client import open_channel
    from smoltbot.v1 import registry_service_pb2, registry_service_pb2_grpc

    channel = open_channel(f"127.0.0.1:{registry_port}")
    stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
    agents = []
    for _ in range(AGENTS):
        agent_hash = secrets.token_hex(32)
        reply = await stub.ResolveAgent(registry_service_pb2.ResolveAgentRequest(agent_hash=agent_hash), timeout=10)
        agents.append((agent_hash, reply.agent.agent_id))
    await channel.close()
    return agents


async def send(observer_list: str, payloads: list[bytes]) -> float:
    """Sends every payload over STREAMS Ingest streams; returns when all are acked."""
    from smoltbot.core.grpc_client import open_channel
    from smoltbot.v1 import observer_service_pb2

    method = "/smoltbot.v1.ObserverService/Ingest"
    start = time.perf_counter()

    async def one_stream(part: list[bytes]) -> None:
        channel = open_channel(observer_list)
        call = channel.stream_stream(method, request_serializer=lambda data: data,
                                     response_deserializer=observer_service_pb2.IngestResponse.FromString)()
        window = asyncio.Semaphore(IN_FLIGHT)

        async def writer() -> None:
            for payload in part:
                await window.acquire()
                await call.write(payload)
            await call.done_writing()

        task = asyncio.create_task(writer())
        acked = 0
        async for reply in call:
            if reply.status != observer_service_pb2.INGEST_STATUS_ACCEPTED:
                raise SystemExit(f"not accepted: {reply}")
            acked += 1
            window.release()
        await task
        assert acked == len(part), (acked, len(part))
        await channel.close()

    await asyncio.gather(*(one_stream(payloads[i::STREAMS]) for i in range(STREAMS)))
    return time.perf_counter() - start


async def wait_finished(database_url: str, count: int, timeout: float) -> tuple[int, float, int]:
    """Waits until `count` exchanges are finished; returns (done, seconds first->last finish, failed)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            done = await conn.fetchval("SELECT count(*) FROM exchanges WHERE state IN ('done', 'failed')")
            if done >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        first, last = await conn.fetchrow("SELECT min(finished_at), max(finished_at) FROM exchanges")
        failed = await conn.fetchval("SELECT count(*) FROM exchanges WHERE state = 'failed'")
        traces = await conn.fetchval("SELECT count(DISTINCT exchange_id) FROM traces")
        if traces != done:
            raise SystemExit(f"{done} exchanges finished but {traces} have traces")
        return done, (last - first).total_seconds(), failed
    finally:
        await conn.close()


@dataclass
class Round:
    mode: str
    observers: int
    count: int
    seconds: float
    ingest_seconds: float
    observer_cpu: float
    postgres_cpu: float
    machine_busy: float

    @property
    def rate(self) -> float:
        return (self.count - 1) / self.seconds


def run_round(pg: Postgres, mode: str, observers: int, count: int, index: int) -> Round:
    """`mode` "pinned": observer i runs on core i alone (so it has no CPU worker pool: one
    observer is one core); "default": no pinning, each observer sizes its own worker pool."""
    database_url = pg.create_database(f"scaling_{mode}_{index}_{observers}")
    work = Path(tempfile.mkdtemp(prefix="smoltbot-scaling-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("SMOLTBOT_")}
    env.update(SMOLTBOT_DATABASE_URL=database_url, SMOLTBOT_HASH_SECRET="bench", SMOLTBOT_LOG_LEVEL="INFO",
               SMOLTBOT_HOME=str(work / "home"))
    services: list[Service] = []
    try:
        registry = start_service("registry", "registry", env, work)
        services.append(registry)
        registry.wait_listening()
        env["SMOLTBOT_REGISTRY_ADDRESS"] = f"127.0.0.1:{registry.port}"
        cores = os.cpu_count() or 1
        group = [start_service(f"observer-{n}", "observer", env, work,
                               core=n % cores if mode == "pinned" else None) for n in range(observers)]
        services += group
        for observer in group:
            observer.wait_listening()
        agents = asyncio.run(resolve_agents(registry.port))
        payloads = [exchange_bytes(agents[i % AGENTS], i)[1] for i in range(count)]
        cpu_before = sum(_tree_cpu_seconds(o.process.pid) for o in group)
        pg_before = pg.cpu_seconds()
        busy_before, total_before = _machine_jiffies()
        ingest = asyncio.run(send(",".join(f"127.0.0.1:{o.port}" for o in group), payloads))
        done, seconds, failed = asyncio.run(wait_finished(database_url, count, timeout=600))
        busy_after, total_after = _machine_jiffies()
        if done != count or failed:
            raise SystemExit(f"{done}/{count} finished, {failed} failed")
        observer_cpu = sum(_tree_cpu_seconds(o.process.pid) for o in group) - cpu_before
        machine = (busy_after - busy_before) / max(1, total_after - total_before)
        return Round(mode, observers, count, seconds, ingest, observer_cpu, pg.cpu_seconds() - pg_before, machine)
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(work, ignore_errors=True)


def section(rounds: list[Round], pg_version: str, count: int) -> str:
    cpus = os.cpu_count() or 0
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    out = [
        SECTION,
        "",
        (f"`python bench/observer_scaling.py --count {count}` ({today}; {cpus} CPU cores, {pg_version}, "
         f"default durability). Each round: a fresh database, a Registry and N Observers as `smoltbot serve` "
         f"processes, {count:,} exchanges (~6 KB: tools, history, thinking, a tool call; 8 agents) sent over "
         "two Ingest streams on a round-robin channel to the observers, as two gateways would. Throughput is "
         "exchanges finished per second between the first and the last `finished_at` in the database "
         "(process start-up excluded); rounds alternate 1, 2, 1, 2. CPU columns: cores kept busy on average "
         "(observer processes with their worker processes; PostgreSQL; the whole machine; and what is left: "
         "the Registry, the load generator and anything else running on the machine)."),
        "",
        ("| layout | observers | exchanges/s (median) | rounds | observer CPU | PostgreSQL CPU | machine busy "
         "| of which other processes | ingest acks/s |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = {}
    for mode in ("pinned", "default"):
        by = {n: [r for r in rounds if r.mode == mode and r.observers == n] for n in (1, 2)}
        if not all(by.values()):
            continue
        median = {n: statistics.median(r.rate for r in by[n]) for n in by}
        ratios[mode] = median[2] / median[1]
        for n in (1, 2):
            runs = by[n]
            wall = statistics.median(r.seconds for r in runs)
            out.append(
                f"| {LAYOUTS[mode]} | {n} | {median[n]:,.0f} | {', '.join(f'{r.rate:,.0f}' for r in runs)} | "
                f"{statistics.median(r.observer_cpu for r in runs) / wall:.2f} | "
                f"{statistics.median(r.postgres_cpu for r in runs) / wall:.2f} | "
                f"{statistics.median(r.machine_busy for r in runs) * cpus:.2f} of {cpus} | "
                f"{statistics.median(r.machine_busy * cpus - (r.observer_cpu + r.postgres_cpu) / r.seconds for r in runs):.2f} | "
                f"{statistics.median(r.count / r.ingest_seconds for r in runs):,.0f} |")
    out.append("")
    out.append("**2 observers / 1 observer: " + "; ".join(
        f"{ratio:.2f}× ({LAYOUTS[mode]})" for mode, ratio in ratios.items()) + ".** In every round each "
        "exchange finished exactly once (as many distinct exchanges with traces as exchanges sent).")
    out.append("")
    out.append(_reading(ratios, cpus))
    out.append("")
    return "\n".join(out)


LAYOUTS = {"pinned": "one core per observer", "default": "unpinned"}


def _reading(ratios: dict[str, float], cpus: int) -> str:
    return (
        "How to read it: with one core per observer (`taskset`; an observer pinned to one core runs its "
        "analysis in its event loop, without worker processes) the ratio is what a second observer adds "
        "when it brings its own core, PostgreSQL, the Registry and the load generator sharing the same "
        f"{cpus} cores with it. Unpinned, an observer already spreads its analysis over a worker pool sized to "
        "the machine, so on a small machine a second observer process mostly competes with the first for "
        "the same cores: add observers where there are idle cores (other nodes), not to one busy machine. "
        "The queue itself does not serialise them: claims use `FOR UPDATE SKIP LOCKED`, so no observer "
        "waits on rows another one holds.")


def write_docs(text: str) -> None:
    current = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(current):
        current = pattern.sub(lambda _: text + "\n", current)
    else:
        current = current.rstrip("\n") + "\n\n" + text
    DOCS.write_text(current.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="exchanges per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per observer count")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--layouts", default="pinned,default",
                        help="pinned (one core per observer, needs taskset) and/or default (unpinned)")
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
                    result = run_round(pg, mode, observers, args.count, index)
                    rounds.append(result)
                    print(f"round {index + 1}, {mode}, {observers} observer(s): {result.rate:,.0f} exchanges/s "
                          f"({result.seconds:.1f} s; observer CPU {result.observer_cpu:.1f} s, "
                          f"PostgreSQL CPU {result.postgres_cpu:.1f} s, machine {result.machine_busy:.0%} busy; "
                          f"ingest {result.ingest_seconds:.1f} s)", flush=True)
    finally:
        pg.stop()
    text = section(rounds, pg.version, args.count)
    print()
    print(text)
    if not args.no_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
