"""The real smoltbot services as subprocesses, for fault, load and bad-input runs.

`Stack` runs `python -m smoltbot.cli.main serve registry|observer|api|gateway`, the way
`smoltbot up` does, on fixed free loopback ports (so a restarted service comes back at the
same address), with a temp ``SMOLTBOT_HOME`` and SQLite by default (or a PostgreSQL URL).
Each service's stdout+stderr go to ``<home>/logs/<service>.log`` (appended across
restarts), so a grep of the data dir covers what the services printed too.

It can SIGKILL, SIGTERM or restart any one service and waits for health the way `smoltbot
up` does (gRPC health check for registry/observer, ``GET /health`` for gateway/API).

The upstream is the Anthropic stand-in (tests/support/anthropic_standin.py), either as a
subprocess (`StandinProcess`, for load: it gets a core of its own) or in a thread of the test
process (`StandinThread`, when a test must look at what the upstream received or how often
a client went away).

`PgCluster` is a throwaway PostgreSQL cluster of its own that a test may stop and start.

`run_calls` drives the official `anthropic` SDK through the gateway and records, per call,
whether it succeeded and which tool_use ids it returned, so traces can be matched to calls.

Everything here is synchronous (subprocesses and polling); async tests call the waiting
methods through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = [
    "MODEL",
    "SERVICES",
    "TOOLS",
    "CallResult",
    "CallSpec",
    "PgCluster",
    "Stack",
    "StandinProcess",
    "StandinThread",
    "check_exchanges_whole",
    "exchange_ids",
    "free_port",
    "load_mix",
    "new_credential",
    "record_figures",
    "rss_kb",
    "run_calls",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("registry", "observer", "api", "gateway")
STOP_ORDER = ("gateway", "api", "observer", "registry")
#: Not deprecated for the SDK (a deprecated model warns, and warnings fail the suite).
MODEL = "claude-haiku-4-5"
TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file from the workspace",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "name": "run_command",
        "description": "Run a shell command",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
]
THINKING = {"type": "enabled", "budget_tokens": 1024}


def new_credential(label: str = "rel") -> str:
    """A credential shaped like an Anthropic key, unique per call (and so a new agent)."""
    return f"sk-ant-api03-{label}-{secrets.token_urlsafe(24)}-SECRET"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Polls `condition` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _clean_environ() -> dict[str, str]:
    """This process's environment without anything that would point a service elsewhere."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SMOLTBOT_", "ANTHROPIC_")) and k not in ("PYTEST_CURRENT_TEST",)}


# --------------------------------------------------------------------------- upstream


class StandinProcess:
    """The stand-in upstream as a subprocess (``python -m tests.support.anthropic_standin``)."""

    def __init__(self, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.anthropic_standin", "--port", "0"],
            cwd=ROOT, env=_clean_environ(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True,
        )
        log.close()
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"the stand-in did not start: {line!r}\n{_tail(log_path)}")
        self.base_url = line.split(" ", 1)[1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class StandinThread:
    """The stand-in in a thread with its own event loop: its `requests` and `disconnects` are
    readable from the test, and the test's own loop may block without stalling it."""

    def __init__(self) -> None:
        from tests.support.anthropic_standin import AnthropicStandin

        self.standin = AnthropicStandin()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self.standin.start())
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller
                errors.append(error)
                started.set()
                return
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.standin.stop())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="anthropic-standin", daemon=True)
        self._thread.start()
        started.wait(30)
        if errors:
            raise errors[0]
        self.base_url = self.standin.base_url

    @property
    def disconnects(self) -> int:
        return self.standin.disconnects

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)


# --------------------------------------------------------------------------- services


@dataclasses.dataclass
class _Service:
    name: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class BackendDown(AssertionError):
    """The API answered 503: a backend service is down or its channel is reconnecting."""


