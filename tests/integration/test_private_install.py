"""One machine, two users: what `smoltbot up` keeps is its user's alone, and another local
user can neither read it nor write to the record through the services' loopback ports.

A real `smoltbot up` (four `smoltbot serve` processes) on a data dir that an older install left
world-readable, one call through its gateway to the Anthropic stand-in, then:

* every directory in the data dir is 0700 and every file 0600 (database, WAL/SHM, logs,
  spool, secrets, config);
* the same checks run as the unprivileged `nobody` user (`runuser`), with the system Python
  and this checkout's packages: it cannot read the data dir or the credential in it, and its
  Ingest and Registry writes are UNAUTHENTICATED (or cannot connect).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.deploy.processes import ServiceProcess, base_env, start_standin

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_standin(base_env(), tmp_path_factory.mktemp("standin-logs"))
    yield process
    process.stop()


class Install:
    def __init__(self, home: Path, process: subprocess.Popen[str], lines: list[str]) -> None:
        self.home = home
        self.process = process
        self.lines = lines

    def output(self, pattern: str) -> str:
        for line in self.lines:
            if match := re.search(pattern, line):
                return match.group(1)
        raise AssertionError(f"{pattern!r} not in the output of smoltbot up: {self.lines}")

    def grpc_address(self, service: str) -> str:
        log = (self.home / "logs" / f"{service}.log").read_text(errors="replace")
        match = re.search(r"listening on ([\d.]+:\d+)", log)
        assert match, log
        return match.group(1)


@pytest.fixture(scope="module")
def install(standin: ServiceProcess) -> Iterator[Install]:
    # A world-traversable parent, so that the data dir's own mode is what keeps others out.
    parent = Path(tempfile.mkdtemp(prefix="smoltbot-private-"))
    parent.chmod(0o755)
    home = parent / "home"
    # What an older install under umask 022 left behind.
    (home / "spool").mkdir(parents=True, mode=0o755)
    home.chmod(0o755)
    (home / "config.toml").write_text('api_url = "http://127.0.0.1:1"\n')
    (home / "config.toml").chmod(0o644)
    (home / "spool" / "leftover.tmp").write_bytes(b"x")
    (home / "spool" / "leftover.tmp").chmod(0o666)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SMOLTBOT_", "ANTHROPIC_"))}
    env.update(HOME=str(parent), SMOLTBOT_HOME=str(home), SMOLTBOT_UPSTREAM_URL=standin.url,
               SMOLTBOT_REGISTRY_ADDRESS="127.0.0.1:0", SMOLTBOT_OBSERVER_ADDRESS="127.0.0.1:0")
    process = subprocess.Popen(
        [sys.executable, "-m", "smoltbot.cli.main", "up", "--gateway-port", "0", "--api-port", "0"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "export ANTHROPIC_BASE_URL=" in line:
            break
    running = Install(home, process, lines)
    try:
        base_url = running.output(r"export ANTHROPIC_BASE_URL=(\S+)")
        reply = httpx.post(
            f"{base_url}/v1/messages",
            timeout=30,
            headers={"x-api-key": "sk-ant-api03-private-install", "anthropic-version": "2023-06-01"},
            json={
                "model": "claude-haiku-4-5",
                "max_tokens": 32,
                "messages": [{"role": "user", "content": "hello"}],
            },
        )
        assert reply.status_code == 200, reply.text
        wait_for_trace(running)
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        shutil.rmtree(parent, ignore_errors=True)


def wait_for_trace(install: Install) -> None:
    api = install.output(r"api:\s+(http://\S+?)/v1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = httpx.get(f"{api}/v1/traces", timeout=5).json()
        if page.get("items"):
            return
        time.sleep(0.2)
    raise AssertionError("the call was never traced")


def test_everything_in_the_data_dir_is_private_after_up(install: Install) -> None:
    loose = []
    names = set()
    for path in [install.home, *install.home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        names.add(path.relative_to(install.home).as_posix())
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            loose.append(f"{path.relative_to(install.home)}: {mode:o}, want {expected:o}")
    assert not loose, "\n".join(loose)
    # What there is to protect, all of it checked above.
    for name in ("smoltbot.db", "smoltbot.db-wal", "hash_secret", "service_token", "logs/gateway.log",
                 "logs/registry.log", "config.toml", "spool"):
        assert name in names, sorted(names)


NOBODY_SCRIPT = r"""
import json, site, sys
site.addsitedir(sys.argv[1])
home, registry, observer = sys.argv[2], sys.argv[3], sys.argv[4]
import grpc
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.service_auth import ServiceCredential
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import agent_pb2, exchange_pb2, observer_service_pb2 as opb, observer_service_pb2_grpc
from smoltbot.v1 import registry_service_pb2 as rpb, registry_service_pb2_grpc
import asyncio

