"""Runs smoltbot services as separate processes, the way a deployment does: each is
`python -m smoltbot.cli.main serve X` with its own SMOLTBOT_* environment, on an ephemeral
port that it reports in its log ("... listening on HOST:PORT")."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServiceProcess", "base_env", "start_service", "start_standin"]

ROOT = Path(__file__).resolve().parents[3]
_LISTENING = re.compile(r"listening on (?:http://)?([\d.]+):(\d+)")


def base_env(**values: str) -> dict[str, str]:
    """The test's environment without any SMOLTBOT_* or ANTHROPIC_* variable a developer may
    have set, plus `values`."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SMOLTBOT_", "ANTHROPIC_"))}
    env.update(values)
    return env


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    host: str = ""
    port: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_listening(self, timeout: float = 60.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                self.host, self.port = match.group(1), int(match.group(2))
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not report its port within {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL to the service and every process it started (the observer's CPU workers), as
        when its container or machine dies: no graceful stop, no lease hand-back."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        else:
            self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._kill_leftovers()
        return self.process.returncode


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> ServiceProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        # A session (and process group) of its own: kill() reaches its children too.
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return ServiceProcess(name, process, log_path)


def start_service(name: str, service: str, env: dict[str, str], log_dir: Path, *args: str) -> ServiceProcess:
    """Starts `smoltbot serve <service>`; call `.wait_listening()` to learn its port."""
    return _spawn(name, [sys.executable, "-m", "smoltbot.cli.main", "serve", service, *args], env, log_dir)


def start_standin(env: dict[str, str], log_dir: Path) -> ServiceProcess:
    """The Anthropic stand-in (tests/support/anthropic_standin.py) on an ephemeral port."""
    standin = _spawn("standin", [sys.executable, "-m", "tests.support.anthropic_standin", "--port", "0"],
                     env, log_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"LISTENING http://([\d.]+):(\d+)", standin.log_path.read_text(errors="replace"))
        if match:
            standin.host, standin.port = match.group(1), int(match.group(2))
            return standin
        if standin.process.poll() is not None:
            break
        time.sleep(0.05)
    standin.stop()
    raise RuntimeError(f"the stand-in did not start:\n{standin.log()}")