class Stack:
    """Registry, observer, API and gateway as `smoltbot serve` subprocesses (see the module doc)."""

    def __init__(self, root: Path, upstream_url: str, *, database_url: str = "",
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        self.home = root / "home"
        self.log_dir = self.home / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.upstream_url = upstream_url
        self.ports = {name: free_port() for name in SERVICES}
        self.registry_address = f"127.0.0.1:{self.ports['registry']}"
        self.observer_address = f"127.0.0.1:{self.ports['observer']}"
        self.gateway_url = f"http://127.0.0.1:{self.ports['gateway']}"
        self.api_url = f"http://127.0.0.1:{self.ports['api']}"
        self.env = _clean_environ()
        self.env.update({
            "SMOLTBOT_HOME": str(self.home),
            "SMOLTBOT_REGISTRY_ADDRESS": self.registry_address,
            "SMOLTBOT_OBSERVER_ADDRESS": self.observer_address,
            "SMOLTBOT_GATEWAY_HOST": "127.0.0.1",
            "SMOLTBOT_GATEWAY_PORT": str(self.ports["gateway"]),
            "SMOLTBOT_API_HOST": "127.0.0.1",
            "SMOLTBOT_API_PORT": str(self.ports["api"]),
            "SMOLTBOT_UPSTREAM_URL": upstream_url,
            "SMOLTBOT_PUBLIC_API_URL": self.api_url,
        })
        if database_url:
            self.env["SMOLTBOT_DATABASE_URL"] = database_url
        self.env.update(env or {})
        self.services = {name: _Service(name, self.log_dir / f"{name}.log") for name in SERVICES}
        #: Every service process started: each leads its own process group (start_new_session),
        #: which also holds whatever it forked (the observer's worker processes).
        self._groups: list[int] = []
        self._http = httpx.Client(timeout=30.0)

    @property
    def anthropic_base_url(self) -> str:
        return self.gateway_url + "/anthropic"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *names: str, timeout: float = 60.0) -> None:
        """Starts the named services (default: all) at once and waits until each is healthy."""
        names = names or SERVICES
        for name in names:
            self._spawn(name)
        for name in names:
            self.wait_healthy(name, timeout)

    def _spawn(self, name: str) -> None:
        service = self.services[name]
        assert not service.running(), f"{name} is already running"
        with service.log_path.open("ab") as log:
            log.write(f"--- start #{service.starts + 1} of {name} at {time.time():.3f}\n".encode())
            log.flush()
            service.process = subprocess.Popen(
                [sys.executable, "-m", "smoltbot.cli.main", "serve", name],
                cwd=self.root, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._groups.append(service.process.pid)
        service.starts += 1

    def healthy(self, name: str) -> bool:
        if name in ("registry", "observer"):
            address = self.registry_address if name == "registry" else self.observer_address
            with grpc.insecure_channel(address) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1.0
                    )
                except grpc.RpcError:
                    return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING
        url = (self.gateway_url if name == "gateway" else self.api_url) + "/health"
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
        service = self.services[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if service.process is None or service.process.poll() is not None:
                code = service.process.returncode if service.process else None
                raise AssertionError(f"{name} exited at start (code {code}):\n{_tail(service.log_path)}")
            if self.healthy(name):
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} not healthy within {timeout:.0f}s:\n{_tail(service.log_path)}")

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        """Sends `sig` to the service and waits for it to exit; returns its exit code."""
        service = self.services[name]
        assert service.process is not None and service.running(), f"{name} is not running"
        service.process.send_signal(sig)
        try:
            return service.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
            raise AssertionError(f"{name} did not exit within {timeout:.0f}s of signal {sig}") from None

    def stop(self, name: str, timeout: float = 30.0) -> int:
        """A graceful stop (SIGTERM), as `smoltbot up` does it."""
        return self.kill(name, signal.SIGTERM, timeout)

    def restart(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.services[name].running():
            self.kill(name, sig)
        self.start(name, timeout=timeout)

    def leftover_groups(self) -> list[int]:
        """Process groups of services that have exited but still hold live processes: what a
        killed service left running (children it forked and never reaped)."""
        left = []
        for pgid in self._groups:
            leader = next((s.process for s in self.services.values()
                           if s.process is not None and s.process.pid == pgid), None)
            if leader is not None and leader.poll() is None:
                continue
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                continue
            left.append(pgid)
        return left

    def close(self) -> None:
        """Stops whatever still runs, in `smoltbot up`'s order, then ends what killed services
        left behind in their process groups (and only there)."""
        for name in STOP_ORDER:
            service = self.services[name]
            if service.running():
                with contextlib.suppress(AssertionError):
                    self.stop(name, timeout=20)
        for pgid in self.leftover_groups():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self._http.close()

    def pid(self, name: str) -> int:
        return self.services[name].pid

    def rss_kb(self, name: str) -> int:
        return rss_kb(self.pid(name))

    def log(self, name: str) -> str:
        return self.services[name].log_path.read_text(errors="replace")

    # -- gateway -------------------------------------------------------------------------

    def gateway_health(self) -> dict[str, Any]:
        response = self._http.get(self.gateway_url + "/health")
        response.raise_for_status()
        return response.json()

    def spool_depth(self) -> int:
        return int(self.gateway_health()["spool"]["depth"])

    # -- API -----------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._http.request(method, self.api_url + path, **kwargs)

    def resolve_agent(self, credential: str) -> str:
        """The agent id of a credential, through the API (creates the agent when new)."""
        def attempt() -> httpx.Response | None:
            response = self.api("POST", "/v1/agents/resolve", headers={"x-api-key": credential})
            return None if response.status_code == 503 else response  # a channel reconnecting

        response = wait_until(attempt, 15, "the API to reach the registry", interval=0.2)
        assert response.status_code == 200, response.text
        return str(response.json()["agent_id"])

    def traces(self, agent_id: str) -> list[dict[str, Any]]:
        """Every trace of an agent, through ``GET /v1/traces`` (all pages of 1000)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"agent_id": agent_id, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            response = self.api("GET", "/v1/traces", params=params)
            if response.status_code == 503:
                raise BackendDown(response.text)
            assert response.status_code == 200, response.text
            page = response.json()
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def wait_for_exchanges(self, agent_id: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The agent's traces once they cover `count` distinct exchanges (more is returned as is)."""
        found: list[dict[str, Any]] = []

        def enough() -> bool:
            nonlocal found
            try:
                found = self.traces(agent_id)
            except BackendDown:
                return False  # a service that just came back: the API's channel reconnects
            return len(exchange_ids(found)) >= count

        try:
            wait_until(enough, timeout, f"{count} traced exchanges of {agent_id}", interval=0.25)
        except AssertionError as error:
            raise AssertionError(f"{error}; got {len(exchange_ids(found))}") from None
        return found

    # -- data dir ------------------------------------------------------------------------

    def files(self) -> Iterator[Path]:
        for path in sorted(self.home.rglob("*")):
            if path.is_file():
                yield path

    def find(self, needles: Iterable[bytes], *also: Path) -> list[tuple[str, bytes]]:
        """(file, needle) for every needle found, as bytes, in any file of the data dir
        (database, WAL, spool, hash secret, config, captured service logs) or of the
        directories in `also` (a PostgreSQL cluster's data dir)."""
        return find_in([self.home, *also], needles)


def find_in(directories: Iterable[Path], needles: Iterable[bytes]) -> list[tuple[str, bytes]]:
    needles = [n for n in needles if n]
    hits = []
    for directory in directories:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.is_symlink():
                try:
                    data = path.read_bytes()
                except OSError:  # a socket or a file removed meanwhile
                    continue
                hits.extend((str(path), needle) for needle in needles if needle in data)
    return hits


def exchange_ids(traces: Iterable[dict[str, Any]]) -> set[str]:
    return {trace["observation"]["exchange_id"] for trace in traces}


def check_exchanges_whole(traces: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Groups traces by exchange and checks none is duplicated: unique trace ids, and each
    exchange's decision indexes are exactly 0..decision_count-1."""
    ids = [trace["trace_id"] for trace in traces]
    assert len(ids) == len(set(ids)), "duplicate trace ids"
    by_exchange: dict[str, list[dict[str, Any]]] = {}
    for trace in traces:
        by_exchange.setdefault(trace["observation"]["exchange_id"], []).append(trace)
    for exchange_id, group in by_exchange.items():
        count = group[0]["context"]["metadata"].get("decision_count", len(group))
        indexes = sorted(t["observation"].get("decision_index", 0) for t in group)
        assert indexes == list(range(int(count))), (
            f"exchange {exchange_id}: decision indexes {indexes} of {count}"
        )
    return by_exchange


# --------------------------------------------------------------------------- PostgreSQL


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _as_owner(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root (CI runs as root).
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PgCluster:
    """A PostgreSQL cluster of one test's own, which it may stop and start on the same port."""

    def __init__(self) -> None:
        initdb, self._pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
        if initdb is None or self._pg_ctl is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")
        self.base = Path(tempfile.mkdtemp(prefix="smoltbot-reliability-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.base, user="postgres", group="postgres")
        self.data_dir = self.base / "data"
        subprocess.run(
            _as_owner(
                [
                    initdb,
                    "-D",
                    str(self.data_dir),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = subprocess.run(
            _as_owner(
                [
                    self._pg_ctl,
                    "-D",
                    str(self.data_dir),
                    "-o",
                    options,
                    "-l",
                    str(self.base / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            raise RuntimeError(
                f"could not start PostgreSQL: {started.stderr}{_tail(self.base / 'server.log')}"
            )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_owner([self._pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------- client load


@dataclasses.dataclass(frozen=True)
class CallSpec:
    """One SDK call: a content scenario of the stand-in, streamed or not."""

    index: int
    scenario: str = "thinking_tool_use"
    stream: bool = False
    thinking: bool = True
    tools: bool = True

    def prompt(self, run: str) -> str:
        # Unique per call: the stand-in derives ids (message, tool_use) from the request body.
        return f"Call {run}-{self.index}: look at the workspace. [[scenario:{self.scenario}]]"


@dataclasses.dataclass
class CallResult:
    spec: CallSpec
    ok: bool
    seconds: float
    tool_use_ids: list[str] = dataclasses.field(default_factory=list)
    error: str = ""


def load_mix(count: int) -> list[CallSpec]:
    """Half streamed; thinking and tool_use in most calls, some interleaved and plain ones."""
    kinds = [("thinking_tool_use", True, True), ("tool_use", False, True), ("interleaved", True, True),
             ("thinking", True, False), ("thinking_tool_use", True, True), ("text", False, False)]
    specs = []
    for i in range(count):
        scenario, thinking, tools = kinds[(i // 2) % len(kinds)]
        specs.append(CallSpec(i, scenario, stream=i % 2 == 1, thinking=thinking, tools=tools))
    return specs


async def one_call(client: Any, spec: CallSpec, run: str) -> CallResult:
    kwargs: dict[str, Any] = {
        "model": MODEL, "max_tokens": 2048,
        "messages": [{"role": "user", "content": spec.prompt(run)}],
    }
    if spec.thinking:
        kwargs["thinking"] = THINKING
    if spec.tools:
        kwargs["tools"] = TOOLS
    started = time.perf_counter()
    try:
        if spec.stream:
            async with client.messages.stream(**kwargs) as stream:
                message = await stream.get_final_message()
        else:
            message = await client.messages.create(**kwargs)
    except Exception as error:  # noqa: BLE001 - a failed call is a result here
        return CallResult(
            spec, False, time.perf_counter() - started, error=f"{type(error).__name__}: {error}"
        )
    tool_ids = [block.id for block in message.content if block.type == "tool_use"]
    return CallResult(spec, True, time.perf_counter() - started, tool_ids)


async def run_calls(base_url: str, credential: str, specs: list[CallSpec], *, concurrency: int = 32,
                    run: str = "", on_done: Callable[[int], Any] | None = None,
                    bearer: bool = False, timeout: float = 60.0) -> list[CallResult]:
    """Runs the calls through the official SDK (no SDK retries: one call, one exchange) with at
    most `concurrency` in flight. `on_done(n)` is awaited (if a coroutine) after each call."""
    import anthropic

    run = run or f"{os.getpid()}-{time.time_ns()}"
    auth = {"auth_token": credential, "api_key": None} if bearer else {"api_key": credential}
    client = anthropic.AsyncAnthropic(base_url=base_url, max_retries=0, timeout=timeout, **auth)
    results: list[CallResult] = []
    queue: asyncio.Queue[CallSpec] = asyncio.Queue()
    for spec in specs:
        queue.put_nowait(spec)

    async def worker() -> None:
        while True:
            try:
                spec = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await one_call(client, spec, run))
            if on_done is not None:
                outcome = on_done(len(results))
                if asyncio.iscoroutine(outcome):
                    await outcome

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(specs)) or 1)))
    finally:
        await client.close()
    return results


# --------------------------------------------------------------------------- figures

FIGURES_PATH = ROOT / "artifacts" / "reliability" / "figures.json"


def record_figures(scenario: str, **figures: Any) -> None:
    """Adds a scenario's figures to artifacts/reliability/figures.json (what docs/reliability.md
    quotes) and prints them (shown with ``pytest -s`` or on failure)."""
    import json

    FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
    try:
        current = json.loads(FIGURES_PATH.read_text())
    except (OSError, ValueError):
        current = {}
    current[scenario] = figures
    FIGURES_PATH.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    print(f"[figures] {scenario}: {json.dumps(figures, sort_keys=True)}")