results = {}
for name, action in (("list data dir", lambda: __import__("os").listdir(home)),
                     ("read credential", lambda: open(home + "/service_token").read()),
                     ("read database", lambda: open(home + "/smoltbot.db", "rb").read(16))):
    try:
        action()
        results[name] = "READ"
    except PermissionError:
        results[name] = "denied"

HASH = "ab" * 32

async def attempts(credential):
    tls = TlsConfig(credential=credential)
    out = {}
    async with open_channel(registry, tls) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        calls = {
            "ResolveAgent": lambda: stub.ResolveAgent(rpb.ResolveAgentRequest(agent_hash=HASH), timeout=5),
            "PutCard": lambda: stub.PutCard(rpb.PutCardRequest(agent_id="smolt-abababab", agent_hash=HASH,
                                                               card_json="{}"), timeout=5),
            "ClaimAgent": lambda: stub.ClaimAgent(rpb.ClaimAgentRequest(agent_id="smolt-abababab",
                                                                        agent_hash=HASH), timeout=5),
            "TouchAgent": lambda: stub.TouchAgent(rpb.TouchAgentRequest(agent_id="smolt-abababab"),
                                                  timeout=5),
            "ResolveSession": lambda: stub.ResolveSession(
                rpb.ResolveSessionRequest(agent_id="smolt-abababab"), timeout=5),
            "ReportSessionEvent": lambda: stub.ReportSessionEvent(rpb.ReportSessionEventRequest(
                agent_id="smolt-abababab", agent_hash=HASH, session_id="s",
                event=agent_pb2.SESSION_EVENT_STARTED), timeout=5),
            "ListAgents": lambda: stub.ListAgents(rpb.ListAgentsRequest(), timeout=5),
        }
        for name, call in calls.items():
            try:
                await call()
                out[name] = "ANSWERED"
            except grpc.aio.AioRpcError as error:
                out[name] = error.code().name
    async with open_channel(observer, tls) as channel:
        stub = observer_service_pb2_grpc.ObserverServiceStub(channel)
        exchange = exchange_pb2.Exchange(exchange_id="f" * 32, agent_hash=HASH)
        try:
            async for ack in stub.Ingest(iter([opb.IngestRequest(exchange=exchange)]), timeout=5):
                out["Ingest"] = "ACKED " + str(ack.status)
        except grpc.aio.AioRpcError as error:
            out["Ingest"] = error.code().name
    return out

results["no credential"] = asyncio.run(attempts(None))
results["guessed credential"] = asyncio.run(attempts(ServiceCredential("0" * 64)))
print(json.dumps(results))
"""


def test_another_local_user_cannot_read_the_data_dir_nor_write_the_record(install: Install) -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to act as another local user")
    try:
        import pwd

        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this machine has no 'nobody' user")
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} (a Python 'nobody' can run) is missing")
    site_packages = sysconfig.get_paths()["purelib"]
    version = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(
            f"{SYSTEM_PYTHON} is Python {version}; the venv's compiled packages need {sys.version_info[:2]}"
        )
    probe = subprocess.run(["runuser", "-u", "nobody", "--", str(SYSTEM_PYTHON), "-c",
                            f"import os; os.listdir({site_packages!r}); os.listdir({str(ROOT)!r})"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"'nobody' cannot read this checkout or its venv: {probe.stderr.strip()[-200:]}")
    done = subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            str(SYSTEM_PYTHON),
            "-c",
            NOBODY_SCRIPT,
            site_packages,
            str(install.home),
            install.grpc_address("registry"),
            install.grpc_address("observer"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["list data dir"] == results["read credential"] == results["read database"] == "denied"
    for attempt in ("no credential", "guessed credential"):
        outcomes = results[attempt]
        assert set(outcomes) >= {"ResolveAgent", "PutCard", "ClaimAgent", "TouchAgent", "ResolveSession",
                                 "ReportSessionEvent", "Ingest"}
        assert set(outcomes.values()) <= {"UNAUTHENTICATED", "UNAVAILABLE"}, outcomes
